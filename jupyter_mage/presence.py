"""This server among others on one database: its heartbeat, the reaper, and others' work.

One loop per server. It renews the server's lease (every third of it) and fails the runs of
servers that are gone (see :mod:`jupyter_mage.storage.servers`). While this server executes
runs or waits for some (``?wait``, cancel), it also asks the database what other servers did: a
cancel asked for one of its runs (it then interrupts the kernel, as a local cancel does), or the
end of a run it waits for. On PostgreSQL it asks when another server's notice says so
(:mod:`jupyter_mage.storage.notifications`), and once per heartbeat in case a notice was lost;
on SQLite every ``remote_interval`` seconds. Runs that end here need none of this: the status
board tells their waiters at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .engine import KernelEngine
from .state import StatusBoard
from .storage import DatabaseUnavailable, Store


class ServerPresence:
    """Heartbeat, reaper and cross-server control for one server.

    Parameters
    ----------
    server_id
        This server's id (``Run.owner`` of the runs it claims).
    lease
        Seconds without a heartbeat after which other servers count this one as gone.
    remote_interval
        Seconds between reads of other servers' work while there is some to look for.
    """

    def __init__(
        self,
        store: Store,
        board: StatusBoard,
        engine: KernelEngine,
        server_id: str,
        lease: float,
        remote_interval: float,
        log: logging.Logger,
    ) -> None:
        self.store = store
        self.board = board
        self.engine = engine
        self.server_id = server_id
        self.lease = lease
        self.remote_interval = remote_interval
        self.log = log
        self._wakeup = asyncio.Event()
        #: Set while other servers' notices arrive (PostgreSQL's LISTEN): then the reads of
        #: their work are a safety net, once per heartbeat, not every ``remote_interval``.
        self.notified: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._cancelling: set[int] = set()  # cancels from elsewhere already acted on

    def start(self) -> None:
        """Start the loop (on the server's event loop)."""
        self._task = asyncio.ensure_future(self._loop())
        self.board.on_watch = self.wake

    def wake(self) -> None:
        """Something to look for appeared (a waiter): look now, then every interval."""
        self._wakeup.set()

    async def stop(self) -> None:
        """Stop the loop and leave: this server's row goes (its runs have ended)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(DatabaseUnavailable):
            await self.store.deregister_server(self.server_id)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            if loop.time() >= next_beat:
                next_beat = loop.time() + self.lease / 3
                await self._beat()
            running, watched = self.engine.active_run_ids(), self.board.watched_ids()
            if running or watched:
                await self._look_elsewhere(running, watched)
            timeout = next_beat - loop.time()
            if (running or watched) and not (self.notified and self.notified.is_set()):
                timeout = self.remote_interval
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), max(timeout, 0.0))
            self._wakeup.clear()

    async def _beat(self) -> None:
        try:
            if not await self.store.heartbeat(self.server_id, self.lease):
                self.log.warning(
                    "jupyter-mage: this server's lease had expired (another server took it for "
                    "gone and failed the runs it held then)"
                )
            reaped = await self.store.reap(self.server_id)
        except DatabaseUnavailable as exc:
            self.log.warning("jupyter-mage: heartbeat waits for the database: %s", exc)
            return
        except Exception:
            self.log.exception("jupyter-mage: heartbeat failed")
            return
        if reaped:
            self.log.warning(
                "jupyter-mage: %d run(s) of stopped servers marked failed: %s",
                len(reaped),
                ", ".join(map(str, reaped)),
            )

    async def _look_elsewhere(self, running: list[int], watched: list[int]) -> None:
        try:
            cancels, ended = await self.store.watch_remote(running, watched)
        except DatabaseUnavailable:
            return  # the next look tries again
        except Exception:
            self.log.exception("jupyter-mage: reading other servers' work failed")
            return
        self._cancelling &= set(running)
        for run_id in cancels:
            if run_id not in self._cancelling:
                self._cancelling.add(run_id)
                self.log.info("run %s: cancelled through another server", run_id)
                try:
                    await self.engine.cancel(run_id)  # an interrupt request: it returns at once
                except Exception:  # the loop must live on: it carries this server's heartbeat
                    self.log.exception("run %s: cancel failed", run_id)
        for run in ended:
            self.board.resolve(run)
