"""``api/pipeline_schedules``: triggers, "run now" and the two per-trigger token routes."""

from __future__ import annotations

import hmac

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from tornado import web

from ..records import TriggerRecord
from ..validation import (
    ApiError,
    TriggerNotFound,
    envelope,
    parse_id,
    trigger_fields,
)
from .base import MageHandler
from .runs import write_runs

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
        self.write_json({"pipeline_schedules": [self.mage.runs.with_refusals(t) for t in triggers]})

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
            raise TriggerNotFound(trigger_id)
        self.write_json({"pipeline_schedule": self.mage.runs.with_refusals(trigger)})

    @web.authenticated
    @authorized
    async def delete(self, trigger_id: str) -> None:
        trigger = await self.mage.store.delete_trigger(parse_id(trigger_id, "trigger"))
        if trigger is None:
            raise TriggerNotFound(trigger_id)
        self.mage.runs.refusals.forget(trigger["id"])
        self.write_json({"pipeline_schedule": trigger})


class TriggerRunsHandler(MageHandler):
    """``GET api/pipeline_schedules/{id}/pipeline_runs``; ``POST`` = "run now" (Jupyter auth)."""

    @web.authenticated
    @authorized
    async def get(self, trigger_id: str) -> None:
        await self.find_trigger(trigger_id)
        await write_runs(self, {"pipeline_schedule_id": int(trigger_id)})

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
        def check(trigger: TriggerRecord) -> None:
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
