"""Announcements between servers on one PostgreSQL database: ``NOTIFY`` and ``LISTEN``.

A server that queues a run another may claim, ends a run others may wait for, or asks for a
cancel that another server must carry out, says so with ``pg_notify`` in the same transaction
(PostgreSQL delivers it at commit, and once per transaction for equal payloads). Every server
listens on one connection of its own and wakes the loop concerned at once: the dispatcher for
``queued``, the presence loop for ``ended`` and ``cancel``. The notice only wakes; what changed
is read from the tables as before, so a notice lost while the listener reconnects costs a
poll interval, never a run. SQLite has no such channel: there the loops poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

#: The channel of one database (a schema does not separate it: a notice of another schema's
#: servers only wakes a loop that then finds nothing).
CHANNEL = "jupyter_mage"


class Notice(StrEnum):
    """What a notice says happened."""

    #: A run was queued (``initial``): a server with a free slot may claim it.
    QUEUED = "queued"
    #: A run ended: a server waiting for it may answer.
    ENDED = "ended"
    #: A cancel was asked for a run another server may be executing.
    CANCEL = "cancel"


def announce(s: Session, notice: Notice) -> None:
    """Send ``notice`` when the transaction of ``s`` commits (PostgreSQL only)."""
    s.execute(select(func.pg_notify(CHANNEL, notice.value)))


def libpq_url(url: URL) -> str:
    """The SQLAlchemy URL as libpq reads it (driver name dropped, password kept)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """Listens on :data:`CHANNEL` and calls the handler of each notice, reconnecting with
    backoff when the connection is lost.

    Parameters
    ----------
    url
        The database (a libpq URL).
    handlers
        What to call for each kind of notice (plain callables: they only wake loops).
    """

    def __init__(
        self, url: str, handlers: dict[Notice, Callable[[], None]], log: logging.Logger
    ) -> None:
        self.url = url
        self.handlers = handlers
        self.log = log
        #: Set while the connection listens; loops may poll less often then.
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening (on the server's event loop)."""
        self._task = asyncio.ensure_future(self._listen_forever())

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _listen_forever(self) -> None:
        import psycopg  # the postgres extra; only a server on PostgreSQL gets here

        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    delay = 0.5
                    # Wake everyone once: notices sent while not listening are lost.
                    for wake in self.handlers.values():
                        wake()
                    async for notify in conn.notifies():
                        # Notices are StrEnum members: their payload string finds them.
                        handler = self.handlers.get(notify.payload)  # type: ignore[call-overload]
                        if handler is not None:
                            handler()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                self.log.warning(
                    "jupyter-mage: listening for other servers' notices stopped (%s); "
                    "polling until it is back",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
            finally:
                self.listening.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
