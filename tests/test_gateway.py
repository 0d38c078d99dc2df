"""Kernels on a gateway (issue 12): Kernel Gateway 3.0.1 (with and without a token), Enterprise
Gateway 3.3.0, real subprocesses on loopback ports (see ``gateway_servers.py``).

Two groups:

- ``GatewayKernelConnection`` on its own, against kernels started with the gateway's REST API:
  replies and output come, a dead kernel or a closed websocket fails reads at once, the test
  process stays idle while a kernel sleeps, the gateway logs none of the code at INFO.
- End to end through a Jupyter server started with ``GatewayClient.url``: triggered runs of
  pipelines whose kernels are on the gateway (warm and cold), a failing bootstrap, a cancel, a
  kernel that kills itself, failed kernel starts, and the gateway's kernels after the server
  stops.

Gateways come from ``.ci/gateways``; without it these tests skip, unless
``JUPYTER_MAGE_REQUIRE_GATEWAYS`` is set (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.gateway.gateway_client import GatewayClient
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_mage import bootstrap
from jupyter_mage.gateway import GatewayKernelConnection, KernelConnectionLost

from .cluster import ServerProcess
from .conftest import MageClient, block_cell, write_pipeline
from .gateway_servers import (  # noqa: F401 (the fixtures mage_gateway, mage_gateway_config)
    GatewayServer,
    gateway_config_fixture,
    gateway_fixture,
    start_gateway,
)

ALL_GATEWAYS = pytest.mark.parametrize("mage_gateway", ["kg", "kg-token", "eg"], indirect=True)


async def started(gateway: GatewayServer, **fields: Any) -> tuple[str, GatewayKernelConnection]:
    """A kernel started on the gateway and a connection to it, channels started."""
    kernel_id = await gateway.start_kernel(**fields)
    connection = GatewayKernelConnection(kernel_id, gateway.client())
    await connection.start_channels()
    return kernel_id, connection


async def reply_to(connection: GatewayKernelConnection, msg_id: str, timeout: float = 30) -> Any:
    """The shell reply to ``msg_id``."""
    while True:
        msg = await connection.shell_channel.get_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


async def run(connection: GatewayKernelConnection, code: str) -> tuple[Any, list[Any]]:
    """Execute ``code``; its reply and its iopub messages up to its idle status."""
    msg_id = connection.execute(code, store_history=False, allow_stdin=False, stop_on_error=False)
    iopub = []
    while True:
        msg = await connection.iopub_channel.get_msg(timeout=30)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        iopub.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    return await reply_to(connection, msg_id), iopub


# -- GatewayKernelConnection on its own -------------------------------------------------------


@ALL_GATEWAYS
async def test_kernel_info_and_execute(mage_gateway: GatewayServer) -> None:
    kernel_id, connection = await started(mage_gateway)
    try:
        reply = await reply_to(connection, connection.kernel_info())
        assert reply["msg_type"] == "kernel_info_reply"
        assert reply["content"]["status"] == "ok"

        reply, iopub = await run(connection, "print(1)")
        assert reply["msg_type"] == "execute_reply"
        assert reply["content"]["status"] == "ok"
        streams = [m["content"] for m in iopub if m["msg_type"] == "stream"]
        assert streams == [{"name": "stdout", "text": "1\n"}]
        assert iopub[-1]["content"]["execution_state"] == "idle"

        # The kernel runs the kernel-only venv: jupyter_mage is not importable there.
        reply, _ = await run(connection, "import jupyter_mage")
        assert reply["content"]["ename"] == "ModuleNotFoundError"
    finally:
        connection.stop_channels()
        await mage_gateway.shutdown_kernel(kernel_id)


@pytest.mark.parametrize("mage_gateway", ["kg-token"], indirect=True)
async def test_channels_carry_the_token(mage_gateway: GatewayServer) -> None:
    """The websocket is opened with the gateway's auth header; a wrong token is refused."""
    kernel_id = await mage_gateway.start_kernel()
    try:
        wrong = GatewayClient(url=mage_gateway.url, auth_token="not-" + mage_gateway.token)
        connection = GatewayKernelConnection(kernel_id, wrong)
        with pytest.raises(HTTPClientError) as refused:
            await connection.start_channels()
        assert refused.value.code == 401
    finally:
        await mage_gateway.shutdown_kernel(kernel_id)


