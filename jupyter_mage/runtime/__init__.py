"""The in-kernel run-time: decorators, the block caller, output summaries, event reporting.

This package is sent *as source* to the kernel on a run's single execute request, because the
kernel may live in another environment (or on a gateway) where jupyter-mage is not installed. It
must therefore depend on the standard library and IPython only, and it is also importable normally
so that ``from jupyter_mage import data_loader`` works in notebooks (and hand runs call blocks with
the same code as triggered runs).

Its pieces, in dependency order (:data:`PIECES`: each imports only earlier ones, relatively):

- :mod:`.decorators`: the decorators mark functions, :func:`marked_functions` finds them;
- :mod:`.calls`: the block caller, :func:`call_block`, shared by triggered runs and hand runs;
- :mod:`.summaries`: bounded summaries of outputs and errors;
- :mod:`.mage_layout`: Mage's layout for a Mage project, and ``mage_ai``'s stand-in;
- :mod:`.sql`: SQL blocks (``%%mage_sql`` cells) on DuckDB and PostgreSQL;
- :mod:`.run`: a triggered run, block by block;
- this module, last: what a run reports (:class:`Reporter`), and :func:`run_pipeline`, the
  kernel's entry point; it re-exports the pieces' names.

In the kernel (:mod:`jupyter_mage.bootstrap`) the package is ``_jupyter_mage_runtime``, registered in
``sys.modules`` with each piece as ``_jupyter_mage_runtime.<name>``, executed from its source in
that order, so that the relative imports resolve from ``sys.modules``; this module's code runs
last, in the package itself.

Events go back to the server as ``display_data`` with a private MIME type on iopub. ipykernel
flushes stdout/stderr before each display message, so the server can attribute every stream
message to the block that printed it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from .calls import (
    DEFAULT_SENSOR_INTERVAL,
    DEFAULT_SENSOR_TIMEOUT,
    ArityError,
    BlockFailure,
    BlockTimeout,
    SensorTimeout,
    TestFailure,
    as_input,
    as_outputs,
    call_adapted,
    call_block,
    call_with_kwargs,
    check_arity,
    poll_sensor,
    run_tests,
    time_limit,
    with_retries,
)
from .decorators import (
    CALLBACK_STATUSES,
    DECORATOR_NAMES,
    DECORATORS,
    MAIN_DECORATORS,
    MARK_HOOKS,
    RUN_NAMESPACE_KEY,
    BlockFunctions,
    callback,
    condition,
    custom,
    data_exporter,
    data_loader,
    mark,
    marked_functions,
    on_failure,
    on_success,
    sensor,
    test,
    transformer,
)
from .mage_layout import (
    ProjectLayout,
    SecretNotFound,
    enter_project,
    get_repo_path,
    get_secret_value,
    install_mage_stand_in,
    resolve_repo_path,
)
from .run import _PipelineRun, block_logger, block_module_name, load_block
from .summaries import (
    ERROR_LIMIT,
    SAMPLE_COLUMNS,
    SAMPLE_ROWS,
    TEXT_LIMIT,
    bounded_repr,
    cut_text,
    error_info,
    summarize,
)

#: The pieces of the run-time, in the order the kernel executes their sources (this module last).
PIECES = ("decorators", "calls", "summaries", "mage_layout", "sql", "run")

EVENT_MIME = "application/vnd.jupyter-mage.event+json"
#: Characters of printed output kept per block, unless the plan says (the rest is counted).
LOG_LIMIT = 1_000_000
#: Captured output is sent at least this often (seconds) while a block runs ...
OUTPUT_INTERVAL = 0.2
#: ... and as soon as this many characters wait.
OUTPUT_CHUNK = 256 * 1024


def _publish(event: dict[str, Any]) -> None:
    from IPython.display import publish_display_data

    publish_display_data({EVENT_MIME: event})


class _CapturedStream(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` during a run: text goes to the run's reporter."""

    def __init__(self, reporter: Reporter, name: str, original: Any) -> None:
        super().__init__()
        self._reporter = reporter
        self.name = name
        self._original = original

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._reporter.write(self.name, text)
        return len(text)

    def flush(self) -> None:
        # Not a send: logging.StreamHandler flushes after every record, and a message per
        # record is what floods iopub. Waiting text goes out within OUTPUT_INTERVAL anyway.
        return None

    def fileno(self) -> int:
        # Subprocesses given sys.stdout write to the real descriptor (ipykernel forwards it).
        return int(self._original.fileno())

    def isatty(self) -> bool:
        return False


