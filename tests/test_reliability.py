"""Warm pool, limits, timeouts, ?wait, Idempotency-Key, and recovery after a server stop."""

from __future__ import annotations

import asyncio
import gc
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_mage.kernels import SESSION_NAME, SESSION_TYPE
from jupyter_mage.storage import Store

from .conftest import MageClient, block_cell, write_pipeline

SLEEPY = [
    block_cell(
        "import time\n@data_loader\ndef nap(**kwargs):\n"
        "    time.sleep(float(kwargs.get('seconds', 0)))\n    return {'slept': kwargs.get('seconds', 0)}\n",
        "data_loader",
    ),
    block_cell("@transformer\ndef wake(x):\n    return [x, 'awake']\n", "transformer"),
]


def mage_app(serverapp: Any) -> Any:
    """The running MageApp of a server."""
    [app] = serverapp.extension_manager.extension_apps["jupyter_mage"]
    return app


async def test_pool_gives_each_run_a_fresh_ready_kernel(
    jp_serverapp: Any, jp_root_dir: Path, mage: MageClient
) -> None:
    app = mage_app(jp_serverapp)
    assert app.kernel_pool_size == 1
    write_pipeline(jp_root_dir, "sleepy", SLEEPY)
    trigger = await mage.create_trigger("sleepy")
    kernels = []
    for _ in range(3):
        run = await mage.wait((await mage.run_now(trigger["id"]))["id"])
        assert run["status"] == "completed"
        kernels.append(run["metrics"]["kernel_id"])
        for _ in range(400):  # the pool refills in the background
            if app.engine.kernels.ready_count("python3") == 1:
                break
            await asyncio.sleep(0.05)
        assert app.engine.kernels.ready_count("python3") == 1
    assert len(set(kernels)) == 3  # no kernel serves two runs
    running = set(jp_serverapp.kernel_manager.list_kernel_ids())
    assert not running & set(kernels[:2])  # used kernels are shut down
    # JupyterLab's kernel list names ours by their session; a used kernel's session goes too
    # (the raw rows, read first: listing sessions would also drop stale ones, with a warning).
    rows = jp_serverapp.session_manager.cursor.execute("SELECT kernel_id FROM session")
    assert {kernel_id for (kernel_id,) in rows} <= running
    [idle] = app.engine.kernels._ready["python3"]
    sessions = await mage.call("GET", "api", "sessions")
    ours = [s for s in sessions if s["type"] == SESSION_TYPE]
    assert [(s["kernel"]["id"], s["name"]) for s in ours] == [(idle.kernel_id, SESSION_NAME)]
    assert not any(s["path"].endswith(".ipynb") for s in ours)  # no notebook joins it


async def test_wait_returns_the_finished_run_with_outputs(
    jp_root_dir: Path, jp_fetch: Any, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "sleepy", SLEEPY)
    trigger = await mage.create_trigger("sleepy")
    response = await jp_fetch(
        "api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs", trigger["token"],
        method="POST", params={"wait": "60"}, headers={"Authorization": ""},
        body=json.dumps({"pipeline_run": {"variables": {"seconds": 0.2}}}),
    )  # fmt: skip
    run = json.loads(response.body)["pipeline_run"]
    assert run["status"] == "completed"
    assert [b["status"] for b in run["block_runs"]] == ["completed", "completed"]
    [output] = run["block_runs"][1]["outputs"]
    assert output["text_data"] == "[{'slept': 0.2}, 'awake']"
    # A wait that expires answers the run as it is then.
    slow = await mage.call(
        "POST", "api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs",
        params={"wait": "0.05"}, body={"pipeline_run": {"variables": {"seconds": 3}}},
    )  # fmt: skip
    assert slow["pipeline_run"]["status"] in ("initial", "running")
    assert (await mage.wait(slow["pipeline_run"]["id"]))["status"] == "completed"
    with pytest.raises(HTTPClientError) as info:
        await mage.call("POST", "api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs",
                        params={"wait": "soon"}, body={})  # fmt: skip
    assert info.value.code == 400


