"""Storage: triggers, runs and block runs in SQL (SQLite by default, PostgreSQL to share work).

The database is the queue: an accepted run is a committed ``initial`` row, and what executes is
claimed from those rows. Every public method of :class:`Store` is a coroutine that runs its SQL in
the store's own worker thread(s), so the tornado event loop never waits on the database.

Schema evolution: the ``mage_schema`` table holds one integer version. ``MIGRATIONS`` is an
append-only list; at start-up every step above the stored version runs, in one transaction, and
the version is bumped. Steps only add (tables, nullable columns, indexes), so an older server keeps
working against a newer database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar, cast

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import CursorResult, Row
from sqlalchemy.exc import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.schema import CreateTable

T = TypeVar("T")

RUN_FINISHED = ("completed", "failed", "cancelled")
BLOCK_FINISHED = ("completed", "failed", "cancelled", "upstream_failed", "condition_failed")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def format_time(value: datetime | None) -> str | None:
    """A timestamp as Mage writes it: ``YYYY-MM-DD HH:MM:SS.ffffff+00:00``."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")


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


class DatabaseUnavailable(RuntimeError):
    """The database cannot be used now (locked, full, read-only, gone); try again later.

    The message says why, from the database driver's own error (never the SQL or its
    parameters, which can hold tokens).
    """


def unavailable_reason(exc: BaseException) -> str | None:
    """Why a database error means "unavailable" (retry later), or None for any other error."""
    if isinstance(exc, OperationalError | InterfaceError) or type(exc) is DatabaseError:
        return str(getattr(exc, "orig", None) or type(exc).__name__).splitlines()[0][:300]
    return None


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
    status: Mapped[str] = mapped_column(String(16), default="active")
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
    status: Mapped[str] = mapped_column(String(16), default="initial", index=True)
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


class BlockRun(Timestamps, Base):
    """One block's execution inside a run."""

    __tablename__ = "mage_block_run"
    __table_args__ = _NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline_run_id: Mapped[int] = mapped_column(
        ForeignKey("mage_pipeline_run.id", ondelete="CASCADE"), index=True
    )
    block_uuid: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), default="initial")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    logs: Mapped[str] = mapped_column(Text, default="")
    outputs: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


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


#: Append-only. Each step gets a connection inside the migration transaction.
MIGRATIONS: list[Callable[[Connection], None]] = [
    _create_initial_tables,
    _add_idempotency_key,
    _never_reuse_ids,
]


# -- dict views, in Mage's field names -------------------------------------------------------


def trigger_to_dict(
    t: Trigger | Row[Any], runs_count: int = 0, last_status: str | None = None
) -> dict[str, Any]:
    """A trigger as the API shows it to authenticated users (token included)."""
    return {
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "pipeline_uuid": t.pipeline_uuid,
        "schedule_type": t.schedule_type,
        "schedule_interval": t.schedule_interval,
        "start_time": format_time(t.start_time),
        "status": t.status,
        "last_enabled_at": format_time(t.last_enabled_at),
        "variables": t.variables or {},
        "sla": t.sla,
        "settings": t.settings or {},
        "token": t.token,
        "created_at": format_time(t.created_at),
        "updated_at": format_time(t.updated_at),
        "last_pipeline_run_status": last_status,
        "pipeline_runs_count": runs_count,
    }


def run_to_dict(r: Run) -> dict[str, Any]:
    """A run with Mage's columns, plus the trigger's name and the executed notebook."""
    return {
        "id": r.id,
        "pipeline_schedule_id": r.pipeline_schedule_id,
        "pipeline_schedule_name": r.trigger_name,
        "pipeline_uuid": r.pipeline_uuid,
        "execution_date": format_time(r.execution_date),
        "status": r.status,
        "started_at": format_time(r.started_at),
        "completed_at": format_time(r.completed_at),
        "variables": r.variables or {},
        "event_variables": r.event_variables,
        "passed_sla": r.passed_sla,
        "metrics": r.metrics,
        "backfill_id": r.backfill_id,
        "executor_type": r.executor_type,
        "executed_notebook": r.executed_notebook,
        "created_at": format_time(r.created_at),
        "updated_at": format_time(r.updated_at),
    }


def block_run_to_dict(b: BlockRun) -> dict[str, Any]:
    """A block run with Mage's fields (logs and outputs have their own routes)."""
    return {
        "id": b.id,
        "pipeline_run_id": b.pipeline_run_id,
        "block_uuid": b.block_uuid,
        "status": b.status,
        "started_at": format_time(b.started_at),
        "completed_at": format_time(b.completed_at),
        "created_at": format_time(b.created_at),
        "updated_at": format_time(b.updated_at),
        "metrics": b.metrics or {},
    }


@dataclass
class NewRun:
    """What :meth:`Store.create_run` did.

    ``outcome``: ``created`` (queued), ``started`` (committed ``running``; ``plan`` is set),
    ``existing`` (the run with the same ``idempotency_key`` for the trigger, answered instead)
    or ``skipped`` (the trigger already had ``skip_if_active`` runs waiting or running; the new
    run was recorded as ``cancelled``).
    """

    run: dict[str, Any]
    outcome: str
    #: The run as :meth:`Store.claim_runs` gives it (``started`` only).
    plan: dict[str, Any] | None = None