@pytest.mark.parametrize("mage_gateway", ["kg", "kg-token", "eg"], indirect=True)
@pytest.mark.parametrize("death", ["os._exit(1)", "os.kill(os.getpid(), 9)"])
async def test_dead_kernel_fails_reads_at_once(mage_gateway: GatewayServer, death: str) -> None:
    """The gateway restarts a dead kernel (its websocket stays open): reads must not hang."""
    kernel_id, connection = await started(mage_gateway)
    try:
        await reply_to(connection, connection.kernel_info())
        msg_id = connection.execute(f"import os, time\ntime.sleep(0.2)\n{death}")
        start = time.monotonic()
        with pytest.raises(KernelConnectionLost, match="restarted the kernel"):
            await asyncio.wait_for(reply_to(connection, msg_id), 5)
        took = time.monotonic() - start
        print(f"\n{mage_gateway.kind} {death}: reads failed after {took:.2f} s")
        assert took < 5
        # Every later read fails at once too, and so does sending.
        for channel in (connection.shell_channel, connection.iopub_channel):
            with pytest.raises(KernelConnectionLost):
                while True:  # what came before the loss first, then the loss
                    await channel.get_msg(timeout=1)
        with pytest.raises(KernelConnectionLost):
            connection.kernel_info()
        assert isinstance(await asyncio.wait_for(connection.lost(), 1), KernelConnectionLost)
    finally:
        connection.stop_channels()
        await mage_gateway.shutdown_kernel(kernel_id)


async def test_kernel_shut_down_under_the_connection(mage_gateway: GatewayServer) -> None:
    """A kernel deleted through the REST API: the gateway keeps its websocket open and silent,
    but the kernel's ``shutdown_reply`` on iopub fails a pending read at once."""
    kernel_id, connection = await started(mage_gateway)
    try:
        await reply_to(connection, connection.kernel_info())
        msg_id = connection.execute("import time; time.sleep(60)")
        pending = asyncio.ensure_future(reply_to(connection, msg_id))
        await asyncio.sleep(0.5)
        start = time.monotonic()
        await mage_gateway.shutdown_kernel(kernel_id)
        with pytest.raises(KernelConnectionLost, match="shut down"):
            await asyncio.wait_for(pending, 5)
        print(f"\ndeleted: reads failed {time.monotonic() - start:.2f} s after the DELETE began")
        assert not connection.channels_running
    finally:
        connection.stop_channels()


async def test_closed_websocket_fails_reads_at_once(
    mage_gateway_config: dict[str, Any], tmp_path: Path
) -> None:
    """The gateway process dies (SIGKILL): the websocket closes, a pending read fails."""
    gateway = start_gateway("kg", tmp_path, mage_gateway_config)
    try:
        gateway.wait_ready()
        _, connection = await started(gateway)
        _, iopub = await run(connection, "import os; print(os.getpid())")
        kernel_pid = int(next(m for m in iopub if m["msg_type"] == "stream")["content"]["text"])
        pending = asyncio.ensure_future(connection.shell_channel.get_msg())
        start = time.monotonic()
        gateway.process.kill()
        with pytest.raises(KernelConnectionLost, match="closed the kernel's websocket"):
            await asyncio.wait_for(pending, 5)
        print(f"\ngateway killed: reads failed after {time.monotonic() - start:.2f} s")
        connection.stop_channels()
    finally:
        gateway.stop()
        # The kernel of a killed gateway is nobody's: kill it too.
        with contextlib.suppress(NameError, ProcessLookupError):
            os.kill(kernel_pid, signal.SIGKILL)


