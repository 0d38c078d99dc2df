"""``MageApp``: the jupyter-server extension that wires storage, engine and routes together."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
from typing import Any

from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Int, Unicode, default

from . import gateway, logscrub
from .dispatcher import Dispatcher
from .engine import KernelEngine
from .forking import PROVISIONER_NAME
from .handlers import ROUTES
from .presence import ServerPresence
from .repository import PipelineRepository
from .retention import RetentionPolicy
from .runs import RunService
from .state import StatusBoard
from .storage import DatabaseUnavailable, Store
from .storage.notifications import Listener, Notice, libpq_url
from .storage.servers import HOST


class MageApp(ExtensionApp):
    """Trigger notebook pipelines over HTTP, in Mage's API shape."""

    name = "jupyter_mage"
    description = __doc__
    load_other_extensions = True
    # Configurable from the command line too: --RetentionPolicy.runs_days=30
    classes = [*ExtensionApp.classes, RetentionPolicy]

    db_url = Unicode(
        help=(
            "SQLAlchemy URL of the database holding triggers, runs and logs. Default: a SQLite "
            "file in the Jupyter data dir. Use PostgreSQL (postgresql+psycopg://...) for several "
            "servers sharing one queue."
        )
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        return f"sqlite:///{os.path.join(jupyter_data_dir(), 'jupyter_mage.sqlite')}"

    db_busy_timeout = Float(
        5.0,
        help=(
            "Seconds a database call waits for SQLite's write lock held by another process "
            "before the request is answered 503 (Retry-After). The engine's own writes of "
            "block and run statuses are retried until they land."
        ),
    ).tag(config=True)

    max_concurrent_runs = Int(
        4,
        help="Runs executed at once by this server; later runs wait in the queue as 'initial'.",
    ).tag(config=True)

    kernel_pool_size = Int(
        1,
        help=(
            "Kernels kept started and ready, per kernel spec, so a run does not wait for a cold "
            "kernel (about 0.6 s). Each run still gets a kernel no other run has used. 0 starts "
            "a kernel per run. Idle pool kernels use memory (about 50 MB each)."
        ),
    ).tag(config=True)

    fork_kernels = Bool(
        True,
        help=(
            "Start the run pool's Python kernels by forking a process that has imported "
            "ipykernel already (about 40 ms of CPU instead of 250 ms). Each run still gets a "
            "process no other run used. Makes jupyter-mage's provisioner the server's default "
            "when none other is configured; it starts every other kernel (notebooks', other "
            "languages', unusual specs) exactly as jupyter_client's local provisioner does."
        ),
    ).tag(config=True)

    kernel_reuse = Bool(
        False,
        help=(
            "Reuse a run's kernel, reset, for the next run of the same pipeline. Faster (imports "
            "stay loaded) but runs are no longer isolated: module state, monkeypatches, threads "
            "and environment changes of one run are seen by the next. Off by default."
        ),
    ).tag(config=True)

    max_body_size = Int(
        10 * 1024 * 1024, help="Largest accepted request body, in bytes (larger: HTTP 413)."
    ).tag(config=True)

    max_wait_seconds = Float(
        300.0, help="Longest a trigger request may be held with ?wait=<seconds>."
    ).tag(config=True)

    server_id = Unicode(
        "",
        help=(
            "This server's id among servers sharing the database (the owner of the runs it "
            "claims). Default: host name, process id and a random suffix."
        ),
    ).tag(config=True)

    server_lease = Float(
        15.0,
        help=(
            "Seconds without a heartbeat (sent every third of it) after which the other servers "
            "sharing the database count this one as gone and fail the runs it held. A gone "
            "server on the same host is noticed at once (its process no longer exists)."
        ),
    ).tag(config=True)

    remote_poll_interval = Float(
        0.5,
        help=(
            "Seconds between reads of what other servers did while this one runs or waits for "
            "runs: cancels asked through them, and the ends of runs waited for here."
        ),
    ).tag(config=True)

    queue_poll_interval = Float(
        5.0,
        help=(
            "Seconds between checks of the queue for runs accepted by other servers. Runs accepted "
            "by this server start at once, without waiting for this."
        ),
    ).tag(config=True)

    gc_freeze_at_start = Bool(
        True,
        help=(
            "Move the objects alive once the server has started out of the garbage collector's "
            "reach (gc.freeze). A full collection otherwise walks them all, pausing every "
            "request for 100-200 ms under load. Objects frozen this way are never freed by the "
            "cycle collector (they live for the whole server anyway)."
        ),
    ).tag(config=True)

    _recovery: asyncio.Future[None] | None = None

    def initialize_settings(self) -> None:
        """Build the services handlers use (reached as ``self.extensionapp.<service>``)."""
        serverapp = self.serverapp
        assert serverapp is not None, "jupyter-mage runs as an extension of a Jupyter server"
        assert serverapp.kernel_manager is not None
        logscrub.install(
            logging.getLogger("tornado.access"),
            logging.getLogger("tornado.general"),
            logging.getLogger("tornado.application"),
            serverapp.log,
            self.log,
        )
        os.makedirs(jupyter_data_dir(), exist_ok=True)
        root_dir = serverapp.root_dir
        if not self.server_id:
            self.server_id = f"{HOST}-{os.getpid()}-{secrets.token_hex(3)}"
        self.store = Store(self.db_url, busy_timeout=self.db_busy_timeout, server_id=self.server_id)
        if self.store.unavailable:  # the routes still load, and answer 503 with the reason
            self.log.error("jupyter-mage: %s", self.store.unavailable)
        self.board = StatusBoard(self.store)
        self.repository = PipelineRepository(root_dir, contents_manager=serverapp.contents_manager)
        fork = self.fork_kernels and self._use_forking_provisioner()
        self.engine = KernelEngine(
            parent=self,
            store=self.store,
            board=self.board,
            repository=self.repository,
            kernel_manager=serverapp.kernel_manager,
            session_manager=serverapp.session_manager,
            pool_size=self.kernel_pool_size,
            reuse_kernels=self.kernel_reuse,
            fork_kernels=fork,
        )
        self.repository.exclude.append(self.engine.runs_path.resolve())
        self.dispatcher = Dispatcher(
            self.board,
            self.engine,
            max_concurrent_runs=self.max_concurrent_runs,
            poll_interval=self.queue_poll_interval,
            log=self.log,
        )
        self.runs = RunService(
            self.store, self.board, self.dispatcher, self.engine, self.repository
        )
        self.retention = RetentionPolicy(
            parent=self,
            store=self.store,
            root=self.repository.root,
            runs_path=self.engine.runs_path,
        )
        self.presence = ServerPresence(
            self.store,
            self.board,
            self.engine,
            self.server_id,
            self.server_lease,
            self.remote_poll_interval,
            self.log,
        )
        # On PostgreSQL, other servers' queued runs, ended runs and cancels arrive as notices.
        self.listener: Listener | None = None
        if self.store.engine.dialect.name == "postgresql":
            self.listener = Listener(
                libpq_url(self.store.engine.url),
                {
                    Notice.QUEUED: self.dispatcher.wake,
                    Notice.ENDED: self.presence.wake,
                    Notice.CANCEL: self.presence.wake,
                },
                self.log,
            )
            self.presence.notified = self.listener.listening
        self.log.info(
            "jupyter-mage: database %s; server id %s", _safe_url(self.db_url), self.server_id
        )
        self._recover()

    def _use_forking_provisioner(self) -> bool:
        """Make the forking provisioner the default, unless another one is configured."""
        serverapp = self.serverapp
        assert serverapp is not None
        if gateway.is_gateway(serverapp.kernel_manager):
            return False  # kernels start on the gateway, not here
        factory = KernelProvisionerFactory.instance(parent=serverapp.kernel_manager)
        if PROVISIONER_NAME not in factory.get_provisioner_entries():
            self.log.warning(
                "jupyter-mage: kernels are not forked: its provisioner is not installed "
                "(an entry point of the package; pip install jupyter_mage)"
            )
            return False
        if factory.default_provisioner_name == PROVISIONER_NAME:
            return True
        if factory.default_provisioner_name != "local-provisioner":
            self.log.info(
                "jupyter-mage: kernels are not forked: the default provisioner is %s",
                factory.default_provisioner_name,
            )
            return False
        factory.default_provisioner_name = PROVISIONER_NAME
        return True

    def initialize_handlers(self) -> None:
        """Mage's routes, relative to the server's base_url."""
        self.handlers.extend(ROUTES)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Start the queue (after the recovery), fill the kernel pool."""
        self.presence.start()
        if self.listener is not None:
            self.listener.start()
        self.engine.kernels.refill(self.engine.kernel_name)
        if self.dispatcher.is_open:
            self.dispatcher.wake()
        else:
            self._recovery = asyncio.ensure_future(self._recover_later())
        self.retention.start()
        if self.gc_freeze_at_start:
            gc.collect()
            gc.freeze()

    def _recover(self) -> bool:
        """Register this server, fail the runs left running that no live server holds, then
        open the queue; False if the database is unavailable (then :meth:`_recover_later` keeps
        trying).

        Done before the server listens, blocking: the queue must not start before it, or a
        run started meanwhile would be taken for an interrupted one.
        """
        try:
            failed = self.store.recover_at_start_now(
                self.server_id, self.server_lease, "the server stopped during the run"
            )
        except DatabaseUnavailable as exc:
            self.log.warning("jupyter-mage: recovery waits for the database: %s", exc)
            return False
        if failed:
            self.log.warning("jupyter-mage: %d interrupted run(s) marked failed", len(failed))
        self.dispatcher.open()
        return True

    async def _recover_later(self) -> None:
        while not await asyncio.to_thread(self._recover):
            await asyncio.sleep(5.0)
        self.dispatcher.wake()

    async def stop_extension(self) -> None:
        """Stop runs and close the database."""
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
        await self.dispatcher.stop()
        await self.presence.stop()  # after the runs ended: then this server's row goes
        if self.listener is not None:
            await self.listener.stop()
        await self.retention.stop()  # before the store closes: a sweep may be mid-batch
        self.store.close()


def _safe_url(url: str) -> str:
    # Never log a database password.
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
