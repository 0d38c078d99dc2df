"""The database connection: its threads, its migrations, and whether it can be used now.

Every call runs in the store's own worker thread(s), so the tornado event loop never waits on
the database: one writer thread and two reader threads for SQLite (one writer at a time; reads
never wait behind a writer, thanks to WAL), a small pool for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import stat
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.exc import (
    DatabaseError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.orm import sessionmaker

from .schema import MIGRATIONS, SCHEMA, SchemaVersion

T = TypeVar("T")
P = ParamSpec("P")
#: The PostgreSQL advisory lock that serialises migrations ("jmag" in ASCII).
MIGRATION_LOCK = 0x6A6D6167
D = TypeVar("D", bound="Database")


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


def writes(
    method: Callable[Concatenate[D, P], T],
) -> Callable[Concatenate[D, P], Coroutine[Any, Any, T]]:
    """A store method written as plain synchronous SQL, awaited in the writer thread.

    The one bridge between the event loop and the database: ``await store.method(...)`` runs
    the body in :class:`Database`'s writer thread, with the checks of :meth:`Database._guarded`
    (migrated, file still there, driver errors turned into :class:`DatabaseUnavailable`).
    """

    @functools.wraps(method)
    async def in_writer_thread(self: D, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._call(functools.partial(method, self, *args, **kwargs))

    return in_writer_thread


def reads(
    method: Callable[Concatenate[D, P], T],
) -> Callable[Concatenate[D, P], Coroutine[Any, Any, T]]:
    """As :func:`writes`, for a read-only method: it runs in a reader thread (SQLite's readers
    never wait behind a writer that waits for the file's lock)."""

    @functools.wraps(method)
    async def in_reader_thread(self: D, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._read(functools.partial(method, self, *args, **kwargs))

    return in_reader_thread


class Database:
    """The connection to the database, its threads, and its health.

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
        elif self.engine.dialect.name == "postgresql":
            event.listen(self.engine, "connect", self._postgres_settings)
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
        self._ready_lock = threading.Lock()
        self._identity: tuple[int, int] | None = None
        #: The schema is migrated (a database without a file has no identity to tell it).
        self._migrated = False
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
        if self._identity is not None or (self.path is None and self._migrated):
            return
        with self._ready_lock:
            if self._identity is not None or (self.path is None and self._migrated):
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
            self._migrated = True
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
                if conn.dialect.name == "postgresql":
                    # Servers starting together on one database migrate one after the other:
                    # the next one sees the tables and the version the first one wrote.
                    conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
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

    def _postgres_settings(self, dbapi_connection: Any, _record: Any) -> None:
        # As SQLite's busy timeout: a lock held elsewhere (another server's migration, a DBA's
        # ALTER TABLE) makes a call unavailable (503) after a while, never a thread that waits
        # for ever. A listener, not connect_args: those would replace the URL's own options.
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {int(self.busy_timeout * 1000)}")
        dbapi_connection.commit()

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
