"""Importing Mage projects (tests/mage_projects): cells, tags, order, metadata, the report."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from jupyter_mage.mage_project import (
    SQL_MAGIC,
    NotAMageProject,
    Report,
    convert_project,
    import_triggers,
    trigger_values,
)
from jupyter_mage.pipeline import parse_notebook
from jupyter_mage.runtime import (
    ProjectLayout,
    SecretNotFound,
    as_outputs,
    get_repo_path,
    install_mage_stand_in,
    resolve_repo_path,
)
from jupyter_mage.runtime.mage_layout import MageStandInFinder
from jupyter_mage.storage import Store

PROJECTS = Path(__file__).resolve().parent.parent / "mage_projects"
#: The real public pipelines of the corpus (tests/mage_projects/README.md names the sources).
REAL = {
    "mage_template": ["example_pipeline"],
    "magic-zoomcamp": [
        "api_to_postgres",
        "example_pipeline",
        "gcs_to_bq",
        "save_data_to_gcs",
        "test_config",
    ],
    "demo_etl_pipeline": ["default_pipeline", "etl_demo"],
}


def _imported(tmp_path: Path, project: str, **kwargs: Any) -> tuple[Report, dict[str, Any]]:
    report, imported = convert_project(PROJECTS / project, tmp_path / project, **kwargs)
    notebooks = {
        p.name: nbformat.read(p.notebook_path, as_version=4) for p in imported if p.notebook_path
    }
    return report, notebooks


def _block_cells(nb: Any) -> dict[str, Any]:
    return {
        next(t[5:] for t in c.metadata["tags"] if t.startswith("name:")): c
        for c in nb.cells
        if c.cell_type == "code" and c.metadata.get("tags")
    }


def test_the_corpus_has_eight_real_pipelines_and_each_imports(tmp_path: Path) -> None:
    assert sum(len(names) for names in REAL.values()) >= 8
    for project, names in REAL.items():
        report, notebooks = _imported(tmp_path, project)
        assert sorted(notebooks) == names, project
        assert not report.errors, report.render()
        for name, nb in notebooks.items():
            nbformat.validate(nb)
            mage = nb.metadata["mage"]
            assert mage["list_outputs"] == "mage"
            repo = (tmp_path / project / mage["project"]["repo_path"]).resolve()
            assert repo == (PROJECTS / project).resolve()
            pipeline = parse_notebook(name, f"{name}.ipynb", nb)
            metadata = __import__("yaml").safe_load(
                (PROJECTS / project / "pipelines" / name / "metadata.yaml").read_text()
            )
            uuids = {b["uuid"] for b in metadata.get("blocks") or []}
            assert {b.uuid for b in pipeline.blocks} == uuids, (project, name)
            for block in pipeline.blocks:  # code unchanged (SQL after its magic line)
                source = block.source.removeprefix(SQL_MAGIC + "\n")
                suffix = ".sql" if block.source.startswith(SQL_MAGIC) else ".py"
                folder = {"data_loader": "data_loaders", "transformer": "transformers"}.get(
                    block.type, block.type + "s"
                )
                path = PROJECTS / project / folder / f"{block.uuid}{suffix}"
                assert source == path.read_text(), (project, block.uuid)


def test_cells_tags_order_and_metadata(tmp_path: Path) -> None:
    report, notebooks = _imported(tmp_path, "local_shop", pipelines=["shop_orders"])
    nb = notebooks["shop_orders"]
    kinds = [
        (c.cell_type, (c.metadata.get("tags") or [""])[0]) for c in nb.cells[2:]
    ]  # after the title and the %load_ext cell
    assert nb.cells[1].source.endswith("%load_ext jupyter_mage")
    # Topological (totals comes before export_totals though listed after it), the markdown
    # block after the block above it, add-ons right after their parent.
    assert kinds == [
        ("code", "data_loader"),
        ("markdown", ""),
        ("code", "transformer"),
        ("code", "data_exporter"),
        ("code", "callback"),
        ("code", "conditional"),
    ]
    cells = _block_cells(nb)
    assert cells["load_orders"].metadata.tags == [
        "data_loader",
        "name:load_orders",
        "upstream:",
        "retries:2",
        "retry_delay:1",
        "timeout:120",
    ]
    assert cells["export_totals"].metadata.tags == [
        "data_exporter",
        "name:export_totals",
        "upstream:totals",
    ]
    assert cells["export_totals"].metadata.mage == {
        "configuration": {"file_path": "local_shop/output/totals.json"}
    }
    assert cells["notify"].metadata.tags == ["callback", "name:notify", "upstream:export_totals"]
    assert nb.cells[3].source.startswith("## Orders")
    mage = nb.metadata["mage"]
    assert mage["variables"] == {"label": "weekly"}
    assert (mage["retries"], mage["retry_delay"], mage["retry_exponential_backoff"]) == (
        1,
        2,
        False,
    )
    pipeline = parse_notebook("shop_orders", "shop_orders.ipynb", nb)
    assert pipeline.is_valid, pipeline.errors
    assert [b.uuid for b in pipeline.runnable_blocks()] == [
        "load_orders",
        "totals",
        "export_totals",
    ]
    export = next(b for b in pipeline.blocks if b.uuid == "export_totals")
    assert export.callback_blocks == ["notify"] and export.conditional_blocks == ["has_orders"]
    plan = pipeline.block_plan(export)
    assert plan["configuration"] == {"file_path": "local_shop/output/totals.json"}
    assert plan["list_outputs"] == "mage" and plan["project"] == mage["project"]
    assert not report.errors, report.render()


def test_what_is_not_carried_is_reported_never_dropped(tmp_path: Path) -> None:
    report, notebooks = _imported(tmp_path, "local_shop", pipelines=["shop_report"])
    lines = [f.line() for f in report.of("shop_report")]
    expected = [
        "great_expectations",
        "list_regions: dynamic block",
        "summarise: reduce_output",
        "missing_loader: block file data_loaders/missing_loader.py is missing",
        "plot_regions: r block not carried",
        "dbt_models: dbt block not carried",
        "after_r: its upstream block(s) plot_regions were not carried",
    ]
    for text in expected:
        assert any(text in line and line.startswith("ERROR") for line in lines), (text, lines)
    nb = notebooks["shop_report"]
    cells = _block_cells(nb)
    # A missing file is a block that fails loudly, never an empty block that "completes".
    assert cells["missing_loader"].source.startswith("raise FileNotFoundError(")
    assert "plot_regions" not in cells and "dbt_models" not in cells
    # SQL: the magic line, then the SQL unchanged; the configuration in the cell's metadata.
    sql = cells["region_counts"]
    assert (
        sql.source
        == SQL_MAGIC + "\n" + (PROJECTS / "local_shop/transformers/region_counts.sql").read_text()
    )
    assert sql.metadata.mage["configuration"]["data_provider"] == "postgres"
    assert sql.metadata.mage["configuration"]["export_write_policy"] == "append"
    # The notebook itself says what was not carried.
    assert "dynamic block" in nb.cells[0].source
    # The pipeline does not validate (after_r lost its upstream): it is never run half-wired.
    assert not parse_notebook("shop_report", "x.ipynb", nb).is_valid
    assert "missing_loader" in report.render()


def test_unknown_pipeline_and_not_a_project(tmp_path: Path) -> None:
    report, notebooks = _imported(tmp_path, "local_shop", pipelines=["nope"])
    assert notebooks == {} and "no pipeline nope" in report.errors[0].message
    with pytest.raises(NotAMageProject):
        convert_project(tmp_path, tmp_path)


def test_trigger_entries_become_trigger_values() -> None:
    report = Report()
    entries = __import__("yaml").safe_load(
        (PROJECTS / "local_shop/pipelines/shop_orders/triggers.yaml").read_text()
    )["triggers"]
    api, time_, event = (trigger_values(e, "shop_orders", report) for e in entries)
    assert api is not None and api["token"] == "5f4c1c0e8a7d4b1f9e2a6c3d8b7e1a2f"
    assert api["schedule_type"] == "api" and api["variables"] == {"label": "weekly"}
    assert api["settings"] == {"allow_blocks_to_fail": False, "timeout": 600}
    assert time_ is not None and time_["schedule_interval"] == "@daily"
    assert time_["start_time"].isoformat() == "2024-01-01T00:00:00+00:00" and time_["sla"] == 3600
    assert event is None
    lines = report.render()
    assert "'envs' not carried" in lines and "event triggers are not carried" in lines
    assert "does not start scheduled runs" in lines


def test_triggers_are_written_once_and_updated_on_reimport(tmp_path: Path) -> None:
    shutil.copytree(PROJECTS / "local_shop", tmp_path / "local_shop")

    async def twice() -> list[dict[str, Any]]:
        store = Store(f"sqlite:///{tmp_path / 'mage.sqlite'}")
        try:
            for _ in range(2):
                report, imported = convert_project(tmp_path / "local_shop")
                await import_triggers(store, imported, tmp_path, report)
            return await store.list_triggers()
        finally:
            store.close()

    triggers = asyncio.run(twice())
    assert sorted(t["name"] for t in triggers) == ["nightly", "orders webhook"]
    assert {t["pipeline_uuid"] for t in triggers} == {"local_shop/notebooks/shop_orders"}
    webhook = next(t for t in triggers if t["name"] == "orders webhook")
    assert webhook["token"] == "5f4c1c0e8a7d4b1f9e2a6c3d8b7e1a2f"
    assert webhook["status"] == "active"
    nightly = next(t for t in triggers if t["name"] == "nightly")
    assert (nightly["status"], nightly["schedule_type"]) == ("inactive", "time")


def test_mage_list_semantics_is_a_switch() -> None:
    assert as_outputs([1, 2, 3]) == [[1, 2, 3]]
    assert as_outputs([1, 2, 3], "mage") == [1, 2, 3]
    assert as_outputs((1, 2), "mage") == [1, 2] and as_outputs(None, "mage") == []
    nb = nbformat.v4.new_notebook()
    nb.metadata["mage"] = {"list_outputs": "many"}
    assert any("list_outputs" in e["message"] for e in parse_notebook("p", "p", nb).errors)


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The finders and ``mage_ai`` modules a test adds are gone afterwards."""
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [n for n in sys.modules if n == "mage_ai" or n.startswith("mage_ai.")]:
        del sys.modules[name]


