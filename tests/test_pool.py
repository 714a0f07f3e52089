"""Pool bookkeeping without data nodes: lending, giving back (twice, too), waiters, discarding."""

from __future__ import annotations

import asyncio

from ddm.config import EndpointConfig, NodeConfig, PoolConfig
from ddm.execute.pool import Pool
from ddm.wire.backend import BackendConnection

NODE = NodeConfig(name="n0", primary=EndpointConfig(), user="u", password="p", pool=PoolConfig(max_size=2))


def lent(pool: Pool) -> BackendConnection:
    """A connection as if `_open` had made it and lent it out."""
    conn = BackendConnection("n0", "u", "p", 0, pool=pool)
    conn.mode = 0
    pool.size += 1
    return conn


def test_a_connection_given_back_twice_is_lent_once():
    async def run() -> None:
        pool = Pool(NODE, 0)
        conn = lent(pool)
        pool.release(conn)
        pool.release(conn)  # e.g. a client that vanished mid-command, settled from two places
        assert list(pool.idle) == [conn] and pool.size == 1
        assert pool.try_acquire() is conn
        assert pool.try_acquire() is None
        pool.release(conn)
        assert list(pool.idle) == [conn]

    asyncio.run(run())


def test_release_hands_the_connection_to_a_waiter_first():
    async def run() -> None:
        pool = Pool(NODE, 0)
        a, b = lent(pool), lent(pool)
        waiter = asyncio.ensure_future(pool.acquire())  # max_size reached: it waits
        await asyncio.sleep(0)
        pool.release(a)
        assert await waiter is a and not pool.idle
        pool.release(b)
        assert list(pool.idle) == [b]

    asyncio.run(run())


def test_discarding_an_idle_connection_forgets_it():
    async def run() -> None:
        pool = Pool(NODE, 0)
        conn = lent(pool)
        pool.release(conn)
        pool.discard(conn)
        assert not pool.idle and pool.size == 0 and not conn.in_pool
        conn.closed = True
        pool.release(conn)  # no longer this pool's: closed, not taken back
        assert not pool.idle and pool.size == 0

    asyncio.run(run())


def test_a_connection_that_may_hold_user_locks_is_not_pooled():
    async def run() -> None:
        pool = Pool(NODE, 0)
        conn = lent(pool)
        conn.user_locks = True  # GET_LOCK() ran there and it was not reset: closing releases the locks
        pool.release(conn)
        assert not pool.idle and pool.size == 0 and conn.closed

    asyncio.run(run())


def test_release_sends_the_pending_statement_closes():
    class Wire:
        def __init__(self) -> None:
            self.out: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.out.append(data)

    async def run() -> None:
        pool = Pool(NODE, 0)
        conn = lent(pool)
        conn.transport = Wire()
        conn.pending_close = [7]
        pool.release(conn)
        assert conn.transport.out == [b"\x05\x00\x00\x00\x19\x07\x00\x00\x00"] and not conn.pending_close

    asyncio.run(run())
