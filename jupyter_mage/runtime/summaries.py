"""Summaries of outputs and errors, bounded whatever the value: what leaves the kernel.

Part of the in-kernel run-time (:mod:`jupyter_mage.runtime`): standard library only, sent to
the kernel as source, so it imports the other pieces only relatively.

Outputs stay in the kernel; only these summaries leave it (type, shape or length, a sample of
rows, a bounded repr), and errors with their message and traceback cut, head and tail.
"""

from __future__ import annotations

import traceback
from typing import Any

from .calls import BlockFailure

TEXT_LIMIT = 2000
#: Characters kept of an error's message and of its traceback (each), unless the plan says.
ERROR_LIMIT = 20_000
#: Characters of printed output kept per block, unless the plan says (the rest is counted).
SAMPLE_ROWS = 10
SAMPLE_COLUMNS = 50


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
