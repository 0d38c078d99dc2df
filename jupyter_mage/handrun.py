"""Hand runs: run a block cell in JupyterLab and the block runs at once, as in Mage's editor.

The decorators exported by :mod:`jupyter_mage` are the runtime's own (:mod:`.runtime`), and
blocks are called by the runtime's block caller (:func:`runtime.call_block`), as in triggered
runs. This module adds a decorator hook (:data:`runtime.MARK_HOOKS`): when a decorator is applied
at the top level of a cell in an IPython kernel (the caller's globals are the shell's user
namespace) and *not* inside a triggered run (whose block namespaces carry
:data:`runtime.RUN_NAMESPACE_KEY`), the function is noted as pending. After the cell has run
(``post_run_cell``, so helpers and ``@test`` functions defined below the main function exist, as
in Mage), the block runs:

- its **name and upstream blocks** come from the pipeline notebook, read from disk (tags live in
  the saved file): the kernel's notebook is ``JPY_SESSION_NAME`` (set by Jupyter Server for every
  notebook session), the cell is found by the id JupyterLab sends with each execute request, else
  by the decorated function's name, else by its source;
- its **arguments** are the outputs of its upstream blocks from earlier hand runs in this kernel,
  kept per kernel by block uuid (a missing one names the block to run first);
- its **kwargs** are the notebook's global variables plus the system keys, with
  ``hand_run=True``, ``pipeline_run_id=None`` and ``trigger_name=None``;
- its **tests** run after it; a **sensor** is polled with the pipeline's interval and timeout;
- a *script block* (no decorated function) gets its ``kwargs`` defined before its cell runs.
- a notebook of a **Mage project** (``metadata.mage.project``) gets Mage's layout before every
  cell runs (cwd at the project's parent, the parent on ``sys.path``, ``get_repo_path()``),
  and its blocks' ``kwargs`` gain ``configuration`` and ``repo_path``.

A readable summary (a table for DataFrames and lists of records) is displayed; an error makes the
cell fail like any error in the cell would. ``%load_ext jupyter_mage`` additionally defines the
decorators in the notebook's namespace, so Mage's guarded ``from mage_ai... import`` lines run
unchanged by hand too.

Per-kernel state lives on the IPython shell instance (one :class:`HandRunner` per shell), never in
module globals.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from . import runtime
from .output_display import summary_bundle

#: The MIME type of the machine-readable part of a hand run's summary.
HANDRUN_MIME = "application/vnd.jupyter-mage.handrun+json"
_ATTRIBUTE = "_jupyter_mage_hand_runner"
_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class HandRunError(Exception):
    """A hand run cannot start (missing upstream output, unknown block)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def _shell() -> Any:
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:  # plain Python: decorators only mark
        return None
    return get_ipython()


def _note(fn: Any, frame: FrameType) -> None:
    """Remember ``fn`` for a hand run if it was decorated at the top level of a cell.

    A hook of every decorator (:data:`runtime.MARK_HOOKS`); ``frame`` applied the decorator.
    """
    caller = frame.f_globals
    if caller.get(runtime.RUN_NAMESPACE_KEY) is not None:  # inside a triggered run
        return
    shell = _shell()
    if shell is None or caller is not getattr(shell, "user_ns", None):
        return
    HandRunner.of(shell).pending.append(fn)


if _note not in runtime.MARK_HOOKS:
    runtime.MARK_HOOKS.append(_note)

# The runtime's decorators: they mark the function, then call _note.
data_loader = runtime.data_loader
transformer = runtime.transformer
data_exporter = runtime.data_exporter
custom = runtime.custom
sensor = runtime.sensor
test = runtime.test
condition = runtime.condition
callback = runtime.callback
on_success = runtime.on_success
on_failure = runtime.on_failure
DECORATORS = runtime.DECORATORS


