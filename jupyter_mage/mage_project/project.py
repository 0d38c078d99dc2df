"""Reading a Mage project: its pipelines' ``metadata.yaml`` and ``triggers.yaml``, block files.

A Mage project is a folder with ``pipelines/<uuid>/metadata.yaml`` (the blocks and their
wiring) and the blocks' code in one folder per block type (``data_loaders/<uuid>.py``,
``custom/`` singular, SQL blocks as ``.sql``, markdown blocks in ``markdowns/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: Mage's folder per block type (``BLOCK_TYPE_DIRECTORY_NAME``: plural, except ``custom``).
BLOCK_DIRS = {
    "data_loader": "data_loaders",
    "transformer": "transformers",
    "data_exporter": "data_exporters",
    "custom": "custom",
    "sensor": "sensors",
    "conditional": "conditionals",
    "callback": "callbacks",
    "scratchpad": "scratchpads",
    "markdown": "markdowns",
    "dbt": "dbt",
    "chart": "charts",
    "extension": "extensions",
}
#: File suffixes per block language, the first one being Mage's.
SUFFIXES = {
    "python": (".py",),
    "pyspark": (".py",),
    "sql": (".sql",),
    "r": (".r", ".R"),
    "yaml": (".yaml", ".yml"),
    "markdown": (".md",),
}


class NotAMageProject(ValueError):
    """The folder has no ``pipelines/`` with a pipeline in it."""


class InvalidProjectFile(ValueError):
    """A ``metadata.yaml`` or ``triggers.yaml`` that is not what Mage writes."""


class MageProject:
    """A Mage project folder (read only).

    Parameters
    ----------
    path
        The project's folder (the one holding ``pipelines/``, ``data_loaders/``...).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        if not (self.path / "pipelines").is_dir():
            raise NotAMageProject(f"{self.path} is not a Mage project: it has no pipelines/ folder")
        self.name = self.path.name

    def pipeline_names(self) -> list[str]:
        """The uuids of the project's pipelines (folders with a ``metadata.yaml``), sorted."""
        return sorted(
            p.name
            for p in (self.path / "pipelines").iterdir()
            if p.is_dir() and (p / "metadata.yaml").is_file()
        )

    def pipeline(self, name: str) -> dict[str, Any]:
        """A pipeline's ``metadata.yaml`` (an empty file is an empty pipeline)."""
        data = _load_yaml(self.path / "pipelines" / name / "metadata.yaml")
        if not isinstance(data, dict):
            raise InvalidProjectFile(f"pipelines/{name}/metadata.yaml is not a YAML mapping")
        return data

    def triggers(self, name: str) -> list[Any]:
        """The entries of a pipeline's ``triggers.yaml`` (none without the file)."""
        path = self.path / "pipelines" / name / "triggers.yaml"
        if not path.is_file():
            return []
        data = _load_yaml(path)
        entries = data.get("triggers") if isinstance(data, dict) else None
        if entries is None:
            return []
        if not isinstance(entries, list):
            raise InvalidProjectFile(f"pipelines/{name}/triggers.yaml: 'triggers' is not a list")
        return entries

    def block_file(self, block: dict[str, Any]) -> Path | None:
        """The file holding a block's code, where Mage looks for it; None if there is none.

        Newer Mage versions name the file in the block's configuration (``file_source.path``,
        relative to the project's parent, or ``file_path``); otherwise it is
        ``<type folder>/<uuid><suffix>``.
        """
        configuration = block.get("configuration") or {}
        named: list[str] = []
        if isinstance(configuration, dict):
            source = configuration.get("file_source")
            if isinstance(source, dict) and isinstance(source.get("path"), str):
                named.append(source["path"])
            if isinstance(configuration.get("file_path"), str):
                named.append(configuration["file_path"])
        candidates = [base / n for n in named for base in (self.path.parent, self.path)]
        folder = BLOCK_DIRS.get(str(block.get("type")))
        uuid = block.get("uuid")
        if folder is not None and isinstance(uuid, str) and uuid:
            language = str(block.get("language") or "python")
            for suffix in SUFFIXES.get(language, (f".{language}",)):
                candidates.append(self.path / folder / f"{uuid}{suffix}")
        for candidate in candidates:
            resolved = candidate.resolve()
            # Only files inside the project's parent: a metadata path never reads elsewhere.
            if resolved.is_file() and resolved.is_relative_to(self.path.parent):
                return resolved
        return None

    def relative(self, path: Path) -> str:
        """``path`` relative to the project folder, for messages."""
        try:
            return str(path.relative_to(self.path))
        except ValueError:
            return str(path)


def _load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}
