"""The one block caller and the one set of decorators, shared by triggered runs and hand runs.

No kernel: :func:`runtime.call_block` is called directly with functions marked by the
decorators, as the kernel's runtime calls it after a block's code ran (and as a hand run calls it
after a cell ran). The same rules are proven end to end in ``test_blocks.py`` and
``test_handrun.py``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest

import jupyter_mage
from jupyter_mage import handrun, runtime
from jupyter_mage.runtime import (
    ArityError,
    BlockFunctions,
    SensorTimeout,
    TestFailure,
    call_block,
    custom,
    data_loader,
    sensor,
    transformer,
)


def _found(*functions: Callable[..., Any]) -> BlockFunctions:
    """The block functions of a namespace holding ``functions`` (in this order)."""
    return runtime.marked_functions({f"f{i}": fn for i, fn in enumerate(functions)})


def _call(found: BlockFunctions, args: list[Any], **options: Any) -> list[Any]:
    kwargs = options.pop("kwargs", {"block_uuid": "b"})
    block_type = options.pop("block_type", "transformer")
    return call_block(found, args, kwargs, "b", block_type, **options)


# -- arity ----------------------------------------------------------------------------------


def test_too_few_inputs_is_an_arity_error_in_mages_words() -> None:
    called: list[Any] = []

    @transformer
    def needs_two(x: Any, y: Any, **kwargs: Any) -> None:
        called.append((x, y))

    with pytest.raises(ArityError) as caught:
        _call(_found(needs_two), [1])
    assert str(caught.value) == (
        "Block b may be missing upstream dependencies. It expected to have 2 arguments, but only "
        "received 1. Confirm that the @transformer method declaration has the correct number of "
        "arguments."
    )
    assert isinstance(caught.value, TypeError) and called == []  # raised before the call


def test_too_many_inputs_is_an_arity_error_in_mages_words() -> None:
    @data_loader
    def takes_one(x: Any) -> Any:
        return x

    with pytest.raises(ArityError) as caught:
        _call(_found(takes_one), [1, 2], block_type="data_loader")
    assert str(caught.value) == (
        "Block b has too many upstream dependencies. It expected to have 1 arguments, but "
        "received 2. Confirm that the @data_loader method declaration has the correct number of "
        "arguments."
    )


def test_defaults_may_stay_unfilled_and_star_args_take_the_rest() -> None:
    @transformer
    def optional(x: Any, y: Any = "default") -> Any:
        return (x, y)

    @transformer
    def many(x: Any, *rest: Any) -> Any:
        return (x, rest)

    assert _call(_found(optional), [1]) == [1, "default"]
    assert _call(_found(many), [1, 2, 3]) == [1, (2, 3)]


# -- outputs and kwargs ---------------------------------------------------------------------


def test_a_tuple_is_several_outputs_a_list_one_none_none() -> None:
    @custom
    def pair() -> Any:
        return 1, "two"

    @custom
    def listed() -> Any:
        return [7, 8]

    @custom
    def nothing() -> None:
        return None

    assert _call(_found(pair), []) == [1, "two"]
    assert _call(_found(listed), []) == [[7, 8]]
    assert _call(_found(nothing), []) == []
    assert runtime.as_input([[7, 8]]) == [7, 8] and runtime.as_input([1, "two"]) == [1, "two"]


def test_kwargs_only_for_functions_that_take_them() -> None:
    @transformer
    def plain(x: Any) -> Any:
        return x + 1

    @transformer
    def with_kwargs(x: Any, **kwargs: Any) -> Any:
        return x, kwargs["env"]

    kwargs = {"block_uuid": "b", "env": "qa"}
    assert _call(_found(plain), [1], kwargs=kwargs) == [2]
    assert _call(_found(with_kwargs), [1], kwargs=kwargs) == [1, "qa"]


def test_a_script_block_has_no_output_and_runs_no_tests() -> None:
    ran: list[str] = []

    @runtime.test
    def never(*args: Any) -> None:
        ran.append("test")

    assert _call(_found(never), [1], before_tests=lambda outputs: ran.append("hook")) == []
    assert ran == []


# -- tests ----------------------------------------------------------------------------------


def test_tests_run_after_the_main_function_with_its_outputs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    order: list[Any] = []

    @runtime.test
    def first(a: Any, b: Any) -> None:  # defined above the main function: still after it
        order.append(("first", a, b))

    @transformer
    def main(x: Any, **kwargs: Any) -> Any:
        order.append(("main", x))
        return x, x * 2

    @runtime.test
    def second(*outputs: Any, **kwargs: Any) -> None:
        order.append(("second", outputs, kwargs["block_uuid"]))

    found = _found(first, main, second)
    assert found.main is main and found.tests == [first, second]
    outputs = _call(found, [3], before_tests=lambda outputs: order.append(("kept", outputs)))
    assert outputs == [3, 6]
    assert order == [
        ("main", 3),
        ("kept", [3, 6]),  # before the tests: a hand run keeps and shows the outputs here
        ("first", 3, 6),
        ("second", (3, 6), "b"),
    ]
    assert "2/2 tests passed." in capsys.readouterr().out


def test_every_test_runs_then_the_first_failure_fails_the_block(
    capsys: pytest.CaptureFixture[str],
) -> None:
    kept: list[list[Any]] = []

    @data_loader
    def load() -> Any:
        return 5

    @runtime.test
    def is_small(value: Any) -> None:
        if value >= 3:  # not an assert statement: pytest would rewrite its message
            raise AssertionError("too big")

    @runtime.test
    def is_even(value: Any) -> None:
        assert value % 2 == 0

    @runtime.test
    def is_int(value: Any) -> None:
        assert isinstance(value, int)

    found = _found(load, is_small, is_even, is_int)
    with pytest.raises(TestFailure) as caught:
        _call(found, [], block_type="data_loader", before_tests=kept.append)
    assert str(caught.value) == "is_small failed: too big (block: b); 1 more test(s) failed"
    assert isinstance(caught.value.__cause__, AssertionError)
    assert kept == [[5]]  # the outputs were there before the tests failed
    printed = capsys.readouterr()
    assert "FAIL: is_small (block: b): too big" in printed.err
    assert "FAIL: is_even (block: b)" in printed.err
    assert "1/3 tests passed." in printed.out


# -- sensors --------------------------------------------------------------------------------


def test_a_sensor_is_polled_until_true_and_has_no_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    polls: list[int] = []
    tested: list[tuple[Any, ...]] = []

    @sensor
    def ready(*args: Any, **kwargs: Any) -> bool:
        polls.append(kwargs["retry"]["attempts"])
        return len(polls) == 3

    @runtime.test
    def after(*outputs: Any) -> None:
        tested.append(outputs)

    settings = {"interval": 0.001, "timeout": 60}
    outputs = _call(_found(ready, after), [1, 2], block_type="custom", sensor_settings=settings)
    assert outputs == [] and polls == [1, 2, 3] and tested == [()]
    assert capsys.readouterr().out.count("Sensor b sleeping for 0.001 seconds...") == 2


def test_a_sensor_block_polls_its_main_function_whatever_its_mark() -> None:
    polls: list[Any] = []

    @custom
    def ready(x: Any) -> bool:  # more inputs than parameters: a sensor takes what it asks for
        polls.append(x)
        return True

    settings = {"interval": 0.001, "timeout": 60}
    assert _call(_found(ready), [1, 2], block_type="sensor", sensor_settings=settings) == []
    assert polls == [1]


def test_a_sensor_that_stays_false_times_out() -> None:
    @sensor
    def never() -> bool:
        return False

    settings = {"interval": 0.001, "timeout": 0.01}
    with pytest.raises(SensorTimeout, match=r"Sensor b did not return True within 0\.01 seconds"):
        _call(_found(never), [], block_type="sensor", sensor_settings=settings)


# -- one set of decorators ------------------------------------------------------------------


def test_the_package_exports_the_runtimes_decorators() -> None:
    for name in runtime.DECORATOR_NAMES:
        assert getattr(jupyter_mage, name) is runtime.DECORATORS[name], name
        assert getattr(handrun, name) is runtime.DECORATORS[name], name
    assert handrun.DECORATORS is runtime.DECORATORS
    assert handrun._note in runtime.MARK_HOOKS  # hand runs note decorated functions


def test_every_decorator_calls_the_hooks_with_the_applying_frame() -> None:
    seen: list[tuple[Any, types.FrameType]] = []

    def hook(fn: Any, frame: types.FrameType) -> None:
        seen.append((fn, frame))

    runtime.MARK_HOOKS.append(hook)
    try:

        def a() -> None: ...

        def b() -> None: ...

        def c() -> None: ...

        def d() -> None: ...

        def e() -> None: ...

        marked = [
            runtime.transformer(a),
            runtime.callback(b),
            runtime.callback("failure", "cancelled")(c),
            runtime.on_success(d),
            runtime.on_failure(e),
        ]
    finally:
        runtime.MARK_HOOKS.remove(hook)
    assert [fn for fn, _ in seen] == marked == [a, b, c, d, e]
    here = test_every_decorator_calls_the_hooks_with_the_applying_frame.__code__
    assert all(frame.f_code is here for _, frame in seen)
    assert a.__mage_block_type__ == "transformer"  # type: ignore[attr-defined]
    assert c.__mage_callback_on__ == ("failure", "cancelled")  # type: ignore[attr-defined]
    assert e.__mage_callback_on__ == ("failure",)  # type: ignore[attr-defined]
