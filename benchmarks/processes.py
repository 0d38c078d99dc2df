"""Processes the benchmark scripts start: the tree below a server, its CPU and RSS, cleanup.

Shared by ``run.py`` and ``soak.py`` (both run as scripts from this folder, so they import it
by its plain name). Linux only: everything is read from ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime ticks, start time) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])


def proc_table() -> dict[int, tuple[int, int, int]]:
    """:func:`proc_stat` of every live process."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat is not None:
                table[int(name)] = stat
    return table


def descendants(root: int, table: dict[int, tuple[int, int, int]] | None = None) -> list[int]:
    """Every process below ``root``."""
    table = table if table is not None else proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_below(root: int) -> list[tuple[int, int]]:
    """(pid, start time) of every process below ``root``: what :func:`kill_exact` needs."""
    table = proc_table()
    return [(pid, table[pid][2]) for pid in descendants(root, table)]


def tree_ticks(roots: Sequence[int]) -> int:
    """CPU ticks used so far by ``roots`` and everything below them (live processes only)."""
    table = proc_table()
    pids = set(roots)
    for root in roots:
        pids.update(descendants(root, table))
    return sum(table[p][1] for p in pids if p in table)


def kill_exact(pid: int, start_time: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process we recorded, unless its pid now belongs to another process."""
    stat = proc_stat(pid)
    if stat is not None and stat[2] == start_time:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the script dies (Linux), even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def rss_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_logged(
    argv: list[str], cwd: Path, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Start a service process (a server, a gateway) writing its output to ``log_path``.

    Call it from the main thread: PR_SET_PDEATHSIG follows the thread that forked the child.
    Its own session keeps our Ctrl-C from reaching it: the caller stops it.
    """
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )


def log_tail(log_path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a service's log."""
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
