"""What a run's kernel says, and where it goes.

:class:`RunMessages` routes the iopub messages of a run's execute request: the run-time's
events (``block_started``, ``output``, ``block_finished``, ``run_finished``, each numbered) to the
recorder's queue, printed text and display data to the block that was running
(:class:`BlockLogs` keeps them bounded), and the count of events to :class:`KernelReport`, from
which the engine decides whether the run may count as completed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import nbformat

from . import runtime
from .statuses import BlockRunStatus, RunStatus
from .storage import utcnow


@dataclass
class BlockState:
    """What the engine knows of one block during a run."""

    block_run_id: int
    status: BlockRunStatus
    #: Log text received and not yet written to the block run.
    log: list[str] = field(default_factory=list)
    log_chars: int = 0
    cell_outputs: list[dict[str, Any]] = field(default_factory=list)
    output_bytes: int = 0
    #: The run-time reported the block's start and its end (``block_started``/``_finished``).
    started: bool = False
    reported: bool = False


@dataclass
class KernelReport:
    """What the kernel said about a run, as it arrived: the basis of the run's final status."""

    #: Events received (each one carries a sequence number).
    events: int = 0
    #: ``run_finished`` came: the number of events the run-time sent, and how the run ended
    #: (``finished``, ``interrupted``, ``runtime_error``), with the run-time's own error.
    sent: int | None = None
    ending: str | None = None
    runtime_error: dict[str, Any] | None = None
    #: What was printed after the last block ended (``run_finished``'s ``log``).
    trailing_output: str = ""
    #: The execute reply's content, once the request is over.
    reply: dict[str, Any] | None = None

    @property
    def lost(self) -> int:
        """Events the run-time sent that never arrived (0 until ``run_finished`` came)."""
        return 0 if self.sent is None else max(self.sent - self.events, 0)

    def problem(self) -> str | None:
        """Why the run cannot count as completed from the kernel's side, or None."""
        if self.ending == "runtime_error":
            error = self.runtime_error or {}
            return (
                "jupyter-mage's run-time failed in the kernel: "
                f"{error.get('type', 'Error')}: {error.get('message', '')}"
            )
        if self.sent is None:
            reply = self.reply or {}
            if reply.get("status") == "error":
                return (
                    "the kernel failed the run's request: "
                    f"{reply.get('ename', 'Error')}: {reply.get('evalue', '')}"
                )
            return "the kernel ended the run's request before every block reported its end"
        if self.lost:
            return f"{self.lost} of {self.sent} messages from the kernel were lost"
        if self.ending == "interrupted":
            return "the run was interrupted (KeyboardInterrupt)"
        return None


