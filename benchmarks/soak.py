"""Soak test: a real server under a steady mix of normal and faulty pipeline runs.

``python3 benchmarks/soak.py [--minutes 10] [--clients 4] [--out report.md] [--keep]``

It starts one ``jupyter server`` subprocess with jupyter_mage from this checkout (default
settings, SQLite in a temporary directory, a fresh root dir holding pipelines written by this
script) and, for ``--minutes``, triggers runs through the token route
(``POST api/pipeline_schedules/{id}/pipeline_runs/{token}``) from ``--clients`` concurrent
clients at a steady total ``--rate``. Each run belongs to one pipeline kind, picked at random
with fixed weights (mostly ``normal``; the first runs go once through every kind), with random
but valid variables. Every kind has a known expected outcome, and each finished run is checked
against it, logs included (``GET api/block_runs/{id}/logs``):

- normal: 3 chained blocks print K numbered lines each; completed, every line exactly once in
  its block's log, the variables echoed intact by the last block;
- burst: 15,000 records through a ``logging.StreamHandler(sys.stderr)`` plus 1,500 prints;
  completed with every line in the log;
- value_error / keyboard_interrupt: the middle block raises; failed, that block failed, the
  block after it not completed (``upstream_failed`` for ValueError);
- attrdict: a block returns a ``dict`` subclass whose ``__getattr__`` is ``dict.__getitem__``;
  completed, or failed with a reason, never completed with blocks cancelled;
- kill_kernel: a block calls ``os._exit(1)``; failed with a reason;
- cancel: a block sleeps and this script cancels the run (``PUT api/pipeline_runs/{id}``);
  cancelled;
- big_stdout: a block writes 20 MiB to stdout; completed, stored log bounded;
- timeout: a trigger with ``settings.timeout`` and a block sleeping past it; failed (timeout).

Meanwhile it samples the server's RSS (``/proc/<pid>/status`` VmRSS, every 5 s) and probes
``GET api/pipeline_runs?_limit=1`` every 100 ms, recording answers slower than 100 ms: latency
as a client sees it, an upper bound on the server's event-loop stalls. At the end it stops
triggering, waits (bounded) until every accepted run is final, and checks that no run is
stranded (still ``initial``/``running``) or lost (accepted but not found).

The Markdown report goes to stdout (and ``--out``), progress to stderr, every ~10 s. The last
line is ``SOAK PASS`` or ``SOAK FAIL`` (exit code 1). All traffic goes to 127.0.0.1; every
process started here (the server and its kernels) is stopped on exit, failures and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from processes import free_port, kill_exact, log_tail, rss_bytes, spawn_logged, tree_below

REPO = Path(__file__).resolve().parents[1]
FINAL = ("completed", "failed", "cancelled")
MAX_LOG_CHARS = 1_000_000  # KernelEngine.max_log_chars, default
LOG_SLACK = 10_000  # room for the truncation marker and an error appended to a bounded log
BURST_RECORDS = 15_000
BURST_PRINT_EVERY = 10
BIG_STDOUT_MIB = 20
RUN_TIMEOUT = 2  # seconds, the timeout kind's trigger setting
SLEEP = 60  # seconds the cancel and timeout kinds sleep
DRAIN_STALL = 90  # the final wait also ends once no run became final for this long (> SLEEP)
REQUEST_TIMEOUT = 30.0
PROBE_INTERVAL = 0.1
STALL = 0.1
RSS_INTERVAL = 5.0
PROGRESS_INTERVAL = 10.0

# -- the pipelines ---------------------------------------------------------------------------------
# Block cells as a user writes them. Every kind is one notebook in the root dir; its pipeline
# uuid is the kind's name.


def _guard(decorator: str) -> str:
    return f"if '{decorator}' not in globals():\n    from jupyter_mage import {decorator}\n\n\n"


def _printer(tag: str, name: str, upstream: bool, returns: str, extra: str = "") -> str:
    args = "data, *args, **kwargs" if upstream else "*args, **kwargs"
    return _guard(tag) + (
        f"@{tag}\n"
        f"def {name}({args}):\n"
        f'    """Print K numbered lines."""\n'
        f'    run = kwargs["pipeline_run_id"]\n'
        f'    for i in range(kwargs["k"]):\n'
        f'        print(f"line {{run}}:{name}:{{i}}")\n'
        f"{extra}"
        f"    return {returns}\n"
    )


NORMAL = [
    (
        "data_loader",
        _printer(
            "data_loader",
            "first",
            False,
            '{key: kwargs[key] for key in ("env", "schema", "k", "nonce", "note")}',
        ),
    ),
    ("transformer", _printer("transformer", "second", True, "data")),
    (
        "data_exporter",
        "import json\n\n"
        + _printer(
            "data_exporter",
            "third",
            True,
            "None",
            '    print("echo " + json.dumps(data, sort_keys=True))\n',
        ),
    ),
]

BURST = [
    (
        "custom",
        _guard("custom")
        + f'''\
import logging
import sys


@custom
def burst(*args, **kwargs):
    """{BURST_RECORDS:,} log records to stderr through a StreamHandler, plus prints."""
    run = kwargs["pipeline_run_id"]
    log = logging.getLogger(f"soak.burst.{{run}}")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    try:
        for i in range(kwargs["records"]):
            log.info("record %s:%s", run, i)
            if i % {BURST_PRINT_EVERY} == 0:
                print(f"print {{run}}:{{i}}\\n", end="")  # one write per line
    finally:
        log.removeHandler(handler)
''',
    )
]


def _three(middle: str) -> list[tuple[str, str]]:
    """ok -> boom -> after, where boom's body is ``middle``."""
    return [
        (
            "data_loader",
            _guard("data_loader")
            + '@data_loader\ndef ok(*args, **kwargs):\n    print("ok")\n    return 1\n',
        ),
        (
            "transformer",
            _guard("transformer") + f"@transformer\ndef boom(value, *args, **kwargs):\n{middle}",
        ),
        (
            "data_exporter",
            _guard("data_exporter")
            + '@data_exporter\ndef after(value, *args, **kwargs):\n    print("after")\n',
        ),
    ]


