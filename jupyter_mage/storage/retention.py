"""The SQL of :class:`jupyter_mage.retention.RetentionPolicy`, and reading runs by id."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    select,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from ..statuses import RUN_FINISHED
from .database import writes
from .runs import RunStore
from .schema import BLOCK_RUNS, RUNS, Run, utcnow


class RetentionStore(RunStore):
    """Removing old runs and executed notebooks, in bounded batches."""

    # -- retention ---------------------------------------------------------------------------
    # The SQL of ``retention.RetentionPolicy``, and reading runs by id. Every batch is its own
    # transaction of at most ``limit`` runs, so a big backlog never holds the database long;
    # only finished runs are touched, re-checked (and locked on PostgreSQL) in the transaction
    # that removes them, so a run put back in the queue meanwhile (``retry_blocks``) stays.

    @writes
    def retention_cutoffs(self, keep: int, notebooks: bool = False) -> list[tuple[int | None, int]]:
        """Per trigger (``None``: the runs without one) that has more than ``keep`` finished runs
        (with an executed notebook, if ``notebooks``): ``(trigger id, id of the oldest of its
        newest ``keep``)``. Its finished runs with a smaller id are past the limit."""
        cutoffs: list[tuple[int | None, int]] = []
        with self._sessions() as s:
            groups = list(s.scalars(select(Run.pipeline_schedule_id).distinct()))
            for group in groups:
                # One indexed range per trigger (its index ends with the row id), not a window
                # function over the whole table.
                query = (
                    select(Run.id)
                    .where(self._retention_group(group), Run.status.in_(RUN_FINISHED))
                    .order_by(Run.id.desc())
                    .offset(keep - 1)
                    .limit(1)
                )
                if notebooks:
                    query = query.where(Run.executed_notebook.is_not(None))
                kth = s.scalar(query)
                if kth is not None:
                    cutoffs.append((group, kth))
        return cutoffs

    @writes
    def purge_runs_beyond(
        self, trigger_id: int | None, below_id: int, limit: int, notebooks: bool = False
    ) -> tuple[list[int], int, list[str]]:
        """Up to ``limit`` finished runs of a trigger (``None``: without one) with an id below
        ``below_id``, deleted with their block runs, or with ``notebooks`` only their executed
        notebooks forgotten (``executed_notebook`` set to null).

        Returns the runs' ids, the number of block runs deleted and the notebook paths the runs
        had (for the caller to delete the files). No ids: nothing is left to do.
        """
        with self._sessions.begin() as s:
            query = (
                select(Run.id)
                .where(
                    self._retention_group(trigger_id),
                    Run.id < below_id,
                    Run.status.in_(RUN_FINISHED),
                )
                .order_by(Run.id)
                .limit(limit)
            )
            if notebooks:
                query = query.where(Run.executed_notebook.is_not(None))
            return self._purge(s, list(s.scalars(query)), notebooks)

    @writes
    def purge_runs_finished_before(
        self, before: datetime, after_id: int, limit: int, notebooks: bool = False
    ) -> tuple[list[int], int, list[str], int | None]:
        """As :meth:`purge_runs_beyond`, for the finished runs that ended before ``before``
        (``completed_at``, else ``created_at``), among the ``limit`` runs after ``after_id``.

        Also returns where the next batch starts (an id for ``after_id``), or None when no later
        run can qualify: a run created at ``before`` or later ends the walk (ids grow with
        ``created_at``), so a sweep reads the old rows once, never the whole table.
        """
        with self._sessions.begin() as s:
            window = s.execute(
                select(Run.id, Run.status, Run.created_at, Run.completed_at, Run.executed_notebook)
                .where(Run.id > after_id)
                .order_by(Run.id)
                .limit(limit)
            ).all()
            ids = [
                r.id
                for r in window
                if r.status in RUN_FINISHED
                and (r.completed_at or r.created_at) < before
                and (r.executed_notebook is not None or not notebooks)
            ]
            done = len(window) < limit or any(r.created_at >= before for r in window)
            purged = self._purge(s, ids, notebooks)
            return (*purged, None if done else window[-1].id)

    @staticmethod
    def _retention_group(trigger_id: int | None) -> Any:
        if trigger_id is None:
            return Run.pipeline_schedule_id.is_(None)
        return Run.pipeline_schedule_id == trigger_id

    def _purge(
        self, s: Session, candidates: list[int], notebooks: bool
    ) -> tuple[list[int], int, list[str]]:
        """Delete (or, with ``notebooks``, clear the executed notebook of) the candidates that
        are still finished, inside the caller's transaction."""
        if not candidates:
            return [], 0, []
        query = select(Run.id, Run.executed_notebook).where(
            Run.id.in_(candidates), Run.status.in_(RUN_FINISHED)
        )
        if not self.is_sqlite:  # SQLite has one writer: the transaction is already exclusive
            query = query.with_for_update()
        rows = s.execute(query).all()
        ids = [r.id for r in rows]
        paths = [r.executed_notebook for r in rows if r.executed_notebook]
        if not ids:
            return [], 0, []
        runs = RUNS
        if notebooks:
            s.execute(
                runs.update()
                .where(runs.c.id.in_(ids))
                .values(executed_notebook=None, updated_at=utcnow())
            )
            return ids, 0, paths
        # Block runs first: their foreign key cascades only where the database enforces it.
        blocks = BLOCK_RUNS
        deleted = cast(
            CursorResult[Any],
            s.execute(blocks.delete().where(blocks.c.pipeline_run_id.in_(ids))),
        )
        s.execute(runs.delete().where(runs.c.id.in_(ids)))
        return ids, deleted.rowcount, paths
