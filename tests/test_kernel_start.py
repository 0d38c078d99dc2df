"""Kernels that die while starting: the port race of TCP kernels, reproduced on purpose.

The kernel manager picks free TCP ports and the kernel binds them a moment later; any
connection opened on the machine in between can take one, and the kernel dies with
``Address already in use``. The kernel spec below makes that happen every time (or only on
its first start): it binds the kernel's shell port in a helper process, then starts ipykernel.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import MageClient, block_cell, write_pipeline

# argv: connection file, marker file. Takes the shell port when the marker file does not
# exist yet, or always when the marker is "-".
PORT_TAKEN_KERNEL = """
import json, os, subprocess, sys, time
connection_file, marker = sys.argv[1], sys.argv[2]
holder = None
if marker == "-" or not os.path.exists(marker):
    if marker != "-":
        open(marker, "w").close()
    info = json.load(open(connection_file))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, zmq\\n"
        "s = zmq.Context().socket(zmq.ROUTER)\\n"
        f"s.bind('tcp://{info['ip']}:{info['shell_port']}')\\n"
        "print('bound', flush=True)\\n"
        "time.sleep(60)\\n"
    )], stdout=subprocess.PIPE)
    holder.stdout.readline()  # the port is taken
from ipykernel import kernelapp
try:
    kernelapp.launch_new_instance(["-f", connection_file])
finally:
    if holder is not None:
        holder.kill()
"""


def install_port_taken_kernel(data_dir: Path, name: str, marker: str) -> None:
    """A kernel spec whose kernel finds its shell port taken (always, or on its first start)."""
    spec_dir = data_dir / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    script = spec_dir / "port_taken.py"
    script.write_text(PORT_TAKEN_KERNEL)
    argv = [sys.executable, str(script), "{connection_file}", marker]
    spec = {"argv": argv, "display_name": name, "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


def pipeline_on(root: Path, uuid: str, kernel_name: str) -> None:
    write_pipeline(
        root,
        uuid,
        [block_cell("@data_loader\ndef load(**kwargs):\n    return 42\n", "data_loader")],
    )
    path = root / f"{uuid}.ipynb"
    nb = json.loads(path.read_text())
    nb["metadata"]["kernelspec"] = {"name": kernel_name, "display_name": kernel_name}
    path.write_text(json.dumps(nb))


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    # No pool: the run's own start is the one that meets the taken port.
    jp_server_config["MageApp"]["kernel_pool_size"] = 0
    return jp_server_config


async def test_a_kernel_dead_at_start_is_started_again(
    jp_data_dir: Path, jp_root_dir: Path, tmp_path: Path, mage: MageClient
) -> None:
    marker = tmp_path / "first-start-done"
    install_port_taken_kernel(jp_data_dir, "flaky_ports", str(marker))
    pipeline_on(jp_root_dir, "flaky", "flaky_ports")
    trigger = await mage.create_trigger("flaky")

    run = await mage.wait((await mage.run_now(trigger["id"]))["id"])

    assert marker.exists()  # the first kernel did meet the taken port
    assert run["status"] == "completed", run["metrics"]
    assert [b["status"] for b in run["block_runs"]] == ["completed"]


async def test_a_kernel_that_always_dies_at_start_fails_the_run_and_the_server_goes_on(
    jp_data_dir: Path, jp_root_dir: Path, mage: MageClient
) -> None:
    install_port_taken_kernel(jp_data_dir, "no_ports", "-")
    pipeline_on(jp_root_dir, "doomed", "no_ports")
    pipeline_on(jp_root_dir, "fine", "python3")
    doomed = await mage.create_trigger("doomed")
    fine = await mage.create_trigger("fine")

    doomed_run = await mage.run_now(doomed["id"])
    # While that run's kernels die one after another, the server answers and runs others.
    fine_run = await mage.run_now(fine["id"])
    status = await asyncio.wait_for(mage.call("GET", "api", "pipeline_runs"), timeout=5)
    assert {r["id"] for r in status["pipeline_runs"]} >= {doomed_run["id"], fine_run["id"]}

    doomed_run = await mage.wait(doomed_run["id"])
    assert doomed_run["status"] == "failed"
    assert "died while starting (tried 3 times)" in doomed_run["metrics"]["error"]
    assert (await mage.wait(fine_run["id"]))["status"] == "completed"
