"""Servers sharing one database: who holds which run, and what happens to a gone server's runs.

A server registers itself (``mage_server``), claims runs under its id (``Run.owner``) and keeps
its row fresh with a heartbeat. A server is gone when its heartbeat is older than its lease, or,
seen from the same host, when its process no longer exists (found at once, without waiting for
the lease; a process that still exists gets ten leases). Its ``running`` runs are then failed with the reason, by whichever server sees it
first; they are never put back in the queue: the gone server's kernels may still be executing
them (kernels outlive a killed server), and a second execution would run blocks twice.

Cancels asked for through another server are recorded on the run (``cancel_requested``); the
owner reads them and interrupts its kernel. Runs that end on another server are read back for
the ``?wait`` and cancel answers of this one.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import delete, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from ..records import RunRecord
from ..statuses import BLOCK_FINISHED, RUN_FINISHED, BlockRunStatus, RunStatus
from .database import reads, writes
from .notifications import Notice, announce
from .runs import RunStore
from .schema import BlockRun, Run, Server, utcnow
from .views import run_to_dict

#: This process, as other servers on the same host see it.
HOST = socket.gethostname()


class ServerStore(RunStore):
    """The registry of servers, the recovery of gone servers' runs, cross-server control."""

    @writes
    def register_server(self, server_id: str, lease_seconds: float) -> None:
        """Add (or renew) this server's row: alive from now on, for ``lease_seconds``."""
        with self._sessions.begin() as s:
            _upsert_server(s, server_id, lease_seconds)

    @writes
    def heartbeat(self, server_id: str, lease_seconds: float) -> bool:
        """Renew this server's lease; False if its row was gone (then it is registered again:
        another server took it for gone, and failed the runs it held then)."""
        with self._sessions.begin() as s:
            renewed = cast(
                CursorResult[Any],
                s.execute(
                    update(Server)
                    .where(Server.id == server_id)
                    .values(heartbeat_at=utcnow(), lease_seconds=lease_seconds)
                ),
            )
            if renewed.rowcount == 1:
                return True
            _upsert_server(s, server_id, lease_seconds)
            return False

    @writes
    def deregister_server(self, server_id: str) -> None:
        """This server stops: its row goes (its runs were ended by the engine)."""
        with self._sessions.begin() as s:
            s.execute(delete(Server).where(Server.id == server_id))

    def recover_at_start_now(self, server_id: str, lease_seconds: float, reason: str) -> list[int]:
        """Register this server and fail the ``running`` runs no live server holds: this
        server's own from an earlier life, runs without an owner (an earlier version), and
        those of gone servers. Their ids.

        Blocking: it runs at start-up, before the server listens.
        """
        return self._guarded(self._recover, (server_id, reason, lease_seconds))

    @writes
    def reap(self, server_id: str) -> list[int]:
        """Fail the ``running`` runs of servers that are gone; their ids."""
        return self._recover(server_id, "", None)

    def _recover(self, server_id: str, reason: str, starting_lease: float | None) -> list[int]:
        now = utcnow()
        failed: list[int] = []
        with self._sessions.begin() as s:
            if starting_lease is not None:
                _upsert_server(s, server_id, starting_lease)
            query = select(Server).where(Server.id != server_id)
            if not self.is_sqlite:  # two servers reaping at once: each takes other rows
                query = query.with_for_update(skip_locked=True)
            gone = [row for row in s.scalars(query) if _is_gone(row, now)]
            for row in gone:
                why = f"the server running it ({row.id}) stopped: " + (
                    "its process exited"
                    if row.host == HOST and not _process_exists(row.pid)
                    else f"no heartbeat for {(now - row.heartbeat_at).total_seconds():.0f} s"
                )
                failed += _fail_running(s, [Run.owner == row.id], why, now)
                s.delete(row)
            if starting_lease is not None:
                known = select(Server.id)
                failed += _fail_running(
                    s,
                    [(Run.owner == server_id) | Run.owner.is_(None) | Run.owner.not_in(known)],
                    reason,
                    now,
                )
        return failed

    @writes
    def request_cancel(self, run_id: int) -> bool:
        """Ask the server running a run to cancel it; False if it is not running."""
        with self._sessions.begin() as s:
            asked = cast(
                CursorResult[Any],
                s.execute(
                    update(Run)
                    .where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                    .values(cancel_requested=True)
                ),
            )
            if asked.rowcount == 1 and not self.is_sqlite:
                announce(s, Notice.CANCEL)
            return bool(asked.rowcount == 1)

    @reads
    def watch_remote(
        self, cancel_ids: list[int], watched_ids: list[int]
    ) -> tuple[list[int], list[RunRecord]]:
        """One read for both questions a server asks of others' work: which of ``cancel_ids``
        (its own runs) were asked to cancel, and which of ``watched_ids`` (runs it waits for)
        have ended, block runs and outputs included."""
        with self._sessions() as s:
            cancels: list[int] = []
            if cancel_ids:
                cancels = list(
                    s.scalars(
                        select(Run.id).where(Run.id.in_(cancel_ids), Run.cancel_requested.is_(True))
                    )
                )
            ended: list[RunRecord] = []
            if watched_ids:
                runs = list(
                    s.scalars(
                        select(Run).where(Run.id.in_(watched_ids), Run.status.in_(RUN_FINISHED))
                    )
                )
                blocks = self._block_runs(s, [r.id for r in runs], with_outputs=True)
                for run in runs:
                    record = run_to_dict(run)
                    record["block_runs"] = blocks[run.id]
                    ended.append(record)
            return cancels, ended


def _upsert_server(s: Session, server_id: str, lease_seconds: float) -> None:
    now = utcnow()
    s.merge(
        Server(
            id=server_id,
            host=HOST,
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
            lease_seconds=lease_seconds,
        )
    )


def _is_gone(server: Server, now: datetime) -> bool:
    silent = now - server.heartbeat_at
    if server.host == HOST:
        # Its process tells: gone at once when it exited; while it exists, a late heartbeat
        # is a busy event loop more likely than a hung server, so it gets ten leases.
        if not _process_exists(server.pid):
            return True
        return silent > timedelta(seconds=10 * server.lease_seconds)
    return silent > timedelta(seconds=server.lease_seconds)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fail_running(s: Session, where: list[Any], reason: str, now: datetime) -> list[int]:
    """Fail the ``running`` runs matching ``where`` with ``reason``; the block that was running
    fails with it, the blocks that had not ended are cancelled."""
    runs = list(s.scalars(select(Run).where(Run.status == RunStatus.RUNNING, *where)))
    for run in runs:
        run.status = RunStatus.FAILED
        run.completed_at = now
        run.metrics = {**(run.metrics or {}), "error": reason}
        for block in s.scalars(
            select(BlockRun).where(
                BlockRun.pipeline_run_id == run.id, BlockRun.status.not_in(BLOCK_FINISHED)
            )
        ):
            running = block.status == BlockRunStatus.RUNNING
            block.status = BlockRunStatus.FAILED if running else BlockRunStatus.CANCELLED
            block.completed_at = now
            if running:
                block.metrics = {"error": {"message": reason, "type": "ServerStopped"}}
    if runs and s.get_bind().dialect.name == "postgresql":
        announce(s, Notice.ENDED)
    return [r.id for r in runs]
