"""Block retries (Mage's retry_config), block timeouts, and cancelling a polling sensor."""

from __future__ import annotations

from pathlib import Path

from .conftest import MageClient, block_cell, write_pipeline

FLAKY = (
    "@data_loader\ndef flaky(**kwargs):\n"
    "    seen = kwargs['context'].setdefault('calls', [])\n"
    "    seen.append(kwargs['retry']['attempts'])\n"
    "    if len(seen) < 3:\n"
    "        raise ConnectionError(f'attempt {len(seen)} lost the connection')\n"
    "    print('calls', seen)\n    return len(seen)\n"
)
AFTER = block_cell("@transformer\ndef after(n):\n    return n\n", "transformer")


async def test_retries_with_backoff_are_counted(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "flaky", [
        block_cell(FLAKY, "data_loader", "retries:3", "retry_delay:0.1"), AFTER,
    ])  # fmt: skip
    trigger = await mage.create_trigger("flaky")
    run = await mage.wait((await mage.run_now(trigger["id"]))["id"])
    assert run["status"] == "completed"
    flaky = run["block_runs"][0]
    assert flaky["metrics"]["attempts"] == 3
    log = await mage.block_logs(run, "flaky")
    assert "attempt 1 of 4 failed (ConnectionError: attempt 1 lost the connection)" in log
    assert "retrying in 0.1 s" in log and "retrying in 0.2 s" in log  # exponential backoff
    assert "calls [1, 2, 3]" in log  # kwargs['retry']['attempts'] per attempt


async def test_retries_run_out(jp_root_dir: Path, mage: MageClient) -> None:
    # Pipeline-wide retry settings, no backoff; two attempts are not enough.
    nb = write_pipeline(jp_root_dir, "flaky", [block_cell(FLAKY, "data_loader"), AFTER])
    import nbformat

    notebook = nbformat.read(nb, as_version=4)
    notebook.metadata["mage"] = {"retries": 1, "retry_delay": 0.1,
                                 "retry_exponential_backoff": False}  # fmt: skip
    nbformat.write(notebook, nb)
    trigger = await mage.create_trigger("flaky")
    run = await mage.wait((await mage.run_now(trigger["id"]))["id"])
    assert run["status"] == "failed"
    flaky, after = run["block_runs"]
    assert flaky["status"] == "failed" and flaky["metrics"]["attempts"] == 2
    assert flaky["metrics"]["error"]["type"] == "ConnectionError"
    assert after["status"] == "upstream_failed"


async def test_block_timeout_fails_the_block(jp_root_dir: Path, mage: MageClient) -> None:
    slow = "import time\n@data_loader\ndef slow():\n    time.sleep(120)\n"
    quick = "@data_loader\ndef quick():\n    return 1\n"
    write_pipeline(jp_root_dir, "slow", [
        block_cell(slow, "data_loader", "timeout:1", "upstream:"),
        block_cell(quick, "data_loader", "upstream:"),
        block_cell("@transformer\ndef after(x):\n    return x\n", "transformer", "upstream:slow"),
    ])  # fmt: skip
    trigger = await mage.create_trigger("slow", settings={"allow_blocks_to_fail": True})
    run = await mage.wait((await mage.run_now(trigger["id"]))["id"], timeout=60)
    statuses = {b["block_uuid"]: b["status"] for b in run["block_runs"]}
    assert statuses == {"slow": "failed", "quick": "completed", "after": "upstream_failed"}
    slow_run = next(b for b in run["block_runs"] if b["block_uuid"] == "slow")
    assert slow_run["metrics"]["error"]["type"] == "BlockTimeout"
    assert "timed out after 1 seconds" in slow_run["metrics"]["error"]["message"]


async def test_cancel_a_polling_sensor(jp_root_dir: Path, mage: MageClient) -> None:
    sensor = "@sensor\ndef never(**kwargs):\n    return False\n"
    write_pipeline(jp_root_dir, "waiting", [
        block_cell(sensor, "sensor", "sensor_interval:0.2", "sensor_timeout:600"), AFTER,
    ])  # fmt: skip
    trigger = await mage.create_trigger("waiting")
    run = await mage.run_now(trigger["id"])
    await mage.first_block_running(run["id"], tries=1200)  # the sensor is polling
    answer = await mage.call("PUT", "api", "pipeline_runs", str(run["id"]),
                             body={"pipeline_run": {"status": "cancelled"}})  # fmt: skip
    cancelled = answer["pipeline_run"]
    assert cancelled["status"] == "cancelled"
    assert [b["status"] for b in cancelled["block_runs"]] == ["cancelled", "cancelled"]
    log = await mage.block_logs(cancelled, "never")
    assert "sleeping for 0.2 seconds" in log
