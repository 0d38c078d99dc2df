"""The executed copy of a run's notebook, written where JupyterLab can open it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat

from .pipeline import Pipeline
from .records import RunPlan
from .run_messages import BlockState
from .variables import merge_variables


def write_executed_notebook(
    runs_path: Path,
    root: Path,
    plan: RunPlan,
    pipeline: Pipeline,
    states: dict[str, BlockState],
    status: str,
) -> str:
    """Write the executed copy of a run's notebook; its path (relative to ``root`` if inside).

    Block cells get the outputs the run recorded (bounded), their outputs' summaries (a
    table for data frames and records) and their final status; a first markdown cell shows the
    run's kwargs. Every cell is read-only (JupyterLab's ``editable``/``deletable`` cell
    metadata): it is a record of what ran, not a notebook to go on with. Blocking: run it in a
    thread.
    """
    nb = copy.deepcopy(pipeline.notebook)
    by_index = {b.cell_index: b.uuid for b in pipeline.blocks}
    for index, cell in enumerate(nb.cells):
        cell.setdefault("metadata", {}).update(editable=False, deletable=False)
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
    nb.cells.insert(
        0, nbformat.v4.new_markdown_cell(header, metadata={"editable": False, "deletable": False})
    )
    nb.metadata.setdefault("mage", {})["executed_run"] = plan["id"]
    target = runs_path / pipeline.uuid / f"run_{plan['id']}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    # The copy came from a valid notebook: plain JSON, skipping nbformat's slow validation.
    target.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
    try:
        return target.relative_to(root).as_posix()
    except ValueError:
        return str(target)
