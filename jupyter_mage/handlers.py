"""HTTP handlers: Mage's routes, answered with Mage's envelopes and real status codes.

Handlers hold no state: they validate, call the app's services (``self.mage.store``, ``.board``,
``.dispatcher``, ``.repository``) and answer. Every verb is ``@web.authenticated`` then
``@authorized``, except the two per-trigger token routes, where the trigger token is the
credential (as in Mage).

Success answers are HTTP 200, as Mage answers them (also for creation), so Mage clients work
unchanged; errors use real codes (see :class:`~jupyter_mage.validation.ApiError`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from .pipeline import PipelineNotFound
from .storage import RUN_FINISHED, DatabaseUnavailable, utcnow
from .validation import (
    RUN_STATUSES,
    ApiError,
    decode_argument,
    envelope,
    idempotency_key,
    parse_id,
    parse_json_object,
    positive_int,
    run_request,
    trigger_fields,
    wait_seconds,
)

if TYPE_CHECKING:
    from .app import MageApp

AUTH_RESOURCE = "mage"
_ERROR_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    503: "database_unavailable",
}
#: Seconds a client is asked to wait before trying again while the database is unavailable.
RETRY_AFTER = 5


def _skip_threshold(settings: dict[str, Any]) -> int | None:
    """Active runs of a trigger at which a new run is skipped (None: never skipped)."""
    if settings.get("skip_if_previous_running"):
        return 1
    if settings.get("pipeline_run_limit") and settings.get("pipeline_run_limit_action") == "skip":
        return int(settings["pipeline_run_limit"])
    return None


def _pipeline_not_found(uuid: str) -> ApiError:
    return ApiError(404, "not_found", f"pipeline '{uuid[:200]}' not found")


def _error_body(status: int, error_type: str, message: str) -> dict[str, Any]:
    return {"message": message, "error": {"code": status, "type": error_type, "message": message}}


class MageHandler(ExtensionHandlerMixin, APIHandler):
    """Base handler: JSON bodies in, JSON answers and JSON errors out."""

    auth_resource = AUTH_RESOURCE

    @property
    def mage(self) -> MageApp:
        """The running extension app (services live there, not on handlers)."""
        return self.extensionapp  # type: ignore[return-value]

    def write_json(self, data: dict[str, Any]) -> None:
        """Answer 200 with a JSON body."""
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def read_json(self) -> dict[str, Any]:
        """The request body as a JSON object (bounded by ``MageApp.max_body_size``)."""
        return parse_json_object(self.request.body, self.mage.max_body_size)

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """Path and query arguments; invalid UTF-8 is a 400 that does not echo the value."""
        return decode_argument(value, name)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """An unavailable database is one warning line (its reason), not a traceback."""
        if isinstance(value, DatabaseUnavailable):
            self.log.warning(
                "jupyter-mage: 503 %s %s: %s", self.request.method, self.request.path, value
            )
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors as ``{"message", "error": {"code", "type", "message"}}``; never a traceback.

        While the database is unavailable (locked by another process past the busy timeout,
        full, read-only, deleted) every route that needs it answers 503 with ``Retry-After``:
        nothing was recorded, and the caller should try again.
        """
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, DatabaseUnavailable):
            status_code = 503
            self.set_status(503)
            self.set_header("Retry-After", str(RETRY_AFTER))
            error_type, message = "database_unavailable", f"the database is unavailable: {exc}"
        elif isinstance(exc, ApiError):
            error_type, message = exc.error_type, exc.message
        elif isinstance(exc, web.HTTPError):
            error_type = _ERROR_TYPES.get(status_code, "http_error")
            message = exc.log_message or self._reason or error_type
            if exc.args:
                try:
                    message = message % exc.args
                except (TypeError, ValueError):
                    pass
        else:
            error_type, message = "internal_error", "Unhandled error"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(_error_body(status_code, error_type, message)))

    async def find_trigger(self, trigger_id: str) -> dict[str, Any]:
        """A trigger by path id (with its run statistics), or 404."""
        trigger = await self.mage.store.get_trigger(parse_id(trigger_id, "trigger"))
        if trigger is None:
            raise ApiError(404, "not_found", f"trigger {trigger_id} not found")
        return trigger

    async def find_pipeline(self, uuid: str) -> Any:
        """A pipeline by uuid, or 404 (also for paths outside the root dir)."""
        try:
            return await self.mage.repository.get(uuid)
        except PipelineNotFound:
            raise _pipeline_not_found(uuid) from None

    async def accept_run(
        self, trigger_id: str, check: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        """Validate a trigger request, commit the run, start or queue it, answer the run.

        The trigger is read, checked (``check``, then its status and pipeline) and the run
        committed in one database call: every trigger call goes through here. ``?wait=<seconds>``
        holds the answer until the run ends (or the wait expires) and then answers the run as
        ``GET api/pipeline_runs/{id}`` does. An ``Idempotency-Key`` header makes a repeated call
        answer the first run instead of creating another.
        """
        tid = parse_id(trigger_id, "trigger")
        wait = wait_seconds(self.get_argument("wait", None), self.mage.max_wait_seconds)
        key = idempotency_key(self.request.headers.get("Idempotency-Key"))
        variables, execution_date, events = run_request(self.read_json())
        self.mage.engine.kernels.note_request()
        # A run that can start now is committed running and started here, without waiting for
        # the dispatcher's claim (a trigger with its own run limit always queues).
        dispatcher = self.mage.dispatcher
        reserved = dispatcher.reserve()

        def admit(trigger: dict[str, Any] | None) -> dict[str, Any]:
            # In the database thread: no awaiting, only checks and the cached pipeline lookup.
            if trigger is None:
                raise ApiError(404, "not_found", f"trigger {trigger_id} not found")
            if check is not None:
                check(trigger)
            if trigger["status"] != "active":
                raise ApiError(409, "trigger_inactive", f"trigger {trigger['id']} is inactive")
            try:
                pipeline = self.mage.repository.load(trigger["pipeline_uuid"])
            except PipelineNotFound:
                raise _pipeline_not_found(trigger["pipeline_uuid"]) from None
            settings = trigger["settings"]
            return {
                "values": {
                    "pipeline_schedule_id": trigger["id"],
                    "pipeline_uuid": trigger["pipeline_uuid"],
                    "execution_date": execution_date or utcnow(),
                    "variables": variables,
                    "event_variables": events,
                    "trigger_name": trigger["name"],
                    "trigger_variables": trigger["variables"],
                    "trigger_settings": settings,
                    "idempotency_key": key,
                },
                "skip_if_active": _skip_threshold(settings),
                "block_uuids": [b.uuid for b in pipeline.runnable_blocks()]
                if pipeline.is_valid
                else [],
                "start": reserved and not settings.get("pipeline_run_limit"),
            }

        new = None
        try:
            new = await self.mage.store.create_run_for_trigger(tid, admit)
        finally:
            if reserved:
                dispatcher.start(new.plan if new is not None else None)
        run, outcome = new.run, new.outcome
        if outcome == "skipped":
            message = "the trigger's earlier runs are still active; run skipped"
            self.set_status(409)
            self.write_json({**_error_body(409, "run_skipped", message), "pipeline_run": run})
            return
        # Watch before anything else can run on the loop, so the final event cannot be missed.
        finished = self.mage.board.watch(run["id"]) if wait else None
        if outcome == "created":
            dispatcher.wake()
        if finished is not None:
            try:
                if outcome == "existing":  # it may have ended before we started watching
                    run = await self.mage.store.get_run(run["id"]) or run
                if run["status"] not in RUN_FINISHED:
                    # The final run, block runs included, read as its status was written.
                    run = await asyncio.wait_for(asyncio.shield(finished), wait)
            except asyncio.TimeoutError:
                pass
            finally:
                self.mage.board.unwatch(run["id"], finished)
            if "block_runs" not in run:  # still running, or ended before the watch
                run = await self.mage.store.get_run(run["id"], with_blocks=True) or run
        self.write_json({"pipeline_run": run})


# -- pipelines -------------------------------------------------------------------------------


class PipelinesHandler(MageHandler):
    """``GET api/pipelines``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        pipelines = await self.mage.repository.list()
        self.write_json({"pipelines": [p.to_dict() for p in pipelines]})


class PipelineHandler(MageHandler):
    """``GET api/pipelines/{uuid}`` with its validation errors."""

    @web.authenticated
    @authorized
    async def get(self, uuid: str) -> None:
        pipeline = await self.find_pipeline(uuid)
        self.write_json({"pipeline": pipeline.to_dict()})


class PipelineVariablesHandler(MageHandler):
    """``PUT mage/pipelines/{uuid}/variables``: set the notebook's ``metadata.mage.variables``."""

    @web.authenticated
    @authorized
    async def put(self, uuid: str) -> None:
        body = self.read_json()
        variables = body.get("variables")
        if not isinstance(variables, dict):
            raise ApiError(400, "invalid_variables", "'variables' must be a JSON object")
        pipeline = await self.find_pipeline(uuid)
        contents = self.serverapp.contents_manager
        model = await ensure_async(contents.get(pipeline.path, content=True, type="notebook"))
        model["content"].metadata.setdefault("mage", {})["variables"] = variables
        await ensure_async(
            contents.save({"type": "notebook", "content": model["content"]}, pipeline.path)
        )
        pipeline = await self.find_pipeline(uuid)
        self.write_json({"pipeline": pipeline.to_dict()})


class PipelineLogsHandler(MageHandler):
    """``GET api/pipelines/{uuid}/logs?pipeline_run_id[]=``: run and block logs, as Mage."""

    @web.authenticated
    @authorized
    async def get(self, uuid: str) -> None:
        wanted: list[int] = []
        for name in ("pipeline_run_id[]", "pipeline_run_id"):
            for raw in self.get_arguments(name):
                wanted += [positive_int(v, name, 0) for v in raw.split(",") if v.strip()]
        limit = positive_int(self.get_argument("_limit", None), "_limit", 20, 100)
        if len(set(wanted)) > 1000:
            raise ApiError(
                400, "invalid_parameter", "at most 1000 pipeline_run_id values per request"
            )
        if wanted:
            # By id, so any kept run's logs are reachable, however many runs came after it.
            runs = await self.mage.store.get_runs(wanted, pipeline_uuid=uuid)
        else:
            runs, _ = await self.mage.store.list_runs({"pipeline_uuid": uuid}, limit, 0, False)
        blocks = await self.mage.store.block_runs_with_logs([r["id"] for r in runs])
        run_logs = [
            {
                "name": "pipeline.log",
                "path": f"{uuid}/{r['variables'].get('execution_partition', r['id'])}/pipeline.log",
                "pipeline_run_id": r["id"],
                "content": _run_log_text(r),
            }
            for r in runs
        ]
        block_logs = [_block_log(uuid, b, runs) for b in blocks]
        self.write_json(
            {
                "logs": [
                    {
                        "pipeline_run_logs": run_logs,
                        "block_run_logs": block_logs,
                        "total_pipeline_run_log_count": len(run_logs),
                        "total_block_run_log_count": len(block_logs),
                    }
                ]
            }
        )


def _run_log_text(run: dict[str, Any]) -> str:
    lines = [f"{run['created_at']} pipeline run {run['id']} accepted ({run['pipeline_uuid']})"]
    if run["started_at"]:
        lines.append(f"{run['started_at']} started")
    if run["completed_at"]:
        lines.append(f"{run['completed_at']} {run['status']}")
    error = (run.get("metrics") or {}).get("error")
    if error:
        lines.append(f"error: {error}")
    return "\n".join(lines) + "\n"


def _block_log(uuid: str, block: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    partition = next(
        (
            r["variables"].get("execution_partition")
            for r in runs
            if r["id"] == block["pipeline_run_id"]
        ),
        block["pipeline_run_id"],
    )
    return {
        "name": f"{block['block_uuid']}.log",
        "path": f"{uuid}/{partition}/{block['block_uuid']}.log",
        "block_run_id": block["id"],
        "pipeline_run_id": block["pipeline_run_id"],
        "block_uuid": block["block_uuid"],
        "status": block["status"],
        "content": block.get("logs", ""),
        "error": (block.get("metrics") or {}).get("error"),
    }


# -- triggers --------------------------------------------------------------------------------


class TriggersHandler(MageHandler):
    """``GET|POST api/pipeline_schedules`` and ``api/pipelines/{uuid}/pipeline_schedules``."""

    @web.authenticated
    @authorized
    async def get(self, uuid: str | None = None) -> None:
        if uuid is not None:
            uuid = (await self.find_pipeline(uuid)).uuid
        else:
            uuid = self.get_argument("pipeline_uuid", None)
        triggers = await self.mage.store.list_triggers(uuid)
        self.write_json({"pipeline_schedules": triggers})

    @web.authenticated
    @authorized
    async def post(self, uuid: str | None = None) -> None:
        data = envelope(self.read_json(), "pipeline_schedule")
        if uuid is None:
            uuid = data.get("pipeline_uuid")
            if not isinstance(uuid, str) or not uuid:
                raise ApiError(400, "invalid_field", "'pipeline_uuid' is required")
        values, _ = trigger_fields(data, creating=True)
        pipeline = await self.find_pipeline(uuid)
        trigger = await self.mage.store.create_trigger({**values, "pipeline_uuid": pipeline.uuid})
        self.log.info("trigger %s created for pipeline %s", trigger["id"], pipeline.uuid)
        self.write_json({"pipeline_schedule": trigger})


class TriggerHandler(MageHandler):
    """``GET|PUT|DELETE api/pipeline_schedules/{id}``."""

    @web.authenticated
    @authorized
    async def get(self, trigger_id: str) -> None:
        self.write_json({"pipeline_schedule": await self.find_trigger(trigger_id)})

    @web.authenticated
    @authorized
    async def put(self, trigger_id: str) -> None:
        data = envelope(self.read_json(), "pipeline_schedule")
        values, rotate = trigger_fields(data, creating=False)
        trigger = await self.mage.store.update_trigger(
            parse_id(trigger_id, "trigger"), values, rotate_token=rotate
        )
        if trigger is None:
            raise ApiError(404, "not_found", f"trigger {trigger_id} not found")
        self.write_json({"pipeline_schedule": trigger})

    @web.authenticated
    @authorized
    async def delete(self, trigger_id: str) -> None:
        trigger = await self.mage.store.delete_trigger(parse_id(trigger_id, "trigger"))
        if trigger is None:
            raise ApiError(404, "not_found", f"trigger {trigger_id} not found")
        self.write_json({"pipeline_schedule": trigger})


class TriggerRunsHandler(MageHandler):
    """``GET api/pipeline_schedules/{id}/pipeline_runs``; ``POST`` = "run now" (Jupyter auth)."""

    @web.authenticated
    @authorized
    async def get(self, trigger_id: str) -> None:
        await self.find_trigger(trigger_id)
        await _write_runs(self, {"pipeline_schedule_id": int(trigger_id)})

    @web.authenticated
    @authorized
    async def post(self, trigger_id: str) -> None:
        await self.accept_run(trigger_id)


class _TokenTriggerHandler(MageHandler):
    """Shared by the two token routes: the trigger token is the only credential."""

    def check_xsrf_cookie(self) -> None:
        # No cookie identity is used on these routes, so there is nothing to forge.
        return None

    async def trigger_with_token(self, trigger_id: str, token: str | None) -> None:
        def check(trigger: dict[str, Any]) -> None:
            # Token first: a wrong token learns nothing about the trigger's type or status.
            if not token or not hmac.compare_digest(token.encode(), trigger["token"].encode()):
                raise ApiError(403, "invalid_token", "invalid token for this trigger")
            if trigger["schedule_type"] != "api":
                raise ApiError(403, "not_api_trigger", "this endpoint is only for API triggers")

        await self.accept_run(trigger_id, check)


class TokenPathTriggerHandler(_TokenTriggerHandler):
    """``POST api/pipeline_schedules/{id}/pipeline_runs/{token}``."""

    @allow_unauthenticated
    async def post(self, trigger_id: str, token: str) -> None:
        await self.trigger_with_token(trigger_id, token)


class BearerTriggerHandler(_TokenTriggerHandler):
    """``POST api/pipeline_schedules/{id}/api_trigger`` with ``Authorization: Bearer <token>``."""

    @allow_unauthenticated
    async def post(self, trigger_id: str) -> None:
        token = None
        for part in self.request.headers.get("Authorization", "").split(","):
            scheme, _, value = part.strip().partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
                break
        await self.trigger_with_token(trigger_id, token)


# -- runs ------------------------------------------------------------------------------------


async def _write_runs(handler: MageHandler, filters: dict[str, Any]) -> None:
    status = handler.get_argument("status", None)
    if status:
        if status not in RUN_STATUSES:
            raise ApiError(400, "invalid_parameter", f"'status' must be one of {RUN_STATUSES}")
        filters["status"] = status
    limit = positive_int(handler.get_argument("_limit", None), "_limit", 30, 1000)
    offset = positive_int(handler.get_argument("_offset", None), "_offset", 0)
    runs, count = await handler.mage.store.list_runs(filters, limit, offset)
    handler.write_json(
        {"pipeline_runs": runs, "metadata": {"count": count, "next": offset + len(runs) < count}}
    )


class RunsHandler(MageHandler):
    """``GET api/pipeline_runs?pipeline_uuid=&pipeline_schedule_id=&status=&_limit=&_offset=``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        filters: dict[str, Any] = {}
        uuid = self.get_argument("pipeline_uuid", None)
        if uuid:
            filters["pipeline_uuid"] = uuid
        trigger_id = self.get_argument("pipeline_schedule_id", None)
        if trigger_id:
            filters["pipeline_schedule_id"] = positive_int(trigger_id, "pipeline_schedule_id", 0)
        await _write_runs(self, filters)


class RunHandler(MageHandler):
    """``GET api/pipeline_runs/{id}``; ``PUT`` cancels or retries."""

    async def _find(self, run_id: str) -> dict[str, Any]:
        run = await self.mage.store.get_run(parse_id(run_id, "pipeline run"), with_blocks=True)
        if run is None:
            raise ApiError(404, "not_found", f"pipeline run {run_id} not found")
        return run

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        self.write_json({"pipeline_run": await self._find(run_id)})

    @web.authenticated
    @authorized
    async def put(self, run_id: str) -> None:
        data = envelope(self.read_json(), "pipeline_run")
        run = await self._find(run_id)
        action = data.get("pipeline_run_action")
        if data.get("status") == "cancelled" and action is None:
            await self._cancel(run)
        elif action == "retry_blocks" and "status" not in data:
            if run["status"] not in ("failed", "cancelled"):
                raise ApiError(
                    409,
                    "run_not_retryable",
                    f"run is {run['status']}; only failed or cancelled runs retry",
                )
            if await self.mage.board.run(run["id"], "initial") is None:
                raise ApiError(409, "conflict", "the run changed status; try again")
            self.mage.dispatcher.wake()
        else:
            raise ApiError(
                400,
                "invalid_body",
                'expected {"pipeline_run": {"status": "cancelled"}} or '
                '{"pipeline_run": {"pipeline_run_action": "retry_blocks"}}',
            )
        self.write_json({"pipeline_run": await self._find(run_id)})

    async def _cancel(self, run: dict[str, Any]) -> None:
        if run["status"] in RUN_FINISHED:
            raise ApiError(409, "run_finished", f"run {run['id']} is already {run['status']}")
        finished = self.mage.board.watch(run["id"])
        try:
            if await self.mage.engine.cancel(run["id"]):
                # Answer with the final state: wait (bounded) for the engine to record it.
                try:
                    await asyncio.wait_for(
                        asyncio.shield(finished), self.mage.engine.cancel_grace + 5
                    )
                except asyncio.TimeoutError:
                    pass
                return
        finally:
            self.mage.board.unwatch(run["id"], finished)
        # Queued, or running on no engine of this server: cancel the row directly.
        await self.mage.board.run(run["id"], "cancelled")


class RunBlockRunsHandler(MageHandler):
    """``GET api/pipeline_runs/{id}/block_runs``."""

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        run = await self.mage.store.get_run(parse_id(run_id, "pipeline run"))
        if run is None:
            raise ApiError(404, "not_found", f"pipeline run {run_id} not found")
        self.write_json({"block_runs": await self.mage.store.list_block_runs(run["id"])})


class BlockRunsHandler(MageHandler):
    """``GET api/block_runs?pipeline_run_id=``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        raw = self.get_argument("pipeline_run_id", None)
        if raw is None:
            raise ApiError(400, "invalid_parameter", "'pipeline_run_id' is required")
        run_id = positive_int(raw, "pipeline_run_id", 0)
        self.write_json({"block_runs": await self.mage.store.list_block_runs(run_id)})


class _BlockRunHandler(MageHandler):
    async def find_block_run(self, block_run_id: str) -> dict[str, Any]:
        block = await self.mage.store.get_block_run(parse_id(block_run_id, "block run"))
        if block is None:
            raise ApiError(404, "not_found", f"block run {block_run_id} not found")
        return block


class BlockRunOutputsHandler(_BlockRunHandler):
    """``GET api/block_runs/{id}/outputs``: bounded summaries of the block's outputs."""

    @web.authenticated
    @authorized
    async def get(self, block_run_id: str) -> None:
        block = await self.find_block_run(block_run_id)
        self.write_json({"outputs": block["outputs"]})


class BlockRunLogsHandler(_BlockRunHandler):
    """``GET api/block_runs/{id}/logs``: captured output, logger records and the error."""

    @web.authenticated
    @authorized
    async def get(self, block_run_id: str) -> None:
        block = await self.find_block_run(block_run_id)
        run = await self.mage.store.get_run(block["pipeline_run_id"])
        runs = [run] if run else []
        uuid = run["pipeline_uuid"] if run else ""
        self.write_json({"log": _block_log(uuid, block, runs)})


# Routes, relative to base_url (the ExtensionApp prefixes it). Order matters: specific first.
_ID = r"(?P<trigger_id>[^/]+)"
_UUID = r"(?P<uuid>.+?)"
ROUTES: list[tuple[str, type[MageHandler]]] = [
    (r"/api/pipelines", PipelinesHandler),
    (rf"/api/pipelines/{_UUID}/pipeline_schedules", TriggersHandler),
    (rf"/api/pipelines/{_UUID}/logs", PipelineLogsHandler),
    (rf"/api/pipelines/{_UUID}", PipelineHandler),
    (rf"/mage/pipelines/{_UUID}/variables", PipelineVariablesHandler),
    (r"/api/pipeline_schedules", TriggersHandler),
    (rf"/api/pipeline_schedules/{_ID}", TriggerHandler),
    (rf"/api/pipeline_schedules/{_ID}/pipeline_runs", TriggerRunsHandler),
    (rf"/api/pipeline_schedules/{_ID}/pipeline_runs/(?P<token>[^/]+)", TokenPathTriggerHandler),
    (rf"/api/pipeline_schedules/{_ID}/api_trigger", BearerTriggerHandler),
    (r"/api/pipeline_runs", RunsHandler),
    (r"/api/pipeline_runs/(?P<run_id>[^/]+)", RunHandler),
    (r"/api/pipeline_runs/(?P<run_id>[^/]+)/block_runs", RunBlockRunsHandler),
    (r"/api/block_runs", BlockRunsHandler),
    (r"/api/block_runs/(?P<block_run_id>[^/]+)/outputs", BlockRunOutputsHandler),
    (r"/api/block_runs/(?P<block_run_id>[^/]+)/logs", BlockRunLogsHandler),
]
