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
import reprlib
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

EVENT_MIME = "application/vnd.jupyter-mage.event+json"
MAIN_DECORATORS = ("data_loader", "transformer", "data_exporter", "custom", "sensor")
CALLBACK_STATUSES = ("success", "failure", "cancelled")
TEXT_LIMIT = 2000
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


def _marker(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        return mark(fn, kind)  # type: ignore[no-any-return]

    decorate.__name__ = kind
    decorate.__qualname__ = kind
    return decorate


def _callback_statuses(statuses: tuple[Any, ...]) -> tuple[str, ...]:
    for status in statuses:
        if status not in CALLBACK_STATUSES:
            raise ValueError(f"callback status must be one of {', '.join(CALLBACK_STATUSES)}")
    return tuple(statuses) or ("success",)


def callback(*args: Any) -> Any:
    """Mage's ``@callback`` (on success), ``@callback('success' | 'failure' | 'cancelled')``."""
    if len(args) == 1 and callable(args[0]):
        return mark(args[0], "callback", ("success",))
    statuses = _callback_statuses(args)
    return lambda fn: mark(fn, "callback", statuses)


def on_success(fn: Any) -> Any:
    """Mage's legacy spelling of ``@callback('success')``."""
    return mark(fn, "callback", ("success",))


def on_failure(fn: Any) -> Any:
    """Mage's legacy spelling of ``@callback('failure')``."""
    return mark(fn, "callback", ("failure",))


data_loader = _marker("data_loader")
transformer = _marker("transformer")
data_exporter = _marker("data_exporter")
custom = _marker("custom")
sensor = _marker("sensor")
test = _marker("test")
condition = _marker("condition")

#: The decorators predefined in a block's namespace (hand runs define their own variants).
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

_repr = reprlib.Repr()
_repr.maxstring = TEXT_LIMIT
_repr.maxother = TEXT_LIMIT
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 20
_repr.maxlevel = 3


def _short_text(value: Any) -> str:
    try:
        if isinstance(value, list | tuple | dict | set | frozenset | str):
            text = _repr.repr(value)
        else:
            text = repr(value)
    except Exception as exc:  # a broken __repr__ must not fail the block
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + "…"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "…"
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    return _short_text(value)[:200]


def summarize(value: Any, index: int = 0) -> dict[str, Any]:
    """A small JSON summary of one output: type, shape or length, a sample and a short repr."""
    kind = type(value)
    summary: dict[str, Any] = {
        "variable_uuid": f"output_{index}",
        "type": kind.__name__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__name__}",
    }
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and all(isinstance(n, int) for n in shape):
        summary["shape"] = list(shape)
    elif isinstance(value, list | tuple | dict | set | frozenset | str | bytes):
        summary["length"] = len(value)
    columns = getattr(value, "columns", None)
    head = getattr(value, "head", None)
    if columns is not None and callable(head) and "shape" in summary:
        try:  # a DataFrame-like value: a few rows as a table
            sample = head(SAMPLE_ROWS)
            names = [str(c) for c in list(columns)[:SAMPLE_COLUMNS]]
            rows = [[_jsonable(v) for v in row[:SAMPLE_COLUMNS]] for row in sample.values.tolist()]
            summary["sample_data"] = {"columns": names, "rows": rows}
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
    summary["text_data"] = _short_text(value)
    return summary


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
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
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


def _emit(kind: str, **data: Any) -> None:
    from IPython.display import publish_display_data

    publish_display_data({EVENT_MIME: {"event": kind, **data}})


def error_info(exc: BaseException, filename_prefix: str) -> dict[str, Any]:
    """Type, message and a traceback of the block's own frames (the runtime's are dropped)."""
    shown = exc
    if isinstance(exc, BlockFailure) and exc.__cause__ is not None:
        shown = exc.__cause__
    frames = traceback.extract_tb(shown.__traceback__)
    mine = [i for i, f in enumerate(frames) if f.filename.startswith(filename_prefix)]
    lines: list[str] = []
    if mine:  # the user should see their block's code, not the runtime's
        lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames[mine[0] :])]
    lines += traceback.format_exception_only(type(shown), shown)
    info = {"type": type(shown).__name__, "message": str(shown), "traceback": "".join(lines)}
    if shown is not exc:  # a failed @test: the test's name and message
        info["message"] = str(exc)
        info["traceback"] += f"\n{exc}\n"
    return info


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    """Collect what runs print while no block is reported as running (conditions, add-ons)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def load_block(source: str, filename: str, kwargs: dict[str, Any]) -> BlockFunctions:
    """Execute a block's code in a fresh namespace (decorators predefined) and find its functions."""
    # Registering the source lets tracebacks show the block's lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {
        "__name__": "__mage_block__",
        "__builtins__": builtins,
        **DECORATORS,
        "kwargs": kwargs,
        RUN_NAMESPACE_KEY: kwargs.get("block_uuid"),
    }
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - the block's own code
    return marked_functions(namespace)


