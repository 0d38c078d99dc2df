"""Pipelines are notebooks: read block cells, their names and their upstream links.

A notebook becomes a :class:`Pipeline` here. Nothing in this module touches the kernel, the
database, the file system or the event loop; :mod:`jupyter_mage.repository` finds notebooks
under the root dir, reads them in a worker thread and caches them by modification time.
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict

from .runtime import DEFAULT_SENSOR_INTERVAL, DEFAULT_SENSOR_TIMEOUT
from .runtime.sql import configuration_problems, is_sql_source

#: Block types that run in a pipeline run, in the order Mage lists them.
RUNNABLE_TYPES = ("data_loader", "transformer", "data_exporter", "custom", "sensor")
#: Add-on blocks: attached to a parent block (``upstream:``), no block run of their own.
ADDON_TYPES = ("conditional", "callback")
#: Tags that make a cell a block. Scratchpads are blocks that never run in a pipeline run.
BLOCK_TYPES = (*RUNNABLE_TYPES, "scratchpad", *ADDON_TYPES)
#: The decorators that name an add-on block's function.
_ADDON_DECORATORS = {
    "conditional": ("condition",),
    "callback": ("callback", "on_success", "on_failure"),
}
NOTEBOOK_SUFFIX = ".ipynb"
_NAME_TAG = "name:"
_UPSTREAM_TAG = "upstream:"
#: Numeric block settings: a cell tag ``<key>:<number>``, else ``metadata.mage.<key>`` of the
#: notebook (pipeline-wide). ``timeout`` bounds a block; ``retries``/``retry_delay``/
#: ``retry_max_delay`` are Mage's retry_config (with ``metadata.mage.retry_exponential_backoff``).
_NUMBER_SETTINGS = (
    "sensor_interval",
    "sensor_timeout",
    "timeout",
    "retries",
    "retry_delay",
    "retry_max_delay",
)
DEFAULT_RETRY = {"retries": 0, "delay": 5.0, "max_delay": 60.0, "exponential_backoff": True}
#: Keys of ``<key>:<value>`` cell tags (a near miss of one is an error).
_TAG_KEYS = (_NAME_TAG[:-1], _UPSTREAM_TAG[:-1], *_NUMBER_SETTINGS)
#: ``@decorator`` (alone or with arguments) directly above a top-level ``def name``.
_DECORATED_DEF = re.compile(
    r"^@([A-Za-z_]\w*)[^\n]*\n(?:@[^\n]*\n)*(?:async[ \t]+)?def[ \t]+(\w+)", re.MULTILINE
)
#: An IPython line magic or shell escape line, with its indent (group 1).
_MAGIC_LINE = re.compile(r"^([ \t]*)[%!].*$", re.MULTILINE)
_UUID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class PipelineError(TypedDict):
    """A validation error: the block (``""`` for the notebook), its kind, and its cell."""

    block_uuid: str
    #: ``invalid``, ``cycle``, ``syntax`` or ``unknown_tag``.
    type: str
    message: str
    #: The notebook cell it is about, when there is one (the UI marks that cell).
    cell_index: NotRequired[int]


class PipelineNotFound(LookupError):
    """No pipeline notebook at that uuid (missing, outside the root, or without blocks)."""


@dataclass
class Block:
    """One block cell of a pipeline."""

    uuid: str
    type: str
    source: str
    cell_index: int
    upstream_blocks: list[str] = field(default_factory=list)
    downstream_blocks: list[str] = field(default_factory=list)
    conditional_blocks: list[str] = field(default_factory=list)
    callback_blocks: list[str] = field(default_factory=list)
    #: Cell-tag settings (``sensor_interval:<s>``, ``timeout:<s>``, ``retries:<n>``...), as numbers.
    settings: dict[str, float] = field(default_factory=dict)
    #: ``python``, or ``sql`` for a ``%%mage_sql`` cell (a SQL block, see :mod:`.runtime.sql`).
    language: str = "python"
    #: Mage's block ``configuration`` (the cell's ``metadata.mage.configuration``).
    configuration: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The block as the API shows it (add-ons list their parents as upstream, as Mage)."""
        data: dict[str, Any] = {
            "uuid": self.uuid,
            "name": self.uuid,
            "type": self.type,
            "language": self.language,
            "configuration": dict(self.configuration),
            "upstream_blocks": list(self.upstream_blocks),
            "downstream_blocks": list(self.downstream_blocks),
        }
        if self.type not in ADDON_TYPES:
            data["conditional_blocks"] = list(self.conditional_blocks)
            data["callback_blocks"] = list(self.callback_blocks)
        return data


