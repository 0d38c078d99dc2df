"""The run engine: one claimed run, one fresh kernel, the whole DAG in one execute request.

Round trips are the cost of a warm kernel (a few ms each; the blocks themselves take microseconds),
so the engine sends the in-kernel runtime, the plan and the variables as ONE execute request, and
the kernel streams per-block events back on iopub (see :mod:`jupyter_mage.runtime`). Stream output
between a block's ``block_started`` and ``block_finished`` events is that block's log: iopub keeps
the order, so attribution is exact.

Kernels come from the server's own kernel manager, so they appear as Jupyter kernels and the same
code runs on a Kernel/Enterprise Gateway.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from jupyter_core.utils import ensure_async
from traitlets import Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from . import runtime
from .execute import ExecuteRequest
from .kernels import KernelHandle, KernelPool
from .pipeline import Pipeline, PipelineNotFound, PipelineRepository
from .state import StatusBoard
from .storage import BLOCK_FINISHED, Store, utcnow
from .variables import merge_variables, parse_time, system_keys

RUNTIME_SOURCE = Path(runtime.__file__).read_text(encoding="utf-8")
RUNTIME_DIGEST = hashlib.sha256(RUNTIME_SOURCE.encode()).hexdigest()[:16]
#: Seconds between checks that a run's kernel is still alive.
WATCH_INTERVAL = 0.5

# Loads the runtime as a private module (once per kernel: warm kernels have it preloaded), then
# runs the plan. Every argument is a string literal made with repr().
_BOOTSTRAP = """\
def __jupyter_mage_bootstrap(source, digest, plan, cwd):
    import os, sys, types
    module = sys.modules.get('_jupyter_mage_runtime')
    if getattr(module, '__digest__', None) != digest:
        if source is None:
            raise RuntimeError('jupyter-mage: the warm kernel lost its run-time')
        module = types.ModuleType('_jupyter_mage_runtime')
        exec(compile(source, '<jupyter-mage runtime>', 'exec'), module.__dict__)
        module.__digest__ = digest
        module.__home__ = os.getcwd()
        sys.modules['_jupyter_mage_runtime'] = module
    if plan is not None:
        if cwd:
            os.chdir(cwd)
        module.run_pipeline(plan)
try:
    __jupyter_mage_bootstrap({source!r}, {digest!r}, {plan!r}, {cwd!r})
finally:
    del __jupyter_mage_bootstrap
