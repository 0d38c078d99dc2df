"""SQL blocks: a ``%%mage_sql`` cell's Jinja template, rendered and run on DuckDB or PostgreSQL.

Part of the in-kernel run-time (:mod:`jupyter_mage.runtime`): sent to the kernel as source, so it
imports the other pieces only relatively, and the libraries a SQL block needs (``jinja2``,
``pandas``, ``duckdb``, ``psycopg``, ``yaml``) only when a SQL block runs, with a message that
says what to install in the kernel's environment when one is missing.

A SQL block runs as Mage runs it (``mage_ai/data_preparation/models/block/sql``):

- the template is rendered with Jinja (a sandboxed environment, ``StrictUndefined``): upstream
  outputs as ``{{ df_1 }}``, ``{{ df_2 }}``... and by block name (``{{ load_orders }}``),
  ``{{ variables('x') }}``, ``{{ env_var('X') }}``, every kwarg (``{{ execution_date }}``,
  ``{{ ds }}``, ``{{ env }}``...), ``mage_secret_var``, ``json_value``,
  ``block_output('uuid')``; the filters
  ``literal`` and ``identifier`` quote a value as SQL (our addition);
- an upstream output a template names is a table for the query: on DuckDB the DataFrame is
  registered as a view under its template name, on PostgreSQL it is copied into a temporary
  table of that name (``COPY``, values as data, never as SQL text);
- the provider and its profile come from the block's configuration and ``io_config.yaml``;
- a ``data_exporter`` (or any block naming ``data_provider_table``) writes its query's rows to
  ``[schema.]table`` with ``export_write_policy`` (``append``, as Mage's default, ``replace`` or
  ``fail``); with ``use_raw_sql`` the statements run exactly as written;
- the block's output is a pandas DataFrame, the rows of the last statement that returns rows.

Everything runs in one transaction: a failed block leaves the database as it was.
"""

from __future__ import annotations

import datetime as _datetime
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .calls import BlockFailure
from .mage_layout import get_secret_value

#: The first line of a SQL block cell.
SQL_MAGIC = "%%mage_sql"
#: The data providers jupyter-mage runs SQL blocks on.
SUPPORTED_PROVIDERS = ("duckdb", "postgres")
#: Mage's data providers (``mage_ai.io.base.DataSource``) that SQL blocks may name.
MAGE_PROVIDERS = (
    "bigquery",
    "clickhouse",
    "druid",
    "duckdb",
    "mssql",
    "mysql",
    "oracledb",
    "postgres",
    "redshift",
    "snowflake",
    "spark",
    "trino",
)
WRITE_POLICIES = ("append", "replace", "fail")
#: Mage's ``QUERY_ROW_LIMIT``: at most this many rows become the block's output.
ROW_LIMIT = 10_000_000
#: Rows read back from the table a raw-SQL block created or inserted into (as Mage).
RAW_TABLE_ROWS = 1000
#: Block types that may be SQL blocks (a scratchpad may too: it never runs).
SQL_BLOCK_TYPES = ("data_loader", "transformer", "data_exporter", "custom", "scratchpad")


class SQLBlockError(BlockFailure):
    """A SQL block cannot run: its template, configuration, profile or upstream data."""


# -- the cell ------------------------------------------------------------------------------


def is_sql_source(source: str) -> bool:
    """Whether a cell is a SQL block: its first line is ``%%mage_sql``."""
    first = source.lstrip("\n").split("\n", 1)[0].strip()
    return first == SQL_MAGIC or first.startswith(SQL_MAGIC + " ")


def sql_template(source: str) -> str:
    """The SQL template of a SQL block cell: everything after the ``%%mage_sql`` line."""
    parts = source.lstrip("\n").split("\n", 1)
    return parts[1] if len(parts) > 1 else ""


