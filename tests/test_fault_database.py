"""Fault injection: the database as a fault domain (real servers, kernels and SQLite files).

Another process holding SQLite's write lock, a full disk (a small tmpfs), a database deleted
while the server runs, a read-only one, and a deleted trigger whose id must never come back.
Mounting a tmpfs needs root, as `.ci/run` has. All but the deleted trigger are about SQLite's
file and lock: they are ``sqlite_only`` (the PostgreSQL pass skips them; run there they would
test SQLite again, not PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from .conftest import MageClient, block_cell, write_pipeline

SLOW_CHATTY = [
    block_cell(
        "import time\n@data_loader\ndef slow(**kwargs):\n"
        "    time.sleep(float(kwargs.get('seconds', 1)))\n"
        "    print('y' * int(kwargs.get('chars', 10)))\n    return 1\n",
        "data_loader",
    ),
    block_cell("@transformer\ndef done(x):\n    return x + 1\n", "transformer"),
]

SQLITE_FILE = pytest.mark.sqlite_only(reason="SQLite's own file (deleted, full, read-only, mode)")
SQLITE_LOCK = pytest.mark.sqlite_only(reason="SQLite's write lock held by another process")


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A 4 MB tmpfs: a disk that fills up for real.

    Outside pytest's temporary tree, which another pytest session may clean up meanwhile.
    """
    mount = Path(tempfile.mkdtemp(prefix="jupyter-mage-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
    mount.rmdir()


@pytest.fixture
def read_only_db(tmpfs: Path) -> Path:
    """A database with one trigger, on a file system remounted read-only."""
    path = tmpfs / "mage.sqlite"
    from jupyter_mage.storage import Store

    async def seed() -> None:
        store = Store(f"sqlite:///{path}")
        await store.create_trigger({"name": "t", "pipeline_uuid": "p", "token": "a" * 32})
        store.close()

    asyncio.run(seed())
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    return path


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any], request: Any) -> dict[str, Any]:
    mage = jp_server_config["MageApp"]
    mage["db_busy_timeout"] = 0.5
    if "read_only_db" in request.fixturenames:
        mage["db_url"] = f"sqlite:///{request.getfixturevalue('read_only_db')}"
    elif "tmpfs" in request.fixturenames:
        mage["db_url"] = f"sqlite:///{request.getfixturevalue('tmpfs') / 'mage.sqlite'}"
    return jp_server_config


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the disk is full."""
    with path.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass


def db_path(serverapp: Any) -> Path:
    [app] = serverapp.extension_manager.extension_apps["jupyter_mage"]
    return Path(app.store.path)


async def post_status(mage: MageClient, *path: str, body: Any = None) -> tuple[int, Any, Any]:
    """Status, JSON body and headers of a POST that may fail."""
    try:
        response = await mage.fetch(*path, method="POST", body=json.dumps(body or {}))
    except HTTPClientError as error:
        assert error.response is not None
        response = error.response
    return response.code, json.loads(response.body), response.headers


async def test_a_deleted_triggers_id_and_idempotency_keys_never_come_back(
    jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "quick", SLOW_CHATTY)
    old = await mage.create_trigger("quick", variables={"seconds": 0})
    path = ("api", "pipeline_schedules", str(old["id"]), "pipeline_runs")
    first = await mage.call("POST", *path, body={}, headers={"Idempotency-Key": "event-1"})
    await mage.wait(first["pipeline_run"]["id"])
    await mage.call("DELETE", "api", "pipeline_schedules", str(old["id"]))
    new = await mage.create_trigger("quick", variables={"seconds": 0})
    assert new["id"] != old["id"]
    assert new["pipeline_runs_count"] == 0
    again = await mage.call(
        "POST", "api", "pipeline_schedules", str(new["id"]), "pipeline_runs",
        body={}, headers={"Idempotency-Key": "event-1"},
    )  # fmt: skip
    assert again["pipeline_run"]["id"] != first["pipeline_run"]["id"]  # the new event runs
    assert again["pipeline_run"]["pipeline_schedule_id"] == new["id"]
    await mage.wait(again["pipeline_run"]["id"])


@SQLITE_LOCK
async def test_a_held_write_lock_blocks_no_read_and_loses_no_write(
    jp_root_dir: Path, jp_serverapp: Any, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "slow", SLOW_CHATTY)
    trigger = await mage.create_trigger("slow", variables={"seconds": 1})
    run = await mage.run_now(trigger["id"])
    await mage.first_block_running(run["id"], tries=400)
    other = sqlite3.connect(db_path(jp_serverapp), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer, holding the lock
    try:
        # Reads answer at once (WAL), while the block ends and its write waits for the lock.
        for _ in range(3):
            listed = await mage.call("GET", "api", "pipeline_runs")
            assert listed["metadata"]["count"] == 1
        code, body, headers = await post_status(
            mage, "api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs"
        )
        assert code == 503 and headers["Retry-After"] == "5"
        assert body["error"]["type"] == "database_unavailable"
        assert "locked" in body["error"]["message"]
        await asyncio.sleep(2)  # the block is over; its events keep being retried
        current = (await mage.call("GET", "api", "pipeline_runs", str(run["id"])))["pipeline_run"]
        assert current["status"] == "running"
    finally:
        other.execute("ROLLBACK")
        other.close()
    finished = await mage.wait(run["id"])
    assert finished["status"] == "completed"
    assert [b["status"] for b in finished["block_runs"]] == ["completed", "completed"]
    listed = await mage.call("GET", "api", "pipeline_runs")
    assert listed["metadata"]["count"] == 1  # the refused call recorded nothing


@SQLITE_FILE
async def test_a_full_disk_answers_503_and_the_run_ends_once_space_returns(
    jp_root_dir: Path, jp_serverapp: Any, tmpfs: Path, mage: MageClient
) -> None:
    [app] = jp_serverapp.extension_manager.extension_apps["jupyter_mage"]
    failed_writes: list[str] = []
    catcher = logging.Handler()
    catcher.emit = lambda record: failed_writes.append(record.getMessage())  # type: ignore[method-assign]
    app.engine.log.addHandler(catcher)
    write_pipeline(jp_root_dir, "chatty", SLOW_CHATTY)
    trigger = await mage.create_trigger("chatty", variables={"seconds": 2, "chars": 900_000})
    run = await mage.run_now(trigger["id"])
    await mage.first_block_running(run["id"], tries=400)
    filler = tmpfs / "filler"
    await asyncio.to_thread(fill, filler)
    try:
        code, body, headers = await post_status(
            mage, "api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs",
            body={"pipeline_run": {"variables": {"payload": "z" * 600_000}}},
        )  # fmt: skip
        assert code == 503 and headers["Retry-After"] == "5"
        assert "full" in body["error"]["message"]
        # The block prints 900 kB after 2 s: writing its log fails, and is tried again.
        retried = "write failed (database or disk is full); trying again"
        for _ in range(600):
            if any(retried in line for line in failed_writes):
                break
            await asyncio.sleep(0.1)
        assert any(retried in line for line in failed_writes)
        current = (await mage.call("GET", "api", "pipeline_runs", str(run["id"])))["pipeline_run"]
        assert current["status"] == "running"
    finally:
        filler.unlink()
        app.engine.log.removeHandler(catcher)
    finished = await mage.wait(run["id"], timeout=60)
    assert finished["status"] == "completed"
    assert len(await mage.block_logs(finished, "slow")) == 900_001


@SQLITE_FILE
async def test_a_database_deleted_under_the_server_answers_503_and_accepts_nothing(
    jp_root_dir: Path, jp_serverapp: Any, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "quick", SLOW_CHATTY)
    trigger = await mage.create_trigger("quick", variables={"seconds": 0})
    await mage.wait((await mage.run_now(trigger["id"]))["id"])
    path = db_path(jp_serverapp)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    code, body, headers = await post_status(
        mage, "api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs", trigger["token"]
    )
    assert code == 503 and headers["Retry-After"] == "5"
    assert "was deleted while the server ran" in body["error"]["message"]
    with pytest.raises(HTTPClientError) as info:
        await mage.call("GET", "api", "pipeline_runs")
    assert info.value.code == 503
    assert not path.exists()  # nothing was written to a file nobody will read


@SQLITE_FILE
async def test_a_read_only_database_loads_the_extension_and_answers_503(
    read_only_db: Path, jp_fetch: Any, mage: MageClient
) -> None:
    pipelines = await mage.call("GET", "api", "pipelines")  # the extension is loaded
    assert pipelines == {"pipelines": []}
    code, body, headers = await post_status(
        mage, "api", "pipeline_schedules", "1", "pipeline_runs", "a" * 32
    )
    assert code == 503 and headers["Retry-After"] == "5"
    assert body["error"]["type"] == "database_unavailable"
    assert "read" in body["error"]["message"] or "open" in body["error"]["message"]


@SQLITE_FILE
async def test_the_database_file_is_private_to_its_owner(jp_serverapp: Any) -> None:
    # It holds every trigger's token.
    assert stat.S_IMODE(db_path(jp_serverapp).stat().st_mode) == 0o600
