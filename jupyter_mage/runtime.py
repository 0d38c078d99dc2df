"""The in-kernel runtime: decorators, the block caller, output summaries, event reporting.

This file is sent *as source* to the kernel on a run's single execute request, because the kernel
may live in another environment (or on a gateway) where jupyter-mage is not installed. It must
therefore depend on the standard library and IPython only, and it is also importable normally so
that ``from jupyter_mage import data_loader`` works in notebooks.

Decorators only mark a function (``__mage_block_type__``); after a block's code has run, the
runtime looks for marked functions in the block's namespace. Marking (not registering into a
global list) makes the decorators work whichever copy of this module defined them.

Events go back to the server as ``display_data`` with a private MIME type on iopub. ipykernel
flushes stdout/stderr before each display message, so the server can attribute every stream
message to the block that printed it.
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import io
import json
import linecache
import logging
import os
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

EVENT_MIME = "application/vnd.jupyter-mage.event+json"
MAIN_DECORATORS = ("data_loader", "transformer", "data_exporter", "custom", "sensor")
CALLBACK_STATUSES = ("success", "failure", "cancelled")
TEXT_LIMIT = 2000
#: Characters kept of an error's message and of its traceback (each), unless the plan says.
ERROR_LIMIT = 20_000
#: Characters of printed output kept per block, unless the plan says (the rest is counted).
LOG_LIMIT = 1_000_000
#: Captured output is sent at least this often (seconds) while a block runs ...
OUTPUT_INTERVAL = 0.2
#: ... and as soon as this many characters wait.
OUTPUT_CHUNK = 256 * 1024
SAMPLE_ROWS = 10
SAMPLE_COLUMNS = 50
#: Sensor polling when neither the notebook nor the cell says otherwise (seconds).
DEFAULT_SENSOR_INTERVAL = 10.0
DEFAULT_SENSOR_TIMEOUT = 3600.0


def mark(fn: Any, kind: str, statuses: tuple[str, ...] = ()) -> Any:
    """Mark ``fn`` as a block function of ``kind`` (and, for callbacks, when it runs)."""
    try:
        fn.__mage_block_type__ = kind
        if kind == "callback":
            fn.__mage_callback_on__ = statuses or ("success",)
    except (AttributeError, TypeError):
        pass
    return fn


#: Called as ``hook(fn, frame)`` by every decorator after marking, ``frame`` being the frame that
#: applied the decorator. Hand runs (:mod:`jupyter_mage.handrun`) note functions decorated at the
#: top level of a notebook cell here; the kernel-private copy of the runtime has no hooks.
MARK_HOOKS: list[Callable[[Any, types.FrameType], None]] = []


def _decorated(fn: Any, kind: str, statuses: tuple[str, ...] = ()) -> Any:
    """``mark`` for the decorators below, then the hooks (always called by a decorator)."""
    mark(fn, kind, statuses)
    if MARK_HOOKS:
        frame = sys._getframe(2)  # 0: here, 1: the decorator, 2: the code applying it
        for hook in MARK_HOOKS:
            hook(fn, frame)
    return fn


def _marker(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        return _decorated(fn, kind)  # type: ignore[no-any-return]

    decorate.__name__ = kind
    decorate.__qualname__ = kind
    decorate.__doc__ = f"Mage's ``@{kind}``: mark the function (a notebook also hand-runs it)."
    return decorate


def _callback_statuses(statuses: tuple[Any, ...]) -> tuple[str, ...]:
    for status in statuses:
        if status not in CALLBACK_STATUSES:
            raise ValueError(f"callback status must be one of {', '.join(CALLBACK_STATUSES)}")
    return tuple(statuses) or ("success",)


def callback(*args: Any) -> Any:
    """Mage's ``@callback`` (on success), ``@callback('success' | 'failure' | 'cancelled')``."""
    if len(args) == 1 and callable(args[0]):
        return _decorated(args[0], "callback", ("success",))
    statuses = _callback_statuses(args)

    def decorate(fn: Any) -> Any:
        return _decorated(fn, "callback", statuses)

    return decorate