def test_mage_ai_stand_in_without_mage_ai(
    clean_imports: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_mage_stand_in()
    install_mage_stand_in()  # once per interpreter
    assert sum(isinstance(f, MageStandInFinder) for f in sys.meta_path) == 1
    monkeypatch.setenv("MAGE_REPO_PATH", str(tmp_path))
    from mage_ai.data_preparation.decorators import data_loader  # type: ignore[import-not-found]
    from mage_ai.data_preparation.repo_manager import (  # type: ignore[import-not-found]
        get_repo_path as legacy,
    )
    from mage_ai.settings.repo import get_repo_path  # type: ignore[import-not-found]

    assert get_repo_path() == legacy() == str(tmp_path)
    assert data_loader.__name__ == "data_loader"
    with pytest.raises(ModuleNotFoundError, match=r"-m pip install mage-ai"):
        import mage_ai.io.file  # type: ignore[import-not-found]  # noqa: F401
    from mage_ai.data_preparation.shared.secrets import (  # type: ignore[import-not-found]
        get_secret_value,
    )

    monkeypatch.setenv("MAGE_SECRET_DB_PASSWORD", "p1")
    monkeypatch.setenv("plain-name", "p2")
    assert get_secret_value("db.password") == "p1" and get_secret_value("plain-name") == "p2"
    with pytest.raises(SecretNotFound, match="MAGE_SECRET_NOPE"):
        get_secret_value("nope")


def test_with_mage_ai_installed_its_modules_win_and_secrets_never_answer_none(
    clean_imports: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A stand-in for an installed mage-ai: only the modules this test imports.
    for package in (
        "mage_ai",
        "mage_ai/io",
        "mage_ai/data_preparation",
        "mage_ai/data_preparation/shared",
    ):
        (tmp_path / package).mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "mage_ai/io/file.py").write_text("class FileIO:\n    real = True\n")
    (tmp_path / "mage_ai/data_preparation/shared/secrets.py").write_text(
        "def get_secret_value(name, repo_name=None):\n    return {'known': 'from mage'}.get(name)\n"
    )
    sys.path.insert(0, str(tmp_path))
    install_mage_stand_in()
    from mage_ai.data_preparation.shared.secrets import get_secret_value
    from mage_ai.io.file import FileIO

    assert FileIO.real
    assert get_secret_value("known") == "from mage"
    monkeypatch.setenv("MAGE_SECRET_FROM_ENV", "env")
    assert get_secret_value("from_env") == "env"
    with pytest.raises(SecretNotFound):
        get_secret_value("unknown")


def test_project_layout_is_entered_and_undone(
    clean_imports: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = tmp_path / "my_project"
    (project / "utils").mkdir(parents=True)
    (project / "__init__.py").write_text("")
    (project / "utils" / "__init__.py").write_text("X = 1\n")
    monkeypatch.chdir(tmp_path / "my_project" / "utils")
    monkeypatch.delenv("MAGE_REPO_PATH", raising=False)
    before = (os.getcwd(), list(sys.path))
    directory = resolve_repo_path("..", os.getcwd())
    assert directory == str(project)
    with ProjectLayout(directory):
        import my_project.utils  # type: ignore[import-not-found]

        assert my_project.utils.X == 1
        assert os.getcwd() == str(tmp_path) and get_repo_path() == str(project)
        assert os.environ["MAGE_RUNTIME__REPO_PATH"] == str(project)
    assert (os.getcwd(), sys.path) == before and "MAGE_REPO_PATH" not in os.environ
    assert "my_project.utils" not in sys.modules  # the next run reads the files again
    with pytest.raises(FileNotFoundError, match="repo_path"):
        ProjectLayout(str(tmp_path / "missing")).__enter__()


def test_the_command_reads_the_servers_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from jupyter_mage import cli

    (tmp_path / "jupyter_server_config.py").write_text(
        f"c.MageApp.db_url = 'sqlite:///{tmp_path}/server.sqlite'\n"
        f"c.ServerApp.root_dir = '{tmp_path}'\n"
    )
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path))
    assert cli._server_db_url() == f"sqlite:///{tmp_path}/server.sqlite"
    assert cli._server_root_dir() == str(tmp_path)
