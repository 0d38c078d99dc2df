"""The tables of jupyter-mage and how the schema evolves.

Schema evolution: the ``mage_schema`` table holds one integer version. ``MIGRATIONS`` is an
append-only list; at start-up every step above the stored version runs, in one transaction, and
the version is bumped. Steps only add (tables, nullable columns, indexes) or copy a table into a
compatible one, so an older server keeps working against a newer database.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    inspect,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import CreateTable

from ..statuses import BlockRunStatus, RunStatus, TriggerStatus


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def new_token() -> str:
    """A trigger token: 128 random bits, 32 hex characters (the shape of Mage's tokens)."""
    return secrets.token_hex(16)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC without offset (SQLite keeps none) and reads it back timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


#: SQLite reuses the largest rowid once its row is deleted (a deleted trigger's id would come
#: back, with the old trigger's runs and Idempotency-Keys); AUTOINCREMENT never does.
#: PostgreSQL sequences never reuse ids anyway.
_NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    """Declarative base of jupyter-mage tables."""


class Timestamps:
    """``created_at``/``updated_at`` as Mage's BaseModel has them."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Trigger(Timestamps, Base):
    """A pipeline schedule (trigger)."""

    __tablename__ = "mage_pipeline_schedule"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    pipeline_uuid: Mapped[str] = mapped_column(String(1024), index=True)
    schedule_type: Mapped[str] = mapped_column(String(16), default="api")
    schedule_interval: Mapped[str | None] = mapped_column(String(50), nullable=True)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=TriggerStatus.ACTIVE)
    last_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sla: Mapped[int | None] = mapped_column(Integer, nullable=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    token: Mapped[str] = mapped_column(String(255), unique=True, default=new_token)


class Run(Timestamps, Base):
    """A pipeline run."""

    __tablename__ = "mage_pipeline_run"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No foreign key: deleting a trigger keeps its runs (as Mage).
    pipeline_schedule_id: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)
    pipeline_uuid: Mapped[str] = mapped_column(String(1024), index=True)
    execution_date: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.INITIAL, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    event_variables: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    passed_sla: Mapped[bool] = mapped_column(Boolean, default=False)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    backfill_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    executor_type: Mapped[str] = mapped_column(String(32), default="jupyter_kernel")
    # What the run was accepted with, so it runs the same even if its trigger changes or goes.
    trigger_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    trigger_variables: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    trigger_settings: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    executed_notebook: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Added by schema step 2: a client's Idempotency-Key, unique per trigger.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Added by schema step 4: the server that claimed the run (None: a server of a version
    # before, or a store used without one), and a cancel asked for through another server.
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    cancel_requested: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class BlockRun(Timestamps, Base):
    """One block's execution inside a run."""

    __tablename__ = "mage_block_run"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline_run_id: Mapped[int] = mapped_column(
        ForeignKey("mage_pipeline_run.id", ondelete="CASCADE"), index=True
    )
    block_uuid: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), default=BlockRunStatus.INITIAL)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    logs: Mapped[str] = mapped_column(Text, default="")
    outputs: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class Server(Base):
    """A Jupyter server sharing this database: its runs are its own while it is alive.

    Alive: its heartbeat is recent (within its lease), or, seen from the same host, its
    process still exists. A server that stops deletes its row.
    """

    __tablename__ = "mage_server"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Seconds after ``heartbeat_at`` at which the server counts as gone.
    lease_seconds: Mapped[float] = mapped_column(Float)


class SchemaVersion(Base):
    """One row: the schema version this database is at."""

    __tablename__ = "mage_schema"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


#: The tables, typed as tables (a declarative class's ``__table__`` is typed as a FromClause).
TRIGGERS = cast(Table, Trigger.__table__)
RUNS = cast(Table, Run.__table__)
BLOCK_RUNS = cast(Table, BlockRun.__table__)
SCHEMA = cast(Table, SchemaVersion.__table__)
SERVERS = cast(Table, Server.__table__)


