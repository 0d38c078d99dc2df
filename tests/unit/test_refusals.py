"""The in-memory log of refused trigger calls stays bounded and shows the newest first."""

from __future__ import annotations

from jupyter_mage import refusals
from jupyter_mage.refusals import RefusalLog
from jupyter_mage.validation import ApiError


def test_each_trigger_keeps_its_last_refusals_newest_first() -> None:
    log = RefusalLog()
    for i in range(refusals.PER_TRIGGER + 5):
        log.note(1, ApiError(403, "invalid_token", f"call {i}"))
    shown = log.recent(1)
    assert len(shown) == refusals.PER_TRIGGER
    assert shown[0]["reason"] == f"call {refusals.PER_TRIGGER + 4}"
    assert shown[-1]["reason"] == "call 5"
    assert log.recent(2) == []
    log.forget(1)
    assert log.recent(1) == []


def test_the_trigger_refused_longest_ago_is_forgotten_first() -> None:
    log = RefusalLog()
    for trigger_id in range(refusals.TRIGGERS):
        log.note(trigger_id, ApiError(409, "trigger_inactive", "inactive"))
    log.note(0, ApiError(409, "trigger_inactive", "again"))  # 0 is now the newest
    log.note(refusals.TRIGGERS, ApiError(400, "invalid_body", "bad"))
    assert log.recent(0)[0]["reason"] == "again"
    assert log.recent(1) == []  # the oldest went
    assert log.recent(refusals.TRIGGERS)[0]["status"] == 400
