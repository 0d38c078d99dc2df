"""Recording a run: its block events written in the order the kernel sent them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nbformat

from .output_display import summary_bundle
from .run_messages import ActiveRun, BlockChange, BlockLogs, BlockState
from .state import StatusBoard
from .statuses import BlockRunStatus


async def until_written(log: logging.Logger, write: Any, *args: Any) -> Any:
    """``await write(*args)``, tried again (backing off to 5 s) until it succeeds.

    For the engine's own writes (block events, final statuses): a run must never be left
    behind its real state because the database refused a write once.
    """
    delay = 0.1
    while True:
        try:
            return await write(*args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("jupyter-mage: write failed (%s); trying again", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class RunRecorder:
    """Turns a run's events into block-run writes, a batch per transaction.

    Parameters
    ----------
    board
        Where statuses change.
    logs
        The bounds of what blocks print.
    log
        The engine's logger.
    """

    def __init__(self, board: StatusBoard, logs: BlockLogs, log: logging.Logger) -> None:
        self.board = board
        self.logs = logs
        self.log = log

    async def record(
        self,
        events: asyncio.Queue[dict[str, Any] | None],
        states: dict[str, BlockState],
        active: ActiveRun,
    ) -> None:
        """Write block events in the order the kernel sent them, a batch per transaction.

        A write that fails (the database locked by another process, full, gone) is tried again
        until it lands: a block's recorded status is never left behind its real one.
        """
        finished = False
        while not finished:
            batch = [await events.get()]
            while not events.empty():
                batch.append(events.get_nowait())
            changes: list[BlockChange] = []
            targets: list[tuple[BlockState, BlockRunStatus | None]] = []
            for event in batch:
                if event is None:
                    finished = True
                    break
                state = states.get(event.get("block") or "")
                if state is None:
                    continue
                kind = event["event"]
                if kind == "block_started":
                    state.started = True
                    values = {"started_at": event["received_at"]}
                    changes.append((state.block_run_id, BlockRunStatus.RUNNING, "", values))
                    targets.append((state, BlockRunStatus.RUNNING))
                elif kind == "block_finished":
                    state.reported = True
                    status, logs, values = self.finished_change(state, event, active)
                    values["completed_at"] = event["received_at"]
                    changes.append((state.block_run_id, status, logs, values))
                    targets.append((state, status))
            # Live logs: what running blocks printed so far (a finished block's went with it).
            for state in states.values():
                if state.log and state.started and not state.reported:
                    changes.append((state.block_run_id, None, self.logs.take(state), {}))
                    targets.append((state, None))
            if not changes:
                continue
            applied = await until_written(self.log, self.board.blocks, changes)
            for (state, moved_to), ok in zip(targets, applied, strict=True):
                if ok and moved_to is not None:
                    state.status = moved_to

    def finished_change(
        self, state: BlockState, event: dict[str, Any], active: ActiveRun
    ) -> tuple[BlockRunStatus, str, dict[str, Any]]:
        """Status, log text and columns of a ``block_finished`` event."""
        error = event.get("error") or {}
        try:
            status = BlockRunStatus(event["status"])
        except ValueError:  # a run-time fault: the block did not end as anything we know
            status = BlockRunStatus.FAILED
            error = {"type": "RunError", "message": f"unknown block status {event['status']!r}"}
        if status == BlockRunStatus.FAILED and error.get("type") == "KeyboardInterrupt":
            # The interrupt of a cancel ends the block cancelled; a run timeout's, failed with
            # the timeout as its error. A KeyboardInterrupt the block raised itself stays one.
            if active.cancel_requested:
                status = BlockRunStatus.CANCELLED
            elif active.timeout_status is not None and active.failure:
                error = {"type": "RunTimeout", "message": active.failure, "traceback": ""}
        values: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        for key in ("seconds", "attempts"):
            if key in event:
                metrics[key] = event[key]
        if event.get("log"):  # printed while no block was running (conditions, callbacks)
            self.logs.add_output(state, "stdout", str(event["log"]))
        dropped = event.get("dropped_chars") or 0
        if dropped:
            note = (
                f"\n[{dropped} more characters of output not kept: "
                f"the limit is {self.logs.log_chars} per block]\n"
            )
            state.log.append(note)
            state.cell_outputs.append(_output("stream", name="stderr", text=note))
        if status == BlockRunStatus.FAILED:
            error = self.logs.bounded_error(error)
            metrics["error"] = error
            self.logs.append_log(state, error.get("traceback", ""))
            state.cell_outputs.append(
                _output(
                    "error",
                    ename=error.get("type", "Error"),
                    evalue=error.get("message", ""),
                    traceback=error.get("traceback", "").splitlines(),
                )
            )
        if status == BlockRunStatus.COMPLETED:
            values["outputs"] = outputs = event.get("outputs", [])
            if outputs:  # the executed notebook shows what the block returned, as a table
                count = f"{len(outputs)} output{'s' if len(outputs) != 1 else ''}"
                bundle = summary_bundle(str(event.get("block", "")), outputs, count)
                state.cell_outputs.append(_output("display_data", data=bundle, metadata={}))
        if metrics:
            values["metrics"] = metrics
        return status, self.logs.take(state), values


def _output(output_type: str, **fields: Any) -> nbformat.NotebookNode:
    """A cell output as nbformat has it, without nbformat's schema check of each one (a
    jsonschema validation per block: a tenth of the server's CPU on a 500-block run). These
    shapes are fixed here; the executed notebook is valid as a whole (tests read it back)."""
    return nbformat.NotebookNode(output_type=output_type, **fields)
