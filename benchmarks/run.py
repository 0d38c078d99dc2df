"""Trigger-to-completed latency, load and memory of jupyter-mage, side by side in one run.

One command, one table (``python3 benchmarks/run.py [--quick]``). On the same 3-block pipeline
(a loader building 1,000 dicts, a transformer summing a field, an exporter; ``env`` and ``schema``
passed as runtime variables) it measures:

(a) jupyter-mage: ``POST .../pipeline_runs/{token}?wait`` to the completed run, warm kernel pool;
(b) the same on a server with ``kernel_pool_size=0`` (a cold kernel per run);
(c) papermill ``execute_notebook`` in this process, on the equivalent plain notebook;
(d) the floor: kwargs injection (JSON decoded in the kernel) plus the three blocks as ONE execute
    request on an already running kernel (``jupyter_client.AsyncKernelManager``);
(e) accepted POSTs per second and POST latency with 32 concurrent clients over a fixed number of
    requests, then the time until every accepted run completed, and the runs lost;
(f) the server's RSS after 1,000 runs against before.

``--baseline REF`` also measures (a) and (e) on another version of the project, side by side in
the same run, as (a@base) and (e@base): a server importing jupyter_mage from a temporary git
worktree of REF, its samples in the same rounds and its bursts between those of (e).

``--postgres URL`` (or ``auto``: a private cluster from ``.ci/postgres``) adds (a@pg) and (e@pg),
a server whose ``MageApp.db_url`` is that PostgreSQL (an empty database made for this run), and
the ``PAIR`` row (the same bursts spread over two servers sharing another empty one); every
accepted run of those bursts is then checked in the database, exactly once. ``--gateway URL``
(or ``auto``: Kernel Gateway from what ``.ci/gateways`` installed) adds (a@gateway), a server
whose kernels run on that gateway. See ``services.py`` and the README.

Latency rows are sampled in interleaved rounds (d, a, b, c, d, a, ...), so a noisy neighbour
slows every row alike, and each sample starts from a quiet state: the servers and kernels this
script started have stopped using CPU (the pool has refilled, finished kernels are gone).
Everything runs in real processes: a ``jupyter server`` subprocess per configuration that imports
``jupyter_mage`` from this checkout, real kernels, real SQLite files in a temporary directory.
Every process started here is stopped on exit, failures included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nbformat
import scale
from processes import (
    free_port,
    kill_exact,
    log_tail,
    rss_bytes,
    spawn_logged,
    tree_below,
    tree_ticks,
)
from services import KernelGateway, PostgresCluster, PostgresSchemas, safe_url

REPO = Path(__file__).resolve().parents[1]
PIPELINE_UUID = "bench"
VARIABLES = {"env": "staging", "schema": "public"}
RUN_BODY = json.dumps({"pipeline_run": {"variables": VARIABLES}})
FINAL = ("completed", "failed", "cancelled")
WAIT_SECONDS = 120
# --baseline: (a) and (e) are "not worse" than the baseline within this factor (README).
TOLERANCE = 1.10
#: The row of (e) over two servers sharing one PostgreSQL database (--postgres).
PAIR = "e@pg\N{MULTIPLICATION SIGN}2"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Seconds the floor's and papermill's kernels may take to start: papermill's default of 60 s
# was exceeded on the shared 2-core machine at a load average of 12 (other test suites running).
KERNEL_START_TIMEOUT = 300

# -- the pipeline -----------------------------------------------------------------------------
# Block cells exactly as a Mage user writes them (the guarded import line included); the floor
# and papermill run the same function bodies.

LOADER = '''\
if 'data_loader' not in globals():
    from mage_ai.data_preparation.decorators import data_loader


@data_loader
def load_rows(*args, **kwargs):
    """1,000 rows for this environment and schema."""
    return [
        {"id": i, "amount": i % 97, "env": kwargs["env"], "schema": kwargs["schema"]}
        for i in range(1000)
    ]
'''

TRANSFORMER = '''\
if 'transformer' not in globals():
    from mage_ai.data_preparation.decorators import transformer


@transformer
def total_amount(rows, *args, **kwargs):
    """Sum one field."""
    return {"rows": len(rows), "total": sum(row["amount"] for row in rows)}
'''

EXPORTER = '''\
if 'data_exporter' not in globals():
    from mage_ai.data_preparation.decorators import data_exporter


@data_exporter
def export_total(summary, *args, **kwargs):
    """Report where the total would go."""
    target = f"{kwargs['env']}.{kwargs['schema']}.totals"
    print(f"exported {summary['rows']} rows, total {summary['total']}, to {target}")
    return {"target": target, **summary}
'''

EXPECTED_LINE = "exported 1000 rows, total 46995, to staging.public.totals"


def _strip_decorators(source: str) -> str:
    """A block's source as plain Python: no guarded import, no decorator lines."""
    lines = source.splitlines()
    keep = [ln for ln in lines[2:] if not ln.startswith("@")]
    return "\n".join(keep).strip() + "\n"


def _python_notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb: nbformat.NotebookNode = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def block_notebook() -> nbformat.NotebookNode:
    """The pipeline as jupyter-mage reads it: three tagged code cells."""
    blocks = (("data_loader", LOADER), ("transformer", TRANSFORMER), ("data_exporter", EXPORTER))
    return _python_notebook(
        [nbformat.v4.new_code_cell(source, metadata={"tags": [tag]}) for tag, source in blocks]
    )


