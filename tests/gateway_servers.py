"""Real gateways for the tests: Kernel Gateway and Enterprise Gateway, started as subprocesses.

Nothing is installed at test time: ``.ci/gateways`` installs the gateways and a kernel-only venv
once and writes ``gateways.json`` (see that script); this module reads it and starts a gateway on
a free loopback port per test. The gateways' kernel spec ``python3`` runs the kernel-only venv's
Python (ipykernel and nothing else), so a kernel on a gateway cannot import jupyter_mage, as on a
remote gateway.

A test that needs a gateway is skipped when ``gateways.json`` is missing, unless the environment
sets ``JUPYTER_MAGE_REQUIRE_GATEWAYS`` (CI does): then it fails.

Fixtures (the ``mage_`` prefix of the suite): ``mage_gateway`` (parametrize it indirectly with
``"kg"``, ``"kg-token"`` or ``"eg"``) and ``mage_gateway_config`` (the parsed ``gateways.json``). A test module imports them by their
function names (``gateway_fixture``, ``gateway_config_fixture``), so its parameters named
``mage_gateway`` do not shadow an import.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_server.gateway.gateway_client import GatewayClient
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

#: Names the gateways.json to use instead of the default.
CONFIG_ENV = "JUPYTER_MAGE_GATEWAYS"
#: Set (to anything) to make a missing gateways.json a failure rather than a skip.
REQUIRE_ENV = "JUPYTER_MAGE_REQUIRE_GATEWAYS"
# Read at import, before pytest-jupyter points HOME at a temporary folder.
DEFAULT_CONFIG = (
    Path(os.environ.get("JUPYTER_MAGE_CI_DIR") or Path.home() / ".cache" / "jupyter-mage-ci")
    / "gateways.json"
)
#: Seconds a gateway may take to answer after it was started.
START_TIMEOUT = 60.0

KINDS = {
    "kg": ("kernel_gateway", False),
    "kg-token": ("kernel_gateway", True),
    "eg": ("enterprise_gateway", False),
}


def config_path() -> Path:
    """Where gateways.json is looked for."""
    return Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else DEFAULT_CONFIG


def load_config() -> dict[str, Any]:
    """The parsed gateways.json; skips the test (fails it under CI's variable) when missing."""
    path = config_path()
    if not path.is_file():
        message = f"no {path}: run .ci/gateways to install the gateways"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{message} ({REQUIRE_ENV} is set)")
        pytest.skip(message)
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GatewayServer:
    """A running gateway subprocess."""

    kind: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    root: Path
    token: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]

    @property
    def headers(self) -> dict[str, str]:
        """The auth header the gateway wants (none without a token)."""
        return {"Authorization": f"token {self.token}"} if self.token else {}

    def client(self) -> GatewayClient:
        """A GatewayClient (not the singleton) with this gateway's url and token."""
        return GatewayClient(url=self.url, ws_url=self.ws_url, auth_token=self.token)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """A REST call to the gateway; the decoded JSON answer (None when empty)."""
        response = await AsyncHTTPClient().fetch(
            self.url + path,
            method=method,
            headers={"Content-Type": "application/json", **self.headers},
            body=None if body is None and method in ("GET", "DELETE") else json.dumps(body or {}),
            request_timeout=60,
        )
        return json.loads(response.body) if response.body else None

    async def start_kernel(self, name: str = "python3", **fields: Any) -> str:
        """POST /api/kernels; the new kernel's id."""
        model = await self.request("POST", "/api/kernels", {"name": name, **fields})
        return str(model["id"])

    async def shutdown_kernel(self, kernel_id: str, timeout: float = 15.0) -> None:
        """DELETE /api/kernels/<id>; a kernel already gone is fine.

        Retried on 500: Kernel Gateway 3.0.1 answers a DELETE that comes while its restarter
        is restarting the kernel with 500 (``InvalidStateError`` from jupyter_client's
        ``km.ready``), and the restarted kernel stays running.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.request("DELETE", f"/api/kernels/{kernel_id}")
                return
            except HTTPClientError as exc:
                if exc.code == 404:
                    return
                if exc.code != 500 or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until the gateway answers its kernel specs; fails with its log if it exits first.

        Blocking (urllib), so a sync fixture can call it whatever the test's event loop.
        """
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(self.url + "/api/kernelspecs", headers=self.headers)
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"{self.kind} exited {code}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(request, timeout=5):
                    return
            except OSError:  # refused while starting (URLError is an OSError)
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} silent for {timeout:g} s:\n{self.log_text()}")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; the gateway shuts its kernels down on SIGTERM."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def gateway_command(kind: str, config: dict[str, Any], port: int, token: str) -> list[str]:
    """The argv that starts a gateway of that kind on 127.0.0.1:port."""
    app, _ = KINDS[kind]
    argv = list(config[app]["argv"])
    if app == "kernel_gateway":
        prefix = "--KernelGatewayApp."
        # The server's kernel listing (and the engine's) GETs /api/kernels: forbidden by default.
        argv.append("--JupyterWebsocketPersonality.list_kernels=True")
    else:
        prefix = "--EnterpriseGatewayApp."
        # EG refuses kernels to root by default (unauthorized_users); the tests may run as root.
        argv += [f"{prefix}port_retries=0", f"{prefix}unauthorized_users=nobody"]
        # The server's kernel listing GETs /api/kernels: forbidden by default there too.
        argv.append(f"{prefix}list_kernels=True")
    argv += [f"{prefix}ip=127.0.0.1", f"{prefix}port={port}"]
    if token:
        argv.append(f"{prefix}auth_token={token}")
    # Only the kernel-only venv's spec (python3, in the JUPYTER_PATH given), not this Python's.
    argv.append("--KernelSpecManager.ensure_native_kernel=False")
    return argv


def start_gateway(
    kind: str, workdir: Path, config: dict[str, Any], extra_args: tuple[str, ...] = ()
) -> GatewayServer:
    """Start a gateway (``"kg"``, ``"kg-token"`` or ``"eg"``) with its root and log in workdir.

    Call :meth:`GatewayServer.wait_ready` before using it, and :meth:`GatewayServer.stop`.
    """
    app, with_token = KINDS[kind]
    token = secrets.token_hex(16) if with_token else ""
    port = free_port()
    root = workdir / f"{kind}-root"
    root.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{kind}.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER_GATEWAY_", "KG_", "EG_")) and k != "JUPYTER_TOKEN"
    }
    env["JUPYTER_PATH"] = config["kernel"]["jupyter_path"]
    env["PYTHONUNBUFFERED"] = "1"
    env["JUPYTER_RUNTIME_DIR"] = str(workdir / f"{kind}-runtime")  # connection files
    argv = gateway_command(kind, config, port, token) + list(extra_args)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    versions = {"gateway": config[app]["version"], "ipykernel": config["kernel"]["ipykernel"]}
    return GatewayServer(kind, f"http://127.0.0.1:{port}", process, log_path, root, token, versions)


@pytest.fixture(scope="module", name="mage_gateway_config")
def gateway_config_fixture() -> dict[str, Any]:
    """gateways.json (skips or fails the test when it is missing, see :func:`load_config`)."""
    return load_config()


@pytest.fixture(scope="module", name="mage_gateway")
def gateway_fixture(
    request: pytest.FixtureRequest,
    mage_gateway_config: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayServer]:
    """A running gateway of the kind given by indirect parametrization (default ``"kg"``).

    One per module and kind (starting one takes seconds); tests use their own kernels.
    """
    kind = getattr(request, "param", "kg")
    server = start_gateway(kind, tmp_path_factory.mktemp("gateway"), mage_gateway_config)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
