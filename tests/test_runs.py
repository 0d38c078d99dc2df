"""Run lifecycle: concurrency limit, cancel, retry, dead kernels, trigger CRUD, pipelines API."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from .conftest import MageClient, block_cell, write_pipeline


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    """One run at a time, so the queue is visible."""
    jp_server_config["MageApp"]["max_concurrent_runs"] = 1
    jp_server_config.setdefault("KernelEngine", {})["cancel_grace"] = 2.0
    return jp_server_config


SLOW = [
    block_cell(
        "import time\n@data_loader\ndef slow(**kwargs):\n"
        "    print('start', flush=True)\n    time.sleep(float(kwargs.get('seconds', 0.5)))\n"
        "    return 1\n",
        "data_loader",
    ),
    block_cell("@transformer\ndef after(x):\n    return x + 1\n", "transformer"),
]


async def test_runs_beyond_the_limit_wait_as_initial(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "slow", SLOW)
    trigger = await mage.create_trigger("slow", variables={"seconds": 1.5})
    ids = [(await mage.run_now(trigger["id"]))["id"] for _ in range(3)]
    seen_running: set[int] = set()
    for _ in range(200):
        data = await mage.call("GET", "api", "pipeline_runs", params={"pipeline_uuid": "slow"})
        statuses = {r["id"]: r["status"] for r in data["pipeline_runs"]}
        running = [i for i, s in statuses.items() if s == "running"]
        assert len(running) <= 1, statuses
        seen_running.update(running)
        if all(s in ("completed", "failed", "cancelled") for s in statuses.values()):
            break
        if running:
            assert all(statuses[i] in ("initial", "completed") for i in ids if i not in running)
        await asyncio.sleep(0.1)
    finished = [await mage.wait(i) for i in ids]
    assert [r["status"] for r in finished] == ["completed"] * 3
    # First come, first served.
    assert finished[0]["started_at"] < finished[1]["started_at"] < finished[2]["started_at"]
    assert finished[0]["completed_at"] <= finished[1]["started_at"]


async def test_cancel_running_and_queued_runs(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "slow", SLOW)
    trigger = await mage.create_trigger("slow", variables={"seconds": 60})
    running = await mage.run_now(trigger["id"])
    queued = await mage.run_now(trigger["id"])
    await mage.first_block_running(running["id"], tries=600)
    cancel = {"pipeline_run": {"status": "cancelled"}}
    answer = await mage.call("PUT", "api", "pipeline_runs", str(queued["id"]), body=cancel)
    assert answer["pipeline_run"]["status"] == "cancelled"
    answer = await mage.call("PUT", "api", "pipeline_runs", str(running["id"]), body=cancel)
    assert answer["pipeline_run"]["status"] == "cancelled"  # answered once it really stopped
    statuses = [b["status"] for b in answer["pipeline_run"]["block_runs"]]
    assert statuses == ["cancelled", "cancelled"]
    assert answer["pipeline_run"]["completed_at"]


async def test_retry_blocks_reruns_what_did_not_complete(
    jp_root_dir: Path, mage: MageClient
) -> None:
    flag = jp_root_dir / "fixed"
    cells = [
        block_cell("@data_loader\ndef source():\n    print('source ran')\n    return 41\n",
                   "data_loader"),
        block_cell(
            "from pathlib import Path\n@transformer\ndef flaky(x):\n"
            f"    assert Path({str(flag)!r}).exists(), 'not fixed yet'\n    return x + 1\n",
            "transformer",
        ),
        block_cell("@data_exporter\ndef sink(x):\n    print('sink got', x)\n", "data_exporter"),
    ]  # fmt: skip
    write_pipeline(jp_root_dir, "flaky", cells)
    trigger = await mage.create_trigger("flaky")
    run = await mage.wait((await mage.run_now(trigger["id"]))["id"])
    assert [b["status"] for b in run["block_runs"]] == ["completed", "failed", "upstream_failed"]
    flag.touch()
    retry = {"pipeline_run": {"pipeline_run_action": "retry_blocks"}}
    await mage.call("PUT", "api", "pipeline_runs", str(run["id"]), body=retry)
    again = await mage.wait(run["id"])
    assert again["status"] == "completed"
    assert [b["status"] for b in again["block_runs"]] == ["completed"] * 3
    assert [b["id"] for b in again["block_runs"]] == [b["id"] for b in run["block_runs"]]
    assert "sink got 42" in await mage.block_logs(again, "sink")


async def test_dead_kernel_fails_the_block_and_next_run_works(
    jp_root_dir: Path, mage: MageClient
) -> None:
    cells = [
        block_cell("import os\n@data_loader\ndef die():\n    print('bye', flush=True)\n"
                   "    os._exit(1)\n", "data_loader"),
        block_cell("@transformer\ndef never(x):\n    return x\n", "transformer"),
    ]  # fmt: skip
    write_pipeline(jp_root_dir, "dies", cells)
    write_pipeline(jp_root_dir, "fine", SLOW)
    dies = await mage.create_trigger("dies")
    fine = await mage.create_trigger("fine", variables={"seconds": 0})
    run = await mage.wait((await mage.run_now(dies["id"]))["id"], timeout=60)
    assert run["status"] == "failed"
    assert "kernel died" in run["metrics"]["error"]
    die = run["block_runs"][0]
    assert die["status"] == "failed" and "kernel died" in die["metrics"]["error"]["message"]
    assert run["block_runs"][1]["status"] == "cancelled"
    assert (await mage.wait((await mage.run_now(fine["id"]))["id"]))["status"] == "completed"


async def test_trigger_crud_and_token_rotation(
    jp_root_dir: Path, jp_fetch: Any, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "p", SLOW)
    trigger = await mage.create_trigger(
        "p", name="hook", description="d", variables={"seconds": 0}, status="inactive"
    )
    assert trigger["status"] == "inactive" and trigger["schedule_type"] == "api"
    assert len(trigger["token"]) == 32 and trigger["last_enabled_at"] is None
    flat = await mage.call("POST", "api", "pipeline_schedules",
                           body={"pipeline_schedule": {"name": "flat", "pipeline_uuid": "p"}})  # fmt: skip
    assert flat["pipeline_schedule"]["pipeline_uuid"] == "p"
    assert flat["pipeline_schedule"]["status"] == "active"  # active unless the body says otherwise
    assert flat["pipeline_schedule"]["token"] != trigger["token"]
    listed = await mage.call("GET", "api", "pipelines", "p", "pipeline_schedules")
    assert [t["id"] for t in listed["pipeline_schedules"]] == [flat["pipeline_schedule"]["id"],
                                                               trigger["id"]]  # fmt: skip
    # A GET → edit → PUT round trip (read-only fields included) works, as Mage's UI does it.
    edited = {**trigger, "status": "active", "name": "renamed"}
    updated = await mage.call("PUT", "api", "pipeline_schedules", str(trigger["id"]),
                              body={"pipeline_schedule": edited})  # fmt: skip
    updated = updated["pipeline_schedule"]
    assert (updated["status"], updated["name"]) == ("active", "renamed")
    assert updated["token"] == trigger["token"] and updated["last_enabled_at"]
    # Rotation: the old token stops working at once, the new one works.
    rotated = await mage.call("PUT", "api", "pipeline_schedules", str(trigger["id"]),
                              body={"pipeline_schedule": {"rotate_token": True}})  # fmt: skip
    new_token = rotated["pipeline_schedule"]["token"]
    assert new_token != trigger["token"]
    path = ("api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs")
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*path, trigger["token"], method="POST", body="{}",
                       headers={"Authorization": ""})  # fmt: skip
    assert info.value.code == 403
    ok = await jp_fetch(*path, new_token, method="POST", body="{}", headers={"Authorization": ""})
    run_id = json.loads(ok.body)["pipeline_run"]["id"]
    await mage.wait(run_id)
    # Deleting the trigger keeps its runs.
    gone = await mage.call("DELETE", "api", "pipeline_schedules", str(trigger["id"]))
    assert gone["pipeline_schedule"]["id"] == trigger["id"]
    with pytest.raises(HTTPClientError) as info:
        await mage.call("GET", "api", "pipeline_schedules", str(trigger["id"]))
    assert info.value.code == 404
    kept = await mage.call("GET", "api", "pipeline_runs", str(run_id))
    assert kept["pipeline_run"]["pipeline_schedule_id"] == trigger["id"]


async def test_pipelines_api_and_global_variables(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "dir/p", SLOW, variables={"seconds": 0})
    write_pipeline(jp_root_dir, "broken", [
        block_cell("@data_loader\ndef a():\n    pass\n", "data_loader", "upstream:ghost"),
    ])  # fmt: skip
    (jp_root_dir / "notes.ipynb").write_text(json.dumps({
        "cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }))  # fmt: skip
    listing = await mage.call("GET", "api", "pipelines")
    by_uuid = {p["uuid"]: p for p in listing["pipelines"]}
    assert set(by_uuid) == {"dir/p", "broken"}
    assert [b["uuid"] for b in by_uuid["dir/p"]["blocks"]] == ["slow", "after"]
    assert by_uuid["broken"]["errors"][0]["block_uuid"] == "a"
    updated = await mage.call("PUT", "mage", "pipelines", "dir", "p", "variables",
                              body={"variables": {"seconds": 0, "env": "staging"}})  # fmt: skip
    assert updated["pipeline"]["variables"] == {"seconds": 0, "env": "staging"}
    on_disk = json.loads((jp_root_dir / "dir" / "p.ipynb").read_text())
    assert on_disk["metadata"]["mage"]["variables"]["env"] == "staging"
    with pytest.raises(HTTPClientError) as info:
        await mage.call("PUT", "mage", "pipelines", "dir", "p", "variables", body={"variables": 1})
    assert info.value.code == 400
    # An invalid pipeline can have triggers, but a call is refused (422) with the reason.
    trigger = await mage.create_trigger("broken")
    with pytest.raises(HTTPClientError) as info:
        await mage.run_now(trigger["id"])
    assert info.value.code == 422 and info.value.response is not None
    assert "ghost" in json.loads(info.value.response.body)["message"]
    assert await mage.call("GET", "api", "pipeline_runs") == {
        "pipeline_runs": [], "metadata": {"count": 0, "next": False}
    }  # fmt: skip
