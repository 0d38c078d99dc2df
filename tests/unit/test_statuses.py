"""The statuses are defined once in Python; the labextension's copies must say the same."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import pytest

from jupyter_mage.state import BLOCK_TRANSITIONS, RUN_TRANSITIONS
from jupyter_mage.statuses import (
    BLOCK_FINISHED,
    RUN_FINISHED,
    BlockRunStatus,
    RunStatus,
    TriggerStatus,
)

API_TS = Path(__file__).parents[2] / "labextension" / "src" / "api.ts"


def ts_array(name: str) -> list[str]:
    """The strings of ``export const NAME ... = [...]`` in api.ts, spreads of others resolved."""
    source = API_TS.read_text(encoding="utf-8")
    found = re.search(rf"export const {name}\b[^=]*=\s*\[(.*?)\]", source, re.DOTALL)
    assert found is not None, f"{name} is not defined in {API_TS}"
    items: list[str] = []
    for item in (part.strip() for part in found.group(1).split(",")):
        if item.startswith("..."):
            items += ts_array(item[3:])
        elif item:
            assert re.fullmatch(r"'[a-z_]+'", item), f"{name}: unexpected item {item!r}"
            items.append(item.strip("'"))
    return items


@pytest.mark.parametrize(
    ("ts_name", "python"),
    [
        ("RUN_STATUSES", list(RunStatus)),
        ("BLOCK_RUN_STATUSES", list(BlockRunStatus)),
        ("TRIGGER_STATUSES", list(TriggerStatus)),
        ("FINAL_RUN_STATUSES", list(RUN_FINISHED)),
        ("FINAL_BLOCK_STATUSES", list(BLOCK_FINISHED)),
    ],
)
def test_labextension_statuses_match_python(ts_name: str, python: list[StrEnum]) -> None:
    assert ts_array(ts_name) == [status.value for status in python]


def test_every_status_has_its_transitions() -> None:
    assert set(RUN_TRANSITIONS) == set(RunStatus)
    assert set(BLOCK_TRANSITIONS) == set(BlockRunStatus)
    # A finished run or block run only leaves its status through a retry (back to initial).
    for target, sources in RUN_TRANSITIONS.items():
        if target != RunStatus.INITIAL:
            assert not set(sources) & set(RUN_FINISHED), target
    for block_target, block_sources in BLOCK_TRANSITIONS.items():
        if block_target != BlockRunStatus.INITIAL:
            assert not set(block_sources) & set(BLOCK_FINISHED), block_target


def test_statuses_are_the_api_strings() -> None:
    assert RunStatus.COMPLETED == "completed"
    assert f"{BlockRunStatus.UPSTREAM_FAILED}" == "upstream_failed"
    assert set(RUN_FINISHED) < set(BLOCK_FINISHED)
