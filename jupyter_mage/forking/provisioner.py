"""A kernel provisioner that forks the run pool's kernels from a pre-imported parent.

Registered as the ``jupyter-mage-forking-provisioner`` entry point of
``jupyter_client.kernel_provisioners``; the extension makes it the server's default provisioner
when the default is still jupyter_client's ``local-provisioner`` (``MageApp.fork_kernels``).
It forks a kernel only when all of these hold, and otherwise *is* ``LocalProvisioner``:

- the start carries :data:`~jupyter_mage.forking.FORK_REQUEST` in its environment (the run
  pool's kernels do; a notebook's kernel never does);
- the spec's command is ``<python> -m ipykernel_launcher ...`` (or ``-m ipykernel``);
- the transport is TCP or IPC, without CurveZMQ encryption;
- that interpreter's fork parent runs (or starts now).

A forked kernel binds its own ports and reports them (no race for free ports between picking
and binding), is its own process group (so interrupts and kills reach it and what it started),
and is signalled, waited for and cleaned up through this provisioner like any local kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from typing import Any, cast

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Float

from . import FORK_REQUEST
from .parents import PARENTS, ForkedKernel, ForkFailed

#: The launcher modules whose kernels can be forked (``-m <module>``).
_LAUNCHERS = ("ipykernel_launcher", "ipykernel")


def forkable_command(cmd: list[str]) -> bool:
    """Whether a kernel command is a plain ``python -m ipykernel_launcher ...``."""
    return len(cmd) >= 3 and cmd[1] == "-m" and cmd[2] in _LAUNCHERS


class ForkingProvisioner(LocalProvisioner):
    """LocalProvisioner, except that the kernels the run pool asks for are forked."""

    fork_timeout = Float(
        60.0, config=True, help="Seconds a forked kernel may take to bind its sockets."
    )

    _forked: ForkedKernel | None = None
    _fork_plan: tuple[str, list[str]] | None = None
    #: The interpreter whose fork parent forked this kernel (None: not forked).
    fork_python: str | None = None

    # --- starting ---------------------------------------------------------------------------

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Decide how this kernel starts; a forked one gets no ports picked for it."""
        env = kwargs.get("env")
        wants_fork = isinstance(env, dict) and env.get(FORK_REQUEST) == "1"
        if isinstance(env, dict) and FORK_REQUEST in env:
            kwargs["env"] = {k: v for k, v in env.items() if k != FORK_REQUEST}
        km = self.parent
        encryption = kwargs.get("transport_encryption") or getattr(
            km, "transport_encryption", "disabled"
        )
        transport_ok = km is not None and km.transport in ("tcp", "ipc")
        if not wants_fork or km is None or not transport_ok or encryption != "disabled":
            return await super().pre_launch(**kwargs)
        extra_arguments = kwargs.pop("extra_arguments", [])
        kwargs.pop("transport_encryption", None)
        if not km.connection_file:  # a kernel manager of its own, not the server's
            km.connection_file = os.path.join(
                jupyter_runtime_dir(), f"kernel-{self.kernel_id}.json"
            )
        cmd: list[str] = km.format_kernel_cmd(extra_arguments=extra_arguments)
        python = shutil.which(cmd[0], path=kwargs["env"].get("PATH")) if cmd else None
        if python is None or not forkable_command(cmd):
            return await super().pre_launch(extra_arguments=extra_arguments, **kwargs)
        self._fork_plan = (python, cmd[3:])
        # The environment as LocalProvisioner would give it (the spec's env, substitutions).
        return await KernelProvisionerBase.pre_launch(self, cmd=cmd, **kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Fork the kernel (or launch it as LocalProvisioner does)."""
        plan, self._fork_plan = self._fork_plan, None
        if plan is not None:
            try:
                return await self._fork(*plan, kwargs)
            except ForkFailed as exc:
                self.log.warning("jupyter-mage: kernel not forked, started normally: %s", exc)
                # Ports and connection file, as LocalProvisioner would have prepared them.
                kwargs = await super().pre_launch(env=kwargs.get("env"), cwd=kwargs.get("cwd"))
                cmd = kwargs.pop("cmd")
        return await super().launch_kernel(cmd, **kwargs)

    async def _fork(
        self, python: str, argv: list[str], kwargs: dict[str, Any]
    ) -> KernelConnectionInfo:
        km = self.parent
        assert km is not None  # pre_launch planned no fork without a kernel manager
        env: dict[str, str] = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        parent = await PARENTS.get(python, _parent_environment(env))
        # The kernel reads its key and address from the connection file, and binds ports of
        # its own choosing (0 here), which it writes back into the file and reports.
        info: KernelConnectionInfo = km.get_connection_info()
        for name in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"):
            info[name] = 0
        _write_unbound_connection_file(km.connection_file, info)
        try:
            forked = await asyncio.wait_for(parent.fork(argv, env, cwd), self.fork_timeout)
        except asyncio.TimeoutError:
            raise ForkFailed(f"no ports from the kernel within {self.fork_timeout:g} s") from None
        self._forked = forked
        self.fork_python = python
        self.pid = self.pgid = forked.pid
        self.cwd = cwd
        info.update(cast(KernelConnectionInfo, forked.ports))
        # Into the kernel manager, and its connection file (which it then owns and removes).
        km.load_connection_info(info)
        km.write_connection_file()
        self.connection_info = info
        return info

    # --- a forked kernel's life; the rest is LocalProvisioner's ------------------------------

    @property
    def exited(self) -> asyncio.Future[int] | None:
        """A forked kernel's exit code, when it comes; None for a kernel not forked."""
        return None if self._forked is None else self._forked.exited

    @property
    def has_process(self) -> bool:
        return self._forked is not None or bool(super().has_process)

    async def poll(self) -> int | None:
        if self._forked is None:
            return await super().poll()
        exited = self._forked.exited
        return exited.result() if exited.done() else None

    async def wait(self) -> int | None:
        if self._forked is None:
            return await super().wait()
        # Callers bound this with a timeout (KernelManager's shutdown and kill).
        code = await asyncio.shield(self._forked.exited)
        self._forked.close()
        self._forked = None
        return code

    async def send_signal(self, signum: int) -> None:
        if self._forked is None:
            await super().send_signal(signum)
            return
        if self._forked.exited.done():
            return
        try:
            os.killpg(self._forked.pid, signum)  # the kernel and what it started
        except ProcessLookupError:
            os.kill(self._forked.pid, signum)

    async def kill(self, restart: bool = False) -> None:
        if self._forked is None:
            await super().kill(restart)
        else:
            await self._end_forked(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        if self._forked is None:
            await super().terminate(restart)
        else:
            await self._end_forked(signal.SIGTERM)

    async def _end_forked(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # gone already: what was asked
            await self.send_signal(signum)

    async def cleanup(self, restart: bool = False) -> None:
        if self._forked is not None and self._forked.exited.done():
            self._forked.close()
            self._forked = None
        await super().cleanup(restart)


def _parent_environment(env: dict[str, str]) -> dict[str, str]:
    """The parent's environment: the first kernel's, less what is only that kernel's."""
    return {k: v for k, v in env.items() if not k.startswith("JPY_")}


def _write_unbound_connection_file(path: str, info: KernelConnectionInfo) -> None:
    fields = {k: v.decode() if isinstance(v, bytes) else v for k, v in info.items()}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(fields, file)
