"""Row-lock waits across data nodes in a sharded transaction.

Two transactions that lock rows on two nodes in opposite orders wait for each other, but each node sees only one
wait and InnoDB's deadlock detection finds nothing: both wait for `innodb_lock_wait_timeout` (50 s by default).
ddm knows which of its transactions span several nodes, so a statement of such a transaction that is still running
after `server.cross_node_lock_wait` seconds is looked at: if its node reports the transaction in LOCK WAIT
(information_schema.INNODB_TRX, asked on a separate pooled connection), the statement is killed (KILL QUERY), the
whole transaction is rolled back on every node, and the client gets ER_LOCK_DEADLOCK (1213, SQLSTATE 40001), which
drivers and applications retry, as they do for a deadlock InnoDB finds itself. A wait that long behind a lock held
by a transaction that is not waiting in turn is ended the same way: a timeout-based detection, traded for not
holding both transactions for 50 s. Statements of one-node transactions are left to InnoDB. A locking SELECT over
several nodes in a transaction takes the buffered path (`ddm.execute.executor._stream_select` declines it), whose per-node
statements are guarded here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from ddm.execute.pool import PoolTimeout
from ddm.wire.backend import BackendError, NodeUnavailable

if TYPE_CHECKING:
    from ddm.execute.client import ClientSession
    from ddm.wire.backend import BackendConnection

log = logging.getLogger("ddm.execute.lockwait")
T = TypeVar("T")


class CrossNodeDeadlock(Exception):
    """A statement of a transaction spanning data nodes was killed while waiting for a row lock."""

    def __init__(self, node: str, waited: float) -> None:
        super().__init__(f"lock wait of more than {waited:g} s on data node '{node}' in a transaction that spans "
                         "data nodes")
        self.node = node


def spans_nodes(client: ClientSession, node: str) -> bool:
    """Whether a statement on `node` belongs to an explicit transaction that holds (or will hold) several nodes."""
    if client.txn_begin is None:
        return False
    nodes = set(client.txn_conns)
    if client.conn is not None:
        nodes.add(client.conn.node_name)
    nodes.add(node)
    return len(nodes) > 1


async def guard(client: ClientSession, conn: BackendConnection, work: Awaitable[T]) -> T:
    """Await `work` (a statement running on `conn`); if it outlasts `server.cross_node_lock_wait` while its node has
    the transaction in LOCK WAIT, kill it and raise CrossNodeDeadlock."""
    limit = client.config.server.cross_node_lock_wait
    task = asyncio.ensure_future(work)
    if not limit:
        return await task
    victim = False
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=limit)
            if task.done() or conn.forwarded_any or conn.closed:
                break  # finished, or part of its answer already went to the client: it cannot be replaced now
            if await _lock_waiting(client, conn):
                victim = True
                conn.sink = None  # a forwarded statement's ER_QUERY_INTERRUPTED must not reach the client
                await _kill_query(client, conn)
                break
        result = await task
    except asyncio.CancelledError:
        task.cancel()
        raise
    except BackendError:
        if victim:
            raise CrossNodeDeadlock(conn.node_name, limit) from None
        raise
    if victim:  # it completed just as it was killed: the transaction is rolled back all the same
        raise CrossNodeDeadlock(conn.node_name, limit)
    return result


async def _side_query(client: ClientSession, node: str, sql: bytes) -> list[bytes] | None:
    pool = client.pool_for(node)
    try:
        side = await pool.acquire()
    except (NodeUnavailable, PoolTimeout, OSError, asyncio.TimeoutError) as exc:
        log.info("lock-wait check on data node %s: no connection: %s", node, exc)
        return None
    try:
        return (await side.query(sql)).rows
    except (BackendError, NodeUnavailable) as exc:
        log.info("lock-wait check on data node %s failed: %s", node, exc)
        return None
    finally:
        side.pool.release(side) if side.pool is not None else side.close()


async def _lock_waiting(client: ClientSession, conn: BackendConnection) -> bool:
    rows = await _side_query(client, conn.node_name, b"SELECT trx_state FROM information_schema.INNODB_TRX "
                                                     b"WHERE trx_mysql_thread_id = %d" % conn.conn_id)
    # a text row: one length-encoded string
    return bool(rows) and rows[0][1:] == b"LOCK WAIT"


async def _kill_query(client: ClientSession, conn: BackendConnection) -> None:
    log.info("killing a statement of client %s waiting for a row lock on data node %s (transaction across nodes)",
             client.conn_id, conn.node_name)
    await _side_query(client, conn.node_name, b"KILL QUERY %d" % conn.conn_id)
