"""Retention (old runs, block runs, logs and executed notebooks go; unfinished runs never), the
logs of any kept run, and pipeline listings that hide what JupyterLab hides.

Faults are injected straight into the server's database (its SQLite file, or its PostgreSQL
schema on the PostgreSQL pass): runs are aged by rewriting their timestamps, put back to
``running``/``initial`` as another server would leave them, and thousands of finished rows are
inserted without executing a kernel for each.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool
from tornado.httpclient import HTTPClientError

from jupyter_mage.app import MageApp
from jupyter_mage.retention import RetentionPolicy, SweepResult

from .conftest import MageClient, block_cell, write_pipeline

#: Each block prints its run's id, so a log tells which run wrote it.
CELLS = [
    block_cell(
        "@data_loader\ndef load(**kwargs):\n    print('LOG', kwargs['pipeline_run_id'])\n"
        "    return 1\n",
        "data_loader",
    ),
    block_cell("@transformer\ndef double(x):\n    return 2 * x\n", "transformer"),
]


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    """Keep the newest 2 finished runs and the newest notebook per trigger; small batches."""
    jp_server_config["RetentionPolicy"] = {
        "runs_per_trigger": 2,
        "notebooks_per_trigger": 1,
        "batch_size": 2,
    }
    # Rows written behind the server's back are never picked up by a fallback tick.
    jp_server_config["MageApp"]["queue_poll_interval"] = 3600.0
    return jp_server_config


def mage_app(serverapp: Any) -> Any:
    """The running MageApp of a server."""
    [app] = serverapp.extension_manager.extension_apps["jupyter_mage"]
    return app


def stamp(value: datetime) -> str:
    """A timestamp as the store keeps it (naive UTC), in a form SQLite and PostgreSQL read."""
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ")


@contextmanager
def database(serverapp: Any) -> Iterator[Connection]:
    """A connection of its own to the server's database (fault injection), committed at exit.

    Its own engine, not the store's: a writer behind the server's back, as another process is.
    """
    engine = create_engine(
        mage_app(serverapp).db_url,
        poolclass=NullPool,
        connect_args={"timeout": 30} if mage_app(serverapp).db_url.startswith("sqlite") else {},
    )
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def insert_finished_runs(
    conn: Connection,
    pipeline_uuid: str,
    trigger_id: int | None,
    count: int,
    ended: datetime,
    notebook: str | None = None,
) -> list[int]:
    """Finished (completed) runs with one ``load`` block run each, as a real run leaves them."""
    ids = []
    at = stamp(ended)
    for _ in range(count):
        run_id = conn.execute(
            text(
                "INSERT INTO mage_pipeline_run (pipeline_schedule_id, pipeline_uuid,"
                " execution_date, status, started_at, completed_at, variables, passed_sla,"
                " executor_type, executed_notebook, created_at, updated_at)"
                " VALUES (:trigger, :uuid, :at, 'completed', :at, :at, '{}', false,"
                " 'jupyter_kernel', :notebook, :at, :at) RETURNING id"
            ),
            {"trigger": trigger_id, "uuid": pipeline_uuid, "at": at, "notebook": notebook},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO mage_block_run (pipeline_run_id, block_uuid, status, started_at,"
                " completed_at, logs, created_at, updated_at)"
                " VALUES (:run, 'load', 'completed', :at, :at, :logs, :at, :at)"
            ),
            {"run": run_id, "at": at, "logs": f"LOG {run_id}\n"},
        )
        ids.append(run_id)
    return ids


def make_unfinished(conn: Connection, running: int, waiting: int) -> None:
    """Put two runs back to ``running`` and ``initial``, as a server still working on them would
    show them. The waiting one carries a run limit of 1, so this server, seeing the running one,
    never claims it."""
    conn.execute(
        text("UPDATE mage_pipeline_run SET status = 'running', completed_at = NULL WHERE id = :id"),
        {"id": running},
    )
    conn.execute(
        text(
            "UPDATE mage_pipeline_run SET status = 'initial', started_at = NULL,"
            " completed_at = NULL, trigger_settings = :settings WHERE id = :id"
        ),
        {"settings": json.dumps({"pipeline_run_limit": 1}), "id": waiting},
    )


def age(conn: Connection, run_id: int, days: float) -> None:
    """Backdate a run (created, started and ended ``days`` ago)."""
    then = stamp(datetime.now(timezone.utc) - timedelta(days=days))
    values = {"then": then, "id": run_id}
    conn.execute(
        text("UPDATE mage_pipeline_run SET created_at = :then, started_at = :then WHERE id = :id"),
        values,
    )
    conn.execute(
        text(
            "UPDATE mage_pipeline_run SET completed_at = :then"
            " WHERE id = :id AND completed_at IS NOT NULL"
        ),
        values,
    )


def table(conn: Connection) -> tuple[list[int], dict[int, int]]:
    """Run ids, and block runs per run id, as the database holds them."""
    runs = list(conn.execute(text("SELECT id FROM mage_pipeline_run ORDER BY id")).scalars())
    blocks = {
        run: count
        for run, count in conn.execute(
            text("SELECT pipeline_run_id, count(*) FROM mage_block_run GROUP BY pipeline_run_id")
        )
    }
    return runs, blocks


async def real_runs(mage: MageClient, trigger_id: int, count: int) -> list[dict[str, Any]]:
    """``count`` runs of a trigger, one after the other, each to its end."""
    runs = []
    for _ in range(count):
        run = await mage.wait((await mage.run_now(trigger_id))["id"])
        assert run["status"] == "completed", run
        runs.append(run)
    return runs


async def idle(app: Any) -> None:
    """Wait until the server runs nothing (its dispatcher has looked at the queue since)."""
    for _ in range(400):
        if app.dispatcher.running_count == 0:
            break
        await asyncio.sleep(0.05)
    assert app.dispatcher.running_count == 0
    await asyncio.sleep(0.2)


async def status_of(mage: MageClient, *parts: str) -> int:
    try:
        await mage.call("GET", *parts)
    except HTTPClientError as exc:
        return exc.code
    return 200


class Records(logging.Handler):
    """Collects a logger's records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# -- last N per trigger ----------------------------------------------------------------------