def papermill_notebook() -> nbformat.NotebookNode:
    """The same work as a plain notebook with a papermill ``parameters`` cell."""
    return _python_notebook([
        nbformat.v4.new_code_cell(
            'env = "prod"\nschema = "public"', metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell('kwargs = {"env": env, "schema": schema}'),
        nbformat.v4.new_code_cell(_strip_decorators(LOADER) + "\nrows = load_rows(**kwargs)"),
        nbformat.v4.new_code_cell(
            _strip_decorators(TRANSFORMER) + "\nsummary = total_amount(rows, **kwargs)"
        ),
        nbformat.v4.new_code_cell(
            _strip_decorators(EXPORTER) + "\nexport_total(summary, **kwargs)"
        ),
    ])  # fmt: skip


def floor_code(variables: dict[str, Any]) -> str:
    """The floor's single execute request: kwargs as JSON decoded in the kernel, three blocks."""
    payload = json.dumps(variables)
    return "\n".join(
        [
            f"import json as _j\nkwargs = _j.loads({payload!r})\ndel _j",
            "def data_loader(f): return f",
            "def transformer(f): return f",
            "def data_exporter(f): return f",
            LOADER,
            TRANSFORMER,
            EXPORTER,
            "_out = export_total(total_amount(load_rows(**kwargs), **kwargs), **kwargs)",
        ]
    )


# -- processes: CPU quiet detection, RSS, cleanup ----------------------------------------------


async def settle(roots: Sequence[int], timeout: float = 8.0, window: float = 0.1) -> bool:
    """Wait until the processes under ``roots`` are idle (at most one tick used in a window).

    After a run a server refills its pool or shuts a kernel down in the background; measuring
    the next sample while that burns a core would measure the neighbour, not the run.
    """
    deadline = time.monotonic() + timeout
    previous = tree_ticks(roots)
    while time.monotonic() < deadline:
        await asyncio.sleep(window)
        current = tree_ticks(roots)
        if current - previous <= 1:
            return True
        previous = current
    return False


def server_env(source: Path = REPO) -> dict[str, str]:
    """Environment of every Jupyter process we start: ``jupyter_mage`` from ``source``.

    That is this checkout, or the baseline's worktree (``--baseline``): ``PYTHONPATH`` comes
    before site-packages, so an installed copy is not what the server and its kernels import.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(source), env.get("PYTHONPATH")) if p)
    env.pop("JUPYTER_TOKEN", None)
    return env


# -- a jupyter server with jupyter_mage ----------------------------------------------------------


@dataclass
class Server:
    """A ``jupyter server`` subprocess with jupyter_mage enabled (and no other extension)."""

    label: str
    root: Path
    workdir: Path
    pool: int | None
    max_concurrent_runs: int
    extra_args: list[str] = field(default_factory=list)
    source: Path = REPO  # where jupyter_mage is imported from
    db_url: str | None = None  # None: a SQLite file in the workdir
    port: int = 0
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None
    client: httpx.AsyncClient | None = None
    log_path: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "server.log"
        sqlite = f"sqlite:///{self.workdir / 'bench.sqlite'}"
        extensions = {
            "jupyter_mage": True,
            "jupyterlab": False,
            "jupyter_lsp": False,
            "notebook_shim": False,
            "jupyter_server_terminals": False,
        }
        argv = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--allow-root",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--ServerApp.jpserver_extensions={extensions!r}",
            f"--MageApp.db_url={self.db_url or sqlite}",
            f"--MageApp.max_concurrent_runs={self.max_concurrent_runs}",
            "--ServerApp.log_level=WARN",
        ]
        if self.pool is not None:
            argv.append(f"--MageApp.kernel_pool_size={self.pool}")
        argv += self.extra_args
        # From the main thread (see processes.spawn_logged).
        env = server_env(self.source)
        env["JUPYTER_RUNTIME_DIR"] = str(self.workdir / "runtime")
        env["JUPYTER_DATA_DIR"] = str(self.workdir / "data")
        self.proc = spawn_logged(argv, self.workdir, env, self.log_path)
        self.client = httpx.AsyncClient(
            base_url=self.url,
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        # A server imports for about 5 s of CPU; with --postgres and --gateway, up to eight
        # start at once on 2 cores.
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.label} exited at start:\n{self.log_tail()}")
            try:
                r = await self.get("api/pipelines")
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {self.label} did not answer:\n{self.log_tail()}")
            await asyncio.sleep(0.1)
        uuids = [p["uuid"] for p in r.json()["pipelines"]]
        if PIPELINE_UUID not in uuids:
            raise RuntimeError(f"server {self.label} does not see the pipeline: {uuids}")

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def describe(self) -> list[str]:
        """The MageApp settings this server was started with."""
        pool = "default" if self.pool is None else str(self.pool)
        return [
            f"kernel_pool_size={pool}",
            f"max_concurrent_runs={self.max_concurrent_runs}",
            *(a.removeprefix("--MageApp.") for a in self.extra_args),
            *([f"db_url={safe_url(self.db_url)}"] if self.db_url else []),
        ]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    async def get(self, path: str, **params: Any) -> httpx.Response:
        assert self.client is not None
        return await self.client.get(path, params=params or None, headers=self.headers())

    async def json(self, path: str, **params: Any) -> Any:
        r = await self.get(path, **params)
        r.raise_for_status()
        return r.json()

    async def create_trigger(self, name: str, pipeline: str = PIPELINE_UUID) -> dict[str, Any]:
        """A new API trigger of ``pipeline`` on this server."""
        assert self.client is not None
        r = await self.client.post(
            f"api/pipelines/{pipeline}/pipeline_schedules",
            headers=self.headers(),
            content=json.dumps({"pipeline_schedule": {"name": name, "schedule_type": "api"}}),
        )
        if r.status_code != 200:
            raise RuntimeError(f"creating a trigger of {pipeline}: {r.status_code} {r.text[:500]}")
        return dict(r.json()["pipeline_schedule"])

    async def run_count(self, **filters: Any) -> int:
        body = await self.json("api/pipeline_runs", _limit=1, **filters)
        return int(body["metadata"]["count"])

    async def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
        if self.proc is None or self.proc.poll() is not None:
            return
        below = tree_below(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down
        try:
            await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        for pid, start in below:  # kernels a dying server could not stop
            kill_exact(pid, start, signal.SIGKILL)


# -- measurements -------------------------------------------------------------------------------


@dataclass
class Row:
    """One latency row of the table."""

    key: str
    what: str
    samples: list[float] = field(default_factory=list)  # seconds
    phases: list[dict[str, float]] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return percentile(self.samples, 50)


def _median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class ServerNotAnswering(RuntimeError):
    """A request got no answer in time: the server's event loop is blocked or it is gone."""


class Connection:
    """One keep-alive HTTP/1.1 connection: the leanest client asyncio allows.

    The load generator shares 2 cores with the server and its kernels: httpx spends about 25x
    more CPU per request than this (measured here: ~5 ms against ~0.2 ms per POST under load),
    which the server would lose. Only what the trigger routes answer is handled: a status line,
    headers, then a ``Content-Length`` or chunked body.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes, timeout: float = 30.0
    ) -> tuple[int, bytes]:
        """Send one request; a server that does not answer within ``timeout`` is an error."""
        try:
            return await asyncio.wait_for(self._request(method, path, body), timeout)
        except asyncio.TimeoutError:
            raise ServerNotAnswering(f"no answer to {method} within {timeout:.0f} s") from None

    async def _request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"{method} /{path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            self.writer.write(head.encode() + body)
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip().lower()
            if headers.get("transfer-encoding") == "chunked":
                data = b""
                while size := int((await self.reader.readuntil(b"\r\n"))[:-2], 16):
                    data += (await self.reader.readexactly(size + 2))[:-2]
                await self.reader.readuntil(b"\r\n")
            else:
                data = await self.reader.readexactly(int(headers.get("content-length", "0")))
            if headers.get("connection") == "close":
                self.close()
            return status, data
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Trigger:
    """POSTs to one API trigger's token route, as an outside system would (no Jupyter login)."""

    def __init__(self, server: Server, trigger: dict[str, Any]) -> None:
        self.server = server
        self.id = trigger["id"]
        self.path = f"api/pipeline_schedules/{trigger['id']}/pipeline_runs/{trigger['token']}"
        self.wait_mode: bool | None = None  # unknown until the first run
        self.connection = Connection(server.port)

    async def post(self, wait: bool, connection: Connection | None = None) -> tuple[int, bytes]:
        path = self.path + (f"?wait={WAIT_SECONDS}" if wait else "")
        timeout = WAIT_SECONDS + 30 if wait else 30
        return await (connection or self.connection).request(
            "POST", path, RUN_BODY.encode(), timeout
        )

    async def run_to_end(self) -> tuple[float, dict[str, Any], float]:
        """Trigger one run; return (seconds until its final status was seen, the run, the
        wall-clock time the POST was sent)."""
        sent = time.time()
        t0 = time.perf_counter()
        status, body = await self.post(wait=self.wait_mode is not False)
        if status != 200:
            raise RuntimeError(f"trigger answered {status}: {body[:500]!r}")
        run = json.loads(body)["pipeline_run"]
        if self.wait_mode is None:
            self.wait_mode = run["status"] in FINAL
        while run["status"] not in FINAL:  # no ?wait support: poll, 2 ms apart
            await asyncio.sleep(0.002)
            run = (await self.server.json(f"api/pipeline_runs/{run['id']}"))["pipeline_run"]
        elapsed = time.perf_counter() - t0
        check_run(run)
        return elapsed, run, sent


PHASES = (
    ("accept", "POST sent -> run row created"),
    ("queue", "created -> started (claimed)"),
    ("kernel", "started -> first block started (plan, kernel, code sent)"),
    ("blocks", "first block started -> last block completed"),
    ("finish", "last block completed -> run completed"),
    ("answer", "run completed -> answer received"),
)


def phases(run: dict[str, Any], sent: float, elapsed: float) -> dict[str, float]:
    """Where one run's time went, from its own timestamps (same host clock as ``sent``)."""

    def ts(value: str) -> float:
        return dt.datetime.fromisoformat(value).timestamp()

    blocks = run.get("block_runs") or []
    points = [
        sent,
        ts(run["created_at"]),
        ts(run["started_at"]),
        min((ts(b["started_at"]) for b in blocks), default=math.nan),
        max((ts(b["completed_at"]) for b in blocks), default=math.nan),
        ts(run["completed_at"]),
        sent + elapsed,
    ]
    return {name: points[i + 1] - points[i] for i, (name, _) in enumerate(PHASES)}


def check_run(run: dict[str, Any]) -> None:
    """A benchmark sample only counts if the pipeline really ran, all three blocks."""
    blocks = run.get("block_runs")
    statuses = [b["status"] for b in blocks] if blocks is not None else None
    if run["status"] != "completed" or (statuses is not None and statuses != ["completed"] * 3):
        raise RuntimeError(f"run {run['id']} ended {run['status']}, blocks {statuses}: {run}")


class Floor:
    """(d): one already running kernel, one execute request per sample."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.km: Any = None
        self.kc: Any = None
        self.code = floor_code(VARIABLES)

    async def start(self) -> None:
        from jupyter_client.manager import AsyncKernelManager

        self.km = AsyncKernelManager(kernel_name="python3")
        # The kernel's stderr (a TCP transport warning) would clutter the report.
        await self.km.start_kernel(
            cwd=str(self.cwd),
            env=server_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.kc = self.km.client()
        self.kc.start_channels()
        await self.kc.wait_for_ready(timeout=KERNEL_START_TIMEOUT)

    @property
    def pid(self) -> int | None:
        provisioner = getattr(self.km, "provisioner", None)
        process = getattr(provisioner, "process", None)
        return getattr(process, "pid", None)

    async def sample(self) -> float:
        outputs: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                outputs.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                outputs.append("\n".join(msg["content"]["traceback"]))

        t0 = time.perf_counter()
        reply = await self.kc.execute_interactive(
            self.code, store_history=False, allow_stdin=False, output_hook=hook, timeout=60
        )
        elapsed = time.perf_counter() - t0
        if reply["content"]["status"] != "ok" or EXPECTED_LINE not in "".join(outputs):
            raise RuntimeError(f"floor execute failed: {reply['content']} {outputs}")
        return elapsed

    async def stop(self) -> None:
        if self.kc is not None:
            with contextlib.suppress(Exception):
                self.kc.stop_channels()
        if self.km is not None:
            with contextlib.suppress(Exception):
                await self.km.shutdown_kernel(now=True)


@contextlib.contextmanager
def kernel_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null, so kernels started meanwhile inherit that.

    Papermill starts its kernel with this process's stderr; the kernel's TCP transport warning
    would otherwise be printed once per sample. Nothing else writes to stderr meanwhile.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class Papermill:
    """(c): ``papermill.execute_notebook`` in this process (in a worker thread, loop idle)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.input = workdir / "bench_papermill.ipynb"
        nbformat.write(papermill_notebook(), self.input)
        self.count = 0
        logging.getLogger("papermill").setLevel(logging.WARNING)

    def _execute(self) -> float:
        import papermill

        self.count += 1
        output = self.workdir / f"out_{self.count}.ipynb"
        t0 = time.perf_counter()
        with kernel_stderr_silenced():
            nb = papermill.execute_notebook(
                str(self.input),
                str(output),
                parameters=dict(VARIABLES),
                kernel_name="python3",
                progress_bar=False,
                log_output=False,
                cwd=str(self.workdir),
                start_timeout=KERNEL_START_TIMEOUT,
            )
        elapsed = time.perf_counter() - t0
        text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
        if EXPECTED_LINE not in text:
            raise RuntimeError(f"papermill run did not produce the expected output: {text!r}")
        return elapsed

    async def sample(self) -> float:
        return await asyncio.to_thread(self._execute)


# -- load (e) and memory (f) --------------------------------------------------------------------


@dataclass
class Load:
    """The outcome of N POSTs from C concurrent clients, and of waiting for their runs."""

    requests: int
    clients: int
    accepted: list[int] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)  # status code -> count
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    post_wall: float = math.nan
    client_cpu: float = math.nan
    completed_after: float = math.nan
    completed: int = 0
    failed: int = 0
    lost: int = 0
    accepted_by: dict[str, int] = field(default_factory=dict)  # server label -> POSTs accepted
    db: DbCheck | None = None  # --postgres rows: what the database itself holds

    @property
    def rate(self) -> float:
        return len(self.accepted) / self.post_wall if self.post_wall else math.nan