def run_pipeline(payload: str) -> None:
    """Run every block of a plan (JSON from the server) in dependency order.

    The plan carries the blocks (uuid, type, source, upstream, their conditionals and callbacks,
    sensor settings), the user variables and the system keys. Variables arrive here as JSON
    text and are decoded as data.
    """
    _tune_kernel()
    _PipelineRun(json.loads(payload)).run()


def _flush_pending_output() -> None:
    """Flush stdout and stderr before a display message, skipping streams with nothing buffered.

    ipykernel's ``flush()`` hands the work to its I/O thread and waits for it even when there
    is nothing to send, and every display message flushes both streams: four thread round trips
    per block (its two events). Order is kept: buffered text still goes out before the event.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "_buffers", True):  # ipykernel's OutStream: text not yet sent
            stream.flush()


def _tune_kernel() -> None:
    """Settings of a kernel that runs pipelines (a run's own kernel, never a notebook's)."""
    from IPython.core.getipython import get_ipython

    display_pub = getattr(get_ipython(), "display_pub", None)  # type: ignore[no-untyped-call]
    if display_pub is not None and hasattr(display_pub, "_flush_streams"):
        display_pub._flush_streams = _flush_pending_output
    # The kernel's I/O thread sends every message; while a block computes it waits for the GIL
    # up to the switch interval (5 ms by default) per message.
    sys.setswitchinterval(0.0005)


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
        self.values: dict[str, Any] = {}
        self.status: dict[str, str] = {}
        self.halted = False

    def run(self) -> None:
        try:
            for block in self.blocks:
                if not block.get("skip"):  # skip: completed earlier and not needed again
                    self._step(block)
        except KeyboardInterrupt:
            _emit("interrupted")
            return
        # Every block has its status: the server can end the run now, without waiting for the
        # kernel's own wrap-up of the request (a few milliseconds).
        _emit("run_finished")

    def _kwargs(self, uuid: str) -> dict[str, Any]:
        return {
            **self.base_kwargs,
            "block_uuid": uuid,
            "context": self.context,
            "logger": block_logger(self.run_id, uuid),
            "retry": {"attempts": 1},
        }

    def _finish(self, uuid: str, status: str, **data: Any) -> None:
        self.status[uuid] = status
        if not data.get("log"):
            data.pop("log", None)
        _emit("block_finished", block=uuid, status=status, **data)

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
        _emit("block_started", block=uuid)
        if log.getvalue():  # what the conditions printed, now in the block's log
            print(log.getvalue(), end="", flush=True)
        started = time.perf_counter()
        attempts = [1]

        def attempt(n: int) -> list[Any]:
            attempts[0] = n
            return self._execute(block, args, {**kwargs, "retry": {"attempts": n}})

        try:
            with time_limit(block.get("timeout"), uuid):
                outputs, _ = with_retries(attempt, block.get("retry"), uuid)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            error = error_info(exc, self.prefix)
            self._callbacks(block, "failure", [None], {**kwargs, "__error": exc})
            self._finish(
                uuid,
                "failed",
                error=error,
                seconds=time.perf_counter() - started,
                attempts=attempts[0],
            )
            if not self.allow_failures:
                self.halted = True
            return None
        self.values[uuid] = as_input(outputs)
        self._callbacks(block, "success", [self.values[uuid]], kwargs)
        return self._finish(
            uuid,
            "completed",
            outputs=[summarize(v, i) for i, v in enumerate(outputs)],
            seconds=time.perf_counter() - started,
            attempts=attempts[0],
        )

    def _execute(self, block: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        uuid = block["uuid"]
        found = load_block(block["source"], f"{self.prefix}{uuid}>", kwargs)
        main = found.main
        if main is None:  # a script block: its code ran with kwargs in scope, no output
            return []
        kind = getattr(main, "__mage_block_type__", block["type"])
        if kind == "sensor" or block["type"] == "sensor":
            settings = block.get("sensor") or {}
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
        run_tests(found.tests, outputs, kwargs, uuid)
        return outputs

    def _addon_kwargs(self, addon: str, parent: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**kwargs, "block_uuid": addon, "parent_block_uuid": parent}

    def _conditions(self, block: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> bool:
        """AND of every ``@condition`` attached to the block; an exception counts as False."""
        uuid = block["uuid"]
        for addon in block.get("conditionals") or []:
            addon_kwargs = self._addon_kwargs(addon["uuid"], uuid, kwargs)
            name = addon["uuid"]
            try:
                found = load_block(addon["source"], f"{self.prefix}{name}>", addon_kwargs)
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
                found = load_block(addon["source"], f"{self.prefix}{name}>", addon_kwargs)
                for fn in found.callbacks:
                    if status not in getattr(fn, "__mage_callback_on__", ("success",)):
                        continue
                    name = f"{addon['uuid']}.{getattr(fn, '__name__', 'callback')}"
                    call_adapted(fn, args, addon_kwargs)
            except Exception as exc:
                info = error_info(exc, self.prefix)
                print(f"Callback {name} of block {uuid} ({status}) failed:", file=sys.stderr)
                print(info["traceback"], end="", file=sys.stderr, flush=True)
