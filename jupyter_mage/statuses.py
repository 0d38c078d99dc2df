"""The statuses of runs, block runs and triggers: Mage's words, defined once.

They are :class:`~enum.StrEnum` members, so they are the very strings the API and the database
hold (``RunStatus.COMPLETED == "completed"``). The labextension's copies
(``labextension/src/api.ts``) are checked against these by ``tests/unit/test_statuses.py``.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A pipeline run's status (Mage's ``PipelineRun.PipelineRunStatus``)."""

    INITIAL = "initial"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BlockRunStatus(StrEnum):
    """A block run's status (Mage's ``BlockRun.BlockRunStatus``)."""

    INITIAL = "initial"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"
    CONDITION_FAILED = "condition_failed"


class TriggerStatus(StrEnum):
    """A trigger's status (Mage's ``ScheduleStatus``)."""

    ACTIVE = "active"
    INACTIVE = "inactive"


#: Run statuses after which nothing changes (but ``retry_blocks`` of a failed or cancelled run).
RUN_FINISHED: tuple[RunStatus, ...] = (
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
)
#: Block-run statuses after which nothing changes (but a retry).
BLOCK_FINISHED: tuple[BlockRunStatus, ...] = (
    BlockRunStatus.COMPLETED,
    BlockRunStatus.FAILED,
    BlockRunStatus.CANCELLED,
    BlockRunStatus.UPSTREAM_FAILED,
    BlockRunStatus.CONDITION_FAILED,
)
