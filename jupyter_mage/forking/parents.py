"""The server's side of the fork parents: one per kernel interpreter, and the fork request.

A parent is started on first use and kept while the server runs; a parent that dies (or cannot
start) is started again on the next request, and a request it cannot serve makes the caller fall
back to an ordinary kernel start. Nothing here blocks the event loop: the parent's readiness,
the child's ports and its exit all arrive as lines on asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The parent's script, run by the kernel's interpreter (it must not need jupyter-mage there).
PARENT_SCRIPT = Path(__file__).with_name("parent.py")
#: Seconds a parent may take to import ipykernel and listen.
PARENT_START_TIMEOUT = 60.0

log = logging.getLogger(__name__)


class ForkFailed(RuntimeError):
    """A parent could not start, or could not fork this kernel."""


@dataclass
class ForkedKernel:
    """A kernel forked by a parent: its pid, the ports it bound, and its end when it comes."""

    pid: int
    ports: dict[str, int]
    #: Resolves to the kernel's exit code (negative: killed by that signal).
    exited: asyncio.Future[int]
    _watch: asyncio.Task[None] | None = field(default=None, repr=False)

    def close(self) -> None:
        """Stop watching (the kernel's end is no longer of interest)."""
        if self._watch is not None:
            self._watch.cancel()


class ForkParent:
    """One running parent process, serving fork requests on a Unix socket.

    Not bound to an event loop (a plain process and socket): it serves every server of this
    process in turn (the tests start many), and ends with the process, whose exit closes the
    lifeline.
    """

    def __init__(self, python: str, env: dict[str, str], preload: str = "") -> None:
        self.python = python
        self.env = env
        self._folder = tempfile.mkdtemp(prefix="jupyter-mage-fork-")  # mode 0700
        self.socket_path = os.path.join(self._folder, "parent.sock")
        #: Code the parent runs before it forks (see ForkParents.preload), as a file.
        self.preload_path = ""
        if preload:
            self.preload_path = os.path.join(self._folder, "preload.py")
            Path(self.preload_path).write_text(preload, encoding="utf-8")
        self._process: subprocess.Popen[bytes] | None = None
        self._lifeline: socket.socket | None = None

    async def start(self) -> None:
        """Start the parent and wait until it listens (ForkFailed if it cannot)."""
        ours, theirs = socket.socketpair()
        try:
            self._process = await asyncio.to_thread(self._spawn, theirs)
        except OSError as exc:
            ours.close()
            raise ForkFailed(f"cannot start {self.python}: {exc}") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        self._lifeline = ours
        try:
            line = await asyncio.wait_for(_read_line(ours), PARENT_START_TIMEOUT)
        except asyncio.TimeoutError:
            line = b""
        message = _parse(line)
        if "ready" not in message:
            await self.stop()
            reason = message.get("error") or "exited before it was ready"
            raise ForkFailed(f"the fork parent of {self.python} failed: {reason}")

    def _spawn(self, stdin: socket.socket) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                self.python,
                str(PARENT_SCRIPT),
                self.socket_path,
                *([self.preload_path] if self.preload_path else []),
            ],
            stdin=stdin.fileno(),
            env=self.env,
            cwd=self._folder,
            start_new_session=True,  # a Ctrl-C at the server's terminal is not for it
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def fork(self, argv: list[str], env: dict[str, str], cwd: str) -> ForkedKernel:
        """Fork a kernel and wait until it has bound its sockets (ForkFailed if it cannot)."""
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError as exc:
            raise ForkFailed(f"the fork parent is not reachable: {exc}") from None
        request = {"argv": argv, "env": env, "cwd": cwd}
        writer.write(json.dumps(request).encode() + b"\n")
        pid: int | None = None
        ports: dict[str, int] | None = None
        try:
            while pid is None or ports is None:
                message = _parse(await reader.readline())
                if not message or "exit" in message or "error" in message:
                    if pid is not None:  # bound no ports and left: make sure it is gone
                        _kill(pid)
                    reason = message.get("error") or (
                        f"the kernel exited with {message['exit']} while starting"
                        if "exit" in message
                        else "the fork parent closed the connection"
                    )
                    raise ForkFailed(reason)
                if "pid" in message:
                    pid = int(message["pid"])
                if "ports" in message:
                    ports = {k: int(v) for k, v in message["ports"].items()}
        except BaseException:
            writer.close()
            if pid is not None:
                _kill(pid)
            raise
        exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        kernel = ForkedKernel(pid, ports, exited)
        kernel._watch = asyncio.ensure_future(_watch_exit(kernel, reader, writer))
        return kernel

    async def stop(self) -> None:
        """Close the lifeline: the parent terminates its kernels and exits."""
        if self._lifeline is not None:
            self._lifeline.close()
            self._lifeline = None
        process = self._process
        if process is not None and process.poll() is None:
            try:
                await asyncio.to_thread(process.wait, 5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        shutil.rmtree(self._folder, ignore_errors=True)


async def _read_line(sock: socket.socket) -> bytes:
    data = b""
    loop = asyncio.get_running_loop()
    while not data.endswith(b"\n"):
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            break
        data += chunk
    return data


async def _watch_exit(
    kernel: ForkedKernel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Resolve ``kernel.exited`` when the parent reports the end (or is gone itself)."""
    try:
        while True:
            line = await reader.readline()
            message = _parse(line)
            if "exit" in message:
                code = int(message["exit"])
                break
            if not line:  # the parent died: its kernels are orphans, end this one now
                _kill(kernel.pid)
                code = -signal.SIGKILL
                break
        if not kernel.exited.done():
            kernel.exited.set_result(code)
    finally:
        writer.close()


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _parse(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


class ForkParents:
    """The parents of this process, one per interpreter, started on first use."""

    def __init__(self) -> None:
        self._parents: dict[str, ForkParent] = {}
        self._starting: dict[str, asyncio.Task[ForkParent]] = {}
        #: Code that every forked kernel would run first: parents started from now on run
        #: it once before they fork (jupyter-mage's run-time: 50 kB that each kernel would
        #: otherwise compile, and that ipykernel hashes in pure Python to name the cell).
        self.preload = ""

    async def get(self, python: str, env: dict[str, str]) -> ForkParent:
        """The running parent of that interpreter (started now if needed; ForkFailed)."""
        parent = self._parents.get(python)
        if parent is not None and parent.running:
            return parent
        task = self._starting.get(python)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(self._start(python, env))
            self._starting[python] = task
            task.add_done_callback(lambda _: self._starting.pop(python, None))
        return await asyncio.shield(task)

    async def _start(self, python: str, env: dict[str, str]) -> ForkParent:
        old = self._parents.pop(python, None)
        if old is not None:
            await old.stop()
        parent = ForkParent(python, env, self.preload)
        await parent.start()
        self._parents[python] = parent
        log.info("jupyter-mage: kernels of %s are forked from pid %s", python, parent.pid)
        return parent

    def pids(self) -> dict[str, int]:
        """The running parents' process ids, by interpreter."""
        return {
            python: parent.pid
            for python, parent in self._parents.items()
            if parent.running and parent.pid is not None
        }

    async def stop(self) -> None:
        """Stop every parent (their kernels are terminated)."""
        parents, self._parents = list(self._parents.values()), {}
        await asyncio.gather(*(p.stop() for p in parents), return_exceptions=True)


#: This process's parents. A server does not stop them when it stops: they serve the next
#: server of the process (tests), and end with the process.
PARENTS = ForkParents()
