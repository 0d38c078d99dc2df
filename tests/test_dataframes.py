"""DataFrame outputs: summarized as a bounded table, in triggered runs and by hand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat

from .conftest import MageClient, block_cell, write_pipeline
from .test_handrun import notebook_kernel

FRAMES = [
    block_cell(
        "import pandas as pd\n@data_loader\ndef orders(**kwargs):\n"
        "    return pd.DataFrame({'id': range(1000), 'amount': [i * 1.5 for i in range(1000)],\n"
        "                         'region': [kwargs['region']] * 1000})\n",
        "data_loader",
    ),
    block_cell(
        "@transformer\ndef big(df, **kwargs):\n    return df[df.amount > 1400].head(20)\n",
        "transformer",
    ),
]


async def test_dataframe_summaries_in_a_triggered_run(jp_root_dir: Path, mage: MageClient) -> None:
    write_pipeline(jp_root_dir, "frames", FRAMES, variables={"region": "eu"})
    trigger = await mage.create_trigger("frames")
    run = await mage.call(
        "POST", "api", "pipeline_schedules", str(trigger["id"]), "pipeline_runs",
        params={"wait": "60"}, body={},
    )  # fmt: skip
    run = run["pipeline_run"]
    assert run["status"] == "completed", run
    [summary] = run["block_runs"][0]["outputs"]
    assert summary["type"].startswith("pandas.") and summary["type"].endswith("DataFrame")
    assert summary["shape"] == [1000, 3]
    assert summary["sample_data"]["columns"] == ["id", "amount", "region"]
    assert summary["sample_data"]["rows"][1] == [1, 1.5, "eu"]
    assert len(summary["sample_data"]["rows"]) == 10  # bounded sample
    [big] = run["block_runs"][1]["outputs"]
    assert big["shape"] == [20, 3]


async def test_dataframe_table_by_hand(
    jp_root_dir: Path, jp_fetch: Callable[..., Any], jp_serverapp: Any
) -> None:
    write_pipeline(jp_root_dir, "frames", FRAMES, variables={"region": "eu"})
    nb = nbformat.read(jp_root_dir / "frames.ipynb", as_version=4)
    loader, transformer = nb.cells[1:]
    async with notebook_kernel(jp_fetch, jp_serverapp, "frames.ipynb") as kernel:
        await kernel.run_cell("from jupyter_mage import data_loader, transformer")
        for cell in (loader, transformer):
            result = await kernel.run_cell(cell.source, cell.id)
            assert result["status"] == "ok", result
        html = next(
            o["data"]["text/html"] for o in result["outputs"] if o["type"] == "display_data"
        )
        assert "<th>amount</th>" in html and "<td>eu</td>" in html
        assert "DataFrame [20, 3]" in html
