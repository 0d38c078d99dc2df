"""Kernels for runs: started through the server's kernel manager, kept warm ahead of demand.

A cold kernel takes about 0.6 s to be ready, far more than a whole run of small blocks. The pool
keeps ``size`` kernels per kernel spec started, connected and answered ``kernel_info``, so a run
gets a ready kernel at once; a background task refills the pool after each take. Every run still
gets a kernel no other run has used (kernels are never returned to the pool). Size 0 starts a
cold kernel per run.

Pool kernels start in the server's root dir; the engine moves each run into its notebook's folder.
They are ordinary Jupyter kernels, so they appear in JupyterLab's list of running kernels (with no
notebook attached) and work through a Kernel Gateway.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from jupyter_core.utils import ensure_async


@dataclass
class KernelHandle:
    """A started kernel with a connected, ready client."""

    kernel_id: str
    client: Any


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
    """

    def __init__(
        self,
        kernel_manager: Any,
        size: int,
        startup_timeout: float,
        log: logging.Logger,
        warmup_code: str = "",
    ) -> None:
        self.kernel_manager = kernel_manager
        self.warmup_code = warmup_code
        self.size = size
        self.startup_timeout = startup_timeout
        self.log = log
        self._ready: dict[str, list[KernelHandle]] = {}
        self._filling: dict[str, asyncio.Task[None]] = {}
        self._stopped = False

    def ready_count(self, kernel_name: str) -> int:
        """Kernels waiting in the pool for this spec."""
        return len(self._ready.get(kernel_name, []))

    async def acquire(self, kernel_name: str) -> KernelHandle:
        """A ready kernel of that spec, from the pool if one waits there, else a cold one."""
        ready = self._ready.setdefault(kernel_name, [])
        while ready:
            handle = ready.pop(0)
            self.refill(kernel_name)
            if await self._usable(handle):
                return handle
            await self.discard(handle)  # culled or died while idle
        self.refill(kernel_name)
        return await self.start(kernel_name)

    def refill(self, kernel_name: str) -> None:
        """Top the pool up in the background (no-op when full, filling or disabled)."""
        if self.size <= 0 or self._stopped:
            return
        task = self._filling.get(kernel_name)
        if task is None or task.done():
            self._filling[kernel_name] = asyncio.ensure_future(self._fill(kernel_name))

    async def start(self, kernel_name: str) -> KernelHandle:
        """Start a kernel in the root dir and wait until it answers."""
        kernel_id = await ensure_async(
            self.kernel_manager.start_kernel(kernel_name=kernel_name, path="")
        )
        try:
            client = self.kernel_manager.get_kernel(kernel_id).client()
            await ensure_async(client.start_channels())
            await client.wait_for_ready(timeout=self.startup_timeout)
        except BaseException:
            await self.shutdown(kernel_id)
            raise
        return KernelHandle(kernel_id, client)

    async def discard(self, handle: KernelHandle) -> None:
        """Close a kernel's channels and shut it down."""
        try:
            handle.client.stop_channels()
        finally:
            await self.shutdown(handle.kernel_id)

    async def shutdown(self, kernel_id: str) -> None:
        """Shut a kernel down now; a kernel already gone is fine."""
        try:
            await ensure_async(self.kernel_manager.shutdown_kernel(kernel_id, now=True))
        except Exception as exc:
            self.log.debug("kernel %s shutdown: %s", kernel_id, exc)

    async def stop(self) -> None:
        """Stop refilling and shut the idle kernels down."""
        self._stopped = True
        for task in self._filling.values():
            task.cancel()
        await asyncio.gather(*self._filling.values(), return_exceptions=True)
        idle = [h for handles in self._ready.values() for h in handles]
        self._ready.clear()
        await asyncio.gather(*(self.discard(h) for h in idle), return_exceptions=True)

    async def _fill(self, kernel_name: str) -> None:
        ready = self._ready.setdefault(kernel_name, [])
        failures = 0
        while len(ready) < self.size and not self._stopped:
            try:
                handle = await self.start(kernel_name)
                if self.warmup_code:
                    reply = await handle.client.execute_interactive(
                        self.warmup_code,
                        store_history=False,
                        allow_stdin=False,
                        output_hook=lambda msg: None,
                        timeout=self.startup_timeout,
                    )
                    if reply["content"]["status"] != "ok":
                        await self.discard(handle)
                        raise RuntimeError("warm-up code failed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.log.warning(
                    "jupyter-mage: warm kernel %s failed to start: %s", kernel_name, exc
                )
                if failures >= 3:  # a broken kernel spec: runs will report the error themselves
                    return
                await asyncio.sleep(1.0 * failures)
                continue
            if self._stopped:
                await self.discard(handle)
                return
            ready.append(handle)

    async def _usable(self, handle: KernelHandle) -> bool:
        try:
            kernel = self.kernel_manager.get_kernel(handle.kernel_id)
        except KeyError:
            return False
        return bool(await ensure_async(kernel.is_alive()))
