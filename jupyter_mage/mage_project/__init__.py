"""Bring a Mage project: its pipelines become notebooks, its ``triggers.yaml`` triggers.

One concern per module:

- :mod:`.project`: reading a Mage project (pipelines, block files, triggers files);
- :mod:`.notebook`: one pipeline as a notebook (cells, tags, order, metadata);
- :mod:`.triggers`: ``triggers.yaml`` entries as triggers in the server's database;
- :mod:`.report`: what the import did not carry, never dropped silently.

:func:`convert_project` writes the notebooks (no database); :func:`import_triggers` writes the
triggers through a :class:`~jupyter_mage.storage.Store`. ``jupyter mage import``
(:mod:`jupyter_mage.cli`) does both.
"""

from __future__ import annotations

from pathlib import Path

from ..storage import Store
from .notebook import SQL_MAGIC, ImportedPipeline, PipelineConverter, write_notebook
from .project import MageProject, NotAMageProject
from .report import Finding, Report
from .triggers import trigger_values, write_triggers


def default_into(project: MageProject) -> Path:
    """Where notebooks go without ``--into``: ``<project>/notebooks``."""
    return project.path / "notebooks"


def convert_project(
    project_dir: str | Path,
    into: str | Path | None = None,
    pipelines: list[str] | None = None,
    report: Report | None = None,
) -> tuple[Report, list[ImportedPipeline]]:
    """Write one notebook per pipeline of the project (``<into>/<pipeline>.ipynb``).

    Parameters
    ----------
    project_dir
        The Mage project's folder.
    into
        The folder of the notebooks (default ``<project>/notebooks``).
    pipelines
        Only these pipelines (default: all of them); an unknown name is an error.
    """
    report = report if report is not None else Report()
    project = MageProject(project_dir)
    target = Path(into).expanduser().resolve() if into is not None else default_into(project)
    names = project.pipeline_names()
    if pipelines:
        for name in pipelines:
            if name not in names:
                report.error(name, "", f"no pipeline {name} in {project.path}/pipelines")
        names = [n for n in names if n in pipelines]
    imported: list[ImportedPipeline] = []
    for name in names:
        try:
            converter = PipelineConverter(project, name, report)
            nb = converter.notebook(target)
            triggers = project.triggers(name)
        except (OSError, ValueError) as exc:  # unreadable YAML, a block file that is no text
            report.error(name, "", f"not imported: {exc}")
            continue
        path = None
        if nb is not None:
            path = target / f"{name}.ipynb"
            write_notebook(nb, path)
            report.notebooks[name] = str(path)
        imported.append(ImportedPipeline(name, path, triggers))
    return report, imported


async def import_triggers(
    store: Store, imported: list[ImportedPipeline], root_dir: str | Path, report: Report
) -> None:
    """Write the pipelines' triggers; a notebook's pipeline uuid is its path under ``root_dir``
    (the Jupyter server's root dir), without ``.ipynb``."""
    root = Path(root_dir).expanduser().resolve()
    for pipeline in imported:
        if not pipeline.triggers:
            continue
        if pipeline.notebook_path is None:
            report.error(pipeline.name, "triggers.yaml", "no notebook, so no triggers written")
            continue
        try:
            relative = pipeline.notebook_path.resolve().relative_to(root)
        except ValueError:
            report.error(
                pipeline.name,
                "triggers.yaml",
                f"the notebook is outside the server's root dir {root} (--root-dir): "
                "no triggers written",
            )
            continue
        uuid = relative.with_suffix("").as_posix()
        await write_triggers(store, pipeline.name, uuid, pipeline.triggers, report)


__all__ = [
    "SQL_MAGIC",
    "Finding",
    "ImportedPipeline",
    "MageProject",
    "NotAMageProject",
    "Report",
    "convert_project",
    "default_into",
    "import_triggers",
    "trigger_values",
]
