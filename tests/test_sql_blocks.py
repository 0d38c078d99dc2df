"""SQL blocks (``%%mage_sql`` cells) in real runs: a real server, real kernels, real DuckDB and a
real PostgreSQL, triggered and by hand.

The PostgreSQL test needs a server: ``JUPYTER_MAGE_TEST_DB_URL`` (CI's PostgreSQL pass, where
``.ci/run`` lists this file), else the cluster ``.ci/postgres start`` runs (``.ci/postgres url``);
with neither it is skipped, saying so.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import nbformat
import pytest
from nbformat.v4 import new_code_cell

from .conftest import MageClient, block_cell, write_pipeline
from .test_handrun import _summaries, _text, notebook_kernel

CHECKOUT = Path(__file__).resolve().parent.parent

LOADER = block_cell(
    "import pandas as pd\n\n@data_loader\ndef orders(*args, **kwargs):\n"
    "    return pd.DataFrame({'id': [1, 2, 3, 4], 'amount': [10.0, 25.5, 40.0, 30.0],\n"
    "                         'region': ['eu', 'us', 'eu', 'us']})\n",
    "data_loader",
)
CHECK = block_cell(
    "@transformer\ndef check(df, *args, **kwargs):\n"
    "    print('GOT', type(df).__name__, df.to_dict('records'))\n    return len(df)\n",
    "transformer",
    "upstream:save",
)
TOTALS_SQL = (
    "SELECT region, sum(amount) AS total, '{{ env }}' AS env\nFROM {{ df_1 }}\n"
    "WHERE amount >= {{ variables('min_amount') }}\nGROUP BY region ORDER BY region"
)
SAVE_SQL = (
    "SELECT t.region, t.total, count(*) AS orders\nFROM {{ totals }} AS t "
    "JOIN {{ df_2 }} AS o ON o.region = t.region\nGROUP BY t.region, t.total ORDER BY t.region"
)


def sql_cell(sql: str, *tags: str, **configuration: Any) -> Any:
    """A SQL block cell: ``%%mage_sql``, the template, Mage's configuration in its metadata."""
    cell = block_cell(f"%%mage_sql\n{sql}", *tags)
    cell.metadata["mage"] = {"configuration": configuration}
    return cell


def shop_cells(provider: str, **save: Any) -> list[Any]:
    return [
        LOADER,
        sql_cell(TOTALS_SQL, "transformer", "name:totals", data_provider=provider),
        sql_cell(
            SAVE_SQL,
            "data_exporter",
            "name:save",
            "upstream:totals",
            "upstream:orders",
            data_provider=provider,
            data_provider_table="daily_totals",
            **save,
        ),
        CHECK,
    ]


async def run_shop(mage: MageClient, uuid: str) -> dict[str, Any]:
    trigger = await mage.create_trigger(uuid)
    body = {"pipeline_run": {"variables": {"env": "staging"}}}
    run = await mage.wait((await mage.run_now(trigger["id"], body))["id"])
    assert run["status"] == "completed", run
    return run


async def test_duckdb_blocks_in_a_triggered_run(jp_root_dir: Path, mage: MageClient) -> None:
    (jp_root_dir / "io_config.yaml").write_text("default:\n  DUCKDB_DATABASE: shop.duckdb\n")
    write_pipeline(jp_root_dir, "shop", shop_cells("duckdb"), variables={"min_amount": 20})
    write_pipeline(
        jp_root_dir,
        "broken",
        [sql_cell("SELECT 1", "data_loader", "name:load"),
         sql_cell("SELECT 2", "data_loader", "name:other", data_provider="sqlite3")],
    )  # fmt: skip

    shown = (await mage.call("GET", "api", "pipelines", "shop"))["pipeline"]
    assert shown["errors"] == []
    blocks = {b["uuid"]: b for b in shown["blocks"]}
    assert blocks["totals"]["language"] == "sql" and blocks["orders"]["language"] == "python"
    assert blocks["save"]["configuration"] == {
        "data_provider": "duckdb",
        "data_provider_table": "daily_totals",
    }
    broken = (await mage.call("GET", "api", "pipelines", "broken"))["pipeline"]
    assert {e["block_uuid"] for e in broken["errors"]} == {"load", "other"}
    text = " ".join(e["message"] for e in broken["errors"])
    assert "without a data_provider" in text and "unknown data_provider 'sqlite3'" in text

    run = await run_shop(mage, "shop")
    outputs = {b["block_uuid"]: b["outputs"] for b in run["block_runs"]}
    [totals] = outputs["totals"]
    assert totals["shape"] == [2, 3]
    assert totals["sample_data"]["rows"] == [["eu", 40.0, "staging"], ["us", 55.5, "staging"]]
    log = await mage.block_logs(run, "totals")
    assert "--- SQL template ---\n" + TOTALS_SQL in log
    assert 'FROM "df_1"\nWHERE amount >= 20\n' in log and "'staging' AS env" in log
    save_log = await mage.block_logs(run, "save")
    assert 'FROM "totals" AS t JOIN "df_2" AS o' in save_log
    assert 'rows written to "main"."daily_totals"' in save_log
    check_log = await mage.block_logs(run, "check")
    assert (
        "GOT DataFrame [{'region': 'eu', 'total': 40.0, 'orders': 2}, "
        "{'region': 'us', 'total': 55.5, 'orders': 2}]" in check_log
    )
    # The exporter's table is in the profile's database (relative to the notebook's folder).
    with duckdb.connect(str(jp_root_dir / "shop.duckdb"), read_only=True) as con:
        assert con.execute(
            "SELECT region, orders FROM main.daily_totals ORDER BY 1"
        ).fetchall() == [
            ("eu", 2),
            ("us", 2),
        ]


