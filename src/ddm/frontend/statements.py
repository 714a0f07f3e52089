"""The client's prepared statements: COM_STMT_PREPARE / EXECUTE / FETCH / RESET / CLOSE
bookkeeping, re-prepare per node connection, the node statements each client statement holds.

A mixin of `ddm.frontend.connection.ClientConnection`: it uses the connection's state (see its __init__).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field

from ddm.execute import executor
from ddm.frontend import connid
from ddm.frontend.pinning import CURSOR_EXISTS, NOTE_WORDS, USER_LOCK_CALL
from ddm.protect import limits, privileges
from ddm.sharding.plan import PlanError, database_ddl_refusal
from ddm.wire import backend
from ddm.wire.backend import BackendConnection
from ddm.wire.constants import er as ER
from ddm.wire.constants.command import QUERY as COM_QUERY
from ddm_core.packets import first_word, frame
from ddm_core.protocol import KIND_ROWS

BULK_SEND_TYPES = 128  # STMT_BULK_FLAG_SEND_TYPES_TO_SERVER

log = logging.getLogger("ddm.frontend.connection")  # one logger name for the client connection

@dataclass
class ClientStatement:
    """A statement the client prepared; it is prepared on backend connections on demand (by its SQL text)."""

    stmt_id: int
    sql: bytes
    node: str
    nparams: int
    ncols: int
    response: list[bytes]  # the prepare response as the first data node sent it (id patched per client)
    param_types: bytes | None = None  # types from the last execute that sent them (new-params-bound flag)
    long_data: list[bytes] = field(default_factory=list)
    long_data_size: int = 0  # bytes of data in long_data; -1: over server.max_long_data_size (ddm.protect.limits)
    cursor_conn: BackendConnection | None = None
    # pass-through: the physical database current at PREPARE. MySQL binds a statement's unqualified tables in the
    # database current when it was prepared, so every execute (and re-prepare on another connection) runs there,
    # whatever USE came since.
    phys: bytes | None = None
    plan: object | None = None  # sharded databases: the statement's plan and lexed text
    logical_db: str | None = None  # sharded databases: the logical database the plan was made for
    lexed: object | None = None
    last_payload: bytes = b""
    cursor_bstmt: backend.Prepared | None = None  # the node statement whose cursor is open on cursor_conn
    # the node statements this one used, with their connections: each holds a reference (Prepared.refs), dropped
    # when the client closes the statement or leaves (`ClientConnection._drop_statement`)
    held: dict = field(default_factory=dict)
    # its first word when executing it changes what ddm tracks of the session (STICKY_KEYWORDS, DDL_WORDS) or it
    # calls GET_LOCK()/RELEASE_ALL_LOCKS() (then b"" unless the word is one of those): noted at each execute
    effects: bytes | None = None

    def hold(self, conn: BackendConnection, bstmt: backend.Prepared) -> None:
        if bstmt not in self.held:
            self.held[bstmt] = conn
            bstmt.refs += 1


class PreparedStatementsMixin:
    # The attributes are ClientConnection's (its __init__; ddm.execute.client.ClientSession lists most).

    def _drop_statements(self) -> None:
        """Every statement of the client is closed: let go of the node statements they hold."""
        stmts, self.stmts = self.stmts, {}
        for stmt in stmts.values():
            self._drop_statement(stmt)

    @staticmethod
    def _drop_statement(stmt: ClientStatement) -> None:
        held, stmt.held = stmt.held, {}
        for bstmt, conn in held.items():
            conn.drop(bstmt)

    async def execute_on(self, conn: BackendConnection, stmt: ClientStatement, bstmt, payload: bytes) -> None:
        """Send the statement's buffered long data, then its execute, with the backend statement id."""
        stmt.hold(conn, bstmt)
        for chunk in stmt.long_data:
            conn.send_only(b"\x18" + struct.pack("<I", bstmt.stmt_id) + chunk[5:])
        stmt.long_data = []
        await self.forward_and_wait(conn, frame(self.execute_payload(stmt, bstmt, payload), 0))

    async def _com_stmt_prepare(self, payload: bytes) -> None:
        self.last_prepared = 0  # a failed PREPARE leaves statement id -1 naming nothing, as on MariaDB
        sql = payload[1:]
        guard = privileges.guard(self.config, self.user)
        refusal = guard.check(sql, self.session.db) if guard is not None else None
        if refusal is not None:
            raise PlanError(refusal.code, refusal.message.replace("{host}", self.peer))
        if connid.HINT(sql) is not None:
            sql = connid.rewrite(sql, self.conn_id) or sql  # ddm's id, not the node connection's
        if first_word(sql) in (b"CREATE", b"DROP"):
            refused = database_ddl_refusal(sql)
            if refused is not None:
                raise PlanError(ER.NOT_SUPPORTED_YET, refused)
        dbconf = self.session.dbconf
        if dbconf is not None and dbconf.tables:
            plan, lexed, prepared, node = await executor.prepare(self, sql)
            self._register_statement(sql, node, prepared, plan, lexed, logical_db=self.session.db)
            return
        node, phys = self._target()
        conn = await self._conn_for(node, phys)
        try:
            # always the node's answer: the tables as they are now (a cached statement may predate a DDL)
            prepared, _ = await conn.prepare(sql, fresh=True)
        finally:
            if conn is not self.conn:
                conn.pool.release(conn) if conn.pool else conn.close()
        self._register_statement(sql, node, prepared, phys=phys, conn=conn)

    def _register_statement(self, sql: bytes, node: str, prepared, plan=None, lexed=None,
                            phys: bytes | None = None, logical_db: str | None = None,
                            conn: BackendConnection | None = None) -> None:
        response = prepared.response
        stmt_id = self.next_stmt_id
        self.next_stmt_id += 1
        self.last_prepared = stmt_id
        stmt = self.stmts[stmt_id] = ClientStatement(stmt_id, sql, node, prepared.nparams, prepared.ncols, response,
                                                     phys=phys, plan=plan, lexed=lexed, logical_db=logical_db)
        if conn is not None and not prepared.closed:
            stmt.hold(conn, prepared)
        kw = first_word(sql)
        if kw in NOTE_WORDS:
            stmt.effects = kw
        elif USER_LOCK_CALL.search(sql) is not None:
            stmt.effects = b""
        first = response[0]
        out = [frame(first[:1] + struct.pack("<I", stmt_id) + first[5:], 1)]
        out.extend(frame(p, (i + 2) & 0xFF) for i, p in enumerate(response[1:]))
        self.transport.write(b"".join(out))

    def _com_stmt_execute(self, payload: bytes) -> None:
        stmt_id = struct.unpack_from("<I", payload, 1)[0]
        stmt = self.stmts.get(stmt_id)
        if stmt is None:
            self.send_error(ER.UNKNOWN_STMT_HANDLER, f"Unknown prepared statement handler ({stmt_id}) given to "
                                                 "mysqld_stmt_execute")
            self.command_done()
            return
        if stmt.long_data_size < 0:  # its long data went over max_long_data_size and was dropped (ddm.protect.limits)
            stmt.long_data_size = 0
            self.send_error(ER.UNKNOWN_ERROR, limits.LONG_DATA_TOO_LONG)
            self.command_done()
            return
        if stmt.effects is not None:
            self._note_sticky(stmt.effects, stmt.sql)  # CREATE TEMPORARY, GET_LOCK(), DDL: as for a text one
        if stmt.plan is not None:
            if stmt.logical_db != self.session.db:
                # its plan routes over the sharded database it was prepared in; USE changed the rules in force
                self.send_error(ER.NOT_SUPPORTED_YET, f"This version of ddm doesn't yet support executing a statement "
                                                  f"prepared in sharded database '{stmt.logical_db}' after USE of "
                                                  "another database: prepare it again")
                self.command_done()
                return
            if not executor.fast_execute(self, stmt, payload):
                self.run_slow(executor.execute(self, stmt, payload))
            return
        node, phys = stmt.node, stmt.phys  # where it was prepared (see ClientStatement.phys)
        # A cursor request (flags & 7) takes the slow path, which remembers the connection holding the cursor for
        # COM_STMT_FETCH.
        plain = not stmt.long_data and stmt.cursor_conn is None and len(payload) > 5 and not payload[5] & 0x07
        pipes = self.server.pipelines
        if plain and pipes.nodes and pipes.submit_execute(self, node, phys, stmt, payload):
            return  # queued on a shared connection (ddm.execute.pipeline)
        conn = self.ready_conn(node, phys) if plain else None
        if conn is not None:
            bstmt = conn.cached_stmt(stmt.sql)
            if bstmt is not None:
                if bstmt not in stmt.held:
                    stmt.hold(conn, bstmt)
                self.forward(conn, frame(self.execute_payload(stmt, bstmt, payload), 0))
                return
            if conn is not self.conn:
                conn.pool.release(conn)
        self.run_slow(self._execute_slow(stmt, payload, node, phys))

    async def _com_stmt_bulk_execute(self, payload: bytes) -> None:
        """COM_STMT_BULK_EXECUTE (MariaDB's array binding): on the node of a pass-through statement, with the node
        statement's id and the parameter types it has not seen yet; the node's answer is forwarded."""
        stmt = self.stmts.get(struct.unpack_from("<I", payload, 1)[0])
        if stmt is None:
            raise PlanError(ER.UNKNOWN_STMT_HANDLER, "Unknown prepared statement handler given to "
                                                     "mysqld_stmt_bulk_execute")
        if stmt.plan is not None:
            raise PlanError(ER.NOT_SUPPORTED_YET, "This version of ddm doesn't yet support 'COM_STMT_BULK_EXECUTE on "
                                                  "a sharded database' (execute the statement once per row)")
        if stmt.effects is not None:
            self._note_sticky(stmt.effects, stmt.sql)
        conn = await self._conn_for(stmt.node, stmt.phys)
        try:
            bstmt = await self.node_statement(conn, stmt, stmt.sql)
        except BaseException:
            if conn is not self.conn:
                self.give_back(conn)
            raise
        if bstmt not in stmt.held:
            stmt.hold(conn, bstmt)
        flags = struct.unpack_from("<H", payload, 5)[0]
        body = payload[7:]
        n = stmt.nparams
        if flags & BULK_SEND_TYPES:
            stmt.param_types = bstmt.types_bound = body[:2 * n]
        elif n and stmt.param_types is not None and bstmt.types_bound != stmt.param_types:
            flags |= BULK_SEND_TYPES  # this node statement has not seen the client's types
            body = stmt.param_types + body
            bstmt.types_bound = stmt.param_types
        await self.forward_and_wait(conn, frame(b"\xfa" + struct.pack("<IH", bstmt.stmt_id, flags) + body, 0))
        self._settle(conn)

    def run_unpiped(self) -> None:
        """Answer the current command again, without a pipe: it was queued on one behind a slow statement
        (ddm.execute.pipeline.Pipe.rescue) and its response there will be dropped."""
        payload = self.payload
        self.no_pipe = True
        try:
            if payload[0] == COM_QUERY:
                self._com_query(payload)
            else:
                self._com_stmt_execute(payload)
        except Exception as exc:  # it was parsed once already; anything here is ddm's fault, not the client's
            log.exception("re-running a pipelined statement failed")
            self.send_error(ER.UNKNOWN_ERROR, f"ddm could not run the statement: {exc}")
            self.command_done()
        finally:
            self.no_pipe = False

    def execute_payload(self, stmt: ClientStatement, bstmt, payload: bytes) -> bytes:
        """The client's COM_STMT_EXECUTE with the backend statement id, carrying parameter types if needed."""
        head = b"\x17" + struct.pack("<I", bstmt.stmt_id)
        n = stmt.nparams
        if n == 0:
            return head + payload[5:]
        bitmap_end = 10 + (n + 7) // 8
        bound = payload[bitmap_end] if len(payload) > bitmap_end else 0
        if bound:
            types = payload[bitmap_end + 1:bitmap_end + 1 + 2 * n]
            stmt.param_types = types
            bstmt.types_bound = types
            return head + payload[5:]
        if bstmt.types_bound == stmt.param_types or stmt.param_types is None:
            return head + payload[5:]
        # This backend statement has not seen the client's types yet (the client sent them to another
        # connection): resend them, as the protocol requires types on the first execute.
        bstmt.types_bound = stmt.param_types
        return head + payload[5:bitmap_end] + b"\x01" + stmt.param_types + payload[bitmap_end + 1:]

    async def node_statement(self, conn: BackendConnection, stmt: ClientStatement, sql: bytes) -> backend.Prepared:
        """The node statement on `conn` to execute `stmt` (node text `sql`) with. With long data, never one only
        other client statements used: MariaDB stores garbage (an address) for a parameter sent as long data to a
        statement that got that parameter inline before (10.11), so the client's own one there, else a new one."""
        if stmt.long_data:
            for bstmt, where in stmt.held.items():
                if where is conn and bstmt.sql == sql and not bstmt.closed:
                    return bstmt
            bstmt, _ = await conn.prepare(sql, fresh=True)
            return bstmt
        bstmt, _ = await conn.prepare(sql)
        return bstmt

    async def _execute_slow(self, stmt: ClientStatement, payload: bytes, node: str, phys: bytes | None) -> None:
        conn = stmt.cursor_conn or await self._conn_for(node, phys)
        try:
            bstmt = await self.node_statement(conn, stmt, stmt.sql)
        except BaseException:
            if conn is not self.conn and conn is not stmt.cursor_conn:
                self.give_back(conn)
            raise
        await self.execute_on(conn, stmt, bstmt, payload)
        if payload[5] & 0x07 and conn.last_status & CURSOR_EXISTS:
            stmt.cursor_conn = conn
            stmt.cursor_bstmt = bstmt
            self.cursors += 1
        self._settle(conn)

    def _com_stmt_fetch(self, payload: bytes) -> None:
        stmt = self.stmts.get(struct.unpack_from("<I", payload, 1)[0])
        if stmt is None or stmt.cursor_conn is None:
            self.send_error(ER.UNKNOWN_STMT_HANDLER, "Unknown prepared statement handler given to mysqld_stmt_fetch")
            self.command_done()
            return
        conn = stmt.cursor_conn
        bstmt = stmt.cursor_bstmt
        self.forward(conn, frame(b"\x1c" + struct.pack("<I", bstmt.stmt_id) + payload[5:], 0), KIND_ROWS)

    async def _com_stmt_reset(self, payload: bytes) -> None:
        stmt = self.stmts.get(struct.unpack_from("<I", payload, 1)[0])
        if stmt is None:
            self.send_error(ER.UNKNOWN_STMT_HANDLER, "Unknown prepared statement handler given to mysqld_stmt_reset")
            return
        stmt.long_data = []
        stmt.long_data_size = 0
        conn, stmt.cursor_conn = stmt.cursor_conn, None
        if conn is not None:
            self.cursors -= 1
        if conn is not None and not conn.closed:
            bstmt = stmt.cursor_bstmt
            if bstmt is not None and not bstmt.closed:
                await conn.command(b"\x1a" + struct.pack("<I", bstmt.stmt_id))
            if self.conn is conn and not conn.in_transaction and not self._has_cursor(conn):
                self.conn = None
                conn.pool.release(conn) if conn.pool else conn.close()
        self.send_ok()
