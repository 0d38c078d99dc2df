"""Retention: remove old finished runs (with their block runs and logs) and executed notebooks.

Everything is kept forever unless a setting says otherwise (``c.RetentionPolicy.runs_days = 30``).
Each setting is a bound of its own: a run goes as soon as one of them says so (as Jenkins's
"days to keep" and "max # of builds to keep"). Only finished runs (``completed``, ``failed``,
``cancelled``) are ever removed; a run that waits or runs is never touched and does not count
towards a "last N". A sweep runs every ``interval`` seconds: its SQL runs in the store's database
thread in batches of ``batch_size`` runs (one transaction each, so a backlog never holds the
database long), its file deletions in a worker thread, so the event loop never waits on either.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from traitlets import Float, Int
from traitlets.config import LoggingConfigurable

from .storage import Store, utcnow

#: Seconds from start to the first sweep (or ``interval``, if shorter): the server's start-up
#: (recovery, warm kernels) goes first.
FIRST_SWEEP_DELAY = 60.0


@dataclass
class SweepResult:
    """What one :meth:`RetentionPolicy.sweep` removed."""

    #: Runs deleted, with their block runs (and logs).
    runs: list[int] = field(default_factory=list)
    block_runs: int = 0
    #: Runs kept whose executed notebook was removed (``executed_notebook`` is now null).
    notebooks: list[int] = field(default_factory=list)
    #: Executed-notebook files deleted (of both kinds of run).
    files: int = 0


class RetentionPolicy(LoggingConfigurable):
    """How long runs and executed notebooks are kept; 0 in any setting means forever.

    Parameters
    ----------
    store
        The run store.
    root
        The server's root dir (executed notebooks are recorded relative to it).
    runs_path
        The engine's folder of executed notebooks: no file outside it is ever deleted.
    """

    runs_days = Float(
        0.0,
        min=0.0,
        help=(
            "Days a finished run (completed, failed, cancelled) is kept after it ended, with its "
            "block runs and logs. 0: forever. Runs waiting or running are never removed."
        ),
    ).tag(config=True)

    runs_per_trigger = Int(
        0,
        min=0,
        help=(
            "Finished runs kept per trigger (the newest); older ones are removed with their "
            "block runs and logs. Runs without a trigger count as one more trigger. 0: all."
        ),
    ).tag(config=True)

    notebooks_days = Float(
        0.0,
        min=0.0,
        help=(
            "Days an executed notebook (mage_runs/<pipeline>/run_<id>.ipynb) is kept after its "
            "run ended; the run itself stays, with executed_notebook null. 0: forever."
        ),
    ).tag(config=True)

    notebooks_per_trigger = Int(
        0,
        min=0,
        help=(
            "Executed notebooks kept per trigger (those of its newest finished runs); older "
            "runs stay, with executed_notebook null. 0: all."
        ),
    ).tag(config=True)

    interval = Float(
        3600.0,
        min=0.0,
        help=(
            "Seconds between retention sweeps; the first comes a minute after start. 0: no "
            "periodic sweep. Nothing is swept while every other setting is 0."
        ),
    ).tag(config=True)

    batch_size = Int(
        500,
        min=1,
        help="Runs removed per database transaction, so a backlog never holds the database long.",
    ).tag(config=True)

    def __init__(self, *, store: Store, root: Path, runs_path: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.root = Path(root)
        self.runs_path = Path(runs_path)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        """Whether any setting removes anything."""
        return any(
            (self.runs_days, self.runs_per_trigger, self.notebooks_days, self.notebooks_per_trigger)
        )

    def start(self) -> None:
        """Start the periodic sweep (a no-op if everything is kept forever, or already started)."""
        if self._task is None and self.active and self.interval > 0:
            self._task = asyncio.create_task(self._every_interval(), name="jupyter-mage-retention")

    async def stop(self) -> None:
        """Stop the periodic sweep and wait for it; a batch already in the database thread ends
        there (the store's close waits for it)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every_interval(self) -> None:
        delay = min(FIRST_SWEEP_DELAY, self.interval)
        while True:
            await asyncio.sleep(delay)
            delay = self.interval
            try:
                await self.sweep()
            except Exception as exc:  # a failed sweep is tried again; never the server's end
                self.log.warning(
                    "jupyter-mage: retention sweep failed, next try in %g s: %s",
                    delay,
                    exc,
                    exc_info=True,
                )

    async def sweep(self) -> SweepResult:
        """Remove what the settings say is past its time, now; returns what went."""
        async with self._lock:  # the periodic task and a direct call never overlap
            result = SweepResult()
            if self.runs_days or self.runs_per_trigger:
                await self._apply(result, self.runs_days, self.runs_per_trigger, notebooks=False)
            if self.notebooks_days or self.notebooks_per_trigger:
                await self._apply(
                    result, self.notebooks_days, self.notebooks_per_trigger, notebooks=True
                )
            self.log.info(
                "jupyter-mage: retention removed %d run(s) with %d block run(s), and the "
                "executed notebooks of %d kept run(s); %d file(s) deleted",
                len(result.runs),
                result.block_runs,
                len(result.notebooks),
                result.files,
            )
            return result

    async def _apply(
        self, result: SweepResult, days: float, per_trigger: int, notebooks: bool
    ) -> None:
        """One kind of rule (runs, or notebooks): the days bound, then the per-trigger bound."""
        limit = self.batch_size
        if days:
            before = utcnow() - timedelta(days=days)
            after: int | None = 0
            while after is not None:
                ids, blocks, paths, after = await self.store.purge_runs_finished_before(
                    before, after, limit, notebooks
                )
                await self._record(result, ids, blocks, paths, notebooks=notebooks)
        if per_trigger:
            for trigger_id, oldest_kept in await self.store.retention_cutoffs(
                per_trigger, notebooks
            ):
                while True:
                    ids, blocks, paths = await self.store.purge_runs_beyond(
                        trigger_id, oldest_kept, limit, notebooks
                    )
                    if not ids:
                        break
                    await self._record(result, ids, blocks, paths, notebooks=notebooks)

    async def _record(
        self, result: SweepResult, ids: list[int], blocks: int, paths: list[str], notebooks: bool
    ) -> None:
        # Rows first, files second: a file left by a failed deletion is only a leftover, while
        # a row naming a deleted file would be a false record.
        (result.notebooks if notebooks else result.runs).extend(ids)
        result.block_runs += blocks
        if paths:
            result.files += await asyncio.to_thread(self._delete_files, paths)

    def _delete_files(self, paths: list[str]) -> int:
        """Delete executed notebooks, only inside the runs folder; how many were deleted."""
        folder = self.runs_path.resolve()
        deleted = 0
        for recorded in paths:
            path = Path(recorded)
            target = (path if path.is_absolute() else self.root / path).resolve()
            if not target.is_relative_to(folder) or target == folder:
                self.log.warning(
                    "jupyter-mage: retention left %s in place: not inside %s", recorded, folder
                )
                continue
            try:
                if target.is_file():
                    target.unlink()
                    deleted += 1
            except OSError as exc:
                self.log.warning("jupyter-mage: retention could not delete %s: %s", recorded, exc)
        return deleted