@pytest.mark.parametrize("mage_gateway", ["kg-token", "eg"], indirect=True)
async def test_interrupt_through_the_rest_api(mage_gateway: GatewayServer) -> None:
    """How the engine interrupts: POST /api/kernels/<id>/interrupt (what GatewayKernelManager
    does); the request ends with KeyboardInterrupt and the connection stays usable."""
    kernel_id, connection = await started(mage_gateway)
    try:
        await reply_to(connection, connection.kernel_info())
        msg_id = connection.execute("import time; time.sleep(60)")
        await asyncio.sleep(1)
        start = time.monotonic()
        await mage_gateway.request("POST", f"/api/kernels/{kernel_id}/interrupt", {})
        reply = await reply_to(connection, msg_id, timeout=10)
        print(f"\n{mage_gateway.kind}: interrupted in {time.monotonic() - start:.2f} s")
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        reply, _ = await run(connection, "print(2)")
        assert reply["content"]["status"] == "ok"
    finally:
        connection.stop_channels()
        await mage_gateway.shutdown_kernel(kernel_id)


async def test_stop_channels_fails_pending_reads(mage_gateway: GatewayServer) -> None:
    kernel_id, connection = await started(mage_gateway)
    try:
        await reply_to(connection, connection.kernel_info())
        pending = asyncio.ensure_future(connection.shell_channel.get_msg())
        await asyncio.sleep(0.1)
        connection.stop_channels()
        with pytest.raises(KernelConnectionLost, match="closed"):
            await asyncio.wait_for(pending, 1)
        with pytest.raises(KernelConnectionLost):
            connection.execute("1")
    finally:
        await mage_gateway.shutdown_kernel(kernel_id)


async def test_get_msg_timeout_raises_empty(mage_gateway: GatewayServer) -> None:
    """As jupyter_client's channels: ``queue.Empty`` after the timeout (kernels.py relies on it)."""
    from queue import Empty

    kernel_id, connection = await started(mage_gateway)
    try:
        await reply_to(connection, connection.kernel_info())
        start = time.monotonic()
        with pytest.raises(Empty):
            await connection.shell_channel.get_msg(timeout=0.3)
        assert 0.25 < time.monotonic() - start < 2
    finally:
        connection.stop_channels()
        await mage_gateway.shutdown_kernel(kernel_id)


@pytest.mark.parametrize("mage_gateway", ["kg", "eg"], indirect=True)
async def test_idle_while_the_kernel_sleeps(mage_gateway: GatewayServer) -> None:
    """No polling: the test process's CPU stays under 10 % of the wall time of a 5 s block."""
    kernel_id, connection = await started(mage_gateway)
    try:
        await reply_to(connection, connection.kernel_info())
        cpu, wall = time.process_time(), time.monotonic()
        reply, _ = await run(connection, "import time; time.sleep(5)")
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        print(f"\n{mage_gateway.kind}: {cpu:.3f} s CPU over {wall:.2f} s ({cpu / wall:.1%})")
        assert reply["content"]["status"] == "ok"
        assert wall >= 5
        assert cpu < 0.1 * wall
    finally:
        connection.stop_channels()
        await mage_gateway.shutdown_kernel(kernel_id)


@ALL_GATEWAYS
async def test_gateway_logs_no_code(mage_gateway: GatewayServer) -> None:
    """Every message names its channel, so the gateway logs none at WARNING with its code.

    The control: one frame without ``channel`` (what jupyter_server's own gateway client sends)
    does put its code in the log, so the check can see a leak.
    """
    marker = f"SECRET-{secrets.token_hex(8)}"
    kernel_id, connection = await started(mage_gateway)
    try:
        reply, _ = await run(connection, f"token = {marker!r}\nprint(len(token))")
        assert reply["content"]["status"] == "ok"
        await asyncio.sleep(0.5)  # the log is flushed line by line
        assert marker not in mage_gateway.log_text()

        leak = f"LEAK-{secrets.token_hex(8)}"
        args = mage_gateway.client().load_connection_args()
        ws = await websocket_connect(HTTPRequest(connection.ws_url, **args))
        msg = connection.session.msg("execute_request", {"code": f"# {leak}", "silent": True})
        ws.write_message(json.dumps(msg, default=str))
        for _ in range(50):
            if leak in mage_gateway.log_text():
                break
            await asyncio.sleep(0.1)
        ws.close()
        assert leak in mage_gateway.log_text()
    finally:
        connection.stop_channels()
        await mage_gateway.shutdown_kernel(kernel_id)


