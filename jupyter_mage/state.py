"""Run and block-run statuses: the one place where they change.

Every transition goes through :class:`StatusBoard`: it checks the move is allowed (atomically, in
the database), stamps ``started_at``/``completed_at``, writes the row and tells listeners.
Listeners (``?wait``, the UI, callbacks) react to these events instead of polling the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .storage import BLOCK_FINISHED, RUN_FINISHED, Store, utcnow

#: For each target status, the statuses a run may come from.
RUN_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "running": ("initial",),
    "completed": ("running",),
    "failed": ("initial", "running"),
    "cancelled": ("initial", "running"),
    # "retry_blocks" puts a finished run back in the queue.
    "initial": ("failed", "cancelled"),
}

#: For each target status, the statuses a block run may come from.
BLOCK_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "queued": ("initial",),
    "running": ("initial", "queued"),
    "completed": ("running",),
    "failed": ("initial", "queued", "running"),
    "cancelled": ("initial", "queued", "running"),
    "upstream_failed": ("initial", "queued"),
    "condition_failed": ("initial", "queued"),
    # A retry runs a block again: whatever it ended as, it starts over.
    "initial": BLOCK_FINISHED,
}


class StatusBoard:
    """Applies status transitions and publishes them.

    Parameters
    ----------
    store
        Where rows are written.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()

    async def claim_runs(self, limit: int) -> list[int]:
        """Claim up to ``limit`` queued runs (``initial`` → ``running``) and announce them."""
        ids = await self.store.claim_runs(limit)
        for run_id in ids:
            self._publish({"kind": "pipeline_run", "id": run_id, "status": "running"})
        return ids

    async def run(self, run_id: int, status: str, **values: Any) -> dict[str, Any] | None:
        """Move a run to ``status``; None if the move is not allowed from where it is."""
        values["status"] = status
        if status == "running":
            values.setdefault("started_at", utcnow())
        elif status in RUN_FINISHED:
            values.setdefault("completed_at", utcnow())
        elif status == "initial":
            values.update(started_at=None, completed_at=None)
        row = await self.store.transition_run(run_id, RUN_TRANSITIONS[status], values)
        if row is not None:
            self._publish({"kind": "pipeline_run", "id": run_id, "status": status, "run": row})
        return row

    async def block(
        self, block_run_id: int, status: str, logs: str = "", **values: Any
    ) -> dict[str, Any] | None:
        """Move a block run to ``status`` (appending ``logs``); None if not allowed."""
        values["status"] = status
        if status == "running":
            values.setdefault("started_at", utcnow())
            values.setdefault("completed_at", None)
        elif status in BLOCK_FINISHED:
            values.setdefault("completed_at", utcnow())
        elif status == "initial":
            values.update(started_at=None, completed_at=None, metrics=None, outputs=None, logs="")
        row = await self.store.transition_block_run(
            block_run_id, BLOCK_TRANSITIONS[status], values, logs
        )
        if row is not None:
            self._publish(
                {
                    "kind": "block_run",
                    "id": block_run_id,
                    "pipeline_run_id": row["pipeline_run_id"],
                    "status": status,
                }
            )
        return row

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """A queue receiving every event published while the context is open."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)

    def _publish(self, event: dict[str, Any]) -> None:
        for queue in self._listeners:
            queue.put_nowait(event)
