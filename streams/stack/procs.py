"""Processes and ports (pid files, liveness, signals, who listens on a port) and small
helpers: polling with a deadline, running a coroutine from sync code, log tails."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from streams.stack.config import HOST, StackError

T = TypeVar("T")

POLL_S = 0.2


def _our_pid(pid_file: Path, port: int, is_ours: Callable[[int], bool]) -> int | None:
    pid = _read_pid(pid_file)
    if pid is not None and _pid_alive(pid) and is_ours(pid):
        return pid
    listener = _listener_pid(port)
    if listener is not None and is_ours(listener):
        return listener
    return None


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _write_pid_file(pid_file: Path, pid: int) -> None:
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def _pid_alive(pid: int) -> bool:
    """True for a live process. Reaps it if it is our exited child, and treats zombies as dead
    (the broker is our child when up() and down() run in one process, e.g. in tests)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in ("Z", "X", None)


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]  # the comm field may contain spaces and ')'


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _port_open(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _require_free_port(port: int, service: str, env_vars: str) -> None:
    if _port_open(port) or _listener_pid(port) is not None:
        raise StackError(
            f"port {port} is already in use by {_owner(port)}, not by this stack's {service}. "
            f"Stop that process or pick another port ({env_vars})."
        )


def _owner(port: int) -> str:
    pid = _listener_pid(port)
    if pid is None:
        return "another process"
    cmd = " ".join(_cmdline(pid))
    return f"pid {pid} ({cmd[:100]}{'...' if len(cmd) > 100 else ''})"


def _listener_pid(port: int) -> int | None:
    """Pid of the process listening on TCP `port` (Linux /proc), or None if unknown/none."""
    inodes = set(_listen_inodes(port))
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if not wanted.isdisjoint(_fd_links(fd_dir)):
            return int(fd_dir.parent.name)
    return None


def _fd_links(fd_dir: Path) -> Iterator[str]:
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return  # process gone or not ours to inspect
    for fd in fds:
        try:
            yield os.readlink(fd)
        except OSError:
            continue  # fd closed meanwhile (e.g. the one that listed this very directory)


def _listen_inodes(port: int) -> Iterator[str]:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                yield f[9]  # 0A = LISTEN; f[9] is the socket inode


def _poll(condition: Callable[[], bool], deadline: float, interval_s: float = POLL_S) -> bool:
    """Re-check `condition` every `interval_s` until it holds (True) or `deadline` passes."""
    while True:
        if condition():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval_s, remaining))


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop
    (e.g. an async test or notebook): then it runs on a private loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _tail_text(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _tail_file(path: Path, n: int) -> str:
    try:
        return _tail_text(path.read_text(errors="replace"), n) or "(empty)"
    except OSError:
        return "(no log file)"
