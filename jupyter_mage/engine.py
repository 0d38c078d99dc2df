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
import contextlib
import functools
import time
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager
from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.kernelmanager import MappingKernelManager
from jupyter_server.services.sessions.sessionmanager import SessionManager
from traitlets import Float, Int, Unicode
from traitlets.config import LoggingConfigurable

from . import gateway, runtime
from .bootstrap import RunRequest, kernel_code, run_request
from .execute import ExecuteRequest, KernelConnection
from .executed_notebook import write_executed_notebook
from .forking.parents import PARENTS
from .kernels import KernelHandle, KernelLease, KernelPool
from .pipeline import Pipeline, PipelineNotFound
from .recorder import RunRecorder, until_written
from .records import RunPlan
from .repository import PipelineRepository
from .run_messages import ActiveRun, BlockChange, BlockLogs, BlockState, RunMessages, RunOutcome
from .state import StatusBoard
from .statuses import BLOCK_FINISHED, BlockRunStatus, RunStatus
from .storage import Store
from .variables import merge_variables, parse_time, system_keys

#: Seconds between checks that a run's kernel is still alive.
WATCH_INTERVAL = 0.5


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

    max_summary_chars = Int(
        runtime.TEXT_LIMIT,
        help=(
            "Characters of an output's repr kept in its summary; made without building the full "
            "repr of a large value (strings and bytes are cut first, containers show 20 items)."
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
        kernel_manager: MappingKernelManager,
        session_manager: SessionManager | None = None,
        pool_size: int = 0,
        reuse_kernels: bool = False,
        fork_kernels: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.board = board
        self.repository = repository
        self.kernel_manager = kernel_manager
        warm_up = kernel_code(None)  # loads the run-time (50 kB of source), runs no plan
        self.kernels = KernelPool(
            kernel_manager,
            pool_size,
            self.kernel_startup_timeout,
            self.log,
            warmup_code=warm_up,
            warmup_probe=kernel_code(None, preloaded=True),
            reuse=reuse_kernels,
            session_manager=session_manager,
            fork=fork_kernels,
        )
        if fork_kernels:
            # Fork parents load the run-time once; the kernels they fork start with it.
            PARENTS.preload = warm_up
        self._active: dict[int, ActiveRun] = {}
        self._idle = asyncio.Event()  # set while no run is active
        self._idle.set()
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def logs(self) -> BlockLogs:
        """The bounds of what blocks print, as configured."""
        return BlockLogs(self.max_log_chars, self.max_cell_output_bytes, self.max_error_chars)

    @property
    def runs_path(self) -> Path:
        """Absolute folder of executed notebooks."""
        path = Path(self.runs_dir)
        return path if path.is_absolute() else self.repository.root / path

    # -- public API --------------------------------------------------------------------------

    async def execute(self, plan: RunPlan) -> None:
        """Run a claimed (``running``) run to its final status. Never raises for run failures.

        ``plan`` is the run as :meth:`Store.claim_runs` (or a started ``create_run``) gives it.
        """
        active = ActiveRun(plan["id"])
        self._active[active.run_id] = active
        self._idle.clear()
        # One line at each end of a run: ids, pipeline, status, duration; never variables,
        # whose values may be secrets.
        started = time.monotonic()
        self.log.info(
            "jupyter-mage: run %s of pipeline %s started (trigger %s)",
            plan["id"],
            plan["pipeline_uuid"],
            plan["pipeline_schedule_id"],
        )
        try:
            await self._execute(plan, active)
        finally:
            self._active.pop(active.run_id, None)
            if not self._active:
                self._idle.set()
            outcome = active.outcome or RunOutcome(RunStatus.FAILED, "the engine stopped")
            because = f": {outcome.reason[:300]}" if outcome.reason else ""
            log = self.log.info if outcome.status == RunStatus.COMPLETED else self.log.warning
            log(
                "jupyter-mage: run %s of pipeline %s %s after %.2f s%s",
                plan["id"],
                plan["pipeline_uuid"],
                outcome.status,
                time.monotonic() - started,
                because,
            )

    def active_run_ids(self) -> list[int]:
        """The runs this engine is executing."""
        return list(self._active)

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
        if self._active:  # the stopped runs record their end and release their kernels
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 10)
        if self._background:
            await asyncio.wait(self._background, timeout=10)
        await self.kernels.stop()

    # -- one run -----------------------------------------------------------------------------

    async def _execute(self, plan: RunPlan, active: ActiveRun) -> None:
        run_id = plan["id"]
        try:
            pipeline = await self.repository.get(plan["pipeline_uuid"])
        except PipelineNotFound:
            await self._final_status(
                run_id, RunStatus.FAILED, {"error": f"pipeline '{plan['pipeline_uuid']}' not found"}
            )
            return
        if not pipeline.is_valid:
            problems = "; ".join(e["message"] for e in pipeline.errors)
            await self._final_status(
                run_id, RunStatus.FAILED, {"error": f"invalid pipeline: {problems}"}
            )
            return

        states, skip = await self._prepare_block_runs(plan, pipeline)
        payload = self._payload(plan, pipeline, skip)
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        recording = RunRecorder(self.board, self.logs, self.log).record(events, states, active)
        recorder = asyncio.create_task(recording)
        messages = RunMessages(run_id, self.logs, states, events, self.log)
        active.report, active.blocks_done = messages.report, messages.finished
        reuse_key = pipeline.uuid if self.kernels.reuse else None
        # The kernel's lease ends after the final status is written (then it is released in
        # the background), however the run ended.
        async with contextlib.AsyncExitStack() as leased:
            lease: KernelLease | None = None
            try:
                if not active.cancel_requested:  # else cancelled before it had a kernel
                    lease = await leased.enter_async_context(
                        self.kernels.lease(
                            pipeline.kernel_name or self.kernel_name, reuse_key, self.cancel_grace
                        )
                    )
                    active.kernel_id = lease.kernel_id
                    request = run_request(
                        payload,
                        self._kernel_folder(pipeline),
                        preloaded=lease.handle.preloaded,
                        elsewhere=self.kernels.on_gateway,
                    )
                    await self._run_in_kernel(
                        active, lease.handle, request, messages, plan["trigger_settings"]
                    )
            except asyncio.CancelledError:
                if not active.cancel_requested and active.failure is None:
                    active.failure = "the run was stopped"
            except Exception as exc:
                self.log.warning("run %s: kernel error: %s", run_id, exc)
                active.failure = active.failure or f"kernel error: {exc}"
            finally:
                if lease is not None:  # released once this request is over
                    lease.request = active.execute_task
                events.put_nowait(None)
                await recorder
            await self._finish(plan, pipeline, states, skip, active)
            if lease is not None:
                clean = not (active.failure or active.cancel_requested or active.timeout_status)
                lease.keep_for = reuse_key if clean else None

    async def _run_in_kernel(
        self,
        active: ActiveRun,
        handle: KernelHandle,
        run: RunRequest,
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
        active.execute_task = asyncio.ensure_future(request.run(run.code, run.metadata))
        watchdog = asyncio.ensure_future(self._watch_kernel(kernel, handle.client))
        blocks_done = asyncio.ensure_future(active.blocks_done.wait())
        timeout = settings.get("timeout")
        try:
            done, _ = await asyncio.wait(
                {active.execute_task, watchdog, blocks_done},
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:  # the run's own timeout (trigger setting "timeout", seconds)
                active.timeout_status = RunStatus(
                    settings.get("timeout_status") or RunStatus.FAILED
                )
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
                active.failure = active.failure or _died(handle.client)
            return
        try:
            active.report.reply = active.execute_task.result()
        except gateway.KernelConnectionLost:
            if not active.cancel_requested:
                active.failure = active.failure or _died(handle.client)

    def _kernel_folder(self, pipeline: Pipeline) -> str:
        """Where the run works: the notebook's folder, relative to the root dir where local
        kernels start ("" for the root itself), or absolute for a gateway's kernel."""
        if self.kernels.on_gateway:
            return str((self.repository.root / pipeline.path).parent)
        folder = Path(pipeline.path).parent.as_posix()
        return "" if folder == "." else folder

    @staticmethod
    async def _watch_kernel(kernel: KernelManager, client: KernelConnection) -> None:
        if isinstance(client, gateway.GatewayKernelConnection):
            await client.lost()  # the websocket closed, or the gateway restarted the kernel
            return
        # A dead kernel never answers: detect it instead of waiting forever on iopub. (Run
        # kernels have no restarter: see KernelPool.start.) A local kernel's end is known only
        # by polling its process (the restarter polls too); there is no event to await.
        while await ensure_async(kernel.is_alive()):
            await asyncio.sleep(WATCH_INTERVAL)

    async def _interrupt_then_kill(self, active: ActiveRun) -> None:
        kernel_id = active.kernel_id
        assert kernel_id is not None  # called once the run has its kernel
        try:
            await ensure_async(self.kernel_manager.get_kernel(kernel_id).interrupt_kernel())
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
        self, plan: RunPlan, pipeline: Pipeline
    ) -> tuple[dict[str, BlockState], set[str]]:
        """Create missing block runs, or (on retry) reset the ones to run again; which to skip.

        Block runs are created with the run; the notebook may have changed since: blocks added
        get theirs now, and those of blocks removed end ``cancelled``.
        """
        blocks = pipeline.runnable_blocks()
        existing = {b["block_uuid"]: b for b in plan["block_runs"]}
        missing = [b.uuid for b in blocks if b.uuid not in existing]
        # Tried again until they land, as every write of an accepted run: a database locked
        # for a while by another server must not fail the run.
        if missing:
            created = await until_written(
                self.log, self.store.create_block_runs, plan["id"], missing
            )
            for row in created:
                existing[row["block_uuid"]] = row
        current = {b.uuid for b in blocks}
        for uuid, row in existing.items():
            if uuid not in current and row["status"] not in BLOCK_FINISHED:
                await until_written(
                    self.log,
                    functools.partial(
                        self.board.block,
                        row["id"],
                        BlockRunStatus.CANCELLED,
                        logs="the block left the notebook\n",
                    ),
                )
        # Outputs live in the kernel, so a retried block needs its upstream blocks again.
        by_uuid = {b.uuid: b for b in blocks}
        needed: set[str] = set()
        stack = [b.uuid for b in blocks if existing[b.uuid]["status"] != BlockRunStatus.COMPLETED]
        while stack:
            uuid = stack.pop()
            if uuid not in needed:
                needed.add(uuid)
                stack.extend(by_uuid[uuid].upstream_blocks)
        states: dict[str, BlockState] = {}
        for block in blocks:
            row = existing[block.uuid]
            status = row["status"]
            if block.uuid in needed and status != BlockRunStatus.INITIAL:
                await self.board.block(row["id"], BlockRunStatus.INITIAL)
                status = BlockRunStatus.INITIAL
            states[block.uuid] = BlockState(row["id"], BlockRunStatus(status))
        return states, {b.uuid for b in blocks if b.uuid not in needed}

    def _payload(self, plan: RunPlan, pipeline: Pipeline, skip: set[str]) -> dict[str, Any]:
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
            "limits": {
                "log_chars": self.max_log_chars,
                "error_chars": self.max_error_chars,
                "summary_chars": self.max_summary_chars,
            },
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

    # -- the run's end -------------------------------------------------------------------------

    async def _final_status(
        self, run_id: int, status: RunStatus, metrics: dict[str, Any], executed: str | None = None
    ) -> None:
        """Write a run's final status, trying again until it lands: a run never stays running."""
        active = self._active.get(run_id)
        if active is not None:
            active.outcome = RunOutcome(status, metrics.get("error"))
        await until_written(
            self.log,
            functools.partial(
                self.board.run, run_id, status, metrics=metrics, executed_notebook=executed
            ),
        )

    def _ending(
        self, plan: RunPlan, states: dict[str, BlockState], skip: set[str], active: ActiveRun
    ) -> RunOutcome:
        """The run's final status and, unless it completed, why.

        A run completes only if every block it ran reported its end, and every message the
        kernel sent about it arrived. Anything else (an error reply, lost messages, a dead or
        interrupted kernel, a request that ended early) is a failure with its reason.
        """
        if active.cancel_requested:
            return RunOutcome(RunStatus.CANCELLED)
        if active.timeout_status is not None:
            return RunOutcome(active.timeout_status, active.failure)
        if active.failure is not None:
            return RunOutcome(RunStatus.FAILED, active.failure)
        problem = active.report.problem()
        unreported = [u for u, st in states.items() if u not in skip and not st.reported]
        if problem is None and unreported:
            problem = f"block {unreported[0]} did not report its end"
        if problem is not None:
            return RunOutcome(RunStatus.FAILED, problem)
        failed = [u for u, st in states.items() if st.status == BlockRunStatus.FAILED]
        if failed and not plan["trigger_settings"].get("allow_blocks_to_fail"):
            return RunOutcome(RunStatus.FAILED, f"Failed blocks: {', '.join(failed)}.")
        return RunOutcome(RunStatus.COMPLETED)

    async def _finish(
        self,
        plan: RunPlan,
        pipeline: Pipeline,
        states: dict[str, BlockState],
        skip: set[str],
        active: ActiveRun,
    ) -> None:
        """Close every open block run, write the executed notebook, set the run's status."""
        outcome = self._ending(plan, states, skip, active)
        status, reason = outcome.status, outcome.reason
        # The block that was executing when the run went wrong fails with the reason. A kernel
        # that dies at once can lose its last messages (even "block_started"), so without a
        # running block it is the first open one: blocks run in this order.
        open_states = [st for st in states.values() if st.status not in BLOCK_FINISHED]
        culprit: BlockState | None = None
        if reason is not None and not active.cancel_requested:
            running = [st for st in open_states if st.status == BlockRunStatus.RUNNING]
            failed = any(st.status == BlockRunStatus.FAILED for st in states.values())
            suspects = running or ([] if failed else open_states)
            culprit = suspects[0] if suspects else None
        changes: list[BlockChange] = []
        for state in states.values():
            if state.status in BLOCK_FINISHED:
                continue
            if state is culprit:
                message = reason or "the block did not finish"
                logs = self.logs.take(state) + f"\n{message}\n"
                error = {"type": "RunError", "message": message}
                changes.append(
                    (state.block_run_id, BlockRunStatus.FAILED, logs, {"metrics": {"error": error}})
                )
                state.status = BlockRunStatus.FAILED
            else:
                changes.append(
                    (state.block_run_id, BlockRunStatus.CANCELLED, self.logs.take(state), {})
                )
                state.status = BlockRunStatus.CANCELLED
        if changes:
            await until_written(self.log, self.board.blocks, changes)

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
                write_executed_notebook,
                self.runs_path,
                self.repository.root,
                plan,
                pipeline,
                states,
                status,
            )
        except Exception as exc:
            self.log.warning("run %s: executed notebook not written: %s", plan["id"], exc)
        await self._final_status(plan["id"], status, run_metrics, executed)


def _died(client: KernelConnection) -> str:
    """Why a run's request ended without its reply: the kernel died (and how, if known)."""
    if isinstance(client, gateway.GatewayKernelConnection) and not client.channels_running:
        return f"the kernel died during the run: {client.lost_reason()}"
    return "the kernel died during the run"
