"""The trigger calls a server refused lately: what a user sees of a caller's failed attempts.

A refused call (403 wrong token, 409 inactive or skipped, 400 bad body, 422 invalid pipeline)
writes nothing to the database: a flood of bad calls must not become a flood of writes. So
each server keeps the last few refusals of each trigger in memory, bounded in triggers and in
entries, and shows them with the trigger. They are what this server saw since it started.
Never the token: a refusal keeps its time, HTTP status, error type and message, and messages
never carry tokens (see :mod:`jupyter_mage.validation`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TypedDict

from .storage import utcnow
from .validation import ApiError

#: Refusals kept per trigger, newest first when shown.
PER_TRIGGER = 10
#: Triggers remembered; the one refused longest ago is forgotten first (also bounds the
#: memory a caller can fill by calling ids that do not exist).
TRIGGERS = 1000


class Refusal(TypedDict):
    """One refused call, as ``recent_refusals`` of a trigger shows it."""

    time: str
    status: int
    type: str
    reason: str


class RefusalLog:
    """The last :data:`PER_TRIGGER` refusals of up to :data:`TRIGGERS` triggers."""

    def __init__(self) -> None:
        self._by_trigger: OrderedDict[int, deque[Refusal]] = OrderedDict()

    def note(self, trigger_id: int, error: ApiError) -> None:
        """Remember that a call on ``trigger_id`` was refused with ``error``."""
        entries = self._by_trigger.get(trigger_id)
        if entries is None:
            entries = self._by_trigger[trigger_id] = deque(maxlen=PER_TRIGGER)
            if len(self._by_trigger) > TRIGGERS:
                self._by_trigger.popitem(last=False)
        else:
            self._by_trigger.move_to_end(trigger_id)
        entries.append(
            {
                "time": utcnow().isoformat(),
                "status": error.status_code,
                "type": error.error_type,
                "reason": error.message[:500],
            }
        )

    def recent(self, trigger_id: int) -> list[Refusal]:
        """The trigger's remembered refusals, newest first."""
        return list(reversed(self._by_trigger.get(trigger_id, ())))

    def forget(self, trigger_id: int) -> None:
        """A deleted trigger's refusals go with it."""
        self._by_trigger.pop(trigger_id, None)
