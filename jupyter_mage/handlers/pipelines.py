"""``api/pipelines``: pipelines, their global variables, their logs."""

from __future__ import annotations

from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from tornado import web

from ..records import BlockRunRecord, RunRecord
from ..validation import (
    ApiError,
    positive_int,
)
from .base import MageHandler

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
        block_logs = [block_log(uuid, b, runs) for b in blocks]
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


def _run_log_text(run: RunRecord) -> str:
    lines = [f"{run['created_at']} pipeline run {run['id']} accepted ({run['pipeline_uuid']})"]
    if run["started_at"]:
        lines.append(f"{run['started_at']} started")
    if run["completed_at"]:
        lines.append(f"{run['completed_at']} {run['status']}")
    error = (run.get("metrics") or {}).get("error")
    if error:
        lines.append(f"error: {error}")
    return "\n".join(lines) + "\n"


def block_log(uuid: str, block: BlockRunRecord, runs: list[RunRecord]) -> dict[str, Any]:
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
