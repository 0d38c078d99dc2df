"""A run's execute request: the plan in the metadata on a kernel with the run-time, a literal
in the cell elsewhere; never spliced into code either way."""

from __future__ import annotations

import json
import math

import pytest

from jupyter_mage.bootstrap import RUNTIME_DIGEST, run_request

PLAN = {"blocks": [{"uuid": "load"}], "variables": {"env": "'); import os; os._exit(1); ('"}}


def test_a_kernel_with_the_run_time_gets_one_constant_line_and_the_plan_as_metadata() -> None:
    request = run_request(PLAN, "pipelines", preloaded=True, elsewhere=True)
    assert request.code.count("\n") == 1
    assert "env" not in request.code and "pipelines" not in request.code
    assert request.code == run_request({"other": 1}, preloaded=True).code  # the same every run
    assert request.metadata == {
        "jupyter_mage": {
            "digest": RUNTIME_DIGEST,
            "plan": PLAN,
            "cwd": "pipelines",
            "elsewhere": True,
        }
    }


def test_a_kernel_without_it_gets_the_plan_as_a_literal_in_the_cell() -> None:
    request = run_request(PLAN, "pipelines")
    assert request.metadata is None
    literal = repr(json.dumps(PLAN, allow_nan=False))
    assert literal in request.code  # inert: the repr of a str, decoded by json.loads
    compile(request.code, "<run>", "exec")


@pytest.mark.parametrize("preloaded", [True, False])
def test_nan_is_refused_before_anything_is_sent(preloaded: bool) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        run_request({"variables": {"x": math.nan}}, preloaded=preloaded)
