"""A triggered run inside the kernel: block namespaces, conditions, callbacks, statuses.

Part of the in-kernel run-time (:mod:`jupyter_mage.runtime`): standard library only, sent to
the kernel as source, so it imports the other pieces only relatively.

:class:`_PipelineRun` runs the plan's blocks in order: each block's code in a fresh module
namespace (decorators predefined), its conditions first, the block itself through the shared
block caller (:func:`.calls.call_block`) with its retries and time limit, then its callbacks,
reporting every start and end through the run's :class:`~jupyter_mage.runtime.Reporter`.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import linecache
import logging
import os
import sys
import time
import types
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .calls import as_input, call_adapted, call_block, time_limit, with_retries
from .decorators import DECORATORS, RUN_NAMESPACE_KEY, BlockFunctions, marked_functions
from .mage_layout import ProjectLayout, install_mage_stand_in, resolve_repo_path
from .sql import run_sql
from .summaries import ERROR_LIMIT, TEXT_LIMIT, error_info, summarize

if TYPE_CHECKING:
    from . import Reporter


class _LogFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time, so captured output captures it too."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def block_logger(run_id: Any, block_uuid: str) -> logging.Logger:
    """A logger whose records land in the block's log (through the kernel's stderr)."""
    logger = logging.getLogger(f"jupyter_mage.run.{run_id}.{block_uuid}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_LogFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    """Collect what runs print while no block is reported as running (conditions, add-ons)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def load_block(
    source: str, filename: str, kwargs: dict[str, Any], module_name: str = "__mage_block__"
) -> BlockFunctions:
    """Execute a block's code in a fresh namespace (decorators predefined) and find its functions.

    With a ``module_name``, the namespace is a module registered in ``sys.modules``, so what
    the block defines can be pickled by reference: ``multiprocessing`` workers (forked) find
    the block's functions as they find a notebook's ``__main__`` ones.
    """
    # Registering the source lets tracebacks show the block's lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(module_name)
    namespace = module.__dict__
    namespace.update(
        {
            "__builtins__": builtins,
            **DECORATORS,
            "kwargs": kwargs,
            RUN_NAMESPACE_KEY: kwargs.get("block_uuid"),
        }
    )
    if module_name != "__mage_block__":
        sys.modules[module_name] = module
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - the block's own code
    return marked_functions(namespace)


def block_module_name(run_id: Any, uuid: str) -> str:
    """The ``sys.modules`` name of a block's namespace in a run (an identifier)."""
    safe = "".join(c if c.isalnum() else "_" for c in uuid)
    return f"_jupyter_mage_block_{run_id}_{safe}"


