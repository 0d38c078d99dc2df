"""The README's walk-through runs as written: its bash block, verbatim but for the server's
address, against a real server on the example notebooks, with curl."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import CHECKOUT, ServerProcess

README = CHECKOUT / "README.md"
#: The line of the walk-through that names the server (the first command's).
BASE_LINE = "BASE=http://localhost:8888"


def walk_through() -> str:
    """The first bash block after the README's "Walk-through" heading."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Walk-through") :]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no bash block in the walk-through"
    return match.group(1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    root = tmp_path / "notebooks"
    shutil.copytree(
        CHECKOUT / "notebooks", root, ignore=shutil.ignore_patterns("mage_runs", ".ipynb_*")
    )
    process = ServerProcess(
        "readme", tmp_path / "home", root, f"sqlite:///{tmp_path / 'mage.sqlite'}"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def test_the_walk_through_runs_as_written(server: ServerProcess) -> None:
    await server.ready()
    script = walk_through()
    assert script.count(BASE_LINE) == 1
    script = script.replace(BASE_LINE, f"BASE=http://127.0.0.1:{server.port}")
    shell = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script,
        env={**os.environ, "JUPYTER_TOKEN": server.token},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(shell.communicate(), timeout=120)
    printed = out.decode()
    assert shell.returncode == 0, f"{printed}\n{err.decode()}\n{server.log_tail()}"
    lines = printed.splitlines()
    assert lines[0] == "pipelines/etl_demo"
    assert '"status": "initial"' in lines[1] and '"status": "initial"' in lines[2]
    assert lines[3] == "completed"
    assert "loaded 200 orders for env=staging schema=public" in printed