def on_success(fn: Any) -> Any:
    """Mage's legacy spelling of ``@callback('success')``."""
    return _decorated(fn, "callback", ("success",))


def on_failure(fn: Any) -> Any:
    """Mage's legacy spelling of ``@callback('failure')``."""
    return _decorated(fn, "callback", ("failure",))


data_loader = _marker("data_loader")
transformer = _marker("transformer")
data_exporter = _marker("data_exporter")
custom = _marker("custom")
sensor = _marker("sensor")
test = _marker("test")
condition = _marker("condition")

#: The decorators, predefined in a block's namespace (and exported by ``jupyter_mage``).
DECORATOR_NAMES = (
    "data_loader",
    "transformer",
    "data_exporter",
    "custom",
    "sensor",
    "test",
    "condition",
    "callback",
    "on_success",
    "on_failure",
)
DECORATORS: dict[str, Callable[..., Any]] = {name: globals()[name] for name in DECORATOR_NAMES}
#: Set in a block's namespace during a triggered run (hand-run decorators look for it).
RUN_NAMESPACE_KEY = "__jupyter_mage_block__"


# -- output summaries (bounded whatever the value) -------------------------------------------

_SEQUENCES = (list, tuple, set, frozenset)


def bounded_repr(value: Any, limit: int = TEXT_LIMIT) -> str:
    """A repr of at most ``limit`` characters that never builds the full repr of a big value.

    Strings and bytes are cut before ``repr`` sees them; dicts, lists, tuples and sets (their
    subclasses too, whose own ``__repr__`` could be unbounded) show their first 20 items, three
    levels deep; anything else is the object's own ``repr`` (a DataFrame or an array summarises
    itself), cut. A broken ``__repr__`` gives a placeholder instead of an error.
    """
    parts: list[str] = []
    _repr_into(value, parts, limit + 1, 3)
    text = "".join(parts)
    return text if len(text) <= limit else text[:limit] + "…"


def _repr_into(value: Any, parts: list[str], room: int, depth: int) -> int:
    """Append a bounded repr of ``value`` to ``parts``; returns the room left."""
    if room <= 0:
        return room
    try:
        if isinstance(value, str | bytes | bytearray):
            text = repr(value[: room + 1])
        elif isinstance(value, dict):
            text = _container_repr(value, room, depth, "{", "}", dict_items=True)
        elif isinstance(value, _SEQUENCES):
            opening, closing = _BRACKETS[next(t for t in _SEQUENCES if isinstance(value, t))]
            text = _container_repr(value, room, depth, opening, closing)
        else:
            text = repr(value)
    except Exception as exc:  # a broken __repr__ (or __getattr__) must not fail the block
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    parts.append(text[:room])
    return room - len(text)


_BRACKETS = {list: ("[", "]"), tuple: ("(", ")"), set: ("{", "}"), frozenset: ("frozenset({", "})")}
_CONTAINER_ITEMS = 20


def _container_repr(
    value: Any, room: int, depth: int, opening: str, closing: str, dict_items: bool = False
) -> str:
    if not value:
        return "set()" if isinstance(value, set) else f"{opening}{closing}"
    if depth <= 0:
        return f"{opening}...{closing}"
    parts = [opening]
    room -= len(opening)
    items = iter(value.items() if dict_items else value)
    for index, item in enumerate(items):
        if room <= 0:
            break
        if index:
            parts.append(", ")
            room -= 2
        if index == _CONTAINER_ITEMS:
            parts.append("...")
            break
        if dict_items:
            room = _repr_into(item[0], parts, room, depth - 1)
            parts.append(": ")
            room = _repr_into(item[1], parts, room - 2, depth - 1)
        else:
            room = _repr_into(item, parts, room, depth - 1)
    if isinstance(value, tuple) and len(value) == 1:
        parts.append(",")
    parts.append(closing)
    return "".join(parts)