def configuration_problems(configuration: Any, block_type: str) -> list[str]:
    """Why a SQL block's configuration cannot run (empty when it can), before any kernel starts."""
    if not isinstance(configuration, dict):
        return ["metadata.mage.configuration must be a JSON object"]
    problems = []
    if block_type not in SQL_BLOCK_TYPES:
        problems.append(f"a {block_type} block cannot be a SQL block")
    provider = configuration.get("data_provider")
    if not provider:
        problems.append(
            "SQL block without a data_provider (metadata.mage.configuration.data_provider: "
            f"{' or '.join(SUPPORTED_PROVIDERS)})"
        )
    elif not isinstance(provider, str) or provider not in MAGE_PROVIDERS:
        problems.append(
            f"unknown data_provider {provider!r} (supported: {', '.join(SUPPORTED_PROVIDERS)})"
        )
    elif provider not in SUPPORTED_PROVIDERS:
        problems.append(
            f"data_provider {provider!r} is not supported by jupyter-mage "
            f"(supported: {', '.join(SUPPORTED_PROVIDERS)})"
        )
    policy = configuration.get("export_write_policy")
    if policy is not None and policy not in WRITE_POLICIES:
        problems.append(
            f"unknown export_write_policy {policy!r} (one of: {', '.join(WRITE_POLICIES)})"
        )
    return problems


# -- templating ----------------------------------------------------------------------------


def _need(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SQLBlockError(
            f"SQL blocks need the '{package}' package in the kernel's environment: "
            f"run `%pip install {package}` in the notebook (or pip install it where the "
            f"kernel's Python lives). ({exc})"
        ) from exc


def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (standard SQL: DuckDB and PostgreSQL alike)."""
    return '"' + str(name).replace('"', '""') + '"'


def quote_literal(value: Any) -> str:
    """``value`` as a SQL literal: NULL, TRUE/FALSE, a number, else a quoted string."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float) and math.isfinite(value):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


class Relation:
    """An upstream output as a template names it: rendered, it is the name of its table.

    Rendering marks it used, so that only the outputs a query names are registered or uploaded
    (as Mage uploads only the upstream blocks its query names).
    """

    def __init__(self, template_name: str, sql_name: str, value: Any, block_uuid: str) -> None:
        self.template_name = template_name
        self.sql_name = sql_name
        self.value = value
        self.block_uuid = block_uuid
        self.used = False

    def __str__(self) -> str:
        self.used = True
        return self.sql_name


def _json_value(text: Any, path: Any) -> Any:
    """Mage's ``json_value(json_text, 'a.b[0]')``: a value inside a JSON string."""
    if not text:
        return text
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return text
    keys = path.split(".") if isinstance(path, str) else list(path)
    for key in keys:
        key = key.strip()
        match = re.fullmatch(r"(.*?)\[(\d+)\]", key)
        if match:
            name, index = match.groups()
            data = (data[name] if name else data)[int(index)]
        elif isinstance(data, dict):
            data = data.get(key)
    return data


def _environment() -> Any:
    jinja2 = _need("jinja2", "jinja2")
    sandbox = _need("jinja2.sandbox", "jinja2")
    # Sandboxed: a template reads its values but cannot reach into Python objects' internals;
    # StrictUndefined, as Mage's second rendering pass: a misspelt name fails the block.
    env = sandbox.ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    env.filters["literal"] = quote_literal
    env.filters["identifier"] = quote_identifier
    return env


def template_context(
    kwargs: dict[str, Any], upstream: list[Relation], outputs: dict[str, Any]
) -> dict[str, Any]:
    """The names a SQL template sees: kwargs, Mage's functions, then the upstream tables.

    Upstream names are put last so they win over a variable of the same name: a trigger's
    variables must not be able to replace the table a template names with SQL text.
    """

    def variables(name: str, parse: Any = None, default: Any = None) -> Any:
        if parse is not None:
            raise SQLBlockError(
                "variables(..., parse=...) runs Python code from the template and is not "
                "supported; use Jinja instead, e.g. {{ variables('x') | int }}"
            )
        return kwargs.get(name, default)

    def block_output(block_uuid: str | None = None, parse: Any = None) -> Any:
        if parse is not None:
            raise SQLBlockError(
                "block_output(..., parse=...) runs Python code from the template and is not "
                "supported; use Jinja instead, e.g. {{ block_output('config')['key'] }}"
            )
        if block_uuid is None:
            return [outputs.get(r.block_uuid) for r in upstream if r.template_name[:3] == "df_"]
        if block_uuid not in outputs:
            raise SQLBlockError(f"block_output({block_uuid!r}): not an upstream block")
        return outputs[block_uuid]

    context: dict[str, Any] = dict(kwargs)
    context.update(
        variables=variables,
        env_var=os.getenv,
        mage_secret_var=get_secret_value,  # jupyter-mage's secrets (README, "Secrets")
        json_value=_json_value,
        block_output=block_output,
        datetime=_datetime,
        json=json,
        math=math,
    )
    context.update({r.template_name: r for r in upstream})
    return context


def render(template: str, context: dict[str, Any], uuid: str) -> str:
    """Render a SQL template; a template error fails the block with its line and message."""
    jinja2 = _need("jinja2", "jinja2")
    try:
        return str(_environment().from_string(template).render(context))
    except SQLBlockError:
        raise
    except jinja2.TemplateSyntaxError as exc:
        hint = " (Mage's parse=lambda ... is not supported)" if "lambda" in template else ""
        raise SQLBlockError(
            f"Block {uuid}: SQL template error on line {exc.lineno}: {exc.message}{hint}"
        ) from None
    except jinja2.TemplateError as exc:
        raise SQLBlockError(f"Block {uuid}: SQL template error: {exc}") from None


def split_statements(sql: str) -> list[str]:
    """Split SQL at ``;`` outside strings, quoted names, comments and ``$tag$`` quotes.

    Statements with nothing but comments are dropped; the statements keep their comments.
    """
    statements: list[str] = []
    start = 0
    meaningful = False
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if c == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        if c in "'\"":
            i += 1
            while i < n:
                if sql[i] == c:
                    if i + 1 < n and sql[i + 1] == c:  # a doubled quote inside
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            meaningful = True
            continue
        if c == "$":
            match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])
            if match:
                tag = match.group(0)
                end = sql.find(tag, i + len(tag))
                i = n if end < 0 else end + len(tag)
                meaningful = True
                continue
        if c == ";":
            if meaningful:
                statements.append(sql[start:i].strip())
            start, meaningful = i + 1, False
        elif not c.isspace():
            meaningful = True
        i += 1
    if meaningful:
        statements.append(sql[start:].strip())
    return statements


