"""Pipelines are notebooks: read block cells, their names and their upstream links.

A notebook becomes a :class:`Pipeline` here. Nothing in this module touches the kernel, the
database or the event loop; :class:`PipelineRepository` reads notebooks in a worker thread and
caches them by modification time.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

#: Block types that run in a pipeline run, in the order Mage lists them.
RUNNABLE_TYPES = ("data_loader", "transformer", "data_exporter", "custom", "sensor")
#: Tags that make a cell a block. Scratchpads are blocks that never run in a pipeline run.
BLOCK_TYPES = (*RUNNABLE_TYPES, "scratchpad")
NOTEBOOK_SUFFIX = ".ipynb"
_NAME_TAG = "name:"
_UPSTREAM_TAG = "upstream:"
_UUID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


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

    def to_dict(self) -> dict[str, Any]:
        """The block as the API shows it."""
        return {
            "uuid": self.uuid,
            "name": self.uuid,
            "type": self.type,
            "upstream_blocks": list(self.upstream_blocks),
            "downstream_blocks": list(self.downstream_blocks),
        }


@dataclass
class Pipeline:
    """A notebook seen as a DAG of blocks."""

    uuid: str
    path: str
    blocks: list[Block]
    variables: dict[str, Any]
    kernel_name: str | None
    errors: list[dict[str, str]]
    notebook: Any = field(default=None, repr=False, compare=False)

    @property
    def is_valid(self) -> bool:
        """True when the pipeline can run."""
        return not self.errors

    def runnable_blocks(self) -> list[Block]:
        """Blocks a run executes, in dependency order (scratchpads left out)."""
        by_uuid = {b.uuid: b for b in self.blocks}
        order = _topological_order(self.blocks)
        return [by_uuid[u] for u in order if by_uuid[u].type != "scratchpad"]

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
            "variables": self.variables,
            "errors": self.errors,
        }


def parse_notebook(uuid: str, path: str, nb: Any) -> Pipeline:
    """Build a :class:`Pipeline` from a notebook node; problems go into ``errors``."""
    errors: list[dict[str, str]] = []
    blocks: list[Block] = []
    explicit_upstream: dict[str, list[str] | None] = {}
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        tags = [t for t in cell.get("metadata", {}).get("tags", []) if isinstance(t, str)]
        types = [t for t in tags if t in BLOCK_TYPES]
        if not types:
            continue
        source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        block_type = types[0]
        name = _tag_value(tags, _NAME_TAG)
        uuid_ = name or _decorated_function_name(source, block_type)
        if not uuid_:
            count = sum(1 for b in blocks if b.type == block_type) + 1
            uuid_ = f"{block_type}_{count}"
        if len(types) > 1:
            errors.append(_error(uuid_, f"cell has several block-type tags: {', '.join(types)}"))
        if not _UUID_PATTERN.match(uuid_):
            errors.append(_error(uuid_, "block name may only use letters, digits, _ . -"))
        explicit_upstream[uuid_] = _upstream_tags(tags)
        if any(b.uuid == uuid_ for b in blocks):
            errors.append(_error(uuid_, f"duplicate block name '{uuid_}'"))
            continue
        blocks.append(Block(uuid=uuid_, type=block_type, source=source, cell_index=index))

    _link_blocks(blocks, explicit_upstream, errors)
    if not any(e["type"] == "cycle" for e in errors):
        _check_cycles(blocks, errors)

    mage_meta = nb.metadata.get("mage", {})
    variables = mage_meta.get("variables", {}) if isinstance(mage_meta, dict) else {}
    if not isinstance(variables, dict):
        errors.append(_error("", "metadata.mage.variables must be a JSON object"))
        variables = {}
    kernelspec = nb.metadata.get("kernelspec", {})
    kernel_name = kernelspec.get("name") if isinstance(kernelspec, dict) else None
    return Pipeline(uuid, path, blocks, dict(variables), kernel_name, errors, notebook=nb)


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


def _decorated_function_name(source: str, block_type: str) -> str | None:
    """Name of the function decorated with the block's type, if the code parses."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                name = (
                    target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                )
                if name == block_type:
                    return node.name
    return None


def _error(block: str, message: str, kind: str = "invalid") -> dict[str, str]:
    return {"block_uuid": block, "type": kind, "message": message}


def _link_blocks(
    blocks: list[Block], explicit: dict[str, list[str] | None], errors: list[dict[str, str]]
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


def _check_cycles(blocks: list[Block], errors: list[dict[str, str]]) -> None:
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


class PipelineRepository:
    """Finds pipeline notebooks under the server's root dir and caches them by mtime.

    Parameters
    ----------
    root_dir
        The Jupyter server's root directory; nothing outside it is reachable.
    exclude
        Folders left out of listings (the executed copies of runs live in one).
    """

    def __init__(self, root_dir: str, exclude: list[str] | None = None) -> None:
        self.root = Path(root_dir).resolve()
        self.exclude = [Path(p).resolve() for p in exclude or []]
        self._cache: dict[str, tuple[float, Pipeline]] = {}

    def resolve(self, uuid: str) -> Path:
        """The notebook path of a pipeline uuid; PipelineNotFound if outside the root."""
        if not uuid or "\\" in uuid or "\x00" in uuid:
            raise PipelineNotFound(uuid)
        parts = uuid.strip("/").split("/")
        if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise PipelineNotFound(uuid)
        path = (self.root / Path(*parts)).with_name(parts[-1] + NOTEBOOK_SUFFIX).resolve()
        if not path.is_relative_to(self.root) or any(path.is_relative_to(e) for e in self.exclude):
            raise PipelineNotFound(uuid)
        return path

    async def get(self, uuid: str) -> Pipeline:
        """Load one pipeline (off the event loop)."""
        return await asyncio.to_thread(self.load, uuid)

    async def list(self) -> list[Pipeline]:
        """All pipelines under the root dir (off the event loop)."""
        return await asyncio.to_thread(self._list)

    def load(self, uuid: str) -> Pipeline:
        """Load one pipeline, blocking; served from cache while the file is unchanged."""
        path = self.resolve(uuid)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            raise PipelineNotFound(uuid) from None
        cached = self._cache.get(uuid)
        if cached and cached[0] == mtime:
            pipeline = cached[1]
        else:
            try:
                nb = nbformat.read(path, as_version=4)
            except Exception as exc:  # unreadable JSON is not a pipeline
                raise PipelineNotFound(uuid) from exc
            rel = path.relative_to(self.root).as_posix()
            pipeline = parse_notebook(uuid, rel, nb)
            self._cache[uuid] = (mtime, pipeline)
        if not pipeline.blocks:
            raise PipelineNotFound(uuid)
        return pipeline

    def _list(self) -> list[Pipeline]:
        found: list[Pipeline] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".")
                and d != "node_modules"
                and Path(dirpath, d).resolve() not in self.exclude
            )
            for name in sorted(filenames):
                if not name.endswith(NOTEBOOK_SUFFIX) or name.startswith("."):
                    continue
                rel = (Path(dirpath) / name).relative_to(self.root).as_posix()
                uuid = rel[: -len(NOTEBOOK_SUFFIX)]
                try:
                    found.append(self.load(uuid))
                except PipelineNotFound:
                    continue
        return found