class _PipelineRun:
    """One triggered run inside the kernel: block statuses and outputs live here."""

    def __init__(self, plan: dict[str, Any], reporter: Reporter) -> None:
        system = plan["system"]
        execution_date = datetime.fromisoformat(system["execution_date"])
        self.base_kwargs = {**plan["variables"], **system, "execution_date": execution_date}
        self.context: dict[str, Any] = {}
        self.allow_failures = bool(plan.get("allow_blocks_to_fail"))
        self.run_id = system.get("pipeline_run_id")
        self.prefix = f"<jupyter-mage run {self.run_id} block "
        self.blocks: list[dict[str, Any]] = plan["blocks"]
        limits = plan.get("limits") or {}
        self.error_limit = int(limits.get("error_chars", ERROR_LIMIT))
        self.summary_limit = int(limits.get("summary_chars", TEXT_LIMIT))
        self.reporter = reporter  # made by run_pipeline, with the plan's log_chars
        self.values: dict[str, Any] = {}
        self.status: dict[str, str] = {}
        self.halted = False
        #: The notebook's folder (the run starts there): a SQL block's io_config.yaml may be here.
        self.home = os.getcwd()
        self._loaded = 0
        # A Mage project's notebook: every block's plan names the project (repo_path relative
        # to the notebook's folder, the working directory the run starts in).
        project = next((b["project"] for b in self.blocks if b.get("project")), None)
        self.project_dir: str | None = (
            resolve_repo_path(project["repo_path"], os.getcwd()) if project else None
        )

    def run(self) -> None:
        """Run the blocks; always end with ``run_finished`` saying how the run ended.

        ``ending`` is ``finished`` (every block reported its end), ``interrupted`` (a
        KeyboardInterrupt: a cancel's interrupt, or one a block raised) or ``runtime_error``
        (a fault of this runtime, never of a block's code: blocks' errors fail their block).
        """
        ending, error = "finished", None
        with self.reporter.installed():
            try:
                install_mage_stand_in()
                with contextlib.ExitStack() as layout:
                    if self.project_dir is not None:
                        layout.enter_context(ProjectLayout(self.project_dir))
                    for block in self.blocks:
                        if not block.get("skip"):  # skip: completed earlier and not needed
                            self._step(block)
            except KeyboardInterrupt:
                ending = "interrupted"
            except BaseException as exc:
                ending, error = "runtime_error", error_info(exc, "", self.error_limit)
            trailing = self.reporter.trailing_output()
        # Sent after the capture is undone: the last sequence number tells the server how many
        # events to expect. The server can end the run now, without waiting for the kernel's
        # own wrap-up of the request (a few milliseconds).
        self.reporter.emit("run_finished", ending=ending, error=error, log=trailing)

    def _kwargs(self, uuid: str, block: dict[str, Any] | None = None) -> dict[str, Any]:
        mage_project: dict[str, Any] = {}
        if self.project_dir is not None:  # as Mage: the block's configuration, the project
            configuration = (block or {}).get("configuration")
            mage_project = {
                "configuration": dict(configuration) if isinstance(configuration, dict) else {},
                "repo_path": self.project_dir,
            }
        return {
            **self.base_kwargs,
            **mage_project,
            "block_uuid": uuid,
            "context": self.context,
            "logger": block_logger(self.run_id, uuid),
            "retry": {"attempts": 1},
        }

    def _load(self, source: str, uuid: str, kwargs: dict[str, Any]) -> BlockFunctions:
        self._loaded += 1
        module_name = block_module_name(f"{self.run_id}_{self._loaded}", uuid)
        return load_block(source, f"{self.prefix}{uuid}>", kwargs, module_name)

    def _finish(self, uuid: str, status: str, **data: Any) -> None:
        self.status[uuid] = status
        if not data.get("log"):
            data.pop("log", None)
        self.reporter.emit("block_finished", block=uuid, status=status, **data)

    def _step(self, block: dict[str, Any]) -> None:
        uuid = block["uuid"]
        upstream_status = [self.status.get(u) for u in block["upstream"]]
        if any(s in ("failed", "upstream_failed") for s in upstream_status):
            return self._finish(uuid, "upstream_failed")
        if "condition_failed" in upstream_status:  # as Mage: skipped with its parent
            return self._finish(uuid, "condition_failed")
        kwargs = self._kwargs(uuid, block)
        if self.halted:
            with _captured() as log:
                self._callbacks(block, "cancelled", [None], kwargs)
            return self._finish(uuid, "cancelled", log=log.getvalue())
        args = [self.values.get(u) for u in block["upstream"]]
        with _captured() as log:
            passed = self._conditions(block, args, kwargs)
        if not passed:
            return self._finish(uuid, "condition_failed", log=log.getvalue())
        self.reporter.start_block(uuid)
        if log.getvalue():  # what the conditions printed, now in the block's log
            print(log.getvalue(), end="")
        started = time.perf_counter()
        attempts = [1]

        def attempt(n: int) -> list[Any]:
            attempts[0] = n
            return self._execute(block, args, {**kwargs, "retry": {"attempts": n}})

        try:
            with time_limit(block.get("timeout"), uuid):
                outputs, _ = with_retries(attempt, block.get("retry"), uuid)
        except KeyboardInterrupt as exc:
            # Reported as this block's failure; the run stops (a cancel, or the block's own
            # KeyboardInterrupt: either way nothing after it runs).
            self._fail(block, exc, kwargs, started, attempts[0])
            raise
        except BaseException as exc:
            self._fail(block, exc, kwargs, started, attempts[0])
            if not self.allow_failures:
                self.halted = True
            return None
        self.values[uuid] = as_input(outputs)
        self._callbacks(block, "success", [self.values[uuid]], kwargs)
        summaries = [summarize(v, i, self.summary_limit) for i, v in enumerate(outputs)]
        return self._finish(
            uuid,
            "completed",
            outputs=summaries,
            seconds=time.perf_counter() - started,
            attempts=attempts[0],
            dropped_chars=self.reporter.end_block(),
        )

    def _fail(
        self,
        block: dict[str, Any],
        exc: BaseException,
        kwargs: dict[str, Any],
        started: float,
        attempts: int,
    ) -> None:
        error = error_info(exc, self.prefix, self.error_limit)
        if not isinstance(exc, KeyboardInterrupt):
            self._callbacks(block, "failure", [None], {**kwargs, "__error": exc})
        self._finish(
            block["uuid"],
            "failed",
            error=error,
            seconds=time.perf_counter() - started,
            attempts=attempts,
            dropped_chars=self.reporter.end_block(),
        )

    def _execute(self, block: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        if block.get("language") == "sql":  # a %%mage_sql cell: no Python to load
            configuration = block.get("configuration") or {}
            uuid, upstream = block["uuid"], block["upstream"]
            return run_sql(block["source"], configuration, args, upstream, kwargs, uuid,
                           block["type"], self.home)  # fmt: skip
        found = self._load(block["source"], block["uuid"], kwargs)
        return call_block(
            found,
            args,
            kwargs,
            block["uuid"],
            block["type"],
            block.get("sensor"),
            list_outputs=block.get("list_outputs", "one"),
        )

    def _addon_kwargs(self, addon: str, parent: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**kwargs, "block_uuid": addon, "parent_block_uuid": parent}

    def _conditions(self, block: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> bool:
        """AND of every ``@condition`` attached to the block; an exception counts as False."""
        uuid = block["uuid"]
        for addon in block.get("conditionals") or []:
            addon_kwargs = self._addon_kwargs(addon["uuid"], uuid, kwargs)
            name = addon["uuid"]
            try:
                found = self._load(addon["source"], name, addon_kwargs)
                for check in found.conditions:
                    name = f"{addon['uuid']}.{getattr(check, '__name__', 'condition')}"
                    if not call_adapted(check, args, addon_kwargs):
                        print(f"Condition {name} of block {uuid} is False: block skipped.")
                        return False
            except Exception as exc:
                info = error_info(exc, self.prefix)
                print(f"Condition {name} of block {uuid} failed (counts as False):")
                print(info["traceback"], end="")
                return False
        return True

    def _callbacks(
        self, block: dict[str, Any], status: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """Run the block's callbacks for ``status``; their errors are logged, never fatal."""
        uuid = block["uuid"]
        for addon in block.get("callbacks") or []:
            addon_kwargs = self._addon_kwargs(addon["uuid"], uuid, kwargs)
            name = addon["uuid"]
            try:
                found = self._load(addon["source"], name, addon_kwargs)
                for fn in found.callbacks:
                    if status not in getattr(fn, "__mage_callback_on__", ("success",)):
                        continue
                    name = f"{addon['uuid']}.{getattr(fn, '__name__', 'callback')}"
                    call_adapted(fn, args, addon_kwargs)
            except Exception as exc:
                info = error_info(exc, self.prefix)
                print(f"Callback {name} of block {uuid} ({status}) failed:", file=sys.stderr)
                print(info["traceback"], end="", file=sys.stderr, flush=True)