async def test_idempotency_key_gives_one_run(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "sleepy", SLEEPY)
    trigger = await mage.create_trigger("sleepy")
    other = await mage.create_trigger("sleepy", name="other")
    path = ("api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs")
    first = await mage.call("POST", *path, body={}, headers={"Idempotency-Key": "order-42"})
    again = await mage.call("POST", *path, body={"pipeline_run": {"variables": {"x": 1}}},
                            headers={"Idempotency-Key": "order-42"})  # fmt: skip
    assert again["pipeline_run"]["id"] == first["pipeline_run"]["id"]
    different = await mage.call("POST", *path, body={}, headers={"Idempotency-Key": "order-43"})
    assert different["pipeline_run"]["id"] != first["pipeline_run"]["id"]
    elsewhere = await mage.call("POST", "api", "pipeline_schedules", str(other["id"]),
                                "pipeline_runs", body={}, headers={"Idempotency-Key": "order-42"})  # fmt: skip
    assert elsewhere["pipeline_run"]["id"] != first["pipeline_run"]["id"]
    # Concurrent repeats still make one run.
    burst = await asyncio.gather(*(
        mage.call("POST", *path, body={}, headers={"Idempotency-Key": "burst"}) for _ in range(8)
    ))  # fmt: skip
    assert len({r["pipeline_run"]["id"] for r in burst}) == 1
    runs = await mage.call("GET", *path)
    assert runs["metadata"]["count"] == 3
    for run in runs["pipeline_runs"]:
        await mage.wait(run["id"])


async def test_run_limit_wait_queues_per_trigger(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "sleepy", SLEEPY)
    trigger = await mage.create_trigger(
        "sleepy", variables={"seconds": 1}, settings={"pipeline_run_limit": 1}
    )
    free = await mage.create_trigger("sleepy", name="free", variables={"seconds": 0})
    first = await mage.run_now(trigger["id"])
    second = await mage.run_now(trigger["id"])
    unrelated = await mage.wait((await mage.run_now(free["id"]))["id"])
    assert unrelated["status"] == "completed"  # other triggers are not held back
    first, second = await mage.wait(first["id"]), await mage.wait(second["id"])
    assert first["status"] == second["status"] == "completed"
    assert second["started_at"] >= first["completed_at"]


async def test_accepted_run_has_its_block_runs_and_starts_at_once(
    jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "sleepy", SLEEPY)
    trigger = await mage.create_trigger("sleepy", variables={"seconds": 0.5})
    accepted = await mage.run_now(trigger["id"])
    assert accepted["status"] == "initial"  # the contract's answer to an accepted run
    # As Mage: the block runs exist from the start; a free slot means no wait for a claim.
    run = (await mage.call("GET", "api", "pipeline_runs", str(accepted["id"])))["pipeline_run"]
    assert [b["block_uuid"] for b in run["block_runs"]] == ["nap", "wake"]
    assert run["status"] in ("running", "completed") and run["started_at"] is not None
    assert (await mage.wait(accepted["id"]))["status"] == "completed"


async def test_block_runs_follow_the_notebook_changed_while_queued(
    jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "sleepy", SLEEPY)
    trigger = await mage.create_trigger(
        "sleepy", variables={"seconds": 1}, settings={"pipeline_run_limit": 1}
    )
    first = await mage.run_now(trigger["id"])
    queued = await mage.run_now(trigger["id"])  # waits for the first: the trigger's limit
    tail = block_cell("@data_exporter\ndef tail(x):\n    return 'tail'\n", "data_exporter")
    write_pipeline(jp_root_dir, "sleepy", [SLEEPY[0], tail])  # "wake" left, "tail" came
    queued = await mage.wait(queued["id"])
    assert (await mage.wait(first["id"]))["status"] == "completed"
    assert queued["status"] == "completed"
    statuses = {b["block_uuid"]: b["status"] for b in queued["block_runs"]}
    assert statuses == {"nap": "completed", "wake": "cancelled", "tail": "completed"}


@pytest.mark.parametrize("settings", [
    {"pipeline_run_limit": 1, "pipeline_run_limit_action": "skip"},
    {"skip_if_previous_running": True},
])  # fmt: skip
async def test_skip_when_previous_runs_are_active(
    jp_root_dir: Path, jp_fetch: Any, mage: MageClient, settings: dict[str, Any]
) -> None:
    write_pipeline(jp_root_dir, "sleepy", SLEEPY)
    trigger = await mage.create_trigger("sleepy", variables={"seconds": 2}, settings=settings)
    first = await mage.run_now(trigger["id"])
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs",
                       trigger["token"], method="POST", body="{}",
                       headers={"Authorization": ""})  # fmt: skip
    assert info.value.code == 409
    body = json.loads(info.value.response.body)
    assert body["error"]["type"] == "run_skipped"
    assert body["pipeline_run"]["status"] == "cancelled"
    assert (await mage.wait(first["id"]))["status"] == "completed"
    after = await mage.run_now(trigger["id"])  # nothing active any more: accepted
    assert (await mage.wait(after["id"]))["status"] == "completed"