VALUE_ERROR = _three("    raise ValueError(f\"soak: bad value {kwargs['nonce']}\")\n")
KEYBOARD_INTERRUPT = _three(
    '    raise KeyboardInterrupt("soak: user code raised KeyboardInterrupt")\n'
)
KILL_KERNEL = _three("    import os\n    import sys\n\n    sys.stdout.flush()\n    os._exit(1)\n")

ATTRDICT = [
    (
        "data_loader",
        _guard("data_loader")
        + '''\
class AttrDict(dict):
    __getattr__ = dict.__getitem__


@data_loader
def make(*args, **kwargs):
    """A dict whose attribute lookup raises KeyError (hasattr() breaks on it)."""
    return AttrDict(rows=kwargs["k"], nonce=kwargs["nonce"])
''',
    ),
    (
        "transformer",
        _guard("transformer")
        + """\
@transformer
def use(data, *args, **kwargs):
    print(f"rows {data.rows} nonce {data.nonce}")
""",
    ),
]

SLEEPER = [
    (
        "custom",
        _guard("custom")
        + """\
import time


@custom
def sleeper(*args, **kwargs):
    print("sleeping", flush=True)
    time.sleep(kwargs["sleep"])
    print("woke up")
""",
    )
]

BIG_STDOUT = [
    (
        "custom",
        _guard("custom")
        + '''\
import sys


@custom
def chatter(*args, **kwargs):
    """kwargs["mib"] MiB of stdout, 1 KiB lines."""
    print(f"start {kwargs['nonce']}")
    line = "x" * 1023 + "\\n"
    for _ in range(kwargs["mib"] * 1024):
        sys.stdout.write(line)
''',
    )
]


def notebook(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb: nbformat.NotebookNode = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(src, metadata={"tags": [tag]}) for tag, src in cells]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


# -- checking a finished run -----------------------------------------------------------------------


@dataclass
class Outcome:
    """What a check found: ``ok`` unless ``problems``; line counts for kinds that print."""

    got: str
    problems: list[str] = field(default_factory=list)
    lines_expected: int = 0
    lines_missing: int = 0
    lines_duplicated: int = 0
    log_size: int | None = None
    notes: list[str] = field(default_factory=list)  # worth a look, not a wrong outcome

    @property
    def ok(self) -> bool:
        return not self.problems


LogFetch = Callable[[int], Awaitable[str]]


def blocks_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_uuid"]: b for b in run.get("block_runs") or []}


def describe(run: dict[str, Any]) -> str:
    blocks = ", ".join(f"{u}={b['status']}" for u, b in blocks_of(run).items())
    return f"{run['status']} ({blocks})" if blocks else str(run["status"])


def run_error(run: dict[str, Any]) -> str:
    """The run's ``metrics.error``, else the first block error, as one short line."""
    error: Any = (run.get("metrics") or {}).get("error")
    if not error:
        for block in run.get("block_runs") or []:
            block_error = (block.get("metrics") or {}).get("error")
            if block_error:
                error = f"[{block['block_uuid']}] {_error_text(block_error)}"
                break
    text = _error_text(error) if error else ""
    return " ".join(text.split())[:300]


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type', '')}: {error.get('message', '')}".strip(": ")
    return str(error)


def expect_statuses(
    run: dict[str, Any], status: str, blocks: dict[str, str | tuple[str, ...]]
) -> list[str]:
    """Problems when the run or a block is not in the expected status (a tuple: any of them)."""
    problems = []
    if run["status"] != status:
        problems.append(f"run {run['status']}, expected {status}")
    found = blocks_of(run)
    for uuid, wanted in blocks.items():
        allowed = (wanted,) if isinstance(wanted, str) else wanted
        actual = found.get(uuid, {}).get("status", "missing")
        if actual not in allowed:
            problems.append(f"block {uuid} {actual}, expected {'/'.join(allowed)}")
    return problems


def count_lines(content: str, expected: Sequence[str]) -> tuple[int, int]:
    """(missing, duplicated) of ``expected`` lines in a log."""
    seen = Counter(content.splitlines())
    missing = sum(1 for line in expected if seen[line] == 0)
    duplicated = sum(seen[line] - 1 for line in expected if seen[line] > 1)
    return missing, duplicated


async def check_normal(run: dict[str, Any], variables: dict[str, Any], log: LogFetch) -> Outcome:
    out = Outcome(describe(run))
    out.problems = expect_statuses(
        run, "completed", dict.fromkeys(("first", "second", "third"), "completed")
    )
    if out.problems:
        return out
    blocks = blocks_of(run)
    for uuid in ("first", "second", "third"):
        content = await log(blocks[uuid]["id"])
        expected = [f"line {run['id']}:{uuid}:{i}" for i in range(variables["k"])]
        missing, duplicated = count_lines(content, expected)
        out.lines_expected += len(expected)
        out.lines_missing += missing
        out.lines_duplicated += duplicated
        if missing or duplicated:
            out.problems.append(
                f"{uuid}: {missing} of {len(expected)} lines missing, {duplicated} duplicated"
            )
        if uuid == "third":
            echo = "echo " + json.dumps(
                {key: variables[key] for key in ("env", "schema", "k", "nonce", "note")},
                sort_keys=True,
            )
            if echo not in content.splitlines():
                out.problems.append("third: the variables were not echoed intact")
    return out