def _attribute(value: Any, name: str) -> Any:
    """``getattr(value, name, None)`` that survives a ``__getattr__`` raising anything."""
    try:
        return getattr(value, name, None)
    except Exception:
        return None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "…"
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    return bounded_repr(value, 200)


def summarize(value: Any, index: int = 0, limit: int = TEXT_LIMIT) -> dict[str, Any]:
    """A small JSON summary of one output: type, shape or length, a sample and a short repr.

    Never raises, whatever the value does in its ``__getattr__``, ``__len__`` or ``__repr__``:
    a summary that cannot be made says why instead.
    """
    kind = type(value)
    summary: dict[str, Any] = {
        "variable_uuid": f"output_{index}",
        "type": kind.__name__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__name__}",
    }
    try:
        _describe(value, summary, limit)
    except Exception as exc:
        summary["text_data"] = f"<no summary: {type(exc).__name__}>"
    return summary


def _describe(value: Any, summary: dict[str, Any], limit: int) -> None:
    shape = _attribute(value, "shape")
    if isinstance(shape, tuple) and all(isinstance(n, int) for n in shape):
        summary["shape"] = list(shape)
    elif isinstance(value, list | tuple | dict | set | frozenset | str | bytes | bytearray):
        summary["length"] = len(value)
    columns = _attribute(value, "columns")
    head = _attribute(value, "head")
    if columns is not None and callable(head) and "shape" in summary:
        try:  # a DataFrame-like value: a few rows as a table
            sample = head(SAMPLE_ROWS)
            labels = [str(c) for c in list(columns)[:SAMPLE_COLUMNS]]
            rows = [[_jsonable(v) for v in row[:SAMPLE_COLUMNS]] for row in sample.values.tolist()]
            summary["sample_data"] = {"columns": labels, "rows": rows}
        except Exception:
            pass
    elif (
        isinstance(value, list) and value and all(isinstance(v, dict) for v in value[:SAMPLE_ROWS])
    ):
        names: list[str] = []
        for row in value[:SAMPLE_ROWS]:
            names.extend(str(k) for k in row if str(k) not in names)
        names = names[:SAMPLE_COLUMNS]
        summary["sample_data"] = {
            "columns": names,
            "rows": [[_jsonable(row.get(n)) for n in names] for row in value[:SAMPLE_ROWS]],
        }
    summary["text_data"] = bounded_repr(value, limit)


# -- calling blocks --------------------------------------------------------------------------


class BlockFailure(Exception):
    """A block failed for a reason reported without the runtime's traceback."""

    def _render_traceback_(self) -> list[str]:
        # IPython (hand runs) shows the message alone, not the runtime's frames.
        return [f"{type(self).__name__}: {self}"]


class ArityError(BlockFailure, TypeError):
    """The main function takes more or fewer positional arguments than the block has inputs."""


class SensorTimeout(BlockFailure, TimeoutError):
    """A sensor did not return a true value before its timeout."""


class BlockTimeout(BlockFailure, TimeoutError):
    """A block ran longer than its ``timeout``."""