class Reporter:
    """Everything a run tells the server: its events, and what its blocks print.

    The runtime owns a block's output instead of leaving it to ipykernel's streams, which send a
    message per flush: a burst of prints became thousands of iopub messages, and iopub drops
    messages at ZeroMQ's high-water mark when the reader falls behind (a log line lost, or the
    request's final ``idle``). Here ``sys.stdout``/``sys.stderr`` write into a buffer, sent as
    ``output`` events at least every :data:`OUTPUT_INTERVAL` s (a background thread), as soon as
    :data:`OUTPUT_CHUNK` characters wait, and before every other event or display message: a
    few messages a second, whatever a block prints. Each block keeps ``log_limit`` characters;
    beyond that text is only counted (``dropped_chars`` of its ``block_finished``).

    Every event carries a sequence number and ``run_finished`` the last one, so the server can
    tell whether it received all of them: a loss is detected, never silent. One lock orders
    events and output, from the block's thread and the sender thread alike.
    """

    def __init__(self, log_limit: int = LOG_LIMIT) -> None:
        self.log_limit = log_limit
        self.seq = 0
        self.block: str | None = None
        self.dropped = 0
        self._kept = 0
        self._parts: list[list[str]] = []  # [stream name, text], in the order written
        self._waiting = 0
        self._unattributed: list[list[str]] = []  # printed while no block runs
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._sender: threading.Thread | None = None
        self._forked = False
        self._saved: tuple[Any, Any, Any] | None = None

    # -- events ---------------------------------------------------------------------------

    def emit(self, kind: str, **data: Any) -> None:
        """Send one event, after whatever output is waiting."""
        with self._lock:
            self._send_output()
            self.seq += 1
            _publish({"event": kind, "seq": self.seq, **data})

    def start_block(self, uuid: str) -> None:
        """Report a block's start; what it prints from now on is its log."""
        with self._lock:
            self.emit("block_started", block=uuid)
            self.block, self.dropped, self._kept = uuid, 0, 0
            for name, text in self._unattributed:  # printed between blocks: the next one's
                self.write(name, text)
            self._unattributed = []

    def end_block(self) -> int:
        """Send the block's remaining output; the number of characters not kept."""
        with self._lock:
            self._send_output()
            self.block = None
            return self.dropped

    # -- output ---------------------------------------------------------------------------

    def write(self, name: str, text: str) -> None:
        """Text printed on stream ``name`` (``stdout``/``stderr``)."""
        if self._forked:  # a forked child (multiprocessing): ipykernel forwards its output
            saved = self._saved
            if saved is not None:
                (saved[1] if name == "stdout" else saved[2]).write(text)
            return
        with self._lock:
            if self.block is None:
                self._unattributed.append([name, text[: self.log_limit]])
                return
            room = self.log_limit - self._kept
            if len(text) > room:
                self.dropped += len(text) - max(room, 0)
                text = text[: max(room, 0)]
            if not text:
                return
            self._kept += len(text)
            if self._parts and self._parts[-1][0] == name:
                self._parts[-1][1] += text
            else:
                self._parts.append([name, text])
            self._waiting += len(text)
            if self._waiting >= OUTPUT_CHUNK:
                self._send_output()

    def flush(self) -> None:
        """Send waiting output now (before a display message, so the order is kept)."""
        if self._forked:
            return
        with self._lock:
            self._send_output()

    def trailing_output(self) -> str:
        """What was printed after the last block ended (nobody's log)."""
        with self._lock:
            text = "".join(text for _, text in self._unattributed)
            self._unattributed = []
            return text[: self.log_limit]

    def _send_output(self) -> None:
        if not self._parts:
            return
        parts, self._parts, self._waiting = self._parts, [], 0
        self.seq += 1
        _publish({"event": "output", "seq": self.seq, "block": self.block, "parts": parts})

    def _send_periodically(self) -> None:
        while not self._stop.wait(OUTPUT_INTERVAL):
            with self._lock:
                self._send_output()

    # -- installation ---------------------------------------------------------------------

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Capture ``sys.stdout``/``sys.stderr`` and flush before display messages, for a run."""
        from IPython.core.getipython import get_ipython

        display_pub: Any = getattr(get_ipython(), "display_pub", None)
        saved_flush = getattr(display_pub, "_flush_streams", None)
        self._saved = (saved_flush, sys.stdout, sys.stderr)
        original_out, original_err = sys.stdout, sys.stderr

        def flush_before_display() -> None:
            self.flush()
            for stream in (original_out, original_err):  # text ipykernel got from descriptors
                if getattr(stream, "_buffers", True):
                    stream.flush()

        if saved_flush is not None:
            display_pub._flush_streams = flush_before_display
        sys.stdout = _CapturedStream(self, "stdout", original_out)
        sys.stderr = _CapturedStream(self, "stderr", original_err)
        _ACTIVE_REPORTERS.append(self)
        self._sender = threading.Thread(
            target=self._send_periodically, name="jupyter-mage-output", daemon=True
        )
        self._sender.start()
        try:
            yield
        finally:
            self._stop.set()
            self._sender.join()
            sys.stdout, sys.stderr = original_out, original_err
            if saved_flush is not None:
                display_pub._flush_streams = saved_flush
            _ACTIVE_REPORTERS.remove(self)

    def _after_fork_in_child(self) -> None:
        # The lock may have been held by another thread at the fork; the child never reports.
        self._lock = threading.RLock()
        self._forked = True


_ACTIVE_REPORTERS: list[Reporter] = []


def _reporters_after_fork() -> None:
    for reporter in _ACTIVE_REPORTERS:
        reporter._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reporters_after_fork)


def run_pipeline(payload: str) -> None:
    """Run every block of a plan (JSON from the server) in dependency order.

    The plan carries the blocks (uuid, type, source, upstream, their conditionals and callbacks,
    sensor settings), the user variables, the system keys and the output limits. Variables
    arrive here as JSON text and are decoded as data.
    """
    _run_plan(json.loads(payload))


def run_requested() -> None:
    """Run the plan that came in the metadata of the execute request being run (a kernel with
    this run-time loaded already gets a one-line cell: IPython neither transforms nor hashes
    the plan). The metadata is ``{"jupyter_mage": {"digest", "plan", "cwd", "elsewhere"}}``;
    the plan is data, decoded by the kernel's message layer."""
    from IPython.core.getipython import get_ipython

    shell: Any = get_ipython()
    given = shell.kernel.get_parent("shell")["metadata"]["jupyter_mage"]
    if given.get("digest") != globals().get("__digest__"):
        raise RuntimeError("jupyter-mage: the warm kernel lost its run-time")
    enter_folder(given.get("cwd") or "", bool(given.get("elsewhere")))
    _run_plan(given["plan"])


