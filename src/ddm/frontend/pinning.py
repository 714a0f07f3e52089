"""Where a pass-through statement runs and what keeps a node connection with its client: the
target node, pooled connections in step with the session, forwarding, the end of a response (pin or give back),
state that pins (transactions, cursors, LOCK TABLES, temporary tables, user locks) and LOAD DATA LOCAL.

A mixin of `ddm.frontend.connection.ClientConnection`: it uses the connection's state (see its __init__).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from ddm.execute.client import PH_CLOSED, PH_COMMAND, PH_INFILE
from ddm.execute.infile import InfileRelay
from ddm.wire import backend
from ddm.wire.backend import METADATA_CHANGED, BackendConnection, BackendError
from ddm.wire.constants import er as ER
from ddm.wire.constants import server_status as SS
from ddm.wire.session import in_sync, synchronize
from ddm_core.packets import frame
from ddm_core.protocol import KIND_RESULT

CURSOR_EXISTS = SS.CURSOR_EXISTS

PIN_STATUS = SS.IN_TRANS | SS.CURSOR_EXISTS  # a response ending with these keeps its connection

STICKY_KEYWORDS = {b"LOCK", b"UNLOCK", b"CREATE", b"PREPARE"}  # GET_LOCK() etc.: `USER_LOCK_CALL`, on a bytes search's hit

DDL_WORDS = frozenset((b"CREATE", b"DROP", b"ALTER", b"RENAME", b"TRUNCATE"))  # move the schema epoch

NOTE_WORDS = frozenset(STICKY_KEYWORDS) | DDL_WORDS  # first words `_note_sticky` looks at

USER_LOCK_CALL = re.compile(rb"\b(GET_LOCK|RELEASE_ALL_LOCKS)\s*\(", re.I)

# Run on every COM_QUERY: ~70 ns on a 35-byte statement, ~340 ns on 1 KB (a bytes `in` per letter case costs 3x
# that, USER_LOCK_CALL itself 5-40x); only a hit pays for USER_LOCK_CALL
LOCK_HINT = re.compile(rb"_lock", re.I).search


class PinningMixin:
    # The attributes are ClientConnection's (its __init__; ddm.execute.client.ClientSession lists most).

    def _release_txn_conns(self) -> None:
        conns, self.txn_conns = self.txn_conns, {}
        self.txn_begin = None
        for c in conns.values():
            if c is not self.conn and c.mode == 0:
                self.give_back(c, dirty=True)

    def _streaming_conn(self) -> BackendConnection | None:
        piped = self.piped
        if piped is not None and piped.queue and piped.queue[0] is self:
            return piped.conn  # the shared connection is streaming this client's response
        return self.fwd_conn

    def _target(self) -> tuple[str, bytes | None]:
        """The data node and physical database the session's statements go to (pass-through)."""
        key = (self.config, self.session.db)
        if self._target_key != key:  # recomputed only after USE or a configuration swap
            self._target_key = key
            self._target_val = self._compute_target()
            self._pools = {}
        return self._target_val

    def _compute_target(self) -> tuple[str, bytes | None]:
        self.session.bind_database(self.config, self.session.db)
        dbconf = self.session.dbconf
        if dbconf is not None:
            ds = dbconf.datasources[dbconf.default_datasource]
            return ds.node, ds.database.encode()
        cfg = self.config
        if cfg.databases:
            first = next(iter(cfg.databases.values()))
            return first.datasources[first.default_datasource].node, None
        return next(iter(cfg.nodes)), None

    def pool_for(self, node: str):
        pool = self._pools.get(node)
        if pool is None or pool.closed:
            pool = self._pools[node] = self.server.pools.get(node, self.flavour)
        return pool

    def ready_conn(self, node: str, phys: bytes | None) -> BackendConnection | None:
        """A connection that can run the next statement right now, or None (then the slow path)."""
        conn = self.conn
        if conn is None:
            pool = self.pool_for(node)
            conn = pool.try_acquire()
            if conn is None:
                return None
            if not in_sync(conn, self.session, phys):
                pool.release(conn)
                return None
            return conn
        if conn.node_name != node or not in_sync(conn, self.session, phys):
            return None
        return conn

    async def _conn_for(self, node: str, phys: bytes | None) -> BackendConnection:
        conn = self.conn
        if conn is not None and conn.node_name != node:
            raise BackendError(ER.NOT_SUPPORTED_YET, ER.sqlstate(ER.NOT_SUPPORTED_YET),
                               b"a transaction cannot span data nodes in pass-through mode")
        if conn is None:
            conn = await self.pool_for(node).acquire()
        try:
            await synchronize(conn, self.session, phys)
        except BaseException:
            if conn is not self.conn:
                self.give_back(conn, dirty=True)
            raise
        return conn

    def give_back(self, conn: BackendConnection, dirty: bool = False) -> None:
        """Return a connection to its pool; one left mid-transaction is reset first."""
        if conn.pool is None:
            conn.close()
            return
        if dirty and (conn.in_transaction or conn.signature or conn.mode != 0 or conn.user_locks):
            if conn.mode != 0:
                conn.pool.discard(conn)
                conn.close()
                return

            async def reset() -> None:
                try:
                    # COM_RESET_CONNECTION rolls back, releases GET_LOCK() locks, clears session state
                    await conn.command(b"\x1f")
                    conn.forget_statements()
                    conn.user_locks = False
                    conn.signature = ()
                    conn.db = None
                    conn.last_status = 0
                    conn.pool.release(conn)
                except Exception:
                    if conn.pool is not None:
                        conn.pool.discard(conn)
                    conn.close()

            self.loop.create_task(reset())
            return
        conn.pool.release(conn)

    def _forward_done(self, conn: BackendConnection) -> None:
        """End of a forwarded response on the fast path: settle the connection, take the next command."""
        if conn.local_infile:
            self._relay_infile(conn, self._forward_done)
            return
        if self._settle(conn):
            self.command_done()

    def _relay_infile(self, conn: BackendConnection, then: Callable[[BackendConnection], None]) -> None:
        """The node's response was a LOCAL INFILE request (already forwarded): relay the client's file to it, then
        let `then` see the node's final answer."""
        if conn.closed or self.phase == PH_CLOSED:
            conn.local_infile = False
            if conn.closed:
                then(conn)  # settles a lost connection as usual
            else:
                InfileRelay(self, conn, then).abandon()  # the client is gone; nobody will send the file
            return
        self._infile = InfileRelay(self, conn, then)
        self.fwd_conn = conn
        self.phase = PH_INFILE
        self.command_done()  # the file's packets come in as "commands"

    def end_infile(self, conn: BackendConnection) -> None:
        """The client sent the empty packet: back to commands, with the node's answer still to forward."""
        self._infile = None
        self.phase = PH_COMMAND
        self.fwd_conn = conn

    def infile_conn(self) -> BackendConnection | None:
        return self._infile.conn if self._infile is not None else None

    def _settle(self, conn: BackendConnection) -> bool:
        """Pin the connection (transaction, cursor) or give it back; False when the client is gone."""
        self.fwd_conn = None
        if conn.closed or conn.broken:
            if self.conn is conn:
                self.conn = None
            if conn.forwarded_any:
                self.close()  # half a result already went out: the only honest end is closing
                return False
            self.send_error(ER.CONNECTION_KILLED, f"Connection to data node '{conn.node_name}' was lost{conn.lost_reason}")
        elif self.phase == PH_CLOSED:
            self.conn = None
            self.give_back(conn, dirty=True)
            return False
        else:
            if conn.last_insert_id:
                self.session.last_insert_id = conn.last_insert_id  # for SELECT LAST_INSERT_ID() (_select_database)
            if conn.last_status & METADATA_CHANGED:
                backend.bump_schema_epoch()  # the node re-prepared a statement: its tables changed
            if self.sticky:
                # session state on the node (user or table locks, temporary tables, SQL prepared statements): the
                # connection is reset before anyone else gets it (give_back, and the pool refuses it unreset)
                conn.user_locks = True
            elif conn.user_locks:
                conn.user_locks = False  # RELEASE_ALL_LOCKS() ran (it ended the pin)
            if conn.last_status & PIN_STATUS or (conn.last_error and self.conn is conn) or self.sticky \
                    or (self.cursors and self._has_cursor(conn)):
                self.conn = conn
            else:
                if self.conn is conn:
                    self.conn = None
                if conn.last_warnings or conn.last_error or conn.last_insert_id or self._calc_found_rows:
                    self.keep_diagnostics(conn)
                else:
                    conn.pool.release(conn)
        return True

    def _note_sticky(self, kw: bytes, sql: bytes) -> None:
        """Before a statement runs (text, prepared, or one of a multi-statement): server-side state that lives on
        one connection (table locks, temporary tables, GET_LOCK() locks) pins it to this client; DDL moves the
        schema epoch (cached node statements are prepared again)."""
        if kw in DDL_WORDS:
            temporary = (kw == b"CREATE" or kw == b"DROP") and b"TEMPORARY" in sql[:200].upper()
            if temporary:
                if kw == b"CREATE":
                    self.sticky.add("temporary")
            else:
                # (not for a TEMPORARY table: seen by this connection only, and some applications make one per
                # request; the node re-prepares its own statements that read it)
                backend.bump_schema_epoch()
                self.ddl_ran = True
        elif kw == b"LOCK":
            self.sticky.add("lock")
        elif kw == b"PREPARE":
            # SQL-level PREPARE name FROM ...: the statement lives in the node session until DEALLOCATE or the
            # session ends; pinned until the client leaves (the connection is reset before anyone else gets it),
            # else another client's EXECUTE / DEALLOCATE of that name would find it (found by the interleaving test)
            self.sticky.add("prepare")
        elif kw == b"UNLOCK":
            self.sticky.discard("lock")
        if LOCK_HINT(sql) is not None:
            funcs = {f.upper() for f in USER_LOCK_CALL.findall(sql)}
            if b"GET_LOCK" in funcs:
                # held until RELEASE_ALL_LOCKS() or the client leaves (RELEASE_LOCK(name) may leave others held);
                # the connection is reset before it goes back to the pool (_give_back)
                self.sticky.add("userlock")
            elif b"RELEASE_ALL_LOCKS" in funcs:
                self.sticky.discard("userlock")

    def at_boundary(self) -> bool:
        """Logged in, no command running, nothing pinned: closing now loses no work."""
        return (self.phase == PH_COMMAND and not self.busy and self.conn is None and not self.txn_conns
                and self.txn_begin is None and not self.sticky)

    def _has_cursor(self, conn: BackendConnection) -> bool:
        return self.cursors > 0 and any(s.cursor_conn is conn for s in self.stmts.values())

    def forward(self, conn: BackendConnection, packet: bytes, kind: int = KIND_RESULT) -> None:
        self.fwd_conn = conn
        conn.forward(packet, self.transport, kind, self._forward_done)

    async def _forward_slow(self, payload: bytes, kind: int, node: str | None = None,
                            phys: bytes | None = None) -> None:
        if node is None:
            node, phys = self._target()
        conn = await self._conn_for(node, phys)
        await self.forward_and_wait(conn, frame(payload, 0), kind)
        self._settle(conn)

    async def forward_and_wait(self, conn: BackendConnection, packet: bytes, kind: int = KIND_RESULT) -> None:
        """Forward one command's response to the client from a coroutine (the slow paths)."""
        done = self.loop.create_future()

        def finished(c: BackendConnection) -> None:
            if c.local_infile:
                self._relay_infile(c, finished)
            elif self.phase == PH_CLOSED:
                # the client went away mid-response: its cancelled task will not settle the connection
                self.give_back(c, dirty=True)
            elif not done.done():
                done.set_result(None)

        # connection_lost gives back the connections the client holds (pinned, transaction) once they are idle
        held = conn is self.conn or conn in self.txn_conns.values()
        self.fwd_conn = conn
        conn.forward(packet, self.transport, kind, finished)
        try:
            await done
        except asyncio.CancelledError:
            if done.done() and not done.cancelled() and not held:  # it had ended before the client went away
                self.give_back(conn, dirty=True)
            raise
        finally:
            self.fwd_conn = None