async def check_burst(run: dict[str, Any], variables: dict[str, Any], log: LogFetch) -> Outcome:
    out = Outcome(describe(run))
    out.problems = expect_statuses(run, "completed", {"burst": "completed"})
    if out.problems:
        return out
    content = await log(blocks_of(run)["burst"]["id"])
    out.log_size = len(content)
    n = variables["records"]
    expected = [f"record {run['id']}:{i}" for i in range(n)]
    expected += [f"print {run['id']}:{i}" for i in range(0, n, BURST_PRINT_EVERY)]
    out.lines_expected = len(expected)
    out.lines_missing, out.lines_duplicated = count_lines(content, expected)
    if out.lines_missing or out.lines_duplicated:
        out.problems.append(
            f"{out.lines_missing} of {len(expected)} lines missing, "
            f"{out.lines_duplicated} duplicated"
        )
    return out


async def check_value_error(run: dict[str, Any], _: dict[str, Any], __: LogFetch) -> Outcome:
    out = Outcome(describe(run))
    out.problems = expect_statuses(
        run, "failed", {"ok": "completed", "boom": "failed", "after": "upstream_failed"}
    )
    error = (blocks_of(run).get("boom", {}).get("metrics") or {}).get("error")
    if not out.problems and "ValueError" not in json.dumps(error):
        out.problems.append("block boom's metrics.error does not name ValueError")
    return out


async def check_keyboard_interrupt(run: dict[str, Any], _: dict[str, Any], __: LogFetch) -> Outcome:
    out = Outcome(describe(run))
    not_completed = ("upstream_failed", "cancelled", "failed")
    out.problems = expect_statuses(
        run, "failed", {"ok": "completed", "boom": "failed", "after": not_completed}
    )
    return out


async def check_attrdict(run: dict[str, Any], _: dict[str, Any], log: LogFetch) -> Outcome:
    out = Outcome(describe(run))
    if run["status"] == "failed":
        if not run_error(run):
            out.problems.append("failed without a reason (no metrics.error)")
        return out
    out.problems = expect_statuses(run, "completed", {"make": "completed", "use": "completed"})
    if not out.problems:
        content = await log(blocks_of(run)["use"]["id"])
        if not re.search(r"^rows \d+ nonce \w+$", content, re.MULTILINE):
            out.problems.append("block use did not print the attributes")
    return out


async def check_kill_kernel(run: dict[str, Any], _: dict[str, Any], __: LogFetch) -> Outcome:
    out = Outcome(describe(run))
    out.problems = expect_statuses(run, "failed", {})
    if run["status"] == "failed" and not run_error(run):
        out.problems.append("failed without a reason (no metrics.error)")
    failed = [u for u, b in blocks_of(run).items() if b["status"] == "failed"]
    if not out.problems and failed != ["boom"]:
        out.notes.append(
            f"boom killed the kernel, but failed block(s): {', '.join(failed) or 'none'}"
        )
    return out


async def check_cancel(run: dict[str, Any], _: dict[str, Any], __: LogFetch) -> Outcome:
    out = Outcome(describe(run))
    out.problems = expect_statuses(run, "cancelled", {})
    return out


async def check_big_stdout(
    run: dict[str, Any], variables: dict[str, Any], log: LogFetch
) -> Outcome:
    out = Outcome(describe(run))
    out.problems = expect_statuses(run, "completed", {"chatter": "completed"})
    if out.problems:
        return out
    content = await log(blocks_of(run)["chatter"]["id"])
    out.log_size = len(content)
    if len(content) > MAX_LOG_CHARS + LOG_SLACK:
        out.problems.append(f"stored log of {len(content):,} chars, over the bound")
    if f"start {variables['nonce']}" not in content.splitlines():
        out.problems.append("the log lost its first line")
    return out


async def check_timeout(run: dict[str, Any], _: dict[str, Any], __: LogFetch) -> Outcome:
    out = Outcome(describe(run))
    out.problems = expect_statuses(run, "failed", {"sleeper": ("failed", "cancelled")})
    if run["status"] == "failed" and not re.search(
        r"time[sd]? ?out", run_error(run), re.IGNORECASE
    ):
        out.problems.append("metrics.error does not say the run timed out")
    return out


Check = Callable[[dict[str, Any], dict[str, Any], LogFetch], Awaitable[Outcome]]


@dataclass(frozen=True)
class Kind:
    """One pipeline of the mix: its notebook, its trigger's settings, what a run must end as."""

    name: str
    weight: int
    expected: str
    cells: list[tuple[str, str]]
    check: Check
    extra_variables: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    cancel: bool = False  # this script cancels the run once its block is running


KINDS = [
    Kind("normal", 60, "completed; every line once in its block's log", NORMAL, check_normal),
    Kind(
        "burst",
        5,
        f"completed; all {BURST_RECORDS:,} records (+ prints) in the log",
        BURST,
        check_burst,
        {"records": BURST_RECORDS},
    ),
    Kind(
        "value_error",
        5,
        "failed; boom failed, after upstream_failed",
        VALUE_ERROR,
        check_value_error,
    ),
    Kind(
        "keyboard_interrupt",
        5,
        "failed; boom failed, after not completed",
        KEYBOARD_INTERRUPT,
        check_keyboard_interrupt,
    ),
    Kind(
        "attrdict",
        5,
        "completed, or failed with a reason",
        ATTRDICT,
        check_attrdict,
    ),
    Kind("kill_kernel", 5, "failed with a reason", KILL_KERNEL, check_kill_kernel),
    Kind("cancel", 5, "cancelled", SLEEPER, check_cancel, {"sleep": SLEEP}, cancel=True),
    Kind(
        "big_stdout",
        3,
        f"completed; log bounded (≤ {MAX_LOG_CHARS + LOG_SLACK:,} chars)",
        BIG_STDOUT,
        check_big_stdout,
        {"mib": BIG_STDOUT_MIB},
    ),
    Kind(
        "timeout",
        5,
        f"failed (timed out after {RUN_TIMEOUT} s)",
        SLEEPER,
        check_timeout,
        {"sleep": SLEEP},
        {"timeout": RUN_TIMEOUT},
    ),
]
KIND = {k.name: k for k in KINDS}