async def test_last_n_per_trigger_removes_older_finished_runs_and_notebooks(
    jp_serverapp: Any, jp_root_dir: Path, mage: MageClient
) -> None:
    app = mage_app(jp_serverapp)
    policy = app.retention
    assert RetentionPolicy in MageApp.classes  # --RetentionPolicy.runs_days=... on the CLI
    assert (policy.runs_per_trigger, policy.notebooks_per_trigger, policy.runs_days) == (2, 1, 0)
    write_pipeline(jp_root_dir, "keep", CELLS)
    first = await mage.create_trigger("keep")
    second = await mage.create_trigger("keep", name="second")
    r1, r2, r3, r4, r5, r6 = (r["id"] for r in await real_runs(mage, first["id"], 6))
    [r7] = [r["id"] for r in await real_runs(mage, second["id"], 1)]
    await idle(app)
    runs_dir = jp_root_dir / "mage_runs" / "keep"
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted(
        f"run_{i}.ipynb" for i in (r1, r2, r3, r4, r5, r6, r7)
    )
    outside = jp_root_dir / "keep.ipynb"
    with database(jp_serverapp) as conn:
        # The two oldest runs of the first trigger are, as far as this server knows, still
        # running and waiting: beyond the last 2, yet never removed, and not counted.
        make_unfinished(conn, running=r1, waiting=r2)
        # Runs without a trigger are one more group. The oldest names a file outside the runs
        # folder (the pipeline itself): its row goes, the file stays.
        now = datetime.now(timezone.utc)
        n1, n2, n3 = insert_finished_runs(conn, "keep", None, 3, now)
        conn.execute(
            text(
                "UPDATE mage_pipeline_run SET executed_notebook = 'mage_runs/../keep.ipynb'"
                " WHERE id = :id"
            ),
            {"id": n1},
        )
    records = Records()
    policy.log.addHandler(records)
    try:
        result = await policy.sweep()
    finally:
        policy.log.removeHandler(records)

    assert sorted(result.runs) == sorted([r3, r4, n1])
    assert result.block_runs == 2 + 2 + 1
    assert result.notebooks == [r5]  # r6 keeps its notebook; r7 is its trigger's only one
    assert result.files == 3  # r3's, r4's and r5's
    [line] = [r for r in records.records if "retention removed" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert line.getMessage().startswith(
        "jupyter-mage: retention removed 3 run(s) with 5 block run(s), and the executed "
        "notebooks of 1 kept run(s); 3 file(s) deleted"
    )
    with database(jp_serverapp) as conn:
        runs, blocks = table(conn)
    assert runs == sorted([r1, r2, r5, r6, r7, n2, n3])
    assert blocks == {r1: 2, r2: 2, r5: 2, r6: 2, r7: 2, n2: 1, n3: 1}
    assert outside.exists()
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted(
        f"run_{i}.ipynb" for i in (r1, r2, r6, r7)
    )
    # Through the API: gone is 404 (run, block runs, logs); kept runs keep their logs.
    for gone in (r3, r4, n1):
        assert await status_of(mage, "api", "pipeline_runs", str(gone)) == 404
    listed = await mage.call("GET", "api", "pipeline_runs", params={"_limit": "100"})
    assert sorted(r["id"] for r in listed["pipeline_runs"]) == runs
    kept = (await mage.call("GET", "api", "pipeline_runs", str(r5)))["pipeline_run"]
    assert kept["status"] == "completed" and kept["executed_notebook"] is None
    assert f"LOG {r5}" in await mage.block_logs(kept, "load")
    latest = (await mage.call("GET", "api", "pipeline_runs", str(r6)))["pipeline_run"]
    assert latest["executed_notebook"] == f"mage_runs/keep/run_{r6}.ipynb"
    waiting = (await mage.call("GET", "api", "pipeline_runs", str(r2)))["pipeline_run"]
    assert waiting["status"] == "initial"
    # A second sweep finds nothing more.
    assert await policy.sweep() == SweepResult()


# -- days ------------------------------------------------------------------------------------


class TestDays:
    """Runs kept 30 days, executed notebooks 7 (no count bounds)."""

    @pytest.fixture
    def jp_server_config(self, jp_server_config: dict[str, Any]) -> dict[str, Any]:
        jp_server_config["RetentionPolicy"] = {
            "runs_days": 30,
            "notebooks_days": 7,
            "batch_size": 2,
        }
        return jp_server_config

    async def test_days_remove_old_finished_runs_in_batches_never_unfinished(
        self, jp_serverapp: Any, jp_root_dir: Path, mage: MageClient
    ) -> None:
        app = mage_app(jp_serverapp)
        policy = app.retention
        write_pipeline(jp_root_dir, "aged", CELLS)
        trigger = await mage.create_trigger("aged")
        with database(jp_serverapp) as conn:
            # A backlog older than any real run: removed over several batches of 2.
            backlog = insert_finished_runs(
                conn,
                "aged",
                trigger["id"],
                5,
                datetime.now(timezone.utc) - timedelta(days=90),
                notebook="mage_runs/aged/never_written.ipynb",
            )
        # The unfinished ones first: the walk by id meets them among the old runs.
        running, waiting, old, month, week, fresh = (
            r["id"] for r in await real_runs(mage, trigger["id"], 6)
        )
        await idle(app)
        with database(jp_serverapp) as conn:
            age(conn, old, 40)  # past both bounds
            age(conn, month, 20)  # run kept, notebook past its 7 days
            age(conn, week, 6)  # both kept
            make_unfinished(conn, running=running, waiting=waiting)
            age(conn, running, 100)  # unfinished: kept however old
            age(conn, waiting, 100)
        batches: list[tuple[bool, int]] = []  # (notebooks only, runs touched) per batch
        purge = app.store.purge_runs_finished_before

        async def counted(*args: Any) -> Any:
            found = await purge(*args)
            batches.append((args[-1], len(found[0])))
            return found

        app.store.purge_runs_finished_before = counted
        try:
            result = await policy.sweep()
        finally:
            del app.store.purge_runs_finished_before

        assert sorted(result.runs) == sorted([*backlog, old])
        assert result.block_runs == 5 + 2
        assert result.notebooks == [month]
        assert result.files == 2  # old's and month's (the backlog's files never existed)
        # Runs: [b1 b2] [b3 b4] [b5 running] [waiting old] [month week]: month is younger than
        # 30 days, the walk ends there. Notebooks: [running waiting] [month week]: week is
        # younger than 7 days.
        assert batches == [
            (False, 2), (False, 2), (False, 1), (False, 1), (False, 0), (True, 0), (True, 1),
        ]  # fmt: skip
        with database(jp_serverapp) as conn:
            runs, blocks = table(conn)
        assert runs == [running, waiting, month, week, fresh]
        assert blocks == dict.fromkeys(runs, 2)
        folder = jp_root_dir / "mage_runs" / "aged"
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"run_{i}.ipynb" for i in (week, fresh, running, waiting)
        )
        statuses = {
            r["id"]: (r["status"], r["executed_notebook"] is not None)
            for r in (await mage.call("GET", "api", "pipeline_runs"))["pipeline_runs"]
        }
        assert statuses == {
            month: ("completed", False),
            week: ("completed", True),
            fresh: ("completed", True),
            running: ("running", True),
            waiting: ("initial", True),
        }
        assert await status_of(mage, "api", "pipeline_runs", str(old)) == 404
        assert await policy.sweep() == SweepResult()


