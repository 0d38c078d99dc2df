"""Services the opt-in rows of ``run.py`` run against: PostgreSQL and a Jupyter Kernel Gateway.

``--postgres URL`` gives each group of servers that share a database an empty database (or
schema) of its own on that PostgreSQL (:class:`PostgresSchemas`); ``--postgres auto`` first
starts a private, throwaway cluster with ``.ci/postgres`` in a folder of its own
(:class:`PostgresCluster`).
``--gateway auto`` starts Kernel Gateway from what ``.ci/gateways`` installed
(:class:`KernelGateway`). Whatever is started here is stopped by the caller at exit, failures
included; every ``stop`` and ``drop`` may be called twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from processes import free_port, kill_exact, log_tail, spawn_logged, tree_below

REPO = Path(__file__).resolve().parents[1]
CI_POSTGRES = REPO / ".ci" / "postgres"
#: Where ``.ci/gateways`` writes what it installed (the same defaults as that script).
GATEWAYS_JSON = (
    Path(os.environ.get("JUPYTER_MAGE_CI_DIR") or Path.home() / ".cache" / "jupyter-mage-ci")
    / "gateways.json"
)


# -- PostgreSQL ---------------------------------------------------------------------------------


@dataclass
class PostgresCluster:
    """``--postgres auto``: a cluster of our own, from ``.ci/postgres`` in a private folder.

    ``JUPYTER_MAGE_PG_DIR`` points the script at a folder made for this run (not the
    checkout's default one, which the test suite's PostgreSQL pass may be using right now), so
    that stopping it at the end stops only what this run started. The folder is outside the
    benchmark's temporary dir: run as root, the cluster belongs to ``postgres``, which must be
    able to enter it (``mkdtemp`` makes folders only their owner can enter).
    """

    dir: Path = field(default_factory=Path)
    url: str = ""
    started: bool = False

    def env(self) -> dict[str, str]:
        return {**os.environ, "JUPYTER_MAGE_PG_DIR": str(self.dir)}

    def start(self) -> str:
        """Start the cluster (about 2 s); its SQLAlchemy URL."""
        self.dir = Path(tempfile.gettempdir()) / f"jupyter-mage-bench-pg-{secrets.token_hex(4)}"
        self.started = True  # first: an interrupt during the start must still lead to stop()
        result = subprocess.run(
            ["bash", str(CI_POSTGRES), "start"],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f".ci/postgres start failed:\n{result.stderr[-2000:]}")
        self.url = result.stdout.strip().splitlines()[-1]
        return self.url

    def postmaster_pid(self) -> int | None:
        """The cluster's main process (its CPU counts in the quiet-state check)."""
        try:
            return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the cluster and delete its folder; a no-op when it was never started."""
        if not self.started:
            return
        self.started = False
        subprocess.run(
            ["bash", str(CI_POSTGRES), "stop"],
            env=self.env(),
            capture_output=True,
            check=False,
            timeout=120,
        )


def schema_url(url: str, schema: str) -> str:
    """``url`` with ``schema`` as the connection's search path (as tests/postgres.py does)."""
    from sqlalchemy import make_url

    parsed = make_url(url)
    options = f"{parsed.query['options']} " if "options" in parsed.query else ""
    return parsed.update_query_dict(
        {"options": f"{options}-csearch_path={schema}"}
    ).render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """A URL for the report: without its password."""
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)


