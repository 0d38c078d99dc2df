"""Admission of a trigger call: a pure function of (trigger row, pipeline, request)."""

from __future__ import annotations

from typing import Any

import pytest
from nbformat.v4 import new_notebook

from jupyter_mage.pipeline import Pipeline, parse_notebook
from jupyter_mage.runs import TriggerCall, admit
from jupyter_mage.validation import ApiError

from ..conftest import block_cell


def _pipeline(uuid: str = "p") -> Pipeline:
    nb = new_notebook()
    nb.cells = [
        block_cell("@data_loader\ndef load():\n    return 1\n", "data_loader"),
        block_cell("@data_exporter\ndef export(x):\n    pass\n", "data_exporter"),
    ]
    return parse_notebook(uuid, f"{uuid}.ipynb", nb)


def _trigger(**changes: Any) -> dict[str, Any]:
    trigger = {
        "id": 7,
        "name": "api",
        "pipeline_uuid": "p",
        "schedule_type": "api",
        "status": "active",
        "variables": {"env": "dev"},
        "settings": {},
        "token": "t" * 32,
    }
    return {**trigger, **changes}


def _call(**changes: Any) -> TriggerCall:
    values: dict[str, Any] = {
        "trigger_id": 7,
        "variables": {"env": "staging"},
        "execution_date": None,
        "event_variables": {},
    }
    return TriggerCall(**{**values, **changes})


def _refusal(*args: Any) -> tuple[int, str]:
    with pytest.raises(ApiError) as refused:
        admit(*args)
    return refused.value.status_code, refused.value.error_type


def test_an_active_trigger_inserts_its_run_and_blocks() -> None:
    args = admit(_call(idempotency_key="k1"), _trigger(), _pipeline(), True)
    values = args["values"]
    assert values["pipeline_schedule_id"] == 7
    assert values["variables"] == {"env": "staging"}
    assert values["trigger_variables"] == {"env": "dev"}
    assert values["idempotency_key"] == "k1"
    assert values["execution_date"] is not None
    assert args["block_uuids"] == ["load", "export"]
    assert args["start"] is True
    assert args["skip_if_active"] is None


def test_refusals_in_order_and_nothing_before_the_check() -> None:
    def wrong_token(trigger: dict[str, Any]) -> None:
        raise ApiError(403, "invalid_token", "invalid token for this trigger")

    assert _refusal(_call(), None, _pipeline(), True) == (404, "not_found")
    # The token check comes first: a wrong token learns nothing of the status or the notebook.
    inactive = _trigger(status="inactive")
    assert _refusal(_call(check=wrong_token), inactive, None, True) == (403, "invalid_token")
    assert _refusal(_call(), inactive, _pipeline(), True) == (409, "trigger_inactive")
    assert _refusal(_call(), _trigger(), None, True) == (404, "not_found")
    # A pipeline loaded for another uuid is never taken for the trigger's.
    assert _refusal(_call(), _trigger(), _pipeline("other"), True) == (404, "not_found")


def test_trigger_limits_queue_or_skip() -> None:
    limited = _trigger(settings={"pipeline_run_limit": 2})
    assert admit(_call(), limited, _pipeline(), True)["start"] is False
    skipping = _trigger(settings={"pipeline_run_limit": 2, "pipeline_run_limit_action": "skip"})
    assert admit(_call(), skipping, _pipeline(), False)["skip_if_active"] == 2
    previous = _trigger(settings={"skip_if_previous_running": True})
    assert admit(_call(), previous, _pipeline(), True)["skip_if_active"] == 1
