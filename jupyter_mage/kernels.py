"""Kernels for runs: started through the server's kernel manager, kept warm ahead of demand.

A cold kernel takes about 0.6 s to be ready, far more than a whole run of small blocks. The pool
keeps ``size`` kernels per kernel spec started, connected and answered ``kernel_info``, so a run
gets a ready kernel at once; a background task refills the pool after each take. Every run still
gets a kernel no other run has used (kernels are never returned to the pool). Size 0 starts a
cold kernel per run.

Opt-in reuse (``MageApp.kernel_reuse``): after a run that ended cleanly, its kernel is reset
(user namespace cleared, back to the root dir) and kept for the next run of the *same pipeline*.
Imports stay loaded, which is the point (a pipeline importing pandas skips that on every run),
and also the price: module-level state, monkeypatches, threads, open files and environment
changes made by one run are seen by the next.

Pool kernels start in the server's root dir; the engine moves each run into its notebook's folder.
They are ordinary Jupyter kernels, so they appear in JupyterLab's list of running kernels (with no
notebook attached) and work through a Kernel Gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
from asyncio import FIRST_COMPLETED
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import zmq.asyncio
from jupyter_client.manager import KernelManager
from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.kernelmanager import MappingKernelManager
from jupyter_server.services.sessions.sessionmanager import ModelName, SessionManager
from jupyter_server.utils import ApiPath

from . import gateway
from .execute import KernelConnection, execute
from .forking import FORK_REQUEST
from .forking.provisioner import ForkingProvisioner

# Run in a reused kernel between two runs: forget the run's names, go back to the root dir,
# drop the per-block loggers the run created.
_RESET_CODE = """\
import logging as _logging, os as _os, sys as _sys
_home = getattr(_sys.modules.get('_jupyter_mage_runtime'), '__home__', None)
if _home:
    _os.chdir(_home)
for _name in [n for n in _logging.Logger.manager.loggerDict if n.startswith('jupyter_mage.run.')]:
    del _logging.Logger.manager.loggerDict[_name]
get_ipython().reset(new_session=False)
"""


#: Seconds between a run's end and the release of its kernel (shutdown or reset, refill).
RELEASE_DELAY = 0.1
#: Starts of a kernel that dies while starting, before the run fails.
START_ATTEMPTS = 3
#: Seconds a kernel that answered ``kernel_info`` gets to show that its iopub is connected
#: before it is asked again (ipykernel greets a new subscriber at once; older kernels do not).
IOPUB_GRACE = 0.25
#: Seconds between liveness checks of a starting kernel that gives no sign of its end (a
#: gateway's); a local kernel's end is an event (its process, or its fork parent's report).
REMOTE_ALIVE_POLL = 0.25
#: IPython's history off (see KernelPool._run_kernel_arguments).
NO_HISTORY = "--HistoryManager.enabled=False"
#: Forked kernel starts at once, per core (launched ones: one per core).
FORKED_STARTS_PER_CORE = 2
#: Ready kernels kept at most per spec when arrivals outpace starts (see KernelPool.wanted).
MAX_READY = 8
#: Trigger calls remembered per spec to estimate their rate.
ARRIVALS_KEPT = 16
#: Seconds after a trigger call during which kernel starts leave a core to the server.
REQUEST_WINDOW = 1.0
#: Shutdowns of a gateway kernel tried before it is given up (see KernelPool.shutdown).
GATEWAY_SHUTDOWN_ATTEMPTS = 5
#: How our kernels appear in JupyterLab's list of running kernels (a session's type and name).
SESSION_TYPE = "jupyter-mage"
SESSION_NAME = "Pipeline runs (jupyter-mage)"
#: Idle reused kernels kept at most (or the pool size, if larger); the oldest goes first.
REUSE_LIMIT = 4


#: The server's credentials, which a run's kernel (running the pipeline's code) must not hold.
SERVER_SECRETS = ("JUPYTER_TOKEN", "JPY_API_TOKEN", "JUPYTERHUB_API_TOKEN", "JUPYTER_PASSWORD")


def kernel_environment() -> dict[str, str]:
    """The environment of a run's kernel: the server's, without the server's credentials."""
    return {k: v for k, v in os.environ.items() if k not in SERVER_SECRETS}


