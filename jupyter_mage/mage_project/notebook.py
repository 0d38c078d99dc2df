"""A Mage pipeline as a notebook: one block cell per block, code unchanged, cells in run order.

Each block becomes a code cell tagged with its type, ``name:<uuid>`` and one ``upstream:<uuid>``
tag per upstream block (``upstream:`` alone for a root: always explicit, so moving cells never
rewires the pipeline; one tag per block because nbformat forbids commas in tags). Mage's
``retry_config`` and ``timeout`` become the ``retries:``/``retry_delay:``/``retry_max_delay:``
and ``timeout:`` tags; the block's ``configuration`` is kept in the cell's
``metadata.mage.configuration`` (blocks see it as ``kwargs['configuration']``). Callbacks and
conditionals become add-on cells attached to their parents. SQL blocks become cells starting
with ``%%mage_sql``. The pipeline's ``variables`` go to ``metadata.mage.variables``, and
``metadata.mage.project`` ties the notebook to the project folder (Mage's layout at run time),
``metadata.mage.list_outputs = "mage"`` gives it Mage's list rule.

Cells are in a topological order of the blocks (stable in ``metadata.yaml`` order), each add-on
right after its last parent, so running the notebook top to bottom hand-runs every block after
its upstream blocks.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ..pipeline import ADDON_TYPES, RUNNABLE_TYPES
from .project import BLOCK_DIRS, SUFFIXES, MageProject
from .report import Report

#: The first line of a SQL block's cell (the SQL follows unchanged).
SQL_MAGIC = "%%mage_sql"
#: Block types that become block cells (markdown blocks become markdown cells).
CARRIED_TYPES = (*RUNNABLE_TYPES, "scratchpad", *ADDON_TYPES)
#: Languages whose code becomes a block cell.
CARRIED_LANGUAGES = ("python", "sql", "pyspark")
#: Pipeline types that are a DAG of blocks (the others are Mage's own engines).
CARRIED_PIPELINE_TYPES = ("python", "pyspark")
#: Block keys that are Mage's editor state or carried elsewhere (never a run-time difference).
_EDITOR_KEYS = {
    "all_upstream_blocks_executed",
    "color",
    "downstream_blocks",
    "name",
    "status",
    "uuid",
    "type",
    "language",
    "upstream_blocks",
    "configuration",
    "retry_config",
    "timeout",
    "executor_type",
    "executor_config",
    "has_callback",
    "callback_blocks",
    "conditional_blocks",
    "content",
    "metadata",
    "tags",
}
#: Pipeline keys that hold nothing a run of the notebook needs.
_PIPELINE_EDITOR_KEYS = {
    "blocks",
    "callbacks",
    "conditionals",
    "widgets",
    "extensions",
    "name",
    "uuid",
    "type",
    "description",
    "variables",
    "retry_config",
    "created_at",
    "updated_at",
    "tags",
    "cache_block_output_in_memory",
    "run_pipeline_in_one_process",
    "variables_dir",
    "remote_variables_dir",
    "settings",
    "data_integration",
    "executor_type",
    "executor_count",
    "notification_config",
    "spark_config",
    "concurrency_config",
}
_CELL_ID = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class ImportedPipeline:
    """One pipeline of the project as written (or not written) by the importer."""

    name: str
    notebook_path: Path | None
    triggers: list[Any] = field(default_factory=list)


def _blocks(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key) or []
    return [b for b in value if isinstance(b, dict) and isinstance(b.get("uuid"), str)]


def _names(value: Any) -> list[str]:
    return [str(v) for v in value or [] if isinstance(v, str) and v]


def _topological(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks with every upstream block first, stable in ``metadata.yaml`` order.

    Upstream names that are not among ``blocks`` (not carried) are ignored here; a cycle
    keeps the remaining blocks in file order (the pipeline's validation reports it).
    """
    known = {b["uuid"] for b in blocks}
    pending = list(blocks)
    placed: list[dict[str, Any]] = []
    done: set[str] = set()
    while pending:
        for block in pending:
            ups = [u for u in _names(block.get("upstream_blocks")) if u in known]
            if all(u in done for u in ups):
                break
        else:
            block = pending[0]
        pending.remove(block)
        placed.append(block)
        done.add(block["uuid"])
    return placed