class HandRunner:
    """Hand-run state of one kernel: outputs by block uuid, the shared ``context``.

    Parameters
    ----------
    shell
        The IPython shell; the runner registers itself on its ``post_run_cell`` event.
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        #: What a downstream block receives from each hand-run block, by block uuid.
        self.outputs: dict[str, Any] = {}
        self.context: dict[str, Any] = {}
        self.pending: list[Any] = []
        self._cache: tuple[Path, int, Any] | None = None
        # Mage's guarded imports and get_repo_path work in this kernel without mage-ai.
        runtime.install_mage_stand_in()
        shell.events.register("pre_run_cell", self.pre_run_cell)
        shell.events.register("post_run_cell", self.post_run_cell)

    @classmethod
    def of(cls, shell: Any) -> HandRunner:
        """The shell's runner, created on first use."""
        runner = getattr(shell, _ATTRIBUTE, None)
        if runner is None:
            runner = cls(shell)
            setattr(shell, _ATTRIBUTE, runner)
        return runner

    def close(self) -> None:
        """Stop hand-running cells in this shell."""
        for event, hook in (
            ("pre_run_cell", self.pre_run_cell),
            ("post_run_cell", self.post_run_cell),
        ):
            try:
                self.shell.events.unregister(event, hook)
            except ValueError:
                pass
        if getattr(self.shell, _ATTRIBUTE, None) is self:
            delattr(self.shell, _ATTRIBUTE)

    # -- the cell that just ran --------------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        """Before a script block's cell (no decorated function) runs, put its ``kwargs`` in scope.

        In a triggered run a script block runs with ``kwargs`` defined; by hand the cell is found
        by its id in the saved notebook. Other cells are left alone.
        """
        cell_id = getattr(info, "cell_id", None) or _parent_cell_id(self.shell)
        pipeline = self.pipeline()
        if pipeline is None:
            return
        self.enter_layout(pipeline)  # before any cell's code: its imports and relative paths
        if not cell_id:
            return
        from .pipeline import decorated_function_names

        cells = pipeline.notebook.cells
        for block in pipeline.blocks:
            if cells[block.cell_index].get("id") != cell_id:
                continue
            if block.type != "scratchpad" and not decorated_function_names(block.source):
                self.shell.user_ns["kwargs"] = self.kwargs(pipeline, block.uuid)
            return

    def post_run_cell(self, result: Any) -> None:
        """Run the block defined by the cell that just ran, if any."""
        pending, self.pending = self.pending, []
        if not pending or not result.success:
            return
        found = runtime.marked_functions({str(i): fn for i, fn in enumerate(pending)})
        try:
            if found.main is not None:
                self.run_block(found, result)
            else:
                self._describe_addon(found, result)
        except Exception as exc:
            result.error_in_exec = exc  # the cell fails, as any error in its code would
            tb = _user_frames(exc.__traceback__) or exc.__traceback__
            self.shell.showtraceback((type(exc), exc, tb))

    def run_block(self, found: runtime.BlockFunctions, result: Any) -> list[Any]:
        """Run a block's main function and tests with the hand-run inputs; show and keep outputs."""
        main = found.main
        assert main is not None
        kind = getattr(main, "__mage_block_type__", "custom")
        pipeline = self.pipeline()
        block = self._find(pipeline, main.__name__, result, addon=False)
        uuid = block.uuid if block is not None else main.__name__
        upstream = list(block.upstream_blocks) if block is not None else []
        if block is None and _needs_inputs(main, kind):
            raise HandRunError(self._not_found(pipeline, uuid))
        missing = [u for u in upstream if u not in self.outputs]
        if missing:
            names = ", ".join(f"'{u}'" for u in missing)
            raise HandRunError(
                f"Block {uuid} needs the output of {names}: run the cell of block "
                f"'{missing[0]}' first (upstream blocks, in order: {', '.join(upstream)})."
            )
        args = [self.outputs[u] for u in upstream]
        kwargs = self.kwargs(pipeline, uuid)
        settings = pipeline.sensor_settings(block) if block is not None else None
        started = time.perf_counter()

        def keep(outputs: list[Any]) -> None:
            # Kept before the tests run, as Mage's editor keeps a block's output when a test fails.
            self.outputs[uuid] = runtime.as_input(outputs)
            _display_summary(uuid, outputs, time.perf_counter() - started)

        block_type = block.type if block is not None else "custom"
        list_outputs = pipeline.list_outputs if pipeline is not None else "one"
        return runtime.call_block(
            found, args, kwargs, uuid, block_type, settings, keep, list_outputs=list_outputs
        )

    def run_sql_cell(self, line: str, cell: str) -> None:
        """The ``%%mage_sql`` cell magic: the cell's SQL block runs as in a triggered run
        (:func:`.runtime.sql.run_sql`), with the hand-run upstream outputs; its output is kept
        and shown like a Python block's."""
        from .runtime.sql import run_sql, sql_template

        pipeline = self.pipeline()
        sql_blocks = [b for b in (pipeline.blocks if pipeline else []) if b.language == "sql"]
        cell_id = _parent_cell_id(self.shell)
        cells = pipeline.notebook.cells if pipeline else []
        block = next((b for b in sql_blocks if cells[b.cell_index].get("id") == cell_id), None)
        if block is None:  # no cell id (not JupyterLab): the saved cell with the same SQL
            same = [b for b in sql_blocks if sql_template(b.source).strip() == cell.strip()]
            block = same[0] if len(same) == 1 else None
        if block is None:
            raise HandRunError(
                "This %%mage_sql cell is not a SQL block of the saved notebook: give it a "
                "block-type tag (data_loader, transformer, data_exporter, custom), its "
                "metadata.mage.configuration (data_provider...), and save the notebook."
            )
        missing = [u for u in block.upstream_blocks if u not in self.outputs]
        if missing:
            raise HandRunError(
                f"Block {block.uuid} needs the output of '{missing[0]}': run the cell of block "
                f"'{missing[0]}' first (upstream blocks, in order: "
                f"{', '.join(block.upstream_blocks)})."
            )
        started = time.perf_counter()
        path = self.notebook_path()
        outputs = run_sql(
            cell,
            block.configuration,
            [self.outputs[u] for u in block.upstream_blocks],
            list(block.upstream_blocks),
            self.kwargs(pipeline, block.uuid),
            block.uuid,
            block.type,
            home=str(path.parent) if path is not None else os.getcwd(),
        )
        self.outputs[block.uuid] = runtime.as_input(outputs)
        _display_summary(block.uuid, outputs, time.perf_counter() - started)

    def _describe_addon(self, found: runtime.BlockFunctions, result: Any) -> None:
        """A conditional or callback cell: evaluate conditions now if the inputs are there."""
        functions = [*found.conditions, *found.callbacks]
        if not functions:
            return  # only @test functions, or nothing of ours
        pipeline = self.pipeline()
        addon = self._find(pipeline, functions[0].__name__, result, addon=True)
        if addon is None or not addon.upstream_blocks:
            print(
                "jupyter-mage: add-on block defined; attach it to its parent with upstream:<block>"
            )
            return
        parents = {b.uuid: b for b in pipeline.blocks}
        for parent_uuid in addon.upstream_blocks:
            parent = parents.get(parent_uuid)
            if not found.conditions:
                print(
                    f"callback block {addon.uuid}: runs after block {parent_uuid} in triggered runs"
                )
                continue
            if parent is None or any(u not in self.outputs for u in parent.upstream_blocks):
                print(f"condition block {addon.uuid} of {parent_uuid}: run the blocks above first")
                continue
            args = [self.outputs[u] for u in parent.upstream_blocks]
            kwargs = {
                **self.kwargs(pipeline, addon.uuid),
                "parent_block_uuid": parent_uuid,
            }
            value = all(runtime.call_adapted(c, args, kwargs) for c in found.conditions)
            print(f"condition block {addon.uuid} of {parent_uuid}: {bool(value)}")

    # -- the pipeline this kernel belongs to -------------------------------------------------

    def project_dir(self, pipeline: Any) -> str | None:
        """The folder of the Mage project the notebook belongs to (``metadata.mage.project``)."""
        path = self.notebook_path()
        if pipeline is None or pipeline.project is None or path is None:
            return None
        return runtime.resolve_repo_path(pipeline.project["repo_path"], str(path.parent))

    def enter_layout(self, pipeline: Any) -> None:
        """Mage's layout for a Mage project's notebook: cwd at the project's parent, the parent
        on ``sys.path``, ``get_repo_path()`` at the project (kept for the kernel's session)."""
        project = self.project_dir(pipeline)
        if project is not None and os.path.isdir(project):
            runtime.enter_project(project)

    def notebook_path(self) -> Path | None:
        """The notebook of this kernel: Jupyter Server's ``JPY_SESSION_NAME``, found on disk."""
        names = [
            self.shell.user_ns.get("__vsc_ipynb_file__"),
            self.shell.user_ns.get("__session__"),
            os.environ.get("JPY_SESSION_NAME"),
        ]
        for name in names:
            if not isinstance(name, str) or not name.endswith(".ipynb"):
                continue
            path = Path(name)
            # Absolute when the frontend sent the session a name; else relative to the root,
            # while the kernel runs in the notebook's folder.
            for candidate in (path, Path.cwd() / path, Path.cwd() / path.name):
                if candidate.is_file():
                    return candidate.resolve()
        return None

    def pipeline(self) -> Any:
        """The saved notebook parsed as a pipeline (cached by modification time), or None."""
        path = self.notebook_path()
        if path is None:
            return None
        try:
            mtime = path.stat().st_mtime_ns
            if self._cache is not None and self._cache[:2] == (path, mtime):
                return self._cache[2]
            import nbformat

            from .pipeline import parse_notebook

            pipeline = parse_notebook(path.stem, path.name, nbformat.read(path, as_version=4))
        except Exception:  # an unreadable notebook: no pipeline information
            return None
        self._cache = (path, mtime, pipeline)
        return pipeline

    def _find(self, pipeline: Any, function: str, result: Any, *, addon: bool) -> Any:
        """The block (or add-on) of the cell that ran: by cell id, function name, source."""
        if pipeline is None:
            return None
        blocks = pipeline.addons if addon else pipeline.blocks
        cell_id = getattr(getattr(result, "info", None), "cell_id", None) or _parent_cell_id(
            self.shell
        )
        cells = pipeline.notebook.cells
        for block in blocks:
            if cell_id and cells[block.cell_index].get("id") == cell_id:
                return block
        from .pipeline import decorated_function_names

        named = [b for b in blocks if function in decorated_function_names(b.source)]
        if len(named) == 1:
            return named[0]
        raw = (getattr(getattr(result, "info", None), "raw_cell", None) or "").strip()
        same = [b for b in named or blocks if b.source.strip() == raw]
        return same[0] if same else (named[0] if named else None)

    def _not_found(self, pipeline: Any, uuid: str) -> str:
        if pipeline is None:
            return (
                f"Block {uuid} takes upstream outputs, but jupyter-mage cannot tell which "
                "notebook this kernel belongs to (JPY_SESSION_NAME is not set): open the notebook "
                "in JupyterLab, or set JPY_SESSION_NAME to its path."
            )
        return (
            f"Block {uuid} is not a block cell of the saved notebook: save the notebook "
            "(block tags are read from the saved file)."
        )

    def kwargs(self, pipeline: Any, uuid: str) -> dict[str, Any]:
        """Global variables plus the system keys, marked as a hand run."""
        from .variables import merge_variables

        variables = merge_variables(pipeline.variables if pipeline else {}, {}, {}, {})
        now = datetime.now(timezone.utc)
        project = self.project_dir(pipeline)
        if project is not None:  # as Mage: the block's configuration and the project's folder
            block = next((b for b in pipeline.blocks if b.uuid == uuid), None)
            configuration = pipeline.block_configuration(block) if block is not None else {}
            variables = {**variables, "configuration": configuration, "repo_path": project}
        return {
            **variables,
            "execution_date": now,
            "ds": now.strftime("%Y-%m-%d"),
            "hr": now.strftime("%H"),
            "event": {},
            "execution_partition": "",
            "pipeline_run_id": None,
            "trigger_name": None,
            "pipeline_uuid": pipeline.uuid if pipeline else None,
            "block_uuid": uuid,
            "context": self.context,
            "logger": runtime.block_logger("hand_run", uuid),
            "retry": {"attempts": 1},
            "hand_run": True,
        }