NOTES = ["plain", "quote \" and ' and \\", "ünïcödé ✓", "{braces} %s $HOME", "new\nline", ""]


def random_variables(rng: random.Random, kind: Kind) -> dict[str, Any]:
    """Random but valid runtime variables; kinds add what their blocks need."""
    return {
        "env": rng.choice(["dev", "staging", "prod"]),
        "schema": rng.choice(["public", "raw", "mart"]),
        "k": rng.randint(1, 60),
        "nonce": secrets.token_hex(4),
        "note": rng.choice(NOTES),
        **kind.extra_variables,
    }


# -- HTTP ------------------------------------------------------------------------------------------


class NoAnswer(RuntimeError):
    """A request got no answer in time."""


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1 (as in run.py, with headers).

    Cheaper in CPU than httpx by far, which matters on 2 cores shared with the server and its
    kernels. Handles what the server answers: ``Content-Length`` or chunked bodies.
    """

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.headers = headers or {}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", timeout: float = REQUEST_TIMEOUT
    ) -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(self._request(method, path, body), timeout)
        except asyncio.TimeoutError:
            raise NoAnswer(f"no answer to {method} /{path} within {timeout:.0f} s") from None

    async def _request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        head = (
            f"{method} /{path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{extra}"
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
                chunks = []
                while size := int((await self.reader.readuntil(b"\r\n"))[:-2], 16):
                    chunks.append((await self.reader.readexactly(size + 2))[:-2])
                await self.reader.readuntil(b"\r\n")
                data = b"".join(chunks)
            else:
                data = await self.reader.readexactly(int(headers.get("content-length", "0")))
            if headers.get("connection") == "close":
                self.close()
            return status, data
        except BaseException:
            self.close()
            raise

    async def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        raw = b"" if body is None else json.dumps(body).encode()
        status, data = await self.request(method, path, raw)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data[:300]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# -- the server ------------------------------------------------------------------------------------


def server_env(workdir: Path) -> dict[str, str]:
    """jupyter_mage from this checkout; Jupyter's config, data and runtime dirs of our own."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("JUPYTER_TOKEN", None)
    for name in ("config", "data", "runtime"):
        env[f"JUPYTER_{name.upper()}_DIR"] = str(workdir / name)
    return env


class Server:
    """A ``jupyter server`` subprocess with jupyter_mage enabled (and no other extension)."""

    def __init__(self, root: Path, workdir: Path) -> None:
        self.root = root
        self.workdir = workdir
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def connection(self, auth: bool = True) -> Connection:
        headers = {"Authorization": f"token {self.token}"} if auth else {}
        return Connection(self.port, headers)

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
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
            f"--MageApp.db_url=sqlite:///{self.workdir / 'soak.sqlite'}",
            "--ServerApp.log_level=WARN",
        ]
        self.proc = spawn_logged(argv, self.workdir, server_env(self.workdir), self.log_path)
        conn = self.connection()
        deadline = time.monotonic() + 90
        try:
            while True:
                if not self.alive():
                    raise RuntimeError(f"the server exited at start:\n{self.log_tail()}")
                with contextlib.suppress(OSError, NoAnswer, asyncio.IncompleteReadError):
                    status, _ = await conn.request("GET", "api/pipelines", timeout=5)
                    if status == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not answer:\n{self.log_tail()}")
                await asyncio.sleep(0.2)
        finally:
            conn.close()

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    async def stop(self) -> None:
        """SIGTERM (the server shuts its kernels down), then SIGKILL for whatever is left."""
        if not self.alive():
            return
        assert self.proc is not None
        below = tree_below(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)
        for pid, start in below + tree_below(self.proc.pid):
            kill_exact(pid, start)

    def kill(self) -> None:
        """Last resort, outside the event loop: SIGKILL the server and everything below it."""
        if not self.alive():
            return
        assert self.proc is not None
        below = tree_below(self.proc.pid)
        self.proc.kill()
        self.proc.wait()
        for pid, start in below:
            kill_exact(pid, start)


# -- the soak --------------------------------------------------------------------------------------


@dataclass
class Run:
    """One accepted run and what became of it."""

    id: int
    kind: str
    variables: dict[str, Any]
    accepted_at: float
    status: str = "initial"
    final: dict[str, Any] | None = None
    outcome: Outcome | None = None
    lost: bool = False
    cancel_answer: str = ""