@dataclass
class DbCheck:
    """What the database holds for one burst's trigger, read with SQL once its runs are final.

    Exactly once: one run row per accepted POST and no other, each completed with its three
    block runs completed and no more, claimed by one of the servers of the row.
    """

    accepted: int
    rows: int = 0
    missing: int = 0  # accepted ids without a row
    extra: int = 0  # rows of the trigger that no accepted POST answered
    completed: int = 0
    bad_blocks: int = 0  # runs without exactly three block runs, all completed
    by_owner: dict[str, int] = field(default_factory=dict)
    strangers: int = 0  # runs claimed by a server that is not one of this row's
    why_not: dict[str, int] = field(default_factory=dict)  # run's error -> runs not completed

    @property
    def exactly_once(self) -> bool:
        return (
            self.rows == self.accepted
            and self.missing == self.extra == self.bad_blocks == self.strangers == 0
            and self.completed == self.accepted
        )

    def describe(self) -> str:
        owners = ", ".join(f"{k} {v}" for k, v in sorted(self.by_owner.items()))
        problems = [
            f"{n} {what}"
            for n, what in (
                (self.missing, "accepted but missing"),
                (self.extra, "not accepted but there"),
                (self.accepted - self.completed, f"not completed: {self.reasons()}"),
                (self.bad_blocks, "without exactly 3 completed block runs"),
                (self.strangers, "claimed by another server"),
            )
            if n
        ]
        verdict = "**exactly once**" if self.exactly_once else f"**not** ({'; '.join(problems)})"
        return f"{self.rows} run rows for {self.accepted} accepted, run by: {owners}; {verdict}"

    def reasons(self) -> str:
        """Why runs did not complete, from their own ``metrics.error``."""
        return ", ".join(f"{n}x {why!r}" for why, n in sorted(self.why_not.items())) or "?"


def server_id(label: str) -> str:
    """The ``MageApp.server_id`` of the --postgres servers: the label, prefixed."""
    return f"bench-{label}"


def check_in_database(
    schemas: PostgresSchemas,
    db_url: str,
    trigger_id: int,
    accepted: Sequence[int],
    server_ids: Sequence[str],
) -> DbCheck:
    """:class:`DbCheck` of one trigger's runs, read from the servers' shared database."""
    check = DbCheck(len(accepted))
    runs = schemas.query(
        db_url,
        "SELECT id, owner, status, metrics FROM mage_pipeline_run WHERE pipeline_schedule_id = :t",
        t=trigger_id,
    )
    blocks = {
        int(run_id): (int(total), int(done))
        for run_id, total, done in schemas.query(
            db_url,
            "SELECT b.pipeline_run_id, count(*), "
            "sum(CASE WHEN b.status = 'completed' THEN 1 ELSE 0 END) "
            "FROM mage_block_run b JOIN mage_pipeline_run r ON r.id = b.pipeline_run_id "
            "WHERE r.pipeline_schedule_id = :t GROUP BY b.pipeline_run_id",
            t=trigger_id,
        )
    }
    wanted = set(accepted)
    seen = {int(run_id) for run_id, _, _, _ in runs}
    check.rows = len(runs)
    check.missing = len(wanted - seen)
    check.extra = len(seen - wanted)
    for run_id, owner, status, metrics in runs:
        check.completed += status == "completed" and int(run_id) in wanted
        if status != "completed":
            why = f"{status}: {(metrics or {}).get('error') or 'no error recorded'}"[:200]
            check.why_not[why] = check.why_not.get(why, 0) + 1
        if blocks.get(int(run_id)) != (3, 3):
            check.bad_blocks += 1
        name = owner or "(none)"
        check.by_owner[name] = check.by_owner.get(name, 0) + 1
        check.strangers += owner not in server_ids
    return check


async def post_load(triggers: Sequence[Trigger], requests: int, clients: int) -> Load:
    """``requests`` POSTs (no wait) from ``clients`` concurrent clients; latency per POST.

    With several triggers (the same trigger, through several servers), client ``i`` posts to
    ``triggers[i % len(triggers)]``: the clients, and so the load, are spread evenly.
    """
    load = Load(requests, clients)
    remaining = iter(range(requests))

    async def client(trigger: Trigger) -> None:
        label = trigger.server.label
        connection = Connection(trigger.server.port)
        for _ in remaining:
            t0 = time.perf_counter()
            try:
                status, body = await trigger.post(wait=False, connection=connection)
            except ServerNotAnswering:
                load.errors += 1
                break  # a hung server would only repeat this for every remaining request
            except (OSError, asyncio.IncompleteReadError, ValueError):
                load.errors += 1
                continue
            load.latencies.append(time.perf_counter() - t0)
            if status == 200:
                load.accepted.append(int(json.loads(body)["pipeline_run"]["id"]))
                load.accepted_by[label] = load.accepted_by.get(label, 0) + 1
            else:
                load.refused[status] = load.refused.get(status, 0) + 1
        connection.close()

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(triggers[i % len(triggers)]) for i in range(clients)))
    load.post_wall = time.perf_counter() - t0
    load.client_cpu = time.process_time() - cpu0
    return load


