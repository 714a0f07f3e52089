"""A worker process: one uvloop event loop running one `ddm.process.server.Server` on the listening sockets it inherited.

The master forks workers (no exec: fast restarts, the validated config is already in memory). Each worker talks to
the master over its own socketpair with length-prefixed pickled dicts (the peer is our own parent, so pickle is
safe):

    master -> worker  {"op": "reload", "seq": n, "config": Config}   -> {"op": "ack", "seq": n, "ok": bool, "error": s}
                      {"op": "log-level", "level": "debug"}
                      {"op": "stats", "seq": n}                       -> {"op": "stats", "seq": n, "data": {...}}
                      {"op": "stop", "drain": seconds}                 (graceful: stop accepting, drain, close, exit 0)
    worker -> master  {"op": "ready"} once serving, {"op": "hb"} every HEARTBEAT seconds (hang detection)

EOF on the channel means the master is gone: the worker drains and exits, so no orphan keeps serving a port nobody
manages. SIGTERM does the same (systemd may signal the whole cgroup); SIGINT, SIGHUP and SIGUSR2 are the master's
business and ignored here (a terminal's Ctrl-C reaches the whole process group).
"""

from __future__ import annotations

import asyncio
import copyreg
import os
import pickle
import signal
import socket
import struct
import types
from typing import Any

from ddm.process import logs

HEARTBEAT = 1.0
_HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024

log = logs.get_logger("ddm.process.worker")


# Config snapshots hold MappingProxyType (read-only dicts), which pickle refuses; rebuild them from a plain dict
# through a module-level function (pickle finds callables by qualified name; "mappingproxy" is not one).
def mappingproxy(d: dict) -> types.MappingProxyType:
    return types.MappingProxyType(d)


def _reduce_mappingproxy(m: types.MappingProxyType) -> tuple[Any, tuple[dict]]:
    return mappingproxy, (dict(m),)


copyreg.pickle(types.MappingProxyType, _reduce_mappingproxy)


def encode(msg: dict) -> bytes:
    body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def decode_frames(buf: bytearray) -> list[dict]:
    """Remove and return every complete frame at the start of `buf`."""
    out = []
    while len(buf) >= _HEADER.size:
        (n,) = _HEADER.unpack_from(buf)
        if n > MAX_FRAME:
            raise ValueError(f"frame of {n} bytes")
        if len(buf) < _HEADER.size + n:
            break
        out.append(pickle.loads(bytes(buf[_HEADER.size:_HEADER.size + n])))
        del buf[:_HEADER.size + n]
    return out


class Worker:
    def __init__(self, config: Any, worker_id: int, sockets: list[socket.socket], chan: socket.socket) -> None:
        self.config = config
        self.worker_id = worker_id
        self.sockets = sockets
        self.chan = chan
        self.stop_event = asyncio.Event()
        self.drain_timeout = float(config.server.drain_timeout)
        self.writer: asyncio.StreamWriter | None = None
        self.server: Any = None

    def send(self, msg: dict) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(encode(msg))

    def request_stop(self, drain: float | None = None) -> None:
        if drain is not None:
            self.drain_timeout = drain
        self.stop_event.set()

    async def run(self) -> int:
        from ddm.process import server as server_mod  # looked up at run time: the module the master imported

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        reader, self.writer = await asyncio.open_unix_connection(sock=self.chan)
        self.server = server_mod.Server(self.config, worker_id=self.worker_id)
        await self.server.start(self.sockets)
        self.sockets = []  # the server owns them now; stop_accepting() closes this process's copies
        self.send({"op": "ready", "pid": os.getpid()})
        log.info("worker ready", worker_id=self.worker_id, generation=self.config.generation)
        tasks = [asyncio.ensure_future(self._read(reader)), asyncio.ensure_future(self._heartbeat())]
        await self.stop_event.wait()
        log.info("worker stopping", drain=self.drain_timeout)
        await self.server.stop_accepting()
        await self.server.drain(self.drain_timeout)
        await self.server.close()
        for t in tasks:
            t.cancel()
        log.info("worker stopped")
        return 0

    async def _heartbeat(self) -> None:
        while True:
            self.send({"op": "hb"})
            await asyncio.sleep(HEARTBEAT)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (n,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                msg = pickle.loads(await reader.readexactly(n))
                self._handle(msg)
        except (asyncio.IncompleteReadError, ConnectionError):
            log.warning("master went away; draining")
            self.request_stop()

    def _handle(self, msg: dict) -> None:
        op = msg.get("op")
        if op == "reload":
            try:
                self.server.apply_config(msg["config"])
                self.config = msg["config"]
                self.send({"op": "ack", "seq": msg["seq"], "ok": True})
                log.info("config applied", generation=self.config.generation)
            except Exception as e:  # report to the master (and `ddm reload`), keep serving the old snapshot
                log.exception("apply_config failed")
                self.send({"op": "ack", "seq": msg["seq"], "ok": False, "error": f"{type(e).__name__}: {e}"})
        elif op == "log-level":
            logs.set_level(msg["level"])
        elif op == "stats":
            try:
                data = self.server.stats()
            except Exception as e:
                data = {"error": str(e)}
            self.send({"op": "stats", "seq": msg["seq"], "data": data})
        elif op == "stop":
            self.request_stop(msg.get("drain"))
        else:
            log.warning("unknown message from master", op=op)


def worker_main(config: Any, worker_id: int, sockets: list[socket.socket], chan: socket.socket) -> int:
    """Entry point in the forked child. Returns the exit code; the caller must os._exit() with it."""
    import uvloop

    # The master's Python signal handlers and its wakeup fd came along with fork(): reset them.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    logs.set_role(worker_id)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)  # Server() looks the loop up in its constructor
    try:
        return loop.run_until_complete(Worker(config, worker_id, sockets, chan).run())
    except BaseException:
        log.exception("worker failed")
        return 1
    finally:
        try:
            loop.close()
        except Exception:
            pass