def _cell_id(kind: str, uuid: str) -> str:
    """A cell id stable across re-imports (a re-imported notebook diffs cleanly)."""
    return f"{kind}-{_CELL_ID.sub('-', uuid)}"[:64]


def _number_tag(key: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return f"{key}:{value:g}"


class PipelineConverter:
    """Builds one pipeline's notebook, recording in the report what it does not carry."""

    def __init__(self, project: MageProject, name: str, report: Report) -> None:
        self.project = project
        self.name = name
        self.report = report
        self.data = project.pipeline(name)
        self.retry_backoff: bool | None = None

    # -- findings ------------------------------------------------------------------------------

    def error(self, subject: str, message: str) -> None:
        self.report.error(self.name, subject, message)

    def warning(self, subject: str, message: str) -> None:
        self.report.warning(self.name, subject, message)

    def note(self, subject: str, message: str) -> None:
        self.report.note(self.name, subject, message)

    # -- the notebook --------------------------------------------------------------------------

    def notebook(self, notebook_dir: Path) -> Any | None:
        """The pipeline as a notebook node; None when the pipeline kind is not carried."""
        kind = str(self.data.get("type") or "python")
        if kind not in CARRIED_PIPELINE_TYPES:
            self.error(
                "",
                f"a {kind} pipeline is not carried (only Mage's standard python pipelines, "
                "DAGs of blocks, become notebooks): no notebook written",
            )
            return None
        if kind == "pyspark":
            self.warning(
                "", "pyspark pipeline: blocks run as Python in the kernel, no Spark session"
            )
        mage = self._mage_metadata(notebook_dir)  # first: block tags depend on its retry_config
        self._pipeline_keys()
        carried, markdowns = self._carried_blocks()
        if not carried:
            self.warning("", "the pipeline has no blocks: its notebook is no pipeline until it has")
        addons = self._addons({b["uuid"] for b in carried})
        cells = self._cells(carried, addons, markdowns)
        nb = new_notebook(cells=[*self._head(), *cells])  # the head lists the findings
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nb.metadata["mage"] = mage
        return nb

    def _mage_metadata(self, notebook_dir: Path) -> dict[str, Any]:
        variables = self.data.get("variables") or {}
        if not isinstance(variables, dict):
            self.error("", "pipeline variables are not a mapping: not carried")
            variables = {}
        meta: dict[str, Any] = {
            "variables": variables,
            "project": {"repo_path": os.path.relpath(self.project.path, notebook_dir)},
            "list_outputs": "mage",
            "imported_from": {"project": self.project.name, "pipeline": self.name},
        }
        retry = self.data.get("retry_config") or {}
        if isinstance(retry, dict):
            for key, tag in (
                ("retries", "retries"),
                ("delay", "retry_delay"),
                ("max_delay", "retry_max_delay"),
            ):
                if key in retry and _number_tag(tag, retry[key]) is not None:
                    meta[tag] = retry[key]
            if isinstance(retry.get("exponential_backoff"), bool):
                meta["retry_exponential_backoff"] = retry["exponential_backoff"]
                self.retry_backoff = retry["exponential_backoff"]
        return meta

    def _head(self) -> list[Any]:
        """A title, what was not carried, and the cell that turns hand runs on."""
        title = str(self.data.get("name") or self.name)
        lines = [
            f"# {title}",
            "",
            (
                f"Imported from the Mage project `{self.project.name}` (pipeline "
                f"`{self.name}`) by `jupyter mage import`. Blocks run in Mage's layout: the "
                "working directory is the project's parent and `get_repo_path()` is the "
                "project folder."
            ),
        ]
        description = self.data.get("description")
        if isinstance(description, str) and description.strip():
            lines += ["", description.strip()]
        findings = self.report.of(self.name)
        if findings:
            lines += ["", "Not carried, or carried differently:", ""]
            lines += [
                f"- **{f.level}** {f.subject + ': ' if f.subject else ''}{f.message}"
                for f in findings
            ]
        head = new_markdown_cell("\n".join(lines))
        head.id = "mage-import-title"
        setup = new_code_cell(
            "# Hand runs: run this cell once, then run block cells (top to bottom works).\n"
            "%load_ext jupyter_mage"
        )
        setup.id = "mage-import-setup"
        return [head, setup]

    def _pipeline_keys(self) -> None:
        """Pipeline-level features that are not carried."""
        extensions = self.data.get("extensions") or {}
        if isinstance(extensions, dict):
            for extension, config in extensions.items():
                blocks = _blocks(config, "blocks") if isinstance(config, dict) else []
                names = ", ".join(b["uuid"] for b in blocks) or "no blocks"
                self.error(
                    f"extension {extension}",
                    f"Mage extensions are not carried (its blocks: {names}); run their checks "
                    "as @test functions of the blocks instead",
                )
        for widget in _blocks(self.data, "widgets"):
            self.note(
                widget["uuid"], f"{widget.get('type', 'chart')} widget (editor chart) not carried"
            )
        if self.data.get("notification_config"):
            self.warning("", "notification_config (Slack/Teams alerts) is not carried")
        if self.data.get("concurrency_config"):
            self.warning("", "concurrency_config is not carried (see MageApp.max_concurrent_runs)")
        executor = self.data.get("executor_type")
        if executor not in (None, "local_python"):
            self.warning("", f"executor_type {executor} not carried: blocks run in a kernel")
        for key in sorted(set(self.data) - _PIPELINE_EDITOR_KEYS):
            self.note("", f"pipeline setting '{key}' not carried")

    def _carried_blocks(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The blocks that become block cells (with their code), and the markdown blocks."""
        carried: list[dict[str, Any]] = []
        markdowns: list[dict[str, Any]] = []
        dropped: set[str] = set()
        for block in _blocks(self.data, "blocks"):
            uuid, kind = block["uuid"], str(block.get("type") or "")
            language = str(block.get("language") or "python")
            if kind == "markdown":
                markdowns.append({**block, "_source": self._source(block)})
                continue
            if kind not in CARRIED_TYPES:
                self.error(uuid, f"{kind or 'untyped'} block not carried")
                dropped.add(uuid)
                continue
            if language not in CARRIED_LANGUAGES:
                self.error(uuid, f"{language} block not carried (only Python and SQL blocks)")
                dropped.add(uuid)
                continue
            self._block_keys(block)
            carried.append({**block, "_source": self._source(block)})
        for block in carried:
            lost = [u for u in _names(block.get("upstream_blocks")) if u in dropped]
            if lost:
                self.error(
                    block["uuid"],
                    f"its upstream block(s) {', '.join(lost)} were not carried: the pipeline "
                    "does not validate until the block is rewired",
                )
        return carried, markdowns

    def _block_keys(self, block: dict[str, Any]) -> None:
        uuid = block["uuid"]
        configuration = block.get("configuration") or {}
        if isinstance(configuration, dict):
            if configuration.get("dynamic"):
                self.error(uuid, "dynamic block: runs once here, its output is not fanned out")
            if configuration.get("reduce_output"):
                self.error(uuid, "reduce_output is not carried: the block runs once")
        executor = block.get("executor_type")
        if executor not in (None, "local_python"):
            self.warning(uuid, f"executor_type {executor} not carried: the block runs in a kernel")
        for key in sorted(set(block) - _EDITOR_KEYS):
            if block[key] not in (None, {}, [], ""):
                self.note(uuid, f"block setting '{key}' not carried")

    def _source(self, block: dict[str, Any]) -> str | None:
        """The block's code from its file; None (and an error) when the file is missing."""
        if isinstance(block.get("content"), str):  # some exports inline the code
            return str(block["content"])
        path = self.project.block_file(block)
        if path is None:
            self.error(
                block["uuid"],
                f"block file {self._expected_file(block)} is missing: the cell raises "
                "FileNotFoundError when it runs",
            )
            return None
        return path.read_text(encoding="utf-8")

    def _expected_file(self, block: dict[str, Any]) -> str:
        folder = BLOCK_DIRS.get(str(block.get("type")), str(block.get("type")))
        language = str(block.get("language") or "python")
        suffix = SUFFIXES.get(language, (f".{language}",))[0]
        return f"{folder}/{block['uuid']}{suffix}"

    def _addons(self, parents: set[str]) -> list[dict[str, Any]]:
        """Callbacks and conditionals with the parents they attach to."""
        addons: list[dict[str, Any]] = []
        main = _blocks(self.data, "blocks")
        for key, kind in (("callbacks", "callback"), ("conditionals", "conditional")):
            for addon in _blocks(self.data, key):
                uuid = addon["uuid"]
                wanted = _names(addon.get("upstream_blocks"))
                listed = f"{kind}_blocks"
                wanted += [b["uuid"] for b in main if uuid in _names(b.get(listed))]
                attached = [p for p in dict.fromkeys(wanted) if p in parents]
                if not attached:
                    self.error(uuid, f"{kind} block attached to no carried block: not carried")
                    continue
                language = str(addon.get("language") or "python")
                if language != "python":
                    self.error(uuid, f"{language} {kind} block not carried")
                    continue
                source = self._source({**addon, "type": kind})
                addons.append({**addon, "type": kind, "_parents": attached, "_source": source})
        return addons

    def _cells(
        self,
        carried: list[dict[str, Any]],
        addons: list[dict[str, Any]],
        markdowns: list[dict[str, Any]],
    ) -> list[Any]:
        ordered = _topological(carried)
        position = {b["uuid"]: i for i, b in enumerate(ordered)}
        file_order = [b["uuid"] for b in _blocks(self.data, "blocks")]
        # Markdown blocks follow the block above them in metadata.yaml; add-ons their last parent.
        after: dict[int, list[Any]] = {}
        for md in markdowns:
            index = file_order.index(md["uuid"])
            above = [position[u] for u in file_order[:index] if u in position]
            after.setdefault(max(above, default=-1), []).append(self._markdown_cell(md))
        for addon in addons:
            last = max(position[p] for p in addon["_parents"])
            after.setdefault(last, []).append(self._block_cell(addon, addon["_parents"]))
        cells = list(after.get(-1, []))
        for i, block in enumerate(ordered):
            upstream = _names(block.get("upstream_blocks"))
            cells.append(self._block_cell(block, upstream))
            cells += after.get(i, [])
        return cells

    def _markdown_cell(self, block: dict[str, Any]) -> Any:
        source = block["_source"]
        cell = new_markdown_cell(source if source is not None else f"*(missing: {block['uuid']})*")
        cell.id = _cell_id("markdown", block["uuid"])
        return cell

    def _block_cell(self, block: dict[str, Any], upstream: list[str]) -> Any:
        uuid, kind = block["uuid"], block["type"]
        language = str(block.get("language") or "python")
        source = block["_source"]
        if source is None:
            missing = f"jupyter mage import: block file {self._expected_file(block)} is missing"
            source = f"raise FileNotFoundError({missing!r})\n"
        elif language == "sql":
            source = f"{SQL_MAGIC}\n{source}"
        cell = new_code_cell(source)
        cell.id = _cell_id(kind, uuid)
        tags = [kind, f"name:{uuid}"]
        if kind != "scratchpad":
            tags += [f"upstream:{u}" for u in upstream] or ["upstream:"]
        tags += self._setting_tags(block)
        cell.metadata["tags"] = tags
        configuration = block.get("configuration")
        mage: dict[str, Any] = {}
        if isinstance(configuration, dict) and configuration:
            mage["configuration"] = configuration
        elif language == "sql":
            mage["configuration"] = {}
        if language == "sql":
            mage["language"] = "sql"
        if mage:
            cell.metadata["mage"] = mage
        return cell

    def _setting_tags(self, block: dict[str, Any]) -> list[str]:
        uuid = block["uuid"]
        tags: list[str] = []
        retry = block.get("retry_config") or {}
        if isinstance(retry, dict):
            for key, tag in (
                ("retries", "retries"),
                ("delay", "retry_delay"),
                ("max_delay", "retry_max_delay"),
            ):
                if key not in retry or retry[key] in (None, 0):
                    continue
                made = _number_tag(tag, retry[key])
                if made is None:
                    self.warning(uuid, f"retry_config {key}={retry[key]!r} not carried")
                else:
                    tags.append(made)
            backoff = retry.get("exponential_backoff")
            if isinstance(backoff, bool) and backoff != (self.retry_backoff is not False):
                self.warning(
                    uuid,
                    f"retry_config exponential_backoff={backoff} not carried: it is a "
                    "pipeline-wide setting here (metadata.mage.retry_exponential_backoff)",
                )
        timeout = block.get("timeout")
        if timeout not in (None, 0):
            made = _number_tag("timeout", timeout)
            if made is None:
                self.warning(uuid, f"timeout {timeout!r} not carried")
            else:
                tags.append(made)
        return tags


def write_notebook(nb: Any, path: Path) -> None:
    """Validate and write a notebook (a re-import overwrites the previous one)."""
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
