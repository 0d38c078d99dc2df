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
from .kernels import KernelHandle, KernelPool
from .pipeline import Pipeline, PipelineNotFound, PipelineRepository
from .state import StatusBoard
from .storage import BLOCK_FINISHED, Store
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
    log: list[str] = field(default_factory=list)
    log_chars: int = 0
    cell_outputs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ActiveRun:
    """A run between kernel start and its final status."""

    run_id: int
    kernel_id: str | None = None
    cancel_requested: bool = False
    failure: str | None = None
    timeout_status: str | None = None
    execute_task: asyncio.Task[Any] | None = None
    #: Set by the kernel's ``run_finished`` event: every block has its final status.
    blocks_done: asyncio.Event = field(default_factory=asyncio.Event)


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
        1_000_000, help="Characters of output kept per block run; the rest is cut with a note."
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
            await self.board.run(
                run_id,
                "failed",
                metrics={"error": f"pipeline '{plan['pipeline_uuid']}' not found"},
            )
            return
        if not pipeline.is_valid:
            problems = "; ".join(e["message"] for e in pipeline.errors)
            await self.board.run(
                run_id, "failed", metrics={"error": f"invalid pipeline: {problems}"}
            )
            return

        blocks = pipeline.runnable_blocks()
        states, skip = await self._prepare_block_runs(plan, pipeline)
        payload = self._payload(plan, pipeline, skip)
        events: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        recorder = asyncio.create_task(self._record_events(events, states))
        current: list[str] = []  # the block whose output is arriving now, if any

        def on_message(msg: dict[str, Any]) -> None:
            msg_type = msg["msg_type"]
            content = msg["content"]
            data = content.get("data", {})
            if msg_type == "display_data" and runtime.EVENT_MIME in data:
                event = data[runtime.EVENT_MIME]
                block = event.get("block")
                if event["event"] == "block_started":
                    current[:] = [block]
                elif event["event"] == "block_finished":
                    current.clear()
                elif event["event"] == "run_finished":
                    active.blocks_done.set()
                events.put_nowait((event["event"], event))
                return
            state = states.get(current[0]) if current else None
            if state is None:
                return
            if msg_type == "stream":
                self._append_log(state, content["text"])
                state.cell_outputs.append(nbformat.v4.new_output("stream", **content))
            elif msg_type in ("display_data", "execute_result"):
                self._append_log(state, str(data.get("text/plain", "")) + "\n")
                state.cell_outputs.append(
                    nbformat.v4.new_output(
                        "display_data", data=data, metadata=content.get("metadata", {})
                    )
                )
            elif msg_type == "error":
                self._append_log(state, "\n".join(content.get("traceback", [])) + "\n")

        handle = None
        try:
            if active.cancel_requested:  # cancelled before its kernel was asked for
                return await self._finish(plan, pipeline, blocks, states, active)
            reuse_key = pipeline.uuid if self.kernels.reuse else None
            handle = await self.kernels.acquire(pipeline.kernel_name or self.kernel_name, reuse_key)
            active.kernel_id = handle.kernel_id
            cwd = Path(pipeline.path).parent.as_posix()
            code = kernel_code(payload, "" if cwd == "." else cwd, preloaded=handle.preloaded)
            await self._run_in_kernel(active, handle, code, on_message, plan["trigger_settings"])
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
            await self._finish(plan, pipeline, blocks, states, active)
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
        on_message: Any,
        settings: dict[str, Any],
    ) -> None:
        kernel = self.kernel_manager.get_kernel(handle.kernel_id)
        if active.cancel_requested:
            return
        active.execute_task = asyncio.ensure_future(
            handle.client.execute_interactive(
                code,
                store_history=False,
                allow_stdin=False,
                stop_on_error=False,
                output_hook=on_message,
                timeout=None,
            )
        )
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
        else:
            active.execute_task.result()

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
        if task is not None and task.done() and not task.cancelled() and task.exception():
            reuse_key = None
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

    def _append_log(self, state: BlockState, text: str) -> None:
        room = self.max_log_chars - state.log_chars
        if room <= 0:
            return
        if len(text) > room:
            text = text[:room] + "\n[log truncated]\n"
        state.log.append(text)
        state.log_chars += len(text)

    async def _record_events(
        self,
        events: asyncio.Queue[tuple[str, dict[str, Any]] | None],
        states: dict[str, BlockState],
    ) -> None:
        """Write block events in the order the kernel sent them, a batch per transaction."""
        finished = False
        while not finished:
            batch = [await events.get()]
            while not events.empty():
                batch.append(events.get_nowait())
            changes: list[tuple[int, str, str, dict[str, Any]]] = []
            targets: list[tuple[BlockState, str]] = []
            for item in batch:
                if item is None:
                    finished = True
                    break
                kind, event = item
                state = states.get(event.get("block", ""))
                if state is None:
                    continue
                if kind == "block_started":
                    changes.append((state.block_run_id, "running", "", {}))
                    targets.append((state, "running"))
                elif kind == "block_finished":
                    status, logs, values = self._finished_change(state, event)
                    changes.append((state.block_run_id, status, logs, values))
                    targets.append((state, status))
            if not changes:
                continue
            try:
                applied = await self.board.blocks(changes)
            except Exception:  # a failed write must not stop the run's bookkeeping
                self.log.exception("recording block events failed")
                continue
            for (state, status), ok in zip(targets, applied, strict=True):
                if ok:
                    state.status = status

    def _finished_change(
        self, state: BlockState, event: dict[str, Any]
    ) -> tuple[str, str, dict[str, Any]]:
        """Status, log text and columns of a ``block_finished`` event."""
        status = event["status"]
        values: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        for key in ("seconds", "attempts"):
            if key in event:
                metrics[key] = event[key]
        if event.get("log"):  # printed while no block was running (conditions, callbacks)
            self._append_log(state, str(event["log"]))
            state.cell_outputs.append(
                nbformat.v4.new_output("stream", name="stdout", text=str(event["log"]))
            )
        if status == "failed":
            error = event.get("error") or {}
            metrics["error"] = error
            self._append_log(state, error.get("traceback", ""))
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
        logs = "".join(state.log)
        state.log.clear()
        return status, logs, values

    async def _finish(
        self,
        plan: dict[str, Any],
        pipeline: Pipeline,
        blocks: list[Any],
        states: dict[str, BlockState],
        active: ActiveRun,
    ) -> None:
        """Close every open block run, write the executed notebook, set the run's status."""
        failed_block = False
        culprit = None
        if active.failure is not None and not active.cancel_requested:
            # The block that was executing when the kernel died or the run timed out. A kernel
            # that dies at once can lose its last iopub messages (even "block_started"), so
            # without a running block it is the first open one: blocks run in this order.
            open_states = [st for st in states.values() if st.status not in BLOCK_FINISHED]
            running = [st for st in open_states if st.status == "running"]
            culprit = (running or open_states or [None])[0]
        for state in states.values():
            if state.status not in BLOCK_FINISHED:
                if state is culprit:
                    reason = active.failure or "the block did not finish"
                    logs = "".join(state.log) + f"\n{reason}\n"
                    await self.board.block(
                        state.block_run_id,
                        "failed",
                        logs=logs,
                        metrics={"error": {"type": "RunError", "message": reason}},
                    )
                    state.status = "failed"
                else:
                    await self.board.block(state.block_run_id, "cancelled", logs="".join(state.log))
                    state.status = "cancelled"
            failed_block = failed_block or state.status == "failed"

        allow_failures = bool(plan["trigger_settings"].get("allow_blocks_to_fail"))
        run_metrics: dict[str, Any] = {
            "blocks": {uuid: s.status for uuid, s in states.items()},
            "kernel_id": active.kernel_id,
        }
        if active.cancel_requested:
            status = "cancelled"
        elif active.timeout_status is not None:
            status = active.timeout_status
            run_metrics["error"] = active.failure
        elif active.failure is not None:
            status = "failed"
            run_metrics["error"] = active.failure
        elif failed_block and not allow_failures:
            status = "failed"
            failed = [u for u, s in states.items() if s.status == "failed"]
            run_metrics["error"] = f"Failed blocks: {', '.join(failed)}."
        else:
            status = "completed"

        executed = None
        try:
            executed = await asyncio.to_thread(
                self._write_executed_notebook, plan, pipeline, states, status
            )
        except Exception as exc:
            self.log.warning("run %s: executed notebook not written: %s", plan["id"], exc)
        await self.board.run(plan["id"], status, metrics=run_metrics, executed_notebook=executed)

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
