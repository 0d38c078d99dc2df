"""The queue: accepting runs (group commit), claiming them, moving statuses, recovery.

The database is the queue: an accepted run is a committed ``initial`` row, and what executes is
claimed from those rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Update,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import (
    IntegrityError,
)
from sqlalchemy.orm import Session

from ..records import BlockRunRecord, RunPlan, RunRecord, TriggerRecord
from ..statuses import RUN_FINISHED, BlockRunStatus, RunStatus
from .database import DatabaseUnavailable, unavailable_reason, writes
from .notifications import Notice, announce
from .runs import RunStore
from .schema import BLOCK_RUNS, RUNS, BlockRun, Run, Trigger, utcnow
from .triggers import TriggerStore
from .views import block_run_to_dict, run_to_dict


@dataclass
class NewRun:
    """What :meth:`Store.create_run` did.

    ``outcome``: ``created`` (queued), ``started`` (committed ``running``; ``plan`` is set),
    ``existing`` (the run with the same ``idempotency_key`` for the trigger, answered instead)
    or ``skipped`` (the trigger already had ``skip_if_active`` runs waiting or running; the new
    run was recorded as ``cancelled``).
    """

    run: RunRecord
    outcome: str
    #: The run as :meth:`Store.claim_runs` gives it (``started`` only).
    plan: RunPlan | None = None


class RunQueue(TriggerStore, RunStore):
    """Runs from acceptance to their final status."""

    def __init__(
        self, db_url: str, busy_timeout: float = 5.0, server_id: str | None = None
    ) -> None:
        super().__init__(db_url, busy_timeout)
        #: The server runs are claimed for (``Run.owner``; see :mod:`.servers`).
        self.server_id = server_id
        self._calls: list[_TriggerCall] = []  # trigger calls waiting for the database thread
        self._calls_lock = threading.Lock()
        self._draining = False

    # -- runs --------------------------------------------------------------------------------

    def _create_run(
        self,
        values: dict[str, Any],
        skip_if_active: int | None = None,
        block_uuids: Iterable[str] = (),
        start: bool = False,
    ) -> NewRun:
        """Commit a new run (and an ``initial`` block run per block); see :class:`NewRun`.

        With ``start``, a run that would be first in the queue is committed ``running`` at once
        (claimed in the same transaction) and its plan is returned for the caller to execute.
        The checks and the inserts happen in one transaction.
        """
        block_uuids = list(block_uuids)
        try:
            with self._sessions.begin() as s:
                return self._insert_run(s, values, skip_if_active, block_uuids, start)
        except IntegrityError:
            # Another request with the same key won the race: answer its run.
            key = values.get("idempotency_key")
            if key is None:
                raise
            with self._sessions() as s:
                existing = self._find_idempotent(s, values.get("pipeline_schedule_id"), key)
            if existing is None:
                raise
            return NewRun(existing, "existing")

    #: :meth:`_create_run` awaited in the writer thread (a trigger call's retry runs it there).
    create_run = writes(_create_run)

    def _insert_run(
        self,
        s: Session,
        values: dict[str, Any],
        skip_if_active: int | None,
        block_uuids: list[str],
        start: bool,
    ) -> NewRun:
        """:meth:`create_run`'s checks and INSERTs, inside the caller's transaction."""
        key = values.get("idempotency_key")
        trigger_id = values.get("pipeline_schedule_id")
        if key is not None:
            existing = self._find_idempotent(s, trigger_id, key)
            if existing is not None:
                return NewRun(existing, "existing")
        now = utcnow()
        # Mage's partition: "<trigger id>/<execution date>", kept in the run variables.
        stamp = values["execution_date"].strftime("%Y%m%dT%H%M%S_%f")
        row = {
            "status": RunStatus.INITIAL,
            "passed_sla": False,
            "executor_type": "jupyter_kernel",
            "created_at": now,
            "updated_at": now,
            **values,
            "variables": {
                **(values.get("variables") or {}),
                "execution_partition": f"{trigger_id}/{stamp}",
            },
        }
        outcome = "created"
        if skip_if_active is not None:
            if not self.is_sqlite and trigger_id is not None:  # calls on other servers wait
                _lock_triggers(s, {trigger_id})
            active = s.scalar(
                select(func.count(Run.id)).where(
                    Run.pipeline_schedule_id == trigger_id,
                    Run.status.in_((RunStatus.INITIAL, RunStatus.RUNNING)),
                )
            )
            if (active or 0) >= skip_if_active:
                outcome = "skipped"
                row.update(
                    status=RunStatus.CANCELLED,
                    completed_at=now,
                    metrics={"skipped": "the trigger's earlier runs are still active"},
                )
        # Started at once only if nobody is waiting to be overtaken.
        if outcome == "created" and start and s.execute(_ANY_WAITING_RUN).first() is None:
            outcome = "started"
            row.update(status=RunStatus.RUNNING, started_at=now, owner=self.server_id)
        # Plain INSERTs of prebuilt statements, no unit of work: every trigger call comes here.
        conn = s.connection()
        result = cast(CursorResult[Any], conn.execute(_INSERT_RUN, row))
        assert result.inserted_primary_key is not None
        run = Run(id=result.inserted_primary_key[0], **row)  # not added to the session
        if outcome != "skipped" and block_uuids:
            conn.execute(
                _INSERT_BLOCK_RUN,
                [
                    {
                        "pipeline_run_id": run.id,
                        "block_uuid": uuid,
                        "status": BlockRunStatus.INITIAL,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for uuid in block_uuids
                ],
            )
        if outcome == "created" and not self.is_sqlite:
            announce(s, Notice.QUEUED)  # once per transaction: PostgreSQL folds equal notices
        if outcome != "started":
            return NewRun(run_to_dict(run), outcome)
        # Answered as accepted (``initial``); it was claimed in the same commit.
        accepted = Run(id=run.id, **{**row, "status": RunStatus.INITIAL, "started_at": None})
        return NewRun(run_to_dict(accepted), outcome, self._plan(s, run))

    async def create_run_for_trigger(
        self, trigger_id: int, admit: Callable[[TriggerRecord | None], dict[str, Any]]
    ) -> NewRun:
        """:meth:`create_run` for a trigger call, in one database call.

        The trigger is read (None if missing) and passed to ``admit``, which refuses the call by
        raising, or returns :meth:`create_run`'s arguments.

        Calls that arrive while the database thread is busy share one transaction (group
        commit): under a burst, one commit, one thread hand-off and one trigger read serve many
        calls, while a lone call waits for nothing.
        """
        loop = asyncio.get_running_loop()
        call = _TriggerCall(trigger_id, admit, loop.create_future())
        with self._calls_lock:
            self._calls.append(call)
            idle, self._draining = not self._draining, True
        if idle:
            loop.run_in_executor(self._executor, self._drain_trigger_calls, loop)
        return await call.future

    def _drain_trigger_calls(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._calls_lock:
                batch, self._calls = self._calls, []
                if not batch:
                    self._draining = False
                    return
            try:
                self._prepare()
                outcomes = self._trigger_calls(batch)
            except DatabaseUnavailable as exc:
                outcomes = [exc] * len(batch)
            loop.call_soon_threadsafe(_settle_trigger_calls, batch, outcomes)

    def _trigger_calls(self, batch: list[_TriggerCall]) -> list[NewRun | BaseException]:
        """The calls of ``batch`` in one transaction; each gets its run or its refusal."""
        try:
            with self._sessions.begin() as s:
                triggers: dict[int, TriggerRecord | None] = {}
                outcomes: list[NewRun | BaseException] = []
                for call in batch:
                    if call.trigger_id not in triggers:
                        triggers[call.trigger_id] = self._read_trigger(s, call.trigger_id)
                    try:
                        args = call.admit(triggers[call.trigger_id])
                    except Exception as refusal:  # raised before this call wrote anything
                        outcomes.append(refusal)
                        continue
                    outcomes.append(self._insert_run(s, **args))
                return outcomes
        except Exception as exc:
            reason = unavailable_reason(exc)
            if reason is not None:  # the database, not one call: every call fails alike, fast
                return [DatabaseUnavailable(reason)] * len(batch)
            # One call's failure (an Idempotency-Key race with another server, say) must not
            # fail the others: each runs again in a transaction of its own.
            return [self._one_trigger_call(call) for call in batch]

    def _one_trigger_call(self, call: _TriggerCall) -> NewRun | BaseException:
        try:
            with self._sessions() as s:
                trigger = self._read_trigger(s, call.trigger_id)
            return self._create_run(**call.admit(trigger))
        except Exception as exc:
            reason = unavailable_reason(exc)
            return exc if reason is None else DatabaseUnavailable(reason)

    @staticmethod
    def _find_idempotent(s: Session, trigger_id: int | None, key: str) -> RunRecord | None:
        run = s.scalar(
            select(Run).where(Run.pipeline_schedule_id == trigger_id, Run.idempotency_key == key)
        )
        return run_to_dict(run) if run is not None else None

    @writes
    def claim_runs(self, limit: int) -> list[RunPlan]:
        """Move up to ``limit`` of the oldest ``initial`` runs to ``running``; their plans.

        On PostgreSQL the rows are locked with ``FOR UPDATE SKIP LOCKED`` so several servers can
        share one queue; SQLite has one writer, so the same statement is already exclusive.
        """
        if limit <= 0:
            return []
        with self._sessions.begin() as s:
            # Look a little past `limit`: runs held back by their trigger's own limit are passed.
            query = (
                select(Run.id, Run.pipeline_schedule_id, Run.trigger_settings)
                .where(Run.status == RunStatus.INITIAL)
                .order_by(Run.id)
                .limit(limit + 100)
            )
            if not self.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            candidates = list(s.execute(query))
            limited = {
                c.pipeline_schedule_id
                for c in candidates
                if (c.trigger_settings or {}).get("pipeline_run_limit")
            }
            running: dict[int | None, int] = {}
            if limited:
                if not self.is_sqlite:  # servers claiming at once count one after the other
                    _lock_triggers(s, limited)
                running = dict(
                    s.execute(
                        select(Run.pipeline_schedule_id, func.count(Run.id))
                        .where(
                            Run.pipeline_schedule_id.in_(limited), Run.status == RunStatus.RUNNING
                        )
                        .group_by(Run.pipeline_schedule_id)
                    ).all()
                )
            ids: list[int] = []
            for c in candidates:
                cap = (c.trigger_settings or {}).get("pipeline_run_limit")
                if cap:
                    if running.get(c.pipeline_schedule_id, 0) >= cap:
                        continue
                    running[c.pipeline_schedule_id] = running.get(c.pipeline_schedule_id, 0) + 1
                ids.append(c.id)
                if len(ids) == limit:
                    break
            if not ids:
                return []
            now = utcnow()
            # Only the rows this UPDATE moved are ours: on SQLite shared by several servers the
            # candidates were read outside the write transaction, and another server may have
            # claimed some of them since (PostgreSQL locked them: SKIP LOCKED).
            won = list(
                s.scalars(
                    update(Run)
                    .where(Run.id.in_(ids), Run.status == RunStatus.INITIAL)
                    .values(
                        status=RunStatus.RUNNING,
                        started_at=now,
                        updated_at=now,
                        owner=self.server_id,
                    )
                    .returning(Run.id)
                    .execution_options(synchronize_session=False)
                )
            )
            if not won:
                return []
            claimed = s.scalars(
                select(Run).where(Run.id.in_(won)).order_by(Run.id),
                execution_options={"populate_existing": True},
            )
            return [self._plan(s, run) for run in claimed]

    @writes
    def transition_run(
        self,
        run_id: int,
        allowed_from: Iterable[str],
        values: dict[str, Any],
        with_blocks: bool = False,
    ) -> RunRecord | None:
        """Write ``values`` only if the run's status is one of ``allowed_from`` (atomically).

        Returns the updated run (with its block runs and their outputs if ``with_blocks``), or
        None when the run is missing or in another status.
        """
        with self._sessions.begin() as s:
            if not self._update_if(s, Run, run_id, list(allowed_from), values, ""):
                return None
            if not self.is_sqlite and values.get("status") in RUN_FINISHED:
                announce(s, Notice.ENDED)
            elif not self.is_sqlite and values.get("status") == RunStatus.INITIAL:
                announce(s, Notice.QUEUED)  # a retry put it back in the queue
            run = s.get(Run, run_id, populate_existing=True)
            assert run is not None  # updated in this transaction
            data = run_to_dict(run)
            if with_blocks:
                data["block_runs"] = self._block_runs(s, [run_id], with_outputs=True)[run_id]
            return data

    @writes
    def transition_block_run(
        self, block_run_id: int, allowed_from: Iterable[str], values: dict[str, Any], logs: str = ""
    ) -> BlockRunRecord | None:
        """As :meth:`transition_run`, for a block run; ``logs`` is appended to its log."""
        with self._sessions.begin() as s:
            if not self._update_if(s, BlockRun, block_run_id, list(allowed_from), values, logs):
                return None
            block = s.get(BlockRun, block_run_id, populate_existing=True)
            assert block is not None  # updated in this transaction
            return block_run_to_dict(block)

    @writes
    def transition_block_runs(
        self, changes: list[tuple[int, list[str], dict[str, Any], str]]
    ) -> list[bool]:
        """Several block-run transitions ``(id, allowed_from, values, logs)`` in one transaction.

        Events of a run that arrive together (a fast block's start and end) cost one commit.
        Returns, per change, whether it applied.
        """
        with self._sessions.begin() as s:
            return [
                self._update_if(s, BlockRun, row_id, allowed, values, logs)
                for row_id, allowed, values, logs in changes
            ]

    @staticmethod
    def _update_if(
        s: Session,
        model: type[Run | BlockRun],
        row_id: int,
        allowed_from: list[str],
        values: dict[str, Any],
        logs: str,
    ) -> bool:
        table = RUNS if model is Run else BLOCK_RUNS
        statement = _conditional_update(table.name, tuple(values), bool(logs))
        parameters = {f"new_{key}": value for key, value in values.items()}
        parameters.update(row_id=row_id, allowed_from=allowed_from, new_updated_at=utcnow())
        if logs:
            # PostgreSQL text cannot hold NUL (U+0000); both databases keep the same log.
            parameters["appended_logs"] = logs.replace("\x00", "\ufffd")
        changed = cast(CursorResult[Any], s.connection().execute(statement, parameters))
        return bool(changed.rowcount == 1)


@functools.lru_cache(maxsize=256)
def _conditional_update(table_name: str, columns: tuple[str, ...], appends_logs: bool) -> Update:
    """``UPDATE table SET columns... WHERE id = :row_id AND status IN :allowed_from``, built
    once per table and set of columns: a run's every block event writes one, and building
    the statement (an ORM bulk update) cost more than executing it."""
    table = RUNS if table_name == RUNS.name else BLOCK_RUNS
    new_values: dict[str, Any] = {
        name: bindparam(f"new_{name}", type_=table.c[name].type) for name in columns
    }
    new_values["updated_at"] = bindparam("new_updated_at", type_=table.c.updated_at.type)
    if appends_logs:
        new_values["logs"] = func.coalesce(table.c.logs, "") + bindparam(
            "appended_logs", type_=table.c.logs.type
        )
    return (
        update(table)
        .where(
            table.c.id == bindparam("row_id"),
            table.c.status.in_(bindparam("allowed_from", expanding=True)),
        )
        .values(new_values)
    )


@dataclass
class _TriggerCall:
    """A trigger call waiting for the database thread (see :meth:`Store.create_run_for_trigger`)."""

    trigger_id: int
    admit: Callable[[TriggerRecord | None], dict[str, Any]]
    future: asyncio.Future[NewRun]


def _settle_trigger_calls(
    batch: list[_TriggerCall], outcomes: list[NewRun | BaseException]
) -> None:
    for call, outcome in zip(batch, outcomes, strict=True):
        if call.future.done():  # its caller went away; the run stays committed
            continue
        if isinstance(outcome, BaseException):
            call.future.set_exception(outcome)
        else:
            call.future.set_result(outcome)


def _lock_triggers(s: Session, trigger_ids: set[int | None]) -> None:
    """Lock trigger rows to the end of the transaction (PostgreSQL): a trigger's limits are
    counted by one server at a time, so that two servers cannot both pass them."""
    s.execute(
        select(Trigger.id)
        .where(Trigger.id.in_([t for t in trigger_ids if t is not None]))
        .with_for_update()
    )


# The trigger call's statements, built once (building and keying one costs more than running it).
_ANY_WAITING_RUN = select(Run.id).where(Run.status == RunStatus.INITIAL).limit(1)
_INSERT_RUN = insert(RUNS)
_INSERT_BLOCK_RUN = insert(BLOCK_RUNS)