@contextlib.contextmanager
def time_limit(seconds: float | None, uuid: str) -> Iterator[None]:
    """Raise :class:`BlockTimeout` in the block's code after ``seconds`` (a SIGALRM timer).

    The kernel runs code in its main thread, where the alarm is delivered; elsewhere (no
    SIGALRM, or another thread) the block simply has no time limit.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if seconds is None or not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise BlockTimeout(f"Block {uuid} timed out after {seconds:g} seconds.")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def with_retries(
    attempt_fn: Callable[[int], Any], retry: dict[str, Any] | None, uuid: str
) -> tuple[Any, int]:
    """Call ``attempt_fn(attempt)`` until it succeeds, as Mage's retry_config does it.

    Up to ``retries + 1`` attempts, sleeping ``delay`` between them (doubled each time with
    ``exponential_backoff``); stops early when the slept time plus the next delay would reach
    ``max_delay``. Returns the result and the number of attempts.
    """
    retries = int((retry or {}).get("retries", 0))
    delay = float((retry or {}).get("delay", 5))
    max_delay = float((retry or {}).get("max_delay", 60))
    backoff = bool((retry or {}).get("exponential_backoff", True))
    slept = 0.0
    attempt = 1
    while True:
        try:
            return attempt_fn(attempt), attempt
        except (KeyboardInterrupt, BlockTimeout):
            raise
        except Exception as exc:
            if attempt > retries or slept + delay >= max_delay:
                raise
            print(
                f"Block {uuid}: attempt {attempt} of {retries + 1} failed "
                f"({type(exc).__name__}: {exc}); retrying in {delay:g} s",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(delay)
            slept += delay
            delay = delay * 2 if backoff else delay
            attempt += 1


class TestFailure(BlockFailure, AssertionError):
    """A ``@test`` function failed an assertion."""

    __test__ = False  # not a pytest test class


def _parameters(fn: Callable[..., Any]) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None


def _accepts_var_keyword(fn: Callable[..., Any]) -> bool:
    params = _parameters(fn) or []
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def call_with_kwargs(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Mage's convention: ``fn(*args, **kwargs)`` if ``fn`` takes ``**kwargs``, else ``fn(*args)``."""
    if _accepts_var_keyword(fn):
        return fn(*args, **kwargs)
    return fn(*args)


