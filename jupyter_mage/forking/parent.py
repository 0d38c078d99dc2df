"""The fork parent: imports ipykernel once, then forks one fresh kernel per request.

Run by the server with the kernel spec's own Python, as a script (``python parent.py SOCKET``),
so it needs nothing but the standard library and ipykernel in that environment.

Protocol (JSON, one object per line):

- Standard input is a socket to the server. The parent writes ``{"ready": pid}`` on it once it
  listens on ``SOCKET``, or ``{"error": "..."}`` and exits. When the server closes it (the server
  stopped, or died), the parent terminates its kernels and exits.
- Each kernel is one connection to ``SOCKET``: the server writes ``{"argv": [...], "env": {...},
  "cwd": "..."}`` (``argv``: the kernel app's arguments, as after ``-m ipykernel_launcher``); the
  parent answers ``{"pid": n}`` once forked, the child ``{"ports": {...}}`` once its sockets are
  bound (the ports it chose itself: no port race), and the parent ``{"exit": code}`` when the
  kernel has exited; then the connection closes.

The parent never runs a thread or user code, so what a child inherits is a freshly imported
interpreter. Children share the parent's hash seed (``PYTHONHASHSEED`` is per interpreter);
``random`` and ``tempfile`` re-seed themselves in a child.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

#: Largest fork request accepted (the kernel's whole environment is in it).
MAX_REQUEST_BYTES = 16 * 1024 * 1024


@dataclass
class KernelRequest:
    """A fork request, as read by the parent, handed to the child."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    connection: socket.socket


@dataclass
class _Pending:
    """A connection whose request line has not fully arrived."""

    connection: socket.socket
    data: bytearray = field(default_factory=bytearray)


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _preload() -> None:
    """What every kernel imports before it can answer: done once, here."""
    import ipykernel.ipkernel
    import ipykernel.kernelapp
    import ipykernel.zmqshell
    import IPython.core.interactiveshell  # noqa: F401

    # The kernel's debugger class (a trait resolved when the kernel is made) imports debugpy:
    # a sixth of a forked kernel's CPU when left to each child. It starts no thread. Its
    # warning about frozen modules would go to the server's log once per parent; a kernel
    # gets its own environment (see run_kernel), so the setting stays in the parent.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    with contextlib.suppress(ImportError):
        import ipykernel.debugger  # noqa: F401


def _run_first(path: str) -> None:
    """Run the code every kernel would run first (jupyter-mage's run-time, loaded as its pool's
    warm-up would load it): once here, so that no child compiles it again. A failure costs
    only that: the children load it themselves."""
    try:
        with open(path, encoding="utf-8") as file:
            code = compile(file.read(), "<jupyter-mage preload>", "exec")
        exec(code, {"__name__": "__jupyter_mage_preload__"})  # noqa: S102 (our own code)
    except Exception:
        print("jupyter-mage: the fork parent could not preload the run-time:", file=sys.stderr)
        traceback.print_exc()