@dataclass
class BlockLogs:
    """What blocks print, kept within bounds: their logs and their executed cells' outputs."""

    #: Characters of log kept per block run (``KernelEngine.max_log_chars``).
    log_chars: int
    #: Bytes of display outputs kept per block in the executed notebook.
    cell_output_bytes: int
    #: Characters kept of an error's message and of its traceback.
    error_chars: int

    def append_log(self, state: BlockState, text: str) -> None:
        """Add text to a block's log, within ``max_log_chars`` (a second bound: the run-time
        already cuts what it captures; this one also covers descriptor-level output)."""
        room = self.log_chars - state.log_chars
        if room <= 0 or not text:
            return
        if len(text) > room:
            text = text[:room] + "\n[log truncated]\n"
        state.log.append(text)
        state.log_chars += len(text)

    def add_output(self, state: BlockState, name: str, text: str) -> None:
        """Printed text: the block's log, and a stream output of its executed cell."""
        before = state.log_chars
        self.append_log(state, text)
        kept = text[: state.log_chars - before]
        if not kept:
            return
        outputs = state.cell_outputs
        if outputs and outputs[-1].get("output_type") == "stream" and outputs[-1]["name"] == name:
            outputs[-1]["text"] += kept  # one output per stretch of a stream, as Jupyter shows it
        else:
            outputs.append(nbformat.v4.new_output("stream", name=name, text=kept))

    def add_display(
        self, state: BlockState, data: dict[str, Any], metadata: dict[str, Any]
    ) -> None:
        """Display data of a block: its text in the log, the bundle in its executed cell."""
        self.append_log(state, str(data.get("text/plain", "")) + "\n")
        size = sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in data.values())
        if state.output_bytes + size > self.cell_output_bytes:
            if state.output_bytes <= self.cell_output_bytes:
                note = f"[display outputs beyond {self.cell_output_bytes} bytes not kept]\n"
                state.cell_outputs.append(
                    nbformat.v4.new_output("stream", name="stderr", text=note)
                )
                state.output_bytes = self.cell_output_bytes + 1
            return
        state.output_bytes += size
        state.cell_outputs.append(
            nbformat.v4.new_output("display_data", data=data, metadata=metadata)
        )

    @staticmethod
    def take(state: BlockState) -> str:
        """The block's log text not yet written, now taken."""
        logs = "".join(state.log)
        state.log.clear()
        return logs

    def bounded_error(self, error: dict[str, Any]) -> dict[str, Any]:
        """An error as stored: type, message and traceback each within ``max_error_chars``."""
        return {
            key: runtime.cut_text(str(error.get(key, "")), self.error_chars)
            for key in ("type", "message", "traceback")
        }


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: its final status and, unless it completed, why."""

    status: RunStatus
    reason: str | None = None


@dataclass
class ActiveRun:
    """A run between kernel start and its final status."""

    run_id: int
    kernel_id: str | None = None
    cancel_requested: bool = False
    failure: str | None = None
    timeout_status: RunStatus | None = None
    execute_task: asyncio.Task[Any] | None = None
    report: KernelReport = field(default_factory=KernelReport)
    #: Set by the kernel's ``run_finished`` event: every block has its final status.
    blocks_done: asyncio.Event = field(default_factory=asyncio.Event)
    #: The final status as written, and why (for the server log's line about the run).
    outcome: RunOutcome | None = None


#: One block-run write: (block run id, new status or None for a log append, logs, columns).
BlockChange = tuple[int, "BlockRunStatus | None", str, dict[str, Any]]


class RunMessages:
    """Routes a run's iopub messages: events to the recorder, output to its block's log.

    Every stream message between a block's ``block_started`` and ``block_finished`` belongs to
    that block (iopub keeps order); most output arrives in the run-time's own ``output``
    events, the rest (text written to the process's descriptors, display data) as ordinary
    messages.
    """

    def __init__(
        self,
        run_id: int,
        logs: BlockLogs,
        states: dict[str, BlockState],
        events: asyncio.Queue[dict[str, Any] | None],
        log: logging.Logger,
    ) -> None:
        self.run_id = run_id
        self.logs = logs
        self.states = states
        self.events = events
        self.log = log
        self.report = KernelReport()
        #: Set by the kernel's ``run_finished`` event: every block has its final status.
        self.finished = asyncio.Event()
        self.current: BlockState | None = None

    def __call__(self, msg: dict[str, Any]) -> None:
        try:
            self._route(msg)
        except Exception:  # a malformed message must not stop the run's reader
            self.log.exception("run %s: unreadable kernel message", self.run_id)

    def _route(self, msg: dict[str, Any]) -> None:
        msg_type = msg["msg_type"]
        content = msg["content"]
        data = content.get("data", {}) if msg_type == "display_data" else {}
        event = data.get(runtime.EVENT_MIME)
        if isinstance(event, dict):
            self._event(event)
            return
        state = self.current
        if state is None:
            return
        if msg_type == "stream":
            self.logs.add_output(state, content.get("name", "stdout"), content["text"])
        elif msg_type in ("display_data", "execute_result"):
            self.logs.add_display(state, data, content.get("metadata", {}))
        elif msg_type == "error":
            self.logs.append_log(state, "\n".join(content.get("traceback", [])) + "\n")

    def _event(self, event: dict[str, Any]) -> None:
        report = self.report
        report.events += 1
        kind = event.get("event")
        if kind == "output":
            state = self.states.get(event.get("block") or "")
            for name, text in event.get("parts", []):
                if state is not None:
                    self.logs.add_output(state, name, text)
            if state is not None and state.log:
                self.events.put_nowait(event)  # a live log append
            return
        event["received_at"] = utcnow()
        if kind == "block_started":
            self.current = self.states.get(event.get("block") or "")
        elif kind == "block_finished":
            self.current = None
        elif kind == "run_finished":
            report.sent = event.get("seq")
            report.ending = event.get("ending")
            report.runtime_error = event.get("error")
            report.trailing_output = str(event.get("log") or "")
            self.finished.set()
        self.events.put_nowait(event)