# -- the periodic task -----------------------------------------------------------------------


class TestPeriodic:
    """A sweep every 0.2 s (the first 0.2 s after start)."""

    @pytest.fixture
    def jp_server_config(self, jp_server_config: dict[str, Any]) -> dict[str, Any]:
        jp_server_config["RetentionPolicy"] = {"runs_days": 30, "interval": 0.2}
        return jp_server_config

    async def test_failed_sweep_is_retried_and_stop_is_clean(self, jp_serverapp: Any) -> None:
        app = mage_app(jp_serverapp)
        policy = app.retention
        calls: list[str] = []
        sweep = policy.sweep

        async def flaky() -> SweepResult:
            calls.append("sweep")
            if len(calls) == 1:
                raise RuntimeError("database went away")
            return await sweep()

        policy.sweep = flaky
        records = Records()
        policy.log.addHandler(records)
        try:
            await jp_serverapp.extension_manager.start_all_extensions()
            for _ in range(200):
                if len(calls) >= 3:
                    break
                await asyncio.sleep(0.05)
            assert len(calls) >= 3  # the failure did not end the task
            task = policy._task
            assert task is not None and not task.done()
            [warning] = [r for r in records.records if r.levelno == logging.WARNING]
            assert "retention sweep failed" in warning.getMessage()
            assert "database went away" in warning.getMessage()
            await policy.stop()
            assert task.cancelled() and policy._task is None
            stopped_at = len(calls)
            await asyncio.sleep(0.5)
            assert len(calls) == stopped_at  # no sweep after stop
        finally:
            policy.log.removeHandler(records)
            del policy.sweep


