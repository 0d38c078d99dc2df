"""SQL blocks without a kernel: the cell, validation, Jinja templating, statements, DuckDB runs."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from nbformat.v4 import new_notebook

from jupyter_mage.pipeline import parse_notebook
from jupyter_mage.runtime.sql import (
    Relation,
    SQLBlockError,
    configuration_problems,
    find_io_config,
    is_sql_source,
    load_profile,
    render,
    run_sql,
    split_statements,
    sql_template,
    target_table,
    template_context,
    written_table,
)

from ..conftest import block_cell

WHEN = datetime(2026, 12, 1, 8, 30, tzinfo=timezone.utc)
ORDERS = pd.DataFrame({"id": [1, 2, 3], "amount": [10.0, 25.5, 40.0], "region": ["eu", "us", "eu"]})


def sql_cell(sql: str, *tags: str, **configuration: Any) -> Any:
    cell = block_cell(f"%%mage_sql\n{sql}", *tags)
    cell.metadata["mage"] = {"configuration": configuration}
    return cell


def _kwargs(**extra: Any) -> dict[str, Any]:
    return {
        "env": "staging",
        "execution_date": WHEN,
        "ds": "2026-12-01",
        "pipeline_uuid": "pipelines/shop",
        **extra,
    }


def _render(template: str, upstream: list[tuple[str, Any]], **kwargs: Any) -> str:
    relations = [
        Relation(f"df_{i + 1}", f'"df_{i + 1}"', v, u) for i, (u, v) in enumerate(upstream)
    ]
    relations += [Relation(u, f'"{u}"', v, u) for u, v in upstream]
    context = template_context(_kwargs(**kwargs), relations, dict(upstream))
    return render(template, context, "block")


# -- the cell and its validation ------------------------------------------------------------


def test_a_sql_cell_is_its_first_line_and_the_template_is_the_rest() -> None:
    assert is_sql_source("%%mage_sql\nSELECT 1")
    assert is_sql_source("\n%%mage_sql\nSELECT 1")
    assert not is_sql_source("%%mage_sqlx\nSELECT 1")
    assert not is_sql_source("x = '%%mage_sql'")
    assert sql_template("%%mage_sql\nSELECT 1\nFROM t\n") == "SELECT 1\nFROM t\n"


def test_configuration_problems_name_what_is_missing_or_unknown() -> None:
    assert configuration_problems({"data_provider": "duckdb"}, "transformer") == []
    assert configuration_problems({"data_provider": "postgres"}, "data_exporter") == []
    [missing] = configuration_problems({}, "data_loader")
    assert "without a data_provider" in missing
    [unknown] = configuration_problems({"data_provider": "oracle9"}, "data_loader")
    assert "unknown data_provider 'oracle9'" in unknown
    [mage_only] = configuration_problems({"data_provider": "snowflake"}, "data_loader")
    assert "'snowflake' is not supported by jupyter-mage" in mage_only
    [policy] = configuration_problems(
        {"data_provider": "duckdb", "export_write_policy": "upsert"}, "data_exporter"
    )
    assert "export_write_policy 'upsert'" in policy
    assert configuration_problems({"data_provider": "duckdb"}, "sensor")
    assert configuration_problems("duckdb", "data_loader")


def test_pipeline_reads_language_configuration_and_reports_sql_errors() -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python"}
    nb.cells = [
        block_cell("@data_loader\ndef orders():\n    return 1\n", "data_loader"),
        sql_cell("SELECT * FROM {{ df_1 }}", "transformer", "name:totals", data_provider="duckdb"),
        sql_cell("SELECT 1", "data_exporter", "name:nowhere"),
        sql_cell("SELECT 1", "data_exporter", "name:oracle", data_provider="oracle9"),
    ]
    pipeline = parse_notebook("p", "p.ipynb", nb)
    by_uuid = {b.uuid: b for b in pipeline.blocks}
    assert by_uuid["orders"].language == "python"
    assert by_uuid["totals"].language == "sql"
    assert by_uuid["totals"].configuration == {"data_provider": "duckdb"}
    shown = {b["uuid"]: b for b in pipeline.to_dict()["blocks"]}
    assert shown["totals"]["language"] == "sql"
    assert shown["totals"]["configuration"] == {"data_provider": "duckdb"}
    assert shown["orders"]["language"] == "python" and shown["orders"]["configuration"] == {}
    errors = {(e["block_uuid"], e["type"]) for e in pipeline.errors}
    assert errors == {("nowhere", "invalid"), ("oracle", "invalid")}, pipeline.errors
    messages = " ".join(e["message"] for e in pipeline.errors)
    assert "without a data_provider" in messages and "unknown data_provider 'oracle9'" in messages
    # The SQL is never parsed as Python (no syntax error), and the plan says it is SQL.
    plan = pipeline.block_plan(by_uuid["totals"])
    assert plan["language"] == "sql" and plan["configuration"] == {"data_provider": "duckdb"}
    assert "language" not in pipeline.block_plan(by_uuid["orders"])


# -- templating -----------------------------------------------------------------------------


def test_upstream_outputs_by_position_and_by_name_and_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_REGION", "eu")
    sql = _render(
        "SELECT * FROM {{ df_1 }} JOIN {{ customers }} USING (id)\n"
        "WHERE region = '{{ env_var('SHOP_REGION') }}' AND env = '{{ env }}'\n"
        "AND amount > {{ variables('min_amount') }} AND day = '{{ ds }}'\n"
        "AND at <= '{{ execution_date }}' -- {{ variables('absent') }}",
        [("orders", ORDERS), ("customers", ORDERS)],
        min_amount=20,
    )
    assert sql == (
        'SELECT * FROM "df_1" JOIN "customers" USING (id)\n'
        "WHERE region = 'eu' AND env = 'staging'\n"
        "AND amount > 20 AND day = '2026-12-01'\n"
        "AND at <= '2026-12-01 08:30:00+00:00' -- None"
    )


def test_variables_are_data_upstream_names_win_and_the_sandbox_holds() -> None:
    # A value that looks like a template stays text; it is not rendered again.
    assert _render("SELECT '{{ note }}'", [], note="{{ 7 * 7 }}") == "SELECT '{{ 7 * 7 }}'"
    # A variable named like an upstream block cannot replace the table the template names.
    hostile = "orders; DROP TABLE users"
    assert _render("SELECT * FROM {{ orders }}", [("orders", ORDERS)], orders=hostile) == (
        'SELECT * FROM "orders"'
    )
    # Quoting filters for values that are data.
    assert _render("SELECT {{ name | literal }}, {{ col | identifier }}", [], name="O'Brien",
                   col='we"ird') == "SELECT 'O''Brien', \"we\"\"ird\""  # fmt: skip
    assert _render("{{ n | literal }} {{ none | literal }}", [], n=3, none=None) == "3 NULL"
    with pytest.raises(SQLBlockError, match="template error"):
        _render("SELECT '{{ ''.__class__.__mro__ }}'", [])
    with pytest.raises(SQLBlockError, match="'missing' is undefined"):
        _render("SELECT {{ missing }}", [])
    with pytest.raises(SQLBlockError, match="parse="):
        _render("SELECT {{ variables('x', parse='int') }}", [], x="1")
    with pytest.raises(SQLBlockError, match="line 2"):
        _render("SELECT 1\n{{ oops(", [])


def test_block_output_and_json_value() -> None:
    config = {"power": 9, "spell": "fire"}
    assert _render(
        "SELECT {{ block_output('config')['power'] }}, "
        "'{{ json_value('{\"a\": {\"b\": [5, 6]}}', 'a.b[1]') }}'",
        [("config", config)],
    ) == "SELECT 9, '6'"  # fmt: skip


def test_statements_split_outside_strings_comments_and_dollar_quotes() -> None:
    sql = (
        "SELECT ';' AS a;\n-- a comment; still a comment\nSELECT $$;$$, $tag$ ; $tag$;\n"
        "/* block; comment */;\nSELECT 'it''s;' AS b; ;"
    )
    assert split_statements(sql) == [
        "SELECT ';' AS a",
        "-- a comment; still a comment\nSELECT $$;$$, $tag$ ; $tag$",
        "SELECT 'it''s;' AS b",
    ]
    assert split_statements("-- only a comment;\n") == []


def test_table_names_as_mage_names_them() -> None:
    assert target_table({}, _kwargs(), "Totals by Region", "public") == (
        "public",
        "shop_totals_by_region_v1",
    )
    assert target_table({}, _kwargs(env="dev"), "t", "main") == ("main", "dev_shop_t_v1")
    assert target_table(
        {"data_provider_schema": "mart", "data_provider_table": "daily"}, _kwargs(), "t", "x"
    ) == ("mart", "daily")
    assert target_table({"data_provider_table": "s.daily"}, _kwargs(), "t", "x") == ("s", "daily")
    assert written_table("CREATE TABLE IF NOT EXISTS mage.users (id int);\n") == "mage.users"
    assert written_table("-- INSERT INTO nope\nINSERT INTO a.b SELECT 1") == "a.b"
    assert written_table("SELECT 1") is None


# -- io_config.yaml ---------------------------------------------------------------------------


def test_io_config_is_found_in_the_project_then_next_to_the_notebook(tmp_path: Path) -> None:
    project, notebooks = tmp_path / "project", tmp_path / "notebooks"
    project.mkdir()
    notebooks.mkdir()
    assert find_io_config({}, None, str(notebooks)) is None
    (notebooks / "io_config.yaml").write_text("default: {}\n")
    assert find_io_config({}, None, str(notebooks)) == notebooks / "io_config.yaml"
    (project / "io_config.yaml").write_text("default: {}\n")
    assert find_io_config({}, "../project", str(notebooks)) == (
        notebooks / "../project/io_config.yaml"
    )
    assert find_io_config({"repo_path": str(project)}, None, str(notebooks)) == (
        project / "io_config.yaml"
    )


def test_profiles_are_rendered_like_mage_and_a_missing_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_SECRET", "s3cret")
    path = tmp_path / "io_config.yaml"
    path.write_text(
        "version: 0.1.1\ndefault:\n  POSTGRES_HOST: db\n"
        "  POSTGRES_PASSWORD: \"{{ env_var('PG_SECRET') }}\"\nlocal:\n  DUCKDB_DATABASE: x.db\n"
    )
    context = template_context({}, [], {})
    profile = load_profile(path, "default", "postgres", "b", context)
    assert profile == {"POSTGRES_HOST": "db", "POSTGRES_PASSWORD": "s3cret"}
    with pytest.raises(SQLBlockError, match=r"no profile 'prod'.*default, local"):
        load_profile(path, "prod", "postgres", "b", context)
    with pytest.raises(SQLBlockError, match=r"needs an io_config\.yaml"):
        load_profile(None, "default", "postgres", "b", context)
    assert load_profile(None, "default", "duckdb", "b", context) == {}


# -- running on DuckDB (in this process) -------------------------------------------------------


def test_a_transformer_queries_its_upstream_dataframe(capsys: pytest.CaptureFixture[str]) -> None:
    [out] = run_sql(
        "%%mage_sql\nSELECT region, sum(amount) AS total FROM {{ df_1 }}\n"
        "WHERE amount > {{ variables('min') }} GROUP BY region ORDER BY region",
        {"data_provider": "duckdb"},
        [ORDERS],
        ["orders"],
        _kwargs(min=15),
        "totals",
        "transformer",
    )
    assert isinstance(out, pd.DataFrame)
    assert out.to_dict("records") == [
        {"region": "eu", "total": 40.0},
        {"region": "us", "total": 25.5},
    ]
    log = capsys.readouterr().out
    assert "--- SQL template ---\nSELECT region" in log and "{{ df_1 }}" in log
    assert '--- rendered SQL ---\nSELECT region, sum(amount) AS total FROM "df_1"' in log
    assert "WHERE amount > 15" in log


def test_exporters_write_with_the_write_policy_and_raw_sql_runs_as_written(
    tmp_path: Path,
) -> None:
    database = tmp_path / "shop.duckdb"
    (tmp_path / "io_config.yaml").write_text(f"default:\n  DUCKDB_DATABASE: {database}\n")
    records = ORDERS.to_dict("records")  # a list of records is a table too

    def export(policy: str) -> pd.DataFrame:
        config = {"data_provider": "duckdb", "export_write_policy": policy,
                  "data_provider_schema": "mart", "data_provider_table": "Orders"}  # fmt: skip
        [out] = run_sql("SELECT id, amount FROM {{ orders }}", config, [records], ["orders"],
                        _kwargs(), "save", "data_exporter", home=str(tmp_path))  # fmt: skip
        return out  # type: ignore[no-any-return]

    def stored() -> int:
        with duckdb.connect(str(database)) as con:
            return int(con.execute("SELECT count(*) FROM mart.orders").fetchone()[0])  # type: ignore[index]

    assert len(export("append")) == 3 and stored() == 3
    assert len(export("append")) == 3 and stored() == 6  # the output: this run's rows
    assert len(export("replace")) == 3 and stored() == 3
    with pytest.raises(SQLBlockError, match=r'table "mart"\."orders" already exists'):
        export("fail")
    assert stored() == 3

    # Raw SQL: statements as written; the output is what the last one wrote (read back).
    [raw] = run_sql(
        "CREATE TABLE IF NOT EXISTS big (id BIGINT);\nINSERT INTO big SELECT id FROM {{ df_1 }} "
        "WHERE amount > 20;",
        {"data_provider": "duckdb", "use_raw_sql": True},
        [ORDERS],
        ["orders"],
        _kwargs(),
        "raw",
        "data_exporter",
        home=str(tmp_path),
    )
    assert raw["id"].tolist() == [2, 3]
    # A failing statement rolls the block back: nothing of it stays.
    with pytest.raises(duckdb.Error):
        run_sql("INSERT INTO big VALUES (99); SELECT * FROM no_such_table", {"data_provider":
                "duckdb", "use_raw_sql": True}, [], [], _kwargs(), "bad", "data_exporter",
                home=str(tmp_path))  # fmt: skip
    with duckdb.connect(str(database)) as con:
        assert con.execute("SELECT count(*) FROM big WHERE id = 99").fetchone() == (0,)


def test_limits_and_outputs_that_are_no_table() -> None:
    config = {"data_provider": "duckdb", "limit": 1, "limit_in_pipeline_run": 2}
    [triggered] = run_sql("SELECT * FROM range(10)", config, [], [], _kwargs(), "r", "data_loader")
    [by_hand] = run_sql("SELECT * FROM range(10)", config, [], [], _kwargs(hand_run=True), "r",
                        "data_loader")  # fmt: skip
    assert (len(triggered), len(by_hand)) == (2, 1)  # as Mage: limit_in_pipeline_run in runs
    with pytest.raises(SQLBlockError, match="upstream block counter is a int, not a table"):
        run_sql("SELECT * FROM {{ df_1 }}", {"data_provider": "duckdb"}, [7], ["counter"],
                _kwargs(), "t", "transformer")  # fmt: skip
    # An upstream output the template does not name is not needed as a table.
    assert run_sql("CREATE TABLE t AS SELECT 1", {"data_provider": "duckdb"}, [7], ["counter"],
                   _kwargs(), "t", "transformer") == []  # fmt: skip
    with pytest.raises(SQLBlockError, match="without a data_provider"):
        run_sql("SELECT 1", {}, [], [], _kwargs(), "t", "transformer")