_TARGET = re.compile(
    r"\b(?:create\s+(?:or\s+replace\s+)?table(?:\s+if\s+not\s+exists)?|insert\s+into)\s+"
    r"((?:\"[^\"]+\"|[\w$]+)(?:\.(?:\"[^\"]+\"|[\w$]+)){0,2})",
    re.IGNORECASE,
)


def written_table(sql: str) -> str | None:
    """The table the last ``CREATE TABLE``/``INSERT INTO`` of raw SQL writes (as Mage finds it)."""
    found = _TARGET.findall(re.sub(r"--[^\n]*", "", sql))
    return found[-1] if found else None


# -- tables and DataFrames -----------------------------------------------------------------


def as_frame(value: Any, uuid: str) -> Any:
    """An upstream output as a DataFrame (a list of records or a dict becomes one, as Mage)."""
    pd = _need("pandas", "pandas")
    if isinstance(value, pd.DataFrame):
        return value
    if isinstance(value, dict):
        return pd.DataFrame([value])
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return pd.DataFrame(value)
    raise SQLBlockError(
        f"The output of upstream block {uuid} is a {type(value).__name__}, not a table: a SQL "
        "block reads DataFrames, lists of records or dicts"
    )


def clean_name(name: str) -> str:
    """Mage's ``clean_name``: word characters only, lower case, never starting with a digit."""
    for c in ('"', "$", "\n", "\r", "\t", "\ufeff"):
        name = name.replace(c, "")
    name = re.sub(r"\W", "_", name)
    if name and name[0].isdigit():
        name = f"letter_{name}"
    return name.lower()


def _name_part(part: str) -> str:
    """One part of a table name the user wrote, quoted; a plain name is folded to lower case
    (what an unquoted name means to PostgreSQL, and so what Mage's unquoted SQL meant)."""
    part = part.strip()
    if len(part) >= 2 and part[0] == part[-1] == '"':
        return quote_identifier(part[1:-1].replace('""', '"'))
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", part):
        part = part.lower()
    return quote_identifier(part)