# -- logs of any kept run --------------------------------------------------------------------


async def test_logs_of_a_run_older_than_the_newest_thousand(
    jp_serverapp: Any, jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "busy", CELLS)
    write_pipeline(jp_root_dir, "elsewhere", CELLS)
    trigger = await mage.create_trigger("busy")
    [oldest] = await real_runs(mage, trigger["id"], 1)
    with database(jp_serverapp) as conn:
        now = datetime.now(timezone.utc)
        insert_finished_runs(conn, "busy", trigger["id"], 1005, now)
        [foreign] = insert_finished_runs(conn, "elsewhere", None, 1, now)
    assert (await mage.call("GET", "api", "pipeline_runs"))["metadata"]["count"] == 1007
    logs = await mage.call(
        "GET", "api", "pipelines", "busy", "logs", params={"pipeline_run_id[]": str(oldest["id"])}
    )
    [entry] = logs["logs"]
    assert [r["pipeline_run_id"] for r in entry["pipeline_run_logs"]] == [oldest["id"]]
    load, double = entry["block_run_logs"]
    assert (load["block_uuid"], double["block_uuid"]) == ("load", "double")
    assert load["pipeline_run_id"] == oldest["id"]
    assert f"LOG {oldest['id']}\n" in load["content"]
    # Only that pipeline's runs: another pipeline's run id gives nothing here.
    ids = f"{oldest['id']},{foreign}"
    logs = await mage.call(
        "GET", "api", "pipelines", "busy", "logs", params={"pipeline_run_id": ids}
    )
    assert [r["pipeline_run_id"] for r in logs["logs"][0]["pipeline_run_logs"]] == [oldest["id"]]
    # A bounded request: more than 1000 ids is a client error, not a slow query.
    many = ",".join(str(i) for i in range(1, 1002))
    with pytest.raises(HTTPClientError) as info:
        await mage.call("GET", "api", "pipelines", "busy", "logs", params={"pipeline_run_id": many})
    assert info.value.code == 400


