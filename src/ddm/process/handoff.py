"""Graceful version handoff: a new master takes the listening sockets over from the running one.

Protocol on the handoff unix socket (`<control socket>.handoff`), one JSON object per line:

    new -> old  {"cmd": "takeover", "pid": P, "version": V}
    old -> new  {"ok": true, "pid": O, "version": V, "generation": g, "addresses": [[host, port], ...],
                 "id_ranges": [[base, count, pid], ...], "notify_socket": ..., "watchdog_usec": ...}
                + the listening socket fds, attached to that line with SCM_RIGHTS
    ... the new master starts its workers on the very same sockets (same kernel accept queues); both generations
        accept side by side ...
    new -> old  {"cmd": "retire"}         (only once every new worker reported ready)
    old -> new  {"ok": true}              (old sent MAINPID=<new> to systemd, stops accepting, drains, exits 0)

Closing the connection before "retire" aborts: the old master just keeps serving. Because the listening sockets are
the same kernel objects (fds duplicated, never re-bound), a connection waiting in the accept queue is picked up by
whichever generation accepts next and nothing is dropped; the queue lives until the last holder closes its fd.

Worker ids: snowflake key generators and connection ids embed the worker id, so two generations alive at the same
time must not share ids. The old master reports the id ranges still in use (its own, plus those of any earlier
generation that is still draining, identified by the pid of its master); the new master takes the lowest free range
(`choose_id_base`). Within one master a restarted worker keeps its id.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field

WORKER_ID_LIMIT = 1024  # snowflake worker-id field: 10 bits
MAX_FDS = 64


class HandoffError(RuntimeError):
    pass


def handoff_path(control_path: str) -> str:
    return control_path + ".handoff"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def live_ranges(ranges: list[list[int]] | list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The (base, count, pid) ranges whose master is still alive (its workers exit before it does)."""
    return [(int(b), int(c), int(p)) for b, c, p in ranges if pid_alive(int(p))]


def choose_id_base(count: int, reserved: list[tuple[int, int, int]], limit: int = WORKER_ID_LIMIT) -> int:
    """Lowest base such that [base, base+count) overlaps no reserved (base, count, pid) range."""
    if count > limit:
        raise HandoffError(f"{count} workers do not fit in {limit} worker ids")
    base = 0
    for b, c, _ in sorted(reserved):
        if base + count <= b:
            break
        base = max(base, b + c)
    if base + count > limit:
        raise HandoffError(f"no free range of {count} worker ids below {limit} (reserved: {reserved})")
    return base


def send_msg(sock: socket.socket, msg: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode() + b"\n"
    if fds:
        # SCM_RIGHTS rides on the first byte; the rest of the line is sent normally.
        n = socket.send_fds(sock, [data], fds)
        if n < len(data):
            sock.sendall(data[n:])
    else:
        sock.sendall(data)


class LineReader:
    """Blocking line reader that collects fds passed with SCM_RIGHTS along the way."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.fds: list[int] = []

    def read(self) -> dict:
        while b"\n" not in self.buf:
            data, fds, flags, _ = socket.recv_fds(self.sock, 65536, MAX_FDS)
            self.fds.extend(fds)
            if flags & socket.MSG_CTRUNC:
                raise HandoffError("file descriptors truncated (too many sockets or RLIMIT_NOFILE reached)")
            if not data:
                raise HandoffError("connection closed by the other master")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


@dataclass
class Inherited:
    pid: int
    version: str
    generation: int
    sockets: list[socket.socket]
    id_ranges: list[tuple[int, int, int]]
    env: dict[str, str] = field(default_factory=dict)


class TakeoverClient:
    """The new master's side: `fetch()` the sockets, start workers, then `retire()` the old master."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.reader: LineReader | None = None

    def fetch(self, version: str) -> Inherited:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise HandoffError(f"no running ddm-server to take over at {self.path}: {e}") from e
        self.sock = sock
        self.reader = LineReader(sock)
        send_msg(sock, {"cmd": "takeover", "pid": os.getpid(), "version": version})
        reply = self.reader.read()
        fds = self.reader.fds
        if not reply.get("ok"):
            for fd in fds:
                os.close(fd)
            raise HandoffError(f"takeover refused: {reply.get('error', reply)}")
        socks = []
        for fd in fds:
            s = socket.socket(fileno=fd)  # family/type are read back from the fd
            os.set_inheritable(fd, False)
            socks.append(s)
        env = {}
        if reply.get("notify_socket"):
            env["NOTIFY_SOCKET"] = reply["notify_socket"]
        if reply.get("watchdog_usec"):
            env["WATCHDOG_USEC"] = str(reply["watchdog_usec"])
        return Inherited(pid=int(reply["pid"]), version=str(reply.get("version", "?")),
                         generation=int(reply.get("generation", 0)), sockets=socks,
                         id_ranges=live_ranges(reply.get("id_ranges", [])), env=env)

    def retire(self) -> None:
        assert self.sock is not None and self.reader is not None
        send_msg(self.sock, {"cmd": "retire"})
        reply = self.reader.read()
        if not reply.get("ok"):
            raise HandoffError(f"old master refused to retire: {reply}")
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def socket_address(sock: socket.socket) -> tuple[str, int]:
    addr = sock.getsockname()
    return str(addr[0]), int(addr[1])
