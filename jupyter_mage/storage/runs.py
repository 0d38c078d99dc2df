"""Runs and block runs as they are read: one, many, by id, with logs and outputs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.orm import Session

from ..records import BlockRunRecord, RunPlan, RunRecord
from ..statuses import BlockRunStatus
from .database import Database, reads, writes
from .listing import read_page
from .schema import BlockRun, Run
from .views import block_run_to_dict, run_to_dict


class RunStore(Database):
    """Reading runs and block runs; creating block runs."""

    @reads
    def get_run(self, run_id: int, with_blocks: bool = False) -> RunRecord | None:
        """One run (and its block runs), or None."""
        with self._sessions() as s:
            run = s.get(Run, run_id)
            if run is None:
                return None
            data = run_to_dict(run)
            if with_blocks:
                data["block_runs"] = self._block_runs(s, [run_id], with_outputs=True)[run_id]
            return data

    def _plan(self, s: Session, run: Run) -> RunPlan:
        """Everything the engine needs to start a run, including private columns."""
        return RunPlan(
            **run_to_dict(run),
            trigger_variables=run.trigger_variables or {},
            trigger_settings=run.trigger_settings or {},
            block_runs=self._block_runs(s, [run.id])[run.id],
        )

    @reads
    def list_runs(
        self, filters: dict[str, Any], limit: int, offset: int, with_blocks: bool = True
    ) -> tuple[list[RunRecord], int]:
        """Runs newest first, filtered by column equality; also the total count."""
        with self._sessions() as s:
            conditions = [getattr(Run, key) == value for key, value in filters.items()]
            total = s.scalar(select(func.count(Run.id)).where(*conditions)) or 0
            runs = list(
                s.scalars(
                    select(Run)
                    .where(*conditions)
                    .order_by(Run.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            )
            rows = [run_to_dict(r) for r in runs]
            if with_blocks and rows:
                blocks = self._block_runs(s, [r["id"] for r in rows])
                for row in rows:
                    row["block_runs"] = blocks[row["id"]]
                    row["block_runs_count"] = len(row["block_runs"])
                    row["completed_block_runs_count"] = sum(
                        1 for b in row["block_runs"] if b["status"] == BlockRunStatus.COMPLETED
                    )
            return rows, total

    @reads
    def runs_page(self, filters: dict[str, Any], limit: int, offset: int) -> tuple[str, int]:
        """A list page: runs newest first with their block runs, as one JSON array (text)
        that the database wrote (see :mod:`.listing`); also how many runs the filters match."""
        with self.engine.connect() as conn:
            return read_page(conn, filters, limit, offset)

    # -- block runs --------------------------------------------------------------------------

    @writes
    def create_block_runs(self, run_id: int, block_uuids: Iterable[str]) -> list[BlockRunRecord]:
        """Create one ``initial`` block run per block; returns them in the given order."""
        with self._sessions.begin() as s:
            blocks = [BlockRun(pipeline_run_id=run_id, block_uuid=u) for u in block_uuids]
            s.add_all(blocks)
            s.flush()
            return [block_run_to_dict(b) for b in blocks]

    @reads
    def list_block_runs(self, run_id: int) -> list[BlockRunRecord]:
        """Block runs of one run, in the order they were created (dependency order)."""
        with self._sessions() as s:
            return self._block_runs(s, [run_id])[run_id]

    @reads
    def get_block_run(self, block_run_id: int) -> BlockRunRecord | None:
        """A block run with its logs and outputs, or None."""
        with self._sessions() as s:
            block = s.get(BlockRun, block_run_id)
            if block is None:
                return None
            data = block_run_to_dict(block)
            data["logs"] = block.logs or ""
            data["outputs"] = block.outputs or []
            return data

    @reads
    def block_runs_with_logs(self, run_ids: list[int]) -> list[BlockRunRecord]:
        """Block runs of several runs, logs included (for the pipeline logs route)."""
        with self._sessions() as s:
            rows = s.scalars(
                select(BlockRun).where(BlockRun.pipeline_run_id.in_(run_ids)).order_by(BlockRun.id)
            )
            return [{**block_run_to_dict(b), "logs": b.logs or ""} for b in rows]

    @staticmethod
    def _block_runs(
        s: Session, run_ids: list[int], with_outputs: bool = False
    ) -> dict[int, list[BlockRunRecord]]:
        found: dict[int, list[BlockRunRecord]] = {i: [] for i in run_ids}
        for block in s.scalars(
            select(BlockRun).where(BlockRun.pipeline_run_id.in_(run_ids)).order_by(BlockRun.id)
        ):
            row = block_run_to_dict(block)
            if with_outputs:
                row["outputs"] = block.outputs or []
            found[block.pipeline_run_id].append(row)
        return found

    @reads
    def get_runs(self, run_ids: Iterable[int], pipeline_uuid: str | None = None) -> list[RunRecord]:
        """Runs by id, newest first (optionally only those of one pipeline); missing ids are left
        out. Block runs are not included."""
        wanted = sorted(set(run_ids))
        found: list[RunRecord] = []
        with self._sessions() as s:
            for start in range(0, len(wanted), 500):  # bounded IN lists on any database
                query = select(Run).where(Run.id.in_(wanted[start : start + 500]))
                if pipeline_uuid is not None:
                    query = query.where(Run.pipeline_uuid == pipeline_uuid)
                found += [run_to_dict(r) for r in s.scalars(query)]
        return sorted(found, key=lambda r: -int(r["id"]))