# -- listing hides what JupyterLab hides -----------------------------------------------------


def _write_hidden_and_shown(root: Path) -> None:
    for uuid in ("shown", "sub/shown", "__pycache__/cached", "backup~/old", ".hidden/secret",
                 "drafts_2024/idea", "sub/.ipynb_checkpoints/shown-checkpoint"):  # fmt: skip
        write_pipeline(root, uuid, CELLS)


class TestListing:
    """The contents manager's rules, with one more hide glob configured."""

    HIDE = ["__pycache__", "*.pyc", "*.pyo", ".DS_Store", "*~", "drafts*"]

    @pytest.fixture
    def jp_server_config(self, jp_server_config: dict[str, Any]) -> dict[str, Any]:
        jp_server_config["ContentsManager"] = {"hide_globs": self.HIDE}
        return jp_server_config

    async def test_hidden_folders_are_no_pipelines(
        self, jp_serverapp: Any, jp_root_dir: Path, mage: MageClient
    ) -> None:
        _write_hidden_and_shown(jp_root_dir)
        listed = await mage.call("GET", "api", "pipelines")
        assert sorted(p["uuid"] for p in listed["pipelines"]) == ["shown", "sub/shown"]
        assert (await mage.call("GET", "api", "pipelines", "sub", "shown"))["pipeline"]
        for uuid in ("__pycache__/cached", "backup~/old", ".hidden/secret", "drafts_2024/idea",
                     "sub/.ipynb_checkpoints/shown-checkpoint"):  # fmt: skip
            assert await status_of(mage, "api", "pipelines", *uuid.split("/")) == 404, uuid
            # Nor can a trigger be made for it.
            with pytest.raises(HTTPClientError) as info:
                await mage.create_trigger(uuid)
            assert info.value.code == 404, uuid


class TestListingAllowHidden:
    """With ``allow_hidden``, JupyterLab shows dot folders; checkpoints are still no pipelines."""

    @pytest.fixture
    def jp_server_config(self, jp_server_config: dict[str, Any]) -> dict[str, Any]:
        jp_server_config["ContentsManager"] = {"allow_hidden": True}
        return jp_server_config

    async def test_dot_folders_follow_allow_hidden(
        self, jp_serverapp: Any, jp_root_dir: Path, mage: MageClient
    ) -> None:
        _write_hidden_and_shown(jp_root_dir)
        listed = await mage.call("GET", "api", "pipelines")
        assert sorted(p["uuid"] for p in listed["pipelines"]) == [
            ".hidden/secret", "drafts_2024/idea", "shown", "sub/shown",
        ]  # fmt: skip
        assert (await mage.call("GET", "api", "pipelines", ".hidden", "secret"))["pipeline"]
        for uuid in (
            "__pycache__/cached",
            "backup~/old",
            "sub/.ipynb_checkpoints/shown-checkpoint",
        ):
            assert await status_of(mage, "api", "pipelines", *uuid.split("/")) == 404, uuid
