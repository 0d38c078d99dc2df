"""The run service: accepting a trigger call, cancelling a run, retrying its blocks.

Handlers parse a request and call this service; it decides and orchestrates (the database,
the dispatcher's slots, the status board, the engine, the kernel pool) and returns what to
answer. As jupyter_server's kernel handlers are: handler, manager, answer.

Accepting a trigger call: the trigger's pipeline is loaded first, on the event loop's side
(its notebook is read in a worker thread, or served from cache after one ``stat``); then one
database call (``Store.create_run_for_trigger``, group commit) reads the trigger and hands it,
with that pipeline, to :func:`admit`, a pure function that checks it against the request and
says what to insert, or refuses by raising :class:`~jupyter_mage.validation.ApiError` before
anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .dispatcher import Dispatcher
from .engine import KernelEngine
from .pipeline import Pipeline, PipelineNotFound
from .records import RunRecord, TriggerRecord
from .refusals import RefusalLog
from .repository import PipelineRepository
from .state import StatusBoard
from .statuses import RUN_FINISHED, RunStatus, TriggerStatus
from .storage import NewRun, Store, utcnow
from .validation import ApiError, TriggerNotFound

#: Triggers whose pipeline the service remembers (then it forgets them all and learns again).
_REMEMBERED_TRIGGERS = 10_000

#: A check of the trigger a caller may add (the token routes check the token with it).
TriggerCheck = Callable[[TriggerRecord], None]


@dataclass(frozen=True)
class TriggerCall:
    """One validated trigger request."""

    trigger_id: int
    variables: dict[str, Any]
    execution_date: datetime | None
    event_variables: dict[str, Any]
    idempotency_key: str | None = None
    #: Runs before the trigger's status is looked at (a wrong token learns nothing else).
    check: TriggerCheck | None = None


@dataclass(frozen=True)
class Answer:
    """What a trigger call is answered: the run, and the refusal that still shows it, if any
    (a ``skip`` trigger's run recorded as cancelled: HTTP 409 ``run_skipped``)."""

    run: RunRecord
    refusal: ApiError | None = None


def pipeline_not_found(uuid: str) -> ApiError:
    """The 404 of a pipeline that is not (or no longer) a notebook with blocks."""
    return ApiError(404, "not_found", f"pipeline '{uuid[:200]}' not found")


def skip_threshold(settings: dict[str, Any]) -> int | None:
    """Active runs of a trigger at which a new run is skipped (None: never skipped)."""
    if settings.get("skip_if_previous_running"):
        return 1
    if settings.get("pipeline_run_limit") and settings.get("pipeline_run_limit_action") == "skip":
        return int(settings["pipeline_run_limit"])
    return None


def admit(
    call: TriggerCall,
    trigger: TriggerRecord | None,
    pipeline: Pipeline | None,
    start: bool,
) -> dict[str, Any]:
    """What to insert for ``call`` on ``trigger`` (``Store.create_run`` arguments), or a refusal.

    A pure function (it runs in the database thread, inside the transaction): ``pipeline`` is
    the trigger's pipeline as loaded before (None: there is no such notebook). ``start``: a slot
    is reserved, so the run may be committed ``running`` at once (a trigger with its own run
    limit always queues).
    """
    if trigger is None:
        raise TriggerNotFound(call.trigger_id)
    if call.check is not None:
        call.check(trigger)
    if trigger["status"] != TriggerStatus.ACTIVE:
        raise ApiError(409, "trigger_inactive", f"trigger {trigger['id']} is inactive")
    if pipeline is None or pipeline.uuid != trigger["pipeline_uuid"]:
        raise pipeline_not_found(trigger["pipeline_uuid"])
    if not pipeline.is_valid:
        # Refused before a kernel starts: the caller learns now what is wrong, and no run
        # is recorded that could only fail.
        problems = "; ".join(e["message"] for e in pipeline.errors)
        raise ApiError(
            422,
            "invalid_pipeline",
            f"pipeline '{pipeline.uuid}' is invalid: {problems}"[:2000],
            list(pipeline.errors),
        )
    settings = trigger["settings"]
    return {
        "values": {
            "pipeline_schedule_id": trigger["id"],
            "pipeline_uuid": trigger["pipeline_uuid"],
            "execution_date": call.execution_date or utcnow(),
            "variables": call.variables,
            "event_variables": call.event_variables,
            "trigger_name": trigger["name"],
            "trigger_variables": trigger["variables"],
            "trigger_settings": settings,
            "idempotency_key": call.idempotency_key,
        },
        "skip_if_active": skip_threshold(settings),
        "block_uuids": [b.uuid for b in pipeline.runnable_blocks()],
        "start": start and not settings.get("pipeline_run_limit"),
    }


class RunService:
    """Accepts, cancels and retries runs."""

    def __init__(
        self,
        store: Store,
        board: StatusBoard,
        dispatcher: Dispatcher,
        engine: KernelEngine,
        repository: PipelineRepository,
    ) -> None:
        self.store = store
        self.board = board
        self.dispatcher = dispatcher
        self.engine = engine
        self.repository = repository
        self._trigger_pipelines: dict[int, str] = {}
        self.refusals = RefusalLog()

    def with_refusals(self, trigger: TriggerRecord) -> TriggerRecord:
        """The trigger with the calls this server refused lately (``recent_refusals``)."""
        return {**trigger, "recent_refusals": self.refusals.recent(trigger["id"])}

    async def accept(self, call: TriggerCall, wait: float | None = None) -> Answer:
        """Commit the run of a trigger call, start or queue it, and say what to answer.

        A run that can start now is committed ``running`` and started here, without waiting
        for the dispatcher's claim. ``wait`` holds the answer until the run ends (or the wait
        expires) and then answers it as ``GET api/pipeline_runs/{id}`` does.
        """
        self.engine.kernels.note_request()  # kernel starts leave a core to the server a moment
        pipeline = await self._pipeline_of(call.trigger_id)
        reserved = self.dispatcher.reserve()
        new: NewRun | None = None
        try:
            new = await self.store.create_run_for_trigger(
                call.trigger_id, lambda trigger: admit(call, trigger, pipeline, reserved)
            )
        finally:
            if reserved:
                self.dispatcher.start(new.plan if new is not None else None)
        run = new.run
        if new.outcome == "skipped":
            message = "the trigger's earlier runs are still active; run skipped"
            return Answer(run, ApiError(409, "run_skipped", message))
        # Watch before anything else can run on the loop, so the final event cannot be missed.
        finished = self.board.watch(run["id"]) if wait else None
        if new.outcome == "created":
            self.dispatcher.wake()
        if finished is not None:
            run = await self._wait(run, new.outcome == "existing", finished, wait)
        return Answer(run)

    async def _pipeline_of(self, trigger_id: int) -> Pipeline | None:
        """The pipeline of a trigger, loaded (None: no such trigger, or no such notebook).

        A trigger's pipeline never changes, so which one it is is remembered; the notebook
        itself is checked on every call (the repository's cache costs one ``stat``).
        """
        uuid = self._trigger_pipelines.get(trigger_id)
        if uuid is None:
            uuid = await self.store.pipeline_of_trigger(trigger_id)
            if uuid is None:
                return None
            if len(self._trigger_pipelines) >= _REMEMBERED_TRIGGERS:
                self._trigger_pipelines.clear()
            self._trigger_pipelines[trigger_id] = uuid
        try:
            return await self.repository.get(uuid)
        except PipelineNotFound:
            return None

    async def _wait(
        self,
        run: RunRecord,
        existing: bool,
        finished: asyncio.Future[RunRecord],
        wait: float | None,
    ) -> RunRecord:
        try:
            if existing:  # it may have ended before we started watching
                run = await self.store.get_run(run["id"]) or run
            if run["status"] not in RUN_FINISHED:
                # The final run, block runs included, read as its status was written.
                run = await asyncio.wait_for(asyncio.shield(finished), wait)
        except asyncio.TimeoutError:
            pass
        finally:
            self.board.unwatch(run["id"], finished)
        if "block_runs" not in run:  # still running, or ended before the watch
            run = await self.store.get_run(run["id"], with_blocks=True) or run
        return run

    async def cancel(self, run: RunRecord) -> None:
        """Cancel a queued or running run; for a running one, wait (bounded) for its end."""
        if run["status"] in RUN_FINISHED:
            raise ApiError(409, "run_finished", f"run {run['id']} is already {run['status']}")
        run_id = run["id"]
        finished = self.board.watch(run_id)
        try:
            if not await self.engine.cancel(run_id):
                # Not running here: queued (cancelled in its row), or running on another
                # server (or just claimed, about to start here): its owner is asked through
                # the database and interrupts its kernel (see presence.py).
                queued = await self.board.run(
                    run_id, RunStatus.CANCELLED, only_from=(RunStatus.INITIAL,)
                )
                if queued is not None or not await self.store.request_cancel(run_id):
                    return
            # Answer with the final state: wait (bounded) for the owner to record it.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(finished), self.engine.cancel_grace + 5)
        finally:
            self.board.unwatch(run_id, finished)

    async def retry(self, run: RunRecord) -> None:
        """Put a failed or cancelled run back in the queue; its unfinished blocks run again."""
        if run["status"] not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise ApiError(
                409,
                "run_not_retryable",
                f"run is {run['status']}; only failed or cancelled runs retry",
            )
        if await self.board.run(run["id"], RunStatus.INITIAL) is None:
            raise ApiError(409, "conflict", "the run changed status; try again")
        self.dispatcher.wake()
