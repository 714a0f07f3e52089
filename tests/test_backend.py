"""BackendConnection's node-statement cache without a data node: a client PREPARE always reaches the node, the
schema epoch invalidates cached statements, references decide when COM_STMT_CLOSE goes out (issue 9 item 2)."""

from __future__ import annotations

import asyncio
import struct

from ddm.wire import backend
from ddm.wire.backend import BackendConnection

OK_PREPARE = b"\x00" + struct.pack("<IHHxH", 0, 1, 1, 0)


class Wire:
    """A transport that records what is written."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def closes(self) -> list[int]:
        """The statement ids of the COM_STMT_CLOSE packets written (each packet: 4-byte header, 0x19, id)."""
        ids = []
        for chunk in self.out:
            pos = 0
            while pos < len(chunk):
                n = int.from_bytes(chunk[pos:pos + 3], "little")
                payload = chunk[pos + 4:pos + 4 + n]
                if payload[:1] == b"\x19":
                    ids.append(struct.unpack_from("<I", payload, 1)[0])
                pos += 4 + n
        return ids


class FakeConn(BackendConnection):
    """`command` answers every COM_STMT_PREPARE with a new statement id."""

    def __init__(self) -> None:
        super().__init__("n0", "u", "p", 0)
        self.transport = Wire()
        self.mode = 0
        self.next_id = 1
        self.prepares = 0

    async def command(self, payload: bytes, kind: int = 0) -> list[bytes]:
        if self.pending_close:
            self.flush_closes()
        assert payload[:1] == b"\x16"
        self.prepares += 1
        sid, self.next_id = self.next_id, self.next_id + 1
        return [b"\x00" + struct.pack("<IHHxH", sid, 1, 1, 0)]


def run(coro):
    return asyncio.run(coro)


def test_fresh_prepare_reaches_the_node_and_retires_the_cached_statement():
    async def go() -> None:
        conn = FakeConn()
        a, packets = await conn.prepare(b"SELECT ?")
        assert packets and conn.prepares == 1
        again, packets = await conn.prepare(b"SELECT ?")  # an execute elsewhere may reuse it
        assert again is a and not packets and conn.prepares == 1
        conn.hold(a)  # a client statement uses it
        b, packets = await conn.prepare(b"SELECT ?", fresh=True)  # a client's PREPARE: always the node's answer
        assert b is not a and packets and conn.prepares == 2
        assert conn.cached_stmt(b"SELECT ?") is b
        assert a.retired and not a.closed  # still held: closed when its holder lets go
        conn.in_pool = True
        conn.drop(a)
        assert a.closed and conn.transport.closes() == [a.stmt_id]
    run(go())


def test_schema_epoch_invalidates_cached_statements():
    async def go() -> None:
        conn = FakeConn()
        a, _ = await conn.prepare(b"SELECT 1")
        backend.bump_schema_epoch()
        assert conn.cached_stmt(b"SELECT 1") is None  # the fast paths take the slow one
        b, packets = await conn.prepare(b"SELECT 1")
        assert b is not a and packets  # prepared again
        assert a.retired
    run(go())


def test_closes_wait_until_nothing_runs_on_the_connection():
    async def go() -> None:
        conn = FakeConn()
        a, _ = await conn.prepare(b"SELECT 2")
        conn.hold(a)
        await conn.prepare(b"SELECT 2", fresh=True)
        conn.drop(a)  # lent out (not in the pool): a close now could land inside a relayed command
        assert conn.transport.closes() == [] and conn.pending_close == [a.stmt_id]
        await conn.prepare(b"SELECT 3")  # the next command sends it first
        assert conn.transport.closes() == [a.stmt_id] and not conn.pending_close
    run(go())


def test_sweep_closes_idle_unheld_statements_only():
    async def go() -> None:
        conn = FakeConn()
        conn.in_pool = True
        held, _ = await conn.prepare(b"SELECT 4")
        idle, _ = await conn.prepare(b"SELECT 5")
        conn.hold(held)
        now = idle.idle_since
        assert conn.sweep_statements(now + 1, 30) == 0
        assert conn.sweep_statements(now + 31, 30) == 1
        assert conn.transport.closes() == [idle.stmt_id]
        assert conn.cached_stmt(b"SELECT 4") is held and conn.cached_stmt(b"SELECT 5") is None
    run(go())


def test_reset_forgets_statements_without_closing_them():
    async def go() -> None:
        conn = FakeConn()
        conn.in_pool = True
        a, _ = await conn.prepare(b"SELECT 6")
        conn.hold(a)
        conn.forget_statements()  # after COM_RESET_CONNECTION the node has none: ids must not be closed again
        conn.drop(a)
        assert conn.transport.closes() == [] and a.closed
    run(go())


def test_long_data_never_goes_to_a_node_statement_only_others_used():
    from ddm.frontend.connection import ClientConnection, ClientStatement

    async def go() -> None:
        conn = FakeConn()
        shared, _ = await conn.prepare(b"INSERT INTO t VALUES (?)")  # another client's, executed inline there
        stmt = ClientStatement(1, b"INSERT INTO t VALUES (?)", "n0", 1, 0, [])
        assert await ClientConnection.node_statement(None, conn, stmt, stmt.sql) is shared  # no long data: reused
        stmt.long_data = [b"\x18\x01\x00\x00\x00\x00\x00data"]
        own = await ClientConnection.node_statement(None, conn, stmt, stmt.sql)
        assert own is not shared and conn.prepares == 2  # its own, prepared for it
        stmt.hold(conn, own)
        assert await ClientConnection.node_statement(None, conn, stmt, stmt.sql) is own  # and kept for it
    run(go())