"""


def kernel_code(payload: dict[str, Any] | None, cwd: str = "", preloaded: bool = False) -> str:
    """The execute request of a run: the runtime's source and the plan, both as string literals.

    Nothing from the request is spliced into code: the plan is JSON text inside a Python string
    literal (``repr`` of a ``str`` is always a valid, inert literal) and is decoded by
    ``json.loads`` inside the kernel. ``cwd`` (the notebook's folder, relative to the root dir
    where kernels start) is a literal too. ``payload=None`` only loads the runtime (warm-up);
    ``preloaded`` leaves the runtime's 30 kB source out (a warm kernel has it already).
    """
    plan = None if payload is None else json.dumps(payload, allow_nan=False)
    source = None if preloaded else RUNTIME_SOURCE
    return _BOOTSTRAP.format(source=source, digest=RUNTIME_DIGEST, plan=plan, cwd=cwd)


@dataclass
class BlockState:
    """What the engine knows of one block during a run."""

    block_run_id: int
    status: str
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
class ActiveRun:
    """A run between kernel start and its final status."""

    run_id: int
    kernel_id: str | None = None
    cancel_requested: bool = False
    failure: str | None = None
    timeout_status: str | None = None
    execute_task: asyncio.Task[Any] | None = None
    report: KernelReport = field(default_factory=KernelReport)
    #: Set by the kernel's ``run_finished`` event: every block has its final status.
    blocks_done: asyncio.Event = field(default_factory=asyncio.Event)


#: One block-run write: (block run id, new status or None for a log append, logs, columns).
BlockChange = tuple[int, "str | None", str, dict[str, Any]]


class RunMessages:
    """Routes a run's iopub messages: events to the recorder, output to its block's log.

    Every stream message between a block's ``block_started`` and ``block_finished`` belongs to
    that block (iopub keeps order); most output arrives in the run-time's own ``output``
    events, the rest (text written to the process's descriptors, display data) as ordinary
    messages.
    """

    def __init__(
        self,
        engine: KernelEngine,
        active: ActiveRun,
        states: dict[str, BlockState],
        events: asyncio.Queue[dict[str, Any] | None],
    ) -> None:
        self.engine = engine
        self.active = active
        self.states = states
        self.events = events
        self.current: BlockState | None = None

    def __call__(self, msg: dict[str, Any]) -> None:
        try:
            self._route(msg)
        except Exception:  # a malformed message must not stop the run's reader
            self.engine.log.exception("run %s: unreadable kernel message", self.active.run_id)

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
            self.engine.add_output(state, content.get("name", "stdout"), content["text"])
        elif msg_type in ("display_data", "execute_result"):
            self.engine.add_display(state, data, content.get("metadata", {}))
        elif msg_type == "error":
            self.engine.append_log(state, "\n".join(content.get("traceback", [])) + "\n")

    def _event(self, event: dict[str, Any]) -> None:
        report = self.active.report
        report.events += 1
        kind = event.get("event")
        if kind == "output":
            state = self.states.get(event.get("block") or "")
            for name, text in event.get("parts", []):
                if state is not None:
                    self.engine.add_output(state, name, text)
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
            self.active.blocks_done.set()
        self.events.put_nowait(event)


class KernelEngine(LoggingConfigurable):
    """Executes claimed runs in kernels started by the server's kernel manager."""

    kernel_name = Unicode(
        "python3",
        help="Kernel spec used when a pipeline notebook names none.",
    ).tag(config=True)

    kernel_startup_timeout = Float(
        60.0, help="Seconds to wait for a run's kernel to be ready before the run fails."
    ).tag(config=True)

    max_log_chars = Int(
        runtime.LOG_LIMIT,
        help="Characters of output kept per block run; the rest is counted and noted, not kept.",
    ).tag(config=True)

    max_error_chars = Int(
        runtime.ERROR_LIMIT,
        help=(
            "Characters kept of a block error's message and of its traceback (each; head and "
            "tail, the middle cut). Errors are stored with the run and shown in every list."
        ),
    ).tag(config=True)

    max_cell_output_bytes = Int(
        5 * 1024 * 1024,
        help=(
            "Bytes of display outputs (tables, images) kept per block in the executed notebook; "
            "later ones are left out with a note. Printed text is bounded by max_log_chars."
        ),
    ).tag(config=True)

    cancel_grace = Float(
        5.0,
        help="Seconds a cancelled run's kernel gets to stop after an interrupt before it is killed.",
    ).tag(config=True)

    runs_dir = Unicode(
        "mage_runs",
        help="Folder (relative to the server root, or absolute) for executed copies of runs.",
    ).tag(config=True)

    def __init__(
        self,
        *,
        store: Store,
        board: StatusBoard,
        repository: PipelineRepository,
        kernel_manager: Any,
        session_manager: Any = None,
        pool_size: int = 0,
        reuse_kernels: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.board = board
        self.repository = repository
        self.kernel_manager = kernel_manager
        self.kernels = KernelPool(
            kernel_manager,
            pool_size,
            self.kernel_startup_timeout,
            self.log,
            warmup_code=kernel_code(None),
            reuse=reuse_kernels,
            session_manager=session_manager,
        )
        self._active: dict[int, ActiveRun] = {}
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def runs_path(self) -> Path:
        """Absolute folder of executed notebooks."""
        path = Path(self.runs_dir)
        return path if path.is_absolute() else self.repository.root / path

    # -- public API --------------------------------------------------------------------------

    async def execute(self, plan: dict[str, Any]) -> None:
        """Run a claimed (``running``) run to its final status. Never raises for run failures.

        ``plan`` is the run as :meth:`Store.claim_runs` (or a started ``create_run``) gives it.
        """
        active = ActiveRun(plan["id"])
        self._active[active.run_id] = active
        try:
            await self._execute(plan, active)
        finally:
            self._active.pop(active.run_id, None)

    async def cancel(self, run_id: int) -> bool:
        """Ask a running run to stop: interrupt its kernel, kill it after a grace period.

        Returns False when this engine is not running that run.
        """
        active = self._active.get(run_id)
        if active is None:
            return False
        active.cancel_requested = True
        if active.kernel_id is not None:
            await self._interrupt_then_kill(active)
        return True

    async def shutdown(self) -> None:
        """Stop every active run (server stopping), wait for kernel releases, stop the pool."""
        self.kernels.closing = True
        for active in list(self._active.values()):
            active.failure = "the server stopped during the run"
            if active.execute_task is not None:
                active.execute_task.cancel()
        for _ in range(100):  # the stopped runs record their end and release their kernels
            if not self._active:
                break
            await asyncio.sleep(0.1)
        if self._background:
            await asyncio.wait(self._background, timeout=10)
        await self.kernels.stop()

    # -- one run -----------------------------------------------------------------------------

    async def _execute(self, plan: dict[str, Any], active: ActiveRun) -> None:
        run_id = plan["id"]
        try:
            pipeline = await self.repository.get(plan["pipeline_uuid"])
        except PipelineNotFound:
            await self._final_status(
                run_id, "failed", {"error": f"pipeline '{plan['pipeline_uuid']}' not found"}
            )
            return
        if not pipeline.is_valid:
            problems = "; ".join(e["message"] for e in pipeline.errors)
            await self._final_status(run_id, "failed", {"error": f"invalid pipeline: {problems}"})
            return

        states, skip = await self._prepare_block_runs(plan, pipeline)
        payload = self._payload(plan, pipeline, skip)
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        recorder = asyncio.create_task(self._record_events(events, states, active))
        messages = RunMessages(self, active, states, events)
        handle = None
        try:
            if active.cancel_requested:  # cancelled before its kernel was asked for
                return await self._finish(plan, pipeline, states, skip, active)
            reuse_key = pipeline.uuid if self.kernels.reuse else None
            handle = await self.kernels.acquire(pipeline.kernel_name or self.kernel_name, reuse_key)
            active.kernel_id = handle.kernel_id
            cwd = Path(pipeline.path).parent.as_posix()
            code = kernel_code(payload, "" if cwd == "." else cwd, preloaded=handle.preloaded)
            await self._run_in_kernel(active, handle, code, messages, plan["trigger_settings"])
        except asyncio.CancelledError:
            if not active.cancel_requested and active.failure is None:
                active.failure = "the run was stopped"
        except Exception as exc:
            self.log.warning("run %s: kernel error: %s", run_id, exc)
            active.failure = active.failure or f"kernel error: {exc}"
        finally:
            events.put_nowait(None)
            await recorder
        try:
            await self._finish(plan, pipeline, states, skip, active)
        finally:
            if handle is not None:
                # After the final status: a kernel shutdown can stall seconds, and neither it
                # nor the pool's refill should delay the run's answer.
                clean = not (active.failure or active.cancel_requested or active.timeout_status)
                reuse_key = pipeline.uuid if self.kernels.reuse and clean else None
                self._spawn(self._release(active, handle, reuse_key))

    async def _run_in_kernel(
        self,
        active: ActiveRun,
        handle: KernelHandle,
        code: str,
        messages: RunMessages,
        settings: dict[str, Any],
    ) -> None:
        """Send the run's request; return when every block reported, or the request is over.

        Also over: the kernel died (the watchdog), or the run's own timeout expired (then the
        kernel is interrupted, and killed if it ignores that).
        """
        kernel = self.kernel_manager.get_kernel(handle.kernel_id)
        if active.cancel_requested:
            return
        request = ExecuteRequest(handle.client, messages)
        active.execute_task = asyncio.ensure_future(request.run(code))
        watchdog = asyncio.ensure_future(self._watch_kernel(kernel))
        blocks_done = asyncio.ensure_future(active.blocks_done.wait())
        timeout = settings.get("timeout")
        try:
            done, _ = await asyncio.wait(
                {active.execute_task, watchdog, blocks_done},
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:  # the run's own timeout (trigger setting "timeout", seconds)
                active.timeout_status = settings.get("timeout_status") or "failed"
                active.failure = f"the run timed out after {timeout:g} s"
                await self._interrupt_then_kill(active)
                done, _ = await asyncio.wait(
                    {active.execute_task, watchdog}, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            watchdog.cancel()
            blocks_done.cancel()
        if blocks_done in done and not active.execute_task.done():
            return  # the kernel wraps the request up meanwhile; the release waits for it
        if active.execute_task not in done:
            active.execute_task.cancel()
            if not active.cancel_requested:
                active.failure = active.failure or "the kernel died during the run"
            return
        active.report.reply = active.execute_task.result()

    async def _release(
        self, active: ActiveRun, handle: KernelHandle, reuse_key: str | None
    ) -> None:
        """Hand the kernel back once its request is over (a run can end a moment before)."""
        task = active.execute_task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=self.cancel_grace)
            if not task.done():
                task.cancel()
                reuse_key = None
        if task is not None and task.done() and not task.cancelled():
            failed = task.exception() is not None or task.result().get("status") != "ok"
            reuse_key = None if failed else reuse_key
        await self.kernels.release(handle, reuse_key)

    @staticmethod
    async def _watch_kernel(kernel: Any) -> None:
        # A dead kernel never answers: detect it instead of waiting forever on iopub. (Run
        # kernels have no restarter: see KernelPool.start.)
        while await ensure_async(kernel.is_alive()):
            await asyncio.sleep(WATCH_INTERVAL)

    async def _interrupt_then_kill(self, active: ActiveRun) -> None:
        kernel_id = active.kernel_id
        try:
            await ensure_async(self.kernel_manager.interrupt_kernel(kernel_id))
        except Exception as exc:
            self.log.warning("run %s: interrupt failed: %s", active.run_id, exc)

        async def kill_if_stuck() -> None:
            await asyncio.sleep(self.cancel_grace)
            if (
                active.run_id in self._active
                and active.execute_task
                and not active.execute_task.done()
            ):
                self.log.warning("run %s: kernel ignored the interrupt; killing it", active.run_id)
                active.execute_task.cancel()

        self._spawn(kill_if_stuck())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- block runs and events ---------------------------------------------------------------

    async def _prepare_block_runs(
        self, plan: dict[str, Any], pipeline: Pipeline
    ) -> tuple[dict[str, BlockState], set[str]]:
        """Create missing block runs, or (on retry) reset the ones to run again; which to skip.

        Block runs are created with the run; the notebook may have changed since: blocks added
        get theirs now, and those of blocks removed end ``cancelled``.
        """
        blocks = pipeline.runnable_blocks()
        existing = {b["block_uuid"]: b for b in plan["block_runs"]}
        missing = [b.uuid for b in blocks if b.uuid not in existing]
        if missing:
            for row in await self.store.create_block_runs(plan["id"], missing):
                existing[row["block_uuid"]] = row
        current = {b.uuid for b in blocks}
        for uuid, row in existing.items():
            if uuid not in current and row["status"] not in BLOCK_FINISHED:
                await self.board.block(row["id"], "cancelled", logs="the block left the notebook\n")
        # Outputs live in the kernel, so a retried block needs its upstream blocks again.
        by_uuid = {b.uuid: b for b in blocks}
        needed: set[str] = set()
        stack = [b.uuid for b in blocks if existing[b.uuid]["status"] != "completed"]
        while stack:
            uuid = stack.pop()
            if uuid not in needed:
                needed.add(uuid)
                stack.extend(by_uuid[uuid].upstream_blocks)
        states: dict[str, BlockState] = {}
        for block in blocks:
            row = existing[block.uuid]
            status = row["status"]
            if block.uuid in needed and status != "initial":
                await self.board.block(row["id"], "initial")
                status = "initial"
            states[block.uuid] = BlockState(row["id"], status)
        return states, {b.uuid for b in blocks if b.uuid not in needed}

    def _payload(self, plan: dict[str, Any], pipeline: Pipeline, skip: set[str]) -> dict[str, Any]:
        event_variables = plan["event_variables"] or {}
        run_variables = plan["variables"]
        execution_date = parse_time(plan["execution_date"])
        return {
            "variables": merge_variables(
                pipeline.variables, plan["trigger_variables"], run_variables, event_variables
            ),
            "system": system_keys(
                run_id=plan["id"],
                pipeline_uuid=pipeline.uuid,
                trigger_name=plan["pipeline_schedule_name"],
                execution_date=execution_date,
                execution_partition=run_variables.get("execution_partition", ""),
                event_variables=event_variables,
            ),
            "allow_blocks_to_fail": bool(plan["trigger_settings"].get("allow_blocks_to_fail")),
            "limits": {"log_chars": self.max_log_chars, "error_chars": self.max_error_chars},
            "blocks": [
                {
                    "uuid": b.uuid,
                    "type": b.type,
                    "source": b.source,
                    "upstream": b.upstream_blocks,
                    "skip": b.uuid in skip,
                    **pipeline.block_plan(b),  # conditionals, callbacks, sensor settings
                }
                for b in pipeline.runnable_blocks()
            ],
        }

    # -- what blocks print ------------------------------------------------------------------

    def append_log(self, state: BlockState, text: str) -> None:
        """Add text to a block's log, within ``max_log_chars`` (a second bound: the run-time
        already cuts what it captures; this one also covers descriptor-level output)."""
        room = self.max_log_chars - state.log_chars
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
        if state.output_bytes + size > self.max_cell_output_bytes:
            if state.output_bytes <= self.max_cell_output_bytes:
                note = f"[display outputs beyond {self.max_cell_output_bytes} bytes not kept]\n"
                state.cell_outputs.append(
                    nbformat.v4.new_output("stream", name="stderr", text=note)
                )
                state.output_bytes = self.max_cell_output_bytes + 1
            return
        state.output_bytes += size
        state.cell_outputs.append(
            nbformat.v4.new_output("display_data", data=data, metadata=metadata)
        )

    # -- block runs and events ---------------------------------------------------------------

    async def _record_events(
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
            targets: list[tuple[BlockState, str | None]] = []
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
                    changes.append((state.block_run_id, "running", "", values))
                    targets.append((state, "running"))
                elif kind == "block_finished":
                    state.reported = True
                    status, logs, values = self._finished_change(state, event, active)
                    values["completed_at"] = event["received_at"]
                    changes.append((state.block_run_id, status, logs, values))
                    targets.append((state, status))
            # Live logs: what running blocks printed so far (a finished block's went with it).
            for state in states.values():
                if state.log and state.started and not state.reported:
                    changes.append((state.block_run_id, None, self._take_log(state), {}))
                    targets.append((state, None))
            if not changes:
                continue
            applied = await self._until_written(self.board.blocks, changes)
            for (state, moved_to), ok in zip(targets, applied, strict=True):
                if ok and moved_to is not None:
                    state.status = moved_to

    async def _until_written(self, write: Any, *args: Any) -> Any:
        """``await write(*args)``, tried again (backing off to 5 s) until it succeeds."""
        delay = 0.1
        while True:
            try:
                return await write(*args)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("jupyter-mage: write failed (%s); trying again", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @staticmethod
    def _take_log(state: BlockState) -> str:
        logs = "".join(state.log)
        state.log.clear()
        return logs

    def _finished_change(
        self, state: BlockState, event: dict[str, Any], active: ActiveRun
    ) -> tuple[str, str, dict[str, Any]]:
        """Status, log text and columns of a ``block_finished`` event."""
        status = event["status"]
        error = event.get("error") or {}
        if status == "failed" and error.get("type") == "KeyboardInterrupt":
            # The interrupt of a cancel ends the block cancelled; a run timeout's, failed with
            # the timeout as its error. A KeyboardInterrupt the block raised itself stays one.
            if active.cancel_requested:
                status = "cancelled"
            elif active.timeout_status is not None and active.failure:
                error = {"type": "RunTimeout", "message": active.failure, "traceback": ""}
        values: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        for key in ("seconds", "attempts"):
            if key in event:
                metrics[key] = event[key]
        if event.get("log"):  # printed while no block was running (conditions, callbacks)
            self.add_output(state, "stdout", str(event["log"]))
        dropped = event.get("dropped_chars") or 0
        if dropped:
            note = (
                f"\n[{dropped} more characters of output not kept: "
                f"the limit is {self.max_log_chars} per block]\n"
            )
            state.log.append(note)
            state.cell_outputs.append(nbformat.v4.new_output("stream", name="stderr", text=note))
        if status == "failed":
            error = self._bounded_error(error)
            metrics["error"] = error
            self.append_log(state, error.get("traceback", ""))
            state.cell_outputs.append(
                nbformat.v4.new_output(
                    "error",
                    ename=error.get("type", "Error"),
                    evalue=error.get("message", ""),
                    traceback=error.get("traceback", "").splitlines(),
                )
            )
        if status == "completed":
            values["outputs"] = event.get("outputs", [])
        if metrics:
            values["metrics"] = metrics
        return status, self._take_log(state), values

    def _bounded_error(self, error: dict[str, Any]) -> dict[str, Any]:
        """An error as stored: type, message and traceback each within ``max_error_chars``."""
        return {
            key: runtime.cut_text(str(error.get(key, "")), self.max_error_chars)
            for key in ("type", "message", "traceback")
        }

    # -- the run's end -------------------------------------------------------------------------

    async def _final_status(
        self, run_id: int, status: str, metrics: dict[str, Any], executed: str | None = None
    ) -> None:
        """Write a run's final status, trying again until it lands: a run never stays running."""
        await self._until_written(
            functools.partial(
                self.board.run, run_id, status, metrics=metrics, executed_notebook=executed
            )
        )

    def _ending(
        self, plan: dict[str, Any], states: dict[str, BlockState], skip: set[str], active: ActiveRun
    ) -> tuple[str, str | None]:
        """The run's final status and, unless it completed, why.

        A run completes only if every block it ran reported its end, and every message the
        kernel sent about it arrived. Anything else (an error reply, lost messages, a dead or
        interrupted kernel, a request that ended early) is a failure with its reason.
        """
        if active.cancel_requested:
            return "cancelled", None
        if active.timeout_status is not None:
            return active.timeout_status, active.failure
        if active.failure is not None:
            return "failed", active.failure
        problem = active.report.problem()
        unreported = [u for u, st in states.items() if u not in skip and not st.reported]
        if problem is None and unreported:
            problem = f"block {unreported[0]} did not report its end"
        if problem is not None:
            return "failed", problem
        failed = [u for u, st in states.items() if st.status == "failed"]
        if failed and not plan["trigger_settings"].get("allow_blocks_to_fail"):
            return "failed", f"Failed blocks: {', '.join(failed)}."
        return "completed", None

    async def _finish(
        self,
        plan: dict[str, Any],
        pipeline: Pipeline,
        states: dict[str, BlockState],
        skip: set[str],
        active: ActiveRun,
    ) -> None:
        """Close every open block run, write the executed notebook, set the run's status."""
        status, reason = self._ending(plan, states, skip, active)
        # The block that was executing when the run went wrong fails with the reason. A kernel
        # that dies at once can lose its last messages (even "block_started"), so without a
        # running block it is the first open one: blocks run in this order.
        open_states = [st for st in states.values() if st.status not in BLOCK_FINISHED]
        culprit: BlockState | None = None
        if reason is not None and not active.cancel_requested:
            running = [st for st in open_states if st.status == "running"]
            failed = any(st.status == "failed" for st in states.values())
            suspects = running or ([] if failed else open_states)
            culprit = suspects[0] if suspects else None
        changes: list[BlockChange] = []
        for state in states.values():
            if state.status in BLOCK_FINISHED:
                continue
            if state is culprit:
                message = reason or "the block did not finish"
                logs = self._take_log(state) + f"\n{message}\n"
                error = {"type": "RunError", "message": message}
                changes.append((state.block_run_id, "failed", logs, {"metrics": {"error": error}}))
                state.status = "failed"
            else:
                changes.append((state.block_run_id, "cancelled", self._take_log(state), {}))
                state.status = "cancelled"
        if changes:
            await self._until_written(self.board.blocks, changes)

        run_metrics: dict[str, Any] = {
            "blocks": {uuid: s.status for uuid, s in states.items()},
            "kernel_id": active.kernel_id,
        }
        if reason is not None:
            run_metrics["error"] = reason
        trailing = active.report.trailing_output
        if trailing:
            run_metrics["trailing_output"] = runtime.cut_text(trailing, self.max_error_chars)
        executed = None
        try:
            executed = await asyncio.to_thread(
                self._write_executed_notebook, plan, pipeline, states, status
            )
        except Exception as exc:
            self.log.warning("run %s: executed notebook not written: %s", plan["id"], exc)
        await self._final_status(plan["id"], status, run_metrics, executed)

    def _write_executed_notebook(
        self, plan: dict[str, Any], pipeline: Pipeline, states: dict[str, BlockState], status: str
    ) -> str:
        nb = copy.deepcopy(pipeline.notebook)
        by_index = {b.cell_index: b.uuid for b in pipeline.blocks}
        for index, cell in enumerate(nb.cells):
            if cell.get("cell_type") != "code":
                continue
            cell["execution_count"] = None
            state = states.get(by_index.get(index, ""))
            cell["outputs"] = state.cell_outputs if state else []
            if state:
                cell.setdefault("metadata", {})["mage"] = {"status": state.status}
        shown = {
            "variables": merge_variables(
                pipeline.variables,
                plan["trigger_variables"],
                plan["variables"],
                plan["event_variables"] or {},
            ),
            "execution_date": plan["execution_date"],
            "pipeline_run_id": plan["id"],
            "trigger_name": plan["pipeline_schedule_name"],
        }
        header = (
            f"**Run {plan['id']}** of pipeline `{pipeline.uuid}`: **{status}**\n\n"
            f"kwargs of this run:\n\n```json\n{json.dumps(shown, indent=2, default=str)}\n```"
        )
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(header))
        target = self.runs_path / pipeline.uuid / f"run_{plan['id']}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        # The copy came from a valid notebook: plain JSON, skipping nbformat's slow validation.
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
        try:
            return target.relative_to(self.repository.root).as_posix()
        except ValueError:
            return str(target)