def _create_initial_tables(conn: Connection) -> None:
    Base.metadata.create_all(conn, tables=[TRIGGERS, RUNS, BLOCK_RUNS])


def _add_column(conn: Connection, table: str, column: str, ddl_type: str) -> None:
    """Add a nullable column unless it is there (step 1 creates tables from today's models)."""
    if column not in {c["name"] for c in inspect(conn).get_columns(table)}:
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl_type}"))


def _add_idempotency_key(conn: Connection) -> None:
    _add_column(conn, "mage_pipeline_run", "idempotency_key", "VARCHAR(255)")
    conn.execute(
        text(
            "CREATE UNIQUE INDEX IF NOT EXISTS ix_mage_run_idempotency "
            "ON mage_pipeline_run (pipeline_schedule_id, idempotency_key)"
        )
    )


def _never_reuse_ids(conn: Connection) -> None:
    """SQLite tables of earlier versions get AUTOINCREMENT (a copy of each, in the same
    transaction; foreign keys are off for the migration, see :meth:`Store._migrate`)."""
    if conn.dialect.name != "sqlite":
        return
    for table in (TRIGGERS, RUNS, BLOCK_RUNS):
        name = table.name
        create = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).scalar()
        if create is None or "AUTOINCREMENT" in create.upper():
            continue
        columns = ", ".join(c["name"] for c in inspect(conn).get_columns(name))
        indexes = [
            row[0]
            for row in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                "AND sql IS NOT NULL",
                (name,),
            )
        ]
        conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO _old_{name}")
        for index in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL",
            (f"_old_{name}",),
        ).all():
            conn.exec_driver_sql(f"DROP INDEX {index[0]}")
        conn.execute(CreateTable(table, include_foreign_key_constraints=None))
        copy = f"INSERT INTO {name} ({columns}) SELECT {columns} FROM _old_{name}"  # noqa: S608
        conn.exec_driver_sql(copy)  # our own table and column names only
        conn.exec_driver_sql(f"DROP TABLE _old_{name}")
        for index_sql in indexes:
            conn.exec_driver_sql(index_sql)
        if name == Trigger.__tablename__:
            # Runs remember deleted triggers' ids: the next trigger's id is above all of them.
            conn.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = ?", (name,))
            conn.exec_driver_sql(
                "INSERT INTO sqlite_sequence (name, seq) SELECT ?, max("
                "(SELECT coalesce(max(id), 0) FROM mage_pipeline_schedule), "
                "(SELECT coalesce(max(pipeline_schedule_id), 0) FROM mage_pipeline_run))",
                (name,),
            )


def _run_owners(conn: Connection) -> None:
    """Servers sharing the database: who holds which run, and cancels across servers."""
    Base.metadata.create_all(conn, tables=[SERVERS])
    _add_column(conn, "mage_pipeline_run", "owner", "VARCHAR(255)")
    _add_column(conn, "mage_pipeline_run", "cancel_requested", "BOOLEAN")
    conn.execute(
        text("CREATE INDEX IF NOT EXISTS ix_mage_pipeline_run_owner ON mage_pipeline_run (owner)")
    )


def _run_ids_index(conn: Connection) -> None:
    """Deep list pages (``_offset=40000``) skip rows of a compact index of run ids, not of the
    run table itself (8x fewer pages read). SQLite only: a PostgreSQL primary key is that
    index already."""
    if conn.dialect.name == "sqlite":
        conn.execute(
            text("CREATE INDEX IF NOT EXISTS ix_mage_pipeline_run_id ON mage_pipeline_run (id)")
        )


#: Append-only (not Alembic: a handful of additive steps, each idempotent, run by the server
#: itself at start under one lock, with no separate tool or revision files for users to run).
#: Each step gets a connection inside the migration transaction.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _create_initial_tables,
    _add_idempotency_key,
    _never_reuse_ids,
    _run_owners,
    _run_ids_index,
]
