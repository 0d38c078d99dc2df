"""The base of every handler: JSON in, JSON out, JSON errors (never a traceback)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..pipeline import PipelineNotFound
from ..records import TriggerRecord
from ..runs import TriggerCall, TriggerCheck, pipeline_not_found
from ..storage import DatabaseUnavailable
from ..validation import (
    ApiError,
    TriggerNotFound,
    decode_argument,
    idempotency_key,
    parse_id,
    parse_json_object,
    run_request,
    wait_seconds,
)

if TYPE_CHECKING:
    from ..app import MageApp


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


def _error_body(
    status: int, error_type: str, message: str, errors: list[Any] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "type": error_type, "message": message}
    if errors is not None:
        error["errors"] = errors
    return {"message": message, "error": error}


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

    def write_json_text(self, body: str) -> None:
        """Answer 200 with a body that is already JSON text (a list page the database wrote)."""
        self.set_header("Content-Type", "application/json")
        self.finish(body)

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
        errors: list[Any] | None = None
        if isinstance(exc, DatabaseUnavailable):
            status_code = 503
            self.set_status(503)
            self.set_header("Retry-After", str(RETRY_AFTER))
            error_type, message = "database_unavailable", f"the database is unavailable: {exc}"
        elif isinstance(exc, ApiError):
            error_type, message, errors = exc.error_type, exc.message, exc.errors
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
        self.finish(json.dumps(_error_body(status_code, error_type, message, errors)))

    async def find_trigger(self, trigger_id: str) -> TriggerRecord:
        """A trigger by path id (with its run statistics), or 404."""
        trigger = await self.mage.store.get_trigger(parse_id(trigger_id, "trigger"))
        if trigger is None:
            raise TriggerNotFound(trigger_id)
        return self.mage.runs.with_refusals(trigger)

    async def find_pipeline(self, uuid: str) -> Any:
        """A pipeline by uuid, or 404 (also for paths outside the root dir)."""
        try:
            return await self.mage.repository.get(uuid)
        except PipelineNotFound:
            raise pipeline_not_found(uuid) from None

    async def accept_run(self, trigger_id: str, check: TriggerCheck | None = None) -> None:
        """Validate a trigger request, have the run service accept it, answer the run.

        ``?wait=<seconds>`` holds the answer until the run ends (or the wait expires). An
        ``Idempotency-Key`` header makes a repeated call answer the first run instead.
        """
        tid = parse_id(trigger_id, "trigger")
        refusals = self.mage.runs.refusals
        try:
            wait = wait_seconds(self.get_argument("wait", None), self.mage.max_wait_seconds)
            key = idempotency_key(self.request.headers.get("Idempotency-Key"))
            variables, execution_date, events = run_request(self.read_json())
            call = TriggerCall(tid, variables, execution_date, events, key, check)
            answer = await self.mage.runs.accept(call, wait)
        except TriggerNotFound:
            raise
        except ApiError as refused:  # kept for the trigger's page: the caller's mistake
            refusals.note(tid, refused)
            raise
        if answer.refusal is not None:
            refusal = answer.refusal
            refusals.note(tid, refusal)
            self.set_status(refusal.status_code)
            body = _error_body(refusal.status_code, refusal.error_type, refusal.message)
            self.write_json({**body, "pipeline_run": answer.run})
            return
        self.write_json({"pipeline_run": answer.run})