async def wait_for_runs(
    server: Server, trigger_id: int, ids: Sequence[int], t0: float, stall: float
) -> tuple[float, int, int, int]:
    """Wait until every run of ``ids`` is final, or no run finished for ``stall`` seconds.

    Returns (seconds from ``t0`` until the last one was final, completed, failed, lost), where
    lost counts accepted runs that are missing from the runs list or never reached a final status.
    """
    wanted = set(ids)
    last_progress, done = time.perf_counter(), -1
    while True:
        finished = 0
        try:
            for status in FINAL:
                finished += await server.run_count(pipeline_schedule_id=trigger_id, status=status)
        except httpx.TimeoutException:
            say("a runs list took over 30 s to answer")  # counts as no progress
            finished = done
        now = time.perf_counter()
        if finished >= len(wanted):
            break
        if finished != done:
            done, last_progress = finished, now
        elif now - last_progress > stall:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - t0
    status_of: dict[int, str] = {}
    offset = 0
    while True:
        body = await server.json(
            "api/pipeline_runs", pipeline_schedule_id=trigger_id, _limit=1000, _offset=offset
        )
        for run in body["pipeline_runs"]:
            status_of[int(run["id"])] = run["status"]
        offset += len(body["pipeline_runs"])
        if not body["metadata"]["next"] or not body["pipeline_runs"]:
            break
    completed = sum(1 for i in wanted if status_of.get(i) == "completed")
    failed = sum(1 for i in wanted if status_of.get(i) in ("failed", "cancelled"))
    lost = len(wanted) - completed - failed
    return elapsed, completed, failed, lost


async def load_and_wait(
    triggers: Sequence[Trigger], requests: int, clients: int, stall: float
) -> Load:
    """A burst through ``triggers`` (one per server), then its runs waited out (via the first
    server's API: servers sharing a database see the same runs)."""
    t0 = time.perf_counter()
    load = await post_load(triggers, requests, clients)
    load.completed_after, load.completed, load.failed, load.lost = await wait_for_runs(
        triggers[0].server, triggers[0].id, load.accepted, t0, stall
    )
    return load


# -- the whole benchmark ------------------------------------------------------------------------


@dataclass
class Options:
    quick: bool
    samples: int
    warmup: int
    pool: int
    max_concurrent_runs: int
    clients: int
    requests: int
    bursts: int
    mem_runs: int
    mem_minutes: float
    reuse_load: bool
    out: Path | None
    keep: bool
    baseline: str | None = None
    postgres: str | None = None  # a SQLAlchemy URL, or "auto"
    gateway: str | None = None  # a Kernel Gateway URL, or "auto"
    only: str | None = None  # "scale": the floor (d) and the "Speed at scale" rows only


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="jupyter-mage trigger latency, load and memory against papermill and the "
        "warm-kernel floor, side by side in one run."
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    parser.add_argument("--samples", type=int, help="samples per latency row (default 20; 5 quick)")
    parser.add_argument("--warmup", type=int, help="warmup samples per row, not counted (3; 1)")
    parser.add_argument("--pool", type=int, default=4, help="kernel_pool_size of (a), (e), (f)")
    parser.add_argument("--max-concurrent-runs", type=int, default=4, help="MageApp setting")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients of (e)")
    parser.add_argument("--requests", type=int, help="POSTs of (e) (default 300; 100 quick)")
    parser.add_argument(
        "--bursts",
        type=int,
        help="(e) bursts, each waited out before the next; medians reported (3; 1 quick)",
    )
    parser.add_argument(
        "--mem-runs", type=int, help="runs between the two RSS readings of (f) (1000; 200 quick)"
    )
    parser.add_argument(
        "--mem-minutes",
        type=float,
        help="stop adding (f) runs after this many minutes, reporting the count (4; 1 quick)",
    )
    parser.add_argument(
        "--reuse-load",
        action="store_true",
        help="also run (e) and (f) on the kernel_reuse server, as (e') and (f')",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure (a) and (e) on this git ref of the project (a temporary worktree), "
        "side by side, as (a@base) and (e@base)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also measure (a) and (e) with MageApp.db_url on this PostgreSQL (a SQLAlchemy "
        "URL; empty databases made per run), and (e) over two servers sharing it: (a@pg), (e@pg), "
        f"({PAIR}); 'auto' starts a private throwaway cluster with .ci/postgres",
    )
    parser.add_argument(
        "--gateway",
        metavar="URL",
        help="also measure (a) on a server whose kernels run on this Jupyter Kernel Gateway, "
        "as (a@gateway); 'auto' starts one from what .ci/gateways installed",
    )
    parser.add_argument(
        "--only",
        choices=["scale"],
        help="scale: only the floor (d) and the 'Speed at scale' rows (scale.py), a few minutes",
    )
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ns = parser.parse_args(argv)
    quick = bool(ns.quick)
    return Options(
        quick=quick,
        samples=ns.samples or (5 if quick else 20),
        warmup=ns.warmup if ns.warmup is not None else (1 if quick else 3),
        pool=ns.pool,
        max_concurrent_runs=ns.max_concurrent_runs,
        clients=ns.clients,
        requests=ns.requests or (100 if quick else 300),
        bursts=ns.bursts or (1 if quick else 3),
        mem_runs=ns.mem_runs or (200 if quick else 1000),
        mem_minutes=ns.mem_minutes or (1.0 if quick else 4.0),
        reuse_load=bool(ns.reuse_load),
        out=ns.out,
        keep=ns.keep,
        baseline=ns.baseline,
        postgres=ns.postgres,
        gateway=ns.gateway,
        only=ns.only,
    )


def probe_checkout(source: Path = REPO) -> tuple[str, set[str]]:
    """(where a server on ``source`` imports jupyter_mage from, the MageApp settings it has)."""
    code = (
        "import jupyter_mage, jupyter_mage.app as a\n"
        "print(jupyter_mage.__file__)\n"
        "print(*a.MageApp.class_trait_names(config=True))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=server_env(source),
        capture_output=True,
        text=True,
        check=True,
        cwd=source,
    ).stdout.split()
    if not out[0].startswith(str(source) + os.sep):
        raise RuntimeError(f"a server would import jupyter_mage from {out[0]}, not {source}")
    return out[0], set(out[1:])


def git(*args: str) -> str:
    """``git -C <this checkout> args``; its stdout, stripped. Raises with git's message."""
    result = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


@dataclass
class Baseline:
    """``--baseline REF``: the project at REF, in a temporary detached worktree of this checkout.

    The worktree holds the sources only (no built labextension): the server extension is what
    (a@base) and (e@base) measure, imported from the worktree through ``PYTHONPATH``.
    """

    ref: str
    path: Path
    commit: str = ""
    subject: str = ""
    registered: bool = False

    def add(self) -> None:
        try:
            self.commit = git("rev-parse", "--verify", "--quiet", f"{self.ref}^{{commit}}")
        except RuntimeError:
            raise RuntimeError(f"--baseline {self.ref}: not a commit in {REPO}") from None
        self.subject = git("log", "-1", "--format=%s", self.commit)
        # Set first: an interrupt during ``worktree add`` must still lead to remove().
        self.registered = True
        git("worktree", "add", "--detach", str(self.path), self.commit)

    def remove(self) -> None:
        """Unregister and delete the worktree; safe to call twice, and after a failed add()."""
        if not self.registered:
            return
        self.registered = False
        try:
            git("worktree", "remove", "--force", str(self.path))
        except RuntimeError as exc:  # never registered (add failed early): just the files
            say(f"baseline worktree: {exc}")
        shutil.rmtree(self.path, ignore_errors=True)

    @property
    def short(self) -> str:
        return self.commit[:7]

    def describe(self) -> str:
        named = "" if self.ref in (self.short, self.commit) else f" (`{self.ref}`)"
        return f"git {self.short}{named}, {self.subject!r}"


def git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "jupyter_mage"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in jupyter_mage/" if dirty else "")