def _needs_inputs(fn: Any, kind: str) -> bool:
    try:
        runtime.check_arity(fn, 0, "", kind)
    except runtime.ArityError:
        return True
    return False


def _parent_cell_id(shell: Any) -> str | None:
    """The cell id JupyterLab sends in the execute request's metadata, when there is one."""
    kernel = getattr(shell, "kernel", None)
    try:
        parent = kernel.get_parent("shell") if kernel is not None else None
    except Exception:
        return None
    metadata = (parent or {}).get("metadata") or {}
    cell_id = metadata.get("cellId")
    return cell_id if isinstance(cell_id, str) else None


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop jupyter-mage's own frames from the front of a traceback."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return tb


def _display_summary(uuid: str, outputs: list[Any], seconds: float) -> None:
    """Show the block's outputs: a table for tabular values, a short repr otherwise."""
    from IPython.display import publish_display_data

    summaries = [runtime.summarize(value, i) for i, value in enumerate(outputs)]
    count = f"{len(outputs)} output{'s' if len(outputs) != 1 else ''}"
    bundle: dict[str, Any] = summary_bundle(uuid, summaries, f"hand run, {count} ({seconds:.2f} s)")
    bundle[HANDRUN_MIME] = {"block": uuid, "outputs": summaries}
    publish_display_data(bundle)


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext jupyter_mage``: decorators in the namespace, block cells hand-run."""
    shell.push(dict(DECORATORS))
    runner = HandRunner.of(shell)
    runner.enter_layout(runner.pipeline())
    # SQL block cells (%%mage_sql) run through the runner of this shell, whichever it is then.
    shell.register_magic_function(
        lambda line, cell: HandRunner.of(shell).run_sql_cell(line, cell),
        magic_kind="cell",
        magic_name="mage_sql",
    )


def unload_ipython_extension(shell: Any) -> None:
    """``%unload_ext jupyter_mage``: remove the decorators and stop hand runs."""
    for name, fn in DECORATORS.items():
        if shell.user_ns.get(name) is fn:
            del shell.user_ns[name]
    shell.magics_manager.magics["cell"].pop("mage_sql", None)
    runner = getattr(shell, _ATTRIBUTE, None)
    if runner is not None:
        runner.close()