@pytest.mark.parametrize("mage_gateway", ["kg", "eg"], indirect=True)
async def test_working_dir_and_env(mage_gateway: GatewayServer) -> None:
    """What a gateway does with ``path`` and ``env`` in POST /api/kernels (for the findings).

    Both gateways start kernels in their own working dir. ``path`` (relative to it) is honoured
    by both (jupyter_server's MainKernelHandler reads it), ``KERNEL_WORKING_DIR`` by neither for
    local kernels; only ``KERNEL_*`` variables of the request's ``env`` reach the kernel.
    """
    (mage_gateway.root / "sub").mkdir(exist_ok=True)
    env = {"KERNEL_PROBE": "k", "OTHER_PROBE": "o", "KERNEL_WORKING_DIR": "/tmp"}
    kernel_id, connection = await started(mage_gateway, path="sub", env=env)
    try:
        code = (
            "import json, os\nprint(json.dumps({'cwd': os.getcwd(), "
            "'env': {k: os.environ.get(k) for k in "
            "('KERNEL_PROBE', 'OTHER_PROBE', 'KERNEL_WORKING_DIR', 'JUPYTER_TOKEN')}}))"
        )
        _, iopub = await run(connection, code)
        out = json.loads(next(m for m in iopub if m["msg_type"] == "stream")["content"]["text"])
        print(f"\n{mage_gateway.kind}: {out}")
        assert out["cwd"] == str(mage_gateway.root / "sub")
        assert out["env"]["KERNEL_PROBE"] == "k"
        assert out["env"]["OTHER_PROBE"] is None
    finally:
        connection.stop_channels()
        await mage_gateway.shutdown_kernel(kernel_id)


# -- End to end: a Jupyter server with GatewayClient.url --------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _forget_gateway_client() -> Iterator[None]:
    """GatewayClient is a singleton that the server of a test below configures: clear it after
    the module (after pytest-jupyter's cleanup has shut the last server's kernels down through
    it), so later modules' servers do not use a gateway."""
    yield
    GatewayClient.clear_instance()


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any], mage_gateway: GatewayServer) -> Any:
    """The suite's server, its kernels on the gateway (one warm kernel, as by default)."""
    GatewayClient.clear_instance()  # an earlier test's server configured it
    jp_server_config["GatewayClient"] = {"url": mage_gateway.url, "auth_token": mage_gateway.token}
    return jp_server_config


TWO_BLOCKS = [
    block_cell(
        "@data_loader\ndef load(*args, **kwargs):\n"
        "    import os, sys\n"
        "    print('loaded on', os.path.basename(sys.executable), flush=True)\n"
        "    return {'n': int(kwargs.get('n', 1))}\n",
        "data_loader",
    ),
    block_cell(
        "@transformer\ndef double(data, *args, **kwargs):\n    return data['n'] * 2\n",
        "transformer",
    ),
]


@ALL_GATEWAYS
async def test_run_on_gateway_completes(
    jp_root_dir: Path, mage: MageClient, mage_gateway: GatewayServer
) -> None:
    write_pipeline(jp_root_dir, "gw", TWO_BLOCKS)
    trigger = await mage.create_trigger("gw", variables={"n": 21})
    run = await mage.wait((await mage.run_now(trigger["id"]))["id"], timeout=60)
    assert run["status"] == "completed", [b["metrics"] for b in run["block_runs"]]
    assert "loaded on python" in await mage.block_logs(run, "load")


@pytest.mark.parametrize("mage_gateway", ["kg", "kg-token"], indirect=True)
async def test_run_on_gateway_idle_and_quiet(
    jp_root_dir: Path, mage: MageClient, mage_gateway: GatewayServer
) -> None:
    """While a block sleeps 5 s the server (this process) stays idle, and the run's variables
    (carried in its code) never reach the gateway's log."""
    marker = f"SECRET-{secrets.token_hex(8)}"
    cells = [
        block_cell(
            "import time\n@data_loader\ndef nap(*args, **kwargs):\n"
            "    time.sleep(5)\n    return len(kwargs['secret'])\n",
            "data_loader",
        )
    ]
    write_pipeline(jp_root_dir, "nap", cells)
    trigger = await mage.create_trigger("nap", variables={"secret": marker})
    run_id = (await mage.run_now(trigger["id"]))["id"]
    await mage.first_block_running(run_id, tries=400)
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.sleep(4)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    run = await mage.wait(run_id, timeout=60)
    print(f"\nserver while the block slept: {cpu:.3f} s CPU over {wall:.2f} s")
    assert run["status"] == "completed", [b["metrics"] for b in run["block_runs"]]
    assert cpu < 0.1 * wall
    assert marker not in mage_gateway.log_text()


