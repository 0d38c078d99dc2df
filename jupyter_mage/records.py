"""The records that cross modules: triggers, runs, block runs, and a run's plan.

They are the API's JSON objects (Mage's field names, as :mod:`jupyter_mage.storage.views`
builds them from rows), typed so that the store, the run service, the dispatcher and the
engine agree on them. Timestamps are strings as Mage writes them; statuses are the strings of
:mod:`jupyter_mage.statuses`.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class TriggerRecord(TypedDict):
    """A trigger (Mage's pipeline schedule) as authenticated users see it, token included."""

    id: int
    name: str
    description: str | None
    pipeline_uuid: str
    schedule_type: str
    schedule_interval: str | None
    start_time: str | None
    status: str
    last_enabled_at: str | None
    variables: dict[str, Any]
    sla: int | None
    settings: dict[str, Any]
    token: str
    created_at: str | None
    updated_at: str | None
    last_pipeline_run_status: str | None
    pipeline_runs_count: int
    #: Calls this server refused lately (see :mod:`jupyter_mage.refusals`), newest first.
    recent_refusals: NotRequired[list[Any]]


class BlockRunRecord(TypedDict):
    """A block run; its logs and outputs only where a route shows them."""

    id: int
    pipeline_run_id: int
    block_uuid: str
    status: str
    started_at: str | None
    completed_at: str | None
    created_at: str | None
    updated_at: str | None
    metrics: dict[str, Any]
    logs: NotRequired[str]
    outputs: NotRequired[list[Any]]


class RunRecord(TypedDict):
    """A pipeline run, with the trigger's name and the executed notebook."""

    id: int
    pipeline_schedule_id: int | None
    pipeline_schedule_name: str | None
    pipeline_uuid: str
    execution_date: str
    status: str
    started_at: str | None
    completed_at: str | None
    variables: dict[str, Any]
    event_variables: dict[str, Any] | None
    passed_sla: bool | None
    metrics: dict[str, Any] | None
    backfill_id: int | None
    executor_type: str | None
    executed_notebook: str | None
    created_at: str | None
    updated_at: str | None
    block_runs: NotRequired[list[BlockRunRecord]]
    block_runs_count: NotRequired[int]
    completed_block_runs_count: NotRequired[int]


class RunPlan(RunRecord):
    """Everything the engine needs to execute a claimed run, private columns included: the
    trigger's variables and settings as they were when the run was accepted."""

    trigger_variables: dict[str, Any]
    trigger_settings: dict[str, Any]