@dataclass
class Options:
    minutes: float
    clients: int
    rate: float
    max_backlog: int
    drain_seconds: float
    seed: int
    out: Path | None
    keep: bool


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Soak:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.tmp = Path(tempfile.mkdtemp(prefix="jupyter-mage-soak-"))
        self.root = self.tmp / "root"
        self.root.mkdir()
        for kind in KINDS:
            nbformat.write(notebook(kind.cells), self.root / f"{kind.name}.ipynb")
        self.server = Server(self.root, self.tmp / "server")
        self.triggers: dict[str, str] = {}  # kind -> token route path
        self.runs: dict[int, Run] = {}
        self.pending: set[int] = set()  # accepted, not yet checked
        self.refused: Counter[str] = Counter()  # trigger calls not accepted, by reason
        self.post_latency: list[float] = []
        self.held_back = 0.0  # seconds clients waited because the backlog was full
        self.probe_latency: list[float] = []
        self.stalls: list[tuple[float, float]] = []  # (seconds into the soak, latency)
        self.probe_errors = 0
        self.rss: list[tuple[float, int]] = []
        self.hwm = 0
        self.check_errors: Counter[str] = Counter()
        self.order = [k.name for k in KINDS]
        self.rng.shuffle(self.order)  # the first runs go once through every kind
        self.t0 = 0.0
        self.trigger_seconds = 0.0
        self.drain_seconds = 0.0
        self.started = dt.datetime.now().astimezone()
        self.load_start = os.getloadavg()[0]
        self.load_end = math.nan
        self.passed = False
        self.cancellers: set[asyncio.Future[None]] = set()

    # -- set-up ------------------------------------------------------------------------------------

    async def setup(self) -> None:
        say(f"temporary dir {self.tmp}; starting the server on 127.0.0.1:{self.server.port}")
        await self.server.start()
        conn = self.server.connection()
        try:
            status, body = await conn.json("GET", "api/pipelines")
            seen = {p["uuid"]: p for p in body["pipelines"]}
            for kind in KINDS:
                pipeline = seen.get(kind.name)
                if pipeline is None or pipeline.get("errors"):
                    raise RuntimeError(f"pipeline {kind.name}: {pipeline}")
                schedule: dict[str, Any] = {"name": f"soak {kind.name}", "schedule_type": "api"}
                if kind.settings:
                    schedule["settings"] = kind.settings
                status, body = await conn.json(
                    "POST",
                    f"api/pipelines/{kind.name}/pipeline_schedules",
                    {"pipeline_schedule": schedule},
                )
                if status != 200:
                    raise RuntimeError(f"creating the {kind.name} trigger: {status} {body}")
                trigger = body["pipeline_schedule"]
                self.triggers[kind.name] = (
                    f"api/pipeline_schedules/{trigger['id']}/pipeline_runs/{trigger['token']}"
                )
        finally:
            conn.close()

    # -- load --------------------------------------------------------------------------------------

    def next_kind(self) -> Kind:
        if self.order:
            return KIND[self.order.pop()]
        return self.rng.choices(KINDS, weights=[k.weight for k in KINDS])[0]

    async def client(self, n: int, until: float) -> None:
        """Trigger runs every ``clients / rate`` seconds (jittered start), never catching up."""
        interval = self.opts.clients / self.opts.rate
        conn = self.server.connection(auth=False)  # the token route needs no Jupyter login
        next_at = time.monotonic() + interval * n / self.opts.clients
        try:
            while True:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                held = time.monotonic()
                while len(self.pending) >= self.opts.max_backlog and held < until:
                    await asyncio.sleep(0.1)
                    held_now = time.monotonic()
                    self.held_back += held_now - held
                    held = held_now
                if time.monotonic() >= until:
                    return
                await self.trigger(conn, self.next_kind())
                next_at = max(next_at + interval, time.monotonic())
        finally:
            conn.close()

    async def trigger(self, conn: Connection, kind: Kind) -> None:
        variables = random_variables(self.rng, kind)
        body = {"pipeline_run": {"variables": variables}}
        t = time.monotonic()
        try:
            status, answer = await conn.json("POST", self.triggers[kind.name], body)
        except Exception as exc:  # no answer, a broken connection, a garbled answer
            self.refused[f"{kind.name}: {type(exc).__name__}"] += 1
            return
        self.post_latency.append(time.monotonic() - t)
        if status != 200:
            self.refused[f"{kind.name}: HTTP {status}"] += 1
            return
        try:
            run_id = int(answer["pipeline_run"]["id"])
        except (TypeError, KeyError, ValueError):
            self.refused[f"{kind.name}: HTTP 200 without a run id"] += 1
            return
        run = Run(run_id, kind.name, variables, time.monotonic())
        self.runs[run.id] = run
        self.pending.add(run.id)
        if kind.cancel:
            task = asyncio.ensure_future(self.cancel(run))
            self.cancellers.add(task)
            task.add_done_callback(self.cancellers.discard)

    async def cancel(self, run: Run) -> None:
        """Once the sleeping block runs (bounded wait), wait a moment, then cancel the run."""
        conn = self.server.connection()
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                status, body = await conn.json("GET", f"api/pipeline_runs/{run.id}")
                if status != 200:
                    run.cancel_answer = f"GET {status}"
                    return
                current = body["pipeline_run"]
                if current["status"] in FINAL:
                    run.cancel_answer = f"not sent: the run was already {current['status']}"
                    return
                if any(b["status"] == "running" for b in current.get("block_runs") or []):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(self.rng.uniform(0.2, 1.0))
            status, body = await conn.json(
                "PUT", f"api/pipeline_runs/{run.id}", {"pipeline_run": {"status": "cancelled"}}
            )
            run.cancel_answer = f"PUT {status}"
        except Exception as exc:
            run.cancel_answer = type(exc).__name__
        finally:
            conn.close()

    # -- checking ----------------------------------------------------------------------------------

    async def checker(self, stop: asyncio.Event) -> None:
        """Once a second: the newest runs' statuses in one list; each finished one checked."""
        conn = self.server.connection()
        try:
            while not stop.is_set():
                if self.pending:
                    try:
                        await self.check_pending(conn)
                    except Exception as exc:  # retried on the next round
                        self.check_errors[type(exc).__name__] += 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            conn.close()

    async def check_pending(self, conn: Connection) -> None:
        limit = min(max(self.runs) - min(self.pending) + 1 + self.opts.clients, 200)
        _, body = await conn.json("GET", f"api/pipeline_runs?_limit={limit}")
        statuses = {int(r["id"]): r["status"] for r in body["pipeline_runs"]}
        for run_id in sorted(self.pending):
            run = self.runs[run_id]
            current = statuses.get(run_id)
            if current is None:  # outside the list's window, or lost
                current = await self.fetch_status(conn, run)
            if current is None:
                continue
            run.status = current
            if current in FINAL:
                await self.check_run(conn, run)

    async def fetch_status(self, conn: Connection, run: Run) -> str | None:
        status, body = await conn.json("GET", f"api/pipeline_runs/{run.id}")
        if status == 404:
            run.lost = True
            self.pending.discard(run.id)
            return None
        return str(body["pipeline_run"]["status"]) if status == 200 else None

    async def check_run(self, conn: Connection, run: Run) -> None:
        status, body = await conn.json("GET", f"api/pipeline_runs/{run.id}")
        if status == 404:
            run.lost = True
            self.pending.discard(run.id)
            return
        if status != 200:
            self.check_errors[f"GET run: HTTP {status}"] += 1
            return
        final = body["pipeline_run"]

        async def log(block_run_id: int) -> str:
            code, answer = await conn.json("GET", f"api/block_runs/{block_run_id}/logs")
            if code != 200:
                raise KeyError(f"logs of block run {block_run_id}: HTTP {code}")
            return str(answer["log"].get("content") or "")

        run.outcome = await KIND[run.kind].check(final, run.variables, log)
        run.final, run.status = final, final["status"]
        self.pending.discard(run.id)

    # -- observers ---------------------------------------------------------------------------------

    async def probe(self, stop: asyncio.Event) -> None:
        """``GET api/pipeline_runs?_limit=1`` every 100 ms; answers over 100 ms are stalls."""
        conn = self.server.connection()
        try:
            while not stop.is_set():
                t = time.monotonic()
                try:
                    status, _ = await conn.request("GET", "api/pipeline_runs?_limit=1")
                    if status != 200:
                        self.probe_errors += 1
                except Exception:
                    self.probe_errors += 1
                took = time.monotonic() - t
                self.probe_latency.append(took)
                if took > STALL:
                    self.stalls.append((t - self.t0, took))
                await asyncio.sleep(max(0.0, t + PROBE_INTERVAL - time.monotonic()))
        finally:
            conn.close()

    def sample_rss(self) -> None:
        if self.server.alive():
            with contextlib.suppress(OSError, KeyError):
                rss, self.hwm = rss_bytes(self.server.pid)
                self.rss.append((time.monotonic() - self.t0, rss))

    async def rss_sampler(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample_rss()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), RSS_INTERVAL)

    def wrong(self) -> list[Run]:
        return [r for r in self.runs.values() if r.outcome is not None and not r.outcome.ok]

    async def progress(self, stop: asyncio.Event, phase: list[str]) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), PROGRESS_INTERVAL)
            checked = sum(1 for r in self.runs.values() if r.outcome is not None)
            rss = f"{self.rss[-1][1] / 1e6:.0f} MB" if self.rss else "?"
            worst = max((s for _, s in self.stalls), default=0.0)
            say(
                f"{phase[0]} {time.monotonic() - self.t0:5.0f} s: accepted {len(self.runs)}, "
                f"checked {checked}, pending {len(self.pending)}, wrong {len(self.wrong())}, "
                f"refused {sum(self.refused.values())}; RSS {rss}; stalls >100 ms "
                f"{len(self.stalls)} (worst {worst * 1e3:.0f} ms)"
            )

    # -- the whole soak ----------------------------------------------------------------------------

    async def run(self) -> str:
        opts = self.opts
        await self.setup()
        self.t0 = time.monotonic()
        until = self.t0 + opts.minutes * 60
        stop_observing, stop_checking = asyncio.Event(), asyncio.Event()
        phase = ["triggering"]
        background = [
            asyncio.ensure_future(self.probe(stop_observing)),
            asyncio.ensure_future(self.rss_sampler(stop_observing)),
            asyncio.ensure_future(self.progress(stop_observing, phase)),
            asyncio.ensure_future(self.checker(stop_checking)),
        ]
        say(
            f"triggering for {opts.minutes:g} min: {opts.rate:g} runs/s from {opts.clients} "
            f"clients (seed {opts.seed})"
        )
        try:
            await asyncio.gather(*(self.client(n, until) for n in range(opts.clients)))
            self.trigger_seconds = time.monotonic() - self.t0
            phase[0] = "draining"
            say(f"stopped triggering; waiting up to {opts.drain_seconds:g} s for the runs")
            drain_until = time.monotonic() + opts.drain_seconds
            left, last_change = len(self.pending), time.monotonic()
            while self.pending and time.monotonic() < drain_until:
                await asyncio.sleep(0.5)
                if len(self.pending) != left:
                    left, last_change = len(self.pending), time.monotonic()
                elif time.monotonic() - last_change > DRAIN_STALL:
                    say(f"no run became final for {DRAIN_STALL} s; {left} still open")
                    break
            self.drain_seconds = time.monotonic() - self.t0 - self.trigger_seconds
            stop_checking.set()
            await background[3]
            if self.pending:  # one last look at every run still open
                conn = self.server.connection()
                try:
                    await self.check_pending(conn)
                except Exception as exc:
                    self.check_errors[f"final pass: {type(exc).__name__}"] += 1
                finally:
                    conn.close()
            self.sample_rss()
        finally:
            stop_observing.set()
            stop_checking.set()
            for task in [*background, *self.cancellers]:
                task.cancel()
            await asyncio.gather(*background, *self.cancellers, return_exceptions=True)
        self.load_end = os.getloadavg()[0]
        return self.report()

    # -- the report --------------------------------------------------------------------------------

    def report(self) -> str:
        opts = self.opts
        runs = list(self.runs.values())
        checked = [r for r in runs if r.outcome is not None]
        wrong = self.wrong()
        stranded = [r for r in runs if r.outcome is None and not r.lost]
        lost = [r for r in runs if r.lost]
        refused = sum(self.refused.values())
        outcomes = [r.outcome for r in checked if r.outcome is not None]
        lines_lost = sum(o.lines_missing + o.lines_duplicated for o in outcomes)
        lines = [
            "## jupyter-mage soak",
            "",
            (
                f"- date: {self.started:%Y-%m-%d %H:%M %Z}; host: {os.cpu_count()} cores, "
                f"Python {platform.python_version()}; load average {self.load_start:.2f} at "
                f"start, {self.load_end:.2f} at end; git {git_describe()}"
            ),
            (
                "- server: default MageApp settings, SQLite in a temporary dir; "
                f"{len(KINDS)} pipelines written by the script"
            ),
            (
                f"- duration: triggering {self.trigger_seconds:.0f} s "
                f"(--minutes {opts.minutes:g}), "
                f"then {self.drain_seconds:.0f} s waiting for every run to be final "
                f"(bound {opts.drain_seconds:g} s, or {DRAIN_STALL} s without progress)"
            ),
            (
                f"- load: {opts.rate:g} runs/s from {opts.clients} clients to the token route, "
                f"random kinds (seed {opts.seed}); accepted {len(runs)} "
                f"({len(runs) / max(self.trigger_seconds, 1e-9):.2f}/s); refused or unanswered "
                f"{refused}; clients paused {self.held_back:.0f} s (summed over clients) at the "
                f"backlog cap ({opts.max_backlog} accepted runs not yet final)"
            ),
            (
                f"- trigger POST latency: p50 {percentile(self.post_latency, 50) * 1e3:.1f} ms, "
                f"p99 {percentile(self.post_latency, 99) * 1e3:.1f} ms, max "
                f"{max(self.post_latency, default=math.nan) * 1e3:.1f} ms"
            ),
            "",
            "### Runs by kind and outcome",
            "",
            (
                "| kind | weight | expected | runs | completed | failed | cancelled | stranded | "
                "lost | wrong |"
            ),
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for kind in KINDS:
            mine = [r for r in runs if r.kind == kind.name]
            final = Counter(r.status for r in mine if r.outcome is not None)
            lines.append(
                f"| {kind.name} | {kind.weight} | {kind.expected} | {len(mine)} | "
                f"{final['completed']} | {final['failed']} | {final['cancelled']} | "
                f"{sum(1 for r in stranded if r.kind == kind.name)} | "
                f"{sum(1 for r in lost if r.kind == kind.name)} | "
                f"{sum(1 for r in wrong if r.kind == kind.name)} |"
            )
        total = Counter(r.status for r in checked)
        lines += [
            (
                f"| **all** | | | {len(runs)} | {total['completed']} | {total['failed']} | "
                f"{total['cancelled']} | {len(stranded)} | {len(lost)} | {len(wrong)} |"
            ),
            "",
            f"### Wrong outcomes: {len(wrong)} (must be 0)",
            "",
        ]
        if wrong:
            lines += ["| run | kind | expected | got | what is wrong | metrics.error |"]
            lines += ["|---:|---|---|---|---|---|"]
            for r in sorted(wrong, key=lambda r: r.id)[:60]:
                assert r.outcome is not None and r.final is not None
                extra = f" (cancel: {r.cancel_answer})" if r.cancel_answer else ""
                lines.append(
                    f"| {r.id} | {r.kind} | {KIND[r.kind].expected} | {r.outcome.got} | "
                    f"{'; '.join(r.outcome.problems)}{extra} | {_cell(run_error(r.final))} |"
                )
            if len(wrong) > 60:
                lines.append(f"\n… and {len(wrong) - 60} more.")
            lines.append("")
        lines += [
            f"### Lost log lines: {lines_lost} (must be 0)",
            "",
            "| kind | runs checked | lines expected | missing | duplicated |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in ("normal", "burst"):
            theirs = [r.outcome for r in checked if r.kind == name and r.outcome is not None]
            lines.append(
                f"| {name} | {sum(1 for o in theirs if o.lines_expected)} | "
                f"{sum(o.lines_expected for o in theirs):,} | "
                f"{sum(o.lines_missing for o in theirs):,} | "
                f"{sum(o.lines_duplicated for o in theirs):,} |"
            )
        lines.append("")
        lines.append("(Counted only in runs that ended as expected; the others are wrong above.)")
        sizes = [
            r.outcome.log_size
            for r in checked
            if r.kind == "big_stdout" and r.outcome is not None and r.outcome.log_size is not None
        ]
        lines.append("")
        if sizes:
            lines.append(
                f"big_stdout: {BIG_STDOUT_MIB} MiB written per run, stored log "
                f"{min(sizes):,}-{max(sizes):,} chars over {len(sizes)} run(s) "
                f"(bound {MAX_LOG_CHARS:,} + {LOG_SLACK:,})."
            )
        else:
            lines.append("big_stdout: no stored log measured (no such run completed).")
        noted = [r for r in checked if r.outcome is not None and r.outcome.notes]
        if noted:
            lines += ["", "Notes (expected outcome, but worth a look):", ""]
            for r in sorted(noted, key=lambda r: r.id)[:20]:
                assert r.outcome is not None
                lines.append(f"- run {r.id} ({r.kind}): {'; '.join(r.outcome.notes)}")
            if len(noted) > 20:
                lines.append(f"- … and {len(noted) - 20} more")
        lines += ["", f"### Stranded runs: {len(stranded)}; lost runs: {len(lost)} (must be 0)", ""]
        for r in sorted(stranded, key=lambda r: r.id)[:60]:
            lines.append(
                f"- run {r.id} ({r.kind}) still `{r.status}` "
                f"{time.monotonic() - r.accepted_at:.0f} s after it was accepted"
            )
        for r in sorted(lost, key=lambda r: r.id)[:60]:
            lines.append(f"- run {r.id} ({r.kind}) accepted, then not found (404)")
        if stranded or lost:
            lines.append("")
        if refused:
            lines += ["Trigger calls not accepted (must be 0):", ""]
            lines += [f"- {why}: {n}" for why, n in sorted(self.refused.items())]
            lines.append("")
        if self.check_errors:
            errors = ", ".join(f"{why} x{n}" for why, n in sorted(self.check_errors.items()))
            lines += [f"Checker requests that failed (retried): {errors}", ""]
        rss = [v for _, v in self.rss]
        lines += ["### Server", ""]
        if rss:
            lines.append(
                f"- RSS (VmRSS every {RSS_INTERVAL:g} s, {len(rss)} samples): start "
                f"{rss[0] / 1e6:.1f} MB, peak {max(rss) / 1e6:.1f} MB, end {rss[-1] / 1e6:.1f} MB "
                f"({(rss[-1] - rss[0]) / 1e6:+.1f} MB); VmHWM {self.hwm / 1e6:.1f} MB"
            )
        worst = max(self.stalls, key=lambda s: s[1], default=None)
        lat = self.probe_latency
        lines += [
            (
                f"- stalls > {STALL * 1e3:.0f} ms: **{len(self.stalls)}** of {len(lat)} probes, "
                + (
                    f"worst **{worst[1] * 1e3:.0f} ms** (at {worst[0]:.0f} s)"
                    if worst
                    else "worst: none"
                )
                + f"; probe p50 {percentile(lat, 50) * 1e3:.1f} ms, p99 "
                f"{percentile(lat, 99) * 1e3:.1f} ms; probe errors {self.probe_errors}"
            ),
            (
                "  (client-observed latency of `GET api/pipeline_runs?_limit=1` sent every "
                "100 ms: an upper bound on the server's event-loop stalls, which also includes "
                "the client's own scheduling on this shared machine)"
            ),
            "",
        ]
        failures = []
        if wrong:
            failures.append(f"{len(wrong)} wrong outcome(s)")
        if lines_lost:
            failures.append(f"{lines_lost} lost log line(s)")
        if stranded:
            failures.append(f"{len(stranded)} stranded run(s)")
        if lost:
            failures.append(f"{len(lost)} lost run(s)")
        if refused:
            failures.append(f"{refused} trigger call(s) not accepted")
        if not runs:
            failures.append("no run accepted")
        if failures:
            lines.append(f"Failing: {', '.join(failures)}.")
            lines.append("")
        lines.append("SOAK FAIL" if failures else "SOAK PASS")
        self.passed = not failures
        return "\n".join(lines) + "\n"

    async def close(self) -> None:
        await self.server.stop()


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


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


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="Soak a real jupyter-mage server with normal and faulty pipeline runs."
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="triggering time (10)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (4)")
    parser.add_argument("--rate", type=float, default=1.0, help="runs per second in all (1.0)")
    parser.add_argument(
        "--max-backlog",
        type=int,
        default=16,
        help="clients pause while this many accepted runs are not final (16)",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=180.0,
        help="after triggering, wait at most this long for the runs to end (180)",
    )
    parser.add_argument("--seed", type=int, help="random seed (default: random, reported)")
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ns = parser.parse_args(argv)
    if ns.minutes <= 0 or ns.clients < 1 or ns.rate <= 0 or ns.max_backlog < 1:
        parser.error("--minutes, --clients, --rate and --max-backlog must be positive")
    return Options(
        minutes=ns.minutes,
        clients=ns.clients,
        rate=ns.rate,
        max_backlog=ns.max_backlog,
        drain_seconds=ns.drain_seconds,
        seed=ns.seed if ns.seed is not None else random.randrange(1 << 31),
        out=ns.out,
        keep=ns.keep,
    )


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so cleanup runs when the soak is stopped."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def main_async(soak: Soak) -> str:
    try:
        return await soak.run()
    except BaseException:
        if soak.server.proc is not None and not soak.server.alive():
            say(f"the server exited; its log:\n{soak.server.log_tail()}")
        raise
    finally:
        say("stopping the server and its kernels")
        await asyncio.shield(soak.close())


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    soak = Soak(opts)
    try:
        with sigterm_as_interrupt():
            report = asyncio.run(main_async(soak))
    except KeyboardInterrupt:
        say("interrupted; the server and kernels started here were stopped")
        return 130
    finally:
        soak.server.kill()
        if opts.keep:
            say(f"kept {soak.tmp}")
        else:
            shutil.rmtree(soak.tmp, ignore_errors=True)
    print(report, end="")
    if opts.out is not None:
        opts.out.write_text(report, encoding="utf-8")
    return 0 if soak.passed else 1


if __name__ == "__main__":
    sys.exit(main())
