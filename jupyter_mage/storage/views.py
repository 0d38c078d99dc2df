"""Rows as the API shows them, in Mage's field names."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, overload

from sqlalchemy.engine import Row

from ..records import BlockRunRecord, RunRecord, TriggerRecord
from .schema import BlockRun, Run, Trigger


@overload
def format_time(value: datetime) -> str: ...
@overload
def format_time(value: datetime | None) -> str | None: ...
def format_time(value: datetime | None) -> str | None:
    """A timestamp as Mage writes it: ``YYYY-MM-DD HH:MM:SS.ffffff+00:00``."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")


# -- dict views, in Mage's field names -------------------------------------------------------


def trigger_to_dict(
    t: Trigger | Row[Any], runs_count: int = 0, last_status: str | None = None
) -> TriggerRecord:
    """A trigger as the API shows it to authenticated users (token included)."""
    return {
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "pipeline_uuid": t.pipeline_uuid,
        "schedule_type": t.schedule_type,
        "schedule_interval": t.schedule_interval,
        "start_time": format_time(t.start_time),
        "status": t.status,
        "last_enabled_at": format_time(t.last_enabled_at),
        "variables": t.variables or {},
        "sla": t.sla,
        "settings": t.settings or {},
        "token": t.token,
        "created_at": format_time(t.created_at),
        "updated_at": format_time(t.updated_at),
        "last_pipeline_run_status": last_status,
        "pipeline_runs_count": runs_count,
    }


def run_to_dict(r: Run) -> RunRecord:
    """A run with Mage's columns, plus the trigger's name and the executed notebook."""
    return {
        "id": r.id,
        "pipeline_schedule_id": r.pipeline_schedule_id,
        "pipeline_schedule_name": r.trigger_name,
        "pipeline_uuid": r.pipeline_uuid,
        "execution_date": format_time(r.execution_date),
        "status": r.status,
        "started_at": format_time(r.started_at),
        "completed_at": format_time(r.completed_at),
        "variables": r.variables or {},
        "event_variables": r.event_variables,
        "passed_sla": r.passed_sla,
        "metrics": r.metrics,
        "backfill_id": r.backfill_id,
        "executor_type": r.executor_type,
        "executed_notebook": r.executed_notebook,
        "created_at": format_time(r.created_at),
        "updated_at": format_time(r.updated_at),
    }


def block_run_to_dict(b: BlockRun) -> BlockRunRecord:
    """A block run with Mage's fields (logs and outputs have their own routes)."""
    return {
        "id": b.id,
        "pipeline_run_id": b.pipeline_run_id,
        "block_uuid": b.block_uuid,
        "status": b.status,
        "started_at": format_time(b.started_at),
        "completed_at": format_time(b.completed_at),
        "created_at": format_time(b.created_at),
        "updated_at": format_time(b.updated_at),
        "metrics": b.metrics or {},
    }
