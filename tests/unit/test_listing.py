"""List pages whose JSON the database writes are the runs as the views show them, field for field.

The views (:func:`jupyter_mage.storage.views.run_to_dict`, read through SQLAlchemy) are the
reference; a page (:mod:`jupyter_mage.storage.listing`) must say the same of every run, on
SQLite and on the PostgreSQL pass, whatever the columns hold: NULLs, JSON null, unicode,
timestamps on a whole second, runs without block runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from jupyter_mage.storage import Store
from jupyter_mage.storage.schema import BLOCK_RUNS, RUNS, TRIGGERS

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)  # a whole second: ".000000"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    yield store
    store.close()


def _run(i: int) -> dict[str, Any]:
    at = T0 + timedelta(seconds=i, microseconds=137 * i)
    return {
        "pipeline_schedule_id": 1 + i % 2,
        "pipeline_uuid": "load" if i % 3 else "export",
        "execution_date": at,
        "status": ("completed", "failed", "running", "initial")[i % 4],
        "started_at": at if i % 4 != 3 else None,
        "completed_at": at + timedelta(seconds=1) if i % 4 < 2 else None,
        "variables": {"env": "stäging", "n": i, "nested": {"list": [1, 2.5, None]}},
        "event_variables": {"source": "webhook"} if i % 5 == 0 else None,
        "passed_sla": i % 7 == 0,
        "metrics": {"rows": i} if i % 2 else None,
        "backfill_id": None,
        "executor_type": "jupyter_kernel",
        "trigger_name": f"trigger \N{SNOWMAN} {1 + i % 2}",
        "executed_notebook": f"runs/{i}.ipynb" if i % 3 else None,
        "created_at": at,
        "updated_at": at + timedelta(seconds=2),
    }


def _seed(store: Store, runs: int) -> None:
    with store.engine.begin() as conn:
        for trigger in (1, 2):
            conn.execute(
                TRIGGERS.insert().values(
                    id=trigger, name=f"trigger {trigger}", pipeline_uuid="load", token=f"{trigger}"
                )
            )
        for i in range(runs):
            run_id = conn.execute(RUNS.insert().values(**_run(i))).inserted_primary_key[0]
            for j in range(i % 4):  # runs with 0 to 3 block runs
                conn.execute(
                    BLOCK_RUNS.insert().values(
                        pipeline_run_id=run_id,
                        block_uuid=f"block_{j}",
                        status=("completed", "failed", "running")[j],
                        started_at=T0 if j else None,
                        completed_at=T0 + timedelta(microseconds=j) if j < 2 else None,
                        metrics={"j": j} if j == 1 else None,
                        logs="a log that a page never shows",
                        outputs=[{"type": "text", "text_data": "never in a page"}],
                        created_at=T0,
                        updated_at=T0,
                    )
                )


@pytest.mark.parametrize(
    ("filters", "limit", "offset"),
    [
        ({}, 30, 0),
        ({}, 1000, 0),
        ({}, 7, 20),
        ({}, 30, 1000),  # past the end: an empty page, the count still right
        ({"status": "failed"}, 30, 0),
        ({"pipeline_uuid": "export"}, 5, 3),
        ({"pipeline_schedule_id": 2, "status": "running"}, 30, 0),
    ],
)
async def test_a_page_says_what_the_views_say(
    store: Store, filters: dict[str, Any], limit: int, offset: int
) -> None:
    _seed(store, 40)
    expected, expected_count = await store.list_runs(filters, limit, offset)
    text, count = await store.runs_page(filters, limit, offset)
    page = json.loads(text)
    assert count == expected_count
    assert [r["id"] for r in page] == [r["id"] for r in expected]
    for got, want in zip(page, expected, strict=True):
        assert got == want  # every field, block runs and their counts included
        assert list(got) == list(want)  # in the same order
    if limit == 1000:
        assert len(page) == 40
        assert any(r["block_runs"] == [] for r in page)
        assert any(r["event_variables"] is not None for r in page)
        assert any(r["passed_sla"] for r in page)
        assert any(r["completed_at"] is None for r in page)
        assert "+00:00" in page[-1]["execution_date"]
        assert page[-1]["execution_date"] == "2026-03-01 12:00:00.000000+00:00"
        assert "never" not in text


async def test_an_unknown_filter_is_refused_before_any_sql(store: Store) -> None:
    with pytest.raises(ValueError, match="cannot be filtered"):
        await store.runs_page({"token": "x"}, 30, 0)
