"""Several real Jupyter servers on one database: every run exactly once, none stranded, cancel
and ``?wait`` from any server, trigger limits across servers.

The servers are separate processes (``tests/cluster.py``) sharing the test's database: a SQLite
file by default, PostgreSQL on the PostgreSQL pass (``JUPYTER_MAGE_TEST_DB_URL``). The blocks
write a ledger (one line per execution, appended with O_APPEND) that tells what really ran.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from .cluster import ServerProcess
from .conftest import FINISHED, block_cell, write_pipeline

#: A short lease, so that a killed server's runs end within seconds (heartbeats every 1 s).
LEASE = 3.0

#: Server processes start slowly on 2 cores (see tests/cluster.py): more than the default.
pytestmark = pytest.mark.timeout(300)

LEDGER_BLOCK = """
import os, time
@data_loader
def work(*args, **kwargs):
    def note(line):
        fd = os.open(kwargs["ledger"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (line + "\\n").encode())
        os.close(fd)
    note(f"start {kwargs['key']}")
    time.sleep(float(kwargs.get("seconds", 0)))
    note(f"end {kwargs['key']}")
"""


class Cluster:
    """The servers of one test, on its database and a shared root dir."""

    def __init__(self, home: Path, db_url: str) -> None:
        self.home = home
        self.db_url = db_url
        self.root = home / "root"
        self.root.mkdir()
        write_pipeline(self.root, "ledger", [block_cell(LEDGER_BLOCK, "data_loader")])
        self.servers: list[ServerProcess] = []

    async def start(self, count: int, **mage: Any) -> list[ServerProcess]:
        """Start ``count`` servers at once (they migrate an empty database together)."""
        settings = {
            "server_lease": LEASE,
            "queue_poll_interval": 0.5,
            "kernel_pool_size": 1,
            **mage,
        }
        names = [f"server{len(self.servers) + i}" for i in range(count)]
        servers = [
            ServerProcess(
                name, self.home / name, self.root, self.db_url, server_id=name, **settings
            )
            for name in names
        ]
        self.servers.extend(servers)
        for server in servers:
            server.start()
        await asyncio.gather(*(server.ready() for server in servers))
        return servers

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[Cluster]:
    """Servers on the test's database, stopped at the end: ``await cluster.start(n, ...)``."""
    servers = Cluster(tmp_path, db_url)
    try:
        yield servers
    finally:
        servers.stop()


async def new_trigger(server: ServerProcess, **settings: Any) -> int:
    body = {"pipeline_schedule": {"name": "t", "settings": settings}}
    data = await server.call("POST", "api/pipelines/ledger/pipeline_schedules", body)
    return int(data["pipeline_schedule"]["id"])


async def trigger(
    server: ServerProcess, trigger_id: int, key: str, ledger: Path, seconds: float = 0, **kw: Any
) -> dict[str, Any]:
    body = {"pipeline_run": {"variables": {"key": key, "ledger": str(ledger), "seconds": seconds}}}
    path = f"api/pipeline_schedules/{trigger_id}/pipeline_runs"
    if "wait" in kw:
        path += f"?wait={kw.pop('wait')}"
    data = await server.call("POST", path, body, **kw)
    return data["pipeline_run"]  # type: ignore[no-any-return]


async def get_run(server: ServerProcess, run_id: int) -> dict[str, Any]:
    return (await server.call("GET", f"api/pipeline_runs/{run_id}"))["pipeline_run"]  # type: ignore[no-any-return]


async def until_final(server: ServerProcess, run_id: int, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = await get_run(server, run_id)
        if run["status"] in FINISHED:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        await asyncio.sleep(0.1)


def ledger_lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


async def test_five_servers_started_at_once_on_an_empty_database_all_serve(
    cluster: Cluster,
) -> None:
    servers = await cluster.start(5, kernel_pool_size=0)
    for server in servers:
        assert (await server.call("GET", "api/pipelines"))["pipelines"][0]["uuid"] == "ledger"
    trigger_id = await new_trigger(servers[0])
    for server in servers:  # one schema, seen alike by all
        data = await server.call("GET", f"api/pipeline_schedules/{trigger_id}")
        assert data["pipeline_schedule"]["id"] == trigger_id


@pytest.mark.timeout(500)
@pytest.mark.postgres_only(
    "the database several servers share is PostgreSQL; on one SQLite file (the other tests "
    "here) 200 runs would only queue on its single write lock"
)
async def test_keyed_calls_spread_over_two_servers_run_exactly_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Reused kernels (opt-in) keep 200 runs quick on 2 cores; each run still executes once.
    servers = await cluster.start(2, kernel_reuse=True, max_concurrent_runs=2)
    trigger_id = await new_trigger(servers[0])
    ledger = tmp_path / "ledger.txt"
    keys = [f"k{i}" for i in range(200)]

    async def call(i: int, key: str) -> dict[str, Any]:
        server = servers[i % 2]
        return await trigger(server, trigger_id, key, ledger, headers={"Idempotency-Key": key})

    first = await asyncio.gather(*(call(i, key) for i, key in enumerate(keys)))
    # The same keys again, each on the other server: answered with the first run, not run.
    again = await asyncio.gather(*(call(i + 1, key) for i, key in enumerate(keys[:50])))
    assert [r["id"] for r in again] == [r["id"] for r in first[:50]]
    runs = [await until_final(servers[0], r["id"], timeout=240) for r in first]
    failures = {
        r["id"]: (r["metrics"] or {}).get("error") for r in runs if r["status"] != "completed"
    }
    logs = "\n".join(server.log_tail(15) for server in servers) if failures else ""
    assert Counter(r["status"] for r in runs) == {"completed": 200}, f"{failures}\n{logs}"
    starts = Counter(line.split()[1] for line in ledger_lines(ledger) if line.startswith("start"))
    assert starts == dict.fromkeys(keys, 1)


async def test_a_killed_servers_runs_end_within_the_lease_and_the_others_complete(
    cluster: Cluster, tmp_path: Path
) -> None:
    doomed, survivor = await cluster.start(2, max_concurrent_runs=2)
    trigger_id = await new_trigger(doomed)
    ledger = tmp_path / "ledger.txt"
    # Two runs start on the doomed server (its free slots), sleeping long.
    held = [await trigger(doomed, trigger_id, f"held{i}", ledger, seconds=60) for i in range(2)]
    for run in held:
        deadline = time.monotonic() + 60
        while (seen := await get_run(survivor, run["id"]))["block_runs"][0]["status"] != "running":
            assert time.monotonic() < deadline, (
                f"run {run['id']}'s block never ran: {seen}\n{doomed.log_tail()}\n"
                f"{survivor.log_tail()}"
            )
            await asyncio.sleep(0.1)
    kept = [await trigger(survivor, trigger_id, f"kept{i}", ledger, seconds=1) for i in range(2)]
    doomed.kill()
    killed_at = time.monotonic()
    ended = [await until_final(survivor, r["id"], timeout=LEASE + 30) for r in held]
    took = time.monotonic() - killed_at
    for run in ended:
        assert run["status"] == "failed"
        assert f"the server running it ({doomed.name}) stopped" in run["metrics"]["error"]
        assert run["block_runs"][0]["status"] == "failed"
    assert took < LEASE + 2, f"the killed server's runs ended {took:.1f} s after the kill"
    for run in kept:
        assert (await until_final(survivor, run["id"]))["status"] == "completed"


async def test_cancel_through_another_server_interrupts_the_block(
    cluster: Cluster, tmp_path: Path
) -> None:
    owner, other = await cluster.start(2)
    trigger_id = await new_trigger(owner)
    ledger = tmp_path / "ledger.txt"
    run = await trigger(owner, trigger_id, "c", ledger, seconds=30)
    deadline = time.monotonic() + 60
    while "start c" not in ledger_lines(ledger):
        assert time.monotonic() < deadline, "the block never started"
        await asyncio.sleep(0.05)
    asked = time.monotonic()
    body = {"pipeline_run": {"status": "cancelled"}}
    answer = (await other.call("PUT", f"api/pipeline_runs/{run['id']}", body))["pipeline_run"]
    final = await until_final(other, run["id"], timeout=20)
    assert final["status"] == "cancelled"
    assert answer["status"] == "cancelled"  # the answer waited for the owner's record
    assert time.monotonic() - asked < 10
    # Interrupted: the block never wrote its end (its sleep had 30 s to go), nor will it.
    assert "end c" not in ledger_lines(ledger)
    assert final["block_runs"][0]["status"] == "cancelled"


async def test_wait_on_another_server_answers_within_a_second_of_the_end(
    cluster: Cluster, tmp_path: Path
) -> None:
    owner, other = await cluster.start(2)
    trigger_id = await new_trigger(owner)
    ledger = tmp_path / "ledger.txt"
    key = {"Idempotency-Key": "w"}
    run = await trigger(owner, trigger_id, "w", ledger, seconds=2, headers=key)
    # The same key on the other server answers that run, held until it ends there.
    waited = await trigger(other, trigger_id, "w", ledger, seconds=2, headers=key, wait=30)
    answered = time.time()
    assert waited["id"] == run["id"]
    assert waited["status"] == "completed"
    assert [b["status"] for b in waited["block_runs"]] == ["completed"]
    completed = _epoch(waited["completed_at"])
    assert answered - completed < 1.0, f"answered {answered - completed:.2f} s after the end"


async def test_a_run_limit_holds_across_servers(cluster: Cluster, tmp_path: Path) -> None:
    servers = await cluster.start(2, max_concurrent_runs=3)
    trigger_id = await new_trigger(servers[0], pipeline_run_limit=1)
    ledger = tmp_path / "ledger.txt"
    runs = await asyncio.gather(
        *(trigger(servers[i % 2], trigger_id, f"l{i}", ledger, seconds=0.3) for i in range(8))
    )
    ids = {r["id"] for r in runs}
    most = 0
    deadline = time.monotonic() + 120
    while True:
        data = await servers[1].call(
            "GET", f"api/pipeline_runs?pipeline_schedule_id={trigger_id}&_limit=50"
        )
        listed = [r for r in data["pipeline_runs"] if r["id"] in ids]
        most = max(most, sum(r["status"] == "running" for r in listed))
        if all(r["status"] in FINISHED for r in listed) and len(listed) == len(ids):
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert most == 1
    assert {r["status"] for r in listed} == {"completed"}
    # The ledger agrees: no two executions overlapped.
    open_runs = 0
    for line in ledger_lines(ledger):
        open_runs += 1 if line.startswith("start") else -1
        assert open_runs <= 1


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


@pytest.mark.postgres_only("LISTEN/NOTIFY is PostgreSQL's")
async def test_on_postgresql_other_servers_hear_of_queued_ended_and_cancelled_runs_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Polls so slow that only a notice explains a quick reaction: reads of other servers'
    # work once per heartbeat (lease / 3 = 20 s), the queue every 60 s.
    slow = {"server_lease": 60.0, "remote_poll_interval": 60.0, "queue_poll_interval": 60.0}
    busy, free = await cluster.start(2, max_concurrent_runs=1, **slow)
    trigger_id = await new_trigger(busy)
    ledger = tmp_path / "ledger.txt"
    # Ended: a ?wait on free for a run that busy executes is answered when it ends there.
    key = {"Idempotency-Key": "w"}
    run = await trigger(busy, trigger_id, "w", ledger, seconds=2, headers=key)
    waited = await trigger(free, trigger_id, "w", ledger, seconds=2, headers=key, wait=30)
    answered = time.time()
    assert (waited["id"], waited["status"]) == (run["id"], "completed")
    assert answered - _epoch(waited["completed_at"]) < 5
    # Queued: busy's one slot is taken, so the next run it accepts waits in the queue, and
    # free claims it.
    held = await trigger(busy, trigger_id, "held", ledger, seconds=60)
    queued = await trigger(busy, trigger_id, "queued", ledger, seconds=0)
    assert (await until_final(free, queued["id"], timeout=10))["status"] == "completed"
    # Cancel: asked through free, busy interrupts the held block.
    deadline = time.monotonic() + 30
    while "start held" not in ledger_lines(ledger):
        assert time.monotonic() < deadline, "the held block never started"
        await asyncio.sleep(0.05)
    asked = time.monotonic()
    body = {"pipeline_run": {"status": "cancelled"}}
    answer = (await free.call("PUT", f"api/pipeline_runs/{held['id']}", body))["pipeline_run"]
    assert answer["status"] == "cancelled"
    assert time.monotonic() - asked < 10
    assert "end held" not in ledger_lines(ledger)
