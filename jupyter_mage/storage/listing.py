"""Pages of runs whose JSON the database writes itself.

A list page of 1,000 runs is 4,000 rows (each run with its block runs). Read as SQLAlchemy
rows, decoded into Python objects (timestamps parsed and formatted again, JSON columns parsed)
and encoded again, that took 150-300 ms. Here SQLite's JSON1 functions (``json_object``) and
PostgreSQL's (``json_build_object``, ``json_agg``) build each run's JSON object, block runs
included, in C, in the query that selects the page; Python only joins the objects with commas.

The objects are the same as :func:`.views.run_to_dict` builds (plus ``block_runs`` and their
counts), field for field; ``tests/unit/test_listing.py`` holds the two side by side on both
databases.

The cost of a page is bounded by its size, not by the number of runs kept: the page's ids come
from an index (``ORDER BY id DESC LIMIT/OFFSET`` on the primary key, or on the index of the
filtered column), and only those runs are read. The exact ``count`` is an index-only scan.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Dialect,
    Integer,
    Select,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by

from ..statuses import BlockRunStatus
from .schema import BLOCK_RUNS, RUNS

#: The columns a page may be filtered on (equality), as the list routes allow.
FILTERABLE = ("pipeline_uuid", "pipeline_schedule_id", "status")


def _is_sqlite(dialect: Dialect) -> bool:
    return dialect.name == "sqlite"


def _key(name: str) -> ColumnElement[Any]:
    # A literal, not a bound parameter: PostgreSQL cannot type the parameters of
    # json_build_object. The names are this module's own constants, never input.
    if not name.isidentifier():
        raise ValueError(f"not a field name: {name!r}")
    return literal_column(f"'{name}'")


def _object(dialect: Dialect, fields: Sequence[tuple[str, ColumnElement[Any]]]) -> Any:
    """A JSON object of (name, value) pairs, in that order."""
    build = func.json_object if _is_sqlite(dialect) else func.json_build_object
    return build(*(part for name, value in fields for part in (_key(name), value)))


def _time(dialect: Dialect, column: Any) -> ColumnElement[Any]:
    """A timestamp column as :func:`.views.format_time` writes it (NULL stays null).

    Columns hold UTC without an offset. SQLAlchemy stores SQLite timestamps as text,
    always with six digits of microseconds: that text plus ``+00:00`` is Mage's shape.
    """
    if _is_sqlite(dialect):
        return type_coerce(column, String) + literal_column("'+00:00'")
    text = func.to_char(column, literal_column("'YYYY-MM-DD HH24:MI:SS.US'"))
    return type_coerce(text, String) + literal_column("'+00:00'")


def _json(dialect: Dialect, column: Any) -> Any:
    """A JSON column embedded as JSON (SQLite keeps it as text, which would be quoted)."""
    return func.json(column) if _is_sqlite(dialect) else column


def _json_or_empty(dialect: Dialect, column: Any) -> ColumnElement[Any]:
    """A JSON object column, ``{}`` when it is NULL or JSON null (the views' ``x or {}``)."""
    if _is_sqlite(dialect):
        return func.json(case((func.json_type(column) == "object", column), else_="{}"))
    return case(
        (func.json_typeof(column) == "object", column),
        else_=literal_column("'{}'::json"),
    )


def _boolean(dialect: Dialect, column: Any) -> Any:
    """A boolean column as JSON true/false/null (SQLite stores 0 and 1)."""
    if not _is_sqlite(dialect):
        return column
    return func.json(case((column.is_(None), "null"), (column == 1, "true"), else_="false"))


def _block_run_object(dialect: Dialect) -> Any:
    b = BLOCK_RUNS.c
    return _object(
        dialect,
        [
            ("id", b.id),
            ("pipeline_run_id", b.pipeline_run_id),
            ("block_uuid", b.block_uuid),
            ("status", b.status),
            ("started_at", _time(dialect, b.started_at)),
            ("completed_at", _time(dialect, b.completed_at)),
            ("created_at", _time(dialect, b.created_at)),
            ("updated_at", _time(dialect, b.updated_at)),
            ("metrics", _json_or_empty(dialect, b.metrics)),
        ],
    )


def _block_runs_array(dialect: Dialect) -> Any:
    """A run's block runs as a JSON array, in the order they were created (dependency order)."""
    of_run = BLOCK_RUNS.c.pipeline_run_id == RUNS.c.id
    if _is_sqlite(dialect):
        # SQLite's json_group_array keeps the order of the rows it is fed: those of an ordered
        # subquery (SQLite before 3.44 has no ORDER BY inside aggregates).
        ordered = (
            select(_block_run_object(dialect).label("block_run"))
            .where(of_run)
            .order_by(BLOCK_RUNS.c.id)
            .correlate(RUNS)
            .subquery()
        )
        return select(func.json_group_array(func.json(ordered.c.block_run))).scalar_subquery()
    array = func.json_agg(aggregate_order_by(_block_run_object(dialect), BLOCK_RUNS.c.id))
    return (
        select(func.coalesce(array, literal_column("'[]'::json")))
        .where(of_run)
        .correlate(RUNS)
        .scalar_subquery()
    )


def _block_counts(completed: bool) -> ColumnElement[Any]:
    condition = BLOCK_RUNS.c.pipeline_run_id == RUNS.c.id
    if completed:
        condition = and_(condition, BLOCK_RUNS.c.status == BlockRunStatus.COMPLETED)
    return (
        select(func.count()).select_from(BLOCK_RUNS).where(condition).correlate(RUNS)
    ).scalar_subquery()


def run_object(dialect: Dialect, with_blocks: bool = True) -> Any:
    """A run's JSON object: :func:`.views.run_to_dict`, plus its block runs and their counts."""
    r = RUNS.c
    fields: list[tuple[str, ColumnElement[Any]]] = [
        ("id", r.id),
        ("pipeline_schedule_id", r.pipeline_schedule_id),
        ("pipeline_schedule_name", r.trigger_name),
        ("pipeline_uuid", r.pipeline_uuid),
        ("execution_date", _time(dialect, r.execution_date)),
        ("status", r.status),
        ("started_at", _time(dialect, r.started_at)),
        ("completed_at", _time(dialect, r.completed_at)),
        ("variables", _json_or_empty(dialect, r.variables)),
        ("event_variables", _json(dialect, r.event_variables)),
        ("passed_sla", _boolean(dialect, r.passed_sla)),
        ("metrics", _json(dialect, r.metrics)),
        ("backfill_id", r.backfill_id),
        ("executor_type", r.executor_type),
        ("executed_notebook", r.executed_notebook),
        ("created_at", _time(dialect, r.created_at)),
        ("updated_at", _time(dialect, r.updated_at)),
    ]
    if with_blocks:
        fields += [
            ("block_runs", _block_runs_array(dialect)),
            ("block_runs_count", _block_counts(completed=False)),
            ("completed_block_runs_count", _block_counts(completed=True)),
        ]
    return _object(dialect, fields)


def _conditions(filters: Iterable[str]) -> list[ColumnElement[bool]]:
    unknown = set(filters) - set(FILTERABLE)
    if unknown:
        raise ValueError(f"runs cannot be filtered on {sorted(unknown)}")
    return [RUNS.c[name] == bindparam(name) for name in filters]


@functools.lru_cache(maxsize=64)  # per engine's dialect and set of filters: a handful
def page_query(dialect: Dialect, filters: tuple[str, ...]) -> Select[Any]:
    """The JSON objects of one page of runs, newest first, for runs whose ``filters`` columns
    equal the parameters of the same names; ``limit`` and ``offset`` are parameters too.

    Built once per dialect and set of filters (building it costs more than running it).
    """
    # The page's ids first, from the primary key or the filter's index alone: the objects are
    # built for the page's runs only, never for the rows an offset skips.
    page_ids = (
        select(RUNS.c.id)
        .where(*_conditions(filters))
        .order_by(RUNS.c.id.desc())
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
        .scalar_subquery()
    )
    run = run_object(dialect)
    if not _is_sqlite(dialect):
        run = cast(run, Text)  # psycopg would parse json values into Python objects
    return select(run.label("run")).where(RUNS.c.id.in_(page_ids)).order_by(RUNS.c.id.desc())


@functools.cache
def count_query(filters: tuple[str, ...]) -> Select[Any]:
    """How many runs match the filters, exactly (an index-only scan)."""
    return select(func.count()).select_from(RUNS).where(*_conditions(filters))


def read_page(
    conn: Connection, filters: Mapping[str, Any], limit: int, offset: int
) -> tuple[str, int]:
    """One page of runs as a JSON array (text), and how many runs the filters match."""
    keys = tuple(sorted(filters))
    values = {key: filters[key] for key in keys}
    objects = conn.execute(
        page_query(conn.dialect, keys), {**values, "limit": limit, "offset": offset}
    ).scalars()
    text = "[" + ",".join(objects) + "]"
    count = int(conn.execute(count_query(keys), values).scalar_one())
    return text, count