def target_table(
    configuration: dict[str, Any], kwargs: dict[str, Any], uuid: str, default_schema: str
) -> tuple[str, str]:
    """``(schema, table)`` a block writes to: ``data_provider_table``, else Mage's
    ``<pipeline>_<block>_v1`` (``dev_``/``test_`` first for those ``env``s), in
    ``data_provider_schema`` or the profile's schema. Both unquoted, as found."""
    table = configuration.get("data_provider_table")
    schema = configuration.get("data_provider_schema") or default_schema
    if table:
        table = str(table)
        if "." in table:
            schema, table = table.rsplit(".", 1)
        return str(schema), table
    pipeline = str(kwargs.get("pipeline_uuid") or "pipeline").rsplit("/", 1)[-1]
    table = f"{clean_name(pipeline)}_{clean_name(uuid)}_v1"
    env = kwargs.get("env")
    if env in ("dev", "test"):
        table = f"{env}_{table}"
    return str(schema), table


# -- io_config.yaml ------------------------------------------------------------------------


def find_io_config(kwargs: dict[str, Any], repo_path: str | None, home: str | None) -> Path | None:
    """Where ``io_config.yaml`` is: the Mage project's folder (``kwargs['repo_path']``, else the
    notebook's ``metadata.mage.project.repo_path``, relative to the notebook's folder), else
    the notebook's folder."""
    folders: list[Path] = []
    for candidate in (kwargs.get("repo_path"), repo_path):
        if isinstance(candidate, str) and candidate:
            path = Path(candidate).expanduser()
            folders.append(path if path.is_absolute() or not home else Path(home) / path)
    if home:
        folders.append(Path(home))
    for folder in folders:
        if (folder / "io_config.yaml").is_file():
            return folder / "io_config.yaml"
    return None


def load_profile(
    path: Path | None, profile: str, provider: str, uuid: str, template_vars: dict[str, Any]
) -> dict[str, Any]:
    """A profile of ``io_config.yaml`` (Mage's standard format), rendered first as Mage does
    (``{{ env_var('PG_PASSWORD') }}``). No file is an empty profile for DuckDB."""
    if path is None:
        if provider == "duckdb":
            return {}
        raise SQLBlockError(
            f"Block {uuid}: data_provider {provider} needs an io_config.yaml with profile "
            f"'{profile}' (in the Mage project folder, metadata.mage.project.repo_path, or next "
            "to the notebook)"
        )
    yaml = _need("yaml", "pyyaml")
    text = path.read_text(encoding="utf-8")
    try:
        rendered = _environment().from_string(text).render(template_vars)
        config = yaml.safe_load(rendered) or {}
    except Exception as exc:
        raise SQLBlockError(f"Block {uuid}: cannot read {path}: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get(profile), dict):
        known = ", ".join(str(k) for k in config) if isinstance(config, dict) else ""
        raise SQLBlockError(
            f"Block {uuid}: {path} has no profile '{profile}' (profiles: {known or 'none'})"
        )
    return dict(config[profile])


# -- providers -----------------------------------------------------------------------------


class _DuckDB:
    """A DuckDB connection for one block: upstream DataFrames as views, one transaction."""

    name = "duckdb"

    def __init__(self, profile: dict[str, Any]) -> None:
        duckdb = _need("duckdb", "duckdb")
        self.duckdb = duckdb
        # Mage connects to DUCKDB_DATABASE as given (relative to the working directory);
        # without a profile, an in-memory database that lives as long as the block.
        self.database = str(profile.get("DUCKDB_DATABASE") or ":memory:")
        self.default_schema = str(profile.get("DUCKDB_SCHEMA") or "main")
        self.con = duckdb.connect(self.database)
        self.con.begin()

    def add_table(self, relation: Relation, frame: Any) -> None:
        self.con.register(relation.template_name, frame)

    def relation_name(self, template_name: str) -> str:
        return quote_identifier(template_name)

    def statements(self, sql: str) -> list[tuple[str, bool]]:
        """The statements and whether each returns rows (DuckDB's own parser says)."""
        select = self.duckdb.StatementType.SELECT
        found = []
        for statement in self.con.extract_statements(sql):
            text = statement.query.strip().rstrip(";").strip()
            found.append((text, statement.type == select))
        return found

    def run(self, sql: str, rows: bool, limit: int) -> Any:
        if not rows:
            self.con.execute(sql)
            return None
        return self.con.sql(sql).limit(limit).df()

    def table_exists(self, schema: str, table: str) -> bool:
        found = self.con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ?",
            [schema, table],
        ).fetchone()
        return bool(found and found[0])

    def temp_table(self, name: str, query: str) -> str:
        self.con.execute(f"CREATE TEMP TABLE {quote_identifier(name)} AS {query}")
        return quote_identifier(name)

    def commit(self) -> None:
        self.con.commit()

    def close(self) -> None:
        self.con.close()


