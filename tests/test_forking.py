"""Forked run kernels: as isolated as fresh interpreters, interruptible, and started the usual
way when they cannot be forked (another spec, a parent that cannot start or has died)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

from jupyter_mage.forking import FORK_REQUEST
from jupyter_mage.forking.parents import PARENTS
from jupyter_mage.forking.provisioner import ForkingProvisioner

from .conftest import MageClient, block_cell, write_pipeline
from .test_reliability import mage_app

#: What a kernel shows of itself, and traces it leaves for any later run that could see them.
PROBE = """
import builtins, json, os, sys
@data_loader
def probe(**kwargs):
    ns = get_ipython().user_ns
    seen = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "builtin_left": getattr(builtins, "left_by_an_earlier_run", None),
        "module_left": "module_left_by_an_earlier_run" in sys.modules,
        "env_left": "LEFT_BY_AN_EARLIER_RUN" in os.environ,
        "name_left": "left_by_an_earlier_run" in ns,
        "server_token": "JUPYTER_TOKEN" in os.environ,
        "fork_request": "JUPYTER_MAGE_FORK" in os.environ,
        "jpy_parent_pid": os.environ.get("JPY_PARENT_PID"),
        "sys_path": sys.path,
        "argv0": os.path.basename(sys.argv[0]),
        "cwd": os.getcwd(),
        "history": get_ipython().history_manager.enabled,
        "runtime_home": getattr(sys.modules.get("_jupyter_mage_runtime"), "__home__", None),
        # The process that compiled the run-time: the fork parent, before it forked.
        "runtime_loaded_in": getattr(
            sys.modules.get("_jupyter_mage_runtime"), "__loaded_in__", None
        ),
        # The run's request: on a warm kernel, a one-line cell with the plan in its metadata.
        "cell": get_ipython().kernel.get_parent("shell")["content"]["code"],
        "plan_blocks": [
            b["uuid"]
            for b in get_ipython().kernel.get_parent("shell")["metadata"]
            .get("jupyter_mage", {}).get("plan", {}).get("blocks", [])
        ],
    }
    builtins.left_by_an_earlier_run = os.getpid()
    sys.modules["module_left_by_an_earlier_run"] = type(sys)("left")
    os.environ["LEFT_BY_AN_EARLIER_RUN"] = "1"
    ns["left_by_an_earlier_run"] = 1
    print("PROBE " + json.dumps(seen))
    return 1
"""


def probed(logs: str) -> dict[str, Any]:
    [line] = [x for x in logs.splitlines() if x.startswith("PROBE ")]
    return json.loads(line[len("PROBE ") :])  # type: ignore[no-any-return]


async def probe_run(mage: MageClient, trigger_id: int) -> dict[str, Any]:
    run = await mage.wait((await mage.run_now(trigger_id))["id"])
    assert run["status"] == "completed", run["metrics"]
    return probed(await mage.block_logs(run, "probe"))


async def pool_kernel(app: Any, kernel_name: str = "python3") -> Any:
    """The kernel manager of the pool's idle kernel of that spec, once there is one."""
    for _ in range(400):
        ready = app.engine.kernels._ready.get(kernel_name)
        if ready:
            return app.serverapp.kernel_manager.get_kernel(ready[0].kernel_id)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no ready {kernel_name} kernel in the pool")


