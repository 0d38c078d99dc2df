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
import inspect
import json
import linecache
import logging
import reprlib
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

EVENT_MIME = "application/vnd.jupyter-mage.event+json"
MAIN_DECORATORS = ("data_loader", "transformer", "data_exporter", "custom", "sensor")
TEXT_LIMIT = 2000
SAMPLE_ROWS = 10
SAMPLE_COLUMNS = 50


def _marker(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        try:
            fn.__mage_block_type__ = kind  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            pass
        return fn

    decorate.__name__ = kind
    decorate.__qualname__ = kind
    return decorate


data_loader = _marker("data_loader")
transformer = _marker("transformer")
data_exporter = _marker("data_exporter")
custom = _marker("custom")
sensor = _marker("sensor")
test = _marker("test")

DECORATORS: dict[str, Callable[..., Any]] = {
    "data_loader": data_loader,
    "transformer": transformer,
    "data_exporter": data_exporter,
    "custom": custom,
    "sensor": sensor,
    "test": test,
}


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


def _accepts_var_keyword(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def call_with_kwargs(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Mage's convention: ``fn(*args, **kwargs)`` if ``fn`` takes ``**kwargs``, else ``fn(*args)``."""
    if _accepts_var_keyword(fn):
        return fn(*args, **kwargs)
    return fn(*args)


def as_outputs(result: Any) -> list[Any]:
    """A tuple is several outputs, None is none, anything else (a list too) is one."""
    if result is None:
        return []
    if isinstance(result, tuple):
        return list(result)
    return [result]


def marked_functions(namespace: dict[str, Any]) -> tuple[Callable[..., Any] | None, list[Any]]:
    """The block's main function (first marked one) and its ``@test`` functions."""
    main = None
    tests = []
    for value in list(namespace.values()):
        kind = getattr(value, "__mage_block_type__", None) if callable(value) else None
        if kind in MAIN_DECORATORS and main is None:
            main = value
        elif kind == "test":
            tests.append(value)
    return main, tests


class BlockFailure(Exception):
    """A block failed in a way that is reported without a Python traceback (e.g. a test)."""


class _LogFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def block_logger(run_id: Any, block_uuid: str) -> logging.Logger:
    """A logger whose records land in the block's log (through the kernel's stderr)."""
    logger = logging.getLogger(f"jupyter_mage.run.{run_id}.{block_uuid}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def _emit(kind: str, **data: Any) -> None:
    from IPython.display import publish_display_data

    publish_display_data({EVENT_MIME: {"event": kind, **data}})


def _error_info(exc: BaseException, filename_prefix: str) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)
    # Drop the runtime's own frames: the user should see their block's code first.
    first = next((i for i, f in enumerate(frames) if f.filename.startswith(filename_prefix)), 0)
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames[first:])
    lines += traceback.format_exception_only(type(exc), exc)
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(lines),
    }


def run_pipeline(payload: str) -> None:
    """Run every block of a plan (JSON from the server) in dependency order.

    The plan carries the blocks (uuid, type, source, upstream), the user variables and the
    system keys. Variables arrive here as JSON text and are decoded as data.
    """
    plan = json.loads(payload)
    system = plan["system"]
    execution_date = datetime.fromisoformat(system["execution_date"])
    base_kwargs = {**plan["variables"], **system, "execution_date": execution_date}
    context: dict[str, Any] = {}
    allow_failures = bool(plan.get("allow_blocks_to_fail"))
    run_id = system.get("pipeline_run_id")
    prefix = f"<jupyter-mage run {run_id} block "

    values: dict[str, Any] = {}
    status: dict[str, str] = {}
    downstream: dict[str, set[str]] = {}
    for block in plan["blocks"]:
        for up in block["upstream"]:
            downstream.setdefault(up, set()).add(block["uuid"])
    halted = False

    try:
        for block in plan["blocks"]:
            uuid = block["uuid"]
            if block.get("skip"):  # completed earlier and not needed again (retry)
                continue
            if any(status.get(u) in ("failed", "upstream_failed") for u in block["upstream"]):
                status[uuid] = "upstream_failed"
                _emit("block_finished", block=uuid, status="upstream_failed")
                continue
            if halted:
                status[uuid] = "cancelled"
                _emit("block_finished", block=uuid, status="cancelled")
                continue
            _emit("block_started", block=uuid)
            started = time.perf_counter()
            kwargs = {
                **base_kwargs,
                "block_uuid": uuid,
                "context": context,
                "logger": block_logger(run_id, uuid),
                "retry": {"attempts": 1},
            }
            try:
                outputs = _run_block(block, values, kwargs, prefix)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                status[uuid] = "failed"
                error = _error_info(exc.__cause__ or exc, prefix)
                if isinstance(exc, BlockFailure):  # a failed @test: name the test
                    error["message"] = str(exc)
                    error["traceback"] += f"\n{exc}\n"
                _emit(
                    "block_finished",
                    block=uuid,
                    status="failed",
                    error=error,
                    seconds=time.perf_counter() - started,
                )
                if not allow_failures:
                    halted = True
                continue
            status[uuid] = "completed"
            values[uuid] = outputs[0] if len(outputs) == 1 else (outputs or None)
            _emit(
                "block_finished",
                block=uuid,
                status="completed",
                outputs=[summarize(v, i) for i, v in enumerate(outputs)],
                seconds=time.perf_counter() - started,
            )
    except KeyboardInterrupt:
        _emit("interrupted")


def _run_block(
    block: dict[str, Any], values: dict[str, Any], kwargs: dict[str, Any], prefix: str
) -> list[Any]:
    uuid = block["uuid"]
    filename = f"{prefix}{uuid}>"
    source = block["source"]
    # Registering the source lets tracebacks show the block's lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {
        "__name__": f"__mage_block_{uuid}__",
        "__builtins__": builtins,
        **DECORATORS,
        "kwargs": kwargs,
    }
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - the block's own code
    main, tests = marked_functions(namespace)
    if main is None:  # a script block: its code ran with kwargs in scope, no output
        return []
    args = [values.get(up) for up in block["upstream"]]
    outputs = as_outputs(call_with_kwargs(main, args, kwargs))
    for check in tests:
        try:
            call_with_kwargs(check, outputs, kwargs)
        except AssertionError as exc:
            name = getattr(check, "__name__", "test")
            detail = f": {exc}" if str(exc) else ""
            raise BlockFailure(f"{name} failed{detail} (block: {uuid})") from exc
    return outputs