class PostgresSchemas:
    """Empty databases (or schemas) on one PostgreSQL, one per group of servers sharing one.

    A run of the benchmark starts from an empty database. A database of its own per group is
    the default: servers announce queued runs and cancels with ``NOTIFY``, whose channels are
    database-wide, as are advisory locks; two groups in schemas of one database would wake
    each other. When the URL's role may not create databases, an empty schema (named in the
    URL's search path, as tests/postgres.py does per test) is used instead, and ``kind`` says
    so.
    """

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine, make_url
        from sqlalchemy.pool import NullPool

        parsed = make_url(url)
        if not parsed.drivername.startswith("postgresql"):
            raise RuntimeError(f"--postgres needs a postgresql:// URL, not {parsed.drivername}")
        self.url = url
        self.admin = create_engine(parsed, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.prefix = f"mage_bench_{os.getpid()}_{secrets.token_hex(3)}"
        self.kind = "database"
        self.created: list[tuple[str, str]] = []  # (kind, name)
        self.engines: dict[str, Any] = {}

    def fresh(self, label: str) -> str:
        """A new empty database (else schema); the URL of a server that uses it."""
        from sqlalchemy import make_url, text
        from sqlalchemy.exc import ProgrammingError

        name = f"{self.prefix}_{label}"
        with self.admin.connect() as conn:
            if self.kind == "database":
                try:
                    conn.execute(text(f"CREATE DATABASE {name}"))
                except ProgrammingError:  # no CREATEDB: a schema of the URL's database
                    self.kind = "schema"
            if self.kind == "schema":
                conn.execute(text(f"CREATE SCHEMA {name}"))
        self.created.append((self.kind, name))
        if self.kind == "schema":
            return schema_url(self.url, name)
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def query(self, db_url: str, sql: str, **params: Any) -> list[Any]:
        """Rows of one read on a URL (a small engine per URL, kept until drop_all)."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = self.engines.get(db_url)
        if engine is None:
            engine = self.engines[db_url] = create_engine(db_url, poolclass=NullPool)
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def drop_all(self) -> None:
        """Drop everything made here (call once the servers using it have stopped)."""
        from sqlalchemy import text

        for engine in self.engines.values():
            engine.dispose()
        self.engines.clear()
        if not self.created:
            return
        with self.admin.connect() as conn:
            conn.execute(text("SET lock_timeout = '10s'"))  # a server left running: fail, not hang
            while self.created:
                kind, name = self.created[-1]
                if kind == "database":
                    # FORCE: a connection a killed server left open must not keep it (PG 13+).
                    conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                else:
                    conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
                self.created.pop()
        self.admin.dispose()


# -- Kernel Gateway -----------------------------------------------------------------------------


class KernelGateway:
    """``--gateway auto``: Kernel Gateway on a free loopback port, as ``.ci/gateways`` set it up.

    The command comes from that script's ``gateways.json``: the Python that has
    jupyter-kernel-gateway, and a kernel spec folder whose ``python3`` runs a venv holding only
    ipykernel (so a kernel on the gateway cannot import jupyter_mage, as on a remote one). The
    server lists and culls kernels through ``GET /api/kernels``, which Kernel Gateway forbids
    unless told otherwise.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "gateway.log"
        self.version = "?"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def argv(self, config: dict[str, Any]) -> list[str]:
        prefix = "--KernelGatewayApp."
        return [
            *config["kernel_gateway"]["argv"],
            f"{prefix}ip=127.0.0.1",
            f"{prefix}port={self.port}",
            f"{prefix}port_retries=0",
            "--JupyterWebsocketPersonality.list_kernels=True",
            # Only the spec of the kernel-only venv (in JUPYTER_PATH), not this Python's own.
            "--KernelSpecManager.ensure_native_kernel=False",
        ]

    async def start(self, timeout: float = 90.0) -> str:
        """Start the gateway and wait until it answers; its URL."""
        if not GATEWAYS_JSON.is_file():
            raise RuntimeError(f"--gateway auto: no {GATEWAYS_JSON}; run `bash .ci/gateways`")
        config = json.loads(GATEWAYS_JSON.read_text())
        self.version = str(config["kernel_gateway"].get("version", "?"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        root = self.workdir / "root"
        root.mkdir(exist_ok=True)
        self.port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JUPYTER_GATEWAY_", "KG_")) and k != "JUPYTER_TOKEN"
        }
        env["JUPYTER_PATH"] = config["kernel"]["jupyter_path"]
        env["JUPYTER_RUNTIME_DIR"] = str(self.workdir / "runtime")
        self.proc = spawn_logged(self.argv(config), root, env, self.log_path)
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the gateway exited at start:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{self.url}/api/kernelspecs")).status_code == 200:
                        return self.url
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not answer:\n{self.log_tail()}")
                await asyncio.sleep(0.2)

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        """SIGTERM (the gateway shuts its kernels down), SIGKILL after 15 s, then any kernel
        left below it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        below = tree_below(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid, start in below:
            kill_exact(pid, start, signal.SIGKILL)
