"""Real Jupyter servers with jupyter-mage, as separate processes sharing one database.

For the tests of several servers: each is ``python -m jupyter_server`` on a loopback port, with
its own Jupyter dirs and log file, the same root dir and the same ``MageApp.db_url``. They can
be stopped (SIGTERM, the server's own shutdown) or killed (SIGKILL, nothing runs after it).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

#: Seconds a server may take to answer its first request: a server process imports for about
#: 5 s of CPU (jsonschema alone compiles grammars for 2.7 s), and five start at once on 2 cores.
START_TIMEOUT = 150.0


#: The checkout under test.
CHECKOUT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One Jupyter server process with jupyter-mage.

    Parameters
    ----------
    name
        Its name in its log file and in the tests' messages.
    home
        A folder of its own (Jupyter config, data and runtime dirs, the log).
    root
        The root dir it serves (the pipelines; shared by the servers of a test).
    db_url
        The database it uses (shared).
    extra_args
        More command-line options (``--GatewayClient.url=...``).
    mage
        More ``MageApp`` settings (``server_lease`` and so on).
    """

    def __init__(
        self,
        name: str,
        home: Path,
        root: Path,
        db_url: str,
        extra_args: list[str] | None = None,
        **mage: Any,
    ) -> None:
        self.name = name
        self.home = home
        self.root = root
        self.db_url = db_url
        self.mage = mage
        self.extra_args = extra_args or []
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = home / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (without waiting for it to answer; see :meth:`ready`)."""
        for sub in ("config", "data", "runtime"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.home / "config"),
            "JUPYTER_DATA_DIR": str(self.home / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
            "JUPYTER_TOKEN": self.token,
            # jupyter_mage from this checkout, as the tests' own servers import it.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(CHECKOUT), os.environ.get("PYTHONPATH")) if p
            ),
        }
        args = [
            sys.executable, "-m", "jupyter_server",
            f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={self.root}",
            "--ServerApp.open_browser=False", "--ServerApp.allow_root=True",
            # jupyter-mage alone: JupyterLab's server extensions would only slow the start.
            "--ServerApp.jpserver_extensions=jupyter_mage=True",
            "--ServerApp.jpserver_extensions=jupyterlab=False",
            "--ServerApp.jpserver_extensions=jupyter_lsp=False",
            "--ServerApp.jpserver_extensions=jupyter_server_terminals=False",
            f"--MageApp.db_url={self.db_url}",
            *(f"--MageApp.{key}={value}" for key, value in self.mage.items()),
            *self.extra_args,
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home
        )
        log.close()

    async def ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until the server answers ``api/status``; fails with its log if it exits first."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"server {self.name} exited:\n{self.log_tail()}")
            try:
                await self.call("GET", "api/status")
                return
            except (ConnectionError, OSError, HTTPClientError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server {self.name} did not answer:\n{self.log_tail()}")
            await asyncio.sleep(0.1)  # a process coming up: nothing to await but its port

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Any:
        """A request with the server's token; the JSON answer. Raises HTTPClientError on 4xx/5xx."""
        request = HTTPRequest(
            self.url + path,
            method=method,
            headers={"Authorization": f"token {self.token}", **(headers or {})},
            body=None if method == "GET" else json.dumps(body if body is not None else {}),
            request_timeout=timeout,
        )
        response = await AsyncHTTPClient().fetch(request)
        return json.loads(response.body) if response.body else None

    def kill(self) -> None:
        """SIGKILL: the server ends at once, nothing of its own shutdown runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