@pytest.mark.parametrize("mage_gateway", ["kg", "eg"], indirect=True)
async def test_kernel_death_on_gateway_fails_the_run(
    jp_root_dir: Path, mage: MageClient, mage_gateway: GatewayServer
) -> None:
    """The gateway restarts the dead kernel; the run must fail within seconds, not hang."""
    cells = [
        block_cell(
            "@data_loader\ndef die(*args, **kwargs):\n    import os\n    os._exit(1)\n",
            "data_loader",
        )
    ]
    write_pipeline(jp_root_dir, "die", cells)
    trigger = await mage.create_trigger("die")
    start = time.monotonic()
    run = await mage.wait((await mage.run_now(trigger["id"]))["id"], timeout=30)
    took = time.monotonic() - start
    block = run["block_runs"][0]
    print(f"\n{mage_gateway.kind}: the run ended {run['status']} after {took:.1f} s: {block}")
    assert run["status"] == "failed", run
    assert took < 15
    # The block's end is recorded within 5 s of its start (the gateway notices the death by
    # polling the process, every 3 s).
    ran = _epoch(block["completed_at"]) - _epoch(block["started_at"] or block["completed_at"])
    assert ran < 5, f"the run failed {ran:.1f} s after its block started"
    # Failed because the kernel died, not for another reason (jupyter_server's gateway client
    # fails any read after 1 s of silence with an empty queue.Empty: "kernel error: ").
    message = block["metrics"]["error"]["message"]
    assert "died" in message or "restart" in message, message


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


async def gateway_kernels(gateway: GatewayServer, settle: float = 15.0) -> list[Any]:
    """The gateway's kernels, once none is left or ``settle`` seconds passed (shutdowns are
    asynchronous, and a gateway restarting a dead kernel refuses them for a moment)."""
    deadline = time.monotonic() + settle
    while True:
        kernels: list[Any] = await gateway.request("GET", "/api/kernels")
        if not kernels or time.monotonic() > deadline:
            return kernels
        await asyncio.sleep(0.25)


NAP = [
    block_cell(
        "import time\n@data_loader\ndef nap(*args, **kwargs):\n"
        "    print('napping', flush=True)\n    time.sleep(30)\n    print('woke')\n",
        "data_loader",
    )
]