async def test_duckdb_blocks_by_hand(
    jp_root_dir: Path, jp_fetch: Callable[..., Any], jp_serverapp: Any
) -> None:
    cells = [new_code_cell("%load_ext jupyter_mage"), *shop_cells("duckdb")]
    write_pipeline(jp_root_dir, "shop", cells, variables={"min_amount": 30})
    nb = nbformat.read(jp_root_dir / "shop.ipynb", as_version=4)
    extension, loader, totals, save, check = nb.cells[1:]
    async with notebook_kernel(jp_fetch, jp_serverapp, "shop.ipynb") as kernel:
        assert (await kernel.run_cell(extension.source, extension.id))["status"] == "ok"
        early = await kernel.run_cell(totals.source, totals.id)
        assert early["ename"] == "HandRunError", _text(early)
        assert "needs the output of 'orders'" in early["evalue"]
        for cell in (loader, totals, save, check):
            result = await kernel.run_cell(cell.source, cell.id)
            assert result["status"] == "ok", _text(result)
            if cell is totals:
                shown = _summaries(result)
                assert shown is not None and shown["block"] == "totals"
                assert shown["outputs"][0]["sample_data"]["rows"] == [
                    ["eu", 40.0, "prod"],
                    ["us", 30.0, "prod"],
                ]
                assert "WHERE amount >= 30" in _text(result)
        assert "GOT DataFrame [{'region': 'eu', 'total': 40.0, 'orders': 2}" in _text(result)


# -- PostgreSQL ---------------------------------------------------------------------------------


def _postgres_url() -> str | None:
    url = os.environ.get("JUPYTER_MAGE_TEST_DB_URL")
    if url:
        return url
    try:
        found = subprocess.run(
            ["bash", str(CHECKOUT / ".ci" / "postgres"), "url"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None


@pytest.fixture
def postgres_profile(jp_root_dir: Path) -> Iterator[tuple[Any, str]]:
    """An ``io_config.yaml`` profile for a schema of its own on the test PostgreSQL; a psycopg
    connection to check what the blocks wrote."""
    url = _postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL: set JUPYTER_MAGE_TEST_DB_URL or run `bash .ci/postgres start`")
    psycopg = pytest.importorskip("psycopg")
    from sqlalchemy import make_url

    parsed = make_url(url)
    schema = f"mage_sql_{os.getpid()}"
    lines = [
        "default:",
        f"  POSTGRES_HOST: '{parsed.host or '127.0.0.1'}'",
        f"  POSTGRES_PORT: {parsed.port or 5432}",
        f"  POSTGRES_DBNAME: '{parsed.database}'",
        f"  POSTGRES_USER: '{parsed.username}'",
        "  POSTGRES_PASSWORD: \"{{ env_var('JM_TEST_PG_PASSWORD', '') }}\"",
        f"  POSTGRES_SCHEMA: {schema}",
    ]
    (jp_root_dir / "io_config.yaml").write_text("\n".join(lines) + "\n")
    os.environ["JM_TEST_PG_PASSWORD"] = parsed.password or ""
    con = psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        dbname=parsed.database,
        user=parsed.username,
        password=parsed.password,
        autocommit=True,
    )
    con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    try:
        yield con, schema
    finally:
        con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        con.close()
        os.environ.pop("JM_TEST_PG_PASSWORD", None)


async def test_postgres_blocks_upload_upstream_frames_and_append(
    jp_root_dir: Path, mage: MageClient, postgres_profile: tuple[Any, str]
) -> None:
    con, schema = postgres_profile
    write_pipeline(jp_root_dir, "pg_shop", shop_cells("postgres"), variables={"min_amount": 20})

    first = await run_shop(mage, "pg_shop")
    log = await mage.block_logs(first, "totals")
    assert 'FROM pg_temp."df_1"\nWHERE amount >= 20' in log
    assert 'Upstream block orders (4 rows) is pg_temp."df_1"' in log
    [totals] = next(b["outputs"] for b in first["block_runs"] if b["block_uuid"] == "totals")
    assert totals["sample_data"]["rows"] == [["eu", 40.0, "staging"], ["us", 55.5, "staging"]]
    assert "GOT DataFrame [{'region': 'eu', 'total': 40.0, 'orders': 2}" in (
        await mage.block_logs(first, "check")
    )
    query = f"SELECT region, total, orders FROM {schema}.daily_totals ORDER BY region"
    assert con.execute(query).fetchall() == [("eu", 40.0, 2), ("us", 55.5, 2)]

    # export_write_policy append (Mage's default): a second run adds its rows; its output is
    # the rows it wrote.
    second = await run_shop(mage, "pg_shop")
    assert f'rows appended to "{schema}"."daily_totals"' in await mage.block_logs(second, "save")
    assert len(con.execute(query).fetchall()) == 4
    [saved] = next(b["outputs"] for b in second["block_runs"] if b["block_uuid"] == "save")
    assert saved["shape"] == [2, 3]
    # The upstream tables were temporary: nothing of them is left in the database.
    leftover = con.execute(
        "SELECT count(*) FROM pg_class WHERE relname IN ('df_1', 'df_2', 'totals')"
    ).fetchone()
    assert leftover == (0,)
