"""The block caller: arity, the call convention, outputs, ``@test`` functions, sensors, retries.

Part of the in-kernel run-time (:mod:`jupyter_mage.runtime`): standard library only, sent to
the kernel as source, so it imports the other pieces only relatively.

:func:`call_block` is the one sequence that calls a block (poll a sensor, or check the arity and
call the main function; then the tests), for triggered runs (:mod:`.run`, in the kernel) and hand
runs (:mod:`jupyter_mage.handrun`, in a notebook) alike.
"""

from __future__ import annotations

import contextlib
import inspect
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .decorators import BlockFunctions

#: Sensor polling when neither the notebook nor the cell says otherwise (seconds).
DEFAULT_SENSOR_INTERVAL = 10.0
DEFAULT_SENSOR_TIMEOUT = 3600.0


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


def as_outputs(result: Any, list_outputs: str = "one") -> list[Any]:
    """A tuple is several outputs, None is none, anything else (a list too) is one.

    With ``list_outputs="mage"`` (a pipeline's ``metadata.mage.list_outputs``) a returned list
    is split into its elements as Mage does: ``@test(*args)`` functions that index the outputs
    work, and ``return [a]`` reaches downstream as ``a``.
    """
    if result is None:
        return []
    if isinstance(result, tuple) or (list_outputs == "mage" and isinstance(result, list)):
        return list(result)
    return [result]


def as_input(outputs: list[Any]) -> Any:
    """What a downstream block receives from a block with these outputs (as Mage)."""
    return outputs[0] if len(outputs) == 1 else (outputs or None)


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
    list_outputs: str = "one",
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
    list_outputs
        ``"mage"``: a returned list is several outputs, as in Mage (see :func:`as_outputs`).
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
        outputs = as_outputs(call_with_kwargs(main, args, kwargs), list_outputs)
    if before_tests is not None:
        before_tests(outputs)
    run_tests(found.tests, outputs, kwargs, uuid)
    return outputs