def versions() -> str:
    from importlib.metadata import version

    names = ["jupyter_server", "jupyter_client", "ipykernel", "papermill", "nbclient", "httpx"]
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {version(name)}")
        except Exception:
            parts.append(f"{name} ?")
    return ", ".join(parts)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.tmp = Path(tempfile.mkdtemp(prefix="jupyter-mage-bench-"))
        self.root = self.tmp / "root"
        self.root.mkdir()
        nbformat.write(block_notebook(), self.root / f"{PIPELINE_UUID}.ipynb")
        self.servers: list[Server] = []
        self.floor: Floor | None = None
        self.rows = {
            "a": Row("a", "jupyter-mage, POST ?wait → completed, warm pool"),
            "a@base": Row("a@base", "same as (a), on the baseline (--baseline)"),
            "a@pg": Row("a@pg", "same as (a), MageApp.db_url on PostgreSQL (--postgres)"),
            "a@gateway": Row("a@gateway", "same as (a), kernels on a Kernel Gateway (--gateway)"),
            "a'": Row("a'", "same, with opt-in MageApp.kernel_reuse=True (not isolated)"),
            "b": Row("b", "jupyter-mage, same, kernel_pool_size=0 (cold kernel)"),
            "c": Row("c", "papermill execute_notebook, in process"),
            "d": Row("d", "floor: kwargs + 3 blocks, ONE execute, running kernel"),
        }
        if opts.baseline is None:
            del self.rows["a@base"]
        if opts.postgres is None:
            del self.rows["a@pg"]
        if opts.gateway is None:
            del self.rows["a@gateway"]
        self.loads: dict[str, tuple[list[Load], Server]] = {}
        self.memory: dict[str, dict[str, Any]] = {}
        self.header: list[str] = []
        self.pool_supported = False
        self.reuse_supported = False
        self.wait_mode: bool | None = None
        self.baseline: Baseline | None = None
        if opts.baseline is not None:
            self.baseline = Baseline(opts.baseline, self.tmp / "baseline")
        self.base_pool_supported = False
        self.base_wait_mode: bool | None = None
        # --postgres: a cluster of our own ("auto"), and the databases made on it for this run.
        self.pg_cluster: PostgresCluster | None = None
        self.schemas: PostgresSchemas | None = None
        # --gateway auto: the Kernel Gateway started here.
        self.gateway: KernelGateway | None = None
        # The servers of each load row (the two-server PostgreSQL row has two), and the URL
        # of the database they share (the --postgres rows).
        self.load_servers: dict[str, list[Server]] = {}
        self.load_db: dict[str, str] = {}
        self.scale: scale.Scale | None = None  # the "Speed at scale" rows, measured last

    def server(
        self,
        label: str,
        pool: int | None,
        *extra_args: str,
        source: Path = REPO,
        db_url: str | None = None,
    ) -> Server:
        server = Server(
            label=label,
            root=self.root,
            workdir=self.tmp / f"server_{label}",
            pool=pool,
            max_concurrent_runs=self.opts.max_concurrent_runs,
            extra_args=list(extra_args),
            source=source,
            db_url=db_url,
        )
        self.servers.append(server)
        return server

    def roots(self) -> list[int]:
        """Processes whose CPU use must have calmed down before a sample."""
        pids = [s.pid for s in self.servers if s.proc is not None and s.proc.poll() is None]
        # The services started here: the gateway's kernels, our own PostgreSQL's backends.
        if self.gateway is not None and self.gateway.pid is not None:
            pids.append(self.gateway.pid)
        if self.pg_cluster is not None and (postmaster := self.pg_cluster.postmaster_pid()):
            pids.append(postmaster)
        return [*pids, os.getpid()]

    async def sample(self, row: Row, measure: Measure, keep: bool) -> None:
        await settle(self.roots())
        elapsed, where = await measure()
        if keep:
            row.samples.append(elapsed)
            if where is not None:
                row.phases.append(where)

    async def run(self) -> str:
        opts = self.opts
        source, settings = probe_checkout()
        self.pool_supported = "kernel_pool_size" in settings
        self.reuse_supported = self.pool_supported and "kernel_reuse" in settings
        load0 = os.getloadavg()
        self.header = [
            (
                f"- date: {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; host: "
                f"{os.cpu_count()} cores, Python {platform.python_version()}; "
                f"load average at start {load0[0]:.2f}"
            ),
            f"- jupyter_mage: {source} (git {git_describe()}); {versions()}",
            (
                f"- samples per latency row: {opts.samples} (after {opts.warmup} warmup), "
                "interleaved rounds, each sample from a quiet state; "
                f"MageApp.max_concurrent_runs={opts.max_concurrent_runs}"
            ),
        ]
        say(f"temporary dir {self.tmp}")
        if opts.only == "scale":
            return await self.run_scale_only()
        base = None
        if self.baseline is not None:
            say(f"baseline: a worktree of {self.baseline.ref} in {self.baseline.path}")
            self.baseline.add()
            base_source, base_settings = probe_checkout(self.baseline.path)
            self.base_pool_supported = "kernel_pool_size" in base_settings
            self.rows["a@base"].what = f"same as (a), on the baseline (git {self.baseline.short})"
            self.header.insert(
                2,
                f"- baseline: {self.baseline.describe()}; jupyter_mage: {base_source} "
                "(a temporary worktree, removed at the end); same settings as (a) and (e)",
            )

        warm = self.server("warm", opts.pool if self.pool_supported else None)
        if self.baseline is not None:
            base_pool = opts.pool if self.base_pool_supported else None
            base = self.server("base", base_pool, source=self.baseline.path)
        pg, pg_pair = await self.postgres_servers()
        on_gateway = await self.gateway_server()
        cold = self.server("cold", 0 if self.pool_supported else None)
        (self.tmp / "papermill").mkdir(exist_ok=True)
        papermill = Papermill(self.tmp / "papermill")
        self.floor = Floor(self.root)
        reuse = None
        if self.reuse_supported:
            reuse = self.server("reuse", opts.pool, "--MageApp.kernel_reuse=True")
        say(f"starting {len(self.servers)} servers and the floor kernel")
        await asyncio.gather(*(s.start() for s in self.servers), self.floor.start())
        warm_trigger = Trigger(warm, await warm.create_trigger("bench (a)"))
        cold_trigger = Trigger(cold, await cold.create_trigger("bench (b)"))

        measures: dict[str, Measure] = {
            "d": _no_phases(self.floor.sample),
            "a": _with_phases(warm_trigger),
        }
        base_trigger = None
        if base is not None:
            base_trigger = Trigger(base, await base.create_trigger("bench (a@base)"))
            measures["a@base"] = _with_phases(base_trigger)
        for key, server in (("a@pg", pg), ("a@gateway", on_gateway)):
            if server is not None:
                trigger = Trigger(server, await server.create_trigger(f"bench ({key})"))
                measures[key] = _with_phases(trigger)
        measures["b"] = _with_phases(cold_trigger)
        measures["c"] = _no_phases(papermill.sample)
        if reuse is not None:
            measures["a'"] = _with_phases(Trigger(reuse, await reuse.create_trigger("bench (a')")))
        else:
            self.rows["a'"].note = "n/a: no MageApp.kernel_reuse in this checkout"
        if not self.pool_supported:
            # Without a pool every run gets a cold kernel: that is (b); (a) does not exist yet.
            del measures["a"]
            self.rows["a"].note = "n/a: MageApp.kernel_pool_size not in this checkout yet"
        say(f"warmup: {opts.warmup} sample(s) per row")
        for _ in range(opts.warmup):
            for key, measure in measures.items():
                await self.sample(self.rows[key], measure, keep=False)
        self.wait_mode = cold_trigger.wait_mode
        if base_trigger is not None:
            self.base_wait_mode = base_trigger.wait_mode

        # (f) counts every run since this reading; (a) samples and (e) count towards it.
        await settle(self.roots())
        baselines = {s.label: (rss_bytes(s.pid)[0], await s.run_count()) for s in self.servers}

        for i in range(opts.samples):
            say(f"round {i + 1}/{opts.samples}")
            for key, measure in measures.items():
                await self.sample(self.rows[key], measure, keep=True)

        say("stopping the cold server and the floor kernel")
        await cold.stop()
        await self.floor.stop()
        if on_gateway is not None:  # (a@gateway) has no load row
            await on_gateway.stop()
            if self.gateway is not None:
                await asyncio.to_thread(self.gateway.stop)

        # The default configuration, its bursts interleaved with the baseline's and the
        # PostgreSQL rows' (e, e@base, e@pg, PAIR, e, ...) so that a noisy neighbour hits
        # them alike; then, on request, the opt-in reuse.
        groups: list[list[tuple[str, list[Server]]]] = [[("e", [warm])]]
        if base is not None:
            groups[0].append(("e@base", [base]))
        if pg is not None and pg_pair:
            groups[0] += [("e@pg", [pg]), (PAIR, pg_pair)]
        if reuse is not None and opts.reuse_load:
            groups.append([("e'", [reuse])])
        elif reuse is not None:
            await reuse.stop()
        for group in groups:
            bursts: dict[str, list[Load]] = {key: [] for key, _ in group}
            for n in range(1, opts.bursts + 1):
                for key, servers in group:
                    say(f"({key}) burst {n}/{opts.bursts}: {opts.requests} POSTs from "
                        f"{opts.clients} clients, then the runs")  # fmt: skip
                    await settle(self.roots())
                    bursts[key].append(await self.burst(key, n, servers))
            for key, servers in group:
                self.loads[key] = (bursts[key], servers[0])
                self.load_servers[key] = servers
        for server in (base, pg, *pg_pair):
            if server is not None:
                await server.stop()  # (f) is of the default configuration only
        for key, server in (("f", warm), ("f'", reuse)):
            if server is None or "e" + key[1:] not in self.loads:
                continue
            deadline = time.monotonic() + opts.mem_minutes * 60
            rss0, runs0 = baselines[server.label]
            self.memory[key] = await self.fill(server, rss0, runs0, deadline)
        for server in self.servers:  # the scale rows start servers of their own
            await server.stop()
        self.scale = scale.Scale(self, scale_kit(), opts.quick)
        await self.scale.run(self.rows["d"].median)
        self.header.append(f"- load average at end {os.getloadavg()[0]:.2f}")
        return self.report()

    async def run_scale_only(self) -> str:
        """``--only scale``: the floor (d), then the scale rows on the same floor kernel."""
        opts = self.opts
        floor = Floor(self.root)
        self.floor = floor
        say("--only scale: the floor kernel, then (d)")
        await floor.start()
        row = self.rows["d"]
        for i in range(opts.warmup + opts.samples):
            await settle(self.roots())
            elapsed = await floor.sample()
            if i >= opts.warmup:
                row.samples.append(elapsed)
        self.scale = scale.Scale(self, scale_kit(), opts.quick)
        await self.scale.run(row.median, floor)
        self.header.append(f"- load average at end {os.getloadavg()[0]:.2f}")
        s = row.samples
        return "\n".join([
            "## jupyter-mage benchmark (--only scale)",
            "",
            *self.header,
            "",
            (
                f"(d) {row.what}: median **{row.median * 1e3:.1f} ms**, p10-p90 "
                f"{percentile(s, 10) * 1e3:.1f}-{percentile(s, 90) * 1e3:.1f} ms (max "
                f"{max(s) * 1e3:.1f}), {len(s)} samples after {opts.warmup} warmup"
            ),
            "",
            *self.scale.report(),
        ]) + "\n"  # fmt: skip

    async def postgres_servers(self) -> tuple[Server | None, list[Server]]:
        """--postgres: the (a@pg)/(e@pg) server on a database of its own, the two servers
        of the PAIR row on another (distinct server ids, the same settings); none without it."""
        opts = self.opts
        if opts.postgres is None:
            return None, []
        url = opts.postgres
        where = "the PostgreSQL given"
        if url == "auto":
            self.pg_cluster = PostgresCluster()
            say("--postgres auto: starting a private PostgreSQL cluster (.ci/postgres)")
            url = await asyncio.to_thread(self.pg_cluster.start)
            where = f"a private cluster started for this run in {self.pg_cluster.dir}, removed"
        self.schemas = PostgresSchemas(url)
        version = self.schemas.query(url, "SHOW server_version")[0][0]
        one = await asyncio.to_thread(self.schemas.fresh, "one")
        two = await asyncio.to_thread(self.schemas.fresh, "two")
        self.header.append(
            f"- PostgreSQL {version} at {safe_url(url)} ({where}); empty {self.schemas.kind}s "
            f"{self.schemas.prefix}_one for (a@pg) and (e@pg), {self.schemas.prefix}_two for "
            f"({PAIR}), dropped at the end"
        )
        pool = opts.pool if self.pool_supported else None
        pg = self.server("pg", pool, f"--MageApp.server_id={server_id('pg')}", db_url=one)
        pair = [
            self.server(label, pool, f"--MageApp.server_id={server_id(label)}", db_url=two)
            for label in ("pg2a", "pg2b")
        ]
        self.load_db = {"e@pg": one, PAIR: two}
        return pg, pair

    async def gateway_server(self) -> Server | None:
        """--gateway: the (a@gateway) server, its kernels on the gateway (started if auto)."""
        opts = self.opts
        if opts.gateway is None:
            return None
        url = opts.gateway
        where = "given"
        if url == "auto":
            self.gateway = KernelGateway(self.tmp / "gateway")
            say("--gateway auto: starting Kernel Gateway (from .ci/gateways)")
            url = await self.gateway.start()
            where = (
                f"jupyter-kernel-gateway {self.gateway.version} started for this run on "
                "loopback, kernels from the ipykernel-only venv of .ci/gateways"
            )
        self.header.append(f"- Kernel Gateway for (a@gateway): {url} ({where})")
        pool = opts.pool if self.pool_supported else None
        return self.server("gateway", pool, f"--GatewayClient.url={url}")

    async def burst(self, key: str, n: int, servers: list[Server]) -> Load:
        """One (e)-style burst on a fresh trigger, through every server of the row; on
        PostgreSQL, then checked in the database: every accepted run, exactly once."""
        opts = self.opts
        made = await servers[0].create_trigger(f"bench ({key}) {n}")
        triggers = [Trigger(server, made) for server in servers]
        load = await load_and_wait(triggers, opts.requests, opts.clients, stall=60)
        db_url = self.load_db.get(key)
        if db_url is not None and self.schemas is not None:
            ids = [server_id(s.label) for s in servers]
            load.db = await asyncio.to_thread(
                check_in_database, self.schemas, db_url, int(made["id"]), load.accepted, ids
            )
            say(f"({key}) burst {n}: {load.db.describe()}")
        return load

    async def fill(self, server: Server, rss0: int, runs0: int, deadline: float) -> dict[str, Any]:
        """(f): more runs until ``mem_runs`` since the first reading (or the deadline), then RSS.

        Clients post with ``?wait`` (each holds one run), so the queue stays short and the
        reading is of what runs leave behind, not of a backlog.
        """
        opts = self.opts
        todo = opts.mem_runs - (await server.run_count() - runs0)
        say(f"(f) {server.label} server: {max(todo, 0)} more runs, to reach {opts.mem_runs}")
        if todo > 0:
            trigger = Trigger(server, await server.create_trigger("bench (f)"))
            started = 0

            async def client() -> None:
                nonlocal started
                connection = Connection(server.port)
                while started < todo and time.monotonic() < deadline:
                    started += 1
                    status, body = await trigger.post(wait=True, connection=connection)
                    if status != 200:
                        raise RuntimeError(f"(f) trigger answered {status}: {body[:300]!r}")
                connection.close()

            await asyncio.gather(*(client() for _ in range(2 * opts.max_concurrent_runs)))
        await settle(self.roots(), timeout=30)
        await asyncio.sleep(1.0)
        rss1, hwm = rss_bytes(server.pid)
        return {
            "server": server,
            "before": rss0,
            "after": rss1,
            "peak": hwm,
            "runs": await server.run_count() - runs0,
        }

    # -- the report ------------------------------------------------------------------------------

    def report(self) -> str:
        rows, opts = self.rows, self.opts
        floor = rows["d"].median
        a, c = rows["a"].median, rows["c"].median
        modes = {True: "`?wait` (answer held until the run ended)",
                 False: "polling `GET api/pipeline_runs/{id}` every 2 ms (no `?wait` yet)",
                 None: "n/a"}  # fmt: skip
        pool = (f"kernel_pool_size={opts.pool}" if self.pool_supported
                else "no kernel_pool_size in this checkout")  # fmt: skip
        lines = [
            "## jupyter-mage benchmark",
            "",
            *self.header,
            f"- (a)/(b) completion seen by: {modes[self.wait_mode]}; (a) server: {pool}",
        ]
        base = rows.get("a@base")
        if base is not None:
            base_pool = (f"kernel_pool_size={opts.pool}" if self.base_pool_supported
                         else "no kernel_pool_size in the baseline")  # fmt: skip
            lines.append(
                f"- (a@base) completion seen by: {modes[self.base_wait_mode]}; "
                f"(a@base) server: {base_pool}"
            )
        # Not worse than the baseline: (a)'s median at most TOLERANCE x (a@base)'s.
        not_worse = (
            a <= TOLERANCE * base.median
            if base is not None and base.samples and not math.isnan(a)
            else None
        )
        lines += [
            "",
            "| row | what | median (ms) | p10-p90 (max) ms | ratio to (d) | target | met? |",
            "|---|---|---:|---:|---:|---|---|",
        ]
        targets = {
            "a": ("≤ 3x (d); ≥ 25x faster than (c)",
                  a <= 3 * floor and c / a >= 25 if not math.isnan(a) else None),
            "a@base": (f"(a) ≤ {TOLERANCE:.2f}x this", not_worse),
            "a@pg": ("", None),
            "a@gateway": ("", None),
            "a'": ("", None),
            "b": ("", None),
            "c": ("", None),
            "d": ("the floor", None),
        }  # fmt: skip
        for key, row in rows.items():
            target, met = targets[key]
            if not row.samples:
                lines.append(f"| ({key}) | {row.what} | n/a | | | {target} | {row.note or 'n/a'} |")
                continue
            s = row.samples
            spread = (
                f"{percentile(s, 10) * 1e3:.1f}-{percentile(s, 90) * 1e3:.1f} ({max(s) * 1e3:.1f})"
            )
            verdict = "" if met is None else ("yes" if met else "**no**")
            lines.append(
                f"| ({key}) | {row.what} | {row.median * 1e3:.1f} | {spread} | "
                f"{row.median / floor:.1f}x | {target} | {verdict} |"
            )
        if not math.isnan(a):
            lines.append("")
            lines.append(
                f"(a) is {a / floor:.2f}x the floor (target ≤ 3x) and {c / a:.1f}x faster than "
                f"papermill (target ≥ 25x); a cold kernel per run (b) costs "
                f"{rows['b'].median / a:.1f}x (a)."
            )
        if base is not None and not_worse is not None:
            pairs = list(zip(rows["a"].samples, base.samples, strict=True))
            faster = sum(1 for ours, theirs in pairs if ours < theirs)
            lines.append("")
            lines.append(
                f"(a) is {a / base.median:.2f}x (a@base) (ratio of medians; median of the "
                f"{len(pairs)} per-round ratios {_median([x / y for x, y in pairs]):.2f}x, (a) "
                f"faster in {faster} of {len(pairs)} rounds): "
                f"**{'not worse' if not_worse else 'worse'}** (rule: (a) median ≤ "
                f"{TOLERANCE:.2f}x (a@base) median)."
            )
        others = [
            f"({key}) is {rows[key].median / a:.2f}x (a)"
            for key in ("a@pg", "a@gateway")
            if key in rows and rows[key].samples and not math.isnan(a)
        ]
        if others:
            lines += ["", f"{'; '.join(others)} (ratios of medians, sampled in the same rounds)."]
        lines.append("")
        extra = [rows.get("a@pg"), rows.get("a@gateway")]
        measured = [
            r
            for r in (rows["a"], base, *extra, rows["a'"], rows["b"])
            if r is not None and r.phases
        ]
        if measured:
            heads = " | ".join(f"({r.key}) ms" for r in measured)
            lines += [
                (
                    "Where the jupyter-mage rows spend their time (medians over samples, from "
                    "the runs' own timestamps; medians of phases need not add up to the total):"
                ),
                "",
                f"| phase | | {heads} |",
                "|---|---|" + "---:|" * len(measured),
            ]
            for name, what in PHASES:
                cells = " | ".join(
                    f"{percentile([p[name] for p in r.phases], 50) * 1e3:.1f}" for r in measured
                )
                lines.append(f"| {name} | {what} | {cells} |")
            lines.append("")
        if len(self.loads) > 1:
            lines += self.load_summary()
        for key, (bursts, server) in self.loads.items():
            lines += self.load_lines(key, bursts, server)
            if key == "e@base":
                lines += self.compare_loads(self.loads["e"][0], bursts)
        for key, mem in self.memory.items():
            growth = mem["after"] - mem["before"]
            config = " ".join(mem["server"].describe())
            short = "" if mem["runs"] >= 1000 else " (fewer than 1,000: --mem-runs/--mem-minutes)"
            lines += [
                (
                    f"**({key}) memory**, {config}, server process RSS: "
                    f"{mem['before'] / 1e6:.1f} MB before, {mem['after'] / 1e6:.1f} MB after "
                    f"{mem['runs']} runs{short} (**{growth / 1e6:+.1f} MB**; peak "
                    f"{mem['peak'] / 1e6:.1f} MB); target growth < 50 MB: "
                    f"**{'met' if growth < 50e6 else 'not met'}**"
                ),
                "",
            ]
        if self.scale is not None:
            lines += self.scale.report()
        return "\n".join(lines) + "\n"

    def load_lines(self, key: str, bursts: list[Load], server: Server) -> list[str]:
        """The report's lines for one load test: each burst, then the medians over bursts."""
        where = ""
        if self.baseline is not None and server.source == self.baseline.path:
            where = f" on the baseline (git {self.baseline.short}), bursts interleaved with (e)"
        servers = self.load_servers.get(key, [server])
        if key in self.load_db:
            ids = ", ".join(server_id(s.label) for s in servers)
            spread = ", the clients alternating between them" if len(servers) > 1 else ""
            where = (
                f" on PostgreSQL, {len(servers)} server(s) on one database (server_id {ids}"
                f"{spread}), bursts interleaved with (e)"
            )
        lines = [
            (
                f"**({key}) load**{where}, {len(bursts)} burst(s) of {bursts[0].requests} POSTs "
                f"(no wait) from {bursts[0].clients} concurrent clients to the token route, each "
                f"burst's runs waited out before the next; {', '.join(server.describe())}:"
            ),
            "",
            (
                "| burst | accepted | POSTs/s | p50 ms | p99 ms | max ms | all runs final after | "
                "completed | failed | lost | generator CPU |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n, load in enumerate(bursts, 1):
            lat = load.latencies
            refused = ", ".join(f"{k}x HTTP {code}" for code, k in sorted(load.refused.items()))
            errors = f"; transport errors {load.errors}" if load.errors else ""
            lines.append(
                f"| {n} | {len(load.accepted)}/{load.requests}"
                f"{'; refused ' + refused if refused else ''}{errors} | {load.rate:.0f} | "
                f"{percentile(lat, 50) * 1e3:.1f} | {percentile(lat, 99) * 1e3:.1f} | "
                f"{max(lat, default=0) * 1e3:.1f} | {load.completed_after:.1f} s "
                f"({len(load.accepted) / load.completed_after:.1f} runs/s) | {load.completed} | "
                f"{load.failed} | {load.lost} | {load.client_cpu:.2f} s |"
            )
        rate = _median([b.rate for b in bursts])
        p50 = _median([percentile(b.latencies, 50) for b in bursts])
        p99 = _median([percentile(b.latencies, 99) for b in bursts])
        pooled = percentile([x for b in bursts for x in b.latencies], 99)
        lost = sum(b.lost for b in bursts)
        ok = rate >= 300 and p99 < 0.1 and lost == 0
        if len(servers) > 1 or any(b.db is not None for b in bursts):
            lines.append("")
        for n, load in enumerate(bursts, 1):
            posts = ", ".join(f"{k} {v}" for k, v in sorted(load.accepted_by.items()))
            if len(servers) > 1:
                lines.append(f"- burst {n}: accepted by {posts}")
            if load.db is not None:
                lines.append(f"- burst {n} in the database: {load.db.describe()}")
        return [
            *lines,
            "",
            (
                f"- median over bursts: **{rate:.0f} POSTs/s**, p50 **{p50 * 1e3:.1f} ms**, "
                f"p99 **{p99 * 1e3:.1f} ms**; p99 of all {sum(len(b.latencies) for b in bursts)} "
                f"POSTs pooled: {pooled * 1e3:.1f} ms; **lost {lost}** in all"
            ),
            (
                f"- target >= 300 POSTs/s, p99 < 100 ms (medians over bursts), 0 lost: "
                f"**{'met' if ok else 'not met'}**"
            ),
            "",
        ]

    def load_summary(self) -> list[str]:
        """Every load row side by side: medians over bursts, and their ratio to (e)'s."""

        def medians(bursts: list[Load]) -> tuple[float, float, float, float]:
            return (
                _median([b.rate for b in bursts]),
                _median([percentile(b.latencies, 50) for b in bursts]) * 1e3,
                _median([percentile(b.latencies, 99) for b in bursts]) * 1e3,
                _median([len(b.accepted) / b.completed_after for b in bursts]),
            )

        ref = medians(self.loads["e"][0]) if "e" in self.loads else None
        lines = [
            (
                "**Load rows side by side** (medians over bursts, bursts interleaved; ratio to "
                "(e) in brackets; all completed, exactly once: checked in the database, "
                "--postgres rows only, see each row's table for what failed):"
            ),
            "",
            (
                "| row | servers | bursts | POSTs/s | POST p50 ms | POST p99 ms | drain runs/s | "
                "accepted | lost | all completed, exactly once |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for key, (bursts, _) in self.loads.items():
            values = medians(bursts)
            cells = []
            for i, (value, shown) in enumerate(
                zip(values, ("{:.0f}", "{:.1f}", "{:.1f}", "{:.2f}"), strict=True)
            ):
                ratio = f" ({value / ref[i]:.2f}x)" if ref is not None and key != "e" else ""
                cells.append(shown.format(value) + ratio)
            checks = [b.db for b in bursts]
            if all(c is not None for c in checks):
                once = "yes" if all(c is not None and c.exactly_once for c in checks) else "**no**"
            else:
                once = ""
            accepted = sum(len(b.accepted) for b in bursts)
            asked = sum(b.requests for b in bursts)
            lines.append(
                f"| ({key}) | {len(self.load_servers.get(key, [None]))} | {len(bursts)} | "
                f"{' | '.join(cells)} | {accepted}/{asked} | {sum(b.lost for b in bursts)} | "
                f"{once} |"
            )
        return [*lines, ""]

    def compare_loads(self, ours: list[Load], base: list[Load]) -> list[str]:
        """(e) against (e@base): medians over bursts, each judged with the same tolerance."""

        def medians(bursts: list[Load]) -> tuple[float, float, float, int]:
            return (
                _median([b.rate for b in bursts]),
                _median([percentile(b.latencies, 99) for b in bursts]),
                _median([len(b.accepted) / b.completed_after for b in bursts]),
                sum(b.lost for b in bursts),
            )

        (rate, p99, drain, lost), (rate0, p990, drain0, lost0) = medians(ours), medians(base)
        checks = [  # what, (e), (e@base), shown as, higher is better
            ("accepted POSTs/s", rate, rate0, "{:.0f}", True),
            ("POST p99 ms", p99 * 1e3, p990 * 1e3, "{:.1f}", False),
            ("drain runs/s (all runs final)", drain, drain0, "{:.2f}", True),
        ]
        lines = [
            (
                f"**(e) against (e@base)**, medians over bursts ({len(ours)} and {len(base)}); "
                f"not worse: within {TOLERANCE:.2f}x of (e@base) in the worse direction, "
                "and no more runs lost:"
            ),
            "",
            "| median over bursts | (e) | (e@base) | (e) / (e@base) | not worse if | not worse? |",
            "|---|---:|---:|---:|---|---|",
        ]
        worse = []
        for what, value, value0, shown, higher in checks:
            ratio = value / value0 if value0 else math.nan
            ok = ratio >= 1 / TOLERANCE if higher else ratio <= TOLERANCE
            rule = f"≥ 1/{TOLERANCE:.2f}x" if higher else f"≤ {TOLERANCE:.2f}x"
            if not ok:
                worse.append(what)
            lines.append(
                f"| {what} | {shown.format(value)} | {shown.format(value0)} | {ratio:.2f}x | "
                f"{rule} | {'yes' if ok else '**no**'} |"
            )
        if lost > lost0:
            worse.append("runs lost")
        lines.append(
            f"| runs lost (all bursts) | {lost} | {lost0} | | ≤ (e@base) | "
            f"{'yes' if lost <= lost0 else '**no**'} |"
        )
        verdict = "**not worse**" if not worse else f"**worse** ({', '.join(worse)})"
        return [*lines, "", f"- (e) against (e@base): {verdict}", ""]

    def stop_services(self) -> None:
        """Drop this run's databases, stop the gateway and our PostgreSQL: once the servers that
        use them are gone. Safe to call twice; each step runs even if one before it failed."""
        steps = [
            self.schemas.drop_all if self.schemas is not None else None,
            self.gateway.stop if self.gateway is not None else None,
            self.pg_cluster.stop if self.pg_cluster is not None else None,
        ]
        for step in steps:
            if step is None:
                continue
            try:
                step()
            except Exception as exc:
                say(f"cleanup: {exc}")

    async def close(self) -> None:
        if self.floor is not None:
            await self.floor.stop()
        await asyncio.gather(*(s.stop() for s in self.servers), return_exceptions=True)
        if self.baseline is not None:
            self.baseline.remove()  # after the servers: they import from it
        await asyncio.to_thread(self.stop_services)
        if self.opts.keep:
            say(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


Measure = Callable[[], Awaitable[tuple[float, "dict[str, float] | None"]]]


def scale_kit() -> scale.Kit:
    """What ``scale.py`` reuses of this script (it must not import it: see its docstring)."""
    return scale.Kit(
        connection=Connection,
        trigger=Trigger,
        floor=Floor,
        settle=settle,
        percentile=percentile,
        notebook=_python_notebook,
        say=say,
        clk_tck=CLK_TCK,
    )


def _no_phases(sample: Callable[[], Awaitable[float]]) -> Measure:
    async def measure() -> tuple[float, dict[str, float] | None]:
        return await sample(), None

    return measure


def _with_phases(trigger: Trigger) -> Measure:
    async def measure() -> tuple[float, dict[str, float] | None]:
        elapsed, run, sent = await trigger.run_to_end()
        return elapsed, phases(run, sent, elapsed)

    return measure


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so cleanup runs when the benchmark is stopped."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def main_async(bench: Bench) -> str:
    try:
        return await bench.run()
    except BaseException as exc:
        for server in bench.servers:
            if server.proc is None:
                continue
            if server.proc.poll() is not None:
                say(f"server {server.label} exited; its log:\n{server.log_tail()}")
            elif isinstance(exc, (ServerNotAnswering, httpx.TimeoutException)):
                say(f"server {server.label} is not answering; where it is stuck:")
                say(where_stuck(server.pid))
        raise
    finally:
        say("cleaning up")
        await asyncio.shield(bench.close())


def where_stuck(pid: int) -> str:
    """The threads' stacks of a live process, if py-spy is installed (``pip install py-spy``)."""
    if shutil.which("py-spy") is None:
        return "(install py-spy to see the stacks)"
    argv = ["py-spy", "dump", "--pid", str(pid)]
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    return (result.stdout or result.stderr)[:6000]


def kill_leftovers(bench: Bench) -> None:
    """Last resort, outside the event loop: kill servers (and their kernels) still running.

    ``close()`` stops them gracefully, but an interrupt can cancel it, and a server whose event
    loop is blocked never acts on SIGTERM.
    """
    for server in bench.servers:
        if server.proc is None or server.proc.poll() is not None:
            continue
        below = tree_below(server.proc.pid)
        server.proc.kill()
        server.proc.wait()
        for pid, start in below:
            kill_exact(pid, start, signal.SIGKILL)
    if bench.baseline is not None:
        bench.baseline.remove()  # a no-op if close() got to it
    bench.stop_services()  # as much a no-op
    if not bench.opts.keep:
        shutil.rmtree(bench.tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    bench = Bench(opts)
    try:
        with sigterm_as_interrupt():
            report = asyncio.run(main_async(bench))
    except KeyboardInterrupt:
        say("interrupted; the servers and kernels started here were stopped")
        return 130
    finally:
        kill_leftovers(bench)
    print(report)
    if opts.out is not None:
        opts.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