async def test_forked_kernels_see_nothing_of_earlier_runs(
    jp_serverapp: Any, jp_root_dir: Path, mage: MageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = mage_app(jp_serverapp)
    assert app.engine.kernels.fork
    write_pipeline(jp_root_dir, "probe", [block_cell(PROBE, "data_loader")])
    trigger = await mage.create_trigger("probe")
    seen = [await probe_run(mage, trigger["id"])]

    kernel = await pool_kernel(app)  # the next run's
    assert isinstance(kernel.provisioner, ForkingProvisioner)
    assert kernel.provisioner.exited is not None  # forked, not launched
    parent_pid = PARENTS.pids()[kernel.provisioner.fork_python]

    seen += [await probe_run(mage, trigger["id"]) for _ in range(2)]

    for s in seen:  # warm or cold, a forked kernel has the run-time: the cell need not carry it
        assert s["cell"].count("\n") == 1 and "probe" not in s["cell"]
        assert s["plan_blocks"] == ["probe"]
    assert len({s["pid"] for s in seen}) == 3  # a process per run
    for s in seen:
        assert s["ppid"] == parent_pid != os.getpid()  # forked by the parent, not the server
        assert s["pid"] != parent_pid
        assert s["jpy_parent_pid"] == str(parent_pid)  # it ends if the parent ends
        assert s["builtin_left"] is None
        assert not s["module_left"] and not s["env_left"] and not s["name_left"]
        assert not s["server_token"] and not s["fork_request"]
        # The parent loaded the run-time before forking; the kernel's home is its own folder.
        assert s["runtime_loaded_in"] == parent_pid
        assert s["history"] is False  # a run kernel writes nothing to IPython's history
        assert s["runtime_home"] == s["cwd"] == str(jp_root_dir)


async def test_a_forked_kernel_looks_like_a_launched_one_and_notebooks_are_not_forked(
    jp_serverapp: Any, jp_root_dir: Path, mage: MageClient
) -> None:
    write_pipeline(jp_root_dir, "probe", [block_cell(PROBE, "data_loader")])
    trigger = await mage.create_trigger("probe")
    forked = await probe_run(mage, trigger["id"])

    # A kernel started as a notebook's is (no fork request): launched as jupyter_client does.
    manager = jp_serverapp.kernel_manager
    kernel_id = await manager.start_kernel(kernel_name="python3")
    try:
        kernel = manager.get_kernel(kernel_id)
        assert isinstance(kernel.provisioner, ForkingProvisioner)
        assert kernel.provisioner.exited is None
        assert kernel.provisioner.process is not None
        client = kernel.client()
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        code = "import os, sys, json; print(json.dumps([sys.path, os.path.basename(sys.argv[0])]))"
        out: list[str] = []
        reply = await client.execute_interactive(
            code,
            timeout=30,
            output_hook=lambda m: out.append(m["content"].get("text", "")),
        )
        client.stop_channels()
    finally:
        await manager.shutdown_kernel(kernel_id, now=True)
    assert reply["content"]["status"] == "ok"
    launched_path, launched_argv0 = json.loads("".join(out))
    assert forked["sys_path"] == launched_path
    assert forked["argv0"] == launched_argv0 == "ipykernel_launcher.py"


async def test_a_forked_kernel_is_interrupted_and_goes_on(jp_serverapp: Any) -> None:
    manager = jp_serverapp.kernel_manager
    env = {**os.environ, FORK_REQUEST: "1"}
    kernel_id = await manager.start_kernel(kernel_name="python3", env=env)
    kernel = manager.get_kernel(kernel_id)
    client = kernel.client()
    try:
        assert kernel.provisioner.exited is not None
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        msg_id = client.execute("import time; time.sleep(30)")
        await asyncio.sleep(0.5)  # the sleep has begun
        await manager.interrupt_kernel(kernel_id)
        while True:
            reply = await client.get_shell_msg(timeout=10)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        after = await client.execute_interactive("x = 6 * 7", timeout=10)
        assert after["content"]["status"] == "ok"
        assert await kernel.is_alive()
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(kernel_id, now=True)
    assert not await kernel.is_alive()


def install_spec(data_dir: Path, name: str, argv: list[str]) -> None:
    spec_dir = data_dir / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": argv, "display_name": name, "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


def pipeline_on(root: Path, uuid: str, kernel_name: str) -> None:
    path = write_pipeline(root, uuid, [block_cell(PROBE, "data_loader")])
    nb = json.loads(path.read_text())
    nb["metadata"]["kernelspec"] = {"name": kernel_name, "display_name": kernel_name}
    path.write_text(json.dumps(nb))


async def test_kernels_that_cannot_be_forked_start_as_usual(
    jp_serverapp: Any,
    jp_data_dir: Path,
    jp_root_dir: Path,
    tmp_path: Path,
    mage: MageClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = mage_app(jp_serverapp)
    launched = "{connection_file}"
    # An interpreter flag before -m: not the plain command a fork reproduces.
    install_spec(
        jp_data_dir,
        "flagged",
        [sys.executable, "-X", "utf8", "-m", "ipykernel_launcher", "-f", launched],
    )
    # An interpreter whose fork parent cannot start (a wrapper that refuses to run it).
    wrapper = tmp_path / "python-no-parent"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$1" in *parent.py) echo refused >&2; exit 3;; esac\nexec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    install_spec(
        jp_data_dir, "no_parent", [str(wrapper), "-m", "ipykernel_launcher", "-f", launched]
    )
    for name in ("flagged", "no_parent"):
        pipeline_on(jp_root_dir, name, name)
        trigger = await mage.create_trigger(name)
        seen = await probe_run(mage, trigger["id"])
        assert seen["ppid"] == os.getpid()  # launched by the server itself
        kernel = await pool_kernel(app, name)
        assert kernel.provisioner.exited is None
        assert isinstance(kernel.provisioner, LocalProvisioner)
        assert kernel.provisioner.process is not None
    assert "kernel not forked, started normally" in caplog.text


async def test_a_dead_fork_parent_takes_its_kernels_and_is_replaced(
    jp_serverapp: Any, jp_root_dir: Path, mage: MageClient
) -> None:
    app = mage_app(jp_serverapp)
    write_pipeline(jp_root_dir, "probe", [block_cell(PROBE, "data_loader")])
    trigger = await mage.create_trigger("probe")
    await probe_run(mage, trigger["id"])
    idle = await pool_kernel(app)
    python = idle.provisioner.fork_python
    parent_pid = PARENTS.pids()[python]

    os.kill(parent_pid, signal.SIGKILL)
    # The idle kernel, an orphan now, is ended, and its end is known to its kernel manager.
    code = await asyncio.wait_for(asyncio.shield(idle.provisioner.exited), 10)
    assert code == -signal.SIGKILL
    assert not await idle.is_alive()

    seen = await probe_run(mage, trigger["id"])  # on a kernel of a new parent
    new_parent = PARENTS.pids()[python]
    assert new_parent != parent_pid
    assert seen["ppid"] == new_parent


class TestOverIPC:
    """Kernels on Unix sockets (the transport the README recommends for busy servers)."""

    @pytest.fixture
    def jp_server_config(self, jp_server_config: dict[str, Any]) -> dict[str, Any]:
        jp_server_config["KernelManager"] = {"transport": "ipc"}
        return jp_server_config

    @pytest.fixture(scope="class")
    def short_folder(self) -> Iterator[Path]:
        # IPC sockets are files named after the connection file: a Unix socket's path must
        # stay under 108 bytes, which pytest's own temporary folders exceed. Removed once the
        # class is done: pytest_jupyter's autouse cleanup stops the server (and a kernel the
        # pool may still be starting there) after the test's own fixtures are gone.
        folder = Path(tempfile.mkdtemp(prefix="jm-", dir="/tmp"))
        yield folder
        shutil.rmtree(folder, ignore_errors=True)

    @pytest.fixture
    def jp_runtime_dir(self, short_folder: Path) -> Path:
        return Path(tempfile.mkdtemp(dir=short_folder))

    async def test_kernels_are_forked_over_ipc_too(
        self, jp_serverapp: Any, jp_root_dir: Path, mage: MageClient
    ) -> None:
        app = mage_app(jp_serverapp)
        write_pipeline(jp_root_dir, "probe", [block_cell(PROBE, "data_loader")])
        trigger = await mage.create_trigger("probe")
        await probe_run(mage, trigger["id"])
        kernel = await pool_kernel(app)
        assert kernel.transport == "ipc"
        assert kernel.provisioner.exited is not None
        seen = await probe_run(mage, trigger["id"])
        assert seen["ppid"] == PARENTS.pids()[kernel.provisioner.fork_python]