def _pg_type(values: Any, dtype: Any) -> tuple[str, Callable[[Any], Any]]:
    """The PostgreSQL type of a DataFrame column, and how to make each value a Python one."""
    pd = _need("pandas", "pandas")
    api = pd.api.types
    if api.is_bool_dtype(dtype):
        return "boolean", bool
    if api.is_integer_dtype(dtype):
        return "bigint", int
    if api.is_float_dtype(dtype):
        return "double precision", float
    if api.is_datetime64_any_dtype(dtype):
        aware = getattr(dtype, "tz", None) is not None
        return ("timestamptz" if aware else "timestamp"), _same
    if api.is_timedelta64_dtype(dtype):
        return "interval", _same
    present = [v for v in values if v is not None and not _missing(v)]
    if present and all(isinstance(v, bool) for v in present):
        return "boolean", bool
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "bigint", int
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "double precision", float
    if present and all(isinstance(v, _datetime.datetime) for v in present):
        aware = all(v.tzinfo is not None for v in present)
        return ("timestamptz" if aware else "timestamp"), _same
    if present and all(isinstance(v, _datetime.date) for v in present):
        return "date", _same
    if present and all(isinstance(v, dict | list) for v in present):
        jsonb = _need("psycopg.types.json", "psycopg[binary]").Jsonb
        return "jsonb", jsonb
    if present and all(isinstance(v, bytes) for v in present):
        return "bytea", bytes
    return "text", str


def _same(value: Any) -> Any:
    return value


def _missing(value: Any) -> bool:
    pd = _need("pandas", "pandas")
    try:
        return bool(pd.isna(value) is True)
    except (TypeError, ValueError):
        return False


