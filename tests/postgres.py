"""The suite's PostgreSQL pass: ``JUPYTER_MAGE_TEST_DB_URL`` names a server, each test gets an
empty schema of its own on it.

``.ci/postgres start`` starts a throwaway server and prints its URL::

    JUPYTER_MAGE_TEST_DB_URL=$(.ci/postgres url) python3 -m pytest

Unset (the default), every test gets a SQLite file in its ``tmp_path``, as always.

Isolation is one schema per test, named in the URL's search path
(``?options=-csearch_path%3Dmage_test_N``): tables, indexes and sequences are the test's own,
and the servers of the test see nothing else. Creating and dropping a schema takes about 6 ms,
a database per test about 200 ms (``CREATE DATABASE`` copies ``template0``): 55 s more over the
suite. What a schema does not separate is database-wide: advisory locks and LISTEN/NOTIFY
channels. The tests run one at a time and stop their servers at teardown, so nothing of one
test is left to meet the next; a parallel run (pytest-xdist) would need a database per worker.
"""

from __future__ import annotations

import itertools
import os

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

#: The environment variable of the PostgreSQL pass: a SQLAlchemy URL (``postgresql+psycopg://``).
ENV = "JUPYTER_MAGE_TEST_DB_URL"

#: The server of the PostgreSQL pass; None on the default (SQLite) pass.
SERVER_URL: str | None = os.environ.get(ENV) or None

_numbers = itertools.count(1)
_admin: Engine | None = None
#: Schemas handed out and not dropped yet.
_released: list[str] = []


def _admin_engine() -> Engine:
    """One autocommit engine for creating and dropping the tests' schemas."""
    global _admin
    if _admin is None:
        assert SERVER_URL is not None
        url = make_url(SERVER_URL)
        if not url.drivername.startswith("postgresql"):
            raise RuntimeError(f"{ENV} must be a postgresql:// URL, not {url.drivername}")
        _admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    return _admin


def fresh_schema() -> str:
    """An empty schema on the pass's server; a URL that uses it.

    It is dropped at the next call or at the end of the session (:func:`drop_released`), not
    at the test's teardown: pytest-jupyter stops a test's server in its autouse
    ``jp_server_cleanup``, after every other fixture, and the server still writes (its row
    in ``mage_server`` goes) as it stops.
    """
    assert SERVER_URL is not None
    drop_released()
    name = f"mage_test_{os.getpid()}_{next(_numbers)}"
    with _admin_engine().connect() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))  # a killed earlier run's
        conn.execute(text(f"CREATE SCHEMA {name}"))
    _released.append(name)
    url = make_url(SERVER_URL)
    options = f"{url.query['options']} " if "options" in url.query else ""
    return url.update_query_dict({"options": f"{options}-csearch_path={name}"}).render_as_string(
        hide_password=False
    )


def drop_released() -> None:
    """Drop the schemas of the tests before (their servers have stopped)."""
    if not _released:
        return
    with _admin_engine().connect() as conn:
        conn.execute(text("SET lock_timeout = '10s'"))  # a server left running: fail, not hang
        while _released:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {_released[-1]} CASCADE"))
            _released.pop()


def describe() -> str:
    """The pass's database for pytest's header: the server without its password."""
    if SERVER_URL is None:
        return "SQLite (a file per test; JUPYTER_MAGE_TEST_DB_URL unset)"
    return f"PostgreSQL {make_url(SERVER_URL).render_as_string(hide_password=True)}"
