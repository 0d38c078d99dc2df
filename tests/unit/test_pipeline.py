"""Notebook → pipeline: block tags, names, upstream links, validation, the root boundary."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from jupyter_mage.pipeline import PipelineNotFound, parse_notebook
from jupyter_mage.repository import PipelineRepository

from ..conftest import block_cell, write_pipeline


def _parse(*cells: object, variables: object = None) -> object:
    nb = new_notebook()
    nb.cells = list(cells)
    if variables is not None:
        nb.metadata["mage"] = {"variables": variables}
    return parse_notebook("p", "p.ipynb", nb)


def test_blocks_names_and_default_chain() -> None:
    pipeline = _parse(
        new_markdown_cell("# doc"),
        new_code_cell("x = 1  # not a block"),
        block_cell("@data_loader\ndef load():\n    return 1\n", "data_loader"),
        block_cell("print('no function')\n", "transformer"),
        block_cell("@transformer\ndef t(x):\n    return x\n", "transformer", "name:renamed"),
        block_cell("scratch = 1\n", "scratchpad"),
        block_cell("@data_exporter\ndef export(x):\n    pass\n", "data_exporter"),
        variables={"env": "dev"},
    )
    assert pipeline.is_valid, pipeline.errors
    assert [b.uuid for b in pipeline.blocks] == [
        "load", "transformer_1", "renamed", "scratchpad_1", "export",
    ]  # fmt: skip
    ups = {b.uuid: b.upstream_blocks for b in pipeline.blocks}
    # Linear chain in notebook order; scratchpads neither join nor break it.
    assert ups == {"load": [], "transformer_1": ["load"], "renamed": ["transformer_1"],
                   "scratchpad_1": [], "export": ["renamed"]}  # fmt: skip
    assert [b.uuid for b in pipeline.runnable_blocks()] == [
        "load", "transformer_1", "renamed", "export",
    ]  # fmt: skip
    assert pipeline.variables == {"env": "dev"}
    assert pipeline.to_dict()["blocks"][0]["downstream_blocks"] == ["transformer_1"]


@pytest.mark.parametrize(
    "tags", [("upstream:second", "upstream:first"), ("upstream:second,first",)]
)
def test_upstream_tags_fan_in_order_and_roots(tags: tuple[str, ...]) -> None:
    pipeline = _parse(
        block_cell("@transformer\ndef join(a, b):\n    return a + b\n", "transformer", *tags),
        block_cell("@data_loader\ndef first():\n    return 1\n", "data_loader", "upstream:"),
        block_cell("@data_loader\ndef second():\n    return 2\n", "data_loader", "upstream:"),
    )  # fmt: skip
    assert pipeline.is_valid, pipeline.errors
    by_uuid = {b.uuid: b for b in pipeline.blocks}
    assert by_uuid["join"].upstream_blocks == ["second", "first"]
    order = [b.uuid for b in pipeline.runnable_blocks()]
    assert order.index("join") == 2


@pytest.mark.parametrize(
    ("cells", "block", "words"),
    [
        ([block_cell("@data_loader\ndef a():\n    pass\n", "data_loader"),
          block_cell("@transformer\ndef a(x):\n    pass\n", "transformer")], "a", "duplicate"),
        ([block_cell("@data_loader\ndef a():\n    pass\n", "data_loader", "upstream:ghost")],
         "a", "unknown upstream block 'ghost'"),
        ([block_cell("@data_loader\ndef a(x):\n    pass\n", "data_loader", "upstream:b"),
          block_cell("@transformer\ndef b(x):\n    pass\n", "transformer", "upstream:a")],
         "a", "cycle"),
        ([block_cell("@data_loader\ndef a(x):\n    pass\n", "data_loader", "upstream:a")],
         "a", "itself"),
        ([block_cell("x = 1\n", "data_loader", "name:bad name!")], "bad name!", "letters"),
    ],
)  # fmt: skip
def test_validation_errors_name_the_block(cells: list[object], block: str, words: str) -> None:
    pipeline = _parse(*cells)
    assert not pipeline.is_valid
    assert any(e["block_uuid"] == block and words in e["message"] for e in pipeline.errors), (
        pipeline.errors
    )
    pipeline.to_dict()  # listing an invalid pipeline never raises or hangs


def test_repository_stays_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_pipeline(root, "ok", [block_cell("@data_loader\ndef a():\n    pass\n", "data_loader")])
    write_pipeline(tmp_path, "outside", [block_cell("x = 1\n", "custom")])
    (root / "link.ipynb").symlink_to(tmp_path / "outside.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell("1")]), root / "plain.ipynb")
    repo = PipelineRepository(str(root), exclude=[str(root / "runs")])
    write_pipeline(root / "runs", "copy", [block_cell("x = 1\n", "custom")])
    assert repo.load("ok").uuid == "ok"
    for uuid in ("../outside", "link", "/etc/passwd", "a/../../outside", "plain", "missing",
                 ".hidden", "runs/copy", "ok\x00"):  # fmt: skip
        with pytest.raises(PipelineNotFound):
            repo.load(uuid)
    assert [p.uuid for p in repo._list()] == ["ok"]
