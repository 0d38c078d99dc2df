"""Pipelines under the server's root dir: found, read in a worker thread, cached by mtime.

What the contents manager hides from JupyterLab is no pipeline, listed or fetched, and nothing
outside the root dir (or inside the folder of executed notebooks) is reachable.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from pathlib import Path
from typing import Any

import nbformat
from jupyter_core.paths import is_file_hidden
from jupyter_server.services.contents.manager import ContentsManager

from .pipeline import NOTEBOOK_SUFFIX, Pipeline, PipelineNotFound, parse_notebook


def _mtime(path: Path) -> int | None:
    """A file's modification time in ns, or None if it cannot be read."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class PipelineRepository:
    """Finds pipeline notebooks under the server's root dir and caches them by mtime.

    Parameters
    ----------
    root_dir
        The Jupyter server's root directory; nothing outside it is reachable.
    exclude
        Folders left out of listings (the executed copies of runs live in one).
    contents_manager
        The server's contents manager: what it hides from JupyterLab (``hide_globs`` such as
        ``__pycache__`` and ``*~``; hidden files unless ``allow_hidden``) is no pipeline, listed
        or fetched. Its settings are read at each use. Default: a contents manager's defaults.
    """

    #: Never pipelines, whatever the contents manager shows: dependencies and checkpoints.
    SKIPPED = ("node_modules", ".ipynb_checkpoints")

    def __init__(
        self, root_dir: str, exclude: list[str] | None = None, contents_manager: Any = None
    ) -> None:
        if contents_manager is None:
            contents_manager = ContentsManager()
        self.root = Path(root_dir).resolve()
        self.exclude = [Path(p).resolve() for p in exclude or []]
        self.contents_manager = contents_manager
        self._cache: dict[str, tuple[float, Pipeline]] = {}

    def shown(self, path: Path) -> bool:
        """Whether the contents manager lists this file or folder (its own name; the caller
        checks each folder above it)."""
        name = path.name
        if name in self.SKIPPED or not self.contents_manager.should_list(name):
            return False
        if self.contents_manager.allow_hidden:
            return True
        try:
            return not is_file_hidden(str(path))  # a dot name, UF_HIDDEN, an unreadable folder
        except OSError:
            return False

    def resolve(self, uuid: str) -> Path:
        """The notebook path of a pipeline uuid; PipelineNotFound if outside the root or hidden."""
        if not uuid or "\\" in uuid or "\x00" in uuid:
            raise PipelineNotFound(uuid)
        parts = uuid.strip("/").split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise PipelineNotFound(uuid)
        folder = self.root
        for part in parts[:-1]:
            folder = folder / part
            if not self.shown(folder):
                raise PipelineNotFound(uuid)
        path = folder / (parts[-1] + NOTEBOOK_SUFFIX)
        if not self.shown(path):
            raise PipelineNotFound(uuid)
        path = path.resolve()
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
        cached = self._cache.get(uuid)
        if cached is not None and _mtime(self.root / cached[1].path) == cached[0]:
            pipeline = cached[1]  # unchanged: one stat, no path resolution (it walks every part)
        else:
            path = self.resolve(uuid)  # anything read is read from inside the root
            mtime = _mtime(path)
            if mtime is None:
                raise PipelineNotFound(uuid)
            try:
                nb = nbformat.read(path, as_version=4)
            except Exception as exc:  # unreadable JSON is not a pipeline
                raise PipelineNotFound(uuid) from exc
            pipeline = parse_notebook(uuid, path.relative_to(self.root).as_posix(), nb)
            self._cache[uuid] = (mtime, pipeline)
        if not pipeline.blocks:
            raise PipelineNotFound(uuid)
        return pipeline

    def _list(self) -> builtins.list[Pipeline]:  # `list` here is the method above
        found: builtins.list[Pipeline] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(
                d
                for d in dirnames
                if self.shown(Path(dirpath, d)) and Path(dirpath, d).resolve() not in self.exclude
            )
            for name in sorted(filenames):
                if not name.endswith(NOTEBOOK_SUFFIX) or not self.shown(Path(dirpath, name)):
                    continue
                rel = (Path(dirpath) / name).relative_to(self.root).as_posix()
                uuid = rel[: -len(NOTEBOOK_SUFFIX)]
                try:
                    found.append(self.load(uuid))
                except PipelineNotFound:
                    continue
        return found