def call_adapted(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Sensors, conditions and callbacks: as many positional arguments as ``fn`` takes.

    Mage passes these functions their inputs only when the signature asks for them (``*args``
    or named parameters), and ``kwargs`` only when it has ``**kwargs``.
    """
    params = _parameters(fn)
    if params is not None and not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        args = args[: sum(1 for p in params if p.kind in positional)]
    return call_with_kwargs(fn, args, kwargs)


def check_arity(fn: Callable[..., Any], inputs: int, uuid: str, kind: str) -> None:
    """Mage's arity check of a main function against the number of upstream blocks.

    Raises :class:`ArityError` with Mage's wording (and the block's name) where the call would
    otherwise fail with a bare ``TypeError`` about positional arguments.
    """
    params = _parameters(fn)
    if params is None:
        return
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    confirm = f"Confirm that the @{kind} method declaration has the correct number of arguments."
    if len(required) > inputs:
        raise ArityError(
            f"Block {uuid} may be missing upstream dependencies. It expected to have "
            f"{len(required)} arguments, but only received {inputs}. {confirm}"
        )
    if not varargs and len(positional) < inputs:
        raise ArityError(
            f"Block {uuid} has too many upstream dependencies. It expected to have "
            f"{len(positional)} arguments, but received {inputs}. {confirm}"
        )


def as_outputs(result: Any) -> list[Any]:
    """A tuple is several outputs, None is none, anything else (a list too) is one."""
    if result is None:
        return []
    if isinstance(result, tuple):
        return list(result)
    return [result]


def as_input(outputs: list[Any]) -> Any:
    """What a downstream block receives from a block with these outputs (as Mage)."""
    return outputs[0] if len(outputs) == 1 else (outputs or None)


class BlockFunctions:
    """The marked functions of one block's (or add-on's) code."""

    def __init__(self) -> None:
        self.main: Callable[..., Any] | None = None
        self.tests: list[Callable[..., Any]] = []
        self.conditions: list[Callable[..., Any]] = []
        self.callbacks: list[Callable[..., Any]] = []


def marked_functions(namespace: dict[str, Any]) -> BlockFunctions:
    """The main function (first one marked with a block type), tests, conditions, callbacks."""
    found = BlockFunctions()
    for value in list(namespace.values()):
        kind = getattr(value, "__mage_block_type__", None) if callable(value) else None
        if kind in MAIN_DECORATORS and found.main is None:
            found.main = value
        elif kind == "test":
            found.tests.append(value)
        elif kind == "condition":
            found.conditions.append(value)
        elif kind == "callback":
            found.callbacks.append(value)
    return found


def run_tests(
    tests: list[Callable[..., Any]], outputs: list[Any], kwargs: dict[str, Any], uuid: str
) -> None:
    """Run ``@test`` functions as Mage does: all of them, then fail if any assertion failed."""
    if not tests:
        return
    failures: list[tuple[str, AssertionError]] = []
    for check in tests:
        name = getattr(check, "__name__", "test")
        try:
            call_with_kwargs(check, outputs, kwargs)
        except AssertionError as exc:
            failures.append((name, exc))
            detail = f": {exc}" if str(exc) else ""
            print(f"FAIL: {name} (block: {uuid}){detail}", file=sys.stderr)
    print(f"{len(tests) - len(failures)}/{len(tests)} tests passed.")
    if failures:
        first, cause = failures[0]
        detail = f": {cause}" if str(cause) else ""
        more = f"; {len(failures) - 1} more test(s) failed" if len(failures) > 1 else ""
        raise TestFailure(f"{first} failed{detail} (block: {uuid}){more}") from cause


def poll_sensor(
    fn: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    uuid: str,
    interval: float,
    timeout: float,
) -> int:
    """Call a sensor until it returns a true value; :class:`SensorTimeout` after ``timeout``.

    Each call gets ``kwargs['retry'] = {'attempts': n}`` (n = 1, 2, ...), so a sensor can tell
    how often it has been polled. Returns the number of polls.
    """
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        if call_adapted(fn, args, {**kwargs, "retry": {"attempts": attempt}}):
            return attempt
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SensorTimeout(
                f"Sensor {uuid} did not return True within {timeout:g} seconds ({attempt} polls)."
            )
        wait = min(interval, remaining)
        print(f"Sensor {uuid} sleeping for {wait:g} seconds...", flush=True)
        time.sleep(wait)


def call_block(
    found: BlockFunctions,
    args: list[Any],
    kwargs: dict[str, Any],
    uuid: str,
    block_type: str,
    sensor_settings: dict[str, Any] | None = None,
    before_tests: Callable[[list[Any]], None] | None = None,
) -> list[Any]:
    """Call one block as Mage does, for triggered runs and hand runs alike; its outputs.

    A sensor (marked ``@sensor``, or a block of type ``sensor``) is polled until true and has no
    output; any other main function is checked against its inputs (:func:`check_arity`) and
    called ``fn(*args, **kwargs)`` (kwargs only if it takes ``**kwargs``), a tuple being several
    outputs. Then the ``@test`` functions run with the outputs (:func:`run_tests`). A script
    block (no main function) has no output and runs no tests: its code already ran.

    Parameters
    ----------
    found
        The block's marked functions.
    args, kwargs
        The upstream outputs (one per upstream block) and the block's kwargs.
    uuid
        The block's name, in errors and messages.
    block_type
        The block's type in the pipeline; the main function's own mark takes precedence.
    sensor_settings
        ``interval`` and ``timeout`` of a sensor's polling (seconds); defaults otherwise.
    before_tests
        Called with the outputs before the tests run (a hand run keeps and shows them there).
    """
    main = found.main
    if main is None:
        return []
    kind = getattr(main, "__mage_block_type__", block_type)
    if kind == "sensor" or block_type == "sensor":
        settings = sensor_settings or {}
        poll_sensor(
            main,
            args,
            kwargs,
            uuid,
            float(settings.get("interval", DEFAULT_SENSOR_INTERVAL)),
            float(settings.get("timeout", DEFAULT_SENSOR_TIMEOUT)),
        )
        outputs: list[Any] = []  # as Mage: a sensor has no output
    else:
        check_arity(main, len(args), uuid, kind)
        outputs = as_outputs(call_with_kwargs(main, args, kwargs))
    if before_tests is not None:
        before_tests(outputs)
    run_tests(found.tests, outputs, kwargs, uuid)
    return outputs


class _LogFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time, so captured output captures it too."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def block_logger(run_id: Any, block_uuid: str) -> logging.Logger:
    """A logger whose records land in the block's log (through the kernel's stderr)."""
    logger = logging.getLogger(f"jupyter_mage.run.{run_id}.{block_uuid}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


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


def cut_text(text: str, limit: int) -> str:
    """``text`` in at most about ``limit`` characters: its head and its tail, with a note between."""
    if len(text) <= limit:
        return text
    half = max(limit // 2, 1)
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as broken:  # a broken __str__ must not hide the error itself
        return f"<unprintable {type(exc).__name__}: {type(broken).__name__}>"


def error_info(
    exc: BaseException, filename_prefix: str, limit: int = ERROR_LIMIT
) -> dict[str, Any]:
    """Type, message and a traceback of the block's own frames (the runtime's are dropped).

    Message and traceback are each cut to about ``limit`` characters (head and tail): an
    exception can carry megabytes, and the error is stored with the run and shown in lists.
    """
    shown = exc
    if isinstance(exc, BlockFailure) and exc.__cause__ is not None:
        shown = exc.__cause__
    frames = traceback.extract_tb(shown.__traceback__)
    mine = [i for i, f in enumerate(frames) if f.filename.startswith(filename_prefix)]
    lines: list[str] = []
    if mine:  # the user should see their block's code, not the runtime's
        lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames[mine[0] :])]
    message = cut_text(_message(shown), limit)
    if isinstance(shown, SyntaxError):  # the offending line and its caret
        lines += traceback.format_exception_only(type(shown), shown)
    else:
        lines.append(
            f"{type(shown).__name__}: {message}\n" if message else f"{type(shown).__name__}\n"
        )
    info = {"type": type(shown).__name__, "message": message, "traceback": ""}
    if shown is not exc:  # a failed @test: the test's name and message
        info["message"] = cut_text(_message(exc), limit)
        lines.append(f"\n{info['message']}\n")
    info["traceback"] = cut_text("".join(lines), limit)
    return info


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    """Collect what runs print while no block is reported as running (conditions, add-ons)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def load_block(
    source: str, filename: str, kwargs: dict[str, Any], module_name: str = "__mage_block__"
) -> BlockFunctions:
    """Execute a block's code in a fresh namespace (decorators predefined) and find its functions.

    With a ``module_name``, the namespace is a module registered in ``sys.modules``, so what
    the block defines can be pickled by reference: ``multiprocessing`` workers (forked) find
    the block's functions as they find a notebook's ``__main__`` ones.
    """
    # Registering the source lets tracebacks show the block's lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(module_name)
    namespace = module.__dict__
    namespace.update(
        {
            "__builtins__": builtins,
            **DECORATORS,
            "kwargs": kwargs,
            RUN_NAMESPACE_KEY: kwargs.get("block_uuid"),
        }
    )
    if module_name != "__mage_block__":
        sys.modules[module_name] = module
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - the block's own code
    return marked_functions(namespace)


