"""Imported Mage projects run through the real server: triggered runs and hand runs, in Mage's
layout (cwd at the project's parent, ``get_repo_path()``, project imports, relative paths).

mage-ai is not installed here (too heavy for CI): blocks that need it must fail with the
install hint, and everything else runs with jupyter-mage's stand-in for ``mage_ai``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest

from jupyter_mage.mage_project import convert_project, import_triggers
from jupyter_mage.storage import Store

from .conftest import MageClient
from .test_handrun import _text, notebook_kernel

PROJECTS = Path(__file__).resolve().parent / "mage_projects"
CHECKOUT = Path(__file__).resolve().parent.parent
ORDERS = "customer,amount\n Ada ,10\nbob,5.5\nada,2\n"
TITANIC = "Survived,Pclass,Name,Age,SibSp,Parch,Fare\n0,3,A,22,1,0,7.25\n1,1,B,,1,0,71.3\n1,3,C,26,0,0,7.9\n"


@pytest.fixture(autouse=True)
def kernel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels import this checkout's jupyter_mage (hand runs) and see the shop's secret."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(CHECKOUT), os.environ.get("PYTHONPATH")) if p)
    )
    monkeypatch.setenv("MAGE_SECRET_SHOP_API_KEY", "s3cret")


def _setup(root: Path) -> dict[str, Path]:
    for name in ("local_shop", "mage_template"):
        shutil.copytree(PROJECTS / name, root / name)
    (root / "local_shop" / "data").mkdir()
    (root / "local_shop" / "data" / "orders.csv").write_text(ORDERS)
    (root / "titanic.csv").write_text(TITANIC)  # relative to the project's parent, as Mage
    notebooks = {}
    for name in ("local_shop", "mage_template"):
        report, imported = convert_project(root / name)
        assert not [f for f in report.errors if f.pipeline != "shop_report"], report.render()
        notebooks.update({p.name: p.notebook_path for p in imported if p.notebook_path})
    return notebooks


async def _run(mage: MageClient, trigger_id: int) -> dict[str, Any]:
    answer = await mage.call(
        "POST",
        "api",
        "pipeline_schedules",
        str(trigger_id),
        "pipeline_runs",
        params={"wait": "60"},
        body={},
    )
    return answer["pipeline_run"]  # type: ignore[no-any-return]


async def test_imported_projects_run_triggered_and_by_hand(
    jp_root_dir: Path, jp_fetch: Callable[..., Any], jp_serverapp: Any, mage: MageClient
) -> None:
    notebooks = _setup(jp_root_dir)
    [app] = jp_serverapp.extension_manager.extension_apps["jupyter_mage"]
    report, imported = convert_project(jp_root_dir / "local_shop", pipelines=["shop_orders"])
    await import_triggers(app.store, imported, jp_root_dir, report)
    triggers = await mage.call(
        "GET",
        "api",
        "pipeline_schedules",
        params={"pipeline_uuid": "local_shop/notebooks/shop_orders"},
    )
    webhook = next(t for t in triggers["pipeline_schedules"] if t["name"] == "orders webhook")

    # A triggered run through the imported trigger's token route, as an outside system calls.
    response = await jp_fetch(
        "api", "pipeline_schedules", str(webhook["id"]), "pipeline_runs",
        "5f4c1c0e8a7d4b1f9e2a6c3d8b7e1a2f",
        method="POST", body="{}", params={"wait": "60"}, headers={"Authorization": ""},
    )  # fmt: skip
    run = json.loads(response.body)["pipeline_run"]
    assert run["status"] == "completed", run
    assert [b["status"] for b in run["block_runs"]] == ["completed"] * 3
    exported = json.loads((jp_root_dir / "local_shop/output/totals.json").read_text())
    assert exported == {"totals": {"ada": 12.0, "bob": 5.5}, "count": 2, "label": "weekly"}
    log = await mage.block_logs(run, "export_totals")
    repo = str((jp_root_dir / "local_shop").resolve())
    assert f"EXPORTED {jp_root_dir.resolve()}/local_shop/output/totals.json" in log
    assert f"repo {repo} key 6" in log and "CALLBACK after export_totals" in log
    totals = await mage.block_logs(run, "totals")
    assert "1/1 tests passed." in totals  # Mage's list rule: the test indexes args[2]

    # Mage's own template: the loader and transformer run; FileIO needs mage-ai, and says so.
    trigger = await mage.create_trigger("mage_template/notebooks/example_pipeline")
    run = await _run(mage, trigger["id"])
    assert run["status"] == "failed"
    statuses = {b["block_uuid"]: b["status"] for b in run["block_runs"]}
    assert statuses == {
        "load_titanic": "completed",
        "fill_in_missing_values": "completed",
        "export_titanic_clean": "failed",
    }
    failed = next(b for b in run["block_runs"] if b["block_uuid"] == "export_titanic_clean")
    error = json.dumps(failed) + await mage.block_logs(run, "export_titanic_clean")
    assert "mage_ai.io" in error and "-m pip install mage-ai" in error

    # Hand runs of the imported notebook, top to bottom, in the same layout.
    (jp_root_dir / "local_shop/output/totals.json").unlink()
    path = notebooks["shop_orders"].relative_to(jp_root_dir).as_posix()
    nb = nbformat.read(notebooks["shop_orders"], as_version=4)
    async with notebook_kernel(jp_fetch, jp_serverapp, path) as kernel:
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            result = await kernel.run_cell(cell.source, cell.get("id"))
            assert result["status"] == "ok", (cell.get("id"), _text(result))
        result = await kernel.run_cell(
            "import os\nfrom mage_ai.settings.repo import get_repo_path\n"
            "print('CWD', os.getcwd(), 'REPO', get_repo_path())"
        )
        assert f"CWD {jp_root_dir.resolve()} REPO {repo}" in _text(result)
        result = await kernel.run_cell("from mage_ai.io.file import FileIO")
        assert result["ename"] == "ModuleNotFoundError" and "pip install mage-ai" in _text(result)
        result = await kernel.run_cell(
            "from mage_ai.data_preparation.shared.secrets import get_secret_value\n"
            "get_secret_value('no_such_secret')"
        )
        assert result["ename"] == "SecretNotFound" and "MAGE_SECRET_NO_SUCH_SECRET" in _text(result)
    exported = json.loads((jp_root_dir / "local_shop/output/totals.json").read_text())
    assert exported["totals"] == {"ada": 12.0, "bob": 5.5}


def test_jupyter_mage_import_command(tmp_path: Path) -> None:
    """One run of the console command: notebooks, the report (exit 1: shop_report has errors),
    and its triggers matched by name with those an earlier import made (no duplicates)."""
    shutil.copytree(PROJECTS / "local_shop", tmp_path / "local_shop")
    db = f"sqlite:///{tmp_path / 'mage.sqlite'}"

    async def earlier_import() -> None:
        store = Store(db)
        try:
            report, imported = convert_project(tmp_path / "local_shop", tmp_path / "nb")
            await import_triggers(store, imported, tmp_path, report)
        finally:
            store.close()

    asyncio.run(earlier_import())
    command = [sys.executable, "-m", "jupyter_mage.cli", "import", str(tmp_path / "local_shop")]
    command += ["--db-url", db, "--root-dir", str(tmp_path), "--into", str(tmp_path / "nb")]
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "trigger 'orders webhook' of nb/shop_orders: updated" in done.stdout
    assert "ERROR   shop_report: missing_loader: block file" in done.stdout
    assert "ERROR   shop_orders: trigger on s3 event: event triggers are not carried" in done.stdout
    assert (tmp_path / "nb" / "shop_orders.ipynb").is_file()

    async def triggers() -> list[str]:
        store = Store(db)
        try:
            return sorted(t["name"] for t in await store.list_triggers())
        finally:
            store.close()

    assert asyncio.run(triggers()) == ["nightly", "orders webhook"]
