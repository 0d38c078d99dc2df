"""Trigger calls that share one transaction (group commit) keep each call's own outcome."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy.exc import StatementError

from jupyter_mage.storage import NewRun, Store


class Refused(Exception):
    """What ``admit`` raises to refuse a call (the handlers raise their HTTP errors)."""


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    yield store
    store.close()


def admitting(key: str | None = None, skip_if_active: int | None = None, **variables: Any) -> Any:
    def admit(trigger: dict[str, Any] | None) -> dict[str, Any]:
        if trigger is None:
            raise Refused("no such trigger")
        return {
            "values": {
                "pipeline_schedule_id": trigger["id"],
                "pipeline_uuid": trigger["pipeline_uuid"],
                "execution_date": datetime.now(timezone.utc),
                "variables": variables,
                "trigger_name": trigger["name"],
                "trigger_variables": trigger["variables"],
                "trigger_settings": trigger["settings"],
                "idempotency_key": key,
            },
            "skip_if_active": skip_if_active,
            "block_uuids": ["load", "export"],
            "start": False,
        }

    return admit


async def in_one_batch(store: Store, calls: list[tuple[int, Any]]) -> list[NewRun | BaseException]:
    """Run ``calls`` while the database thread is held, so that they queue up together."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(10)

    holding = asyncio.ensure_future(store._call(hold))
    await asyncio.get_running_loop().run_in_executor(None, held.wait, 10)
    pending = [asyncio.ensure_future(store.create_run_for_trigger(t, a)) for t, a in calls]
    await asyncio.sleep(0.05)  # every call is queued behind hold()
    release.set()
    await holding
    return list(await asyncio.gather(*pending, return_exceptions=True))


async def test_calls_in_one_transaction_keep_their_own_outcomes(store: Store) -> None:
    trigger = await store.create_trigger({"name": "t", "pipeline_uuid": "p"})
    tid = trigger["id"]
    outcomes = await in_one_batch(
        store,
        [
            (tid, admitting(n=1)),
            (tid + 99, admitting()),  # no such trigger: refused, the others go on
            (tid, admitting(key="order-1")),
            (tid, admitting(key="order-1")),  # the same key in the same batch: the same run
            (tid, admitting(skip_if_active=3)),  # 2 runs above are active: admitted
            (tid, admitting(skip_if_active=3)),  # now 3 are: skipped
        ],
    )
    first, refused, keyed, repeated, fourth, fifth = outcomes
    assert isinstance(refused, Refused)
    assert isinstance(first, NewRun) and first.outcome == "created"
    assert first.run["variables"]["n"] == 1
    assert isinstance(keyed, NewRun) and keyed.outcome == "created"
    assert isinstance(repeated, NewRun) and repeated.outcome == "existing"
    assert repeated.run["id"] == keyed.run["id"]
    assert isinstance(fourth, NewRun) and fourth.outcome == "created"
    assert isinstance(fifth, NewRun) and fifth.outcome == "skipped"
    runs, total = await store.list_runs({"pipeline_schedule_id": tid}, 10, 0)
    assert total == 4
    assert {r["status"] for r in runs} == {"initial", "cancelled"}
    created = [r for r in runs if r["status"] == "initial"]
    assert all([b["block_uuid"] for b in r["block_runs"]] == ["load", "export"] for r in created)


async def test_a_call_that_fails_mid_transaction_fails_alone(store: Store) -> None:
    trigger = await store.create_trigger({"name": "t", "pipeline_uuid": "p"})
    tid = trigger["id"]
    # A value the JSON column cannot store fails at INSERT time, after other calls wrote theirs.
    outcomes = await in_one_batch(
        store, [(tid, admitting(n=1)), (tid, admitting(bad=object())), (tid, admitting(n=3))]
    )
    first, broken, third = outcomes
    # SQLAlchemy serialises JSON for SQLite (a StatementError); psycopg does it itself (a bare
    # TypeError). Either way the call fails alone.
    assert isinstance(broken, StatementError | TypeError)
    assert "not JSON serializable" in str(broken)
    assert isinstance(first, NewRun) and isinstance(third, NewRun)
    runs, total = await store.list_runs({"pipeline_schedule_id": tid}, 10, 0)
    assert total == 2
    assert sorted(r["variables"]["n"] for r in runs) == [1, 3]
