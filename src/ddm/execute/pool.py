"""Connection pools to data nodes: one pool per (data node, response flavour).

Connections are lent per statement (or per transaction, which pins one until COMMIT/ROLLBACK) and come back
with whatever session state the last client left; `ddm.wire.session` reconciles that lazily on the next use, so a
pool does not pay a reset per statement. `try_acquire` is the synchronous fast path of the query loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from ddm.config import NodeConfig
from ddm.wire.backend import BackendConnection, NodeUnavailable

log = logging.getLogger("ddm.execute.pool")


class PoolTimeout(Exception):
    """No connection became free within the pool's acquire_timeout."""


class Pool:
    def __init__(self, node: NodeConfig, flavour: int) -> None:
        self.node = node
        self.flavour = flavour
        self.cfg = node.pool
        self.idle: deque[BackendConnection] = deque()
        self.shared: set[BackendConnection] = set()  # lent for good to ddm.execute.pipeline (shed_statements looks there)
        self.size = 0  # connections open or opening, lent or idle
        self.waiters: deque[asyncio.Future] = deque()
        self.closed = False
        self.created_total = 0
        self.failures = 0
        self._maint: asyncio.Task | None = None

    # --- lending ----------------------------------------------------------------------------------------------
    def try_acquire(self) -> BackendConnection | None:
        """An idle healthy connection, or None (the caller then awaits `acquire`)."""
        idle = self.idle
        while idle:
            conn = idle.pop()  # LIFO: the most recently used connection is the warmest
            conn.in_pool = False
            if conn.closed:
                self.size -= 1 if conn.pool is self else 0
                conn.pool = None
                continue
            return conn
        return None

    async def acquire(self) -> BackendConnection:
        conn = self.try_acquire()
        if conn is not None:
            return conn
        if self.closed:
            raise NodeUnavailable(self.node.name, "pool closed (configuration reloaded)")
        if self.size < self.cfg.max_size:
            return await self._open()
        fut = asyncio.get_event_loop().create_future()
        self.waiters.append(fut)
        try:
            return await asyncio.wait_for(fut, self.cfg.acquire_timeout)
        except asyncio.TimeoutError:
            raise PoolTimeout(f"no free connection to data node '{self.node.name}' within "
                              f"{self.cfg.acquire_timeout:g}s (pool max_size {self.cfg.max_size})") from None
        finally:
            if not fut.done():
                fut.cancel()
            with contextlib.suppress(ValueError):
                self.waiters.remove(fut)

    async def _open(self) -> BackendConnection:
        self.size += 1
        ep = self.node.primary
        conn = BackendConnection(self.node.name, self.node.user, self.node.password, self.flavour,
                                 tls=self.node.tls, pool=self, read_timeout=self.cfg.read_timeout)
        try:
            await conn.connect(ep.host, ep.port, ep.unix_socket, self.cfg.connect_timeout)
        except BaseException:
            self.size -= 1
            self.failures += 1
            conn.pool = None
            conn.close()
            self._wake_next()
            raise
        self.created_total += 1
        return conn

    def release(self, conn: BackendConnection) -> None:
        """Give a connection back (called when its statement or transaction is over)."""
        if conn.in_pool:
            return  # given back twice (a client that vanished mid-command): once is what counts
        if conn.pool is not self:
            conn.close()
            return
        if conn.closed or conn.broken or self.closed or conn.mode != 0 or conn.user_locks:
            # (user_locks: a client's GET_LOCK() locks may be held there; closing releases them on the node.
            # ddm.frontend.connection resets such a connection before it gets here: this is the safety net.)
            self.discard(conn)
            conn.close()
            return
        if conn.pending_close:
            conn.flush_closes()
        now = time.monotonic()
        conn.last_used = now
        if now - conn.created > self.cfg.max_lifetime:
            self.discard(conn)
            conn.close()
            return
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        conn.in_pool = True
        self.idle.append(conn)

    def discard(self, conn: BackendConnection) -> None:
        """Forget a connection that died or was closed; a waiter may now open a new one."""
        if conn.pool is self:
            conn.pool = None
            self.size -= 1
            if conn.in_pool:
                conn.in_pool = False
                with contextlib.suppress(ValueError):
                    self.idle.remove(conn)
            self._wake_next()

    def _wake_next(self) -> None:
        if self.waiters and self.size < self.cfg.max_size and not self.closed:
            fut = self.waiters.popleft()
            if not fut.done():
                task = asyncio.ensure_future(self._open())
                task.add_done_callback(lambda t, f=fut: _settle(f, t))

    # --- upkeep -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._maint is None:
            self._maint = asyncio.ensure_future(self._maintain())

    async def _maintain(self) -> None:
        """Close idle connections past idle_timeout/max_lifetime, ping the rest, keep min_size open."""
        interval = max(0.5, min(self.cfg.ping_interval, self.cfg.idle_timeout, self.cfg.statement_idle_timeout) / 2)
        while not self.closed:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in self.idle:
                if conn.stmts and not conn.closed:
                    # node statements no client holds, unused for statement_idle_timeout or from before a DDL
                    conn.sweep_statements(now, self.cfg.statement_idle_timeout)
            for conn in list(self.idle):
                expired = now - conn.created > self.cfg.max_lifetime
                too_idle = now - conn.last_used > self.cfg.idle_timeout and self.size > self.cfg.min_size
                if expired or too_idle:
                    self.idle.remove(conn)
                    conn.in_pool = False
                    self.discard(conn)
                    conn.close()
                elif now - conn.last_used > self.cfg.ping_interval:
                    self.idle.remove(conn)
                    conn.in_pool = False
                    try:
                        await conn.command(b"\x0e")  # COM_PING
                    except Exception:
                        self.discard(conn)
                        conn.close()
                        continue
                    self.release(conn)
            while self.size < self.cfg.min_size and not self.closed:
                try:
                    self.release(await self._open())
                except Exception as exc:
                    log.warning("cannot keep min_size connections to %s: %s", self.node.name, exc)
                    break

    async def close(self, drain_timeout: float = 0) -> None:
        """Stop lending; close idle connections now and lent ones as they come back."""
        self.closed = True
        if self._maint is not None:
            self._maint.cancel()
        while self.idle:
            conn = self.idle.pop()
            conn.in_pool = False
            self.discard(conn)
            conn.close()
        for fut in self.waiters:
            if not fut.done():
                fut.set_exception(NodeUnavailable(self.node.name, "pool closed"))

    def stats(self) -> dict:
        return {"node": self.node.name, "size": self.size, "idle": len(self.idle), "waiting": len(self.waiters),
                "created": self.created_total, "failures": self.failures}


def _settle(fut: asyncio.Future, task: asyncio.Task) -> None:
    if fut.done():
        if not task.cancelled() and task.exception() is None:
            task.result().pool.release(task.result())
        return
    if task.cancelled():
        fut.cancel()
    elif task.exception() is not None:
        fut.set_exception(task.exception())
    else:
        fut.set_result(task.result())


class PoolSet:
    """The pools of one configuration snapshot, created on first use."""

    def __init__(self, nodes: dict) -> None:
        self.nodes = nodes
        self.pools: dict[tuple[str, int], Pool] = {}

    def get(self, node: str, flavour: int) -> Pool:
        pool = self.pools.get((node, flavour))
        if pool is None:
            pool = self.pools[(node, flavour)] = Pool(self.nodes[node], flavour)
            pool.start()
        return pool

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()

    def stats(self) -> list[dict]:
        return [p.stats() for p in self.pools.values()]
