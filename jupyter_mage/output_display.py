"""A block's output summaries as a notebook display bundle: a table for tabular values (data
frames, lists of records), a short text otherwise.

One rendering for the two places a user sees a block's outputs inside a notebook: the
executed copy of a run (:mod:`jupyter_mage.executed_notebook`) and a hand run
(:mod:`jupyter_mage.handrun`). The summaries are those of :func:`jupyter_mage.runtime.summarize`.
"""

from __future__ import annotations

import html
from typing import Any


def summary_bundle(uuid: str, summaries: list[dict[str, Any]], note: str) -> dict[str, str]:
    """``text/plain`` and ``text/html`` of a block's outputs; ``note`` follows the block's name
    (``hand run``, ``3 outputs (0.02 s)``)."""
    text = [f"{uuid}: {note}"]
    parts = [f"<p><b>{html.escape(uuid)}</b>: {html.escape(note)}</p>"]
    for summary in summaries:
        size = summary.get("shape") or summary.get("length")
        head = f"{summary.get('variable_uuid', 'output')}: {summary.get('type', '')}"
        if size:
            head += f" {size}"
        text_data = str(summary.get("text_data", ""))
        text.append(f"  {head}\n  {text_data[:500]}")
        parts.append(f"<p><code>{html.escape(head)}</code></p>")
        sample = summary.get("sample_data")
        if isinstance(sample, dict) and sample.get("columns") is not None:
            parts.append(table_html(sample["columns"], sample.get("rows") or []))
        else:
            parts.append(f"<pre>{html.escape(text_data)}</pre>")
    return {"text/plain": "\n".join(text), "text/html": "\n".join(parts)}


def table_html(columns: list[Any], rows: list[list[Any]]) -> str:
    """An HTML table, every value escaped."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
