"""Fault injection: a run's recorded outcome is the truth, whatever its blocks do.

Real servers, real kernels, real SQLite. Each test is a case where the recorded outcome used to
be wrong: a run recorded ``completed`` whose blocks never finished, a burst of output that hung
the run or lost log lines, unbounded output, a block using ``multiprocessing``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import nbformat

from .conftest import MageClient, block_cell, write_pipeline

AFTER = block_cell("@transformer\ndef after(x):\n    return 'after ran'\n", "transformer")


async def run_pipeline(
    mage: MageClient, root: Path, uuid: str, cells: list[Any], timeout: float = 90, **trigger: Any
) -> dict[str, Any]:
    """Write the pipeline, trigger it once, and return the run once it is final."""
    write_pipeline(root, uuid, cells)
    created = await mage.create_trigger(uuid, **trigger)
    return await mage.wait((await mage.run_now(created["id"]))["id"], timeout=timeout)


def statuses(run: dict[str, Any]) -> dict[str, str]:
    return {b["block_uuid"]: b["status"] for b in run["block_runs"]}


# -- 1. no "completed" unless every block reported its end -----------------------------------


async def test_a_block_raising_keyboard_interrupt_fails_the_run(
    jp_root_dir: Path, mage: MageClient
) -> None:
    stop = block_cell("@data_loader\ndef stop():\n    raise KeyboardInterrupt\n", "data_loader")
    run = await run_pipeline(mage, jp_root_dir, "interrupts", [stop, AFTER])
    assert run["status"] == "failed"
    assert "interrupted" in run["metrics"]["error"]
    assert statuses(run) == {"stop": "failed", "after": "cancelled"}
    stop_run = run["block_runs"][0]
    assert stop_run["metrics"]["error"]["type"] == "KeyboardInterrupt"


async def test_an_output_whose_getattr_raises_is_summarised(
    jp_root_dir: Path, mage: MageClient
) -> None:
    attr_dict = block_cell(
        "class AttrDict(dict):\n    __getattr__ = dict.__getitem__\n\n"
        "@data_loader\ndef load():\n    return AttrDict(a=1, b=2)\n",
        "data_loader",
    )
    run = await run_pipeline(mage, jp_root_dir, "attrdict", [attr_dict, AFTER])
    assert run["status"] == "completed"
    assert statuses(run) == {"load": "completed", "after": "completed"}
    outputs = await mage.call(
        "GET", "api", "block_runs", str(run["block_runs"][0]["id"]), "outputs"
    )
    [summary] = outputs["outputs"]
    assert summary["length"] == 2 and summary["text_data"] == "{'a': 1, 'b': 2}"


async def test_a_runtime_that_cannot_report_fails_the_run(
    jp_root_dir: Path, mage: MageClient
) -> None:
    # The block breaks the kernel's display machinery, through which every event travels:
    # the request ends with an error reply and without the block's end.
    breaker = block_cell(
        "import IPython.display\n@data_loader\ndef breaker():\n"
        "    IPython.display.publish_display_data = None\n    return 1\n",
        "data_loader",
    )
    run = await run_pipeline(mage, jp_root_dir, "unreported", [breaker, AFTER])
    assert run["status"] == "failed"
    assert "the kernel failed the run's request: TypeError" in run["metrics"]["error"]
    assert statuses(run) == {"breaker": "failed", "after": "cancelled"}


async def test_deeply_nested_variables_are_refused_before_anything_runs(
    jp_root_dir: Path, mage: MageClient, jp_fetch: Any
) -> None:
    write_pipeline(jp_root_dir, "plain", [AFTER])
    trigger = await mage.create_trigger("plain")
    nested = "1"
    for _ in range(970):
        nested = f"[{nested}]"
    body = '{"pipeline_run": {"variables": {"deep": ' + nested + "}}}"
    response = await jp_fetch(
        "api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs",
        method="POST", body=body, raise_error=False,
    )  # fmt: skip
    assert response.code == 400
    assert json.loads(response.body)["error"]["code"] == 400
    runs = await mage.call("GET", "api", "pipeline_runs", params={"pipeline_uuid": "plain"})
    assert runs["metadata"]["count"] == 0


# -- 2. a burst of output: every line stored, every run final --------------------------------

BURST = block_cell(
    "import logging, sys\n@data_loader\ndef burst(**kwargs):\n"
    "    log = logging.getLogger(f'burst.{kwargs[\"pipeline_run_id\"]}')\n"
    "    log.propagate = False\n"
    "    log.addHandler(logging.StreamHandler(sys.stderr))\n"
    "    for i in range(15000):\n"
    "        log.warning('record %05d of run %s', i, kwargs['pipeline_run_id'])\n"
    "    return 15000\n",
    "data_loader",
)


async def test_three_runs_logging_15000_records_each_keep_every_line(
    jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "burst", [BURST, AFTER])
    trigger = await mage.create_trigger("burst")
    accepted = await asyncio.gather(*(mage.run_now(trigger["id"]) for _ in range(3)))
    runs = await asyncio.gather(*(mage.wait(r["id"], timeout=120) for r in accepted))
    for run in runs:
        assert run["status"] == "completed", run["metrics"]
        log = await mage.block_logs(run, "burst")
        lines = [line for line in log.splitlines() if line.startswith("record ")]
        expected = [f"record {i:05d} of run {run['id']}" for i in range(15000)]
        assert lines == expected


async def test_logs_of_a_running_block_are_readable_before_it_ends(
    jp_root_dir: Path, mage: MageClient
) -> None:
    ticking = block_cell(
        "import time\n@data_loader\ndef ticking():\n"
        "    print('tick 1', flush=False)\n    time.sleep(30)\n    return 1\n",
        "data_loader",
    )
    write_pipeline(jp_root_dir, "ticking", [ticking])
    trigger = await mage.create_trigger("ticking")
    run = await mage.run_now(trigger["id"])
    await mage.first_block_running(run["id"], tries=400)
    log = ""
    for _ in range(100):  # the run-time sends output every 0.2 s; allow a busy machine
        current = (await mage.call("GET", "api", "pipeline_runs", str(run["id"])))["pipeline_run"]
        log = await mage.block_logs(current, "ticking")
        if log:
            break
        await asyncio.sleep(0.1)
    assert log == "tick 1\n"
    await mage.call("PUT", "api", "pipeline_runs", str(run["id"]),
                    body={"pipeline_run": {"status": "cancelled"}})  # fmt: skip
    cancelled = await mage.wait(run["id"])
    assert cancelled["status"] == "cancelled"
    assert await mage.block_logs(cancelled, "ticking") == "tick 1\n"


# -- 7. bounded output -------------------------------------------------------------------------


async def test_30_mb_of_stdout_gives_a_bounded_log_and_executed_notebook(
    jp_root_dir: Path, mage: MageClient, jp_serverapp: Any
) -> None:
    [app] = jp_serverapp.extension_manager.extension_apps["jupyter_mage"]
    limit = app.engine.max_log_chars
    chatty = block_cell(
        "import sys\n@data_loader\ndef chatty():\n"
        "    line = 'x' * 99 + '\\n'\n"
        "    for _ in range(300_000):\n        sys.stdout.write(line)\n    return 1\n",
        "data_loader",
    )
    run = await run_pipeline(mage, jp_root_dir, "chatty", [chatty, AFTER], timeout=120)
    assert run["status"] == "completed"
    log = await mage.block_logs(run, "chatty")
    assert limit <= len(log) < limit + 1000
    assert f"{30_000_000 - limit} more characters of output not kept" in log
    notebook = jp_root_dir / run["executed_notebook"]
    assert notebook.stat().st_size < 2 * limit + 100_000  # was 31 MB: every message kept
    nbformat.validate(nbformat.read(notebook, as_version=4))  # the note of what was dropped too


async def test_a_20_mb_exception_message_is_stored_bounded(
    jp_root_dir: Path, mage: MageClient, jp_fetch: Any
) -> None:
    huge = block_cell(
        "@data_loader\ndef huge():\n    raise ValueError('e' * 20_000_000)\n", "data_loader"
    )
    run = await run_pipeline(mage, jp_root_dir, "huge_error", [huge], timeout=120)
    assert run["status"] == "failed"
    error = run["block_runs"][0]["metrics"]["error"]
    assert error["type"] == "ValueError"
    assert len(error["message"]) < 25_000 and "characters cut" in error["message"]
    assert len(error["traceback"]) < 25_000
    page = await jp_fetch("api", "pipeline_runs", method="GET")
    assert len(page.body) < 200_000  # was 40 MB: the message twice, in every runs page


async def test_a_300_mb_bytes_output_is_summarised_without_a_full_repr(
    jp_root_dir: Path, mage: MageClient
) -> None:
    big = block_cell(
        "import resource\n@data_loader\ndef big(**kwargs):\n"
        "    kwargs['context']['rss_before'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    return b'x' * 300_000_000\n",
        "data_loader",
    )
    peak = block_cell(
        "import resource\n@transformer\ndef peak(data, **kwargs):\n"
        "    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - kwargs['context']['rss_before']\n"
        "    print(f'grown {grown} kB')\n    return grown\n",
        "transformer",
    )
    run = await run_pipeline(mage, jp_root_dir, "big_bytes", [big, peak], timeout=120)
    assert run["status"] == "completed"
    outputs = await mage.call(
        "GET", "api", "block_runs", str(run["block_runs"][0]["id"]), "outputs"
    )
    [summary] = outputs["outputs"]
    assert summary["length"] == 300_000_000 and len(summary["text_data"]) <= 2001
    grown_kb = int((await mage.block_logs(run, "peak")).split()[1])
    # The value itself is ~293,000 kB; a full repr made a second copy of its size.
    assert grown_kb < 450_000


# -- 9. blocks can use multiprocessing ---------------------------------------------------------


async def test_a_block_maps_its_own_function_over_a_process_pool(
    jp_root_dir: Path, mage: MageClient
) -> None:
    pool = block_cell(
        "import multiprocessing\n\ndef square(n):\n    return n * n\n\n"
        "@data_loader\ndef squares():\n"
        "    with multiprocessing.get_context('fork').Pool(2) as workers:\n"
        "        return workers.map(square, range(6))\n",
        "data_loader",
    )
    run = await run_pipeline(mage, jp_root_dir, "pool", [pool])
    assert run["status"] == "completed", run["block_runs"][0]["metrics"]
    outputs = await mage.call(
        "GET", "api", "block_runs", str(run["block_runs"][0]["id"]), "outputs"
    )
    assert outputs["outputs"][0]["text_data"] == "[0, 1, 4, 9, 16, 25]"


async def test_run_kernels_do_not_get_the_servers_token(
    jp_root_dir: Path, mage: MageClient, monkeypatch: Any
) -> None:
    monkeypatch.setenv("JUPYTER_TOKEN", "server-secret-token")
    probe = block_cell(
        "import os\n@data_loader\ndef env():\n    return os.environ.get('JUPYTER_TOKEN')\n",
        "data_loader",
    )
    # The first run may take the warm kernel started before the variable was set; the second
    # gets the one the pool started after it.
    write_pipeline(jp_root_dir, "env_probe", [probe])
    trigger = await mage.create_trigger("env_probe")
    for _ in range(2):
        run = await mage.wait((await mage.run_now(trigger["id"]))["id"])
        assert run["status"] == "completed"
        block_run = str(run["block_runs"][0]["id"])
        outputs = await mage.call("GET", "api", "block_runs", block_run, "outputs")
        assert outputs["outputs"] == []  # None: no output, the variable is not there


async def test_the_summary_bound_is_a_setting(
    jp_root_dir: Path, mage: MageClient, jp_serverapp: Any
) -> None:
    [app] = jp_serverapp.extension_manager.extension_apps["jupyter_mage"]
    app.engine.max_summary_chars = 50
    long_text = block_cell("@data_loader\ndef text():\n    return 'w' * 10_000\n", "data_loader")
    run = await run_pipeline(mage, jp_root_dir, "long_text", [long_text])
    block_run = str(run["block_runs"][0]["id"])
    [summary] = (await mage.call("GET", "api", "block_runs", block_run, "outputs"))["outputs"]
    assert summary["length"] == 10_000 and summary["text_data"] == "'" + "w" * 49 + "…"
