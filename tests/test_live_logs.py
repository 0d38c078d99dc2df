"""What a block prints is in its log while it runs, and ``started_at`` is when it started."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from .conftest import MageClient, block_cell, write_pipeline

TICKER = """
import sys, time
@data_loader
def tick(*args, **kwargs):
    for i in range(40):
        print(f"tick {i}", flush=True)
        if i == 2:
            sys.stderr.write("halfway there\\n")
        time.sleep(0.1)
"""


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_a_running_blocks_log_grows_while_it_runs_and_its_start_is_recorded(
    jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "ticker", [block_cell(TICKER, "data_loader")])
    trigger = await mage.create_trigger("ticker")
    run = await mage.run_now(trigger["id"])
    await mage.first_block_running(run["id"], tries=400)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    seen = ""
    # The block takes 4 s; its log shows the first ticks long before that.
    while "tick 3" not in seen:
        detail = (await mage.call("GET", "api", "pipeline_runs", str(run["id"])))["pipeline_run"]
        block = detail["block_runs"][0]
        seen = (await mage.logs(block["id"]))["content"]
        assert loop.time() < deadline, f"no live log after 30 s: {seen!r}"
        await asyncio.sleep(0.1)
    assert block["status"] == "running", "the log appeared only when the block had ended"
    assert "tick 0\ntick 1\ntick 2\n" in seen and "halfway there" in seen
    assert block["started_at"] is not None
    finished = await mage.wait(run["id"])
    assert finished["status"] == "completed"
    done = finished["block_runs"][0]
    log = (await mage.logs(done["id"]))["content"]
    assert [line for line in log.splitlines() if line.startswith("tick")] == [
        f"tick {i}" for i in range(40)
    ]  # nothing doubled, nothing dropped between the live writes and the final one
    seconds = (_time(done["completed_at"]) - _time(done["started_at"])).total_seconds()
    assert 3.5 < seconds < 30, (done["started_at"], done["completed_at"])