@pytest.mark.parametrize("timeout_status", ["failed", "cancelled"])
async def test_run_timeout_sets_timeout_status(
    jp_root_dir: Path, mage: MageClient, timeout_status: str
) -> None:
    write_pipeline(jp_root_dir, "sleepy", SLEEPY)
    trigger = await mage.create_trigger(
        "sleepy", variables={"seconds": 60},
        settings={"timeout": 1, "timeout_status": timeout_status},
    )  # fmt: skip
    run = await mage.wait((await mage.run_now(trigger["id"]))["id"], timeout=120)
    assert run["status"] == timeout_status
    assert "timed out after 1 s" in run["metrics"]["error"]
    nap, wake = run["block_runs"]
    assert nap["status"] == "failed" and "timed out" in nap["metrics"]["error"]["message"]
    assert wake["status"] == "cancelled"


# -- recovery: a server that stopped with runs in flight ------------------------------------


@pytest.fixture
def seeded_db(db_url: str, jp_root_dir: Path) -> dict[str, int]:
    """A database as a killed server leaves it: one run 'running', one still 'initial'."""
    write_pipeline(jp_root_dir, "sleepy", SLEEPY)
    store = Store(db_url)
    try:
        loop = asyncio.new_event_loop()
        trigger = loop.run_until_complete(
            store.create_trigger({"name": "t", "pipeline_uuid": "sleepy", "status": "active"})
        )
        ids = {}
        for name in ("was_running", "was_queued"):
            new = loop.run_until_complete(store.create_run({
                "pipeline_schedule_id": trigger["id"], "pipeline_uuid": "sleepy",
                "execution_date": datetime.now(timezone.utc), "variables": {},
                "trigger_name": "t", "trigger_variables": {}, "trigger_settings": {},
            }))  # fmt: skip
            ids[name] = new.run["id"]
        loop.run_until_complete(store.claim_runs(1))  # the first one was running
        loop.run_until_complete(store.create_block_runs(ids["was_running"], ["nap", "wake"]))
        loop.close()
    finally:
        store.close()
    return ids


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any], request: Any) -> dict[str, Any]:
    if "seeded_db" in request.fixturenames:
        request.getfixturevalue("seeded_db")
    return jp_server_config


async def test_restart_fails_running_runs_and_starts_queued_ones(
    jp_serverapp: Any, seeded_db: dict[str, int], mage: MageClient
) -> None:
    await jp_serverapp.extension_manager.start_all_extensions()
    assert gc.get_freeze_count() > 0  # MageApp.gc_freeze_at_start: the start-up heap is frozen
    failed = await mage.wait(seeded_db["was_running"])
    assert failed["status"] == "failed"
    assert failed["metrics"]["error"] == "the server stopped during the run"
    assert {b["status"] for b in failed["block_runs"]} == {"cancelled"}
    resumed = await mage.wait(seeded_db["was_queued"])
    assert resumed["status"] == "completed"


class TestKernelReuse:
    """Opt-in: a reset kernel serves the same pipeline's next run."""

    @pytest.fixture
    def jp_server_config(self, jp_server_config: dict[str, Any]) -> dict[str, Any]:
        jp_server_config["MageApp"]["kernel_reuse"] = True
        return jp_server_config

    async def test_same_pipeline_reuses_a_reset_kernel(
        self, jp_serverapp: Any, jp_root_dir: Path, mage: MageClient
    ) -> None:
        probe = (
            "import json, os\n@data_loader\ndef probe():\n"
            "    ns = get_ipython().user_ns\n"
            "    seen = {'marker': ns.get('marker'), 'module_state': hasattr(json, 'mage_mark'),\n"
            "            'cwd': os.path.basename(os.getcwd())}\n"
            "    ns['marker'] = 1\n    json.mage_mark = 1\n    print('SEEN', seen)\n"
        )
        write_pipeline(jp_root_dir, "sub/reused", [block_cell(probe, "data_loader")])
        write_pipeline(jp_root_dir, "other", SLEEPY)
        trigger = await mage.create_trigger("sub/reused")
        other = await mage.create_trigger("other")
        first = await mage.wait((await mage.run_now(trigger["id"]))["id"])
        app = mage_app(jp_serverapp)
        for _ in range(200):  # the reset happens in the background
            if app.engine.kernels._reusable:
                break
            await asyncio.sleep(0.05)
        unrelated = await mage.wait((await mage.run_now(other["id"]))["id"])
        second = await mage.wait((await mage.run_now(trigger["id"]))["id"])
        assert first["metrics"]["kernel_id"] == second["metrics"]["kernel_id"]
        assert unrelated["metrics"]["kernel_id"] != first["metrics"]["kernel_id"]
        assert "'marker': None, 'module_state': False, 'cwd': 'sub'" in await mage.block_logs(
            first, "probe"
        )
        # The namespace was reset and the run is back in its folder; module state is the
        # documented price of reuse.
        assert "'marker': None, 'module_state': True, 'cwd': 'sub'" in await mage.block_logs(
            second, "probe"
        )