class TestColdKernels:
    """``kernel_pool_size=0``: every run starts its own kernel on the gateway."""

    @pytest.fixture
    def jp_server_config(self, jp_server_config: dict[str, Any]) -> dict[str, Any]:
        jp_server_config["MageApp"]["kernel_pool_size"] = 0
        return jp_server_config

    @ALL_GATEWAYS
    async def test_cold_run_completes(
        self, jp_root_dir: Path, mage: MageClient, mage_gateway: GatewayServer
    ) -> None:
        write_pipeline(jp_root_dir, "gw", TWO_BLOCKS)
        trigger = await mage.create_trigger("gw", variables={"n": 4})
        run = await mage.wait((await mage.run_now(trigger["id"]))["id"], timeout=90)
        assert run["status"] == "completed", [b["metrics"] for b in run["block_runs"]]
        assert "loaded on python" in await mage.block_logs(run, "load")

    @pytest.mark.parametrize("mage_gateway", ["kg"], indirect=True)
    async def test_a_failing_bootstrap_fails_the_run(
        self,
        jp_root_dir: Path,
        mage: MageClient,
        mage_gateway: GatewayServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # The run-time as sent to the kernel, with a piece that raises while it loads.
        broken = (*bootstrap.RUNTIME_SOURCES[:-1], ("__init__", "raise ImportError('broken')"))
        monkeypatch.setattr(bootstrap, "RUNTIME_SOURCES", broken)
        write_pipeline(jp_root_dir, "gw", TWO_BLOCKS)
        trigger = await mage.create_trigger("gw")
        run = await mage.wait((await mage.run_now(trigger["id"]))["id"], timeout=90)
        assert run["status"] == "failed"
        assert "ImportError: broken" in run["metrics"]["error"], run["metrics"]
        assert {b["status"] for b in run["block_runs"]} <= {"failed", "cancelled"}


class TestFailedWarmUpsAndRuns:
    """A run-time that fails to load in the kernel: every warm-up fails (after the gateway
    started its kernel), and so does every run, on a kernel started for it."""

    @pytest.fixture
    def jp_server_config(
        self, jp_server_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> dict[str, Any]:
        # Before the server starts: its warm-up code is built then.
        broken = (*bootstrap.RUNTIME_SOURCES[:-1], ("__init__", "raise ImportError('broken')"))
        monkeypatch.setattr(bootstrap, "RUNTIME_SOURCES", broken)
        jp_server_config["MageApp"]["kernel_pool_size"] = 1
        return jp_server_config

    @pytest.mark.parametrize("mage_gateway", ["kg", "eg"], indirect=True)
    @pytest.mark.timeout(300)
    async def test_they_leave_no_kernel_behind(
        self, jp_root_dir: Path, mage: MageClient, mage_gateway: GatewayServer
    ) -> None:
        write_pipeline(jp_root_dir, "gw", TWO_BLOCKS)
        trigger = await mage.create_trigger("gw")
        ids = [(await mage.run_now(trigger["id"]))["id"] for _ in range(20)]
        for run_id in ids:
            run = await mage.wait(run_id, timeout=120)
            assert run["status"] == "failed", run
            assert "ImportError: broken" in run["metrics"]["error"], run["metrics"]
        assert await gateway_kernels(mage_gateway) == []


@ALL_GATEWAYS
async def test_cancel_interrupts_a_sleeping_block(
    jp_root_dir: Path, mage: MageClient, mage_gateway: GatewayServer
) -> None:
    write_pipeline(jp_root_dir, "nap", NAP)
    trigger = await mage.create_trigger("nap")
    run_id = (await mage.run_now(trigger["id"]))["id"]
    await mage.first_block_running(run_id, tries=600)
    asked = time.monotonic()
    body = {"pipeline_run": {"status": "cancelled"}}
    answer = await mage.call("PUT", "api", "pipeline_runs", str(run_id), body=body)
    run = await mage.wait(run_id, timeout=30)
    assert run["status"] == "cancelled", run
    assert answer["pipeline_run"]["status"] == "cancelled"
    assert time.monotonic() - asked < 15
    logs = await mage.block_logs(run, "nap")
    assert "napping" in logs and "woke" not in logs
    assert run["block_runs"][0]["status"] == "cancelled"


@pytest.mark.parametrize("mage_gateway", ["kg-token", "eg"], indirect=True)
async def test_the_gateway_has_no_kernel_of_ours_after_the_server_stops(
    tmp_path: Path, mage_gateway: GatewayServer
) -> None:
    """A server of its own (a process), its warm pool and a run on the gateway, then SIGTERM:
    every kernel it started on the gateway is shut down."""
    root = tmp_path / "root"
    write_pipeline(root, "gw", TWO_BLOCKS)
    server = ServerProcess(
        "gwserver",
        tmp_path / "home",
        root,
        f"sqlite:///{tmp_path / 'mage.sqlite'}",
        kernel_pool_size=2,
        extra_args=[
            f"--GatewayClient.url={mage_gateway.url}",
            f"--GatewayClient.auth_token={mage_gateway.token}",
        ],
    )
    server.start()
    try:
        await server.ready()
        data = await server.call("POST", "api/pipelines/gw/pipeline_schedules", {
            "pipeline_schedule": {"name": "t"}
        })  # fmt: skip
        trigger_id = data["pipeline_schedule"]["id"]
        run = (await server.call(
            "POST", f"api/pipeline_schedules/{trigger_id}/pipeline_runs?wait=60", {}
        ))["pipeline_run"]  # fmt: skip
        assert run["status"] == "completed", run
        assert await mage_gateway.request("GET", "/api/kernels")  # the refilled warm pool
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0, server.log_tail()
    assert await gateway_kernels(mage_gateway) == []
