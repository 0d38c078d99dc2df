"""``api/pipeline_runs`` and ``api/block_runs``: runs, cancel and retry, block runs, logs."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..records import BlockRunRecord, RunRecord
from ..statuses import RunStatus
from ..validation import (
    RUN_STATUSES,
    ApiError,
    envelope,
    parse_id,
    positive_int,
)
from .base import MageHandler
from .pipelines import block_log

# -- runs ------------------------------------------------------------------------------------


async def write_runs(handler: MageHandler, filters: dict[str, Any]) -> None:
    status = handler.get_argument("status", None)
    if status:
        if status not in RUN_STATUSES:
            raise ApiError(400, "invalid_parameter", f"'status' must be one of {RUN_STATUSES}")
        filters["status"] = status
    limit = positive_int(handler.get_argument("_limit", None), "_limit", 30, 1000)
    offset = positive_int(handler.get_argument("_offset", None), "_offset", 0)
    runs, count = await handler.mage.store.runs_page(filters, limit, offset)
    # The page is JSON the database wrote: it goes out as it is, never parsed here.
    more = offset + limit < count
    handler.write_json_text(
        f'{{"pipeline_runs": {runs}, "metadata": {{"count": {count}, "next": {json.dumps(more)}}}}}'
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
        await write_runs(self, filters)


class RunHandler(MageHandler):
    """``GET api/pipeline_runs/{id}``; ``PUT`` cancels or retries."""

    async def _find(self, run_id: str) -> RunRecord:
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
        if data.get("status") == RunStatus.CANCELLED and action is None:
            await self.mage.runs.cancel(run)
        elif action == "retry_blocks" and "status" not in data:
            await self.mage.runs.retry(run)
        else:
            raise ApiError(
                400,
                "invalid_body",
                'expected {"pipeline_run": {"status": "cancelled"}} or '
                '{"pipeline_run": {"pipeline_run_action": "retry_blocks"}}',
            )
        self.write_json({"pipeline_run": await self._find(run_id)})


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
    async def find_block_run(self, block_run_id: str) -> BlockRunRecord:
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
        self.write_json({"log": block_log(uuid, block, runs)})