class _Postgres:
    """A PostgreSQL connection for one block: upstream DataFrames as temp tables, one
    transaction."""

    name = "postgres"

    def __init__(self, profile: dict[str, Any], uuid: str) -> None:
        psycopg = _need("psycopg", "psycopg[binary]")
        self.psycopg = psycopg
        if str(profile.get("POSTGRES_CONNECTION_METHOD") or "direct") != "direct":
            raise SQLBlockError(
                f"Block {uuid}: POSTGRES_CONNECTION_METHOD "
                f"{profile['POSTGRES_CONNECTION_METHOD']!r} is not supported (only direct)"
            )
        options = {
            "host": profile.get("POSTGRES_HOST"),
            "port": profile.get("POSTGRES_PORT"),
            "dbname": profile.get("POSTGRES_DBNAME"),
            "user": profile.get("POSTGRES_USER"),
            "password": profile.get("POSTGRES_PASSWORD"),
            "connect_timeout": profile.get("POSTGRES_CONNECT_TIMEOUT") or 10,
        }
        self.default_schema = str(profile.get("POSTGRES_SCHEMA") or "public")
        self.con = psycopg.connect(**{k: v for k, v in options.items() if v not in (None, "")})
        self.cur = self.con.cursor()

    def add_table(self, relation: Relation, frame: Any) -> None:
        sql = self.psycopg.sql
        columns = [str(c) for c in frame.columns]
        kinds = [_pg_type(frame[c].tolist(), frame[c].dtype) for c in frame.columns]
        name = sql.Identifier(relation.template_name)
        definition = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(kind))
            for c, (kind, _) in zip(columns, kinds, strict=True)
        )
        # ON COMMIT DROP: the table lives as long as the block's transaction.
        self.cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(name, definition)
        )
        names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        converters = [convert for _, convert in kinds]
        with self.cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(name, names)) as copy:
            for row in frame.itertuples(index=False, name=None):
                copy.write_row(
                    [
                        None if v is None or _missing(v) else convert(_plain(v))
                        for v, convert in zip(row, converters, strict=True)
                    ]
                )

    def relation_name(self, template_name: str) -> str:
        # pg_temp first: the upstream output, even where a table of the same name exists.
        return "pg_temp." + quote_identifier(template_name)

    def statements(self, sql: str) -> list[tuple[str, bool]]:
        # Whether a statement returns rows is known once it ran (cursor.description).
        return [(s, True) for s in split_statements(sql)]

    def run(self, sql: str, rows: bool, limit: int) -> Any:
        self.cur.execute(sql)
        if not rows or self.cur.description is None:
            return None
        pd = _need("pandas", "pandas")
        columns = [d.name for d in self.cur.description]
        return pd.DataFrame.from_records(self.cur.fetchmany(limit), columns=columns)

    def table_exists(self, schema: str, table: str) -> bool:
        self.cur.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = %s AND table_name = %s",
            [schema, table],
        )
        found = self.cur.fetchone()
        return bool(found and found[0])

    def temp_table(self, name: str, query: str) -> str:
        self.cur.execute(f"CREATE TEMP TABLE {quote_identifier(name)} ON COMMIT DROP AS {query}")
        return "pg_temp." + quote_identifier(name)

    def commit(self) -> None:
        self.con.commit()

    def close(self) -> None:
        self.con.close()  # without a commit: rolled back


def _plain(value: Any) -> Any:
    """numpy and pandas scalars as the Python values psycopg adapts."""
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    if hasattr(value, "to_pytimedelta"):
        return value.to_pytimedelta()
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


# -- a SQL block ---------------------------------------------------------------------------


def run_sql(
    source: str,
    configuration: dict[str, Any],
    args: list[Any],
    upstream: list[str],
    kwargs: dict[str, Any],
    uuid: str,
    block_type: str,
    home: str | None = None,
    repo_path: str | None = None,
) -> list[Any]:
    """Run a SQL block: render its template, run it on its provider; its outputs (a list of
    zero or one DataFrame), for triggered runs and hand runs alike.

    Parameters
    ----------
    source
        The cell (``%%mage_sql`` and the template) or the template alone.
    configuration
        Mage's block configuration (``data_provider``, ``data_provider_profile``,
        ``data_provider_schema``, ``data_provider_table``, ``export_write_policy``,
        ``use_raw_sql``, ``limit``, ``limit_in_pipeline_run``).
    args, upstream
        The upstream outputs and their block uuids, in upstream order.
    kwargs
        The block's kwargs (the template's variables).
    home, repo_path
        The notebook's folder and its ``metadata.mage.project.repo_path``, to find
        ``io_config.yaml``.
    """
    problems = configuration_problems(configuration, block_type)
    if problems:
        raise SQLBlockError(f"Block {uuid}: {'; '.join(problems)}")
    template = sql_template(source) if is_sql_source(source) else source
    provider_name = str(configuration["data_provider"])
    raw = bool(configuration.get("use_raw_sql"))
    outputs = dict(zip(upstream, args, strict=False))
    base_vars = template_context(kwargs, [], outputs)
    profile_name = str(configuration.get("data_provider_profile") or "default")
    profile_name = render(profile_name, base_vars, uuid).strip() or "default"
    io_config = find_io_config(kwargs, repo_path, home)
    profile = load_profile(io_config, profile_name, provider_name, uuid, base_vars)
    where = f"{io_config}, profile {profile_name}" if io_config else "no io_config.yaml"
    print(f"SQL block {uuid}: {provider_name} ({where}){', raw SQL' if raw else ''}")
    limit_key = "limit" if kwargs.get("hand_run") else "limit_in_pipeline_run"
    limit = min(int(configuration.get(limit_key) or ROW_LIMIT), ROW_LIMIT)

    provider: _DuckDB | _Postgres = (
        _DuckDB(profile) if provider_name == "duckdb" else _Postgres(profile, uuid)
    )
    try:
        relations: list[Relation] = []
        for index, (block, value) in enumerate(zip(upstream, args, strict=False)):
            names = [f"df_{index + 1}"]
            if block.isidentifier() and block not in names:
                names.append(block)
            for name in names:
                relations.append(Relation(name, provider.relation_name(name), value, block))
        rendered = render(template, template_context(kwargs, relations, outputs), uuid)
        print(f"--- SQL template ---\n{template.strip()}\n--- rendered SQL ---\n{rendered.strip()}")
        for relation in relations:
            if relation.used:
                frame = as_frame(relation.value, relation.block_uuid)
                provider.add_table(relation, frame)
                print(
                    f"Upstream block {relation.block_uuid} ({len(frame)} rows) is "
                    f"{relation.sql_name}"
                )
        result = _execute(provider, rendered, configuration, kwargs, uuid, block_type, limit)
        provider.commit()
    finally:
        provider.close()
    if result is None:
        return []
    print(f"Block {uuid}: {len(result)} rows, columns {', '.join(map(str, result.columns))}")
    return [result]


