"""Run and block-run statuses: the one place where they change.

Every transition goes through :class:`StatusBoard`: it checks the move is allowed (atomically, in
the database), stamps ``started_at``/``completed_at``, writes the row and tells whoever
watches that run (``?wait``, cancel) instead of making them poll the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .records import BlockRunRecord, RunPlan, RunRecord
from .statuses import BLOCK_FINISHED, RUN_FINISHED, BlockRunStatus, RunStatus
from .storage import Store, utcnow

#: For each target status, the statuses a run may come from.
RUN_TRANSITIONS: dict[RunStatus, tuple[RunStatus, ...]] = {
    RunStatus.RUNNING: (RunStatus.INITIAL,),
    RunStatus.COMPLETED: (RunStatus.RUNNING,),
    RunStatus.FAILED: (RunStatus.INITIAL, RunStatus.RUNNING),
    RunStatus.CANCELLED: (RunStatus.INITIAL, RunStatus.RUNNING),
    # "retry_blocks" puts a finished run back in the queue.
    RunStatus.INITIAL: (RunStatus.FAILED, RunStatus.CANCELLED),
}

#: For each target status, the statuses a block run may come from.
BLOCK_TRANSITIONS: dict[BlockRunStatus, tuple[BlockRunStatus, ...]] = {
    BlockRunStatus.QUEUED: (BlockRunStatus.INITIAL,),
    BlockRunStatus.RUNNING: (BlockRunStatus.INITIAL, BlockRunStatus.QUEUED),
    BlockRunStatus.COMPLETED: (BlockRunStatus.RUNNING,),
    BlockRunStatus.FAILED: (BlockRunStatus.INITIAL, BlockRunStatus.QUEUED, BlockRunStatus.RUNNING),
    BlockRunStatus.CANCELLED: (
        BlockRunStatus.INITIAL,
        BlockRunStatus.QUEUED,
        BlockRunStatus.RUNNING,
    ),
    BlockRunStatus.UPSTREAM_FAILED: (BlockRunStatus.INITIAL, BlockRunStatus.QUEUED),
    BlockRunStatus.CONDITION_FAILED: (BlockRunStatus.INITIAL, BlockRunStatus.QUEUED),
    # A retry runs a block again: whatever it ended as, it starts over.
    BlockRunStatus.INITIAL: BLOCK_FINISHED,
}


class StatusBoard:
    """Applies status transitions; resolves the watchers of runs that end.

    Parameters
    ----------
    store
        Where rows are written.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._watched: dict[int, set[asyncio.Future[RunRecord]]] = {}
        #: Called when a watch begins (the server's presence then looks at other servers).
        self.on_watch: Callable[[], None] | None = None

    async def claim_runs(self, limit: int) -> list[RunPlan]:
        """Claim up to ``limit`` queued runs (``initial`` → ``running``, atomically): their plans."""
        return await self.store.claim_runs(limit)

    async def run(
        self,
        run_id: int,
        status: RunStatus,
        only_from: tuple[RunStatus, ...] | None = None,
        **values: Any,
    ) -> RunRecord | None:
        """Move a run to ``status``; None if the move is not allowed from where it is (or, with
        ``only_from``, from a status outside those)."""
        values["status"] = status
        if status == RunStatus.RUNNING:
            values.setdefault("started_at", utcnow())
        elif status in RUN_FINISHED:
            values.setdefault("completed_at", utcnow())
        elif status == RunStatus.INITIAL:
            values.update(started_at=None, completed_at=None)
        final = status in RUN_FINISHED
        row = await self.store.transition_run(
            run_id,
            only_from or RUN_TRANSITIONS[status],
            values,
            with_blocks=final and run_id in self._watched,
        )
        if row is not None and final:
            self.resolve(row)
        return row

    def resolve(self, run: RunRecord) -> None:
        """Tell the watchers of a run that it ended (here, or on another server)."""
        for future in self._watched.get(run["id"], ()):
            if not future.done():
                future.set_result(run)

    def watched_ids(self) -> list[int]:
        """The runs someone waits for."""
        return list(self._watched)

    async def block(
        self, block_run_id: int, status: BlockRunStatus, logs: str = "", **values: Any
    ) -> BlockRunRecord | None:
        """Move a block run to ``status`` (appending ``logs``); None if not allowed."""
        return await self.store.transition_block_run(
            block_run_id, BLOCK_TRANSITIONS[status], _block_values(status, values), logs
        )

    async def blocks(
        self, changes: list[tuple[int, BlockRunStatus | None, str, dict[str, Any]]]
    ) -> list[bool]:
        """Several ``(block_run_id, status, logs, values)`` moves, in order, in one transaction.

        A ``status`` of None appends ``logs`` to a running block run without moving it (its
        live log).
        """
        return await self.store.transition_block_runs(
            [
                (block_run_id, [BlockRunStatus.RUNNING], values, logs)
                if status is None
                else (
                    block_run_id,
                    list(BLOCK_TRANSITIONS[status]),
                    _block_values(status, values),
                    logs,
                )
                for block_run_id, status, logs, values in changes
            ]
        )

    def watch(self, run_id: int) -> asyncio.Future[RunRecord]:
        """A future resolved with the run when it ends, block runs and outputs included (as
        ``GET api/pipeline_runs/{id}`` answers it); pair with :meth:`unwatch`."""
        future: asyncio.Future[RunRecord] = asyncio.get_running_loop().create_future()
        self._watched.setdefault(run_id, set()).add(future)
        if self.on_watch is not None:
            self.on_watch()
        return future

    def unwatch(self, run_id: int, future: asyncio.Future[RunRecord]) -> None:
        """Forget a future from :meth:`watch` (resolved or not)."""
        waiters = self._watched.get(run_id)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._watched[run_id]


def _block_values(status: BlockRunStatus, values: dict[str, Any]) -> dict[str, Any]:
    """The columns a block run's move to ``status`` writes, timestamps included."""
    values = {**values, "status": status}
    if status == BlockRunStatus.RUNNING:
        values.setdefault("started_at", utcnow())
        values.setdefault("completed_at", None)
    elif status in BLOCK_FINISHED:
        values.setdefault("completed_at", utcnow())
    elif status == BlockRunStatus.INITIAL:
        values.update(started_at=None, completed_at=None, metrics=None, outputs=None, logs="")
    return values
