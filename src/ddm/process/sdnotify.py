"""A tiny sd_notify(3) client: datagrams of "KEY=value" lines to $NOTIFY_SOCKET; a no-op when it is unset.

Used by the master only (workers never notify). Quirks handled:
- "@name" in NOTIFY_SOCKET is a socket in the abstract namespace (leading NUL byte, no file).
- WATCHDOG_USEC/WATCHDOG_PID: systemd sets WATCHDOG_PID to the pid it started. After a handoff the new master is
  not that pid but is the main pid (MAINPID=), so the caller passes the pids it accepts as "us".
- BARRIER=1 (systemd >= 246): send the write end of a pipe; systemd closes it once every earlier message has been
  processed. The old master uses it after MAINPID= so systemd follows the new master before the old one exits
  (otherwise the exit of the main pid could be taken for the service dying).
"""

from __future__ import annotations

import array
import os
import select
import socket
import time
from collections.abc import Iterable


def _address() -> str | bytes | None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    return None  # vsock:... (VM guests) is not supported


def enabled() -> bool:
    return _address() is not None


def notify(*lines: str, fds: Iterable[int] = ()) -> bool:
    """Send one datagram with the given "KEY=value" lines. Returns False when not under systemd or on error."""
    addr = _address()
    if addr is None:
        return False
    data = "\n".join(lines).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            fd_list = list(fds)
            if fd_list:
                # not socket.send_fds(): before Python 3.12 it silently drops the address argument
                s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fd_list))], 0, addr)
            else:
                s.sendto(data, addr)
        return True
    except OSError:
        return False


def ready(status: str | None = None) -> bool:
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def reloading(status: str | None = None) -> bool:
    # MONOTONIC_USEC (CLOCK_MONOTONIC in microseconds) is required with RELOADING=1 by systemd >= 253
    # (Type=notify-reload); older versions ignore it.
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *([f"STATUS={status}"] if status else []))


def stopping(status: str | None = None) -> bool:
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def mainpid(pid: int) -> bool:
    return notify(f"MAINPID={pid}")


def barrier(timeout: float = 2.0) -> bool:
    """Wait until systemd has processed every message sent before (BARRIER=1). False on timeout or no systemd."""
    if _address() is None:
        return False
    r, w = os.pipe()
    try:
        sent = notify("BARRIER=1", fds=[w])
        os.close(w)
        w = -1
        if not sent:
            return False
        p = select.poll()
        p.register(r, select.POLLHUP)  # POLLHUP once systemd closed its copy of the write end
        return bool(p.poll(timeout * 1000))
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def watchdog_interval(pids: Iterable[int] = ()) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when the watchdog is off or not ours."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not enabled():
        return None
    wpid = os.environ.get("WATCHDOG_PID")
    if wpid and wpid.isdigit() and int(wpid) not in {os.getpid(), *pids}:
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
