"""Hand runs: block cells run by hand in a notebook's kernel, driven as JupyterLab drives them.

Each test opens a notebook session through Jupyter Server's sessions API (so the kernel gets
``JPY_SESSION_NAME`` and starts in the notebook's folder, as with JupyterLab) and sends every
cell as an ``execute_request`` carrying the cell's id in its metadata, as JupyterLab does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell

from jupyter_mage.handrun import HANDRUN_MIME

from .conftest import MageClient, block_cell, write_pipeline
from .test_blocks import copy_examples


class NotebookKernel:
    """The kernel of a notebook session, executing cells as JupyterLab does."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def run_cell(self, source: str, cell_id: str | None = None) -> dict[str, Any]:
        """Execute one cell; its reply status, error name and outputs (iopub messages)."""
        content = {
            "code": source,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        msg = self.client.session.msg(
            "execute_request", content, metadata={"cellId": cell_id} if cell_id else {}
        )
        self.client.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        outputs: list[dict[str, Any]] = []
        while True:
            message = await self.client.get_iopub_msg(timeout=60)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            if kind == "status" and message["content"]["execution_state"] == "idle":
                break
            if kind in ("stream", "display_data", "execute_result", "error"):
                outputs.append({"type": kind, **message["content"]})
        while True:
            reply = await self.client.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        return {
            "status": reply["content"]["status"],
            "ename": reply["content"].get("ename"),
            "evalue": reply["content"].get("evalue"),
            "outputs": outputs,
        }


def _text(result: dict[str, Any]) -> str:
    parts = []
    for output in result["outputs"]:
        if output["type"] == "stream":
            parts.append(output["text"])
        elif output["type"] == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
        else:
            parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def _summaries(result: dict[str, Any]) -> dict[str, Any] | None:
    for output in result["outputs"]:
        if output["type"] == "display_data" and HANDRUN_MIME in output["data"]:
            return output["data"][HANDRUN_MIME]  # type: ignore[no-any-return]
    return None


@asynccontextmanager
async def notebook_kernel(
    jp_fetch: Callable[..., Any], serverapp: Any, path: str
) -> AsyncIterator[NotebookKernel]:
    """A kernel session for the notebook at ``path`` (relative to the root), as JupyterLab opens."""
    body = {
        "path": path,
        "name": path.rsplit("/", 1)[-1],
        "type": "notebook",
        "kernel": {"name": "python3"},
    }
    response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
    session = json.loads(response.body)
    client = serverapp.kernel_manager.get_kernel(session["kernel"]["id"]).client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        yield NotebookKernel(client)
    finally:
        client.stop_channels()
        await jp_fetch("api", "sessions", session["id"], method="DELETE")


async def test_hand_running_examples_gives_the_triggered_outputs(
    jp_root_dir: Path, jp_fetch: Callable[..., Any], jp_serverapp: Any, mage: MageClient
) -> None:
    copy_examples(jp_root_dir)
    for name in ("revenue_by_segment", "mage_style", "etl_demo"):
        path = f"pipelines/{name}.ipynb"
        nb = nbformat.read(jp_root_dir / path, as_version=4)
        by_hand: dict[str, Any] = {}
        async with notebook_kernel(jp_fetch, jp_serverapp, path) as kernel:
            for cell in nb.cells:  # top to bottom, every code cell, as "Run All"
                if cell.cell_type != "code":
                    continue
                result = await kernel.run_cell(cell.source, cell.get("id"))
                assert result["status"] == "ok", (name, cell.get("id"), _text(result))
                shown = _summaries(result)
                if shown is not None:
                    by_hand[shown["block"]] = shown["outputs"]

        trigger = await mage.create_trigger(f"pipelines/{name}")
        run = await mage.wait((await mage.run_now(trigger["id"]))["id"])
        assert run["status"] == "completed", (name, run)
        triggered = {}
        for block_run in run["block_runs"]:
            answer = await mage.call("GET", "api", "block_runs", str(block_run["id"]), "outputs")
            triggered[block_run["block_uuid"]] = answer["outputs"]
        assert by_hand == triggered, name
        assert any(outputs for outputs in by_hand.values())


HAND = [
    new_code_cell("from jupyter_mage import data_loader, transformer, test"),
    block_cell(
        "@data_loader\ndef rows(**kwargs):\n"
        "    kwargs['context']['loaded'] = True\n"
        "    return [{'id': 1, 'region': kwargs['region']}, {'id': 2, 'region': 'eu'}]\n",
        "data_loader",
    ),
    # helpers defined below the main function exist when it runs (the whole cell runs first)
    block_cell(
        "@transformer\ndef counted(rows, **kwargs):\n"
        "    print('HAND', kwargs['hand_run'], kwargs['pipeline_run_id'], kwargs['env'],\n"
        "          kwargs['block_uuid'], kwargs['context'])\n"
        "    kwargs['logger'].warning('counting %d', len(rows))\n"
        "    return helper(rows)\n\n"
        "def helper(rows):\n    return len(rows)\n\n"
        "@test\ndef test_small(output, *args):\n    assert output < 2, 'too many rows'\n",
        "transformer",
        "name:row_count",
    ),
]


async def test_hand_run_inputs_kwargs_errors_and_tests(
    jp_root_dir: Path, jp_fetch: Callable[..., Any], jp_serverapp: Any
) -> None:
    write_pipeline(jp_root_dir, "hand/rows", HAND, variables={"region": "us"})
    nb = nbformat.read(jp_root_dir / "hand/rows.ipynb", as_version=4)
    setup, loader, counter = nb.cells[1:]
    async with notebook_kernel(jp_fetch, jp_serverapp, "hand/rows.ipynb") as kernel:
        assert (await kernel.run_cell(setup.source, setup.id))["status"] == "ok"

        # Upstream output missing: the cell fails and names the block to run first.
        result = await kernel.run_cell(counter.source, counter.id)
        assert result["status"] == "error" and result["ename"] == "HandRunError"
        assert "run the cell of block 'rows' first" in result["evalue"]

        result = await kernel.run_cell(loader.source, loader.id)
        assert result["status"] == "ok", _text(result)
        html = next(
            o["data"]["text/html"] for o in result["outputs"] if o["type"] == "display_data"
        )
        assert "<table>" in html and "<th>region</th>" in html and "<td>us</td>" in html

        # The block runs with the loader's output, kwargs from the global variables, the
        # hand-run marker; then its @test fails the cell with the test's name.
        result = await kernel.run_cell(counter.source, counter.id)
        text = _text(result)
        assert "HAND True None prod row_count {'loaded': True}" in text
        assert "WARNING counting 2" in text
        assert _summaries(result) == {
            "block": "row_count",
            "outputs": [
                {"variable_uuid": "output_0", "type": "int", "text_data": "2"},
            ],
        }
        assert result["status"] == "error" and result["ename"] == "TestFailure"
        assert result["evalue"] == "test_small failed: too many rows (block: row_count)"

        # Without a cell id (another frontend), the block is found by its function's name.
        result = await kernel.run_cell(counter.source.replace("< 2", "< 3"))
        assert result["status"] == "ok", _text(result)
        assert _summaries(result)["block"] == "row_count"  # type: ignore[index]

        # Code that is no block cell is untouched; a block error fails the cell normally.
        result = await kernel.run_cell("x = 41 + 1\nx")
        assert result["status"] == "ok" and _summaries(result) is None
        result = await kernel.run_cell(
            "@data_loader\ndef rows(**kwargs):\n    raise ValueError('broken loader')\n",
            loader.id,
        )
        assert result["status"] == "error" and result["ename"] == "ValueError"
        error = next(o for o in result["outputs"] if o["type"] == "error")
        assert "broken loader" in "\n".join(error["traceback"])
        assert "handrun.py" not in "\n".join(error["traceback"])  # the user's frames only


async def test_mage_guarded_imports_by_hand_with_the_extension(
    jp_root_dir: Path, jp_fetch: Callable[..., Any], jp_serverapp: Any
) -> None:
    cells = [
        new_code_cell("%load_ext jupyter_mage"),
        block_cell(
            "if 'data_loader' not in globals():\n"
            "    from mage_ai.data_preparation.decorators import data_loader\n\n"
            "@data_loader\ndef load_data(*args, **kwargs):\n    return 'loaded'\n",
            "data_loader",
        ),
        block_cell(
            "if 'condition' not in globals():\n"
            "    from mage_ai.data_preparation.decorators import condition\n\n"
            "@condition\ndef evaluate_condition(data, *args, **kwargs) -> bool:\n"
            "    return data == 'loaded'\n",
            "conditional",
            "upstream:export_data",
        ),
        block_cell(
            "if 'data_exporter' not in globals():\n"
            "    from mage_ai.data_preparation.decorators import data_exporter\n\n"
            "@data_exporter\ndef export_data(data, *args, **kwargs):\n    print('got', data)\n",
            "data_exporter",
        ),
        # a script block: kwargs in scope, as in a triggered run
        block_cell("print('SCRIPT', kwargs['block_uuid'], kwargs['hand_run'])\n", "custom"),
    ]
    write_pipeline(jp_root_dir, "guarded", cells)
    nb = nbformat.read(jp_root_dir / "guarded.ipynb", as_version=4)
    async with notebook_kernel(jp_fetch, jp_serverapp, "guarded.ipynb") as kernel:
        texts = []
        for cell in nb.cells[1:]:
            result = await kernel.run_cell(cell.source, cell.id)
            assert result["status"] == "ok", _text(result)
            texts.append(_text(result))
        assert "condition block evaluate_condition of export_data: True" in texts[2]
        assert "got loaded" in texts[3]
        assert "SCRIPT custom_1 True" in texts[4]
