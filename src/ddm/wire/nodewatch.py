"""Read timeout on data-node responses: a node connection that waits for a response and receives nothing for its
`read_timeout` (nodes.<n>.pool.read_timeout) is aborted.

The bound is on silence, per connection: every byte that arrives (BackendCore counts them in `rx_bytes`, the
only cost on the hot path) starts it again, so a long result that keeps streaming is never cut, while a statement
whose node sends nothing for read_timeout seconds is (a frozen or unreachable node, but also a `SELECT SLEEP(60)`
with a 30 s timeout: this is not a statement time limit). A connection whose reading ddm paused (its client reads
slower than the node sends) is not waiting on the node and is not timed out.

One `NodeWatch` per event loop looks at its connections every `tick` (at most 1 s, a quarter of the smallest
read_timeout below 4 s), so the error comes between read_timeout and read_timeout + tick after the last byte. An
aborted connection goes through `connection_lost` like any lost node connection: its client gets ER_CONNECTION_KILLED
(1927) naming the timeout (or is closed, when part of the result was already sent), the pool forgets it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from ddm_core.protocol import MODE_IDLE, MODE_RAW

log = logging.getLogger("ddm.wire.nodewatch")

DEFAULT_READ_TIMEOUT = 60.0  # as config.PoolConfig.read_timeout
MAX_TICK = 1.0


class NodeWatch:
    __slots__ = ("loop", "conns", "tick", "_timer", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.conns: dict[object, list] = {}  # connection -> [rx_bytes last seen, loop time it last moved]
        self.tick = MAX_TICK
        self._timer: asyncio.TimerHandle | None = None

    def track(self, conn) -> None:
        if conn.read_timeout <= 0:
            return
        self.conns[conn] = [-1, 0.0]
        if conn.read_timeout < 4 * self.tick:
            self.tick = max(0.05, conn.read_timeout / 4)
        if self._timer is None:
            self._timer = self.loop.call_later(self.tick, self.sweep)

    def untrack(self, conn) -> None:
        self.conns.pop(conn, None)

    def sweep(self) -> None:
        self._timer = None
        now = self.loop.time()
        expired = []
        for conn, seen in self.conns.items():
            mode = conn.mode
            if mode == MODE_IDLE or mode == MODE_RAW or conn.transport is None or not _reading(conn.transport):
                seen[0] = -1  # not waiting on the node (the connect phase has its own connect_timeout)
                continue
            rx = conn.rx_bytes
            if seen[0] != rx:
                seen[0], seen[1] = rx, now
            elif now - seen[1] >= conn.read_timeout:
                expired.append(conn)
        for conn in expired:
            self.conns.pop(conn, None)
            conn.read_timed_out()
        if self.conns:
            self._timer = self.loop.call_later(self.tick, self.sweep)


def _reading(transport) -> bool:
    try:
        return transport.is_reading()
    except (AttributeError, NotImplementedError):
        return True


_watches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def watch(loop: asyncio.AbstractEventLoop) -> NodeWatch:
    w = _watches.get(loop)
    if w is None:
        w = _watches[loop] = NodeWatch(loop)
    return w
