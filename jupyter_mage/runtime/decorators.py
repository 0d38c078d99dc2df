"""The decorators: Mage's ``@data_loader``, ``@test``, ``@callback``... mark functions.

Part of the in-kernel run-time (:mod:`jupyter_mage.runtime`): standard library only, sent to
the kernel as source, so it imports the other pieces only relatively.

Decorators only mark a function (``__mage_block_type__``, plus ``__mage_callback_on__`` for
callbacks); after a block's code has run, :func:`marked_functions` finds the marked functions in
its namespace. Marking (not registering into a global list) makes the decorators work whichever
copy of the run-time defined them: the kernel-private one a triggered run loads, or the one
``jupyter_mage`` exports. Hand runs add a hook (:data:`MARK_HOOKS`) to note a function decorated
in a notebook cell; the kernel-private copy has none.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

MAIN_DECORATORS = ("data_loader", "transformer", "data_exporter", "custom", "sensor")
CALLBACK_STATUSES = ("success", "failure", "cancelled")


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
