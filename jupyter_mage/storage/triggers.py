"""Triggers (Mage's pipeline schedules): create, read, list, update, delete."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    bindparam,
    func,
    select,
)
from sqlalchemy.orm import Session

from ..records import TriggerRecord
from ..statuses import TriggerStatus
from .database import Database, reads, writes
from .schema import RUNS, TRIGGERS, Trigger, new_token, utcnow
from .views import trigger_to_dict

#: A trigger by id, as a plain row (every trigger call reads one: built once).
_TRIGGER_BY_ID = select(TRIGGERS).where(TRIGGERS.c.id == bindparam("id"))
_OF_TRIGGER = RUNS.c.pipeline_schedule_id == TRIGGERS.c.id
#: Each trigger's run count and its newest run's status. Correlated per trigger, so each is an
#: index lookup (the newest run: one entry; a GROUP BY would read every run's entry twice).
_RUN_STATS = select(
    TRIGGERS.c.id,
    select(func.count()).where(_OF_TRIGGER).correlate(TRIGGERS).scalar_subquery().label("runs"),
    select(RUNS.c.status)
    .where(_OF_TRIGGER)
    .order_by(RUNS.c.id.desc())
    .limit(1)
    .correlate(TRIGGERS)
    .scalar_subquery()
    .label("last_status"),
).where(TRIGGERS.c.id.in_(bindparam("ids", expanding=True)))
_PIPELINE_OF_TRIGGER = select(TRIGGERS.c.pipeline_uuid).where(TRIGGERS.c.id == bindparam("id"))


class TriggerStore(Database):
    """Triggers, with the statistics of their runs."""

    # -- triggers ----------------------------------------------------------------------------

    @writes
    def create_trigger(self, values: dict[str, Any]) -> TriggerRecord:
        """Insert a trigger; ``values`` are already validated column values."""
        with self._sessions.begin() as s:
            trigger = Trigger(**values)
            if values.get("status", TriggerStatus.ACTIVE) == TriggerStatus.ACTIVE:
                trigger.last_enabled_at = utcnow()
            s.add(trigger)
            s.flush()
            return trigger_to_dict(trigger)

    @reads
    def get_trigger(self, trigger_id: int) -> TriggerRecord | None:
        """One trigger with its run count and last run status, or None."""
        with self._sessions() as s:
            trigger = self._read_trigger(s, trigger_id)
            if trigger is not None:
                count, last = self._run_stats(s, [trigger_id])[trigger_id]
                trigger["pipeline_runs_count"], trigger["last_pipeline_run_status"] = count, last
            return trigger

    @reads
    def pipeline_of_trigger(self, trigger_id: int) -> str | None:
        """The pipeline a trigger runs (it never changes), or None if there is no such trigger."""
        with self._sessions() as s:
            uuid: str | None = (
                s.connection().execute(_PIPELINE_OF_TRIGGER, {"id": trigger_id}).scalar()
            )
            return uuid

    @staticmethod
    def _read_trigger(s: Session, trigger_id: int) -> TriggerRecord | None:
        """The trigger without its run statistics (a plain row: trigger calls read it)."""
        row = s.connection().execute(_TRIGGER_BY_ID, {"id": trigger_id}).first()
        return trigger_to_dict(row) if row is not None else None

    @reads
    def list_triggers(self, pipeline_uuid: str | None = None) -> list[TriggerRecord]:
        """Triggers, newest first, optionally of one pipeline."""
        with self._sessions() as s:
            query = select(Trigger).order_by(Trigger.id.desc())
            if pipeline_uuid is not None:
                query = query.where(Trigger.pipeline_uuid == pipeline_uuid)
            triggers = list(s.scalars(query))
            stats = self._run_stats(s, [t.id for t in triggers])
            return [trigger_to_dict(t, *stats.get(t.id, (0, None))) for t in triggers]

    @staticmethod
    def _run_stats(s: Session, ids: list[int]) -> dict[int, tuple[int, str | None]]:
        if not ids:
            return {}
        rows = s.connection().execute(_RUN_STATS, {"ids": ids}).all()
        found = {row.id: (int(row.runs), row.last_status) for row in rows}
        return {i: found.get(i, (0, None)) for i in ids}

    @writes
    def update_trigger(
        self, trigger_id: int, values: dict[str, Any], rotate_token: bool = False
    ) -> TriggerRecord | None:
        """Update columns (and maybe the token) of a trigger; None if it does not exist."""
        with self._sessions.begin() as s:
            trigger = s.get(Trigger, trigger_id)
            if trigger is None:
                return None
            if (
                values.get("status") == TriggerStatus.ACTIVE
                and trigger.status != TriggerStatus.ACTIVE
            ):
                trigger.last_enabled_at = utcnow()
            for key, value in values.items():
                setattr(trigger, key, value)
            if rotate_token:
                trigger.token = new_token()
            trigger.updated_at = utcnow()
            s.flush()
            stats = self._run_stats(s, [trigger_id])
            return trigger_to_dict(trigger, *stats.get(trigger_id, (0, None)))

    @writes
    def delete_trigger(self, trigger_id: int) -> TriggerRecord | None:
        """Delete a trigger (its runs stay); returns what was deleted, or None."""
        with self._sessions.begin() as s:
            trigger = s.get(Trigger, trigger_id)
            if trigger is None:
                return None
            gone = trigger_to_dict(trigger)
            s.delete(trigger)
            return gone
