"""Storage: triggers, runs and block runs in SQL (SQLite by default, PostgreSQL to share work).

One concern per module:

- :mod:`.schema`: the tables, statuses and migrations;
- :mod:`.views`: rows as the API shows them (Mage's field names);
- :mod:`.database`: the connection, its threads, migrating, and whether it can be used now;
- :mod:`.triggers`: triggers; :mod:`.runs`: reading runs and block runs;
- :mod:`.queue`: accepting runs (group commit), claims, status transitions, recovery;
- :mod:`.retention`: removing old runs and executed notebooks;
- :mod:`.servers`: servers sharing the database, their runs, and control across them.

:class:`Store` is all of them: every public method is a coroutine that runs its SQL in the
database's own threads, so the event loop never waits on the database.
"""

from __future__ import annotations

from .database import DatabaseUnavailable, unavailable_reason
from .queue import NewRun, RunQueue
from .retention import RetentionStore
from .schema import MIGRATIONS, new_token, utcnow
from .servers import ServerStore
from .views import block_run_to_dict, format_time, run_to_dict, trigger_to_dict


class Store(RunQueue, RetentionStore, ServerStore):
    """All SQL of jupyter-mage, behind coroutines.

    Parameters
    ----------
    db_url
        A SQLAlchemy URL. SQLite files get WAL mode, one writer thread and two reader threads;
        other databases get a small pool.
    busy_timeout
        Seconds a call waits for SQLite's write lock before the database counts as unavailable.
    server_id
        The server this store claims runs for (see :mod:`.servers`); None: claims have no owner.
    """


__all__ = [
    "MIGRATIONS",
    "DatabaseUnavailable",
    "NewRun",
    "Store",
    "block_run_to_dict",
    "format_time",
    "new_token",
    "run_to_dict",
    "trigger_to_dict",
    "unavailable_reason",
    "utcnow",
]