class Parent:
    """The parent's loop: accept requests, fork kernels, reap them and report their ends."""

    def __init__(self, socket_path: str, lifeline: socket.socket) -> None:
        self.lifeline = lifeline
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(socket_path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        # SIGCHLD wakes the selector through this pair (signal.set_wakeup_fd).
        self.wakeup_read, self.wakeup_write = socket.socketpair()
        self.wakeup_read.setblocking(False)
        self.wakeup_write.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.lifeline, selectors.EVENT_READ)
        self.selector.register(self.wakeup_read, selectors.EVENT_READ)
        self.pending: dict[socket.socket, _Pending] = {}
        self.children: dict[int, socket.socket] = {}

    def serve(self) -> KernelRequest | None:
        """Serve until the server goes (None), or return a request in a forked child."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wakeup_write.fileno())
        self.lifeline.sendall(_line({"ready": os.getpid()}))
        while True:
            for key, _ in self.selector.select():
                sock = key.fileobj
                if sock is self.lifeline:
                    if not self.lifeline.recv(4096):  # the server closed it: it is gone
                        self._terminate_children()
                        return None
                elif sock is self.listener:
                    self._accept()
                elif sock is self.wakeup_read:
                    with contextlib.suppress(BlockingIOError):
                        self.wakeup_read.recv(4096)
                    self._reap()
                else:
                    assert isinstance(sock, socket.socket)
                    request = self._read(sock)
                    if request is not None and self._fork(request):
                        return request  # in the child

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            connection, _ = self.listener.accept()
            connection.setblocking(False)
            self.pending[connection] = _Pending(connection)
            self.selector.register(connection, selectors.EVENT_READ)

    def _read(self, connection: socket.socket) -> KernelRequest | None:
        pending = self.pending[connection]
        try:
            chunk = connection.recv(1 << 20)
        except BlockingIOError:
            return None
        except OSError:
            chunk = b""
        pending.data += chunk
        if not chunk or len(pending.data) > MAX_REQUEST_BYTES:
            self._drop(connection)
            return None
        if b"\n" not in pending.data:
            return None
        self.selector.unregister(connection)
        del self.pending[connection]
        connection.setblocking(True)
        try:
            message = json.loads(pending.data.split(b"\n", 1)[0])
            request = KernelRequest(
                argv=[str(a) for a in message["argv"]],
                env={str(k): str(v) for k, v in message["env"].items()},
                cwd=str(message.get("cwd") or ""),
                connection=connection,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            with contextlib.suppress(OSError):
                connection.sendall(_line({"error": f"bad fork request: {exc}"}))
            connection.close()
            return None
        return request

    def _drop(self, connection: socket.socket) -> None:
        self.selector.unregister(connection)
        del self.pending[connection]
        connection.close()

    def _fork(self, request: KernelRequest) -> bool:
        """Fork a kernel for the request: True in the child, False in the parent."""
        try:
            pid = os.fork()
        except OSError as exc:
            with contextlib.suppress(OSError):
                request.connection.sendall(_line({"error": f"fork failed: {exc}"}))
            request.connection.close()
            return False
        if pid == 0:
            self._become_child(request)
            return True
        self.children[pid] = request.connection
        with contextlib.suppress(OSError):
            request.connection.sendall(_line({"pid": pid}))
        return False

    def _become_child(self, request: KernelRequest) -> None:
        """In a new child: drop everything of the parent's but the request's connection."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.selector.close()
        for sock in (self.listener, self.lifeline, self.wakeup_read, self.wakeup_write):
            sock.close()
        for other in [*self.pending, *self.children.values()]:
            other.close()
        self.pending.clear()
        self.children.clear()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            connection = self.children.pop(pid, None)
            if connection is not None:
                with contextlib.suppress(OSError):
                    connection.sendall(_line({"exit": os.waitstatus_to_exitcode(status)}))
                connection.close()

    def _terminate_children(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGTERM)


def run_kernel(request: KernelRequest) -> None:
    """Become the requested kernel (in the forked child): the launcher's job, then ipykernel's."""
    os.setsid()  # its own process group, which interrupts and kills address
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if request.cwd:
        os.chdir(request.cwd)
    # A preloaded run-time noted the parent's folder as the kernel's home (where a reused
    # kernel goes back to between runs): the kernel's is this one.
    runtime = sys.modules.get("_jupyter_mage_runtime")
    if runtime is not None:
        setattr(runtime, "__home__", os.getcwd())  # noqa: B010 (a module, typed loosely)
    os.environ.clear()
    os.environ.update(request.env)
    # ipykernel exits when this process does (its parent poller), like a kernel whose server
    # went: the parent's own lifeline is the server.
    os.environ["JPY_PARENT_PID"] = str(os.getppid())
    from importlib.util import find_spec

    from ipykernel.kernelapp import IPKernelApp

    launcher = find_spec("ipykernel_launcher")
    sys.argv = [(launcher.origin if launcher else None) or "ipykernel_launcher", *request.argv]
    # ipykernel reads JPY_PARENT_PID when it is imported (the parent's import, here): told now.
    app = IPKernelApp.instance(parent_handle=os.getppid())
    app.initialize(request.argv)  # type: ignore[no-untyped-call]
    ports = {
        name: getattr(app, name)
        for name in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
    }
    request.connection.sendall(_line({"ports": ports}))
    request.connection.close()
    app.start()  # type: ignore[no-untyped-call]


def main(argv: list[str]) -> int:
    lifeline = socket.socket(fileno=0)  # the server's end of a socket pair, as stdin
    # Not this script's folder on the kernels' sys.path: a kernel's path is the launcher's.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    try:
        _preload()
        if len(argv) > 2:
            _run_first(argv[2])
        if threading.active_count() != 1:  # a fork would copy a thread's locks, not the thread
            raise RuntimeError(f"{threading.active_count()} threads after the imports")
        parent = Parent(argv[1], lifeline)
    except Exception as exc:
        lifeline.sendall(_line({"error": f"{type(exc).__name__}: {exc}"}))
        return 2
    request = parent.serve()
    if request is None:
        return 0
    # In a forked child from here on: the parent's frames are gone, the kernel runs at the top.
    try:
        run_kernel(request)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