def enter_folder(cwd: str, elsewhere: bool) -> None:
    """Go to the notebook's folder. ``elsewhere``: the kernel may be on another machine (a
    gateway's), where the folder may not exist; the run then stays where it is, and says so."""
    if cwd and elsewhere and not os.path.isdir(cwd):
        print(
            f"jupyter-mage: the notebook's folder {cwd} is not on the kernel's machine; "
            f"the run works in {os.getcwd()}",
            file=sys.stderr,
        )
    elif cwd:
        os.chdir(cwd)


def _run_plan(plan: dict[str, Any]) -> None:
    # The I/O thread sends every message; while a block computes it waits for the GIL up to
    # the switch interval (5 ms by default) per message. A run's own kernel only.
    sys.setswitchinterval(0.0005)
    limits = plan.get("limits") or {}
    _PipelineRun(plan, Reporter(int(limits.get("log_chars", LOG_LIMIT)))).run()


__all__ = [
    "CALLBACK_STATUSES",
    "DECORATORS",
    "DECORATOR_NAMES",
    "DEFAULT_SENSOR_INTERVAL",
    "DEFAULT_SENSOR_TIMEOUT",
    "ERROR_LIMIT",
    "EVENT_MIME",
    "LOG_LIMIT",
    "MAIN_DECORATORS",
    "MARK_HOOKS",
    "OUTPUT_CHUNK",
    "OUTPUT_INTERVAL",
    "PIECES",
    "RUN_NAMESPACE_KEY",
    "SAMPLE_COLUMNS",
    "SAMPLE_ROWS",
    "TEXT_LIMIT",
    "ArityError",
    "BlockFailure",
    "BlockFunctions",
    "BlockTimeout",
    "ProjectLayout",
    "Reporter",
    "SecretNotFound",
    "SensorTimeout",
    "TestFailure",
    "as_input",
    "as_outputs",
    "block_logger",
    "block_module_name",
    "bounded_repr",
    "call_adapted",
    "call_block",
    "call_with_kwargs",
    "callback",
    "check_arity",
    "condition",
    "custom",
    "cut_text",
    "data_exporter",
    "data_loader",
    "enter_folder",
    "enter_project",
    "error_info",
    "get_repo_path",
    "get_secret_value",
    "install_mage_stand_in",
    "load_block",
    "mark",
    "marked_functions",
    "on_failure",
    "on_success",
    "poll_sensor",
    "resolve_repo_path",
    "run_pipeline",
    "run_requested",
    "run_tests",
    "sensor",
    "summarize",
    "test",
    "time_limit",
    "transformer",
    "with_retries",
]
