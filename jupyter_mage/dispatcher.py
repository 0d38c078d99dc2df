"""The dispatcher: claims queued runs from the database, within the concurrency limit.

The queue is the database: an accepted run is an ``initial`` row, and this loop claims rows as
slots free up. A new run wakes the loop at once (no polling delay); a slow fallback tick picks up
rows written by other servers sharing the same database.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .engine import KernelEngine
from .records import RunPlan
from .state import StatusBoard
from .statuses import RunStatus
from .storage import DatabaseUnavailable


class Dispatcher:
    """Starts runs as slots free up.

    Parameters
    ----------
    board
        Claims runs (``initial`` → ``running``) and records failures.
    engine
        Executes a claimed run.
    max_concurrent_runs
        How many runs this server executes at once.
    poll_interval
        Seconds between fallback checks of the queue.
    """

    def __init__(
        self,
        board: StatusBoard,
        engine: KernelEngine,
        max_concurrent_runs: int,
        poll_interval: float,
        log: logging.Logger,
    ) -> None:
        self.board = board
        self.engine = engine
        self.max_concurrent_runs = max_concurrent_runs
        self.poll_interval = poll_interval
        self.log = log
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._reserved = 0  # slots promised to runs a request is committing (see reserve)
        self._open = False  # runs start only after the start-up recovery (see open)
        self._stopping = False

    @property
    def running_count(self) -> int:
        """Runs this server is executing now."""
        return len(self._running)

    @property
    def is_open(self) -> bool:
        """Runs may start (the start-up recovery is done)."""
        return self._open

    def open(self) -> None:
        """Let runs start: called once the start-up recovery is done (it fails the runs a
        stopped server left ``running``, and must not see runs started since)."""
        self._open = True

    def wake(self) -> None:
        """A run was queued or a slot freed: look at the queue now."""
        if self._stopping or not self._open:
            return
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.ensure_future(self._loop())
        self._wakeup.set()

    def reserve(self) -> bool:
        """Hold a free slot for a run the caller commits already ``running`` (then :meth:`start`).

        A run accepted while a slot is free starts without waiting for the loop to claim it.
        """
        busy = len(self._running) + self._reserved >= self.max_concurrent_runs
        if self._stopping or not self._open or busy:
            return False
        self._reserved += 1
        return True

    def start(self, plan: RunPlan | None) -> None:
        """Execute a run committed ``running`` on a reserved slot; None releases the slot."""
        self._reserved -= 1
        if plan is None:
            self.wake()  # the slot is free again
            return
        self._launch(plan)

    async def stop(self) -> None:
        """Stop claiming; stop active runs (their kernels are shut down)."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        await self.engine.shutdown()
        if self._running:
            await asyncio.wait(self._running, timeout=15)

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_interval)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()
            free = self.max_concurrent_runs - len(self._running) - self._reserved
            if free <= 0:  # a finishing run wakes the loop again
                continue
            try:
                for plan in await self.board.claim_runs(free):
                    self._launch(plan)
            except asyncio.CancelledError:
                raise
            except DatabaseUnavailable as exc:  # try again next tick
                self.log.warning("jupyter-mage: claiming runs waits for the database: %s", exc)
            except Exception:
                self.log.exception("claiming runs failed")

    def _launch(self, plan: RunPlan) -> None:
        self._running.add(asyncio.ensure_future(self._execute(plan)))

    async def _execute(self, plan: RunPlan) -> None:
        run_id = plan["id"]
        try:
            await self.engine.execute(plan)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # An engine bug must not leave an accepted run "running" forever.
            self.log.exception("run %s failed in the engine", run_id)
            await self._fail(run_id, f"internal error: {type(exc).__name__}")
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._running.discard(task)
            self.wake()

    async def _fail(self, run_id: int, reason: str) -> Any:
        try:
            return await self.board.run(run_id, RunStatus.FAILED, metrics={"error": reason})
        except Exception:
            self.log.exception("could not record failure of run %s", run_id)
            return None