class Store:
    """All SQL of jupyter-mage, behind coroutines.

    Parameters
    ----------
    db_url
        A SQLAlchemy URL. SQLite files get WAL mode and a single writer thread (SQLite allows one
        writer at a time; one thread avoids lock contention); other databases get a small pool.
    """

    def __init__(self, db_url: str, busy_timeout: float = 5.0) -> None:
        self.db_url = db_url
        self.is_sqlite = db_url.startswith("sqlite")
        self.busy_timeout = busy_timeout
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(db_url, **kwargs)
        #: The SQLite file, watched so that its deletion is noticed (None: not a file).
        self.path = _sqlite_file(self.engine) if self.is_sqlite else None
        if self.is_sqlite:
            event.listen(self.engine, "connect", self._sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time: one thread writes (no lock contention between our
        # own threads), and reads go to threads of their own, so that a writer waiting for
        # the lock (another process holding it) never holds a read up. WAL lets them proceed.
        self._executor = ThreadPoolExecutor(
            max_workers=1 if self.is_sqlite else 4, thread_name_prefix="mage-db"
        )
        self._readers = (
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="mage-db-read")
            if self.is_sqlite
            else self._executor
        )
        self._calls: list[_TriggerCall] = []  # trigger calls waiting for the database thread
        self._calls_lock = threading.Lock()
        self._draining = False
        self._ready_lock = threading.Lock()
        self._identity: tuple[int, int] | None = None
        #: Why the database cannot be used, while it cannot (None: it can).
        self.unavailable: str | None = None
        try:
            self._prepare()
        except DatabaseUnavailable:
            pass  # the server starts anyway; every call tries again and answers 503 meanwhile

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the database (writer) thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, fn, args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read-only ``fn(*args)`` in a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._guarded, fn, args)

    def _guarded(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """``fn(*args)`` on a usable database; DatabaseUnavailable when it is not."""
        self._prepare()
        try:
            return fn(*args)
        except (OperationalError, InterfaceError, DatabaseError) as exc:
            reason = unavailable_reason(exc)
            if reason is None:
                raise
            raise DatabaseUnavailable(reason) from None

    def _prepare(self) -> None:
        """Migrate once, and notice a SQLite file deleted or replaced under the server."""
        if self.path is not None:
            try:
                info = os.stat(self.path)
                identity: tuple[int, int] | None = (info.st_dev, info.st_ino)
            except FileNotFoundError:
                identity = None
            if self._identity is not None and identity != self._identity:
                with self._ready_lock:
                    if identity is None:
                        self.unavailable = (
                            f"the database file {self.path} was deleted while the server ran; "
                            "restore it, or restart the server to start an empty one"
                        )
                        raise DatabaseUnavailable(self.unavailable)
                    # A file put back (restored from a backup): use it from now on.
                    self.engine.dispose()
                    self._identity = None
        if self._identity is not None or (self.path is None and self.unavailable is None):
            return
        with self._ready_lock:
            if self._identity is not None:
                return
            try:
                if self.path is not None:
                    _create_private_file(self.path)
                self._migrate()
            except (OperationalError, InterfaceError, DatabaseError, OSError) as exc:
                reason = unavailable_reason(exc) if not isinstance(exc, OSError) else str(exc)
                if reason is None:
                    raise
                self.unavailable = f"the database cannot be used: {reason}"
                raise DatabaseUnavailable(self.unavailable) from None
            if self.path is not None:
                info = os.stat(self.path)
                self._identity = (info.st_dev, info.st_ino)
            self.unavailable = None

    def close(self) -> None:
        """Stop the worker threads and close connections."""
        self._executor.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()

    def _migrate(self) -> None:
        with self.engine.connect() as conn:
            if self.is_sqlite:
                # Foreign keys off while tables may be copied (dropping the old run table would
                # otherwise cascade to block runs); an IMMEDIATE transaction serialises servers
                # that start together on one file.
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            with conn.begin() if not self.is_sqlite else contextlib.nullcontext():
                self._migrate_steps(conn)
            if self.is_sqlite:
                conn.exec_driver_sql("COMMIT")
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")

    @staticmethod
    def _migrate_steps(conn: Connection) -> None:
        SCHEMA.create(conn, checkfirst=True)
        row = conn.execute(select(SchemaVersion.version).where(SchemaVersion.id == 1)).first()
        current = row[0] if row else 0
        for step in MIGRATIONS[current:]:
            step(conn)
        if row is None:
            conn.execute(SCHEMA.insert().values(id=1, version=len(MIGRATIONS)))
        elif current < len(MIGRATIONS):
            conn.execute(
                update(SchemaVersion).where(SchemaVersion.id == 1).values(version=len(MIGRATIONS))
            )

    def _sqlite_pragmas(self, dbapi_connection: Any, _record: Any) -> None:
        # WAL lets readers proceed while the single writer commits; NORMAL sync keeps a
        # committed run across a crash of the server process (only a power loss could drop the
        # last commits).
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        cursor.close()

    # -- triggers ----------------------------------------------------------------------------

    async def create_trigger(self, values: dict[str, Any]) -> dict[str, Any]:
        """Insert a trigger; ``values`` are already validated column values."""
        return await self._call(self._create_trigger, values)

    def _create_trigger(self, values: dict[str, Any]) -> dict[str, Any]:
        with self._sessions.begin() as s:
            trigger = Trigger(**values)
            if values.get("status", "active") == "active":
                trigger.last_enabled_at = utcnow()
            s.add(trigger)
            s.flush()
            return trigger_to_dict(trigger)

    async def get_trigger(self, trigger_id: int) -> dict[str, Any] | None:
        """One trigger with its run count and last run status, or None."""
        return await self._read(self._get_trigger, trigger_id)

    def _get_trigger(self, trigger_id: int) -> dict[str, Any] | None:
        with self._sessions() as s:
            trigger = self._read_trigger(s, trigger_id)
            if trigger is not None:
                count, last = self._run_stats(s, [trigger_id])[trigger_id]
                trigger.update(pipeline_runs_count=count, last_pipeline_run_status=last)
            return trigger

    @staticmethod
    def _read_trigger(s: Session, trigger_id: int) -> dict[str, Any] | None:
        """The trigger without its run statistics (a plain row: trigger calls read it)."""
        row = s.connection().execute(_TRIGGER_BY_ID, {"id": trigger_id}).first()
        return trigger_to_dict(row) if row is not None else None

    async def list_triggers(self, pipeline_uuid: str | None = None) -> list[dict[str, Any]]:
        """Triggers, newest first, optionally of one pipeline."""
        return await self._read(self._list_triggers, pipeline_uuid)

    def _list_triggers(self, pipeline_uuid: str | None) -> list[dict[str, Any]]:
        with self._sessions() as s:
            query = select(Trigger).order_by(Trigger.id.desc())
            if pipeline_uuid is not None:
                query = query.where(Trigger.pipeline_uuid == pipeline_uuid)
            triggers = list(s.scalars(query))
            stats = self._run_stats(s, [t.id for t in triggers])
            return [trigger_to_dict(t, *stats.get(t.id, (0, None))) for t in triggers]

    @staticmethod
    def _run_stats(s: Session, ids: list[int]) -> dict[int, tuple[int, str | None]]:
        if not ids:
            return {}
        counts = dict(
            s.execute(
                select(Run.pipeline_schedule_id, func.count(Run.id))
                .where(Run.pipeline_schedule_id.in_(ids))
                .group_by(Run.pipeline_schedule_id)
            ).all()
        )
        latest = (
            select(Run.pipeline_schedule_id, func.max(Run.id).label("last_id"))
            .where(Run.pipeline_schedule_id.in_(ids))
            .group_by(Run.pipeline_schedule_id)
            .subquery()
        )
        last = dict(
            s.execute(
                select(Run.pipeline_schedule_id, Run.status).join(
                    latest, Run.id == latest.c.last_id
                )
            ).all()
        )
        return {i: (counts.get(i, 0), last.get(i)) for i in ids}

    async def update_trigger(
        self, trigger_id: int, values: dict[str, Any], rotate_token: bool = False
    ) -> dict[str, Any] | None:
        """Update columns (and maybe the token) of a trigger; None if it does not exist."""
        return await self._call(self._update_trigger, trigger_id, values, rotate_token)

    def _update_trigger(
        self, trigger_id: int, values: dict[str, Any], rotate_token: bool
    ) -> dict[str, Any] | None:
        with self._sessions.begin() as s:
            trigger = s.get(Trigger, trigger_id)
            if trigger is None:
                return None
            if values.get("status") == "active" and trigger.status != "active":
                trigger.last_enabled_at = utcnow()
            for key, value in values.items():
                setattr(trigger, key, value)
            if rotate_token:
                trigger.token = new_token()
            trigger.updated_at = utcnow()
            s.flush()
            stats = self._run_stats(s, [trigger_id])
            return trigger_to_dict(trigger, *stats.get(trigger_id, (0, None)))

    async def delete_trigger(self, trigger_id: int) -> dict[str, Any] | None:
        """Delete a trigger (its runs stay); returns what was deleted, or None."""
        return await self._call(self._delete_trigger, trigger_id)

    def _delete_trigger(self, trigger_id: int) -> dict[str, Any] | None:
        with self._sessions.begin() as s:
            trigger = s.get(Trigger, trigger_id)
            if trigger is None:
                return None
            gone = trigger_to_dict(trigger)
            s.delete(trigger)
            return gone

    # -- runs --------------------------------------------------------------------------------

    async def create_run(
        self,
        values: dict[str, Any],
        skip_if_active: int | None = None,
        block_uuids: Iterable[str] = (),
        start: bool = False,
    ) -> NewRun:
        """Commit a new run (and an ``initial`` block run per block); see :class:`NewRun`.

        With ``start``, a run that would be first in the queue is committed ``running`` at once
        (claimed in the same transaction) and its plan is returned for the caller to execute.
        The checks and the inserts happen in one transaction.
        """
        return await self._call(self._create_run, values, skip_if_active, list(block_uuids), start)

    def _create_run(
        self,
        values: dict[str, Any],
        skip_if_active: int | None,
        block_uuids: list[str],
        start: bool,
    ) -> NewRun:
        try:
            with self._sessions.begin() as s:
                return self._insert_run(s, values, skip_if_active, block_uuids, start)
        except IntegrityError:
            # Another request with the same key won the race: answer its run.
            key = values.get("idempotency_key")
            if key is None:
                raise
            with self._sessions() as s:
                existing = self._find_idempotent(s, values.get("pipeline_schedule_id"), key)
            if existing is None:
                raise
            return NewRun(existing, "existing")

    def _insert_run(
        self,
        s: Session,
        values: dict[str, Any],
        skip_if_active: int | None,
        block_uuids: list[str],
        start: bool,
    ) -> NewRun:
        """:meth:`create_run`'s checks and INSERTs, inside the caller's transaction."""
        key = values.get("idempotency_key")
        trigger_id = values.get("pipeline_schedule_id")
        if key is not None:
            existing = self._find_idempotent(s, trigger_id, key)
            if existing is not None:
                return NewRun(existing, "existing")
        now = utcnow()
        # Mage's partition: "<trigger id>/<execution date>", kept in the run variables.
        stamp = values["execution_date"].strftime("%Y%m%dT%H%M%S_%f")
        row = {
            "status": "initial",
            "passed_sla": False,
            "executor_type": "jupyter_kernel",
            "created_at": now,
            "updated_at": now,
            **values,
            "variables": {
                **(values.get("variables") or {}),
                "execution_partition": f"{trigger_id}/{stamp}",
            },
        }
        outcome = "created"
        if skip_if_active is not None:
            active = s.scalar(
                select(func.count(Run.id)).where(
                    Run.pipeline_schedule_id == trigger_id,
                    Run.status.in_(("initial", "running")),
                )
            )
            if (active or 0) >= skip_if_active:
                outcome = "skipped"
                row.update(
                    status="cancelled",
                    completed_at=now,
                    metrics={"skipped": "the trigger's earlier runs are still active"},
                )
        # Started at once only if nobody is waiting to be overtaken.
        if outcome == "created" and start and s.execute(_ANY_WAITING_RUN).first() is None:
            outcome = "started"
            row.update(status="running", started_at=now)
        # Plain INSERTs of prebuilt statements, no unit of work: every trigger call comes here.
        conn = s.connection()
        result = cast(CursorResult[Any], conn.execute(_INSERT_RUN, row))
        assert result.inserted_primary_key is not None
        run = Run(id=result.inserted_primary_key[0], **row)  # not added to the session
        if outcome != "skipped" and block_uuids:
            conn.execute(
                _INSERT_BLOCK_RUN,
                [
                    {
                        "pipeline_run_id": run.id,
                        "block_uuid": uuid,
                        "status": "initial",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for uuid in block_uuids
                ],
            )
        if outcome != "started":
            return NewRun(run_to_dict(run), outcome)
        # Answered as accepted (``initial``); it was claimed in the same commit.
        accepted = Run(id=run.id, **{**row, "status": "initial", "started_at": None})
        return NewRun(run_to_dict(accepted), outcome, self._plan(s, run))

    async def create_run_for_trigger(
        self, trigger_id: int, admit: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> NewRun:
        """:meth:`create_run` for a trigger call, in one database call.

        The trigger is read (None if missing) and passed to ``admit``, which refuses the call by
        raising, or returns :meth:`create_run`'s arguments.

        Calls that arrive while the database thread is busy share one transaction (group
        commit): under a burst, one commit, one thread hand-off and one trigger read serve many
        calls, while a lone call waits for nothing.
        """
        loop = asyncio.get_running_loop()
        call = _TriggerCall(trigger_id, admit, loop.create_future())
        with self._calls_lock:
            self._calls.append(call)
            idle, self._draining = not self._draining, True
        if idle:
            loop.run_in_executor(self._executor, self._drain_trigger_calls, loop)
        return await call.future

    def _drain_trigger_calls(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._calls_lock:
                batch, self._calls = self._calls, []
                if not batch:
                    self._draining = False
                    return
            try:
                self._prepare()
                outcomes = self._trigger_calls(batch)
            except DatabaseUnavailable as exc:
                outcomes = [exc] * len(batch)
            loop.call_soon_threadsafe(_settle_trigger_calls, batch, outcomes)

    def _trigger_calls(self, batch: list[_TriggerCall]) -> list[NewRun | BaseException]:
        """The calls of ``batch`` in one transaction; each gets its run or its refusal."""
        try:
            with self._sessions.begin() as s:
                triggers: dict[int, dict[str, Any] | None] = {}
                outcomes: list[NewRun | BaseException] = []
                for call in batch:
                    if call.trigger_id not in triggers:
                        triggers[call.trigger_id] = self._read_trigger(s, call.trigger_id)
                    try:
                        args = call.admit(triggers[call.trigger_id])
                    except Exception as refusal:  # raised before this call wrote anything
                        outcomes.append(refusal)
                        continue
                    outcomes.append(self._insert_run(s, **args))
                return outcomes
        except Exception as exc:
            reason = unavailable_reason(exc)
            if reason is not None:  # the database, not one call: every call fails alike, fast
                return [DatabaseUnavailable(reason)] * len(batch)
            # One call's failure (an Idempotency-Key race with another server, say) must not
            # fail the others: each runs again in a transaction of its own.
            return [self._one_trigger_call(call) for call in batch]

    def _one_trigger_call(self, call: _TriggerCall) -> NewRun | BaseException:
        try:
            with self._sessions() as s:
                trigger = self._read_trigger(s, call.trigger_id)
            return self._create_run(**call.admit(trigger))
        except Exception as exc:
            reason = unavailable_reason(exc)
            return exc if reason is None else DatabaseUnavailable(reason)

    @staticmethod
    def _find_idempotent(s: Session, trigger_id: int | None, key: str) -> dict[str, Any] | None:
        run = s.scalar(
            select(Run).where(Run.pipeline_schedule_id == trigger_id, Run.idempotency_key == key)
        )
        return run_to_dict(run) if run is not None else None

    async def get_run(self, run_id: int, with_blocks: bool = False) -> dict[str, Any] | None:
        """One run (and its block runs), or None."""
        return await self._read(self._get_run, run_id, with_blocks)

    def _get_run(self, run_id: int, with_blocks: bool) -> dict[str, Any] | None:
        with self._sessions() as s:
            run = s.get(Run, run_id)
            if run is None:
                return None
            data = run_to_dict(run)
            if with_blocks:
                data["block_runs"] = self._block_runs(s, [run_id], with_outputs=True)[run_id]
            return data

    def _plan(self, s: Session, run: Run) -> dict[str, Any]:
        """Everything the engine needs to start a run, including private columns."""
        data = run_to_dict(run)
        data["trigger_variables"] = run.trigger_variables or {}
        data["trigger_settings"] = run.trigger_settings or {}
        data["block_runs"] = self._block_runs(s, [run.id])[run.id]
        return data

    async def list_runs(
        self, filters: dict[str, Any], limit: int, offset: int, with_blocks: bool = True
    ) -> tuple[list[dict[str, Any]], int]:
        """Runs newest first, filtered by column equality; also the total count."""
        return await self._read(self._list_runs, filters, limit, offset, with_blocks)

    def _list_runs(
        self, filters: dict[str, Any], limit: int, offset: int, with_blocks: bool
    ) -> tuple[list[dict[str, Any]], int]:
        with self._sessions() as s:
            conditions = [getattr(Run, key) == value for key, value in filters.items()]
            total = s.scalar(select(func.count(Run.id)).where(*conditions)) or 0
            runs = list(
                s.scalars(
                    select(Run)
                    .where(*conditions)
                    .order_by(Run.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            )
            rows = [run_to_dict(r) for r in runs]
            if with_blocks and rows:
                blocks = self._block_runs(s, [r["id"] for r in rows])
                for row in rows:
                    row["block_runs"] = blocks[row["id"]]
                    row["block_runs_count"] = len(row["block_runs"])
                    row["completed_block_runs_count"] = sum(
                        1 for b in row["block_runs"] if b["status"] == "completed"
                    )
            return rows, total

    async def claim_runs(self, limit: int) -> list[dict[str, Any]]:
        """Move up to ``limit`` of the oldest ``initial`` runs to ``running``; their plans.

        On PostgreSQL the rows are locked with ``FOR UPDATE SKIP LOCKED`` so several servers can
        share one queue; SQLite has one writer, so the same statement is already exclusive.
        """
        return await self._call(self._claim_runs, limit)

    def _claim_runs(self, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        with self._sessions.begin() as s:
            # Look a little past `limit`: runs held back by their trigger's own limit are passed.
            query = (
                select(Run.id, Run.pipeline_schedule_id, Run.trigger_settings)
                .where(Run.status == "initial")
                .order_by(Run.id)
                .limit(limit + 100)
            )
            if not self.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            candidates = list(s.execute(query))
            limited = {
                c.pipeline_schedule_id
                for c in candidates
                if (c.trigger_settings or {}).get("pipeline_run_limit")
            }
            running: dict[int | None, int] = {}
            if limited:
                running = dict(
                    s.execute(
                        select(Run.pipeline_schedule_id, func.count(Run.id))
                        .where(Run.pipeline_schedule_id.in_(limited), Run.status == "running")
                        .group_by(Run.pipeline_schedule_id)
                    ).all()
                )
            ids: list[int] = []
            for c in candidates:
                cap = (c.trigger_settings or {}).get("pipeline_run_limit")
                if cap:
                    if running.get(c.pipeline_schedule_id, 0) >= cap:
                        continue
                    running[c.pipeline_schedule_id] = running.get(c.pipeline_schedule_id, 0) + 1
                ids.append(c.id)
                if len(ids) == limit:
                    break
            if not ids:
                return []
            now = utcnow()
            s.execute(
                update(Run)
                .where(Run.id.in_(ids), Run.status == "initial")
                .values(status="running", started_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            claimed = s.scalars(
                select(Run).where(Run.id.in_(ids)).order_by(Run.id),
                execution_options={"populate_existing": True},
            )
            return [self._plan(s, run) for run in claimed]

    async def update_run(self, run_id: int, values: dict[str, Any]) -> dict[str, Any] | None:
        """Write columns of a run; returns the updated run."""
        return await self._call(self._update_run, run_id, values)

    def _update_run(self, run_id: int, values: dict[str, Any]) -> dict[str, Any] | None:
        with self._sessions.begin() as s:
            run = s.get(Run, run_id)
            if run is None:
                return None
            for key, value in values.items():
                setattr(run, key, value)
            run.updated_at = utcnow()
            s.flush()
            return run_to_dict(run)

    async def transition_run(
        self,
        run_id: int,
        allowed_from: Iterable[str],
        values: dict[str, Any],
        with_blocks: bool = False,
    ) -> dict[str, Any] | None:
        """Write ``values`` only if the run's status is one of ``allowed_from`` (atomically).

        Returns the updated run (with its block runs and their outputs if ``with_blocks``), or
        None when the run is missing or in another status.
        """
        return await self._call(
            self._transition, Run, run_id, list(allowed_from), values, "", with_blocks
        )

    async def transition_block_run(
        self, block_run_id: int, allowed_from: Iterable[str], values: dict[str, Any], logs: str = ""
    ) -> dict[str, Any] | None:
        """As :meth:`transition_run`, for a block run; ``logs`` is appended to its log."""
        return await self._call(
            self._transition, BlockRun, block_run_id, list(allowed_from), values, logs
        )

    async def transition_block_runs(
        self, changes: list[tuple[int, list[str], dict[str, Any], str]]
    ) -> list[bool]:
        """Several block-run transitions ``(id, allowed_from, values, logs)`` in one transaction.

        Events of a run that arrive together (a fast block's start and end) cost one commit.
        Returns, per change, whether it applied.
        """
        return await self._call(self._transition_block_runs, changes)

    def _transition_block_runs(
        self, changes: list[tuple[int, list[str], dict[str, Any], str]]
    ) -> list[bool]:
        with self._sessions.begin() as s:
            return [
                self._update_if(s, BlockRun, row_id, allowed, values, logs)
                for row_id, allowed, values, logs in changes
            ]

    def _transition(
        self,
        model: type[Run | BlockRun],
        row_id: int,
        allowed_from: list[str],
        values: dict[str, Any],
        logs: str = "",
        with_blocks: bool = False,
    ) -> dict[str, Any] | None:
        with self._sessions.begin() as s:
            if not self._update_if(s, model, row_id, allowed_from, values, logs):
                return None
            row = s.get(model, row_id, populate_existing=True)
            assert row is not None
            if isinstance(row, BlockRun):
                return block_run_to_dict(row)
            assert isinstance(row, Run)
            data = run_to_dict(row)
            if with_blocks:
                data["block_runs"] = self._block_runs(s, [row_id], with_outputs=True)[row_id]
            return data

    @staticmethod
    def _update_if(
        s: Session,
        model: type[Run | BlockRun],
        row_id: int,
        allowed_from: list[str],
        values: dict[str, Any],
        logs: str,
    ) -> bool:
        values = {**values, "updated_at": utcnow()}
        if logs:
            values["logs"] = func.coalesce(BlockRun.logs, "") + logs
        changed = cast(
            CursorResult[Any],
            s.execute(
                update(model)
                .where(model.id == row_id, model.status.in_(allowed_from))
                .values(**values)
                .execution_options(synchronize_session=False)
            ),
        )
        return bool(changed.rowcount == 1)

    async def fail_interrupted_runs(self, reason: str) -> list[int]:
        """Runs left ``running`` by a server that stopped: mark them failed with ``reason``."""
        return await self._call(self._fail_interrupted_runs, reason)

    def fail_interrupted_runs_now(self, reason: str) -> list[int]:
        """:meth:`fail_interrupted_runs`, blocking (at start-up, before the server listens)."""
        return self._guarded(self._fail_interrupted_runs, (reason,))

    def _fail_interrupted_runs(self, reason: str) -> list[int]:
        with self._sessions.begin() as s:
            runs = list(s.scalars(select(Run).where(Run.status == "running")))
            now = utcnow()
            for run in runs:
                run.status = "failed"
                run.completed_at = now
                run.metrics = {**(run.metrics or {}), "error": reason}
                for block in s.scalars(
                    select(BlockRun).where(
                        BlockRun.pipeline_run_id == run.id, BlockRun.status.not_in(BLOCK_FINISHED)
                    )
                ):
                    block.status = "failed" if block.status == "running" else "cancelled"
                    block.completed_at = now
                    if block.status == "failed":
                        block.metrics = {"error": {"message": reason, "type": "ServerStopped"}}
            return [r.id for r in runs]

    # -- block runs --------------------------------------------------------------------------

    async def create_block_runs(
        self, run_id: int, block_uuids: Iterable[str]
    ) -> list[dict[str, Any]]:
        """Create one ``initial`` block run per block; returns them in the given order."""
        return await self._call(self._create_block_runs, run_id, list(block_uuids))

    def _create_block_runs(self, run_id: int, block_uuids: list[str]) -> list[dict[str, Any]]:
        with self._sessions.begin() as s:
            blocks = [BlockRun(pipeline_run_id=run_id, block_uuid=u) for u in block_uuids]
            s.add_all(blocks)
            s.flush()
            return [block_run_to_dict(b) for b in blocks]

    async def update_block_run(
        self, block_run_id: int, values: dict[str, Any], append_logs: str = ""
    ) -> dict[str, Any] | None:
        """Write columns of a block run, optionally appending to its logs."""
        return await self._call(self._update_block_run, block_run_id, values, append_logs)

    def _update_block_run(
        self, block_run_id: int, values: dict[str, Any], append_logs: str
    ) -> dict[str, Any] | None:
        with self._sessions.begin() as s:
            block = s.get(BlockRun, block_run_id)
            if block is None:
                return None
            for key, value in values.items():
                setattr(block, key, value)
            if append_logs:
                block.logs = (block.logs or "") + append_logs
            block.updated_at = utcnow()
            s.flush()
            return block_run_to_dict(block)

    async def list_block_runs(self, run_id: int) -> list[dict[str, Any]]:
        """Block runs of one run, in the order they were created (dependency order)."""
        return await self._read(
            lambda: self._with_session(lambda s: self._block_runs(s, [run_id])[run_id])
        )

    async def get_block_run(self, block_run_id: int) -> dict[str, Any] | None:
        """A block run with its logs and outputs, or None."""
        return await self._read(self._get_block_run, block_run_id)

    def _get_block_run(self, block_run_id: int) -> dict[str, Any] | None:
        with self._sessions() as s:
            block = s.get(BlockRun, block_run_id)
            if block is None:
                return None
            data = block_run_to_dict(block)
            data["logs"] = block.logs or ""
            data["outputs"] = block.outputs or []
            return data

    async def block_runs_with_logs(self, run_ids: list[int]) -> list[dict[str, Any]]:
        """Block runs of several runs, logs included (for the pipeline logs route)."""
        return await self._read(self._block_runs_with_logs, run_ids)

    def _block_runs_with_logs(self, run_ids: list[int]) -> list[dict[str, Any]]:
        with self._sessions() as s:
            rows = s.scalars(
                select(BlockRun).where(BlockRun.pipeline_run_id.in_(run_ids)).order_by(BlockRun.id)
            )
            return [{**block_run_to_dict(b), "logs": b.logs or ""} for b in rows]

    def _with_session(self, fn: Callable[[Session], T]) -> T:
        with self._sessions() as s:
            return fn(s)

    @staticmethod
    def _block_runs(
        s: Session, run_ids: list[int], with_outputs: bool = False
    ) -> dict[int, list[dict[str, Any]]]:
        found: dict[int, list[dict[str, Any]]] = {i: [] for i in run_ids}
        for block in s.scalars(
            select(BlockRun).where(BlockRun.pipeline_run_id.in_(run_ids)).order_by(BlockRun.id)
        ):
            row = block_run_to_dict(block)
            if with_outputs:
                row["outputs"] = block.outputs or []
            found[block.pipeline_run_id].append(row)
        return found

    # -- retention ---------------------------------------------------------------------------
    # The SQL of ``retention.RetentionPolicy``, and reading runs by id. Every batch is its own
    # transaction of at most ``limit`` runs, so a big backlog never holds the database long;
    # only finished runs are touched, re-checked (and locked on PostgreSQL) in the transaction
    # that removes them, so a run put back in the queue meanwhile (``retry_blocks``) stays.

    async def get_runs(
        self, run_ids: Iterable[int], pipeline_uuid: str | None = None
    ) -> list[dict[str, Any]]:
        """Runs by id, newest first (optionally only those of one pipeline); missing ids are left
        out. Block runs are not included."""
        return await self._read(self._get_runs, sorted(set(run_ids)), pipeline_uuid)

    def _get_runs(self, run_ids: list[int], pipeline_uuid: str | None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        with self._sessions() as s:
            for start in range(0, len(run_ids), 500):  # bounded IN lists on any database
                query = select(Run).where(Run.id.in_(run_ids[start : start + 500]))
                if pipeline_uuid is not None:
                    query = query.where(Run.pipeline_uuid == pipeline_uuid)
                found += [run_to_dict(r) for r in s.scalars(query)]
        return sorted(found, key=lambda r: -int(r["id"]))

    async def retention_cutoffs(
        self, keep: int, notebooks: bool = False
    ) -> list[tuple[int | None, int]]:
        """Per trigger (``None``: the runs without one) that has more than ``keep`` finished runs
        (with an executed notebook, if ``notebooks``): ``(trigger id, id of the oldest of its
        newest ``keep``)``. Its finished runs with a smaller id are past the limit."""
        return await self._call(self._retention_cutoffs, keep, notebooks)

    def _retention_cutoffs(self, keep: int, notebooks: bool) -> list[tuple[int | None, int]]:
        cutoffs: list[tuple[int | None, int]] = []
        with self._sessions() as s:
            groups = list(s.scalars(select(Run.pipeline_schedule_id).distinct()))
            for group in groups:
                # One indexed range per trigger (its index ends with the row id), not a window
                # function over the whole table.
                query = (
                    select(Run.id)
                    .where(self._retention_group(group), Run.status.in_(RUN_FINISHED))
                    .order_by(Run.id.desc())
                    .offset(keep - 1)
                    .limit(1)
                )
                if notebooks:
                    query = query.where(Run.executed_notebook.is_not(None))
                kth = s.scalar(query)
                if kth is not None:
                    cutoffs.append((group, kth))
        return cutoffs

    async def purge_runs_beyond(
        self, trigger_id: int | None, below_id: int, limit: int, notebooks: bool = False
    ) -> tuple[list[int], int, list[str]]:
        """Up to ``limit`` finished runs of a trigger (``None``: without one) with an id below
        ``below_id``, deleted with their block runs, or with ``notebooks`` only their executed
        notebooks forgotten (``executed_notebook`` set to null).

        Returns the runs' ids, the number of block runs deleted and the notebook paths the runs
        had (for the caller to delete the files). No ids: nothing is left to do.
        """
        return await self._call(self._purge_runs_beyond, trigger_id, below_id, limit, notebooks)

    def _purge_runs_beyond(
        self, trigger_id: int | None, below_id: int, limit: int, notebooks: bool
    ) -> tuple[list[int], int, list[str]]:
        with self._sessions.begin() as s:
            query = (
                select(Run.id)
                .where(
                    self._retention_group(trigger_id),
                    Run.id < below_id,
                    Run.status.in_(RUN_FINISHED),
                )
                .order_by(Run.id)
                .limit(limit)
            )
            if notebooks:
                query = query.where(Run.executed_notebook.is_not(None))
            return self._purge(s, list(s.scalars(query)), notebooks)

    async def purge_runs_finished_before(
        self, before: datetime, after_id: int, limit: int, notebooks: bool = False
    ) -> tuple[list[int], int, list[str], int | None]:
        """As :meth:`purge_runs_beyond`, for the finished runs that ended before ``before``
        (``completed_at``, else ``created_at``), among the ``limit`` runs after ``after_id``.

        Also returns where the next batch starts (an id for ``after_id``), or None when no later
        run can qualify: a run created at ``before`` or later ends the walk (ids grow with
        ``created_at``), so a sweep reads the old rows once, never the whole table.
        """
        return await self._call(
            self._purge_runs_finished_before, before, after_id, limit, notebooks
        )

    def _purge_runs_finished_before(
        self, before: datetime, after_id: int, limit: int, notebooks: bool
    ) -> tuple[list[int], int, list[str], int | None]:
        with self._sessions.begin() as s:
            window = s.execute(
                select(Run.id, Run.status, Run.created_at, Run.completed_at, Run.executed_notebook)
                .where(Run.id > after_id)
                .order_by(Run.id)
                .limit(limit)
            ).all()
            ids = [
                r.id
                for r in window
                if r.status in RUN_FINISHED
                and (r.completed_at or r.created_at) < before
                and (r.executed_notebook is not None or not notebooks)
            ]
            done = len(window) < limit or any(r.created_at >= before for r in window)
            purged = self._purge(s, ids, notebooks)
            return (*purged, None if done else window[-1].id)

    @staticmethod
    def _retention_group(trigger_id: int | None) -> Any:
        if trigger_id is None:
            return Run.pipeline_schedule_id.is_(None)
        return Run.pipeline_schedule_id == trigger_id

    def _purge(
        self, s: Session, candidates: list[int], notebooks: bool
    ) -> tuple[list[int], int, list[str]]:
        """Delete (or, with ``notebooks``, clear the executed notebook of) the candidates that
        are still finished, inside the caller's transaction."""
        if not candidates:
            return [], 0, []
        query = select(Run.id, Run.executed_notebook).where(
            Run.id.in_(candidates), Run.status.in_(RUN_FINISHED)
        )
        if not self.is_sqlite:  # SQLite has one writer: the transaction is already exclusive
            query = query.with_for_update()
        rows = s.execute(query).all()
        ids = [r.id for r in rows]
        paths = [r.executed_notebook for r in rows if r.executed_notebook]
        if not ids:
            return [], 0, []
        runs = RUNS
        if notebooks:
            s.execute(
                runs.update()
                .where(runs.c.id.in_(ids))
                .values(executed_notebook=None, updated_at=utcnow())
            )
            return ids, 0, paths
        # Block runs first: their foreign key cascades only where the database enforces it.
        blocks = BLOCK_RUNS
        deleted = cast(
            CursorResult[Any],
            s.execute(blocks.delete().where(blocks.c.pipeline_run_id.in_(ids))),
        )
        s.execute(runs.delete().where(runs.c.id.in_(ids)))
        return ids, deleted.rowcount, paths

    async def ping(self) -> None:
        """Round-trip to the database (used by tests and health checks)."""
        await self._call(lambda: self._with_session(lambda s: s.execute(text("SELECT 1"))))


@dataclass
class _TriggerCall:
    """A trigger call waiting for the database thread (see :meth:`Store.create_run_for_trigger`)."""

    trigger_id: int
    admit: Callable[[dict[str, Any] | None], dict[str, Any]]
    future: asyncio.Future[NewRun]


def _settle_trigger_calls(
    batch: list[_TriggerCall], outcomes: list[NewRun | BaseException]
) -> None:
    for call, outcome in zip(batch, outcomes, strict=True):
        if call.future.done():  # its caller went away; the run stays committed
            continue
        if isinstance(outcome, BaseException):
            call.future.set_exception(outcome)
        else:
            call.future.set_result(outcome)


# The trigger call's statements, built once (building and keying one costs more than running it).
_TRIGGER_BY_ID = select(TRIGGERS).where(TRIGGERS.c.id == bindparam("id"))
_ANY_WAITING_RUN = select(Run.id).where(Run.status == "initial").limit(1)
_INSERT_RUN = insert(RUNS)
_INSERT_BLOCK_RUN = insert(BLOCK_RUNS)


def _sqlite_file(engine: Engine) -> str | None:
    """The file of a SQLite engine, absolute; None for an in-memory database."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


def _create_private_file(path: str) -> None:
    """Create the database file readable by its owner only (it holds trigger tokens).

    An existing file readable by others is made private; a folder others may write to is
    named in a warning (they could replace the file).
    """
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
    folder_mode = os.stat(folder).st_mode
    if folder_mode & 0o022 and not folder_mode & stat.S_ISVTX:
        logging.getLogger(__name__).warning(
            "jupyter-mage: the database folder %s is writable by other users", folder
        )