class KernelDied(RuntimeError):
    """The kernel process exited before it was ready."""


@dataclass
class KernelHandle:
    """A started kernel with a connected, ready client."""

    kernel_id: str
    client: KernelConnection
    kernel_name: str = ""
    #: The warm-up code ran: the run-time is loaded in the kernel.
    preloaded: bool = False
    #: The session naming this kernel in JupyterLab's list of running kernels.
    session_id: str | None = None


@dataclass
class KernelLease:
    """A kernel lent to one run (:meth:`KernelPool.lease`).

    Before the lease ends, the run says what becomes of the kernel: whether it may be kept for
    the pipeline's next run, and which request of the run must be over before it is.
    """

    handle: KernelHandle
    #: Keep the kernel, reset, for this pipeline's next run (reuse mode); None: shut it down.
    keep_for: str | None = None
    #: The run's execute request: the kernel is released once it is over, or after ``grace``.
    request: asyncio.Task[Any] | None = None
    grace: float = 5.0

    @property
    def kernel_id(self) -> str:
        return self.handle.kernel_id


class KernelPool:
    """Ready kernels per kernel spec.

    Parameters
    ----------
    kernel_manager
        The server's (multi-)kernel manager.
    size
        Kernels kept ready per kernel spec (0: no pool).
    startup_timeout
        Seconds a kernel may take to answer before it counts as failed.
    warmup_code
        Code a pool kernel runs once while it waits (loading the run-time), so a run's own
        request does not pay for it.
    reuse
        Keep a cleanly finished run's kernel, reset, for the next run of the same pipeline.
    session_manager
        The server's session manager: each kernel of ours gets a session that names it (see
        :data:`SESSION_NAME`). None: unnamed.
    fork
        Ask for forked kernels (:mod:`jupyter_mage.forking`; the forking provisioner must be
        the server's default). Kernels that cannot be forked start as usual.
    """

    def __init__(
        self,
        kernel_manager: MappingKernelManager,
        size: int,
        startup_timeout: float,
        log: logging.Logger,
        warmup_code: str = "",
        warmup_probe: str = "",
        reuse: bool = False,
        session_manager: SessionManager | None = None,
        fork: bool = False,
    ) -> None:
        self.kernel_manager = kernel_manager
        #: Kernels run on a Kernel Gateway or Enterprise Gateway (``--gateway-url``).
        self.on_gateway = gateway.is_gateway(kernel_manager)
        self.fork = fork and not self.on_gateway
        self.session_manager = session_manager
        self.reuse = reuse
        # pipeline uuid -> a reset kernel that last ran it (oldest first, for eviction)
        self._reusable: OrderedDict[str, KernelHandle] = OrderedDict()
        self.warmup_code = warmup_code
        self._spec_arguments: dict[str, list[str]] = {}
        #: Short code that succeeds only in a kernel that has run the warm-up already (a
        #: forked one, whose parent ran it before forking); tried first on forked kernels.
        self.warmup_probe = warmup_probe
        self.size = size
        self.startup_timeout = startup_timeout
        self.log = log
        self._ready: dict[str, list[KernelHandle]] = {}
        # Kernel starts under way for the pool, per spec (several at once when runs arrive
        # faster than one start takes).
        self._filling: dict[str, set[asyncio.Task[None]]] = {}
        self._failures: dict[str, int] = {}
        self._arrivals: dict[str, deque[float]] = {}
        # Seconds from asking for a kernel to its being ready (warm-up included), a moving
        # average per spec: with the arrival rate, how many ready kernels a burst needs.
        self._start_seconds: dict[str, float] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        # Kernel starts are CPU-bound (an interpreter and its imports): one per core at most
        # (more only thrash, and widen the window of concurrent port picking), and one less
        # while trigger calls arrive, so a burst of runs does not slow the answers to them.
        self._cores = max(1, min(4, os.cpu_count() or 1))
        # A forked start is mostly waiting (a fork, a few messages) on a fifth of the CPU of a
        # launched one: a few more at once keep a burst's kernels coming without thrashing.
        self._start_limit = self._cores * FORKED_STARTS_PER_CORE if self.fork else self._cores
        self._starts = 0
        self._slots = asyncio.Condition()
        self._calls_until = 0.0
        self._stopped = False
        #: Set when the server stops: no more refills or reuse, released kernels shut down.
        self.closing = False
        # One ZMQ context for every client of ours: by default each client makes its own
        # (an I/O thread and file descriptors) and frees it only when garbage-collected.
        self._context = zmq.asyncio.Context()
        # No receive high-water mark: a run's messages queue in this process rather than being
        # dropped by the kernel's PUB socket when the event loop is busy for a moment.
        self._context.setsockopt(zmq.RCVHWM, 0)

    def ready_count(self, kernel_name: str) -> int:
        """Kernels waiting in the pool for this spec."""
        return len(self._ready.get(kernel_name, []))

    async def acquire(self, kernel_name: str, reuse_key: str | None = None) -> KernelHandle:
        """A ready kernel of that spec: a reused one (opt-in), a warm one, else a cold one."""
        if reuse_key is not None:
            handle = self._reusable.pop(reuse_key, None)
            same_spec = handle is not None and handle.kernel_name == kernel_name
            if same_spec and await self._usable(handle):  # type: ignore[arg-type]
                return handle  # type: ignore[return-value]
            if handle is not None:
                await self.discard(handle)
        self._note_arrival(kernel_name)
        ready = self._ready.setdefault(kernel_name, [])
        while ready:
            handle = ready.pop(0)
            if await self._usable(handle):
                # A lone run's pool is topped up when it releases this kernel (see release):
                # a start now would take CPU from the run on a small machine. Runs arriving
                # faster than a start takes need the starts now.
                if self.wanted(kernel_name) > self.size:
                    self.refill(kernel_name)
                return handle
            await self.discard(handle)  # culled or died while idle
        self.refill(kernel_name)
        handle = await self.start(kernel_name)
        await self._probe(handle)  # a forked kernel has the run-time: the run need not send it
        return handle

    def _note_arrival(self, kernel_name: str) -> None:
        arrivals = self._arrivals.setdefault(kernel_name, deque(maxlen=ARRIVALS_KEPT))
        arrivals.append(asyncio.get_running_loop().time())

    def wanted(self, kernel_name: str) -> int:
        """Ready kernels to keep for this spec: ``size``, or more while runs arrive faster than
        kernels start (the runs that arrive, at the recent rate, during one start)."""
        if self.size <= 0:
            return 0
        arrivals = self._arrivals.get(kernel_name)
        start = self._start_seconds.get(kernel_name)
        if not arrivals or len(arrivals) < 2 or start is None:
            return self.size
        now = asyncio.get_running_loop().time()
        if now - arrivals[-1] > 2 * start + 1.0:  # the burst is over
            return self.size
        rate = (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-3)
        # The runs that arrive while one kernel starts each need a ready one.
        return max(self.size, min(MAX_READY, math.ceil(rate * start)))

    @contextlib.asynccontextmanager
    async def lease(
        self, kernel_name: str, reuse_key: str | None = None, grace: float = 5.0
    ) -> AsyncIterator[KernelLease]:
        """A ready kernel for one run (see :meth:`acquire`), released when the block ends.

        The release happens in the background, whatever ended the block (an error, a
        cancellation): it first waits for the lease's ``request`` (at most ``grace`` seconds,
        then cancels it), so that a kernel is never reset or shut down under a request, and a
        kernel shutdown (which can stall seconds) never delays the run's answer.
        """
        lease = KernelLease(await self.acquire(kernel_name, reuse_key), grace=grace)
        try:
            yield lease
        finally:
            task = asyncio.ensure_future(self._end_lease(lease))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _end_lease(self, lease: KernelLease) -> None:
        keep_for, request = lease.keep_for, lease.request
        if request is not None and not request.done():
            await asyncio.wait({request}, timeout=lease.grace)
            if not request.done():
                request.cancel()
                keep_for = None
        if request is not None and request.done() and not request.cancelled():
            failed = request.exception() is not None or request.result().get("status") != "ok"
            keep_for = None if failed else keep_for
        await self.release(lease.handle, keep_for)

    async def release(self, handle: KernelHandle, reuse_key: str | None = None) -> None:
        """A run is done with its kernel: refill the pool, then recycle or shut the kernel down.

        ``reuse_key`` (a pipeline uuid, reuse mode only) keeps the kernel, reset, for that
        pipeline's next run.
        """
        # A moment first: whoever waits for the run (?wait) gets the answer before this work.
        if not self.closing:
            await asyncio.sleep(RELEASE_DELAY)
        self.refill(handle.kernel_name)
        if reuse_key is not None and not self.closing:
            await self.recycle(handle, reuse_key)
        else:
            await self.discard(handle)

    def refill(self, kernel_name: str) -> None:
        """Start, in the background, the kernels the pool lacks (see :meth:`wanted`): several
        at once when a burst needs them; no-op when full or disabled."""
        if self.size <= 0 or self._stopped or self.closing:
            return
        filling = self._filling.setdefault(kernel_name, set())
        missing = self.wanted(kernel_name) - len(self._ready.get(kernel_name, [])) - len(filling)
        for _ in range(missing):
            task = asyncio.ensure_future(self._fill_one(kernel_name))
            filling.add(task)
            task.add_done_callback(filling.discard)

    async def start(self, kernel_name: str) -> KernelHandle:
        """Start a kernel in the root dir and wait until it answers.

        A kernel that dies while starting is started again, on fresh ports: over TCP, the
        kernel manager picks free ports that the kernel binds a moment later, and any
        connection opened on the machine in between can take one (``Address already in use``).
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return await self._start_once(kernel_name)
            except KernelDied as exc:
                if attempt == START_ATTEMPTS or self.closing:
                    raise RuntimeError(f"{exc} (tried {attempt} times)") from None
                self.log.warning("jupyter-mage: %s; starting another", exc)
        raise AssertionError("unreachable")

    def note_request(self) -> None:
        """A trigger call arrived: for a moment, kernel starts leave a core to the server."""
        self._calls_until = asyncio.get_running_loop().time() + REQUEST_WINDOW

    @contextlib.asynccontextmanager
    async def _start_slot(self) -> AsyncIterator[None]:
        """One of the kernel starts allowed at once: woken when a start ends, or when the
        window after the last trigger call closes."""
        loop = asyncio.get_running_loop()
        async with self._slots:
            while True:
                busy = self._start_limit > 1 and loop.time() < self._calls_until
                if self._starts < self._start_limit - busy:
                    break
                window = self._calls_until - loop.time() if busy else None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._slots.wait(), window)
            self._starts += 1
        try:
            yield
        finally:
            async with self._slots:
                self._starts -= 1
                self._slots.notify_all()

    async def _start_once(self, kernel_name: str) -> KernelHandle:
        async with self._start_slot():
            # A gateway forwards only KERNEL_* variables (and those it is told to); and
            # jupyter_server logs the env it is given: the server's own is not sent there.
            env = {} if self.on_gateway else kernel_environment()
            if self.fork:
                env[FORK_REQUEST] = "1"
            kernel_id: str = await self.kernel_manager.start_kernel(
                kernel_name=kernel_name,
                path=ApiPath(""),
                env=env,
                extra_arguments=self._run_kernel_arguments(kernel_name),
            )
            client: KernelConnection | None = None
            try:
                kernel = self.kernel_manager.get_kernel(kernel_id)
                if self.on_gateway:
                    # The gateway's restarter stays on: its "restarting" status is how the
                    # connection learns that the kernel it talked to is gone.
                    remote = gateway.connect(self.kernel_manager, kernel_id)
                    client = remote
                    await remote.start_channels()
                else:
                    # A run's kernel that dies is discarded, never restarted: a restart would
                    # bring it back on other ports, behind the back of our client on the old
                    # ones.
                    kernel.stop_restarter()
                    kernel.autorestart = False
                    local = kernel.client(context=self._context)
                    client = local
                    local.start_channels()
                try:
                    await self._wait_ready(kernel, client)
                except gateway.KernelConnectionLost as exc:  # started again, as a local one
                    raise KernelDied(f"kernel {kernel_name} died while starting: {exc}") from None
            except BaseException:
                if client is not None:
                    client.stop_channels()
                await self.shutdown(kernel_id)
                raise
        handle = KernelHandle(kernel_id, client, kernel_name)
        await self._name(handle)
        return handle

    def _run_kernel_arguments(self, kernel_name: str) -> list[str]:
        """Arguments added to a run kernel's command: IPython's history off for IPython
        kernels. A run's requests are never stored in it, and each kernel would otherwise
        open the user's history database, write a session row and start a saving thread
        (a burst of runs would make those writes compete with the user's notebooks')."""
        if self.on_gateway:
            return []  # a gateway starts kernels from its own specs
        known = self._spec_arguments.get(kernel_name)
        if known is None:
            specs = self.kernel_manager.kernel_spec_manager
            try:
                argv = specs.get_kernel_spec(kernel_name).argv if specs is not None else []
            except Exception:  # no such spec: the start itself will say so
                return []
            known = self._spec_arguments[kernel_name] = (
                [NO_HISTORY] if is_ipython_kernel(argv) else []
            )
        return known

    async def _name(self, handle: KernelHandle) -> None:
        # JupyterLab labels a running kernel with its sessions' names ("No sessions connected"
        # otherwise). The path is no file's, so no notebook opened later joins this kernel.
        if self.session_manager is None:
            return
        try:
            session = await self.session_manager.create_session(
                path=f"{SESSION_TYPE}/{handle.kernel_id}",
                name=ModelName(SESSION_NAME),
                type=SESSION_TYPE,
                kernel_id=handle.kernel_id,
            )
            handle.session_id = session["id"]
        except Exception as exc:  # a name is a courtesy, never a reason to fail a run
            self.log.debug("kernel %s: no session: %s", handle.kernel_id, exc)

    async def _wait_ready(self, kernel: KernelManager, client: KernelConnection) -> None:
        """Until the kernel answers ``kernel_info`` and its iopub is connected.

        Waits on the kernel's messages and on its end, not on a clock: a kernel that dies while
        starting is known at once (a gateway's, within :data:`REMOTE_ALIVE_POLL`), and one that
        does not answer fails after ``startup_timeout``.
        """
        handshake = asyncio.ensure_future(self._handshake(client))
        ended = asyncio.ensure_future(self._ended(kernel, client))
        try:
            done, _ = await asyncio.wait(
                {handshake, ended}, timeout=self.startup_timeout, return_when=FIRST_COMPLETED
            )
        finally:
            for task in (handshake, ended):
                task.cancel()
            await asyncio.gather(handshake, ended, return_exceptions=True)
        if handshake in done:
            handshake.result()  # a lost gateway connection raises here
            return
        if ended in done:
            raise KernelDied(f"kernel {kernel.kernel_name} died while starting")
        raise TimeoutError(f"kernel did not answer within {self.startup_timeout:g} s of starting")

    @staticmethod
    async def _handshake(client: KernelConnection) -> None:
        """``kernel_info`` answered on shell while iopub delivers: the kernel is ready.

        Any iopub message proves the subscription (ipykernel greets each new subscriber with
        ``iopub_welcome``; older kernels show it by the status of a later ``kernel_info``).
        """
        iopub = asyncio.ensure_future(client.iopub_channel.get_msg())
        try:
            while True:
                msg_id = client.kernel_info()
                while True:
                    reply = await client.shell_channel.get_msg()
                    if reply["parent_header"].get("msg_id") == msg_id:
                        break
                done, _ = await asyncio.wait({iopub}, timeout=IOPUB_GRACE)
                if done:
                    iopub.result()
                    return
        finally:
            iopub.cancel()

    async def _ended(self, kernel: KernelManager, client: KernelConnection) -> None:
        """Returns when the starting kernel is gone."""
        provisioner = kernel.provisioner
        if isinstance(provisioner, ForkingProvisioner) and provisioner.exited is not None:
            await asyncio.shield(provisioner.exited)  # cancelling this wait must not cancel it
            return
        pid = getattr(provisioner, "pid", None)
        if isinstance(pid, int) and hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                await _process_end(pid)
                return
        while await self._alive(kernel, client):  # no event to wait on: a gateway's kernel
            await asyncio.sleep(REMOTE_ALIVE_POLL)

    async def recycle(self, handle: KernelHandle, reuse_key: str) -> None:
        """Reset a kernel after a clean run and keep it for the pipeline's next run."""
        try:
            reply = await execute(handle.client, _RESET_CODE, self.startup_timeout)
            usable = reply["status"] == "ok" and not self._stopped
        except Exception as exc:
            self.log.debug("kernel %s reset failed: %s", handle.kernel_id, exc)
            usable = False
        if not usable:
            await self.discard(handle)
            return
        previous = self._reusable.pop(reuse_key, None)
        self._reusable[reuse_key] = handle
        if previous is not None:
            await self.discard(previous)
        while len(self._reusable) > max(REUSE_LIMIT, self.size):
            _, oldest = self._reusable.popitem(last=False)
            await self.discard(oldest)

    async def discard(self, handle: KernelHandle) -> None:
        """Close a kernel's channels and shut it down (and its naming session)."""
        try:
            handle.client.stop_channels()
        finally:
            await self.shutdown(handle.kernel_id)
            if handle.session_id is not None:
                await self._forget_session(handle.session_id)

    async def _forget_session(self, session_id: str) -> None:
        # The kernel is gone (shut down at once: SessionManager.delete_session would shut it
        # down gracefully, which made a burst's kernels drain half as fast). A session whose
        # kernel is gone is removed by the session manager when it is next read: read it now,
        # so that no later listing warns that its kernel "died unexpectedly".
        if self.session_manager is None:
            return
        try:
            await self.session_manager.get_session(session_id=session_id)
        except KeyError:
            pass  # removed, as intended
        except Exception as exc:  # the server may be closing its session database
            self.log.debug("session %s: %s", session_id, exc)

    async def shutdown(self, kernel_id: str) -> None:
        """Shut a kernel down now; a kernel already gone is fine.

        A gateway can refuse (HTTP 500) while its restarter restarts the kernel: that is tried
        again for a few seconds, or the restarted kernel would be left on the gateway.
        """
        for attempt in range(1, GATEWAY_SHUTDOWN_ATTEMPTS + 1):
            try:
                await ensure_async(self.kernel_manager.shutdown_kernel(kernel_id, now=True))
                return
            except Exception as exc:
                gone = kernel_id not in self.kernel_manager
                if gone or not self.on_gateway or attempt == GATEWAY_SHUTDOWN_ATTEMPTS:
                    level = logging.DEBUG if gone else logging.WARNING
                    self.log.log(level, "kernel %s shutdown: %s", kernel_id, exc)
                    return
                await asyncio.sleep(0.5 * attempt)  # the gateway's restart takes seconds

    async def stop(self) -> None:
        """Wait (bounded) for leases being released, stop refilling, shut idle kernels down."""
        if self._releasing:
            await asyncio.wait(self._releasing, timeout=10)
        self._stopped = True
        # Let a start in progress finish (the fill loop then shuts its kernel down): cancelling
        # it mid-launch would leave a kernel process nobody owns.
        filling = [t for tasks in self._filling.values() for t in tasks if not t.done()]
        if filling:
            _, late = await asyncio.wait(filling, timeout=self.startup_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*filling, return_exceptions=True)
        idle = [h for handles in self._ready.values() for h in handles]
        idle += self._reusable.values()
        self._ready.clear()
        self._reusable.clear()
        await asyncio.gather(*(self.discard(h) for h in idle), return_exceptions=True)
        self._context.destroy(linger=0)

    async def _fill_one(self, kernel_name: str) -> None:
        """Start one kernel for the pool (tried again after a failure, three times at most)."""
        loop = asyncio.get_running_loop()
        while not self._stopped:
            began = loop.time()
            try:
                handle = await self.start(kernel_name)
                if self.warmup_code:
                    await self._warm_up(handle)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = self._failures[kernel_name] = self._failures.get(kernel_name, 0) + 1
                self.log.warning(
                    "jupyter-mage: warm kernel %s failed to start: %s", kernel_name, exc
                )
                if failures >= 3:  # a broken kernel spec: runs will report the error themselves
                    self._failures[kernel_name] = 0
                    return
                await asyncio.sleep(1.0 * failures)
                continue
            self._failures[kernel_name] = 0
            took = loop.time() - began
            average = self._start_seconds.get(kernel_name, took)
            self._start_seconds[kernel_name] = 0.7 * average + 0.3 * took
            if self._stopped:
                await self.discard(handle)
                return
            self._ready.setdefault(kernel_name, []).append(handle)
            return

    async def _probe(self, handle: KernelHandle) -> None:
        """Mark a forked kernel whose parent loaded the warm-up code before forking."""
        if self.fork and self.warmup_probe:
            reply = await execute(handle.client, self.warmup_probe, self.startup_timeout)
            handle.preloaded = reply["status"] == "ok"

    async def _warm_up(self, handle: KernelHandle) -> None:
        """Run the warm-up code in a new pool kernel (unless it has run it already)."""
        await self._probe(handle)
        if handle.preloaded:
            return
        reply = await execute(handle.client, self.warmup_code, self.startup_timeout)
        if reply["status"] != "ok":
            await self.discard(handle)
            raise RuntimeError("warm-up code failed")
        handle.preloaded = True

    async def _usable(self, handle: KernelHandle) -> bool:
        try:
            kernel = self.kernel_manager.get_kernel(handle.kernel_id)
        except KeyError:
            return False
        return await self._alive(kernel, handle.client)

    @staticmethod
    async def _alive(kernel: KernelManager, client: KernelConnection) -> bool:
        """Whether the kernel runs: its process (local), or its connection (a gateway's
        ``is_alive`` is a REST call that says yes for a moment after the kernel is gone, and
        yes again once the gateway restarted it: another kernel, not ours)."""
        if isinstance(client, gateway.GatewayKernelConnection):
            return client.channels_running
        return bool(await ensure_async(kernel.is_alive()))


def is_ipython_kernel(argv: list[str]) -> bool:
    """Whether a kernel spec's command runs ipykernel (``... -m ipykernel_launcher ...``)."""
    return any(
        flag == "-m" and module in ("ipykernel_launcher", "ipykernel")
        for flag, module in itertools.pairwise(argv)
    )


async def _process_end(pid: int) -> None:
    """Returns when process ``pid`` has exited (a pidfd becomes readable; Linux)."""
    descriptor = os.pidfd_open(pid)
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(descriptor, readable)
    try:
        await ended
    finally:
        loop.remove_reader(descriptor)
        os.close(descriptor)