@dataclass
class Pipeline:
    """A notebook seen as a DAG of blocks."""

    uuid: str
    path: str
    blocks: list[Block]
    variables: dict[str, Any]
    kernel_name: str | None
    errors: list[PipelineError]
    notebook: Any = field(default=None, repr=False, compare=False)
    #: Conditional and callback blocks; their ``upstream_blocks`` are their parents.
    addons: list[Block] = field(default_factory=list)
    #: Pipeline-wide defaults of the same settings, from ``metadata.mage``.
    settings: dict[str, float] = field(default_factory=dict)
    #: The Mage project the notebook belongs to (``metadata.mage.project``: ``repo_path``,
    #: relative to the notebook's folder): its blocks run in Mage's layout.
    project: dict[str, Any] | None = None
    #: ``metadata.mage.list_outputs``: ``"one"`` (a returned list is one value, our default)
    #: or ``"mage"`` (a returned list is split into outputs, as Mage does).
    list_outputs: str = "one"

    def block_configuration(self, block: Block) -> dict[str, Any]:
        """The block's Mage ``configuration`` (its cell's ``metadata.mage.configuration``)."""
        cells = getattr(self.notebook, "cells", None) or []
        if not 0 <= block.cell_index < len(cells):
            return {}
        meta = cells[block.cell_index].get("metadata", {}).get("mage", {})
        configuration = meta.get("configuration") if isinstance(meta, dict) else None
        return dict(configuration) if isinstance(configuration, dict) else {}

    @property
    def is_valid(self) -> bool:
        """True when the pipeline can run."""
        return not self.errors

    def runnable_blocks(self) -> list[Block]:
        """Blocks a run executes, in dependency order (scratchpads left out)."""
        by_uuid = {b.uuid: b for b in self.blocks}
        order = _topological_order(self.blocks)
        return [by_uuid[u] for u in order if by_uuid[u].type != "scratchpad"]

    def block_plan(self, block: Block) -> dict[str, Any]:
        """What the in-kernel runtime needs beyond a block's code: add-ons, sensor settings."""
        addons = {a.uuid: a for a in self.addons}
        plan: dict[str, Any] = {
            "conditionals": [
                {"uuid": u, "source": addons[u].source} for u in block.conditional_blocks
            ],
            "callbacks": [{"uuid": u, "source": addons[u].source} for u in block.callback_blocks],
        }
        if block.type == "sensor":
            plan["sensor"] = self.sensor_settings(block)
        setting = {**self.settings, **block.settings}
        if "timeout" in setting:
            plan["timeout"] = setting["timeout"]
        if setting.get("retries"):
            plan["retry"] = {
                "retries": int(setting["retries"]),
                "delay": setting.get("retry_delay", DEFAULT_RETRY["delay"]),
                "max_delay": setting.get("retry_max_delay", DEFAULT_RETRY["max_delay"]),
                "exponential_backoff": bool(setting.get("retry_exponential_backoff", 1)),
            }
        if self.list_outputs != "one":
            plan["list_outputs"] = self.list_outputs
        if block.language == "sql":
            plan["language"] = "sql"
            plan["configuration"] = dict(block.configuration)
        if self.project is not None:
            # Per block, because the engine builds a run's plan from block plans.
            plan["project"] = dict(self.project)
            plan["configuration"] = self.block_configuration(block)
        return plan

    def sensor_settings(self, block: Block) -> dict[str, float]:
        """Poll interval and timeout of a sensor: cell tag, else notebook metadata, else default."""
        return {
            "interval": block.settings.get(
                "sensor_interval", self.settings.get("sensor_interval", DEFAULT_SENSOR_INTERVAL)
            ),
            "timeout": block.settings.get(
                "sensor_timeout", self.settings.get("sensor_timeout", DEFAULT_SENSOR_TIMEOUT)
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        """The pipeline as the API shows it; blocks in dependency order when valid."""
        blocks = self.blocks
        if self.is_valid:
            by_uuid = {b.uuid: b for b in blocks}
            blocks = [by_uuid[u] for u in _topological_order(blocks)]
        return {
            "uuid": self.uuid,
            "name": self.uuid.rsplit("/", 1)[-1],
            "path": self.path,
            "type": "python",
            "blocks": [b.to_dict() for b in blocks],
            "callbacks": [a.to_dict() for a in self.addons if a.type == "callback"],
            "conditionals": [a.to_dict() for a in self.addons if a.type == "conditional"],
            "variables": self.variables,
            "errors": self.errors,
        }


def parse_notebook(uuid: str, path: str, nb: Any) -> Pipeline:
    """Build a :class:`Pipeline` from a notebook node; problems go into ``errors``."""
    errors: list[PipelineError] = []
    blocks: list[Block] = []
    addons: list[Block] = []
    explicit_upstream: dict[str, list[str] | None] = {}
    addon_parents: dict[str, list[str]] = {}
    last_main: str | None = None  # an add-on without upstream: attaches to the block above
    python_kernel = _language(nb) in ("", "python")  # blocks of other kernels are not checked
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        tags = [t for t in cell.get("metadata", {}).get("tags", []) if isinstance(t, str)]
        types = [t for t in tags if t in BLOCK_TYPES]
        errors.extend(_near_miss_tags(tags, index))
        if not types:
            continue
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        block_type = types[0]
        name = _tag_value(tags, _NAME_TAG)
        decorators = _ADDON_DECORATORS.get(block_type, (block_type,))
        uuid_ = name or _decorated_function_name(source, decorators)
        if not uuid_:
            count = sum(1 for b in (*blocks, *addons) if b.type == block_type) + 1
            uuid_ = f"{block_type}_{count}"
        if len(types) > 1:
            errors.append(_error(uuid_, f"cell has several block-type tags: {', '.join(types)}"))
        if not _UUID_PATTERN.match(uuid_):
            errors.append(_error(uuid_, "block name may only use letters, digits, _ . -"))
        if any(b.uuid == uuid_ for b in (*blocks, *addons)):
            errors.append(_error(uuid_, f"duplicate block name '{uuid_}'"))
            continue
        block = Block(uuid=uuid_, type=block_type, source=source, cell_index=index)
        syntax = _syntax_error(source) if python_kernel else None
        if syntax:
            errors.append(_error(uuid_, f"block '{uuid_}': {syntax}", "syntax", index))
        block.settings = _settings_from_tags(uuid_, tags, errors)
        _read_sql_block(block, cell, errors)
        if block_type in ADDON_TYPES:
            parents = _upstream_tags(tags)
            if parents is None:
                parents = [last_main] if last_main else []
            addon_parents[uuid_] = parents
            addons.append(block)
            continue
        explicit_upstream[uuid_] = _upstream_tags(tags)
        blocks.append(block)
        if block_type != "scratchpad":
            last_main = uuid_

    _link_blocks(blocks, explicit_upstream, errors)
    if not any(e["type"] == "cycle" for e in errors):
        _check_cycles(blocks, errors)
    _attach_addons(blocks, addons, addon_parents, errors)

    mage_meta = nb.metadata.get("mage", {})
    if not isinstance(mage_meta, dict):
        mage_meta = {}
    variables = mage_meta.get("variables", {})
    if not isinstance(variables, dict):
        errors.append(_error("", "metadata.mage.variables must be a JSON object"))
        variables = {}
    settings: dict[str, float] = {}
    for key in _NUMBER_SETTINGS:
        if key in mage_meta:
            value = _positive_number(mage_meta[key])
            if value is None:
                errors.append(_error("", f"metadata.mage.{key} must be a positive number"))
            else:
                settings[key] = value
    backoff = mage_meta.get("retry_exponential_backoff")
    if backoff is not None:
        if isinstance(backoff, bool):
            settings["retry_exponential_backoff"] = float(backoff)
        else:
            errors.append(_error("", "metadata.mage.retry_exponential_backoff must be true/false"))
    project, list_outputs = _mage_project(mage_meta, errors)
    kernelspec = nb.metadata.get("kernelspec", {})
    kernel_name = kernelspec.get("name") if isinstance(kernelspec, dict) else None
    return Pipeline(
        uuid,
        path,
        blocks,
        dict(variables),
        kernel_name,
        errors,
        notebook=nb,
        addons=addons,
        settings=settings,
        project=project,
        list_outputs=list_outputs,
    )


def _mage_project(
    mage_meta: dict[str, Any], errors: list[PipelineError]
) -> tuple[dict[str, Any] | None, str]:
    """``metadata.mage.project`` (``{"repo_path": str}``) and ``metadata.mage.list_outputs``.

    ``project.list_outputs`` is read too (the importer's first design), the top-level key wins.
    """
    project = mage_meta.get("project")
    list_outputs = mage_meta.get("list_outputs")
    if project is not None:
        repo_path = project.get("repo_path") if isinstance(project, dict) else None
        if not isinstance(repo_path, str) or not repo_path:
            errors.append(_error("", "metadata.mage.project.repo_path must be a folder path"))
            project = None
        else:
            if list_outputs is None:
                list_outputs = project.get("list_outputs")
            project = {"repo_path": repo_path}
    if list_outputs is None:
        list_outputs = "one"
    if list_outputs not in ("one", "mage"):
        errors.append(_error("", 'metadata.mage.list_outputs must be "one" or "mage"'))
        list_outputs = "one"
    return project, str(list_outputs)


def _language(nb: Any) -> str:
    """The notebook's kernel language, lower case (``""`` when it does not say)."""
    for key in ("kernelspec", "language_info"):
        meta = nb.metadata.get(key)
        if isinstance(meta, dict):
            language = meta.get("language") if key == "kernelspec" else meta.get("name")
            if isinstance(language, str) and language:
                return language.lower()
    return ""


def _read_sql_block(block: Block, cell: Any, errors: list[PipelineError]) -> None:
    """The block's language and configuration; a SQL block's configuration errors (no or an
    unknown ``data_provider``...), found here so that no kernel starts for them."""
    meta = cell.get("metadata", {}).get("mage")
    configuration = meta.get("configuration") if isinstance(meta, dict) else None
    if isinstance(configuration, dict):
        block.configuration = dict(configuration)
    if not is_sql_source(block.source):
        return
    block.language = "sql"
    for problem in configuration_problems(
        block.configuration if configuration is None else configuration, block.type
    ):
        errors.append(
            _error(block.uuid, f"block '{block.uuid}': {problem}", "invalid", block.cell_index)
        )


def _positive_number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if isinstance(value, bool) or not 0 < number < float("inf"):
        return None
    return number


def _settings_from_tags(
    uuid: str, tags: list[str], errors: list[PipelineError]
) -> dict[str, float]:
    """Numeric settings from cell tags: ``sensor_interval:<s>``, ``timeout:<s>``, ``retries:<n>``..."""
    settings: dict[str, float] = {}
    for key in _NUMBER_SETTINGS:
        raw = _tag_value(tags, key + ":")
        if raw is None:
            continue
        value = _positive_number(raw)
        if value is None:
            errors.append(_error(uuid, f"tag {key}:{raw} must be a positive number"))
        else:
            settings[key] = value
    return settings


def _attach_addons(
    blocks: list[Block],
    addons: list[Block],
    parents: dict[str, list[str]],
    errors: list[PipelineError],
) -> None:
    """Link conditionals and callbacks to the blocks they watch (their ``upstream:`` tags)."""
    known = {b.uuid: b for b in blocks}
    for addon in addons:
        wanted = parents.get(addon.uuid) or []
        if not wanted:
            errors.append(
                _error(addon.uuid, f"{addon.type} block '{addon.uuid}' has no parent block")
            )
        for parent in wanted:
            target = known.get(parent)
            if target is None or target.type == "scratchpad":
                errors.append(
                    _error(
                        addon.uuid,
                        f"{addon.type} block '{addon.uuid}' watches unknown block '{parent}'",
                    )
                )
                continue
            if parent not in addon.upstream_blocks:
                addon.upstream_blocks.append(parent)
                attached = (
                    target.conditional_blocks
                    if addon.type == "conditional"
                    else target.callback_blocks
                )
                attached.append(addon.uuid)


def _tag_value(tags: list[str], prefix: str) -> str | None:
    for tag in tags:
        if tag.startswith(prefix):
            return tag[len(prefix) :].strip()
    return None


def _upstream_tags(tags: list[str]) -> list[str] | None:
    """Upstream names from every ``upstream:`` tag, in order; None when there is no such tag.

    nbformat's schema (and so JupyterLab's tag editor) forbids commas in a tag, so several
    upstream blocks are best written as several tags (``upstream:a``, ``upstream:b``); the
    contract's comma form ``upstream:a,b`` is read as well.
    """
    values = [t[len(_UPSTREAM_TAG) :] for t in tags if t.startswith(_UPSTREAM_TAG)]
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _near_miss_tags(tags: list[str], cell_index: int) -> list[PipelineError]:
    """Tags one typo away from a block type or a setting (``data_loder``, ``upstrem:a``).

    Such a cell would silently not be a block (or lose its setting), and the run would then
    blame another block; so it is an error, with the tag it most likely means.
    """
    found: list[PipelineError] = []
    for tag in tags:
        if tag in BLOCK_TYPES:
            continue
        key, colon, _ = tag.partition(":")
        known = _TAG_KEYS if colon else BLOCK_TYPES
        if key in known:
            continue
        match = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.8)
        if match:
            meant = match[0] + colon
            found.append(
                _error(
                    "",
                    f"cell {cell_index + 1}: tag '{tag[:60]}' is not a block tag; "
                    f"did you mean '{meant}'?",
                    "unknown_tag",
                    cell_index,
                )
            )
    return found


def _python_source(source: str) -> str | None:
    """The block's code as Python, IPython's line magics and shell escapes (``%pip``, ``!ls``)
    blanked to ``pass``; None for a cell magic cell (``%%...``: not Python)."""
    if source.lstrip().startswith("%%"):
        return None
    return _MAGIC_LINE.sub(r"\1pass", source)


def _syntax_error(source: str) -> str | None:
    """Why the block's code does not compile, as ``line N: message`` (None when it does)."""
    python = _python_source(source)
    if python is None:
        return None
    try:
        ast.parse(python)
    except SyntaxError as exc:
        if _ipython_parses(source):  # a magic line the blanking above got wrong
            return None
        return f"syntax error on line {exc.lineno}: {exc.msg}"
    except ValueError as exc:  # NUL bytes
        return f"the code cannot be compiled: {exc}"
    return None


def _ipython_parses(source: str) -> bool:
    """Whether IPython's own input transformation makes the cell valid Python (False when
    IPython is not installed beside the server)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return False
    try:
        ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ValueError):
        return False
    return True


def _decorations(source: str) -> list[tuple[str, str]]:
    """``(function name, decorator name)`` of the top-level functions, in order (none if the
    code does not parse)."""
    try:
        tree = ast.parse(_python_source(source) or "")
    except (SyntaxError, ValueError):
        # Code that does not compile keeps its block's name (a validation error names it).
        return [(fn, deco) for deco, fn in _DECORATED_DEF.findall(source)]
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                name = (
                    target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                )
                found.append((node.name, name))
    return found


def _decorated_function_name(source: str, decorators: tuple[str, ...]) -> str | None:
    """Name of the first function decorated with one of ``decorators``, if the code parses."""
    return next((fn for fn, deco in _decorations(source) if deco in decorators), None)


def decorated_function_names(source: str) -> list[str]:
    """Names of the functions decorated with a block, test or add-on decorator, in order."""
    known = {*RUNNABLE_TYPES, "test", *(d for ds in _ADDON_DECORATORS.values() for d in ds)}
    names: list[str] = []
    for fn, deco in _decorations(source):
        if deco in known and fn not in names:
            names.append(fn)
    return names


def _error(
    block: str, message: str, kind: str = "invalid", cell_index: int | None = None
) -> PipelineError:
    error: PipelineError = {"block_uuid": block, "type": kind, "message": message}
    if cell_index is not None:
        error["cell_index"] = cell_index
    return error


def _link_blocks(
    blocks: list[Block], explicit: dict[str, list[str] | None], errors: list[PipelineError]
) -> None:
    """Fill upstream/downstream lists: explicit tags, else the nearest block cell above."""
    known = {b.uuid: b for b in blocks}
    previous: Block | None = None
    for block in blocks:
        wanted = explicit.get(block.uuid)
        if wanted is None:
            # Scratchpads neither take part in the default chain nor break it.
            if block.type == "scratchpad":
                continue
            wanted = [previous.uuid] if previous is not None else []
            previous = block
        else:
            if block.type != "scratchpad":
                previous = block
        for up in wanted:
            if up == block.uuid:
                errors.append(_error(block.uuid, f"block '{block.uuid}' lists itself", "cycle"))
            elif up not in known:
                errors.append(_error(block.uuid, f"unknown upstream block '{up}'"))
            elif up not in block.upstream_blocks:
                block.upstream_blocks.append(up)
                known[up].downstream_blocks.append(block.uuid)


def _check_cycles(blocks: list[Block], errors: list[PipelineError]) -> None:
    try:
        _topological_order(blocks)
    except ValueError as exc:
        for uuid in exc.args[0]:
            errors.append(_error(uuid, f"block '{uuid}' is part of a cycle", "cycle"))


def _topological_order(blocks: list[Block]) -> list[str]:
    """Kahn's algorithm, stable in notebook order; raises ValueError(cycle members)."""
    remaining = {b.uuid: len(b.upstream_blocks) for b in blocks}
    downstream = {b.uuid: b.downstream_blocks for b in blocks}
    order: list[str] = []
    ready = [b.uuid for b in blocks if remaining[b.uuid] == 0]
    position = {b.uuid: i for i, b in enumerate(blocks)}
    while ready:
        current = ready.pop(0)
        order.append(current)
        for child in downstream[current]:
            remaining[child] -= 1
            if remaining[child] == 0:
                ready.append(child)
                ready.sort(key=position.__getitem__)
    if len(order) != len(blocks):
        raise ValueError([u for u in remaining if u not in order])
    return order