def _execute(
    provider: _DuckDB | _Postgres,
    sql: str,
    configuration: dict[str, Any],
    kwargs: dict[str, Any],
    uuid: str,
    block_type: str,
    limit: int,
) -> Any:
    statements = provider.statements(sql)
    if not statements:
        raise SQLBlockError(f"Block {uuid}: the SQL block has no statement")
    raw = bool(configuration.get("use_raw_sql"))
    materialize = not raw and (
        block_type == "data_exporter" or bool(configuration.get("data_provider_table"))
    )
    *before, (last, last_rows) = statements
    for statement, _ in before:
        provider.run(statement, False, limit)
    if not materialize:
        result = provider.run(last, last_rows, limit)
        if result is None and raw:
            # Mage reads back what raw SQL created or inserted into.
            table = written_table(sql)  # a name from the block's own SQL, as it wrote it
            if table:
                read_back = f"SELECT * FROM {table}"  # noqa: S608
                result = provider.run(read_back, True, min(limit, RAW_TABLE_ROWS))
        return result
    schema, table = target_table(configuration, kwargs, uuid, provider.default_schema)
    full = f"{_name_part(schema)}.{_name_part(table)}"
    folded_schema, folded_table = (_name_part(p)[1:-1].replace('""', '"') for p in (schema, table))
    policy = str(configuration.get("export_write_policy") or "append")
    exists = provider.table_exists(folded_schema, folded_table)
    if exists and policy == "fail":
        raise SQLBlockError(f"Block {uuid}: table {full} already exists in database.")
    # The query runs once, into a temporary table: written to the target, then the output.
    # `full` and `rows` are quoted identifiers (_name_part, temp_table), never raw text.
    rows = provider.temp_table("_jupyter_mage_result", last)
    provider.run(f"CREATE SCHEMA IF NOT EXISTS {_name_part(schema)}", False, limit)
    if exists and policy == "replace":
        provider.run(f"DROP TABLE {full}", False, limit)
    if exists and policy == "append":
        provider.run(f"INSERT INTO {full} SELECT * FROM {rows}", False, limit)  # noqa: S608
    else:
        provider.run(f"CREATE TABLE {full} AS SELECT * FROM {rows}", False, limit)  # noqa: S608
    result = provider.run(f"SELECT * FROM {rows}", True, limit)  # noqa: S608
    action = "appended to" if exists and policy == "append" else "written to"
    print(f"Block {uuid}: {len(result)} rows {action} {full} (export_write_policy {policy})")
    return result


__all__ = [
    "MAGE_PROVIDERS",
    "ROW_LIMIT",
    "SQL_MAGIC",
    "SUPPORTED_PROVIDERS",
    "WRITE_POLICIES",
    "Relation",
    "SQLBlockError",
    "configuration_problems",
    "find_io_config",
    "is_sql_source",
    "quote_identifier",
    "quote_literal",
    "render",
    "run_sql",
    "split_statements",
    "sql_template",
    "template_context",
]