def block_module_name(run_id: Any, uuid: str) -> str:
    """The ``sys.modules`` name of a block's namespace in a run (an identifier)."""
    safe = "".join(c if c.isalnum() else "_" for c in uuid)
    return f"_jupyter_mage_block_{run_id}_{safe}"


def run_pipeline(payload: str) -> None:
    """Run every block of a plan (JSON from the server) in dependency order.

    The plan carries the blocks (uuid, type, source, upstream, their conditionals and callbacks,
    sensor settings), the user variables, the system keys and the output limits. Variables
    arrive here as JSON text and are decoded as data.
    """
    # The I/O thread sends every message; while a block computes it waits for the GIL up to
    # the switch interval (5 ms by default) per message. A run's own kernel only.
    sys.setswitchinterval(0.0005)
    _PipelineRun(json.loads(payload)).run()


class _PipelineRun:
    """One triggered run inside the kernel: block statuses and outputs live here."""

    def __init__(self, plan: dict[str, Any]) -> None:
        system = plan["system"]
        execution_date = datetime.fromisoformat(system["execution_date"])
        self.base_kwargs = {**plan["variables"], **system, "execution_date": execution_date}
        self.context: dict[str, Any] = {}
        self.allow_failures = bool(plan.get("allow_blocks_to_fail"))
        self.run_id = system.get("pipeline_run_id")
        self.prefix = f"<jupyter-mage run {self.run_id} block "
        self.blocks: list[dict[str, Any]] = plan["blocks"]
        limits = plan.get("limits") or {}
        self.error_limit = int(limits.get("error_chars", ERROR_LIMIT))
        self.summary_limit = int(limits.get("summary_chars", TEXT_LIMIT))
        self.reporter = Reporter(int(limits.get("log_chars", LOG_LIMIT)))
        self.values: dict[str, Any] = {}
        self.status: dict[str, str] = {}
        self.halted = False
        self._loaded = 0

    def run(self) -> None:
        """Run the blocks; always end with ``run_finished`` saying how the run ended.

        ``ending`` is ``finished`` (every block reported its end), ``interrupted`` (a
        KeyboardInterrupt: a cancel's interrupt, or one a block raised) or ``runtime_error``
        (a fault of this runtime, never of a block's code: blocks' errors fail their block).
        """
        ending, error = "finished", None
        with self.reporter.installed():
            try:
                for block in self.blocks:
                    if not block.get("skip"):  # skip: completed earlier and not needed again
                        self._step(block)
            except KeyboardInterrupt:
                ending = "interrupted"
            except BaseException as exc:
                ending, error = "runtime_error", error_info(exc, "", self.error_limit)
            trailing = self.reporter.trailing_output()
        # Sent after the capture is undone: the last sequence number tells the server how many
        # events to expect. The server can end the run now, without waiting for the kernel's
        # own wrap-up of the request (a few milliseconds).
        self.reporter.emit("run_finished", ending=ending, error=error, log=trailing)

    def _kwargs(self, uuid: str) -> dict[str, Any]:
        return {
            **self.base_kwargs,
            "block_uuid": uuid,
            "context": self.context,
            "logger": block_logger(self.run_id, uuid),
            "retry": {"attempts": 1},
        }

    def _load(self, source: str, uuid: str, kwargs: dict[str, Any]) -> BlockFunctions:
        self._loaded += 1
        module_name = block_module_name(f"{self.run_id}_{self._loaded}", uuid)
        return load_block(source, f"{self.prefix}{uuid}>", kwargs, module_name)

    def _finish(self, uuid: str, status: str, **data: Any) -> None:
        self.status[uuid] = status
        if not data.get("log"):
            data.pop("log", None)
        self.reporter.emit("block_finished", block=uuid, status=status, **data)

    def _step(self, block: dict[str, Any]) -> None:
        uuid = block["uuid"]
        upstream_status = [self.status.get(u) for u in block["upstream"]]
        if any(s in ("failed", "upstream_failed") for s in upstream_status):
            return self._finish(uuid, "upstream_failed")
        if "condition_failed" in upstream_status:  # as Mage: skipped with its parent
            return self._finish(uuid, "condition_failed")
        kwargs = self._kwargs(uuid)
        if self.halted:
            with _captured() as log:
                self._callbacks(block, "cancelled", [None], kwargs)
            return self._finish(uuid, "cancelled", log=log.getvalue())
        args = [self.values.get(u) for u in block["upstream"]]
        with _captured() as log:
            passed = self._conditions(block, args, kwargs)
        if not passed:
            return self._finish(uuid, "condition_failed", log=log.getvalue())
        self.reporter.start_block(uuid)
        if log.getvalue():  # what the conditions printed, now in the block's log
            print(log.getvalue(), end="")
        started = time.perf_counter()
        attempts = [1]

        def attempt(n: int) -> list[Any]:
            attempts[0] = n
            return self._execute(block, args, {**kwargs, "retry": {"attempts": n}})

        try:
            with time_limit(block.get("timeout"), uuid):
                outputs, _ = with_retries(attempt, block.get("retry"), uuid)
        except KeyboardInterrupt as exc:
            # Reported as this block's failure; the run stops (a cancel, or the block's own
            # KeyboardInterrupt: either way nothing after it runs).
            self._fail(block, exc, kwargs, started, attempts[0])
            raise
        except BaseException as exc:
            self._fail(block, exc, kwargs, started, attempts[0])
            if not self.allow_failures:
                self.halted = True
            return None
        self.values[uuid] = as_input(outputs)
        self._callbacks(block, "success", [self.values[uuid]], kwargs)
        summaries = [summarize(v, i, self.summary_limit) for i, v in enumerate(outputs)]
        return self._finish(
            uuid,
            "completed",
            outputs=summaries,
            seconds=time.perf_counter() - started,
            attempts=attempts[0],
            dropped_chars=self.reporter.end_block(),
        )

    def _fail(
        self,
        block: dict[str, Any],
        exc: BaseException,
        kwargs: dict[str, Any],
        started: float,
        attempts: int,
    ) -> None:
        error = error_info(exc, self.prefix, self.error_limit)
        if not isinstance(exc, KeyboardInterrupt):
            self._callbacks(block, "failure", [None], {**kwargs, "__error": exc})
        self._finish(
            block["uuid"],
            "failed",
            error=error,
            seconds=time.perf_counter() - started,
            attempts=attempts,
            dropped_chars=self.reporter.end_block(),
        )

    def _execute(self, block: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        found = self._load(block["source"], block["uuid"], kwargs)
        return call_block(found, args, kwargs, block["uuid"], block["type"], block.get("sensor"))

    def _addon_kwargs(self, addon: str, parent: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**kwargs, "block_uuid": addon, "parent_block_uuid": parent}

    def _conditions(self, block: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> bool:
        """AND of every ``@condition`` attached to the block; an exception counts as False."""
        uuid = block["uuid"]
        for addon in block.get("conditionals") or []:
            addon_kwargs = self._addon_kwargs(addon["uuid"], uuid, kwargs)
            name = addon["uuid"]
            try:
                found = self._load(addon["source"], name, addon_kwargs)
                for check in found.conditions:
                    name = f"{addon['uuid']}.{getattr(check, '__name__', 'condition')}"
                    if not call_adapted(check, args, addon_kwargs):
                        print(f"Condition {name} of block {uuid} is False: block skipped.")
                        return False
            except Exception as exc:
                info = error_info(exc, self.prefix)
                print(f"Condition {name} of block {uuid} failed (counts as False):")
                print(info["traceback"], end="")
                return False
        return True

    def _callbacks(
        self, block: dict[str, Any], status: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """Run the block's callbacks for ``status``; their errors are logged, never fatal."""
        uuid = block["uuid"]
        for addon in block.get("callbacks") or []:
            addon_kwargs = self._addon_kwargs(addon["uuid"], uuid, kwargs)
            name = addon["uuid"]
            try:
                found = self._load(addon["source"], name, addon_kwargs)
                for fn in found.callbacks:
                    if status not in getattr(fn, "__mage_callback_on__", ("success",)):
                        continue
                    name = f"{addon['uuid']}.{getattr(fn, '__name__', 'callback')}"
                    call_adapted(fn, args, addon_kwargs)
            except Exception as exc:
                info = error_info(exc, self.prefix)
                print(f"Callback {name} of block {uuid} ({status}) failed:", file=sys.stderr)
                print(info["traceback"], end="", file=sys.stderr, flush=True)
