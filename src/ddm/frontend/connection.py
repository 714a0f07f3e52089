"""The server side of one client connection: handshake, authentication, then the command loop.

Fast path (`_com_query`, `_com_stmt_execute`): the statement runs on a pooled connection that already has the
session's state, the command goes out as framed by the client (statement id swapped for execute), and the response
streams back through BackendCore without being decoded; no coroutine is created. Anything else (a connection to
open, state to replay, a statement to prepare first, a sharded plan) runs as a task, `run_slow`.

`ClientConnection` is this module's command loop (COM_QUERY dispatch, multi-statements, the other commands) plus
one mixin per concern, each in its own module: `handshake` (connection phase, authentication, limits before login,
COM_CHANGE_USER), `pinning` (target node, pooled connections, forwarding, what pins a connection), `diagnostics` (SHOW WARNINGS,
LAST_INSERT_ID(), FOUND_ROWS() of the client's own statement), `local` (statements ddm answers itself) and
`statements` (prepared statements). The execution layer sees it as `ddm.execute.client.ClientSession`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

from ddm.config import Config, UserConfig
from ddm.execute import executor, metadata, threads
from ddm.execute.client import PH_AUTH, PH_CLOSED, PH_COMMAND, PH_HANDSHAKE, PH_INFILE
from ddm.execute.infile import InfileRelay
from ddm.execute.pool import PoolTimeout
from ddm.frontend import connid, multistatement
from ddm.frontend.diagnostics import CALC_FOUND_ROWS, DiagnosticsMixin
from ddm.frontend.handshake import NATIVE, HandshakeMixin
from ddm.frontend.local import (
    LOCAL_STATEMENTS,
    METADATA_WORDS,
    LocalStatementsMixin,
    is_load_local,
    metadata_statement,
)
from ddm.frontend.pinning import LOCK_HINT, NOTE_WORDS, STICKY_KEYWORDS, PinningMixin
from ddm.frontend.statements import ClientStatement, PreparedStatementsMixin
from ddm.protect import limits, privileges
from ddm.sharding.plan import PlanError
from ddm.wire import auth, backend
from ddm.wire.backend import BackendConnection, BackendError, NodeUnavailable
from ddm.wire.constants import client as CLIENT
from ddm.wire.constants import er as ER
from ddm.wire.constants import server_status as SS
from ddm.wire.params import ParamError
from ddm.wire.session import Session
from ddm_core.lexer import lex
from ddm_core.packets import PacketTooLarge, err_packet, first_word, frame, ok_packet
from ddm_core.protocol import KIND_FIELD_LIST, KIND_RESULT, FrontendCore

log = logging.getLogger("ddm.frontend.connection")


COM_QUIT, COM_INIT_DB, COM_QUERY, COM_FIELD_LIST = 0x01, 0x02, 0x03, 0x04
COM_REFRESH, COM_STATISTICS, COM_PROCESS_KILL, COM_DEBUG, COM_PING, COM_CHANGE_USER = 0x07, 0x09, 0x0C, 0x0D, 0x0E, 0x11
COM_PROCESS_INFO = 0x0A
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA = 0x16, 0x17, 0x18
COM_STMT_CLOSE, COM_STMT_RESET, COM_SET_OPTION, COM_STMT_FETCH, COM_RESET_CONNECTION = 0x19, 0x1A, 0x1B, 0x1C, 0x1F
COM_STMT_BULK_EXECUTE = 0xFA  # MariaDB, with MARIADB_CLIENT_STMT_BULK_OPERATIONS




class ClientConnection(HandshakeMixin, PinningMixin, DiagnosticsMixin, LocalStatementsMixin, PreparedStatementsMixin,
                       FrontendCore):
    """asyncio Protocol for one client of ddm."""

    def __init__(self, server) -> None:
        self.server = server
        self.config: Config = server.config
        self.loop = server.loop
        self.phase = PH_HANDSHAKE
        self.conn_id = server.next_connection_id()
        self.scramble = auth.new_scramble()
        self.caps = 0
        self.ext_caps = 0  # MariaDB's extended capabilities agreed with the client (CLIENT.MARIADB_*)
        self.server_ext_caps = 0
        self.flavour = 0
        self.deprecate_eof = False
        self.session_track = False
        self.seq = 0
        self.tls = False
        self.user: UserConfig | None = None
        self.auth_plugin = NATIVE
        self.auth_state = ""
        self.session = Session()
        self.conn: BackendConnection | None = None  # pinned: transaction, cursor, LOCK TABLES
        self.stmts: dict[int, ClientStatement] = {}
        self.next_stmt_id = 1
        self.last_prepared = 0  # the client's statement id of the last successful COM_STMT_PREPARE (0: none)
        self.peer = ""
        self.started = time.monotonic()
        self.queries = 0
        self._task: asyncio.Task | None = None
        self.paused_backend: BackendConnection | None = None
        self.scatter_stream = None  # the ddm.execute.scatter.ScatterStream sending this client rows, if any
        self.fwd_conn: BackendConnection | None = None
        self._infile: InfileRelay | None = None  # LOAD DATA LOCAL: the node waits for the client's file
        self._target_key: tuple | None = None
        self._target_val: tuple[str, bytes | None] = ("", None)
        self._pools: dict = {}
        self.cursors = 0  # statements with an open cursor (they pin their connection)
        self.txn_conns: dict[str, BackendConnection] = {}  # sharded: one connection per node in a transaction
        self.txn_begin: bytes | None = None  # sharded: the BEGIN to send to each node the transaction reaches
        self.sticky: set[str] = set()  # reasons the pinned connection must stay (locks, temporary tables)
        self.piped = None  # the ddm.execute.pipeline.Pipe this client's SELECT is queued on
        # SHOW WARNINGS / SHOW ERRORS / LAST_INSERT_ID() / FOUND_ROWS() read state the last statement left on the
        # node connection that ran it: that connection is held until the next command (`keep_diagnostics`); a
        # pipelined SELECT's connection has moved on, so its command is kept to run again
        self.diag_conn: BackendConnection | None = None
        self.diag_rerun: tuple | None = None  # (node, physical db, command payload) of a pipelined statement
        self.piped_command: bytes | None = None  # the framed command a pipe last sent for this client
        self._diag_timer: asyncio.TimerHandle | None = None
        self._calc_found_rows = False  # the running COM_QUERY has SQL_CALC_FOUND_ROWS: hold its connection after
        self.no_pipe = False  # set while run_unpiped runs the command again
        self.payload = b""  # the command being answered
        self._multi: asyncio.Task | None = None  # ddm.frontend.multistatement: the statements of one COM_QUERY, in turn
        self._preauth = False  # counted in server.preauth until it authenticates or goes away (ddm.protect.limits)
        self._login_timer: asyncio.TimerHandle | None = None  # server.connect_timeout
        self.expect_seq = 1  # the sequence id the client's next connection-phase packet must carry
        self.ddl_ran = False  # the last command was DDL: the schema epoch moves again once it is over
        self.idle_mark = -1  # ddm.frontend.idle: the command count when the client was first seen idle, and when
        self.idle_since = 0.0

    # --- asyncio.Protocol -------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "localhost"
        self.server.clients.add(self)
        self.framer.max_payload = self.config.server.max_packet_size
        if len(self.server.clients) > self.config.server.max_connections:
            self.send_packet(err_packet(ER.CON_COUNT_ERROR, ER.sqlstate(ER.CON_COUNT_ERROR), b"Too many connections"), 0)
            self.close()
            return
        if not self._start_preauth():
            return
        self._send_handshake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = PH_CLOSED
        self.server.clients.discard(self)
        self._end_preauth()
        fwd = self.fwd_conn
        if fwd is not None:
            # a node response still streaming to this client goes nowhere now: writing it to the closed transport
            # would raise inside the node connection's data_received ("Fatal error on transport")
            fwd.sink = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._multi is not None:
            self._multi.cancel()
        relay, self._infile = self._infile, None
        self._drop_diagnostics()
        if relay is not None:
            relay.abandon()
        if self.piped is not None:
            self.piped.client_gone(self)  # its response is read and discarded
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.sink = None
            if conn.mode == 0:
                self.give_back(conn, dirty=True)
            # a connection still streaming a response is given back by _forward_done
        self._release_txn_conns()
        for stmt in self.stmts.values():
            if stmt.cursor_conn is not None and stmt.cursor_conn is not conn:
                self.give_back(stmt.cursor_conn, dirty=True)
        self._drop_statements()

    def pause_writing(self) -> None:
        # The client reads slower than the data node sends: stop reading the node until it catches up.
        if self.scatter_stream is not None:
            self.scatter_stream.pause()
            return
        conn = self._streaming_conn()
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()
            self.paused_backend = conn

    def resume_writing(self) -> None:
        if self.scatter_stream is not None:
            self.scatter_stream.resume()
            return
        conn, self.paused_backend = self.paused_backend, None
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.resume_reading()

    def eof_received(self) -> bool:
        return False


    # --- output helpers ---------------------------------------------------------------------------------------
    def send_packet(self, payload: bytes, seq: int) -> None:
        if self.phase != PH_CLOSED:
            self.transport.write(frame(payload, seq))

    def status_flags(self) -> int:
        status = SS.AUTOCOMMIT if self.session.autocommit else 0
        if (self.conn is not None and self.conn.in_transaction) or self.txn_conns or self.txn_begin is not None:
            status |= SS.IN_TRANS
        if self.session.no_backslash_escapes:
            status |= SS.NO_BACKSLASH_ESCAPES
        return status

    def send_ok(self, seq: int = 1, affected: int = 0, insert_id: int = 0, info: bytes = b"") -> None:
        self.send_packet(ok_packet(affected, insert_id, self.status_flags(), 0, info, self.session_track), seq)

    def send_error(self, code: int, message: str, seq: int = 1, sqlstate: bytes | None = None) -> None:
        self.send_packet(err_packet(code, sqlstate or ER.sqlstate(code), message.encode()), seq)

    def close(self) -> None:
        if self.phase != PH_CLOSED:
            self.phase = PH_CLOSED
            self.transport.close()

    # --- commands in and out (the connection phase is ddm.frontend.handshake) -------------------------------

    def on_framing_error(self, exc: Exception) -> None:
        if isinstance(exc, PacketTooLarge):
            self.send_error(ER.NET_PACKET_TOO_LARGE, "Got a packet bigger than 'max_allowed_packet' bytes",
                        seq=(self.framer.last_seq + 1) & 0xFF)
        else:
            self.send_error(ER.MALFORMED_PACKET, f"Malformed communication packet: {exc}")
        self.close()

    def on_command(self, payload: bytes) -> None:
        try:
            if self.phase == PH_COMMAND:
                self._dispatch(payload)
            elif self.phase == PH_INFILE:
                self._infile.packet(payload)
            elif self.phase == PH_AUTH:
                seq = self.framer.last_seq
                if self.auth_state == "denied":
                    return
                if seq != self.expect_seq:
                    self._out_of_order(seq)
                    return
                self.seq = (seq + 1) & 0xFF
                self.expect_seq = (seq + 2) & 0xFF  # ddm answers this packet, the client answers that
                self._on_auth_packet(payload)
            # bytes after close are ignored
        except (IndexError, struct.error, ValueError, UnicodeDecodeError) as exc:
            log.info("malformed packet from %s: %r", self.peer, exc)
            self.send_error(ER.MALFORMED_PACKET, "Malformed communication packet", seq=(self.framer.last_seq + 1) & 0xFF)
            if self.phase != PH_COMMAND:
                self.close()
            else:
                self.command_done()










    # --- command dispatch -------------------------------------------------------------------------------------
    def _dispatch(self, payload: bytes) -> None:
        cmd = payload[0] if payload else -1
        self.queries += 1
        if 0x17 <= cmd <= 0x1C or cmd == 0xFA:
            if payload[1:5] == b"\xff\xff\xff\xff" and self.last_prepared:
                # statement id -1: MariaDB's "the statement this connection prepared last" (libmariadb's
                # mariadb_stmt_execute_direct and bulk execute send PREPARE and EXECUTE(-1) back to back); with
                # none (or after a failed PREPARE) -1 stays unknown, and the error names it as the node does
                payload = payload[:1] + struct.pack("<I", self.last_prepared) + payload[5:]
        if self.ddl_ran:  # statements prepared while it ran may describe the tables before it
            self.ddl_ran = False
            backend.bump_schema_epoch()
        if (self.diag_conn is not None or self.diag_rerun is not None) and self._diagnostics(payload):
            return
        self.payload = payload
        if self.config is not self.server.config and self.conn is None and not self.txn_conns \
                and self.txn_begin is None:
            # a new snapshot applies from the next transaction on; the session's logical database is looked up
            # in it again (its rules, or whether it is sharded at all, may have changed)
            self.config = self.server.config
            self._target()
        if cmd == COM_STMT_EXECUTE:
            self._com_stmt_execute(payload)
        elif cmd == COM_QUERY:
            self._com_query(payload)
        elif cmd == COM_STMT_PREPARE:
            self.run_slow(self._com_stmt_prepare(payload))
        elif cmd == COM_STMT_CLOSE:
            stmt = self.stmts.pop(struct.unpack_from("<I", payload, 1)[0], None)
            if stmt is not None and stmt.cursor_conn is not None:
                self.cursors -= 1
                conn, stmt.cursor_conn = stmt.cursor_conn, None
                if conn is not self.conn:
                    self.give_back(conn, dirty=True)
            if stmt is not None:
                self._drop_statement(stmt)  # its node statements close once nobody holds them
            self.command_done()
        elif cmd == COM_STMT_SEND_LONG_DATA:
            stmt = self.stmts.get(struct.unpack_from("<I", payload, 1)[0])
            if stmt is not None:
                limits.add_long_data(stmt, payload, self.config.server.max_long_data_size)
            self.command_done()
        elif cmd == COM_PING:
            self.send_ok()
            self.command_done()
        elif cmd == COM_QUIT:
            self.close()
        elif cmd == COM_INIT_DB:
            self._use(payload[1:].decode("utf-8", "replace"))
            self.command_done()
        elif cmd == COM_STMT_RESET:
            self.run_slow(self._com_stmt_reset(payload))
        elif cmd == COM_STMT_FETCH:
            self._com_stmt_fetch(payload)
        elif cmd == COM_SET_OPTION:
            self._com_set_option(payload)
        elif cmd == COM_FIELD_LIST:
            self.run_slow(self._forward_slow(payload, KIND_FIELD_LIST))
        elif cmd == COM_STATISTICS:
            self._com_statistics()
        elif cmd == COM_RESET_CONNECTION:
            self.run_slow(self._com_reset_connection())
        elif cmd == COM_CHANGE_USER:
            self._com_change_user(payload)
        elif cmd == COM_STMT_BULK_EXECUTE and self.ext_caps & CLIENT.MARIADB_STMT_BULK_OPERATIONS:
            self.run_slow(self._com_stmt_bulk_execute(payload))
        elif cmd == COM_DEBUG:
            # MariaDB writes debug information to the node's error log and answers EOF; ddm has none to write
            # (docs/compatibility.md) and answers the same EOF (an OK with the EOF header under DEPRECATE_EOF)
            if self.deprecate_eof:
                self.send_packet(b"\xfe" + ok_packet(0, 0, self.status_flags(), 0, b"", self.session_track)[1:], 1)
            else:
                self.send_packet(b"\xfe\x00\x00" + struct.pack("<H", self.status_flags()), 1)
            self.command_done()
        elif cmd == COM_REFRESH:
            self._com_refresh(payload)
        elif cmd == COM_PROCESS_KILL:  # deprecated form of KILL CONNECTION <id>
            threads.kill(self, struct.unpack_from("<I", payload, 1)[0], query_only=False)
        elif cmd == COM_PROCESS_INFO:  # deprecated form of SHOW PROCESSLIST (libmariadb's mysql_list_processes)
            threads.show_processlist(self, b"SHOW PROCESSLIST", full=False)
        else:
            self.send_error(ER.UNKNOWN_COM_ERROR, "Unknown command")
            self.command_done()

    def run_slow(self, coro) -> None:
        self._task = self.loop.create_task(self._run_slow(coro))

    async def _run_slow(self, coro) -> None:
        try:
            await coro
        except BackendError as exc:
            self.send_packet(exc.payload, 1)
            self._after_statement_error()
        except NodeUnavailable as exc:
            self.send_error(ER.CONNECTION_KILLED, str(exc))
            self._after_statement_error()
        except PoolTimeout as exc:
            self.send_error(ER.CON_COUNT_ERROR, str(exc))
        except PlanError as exc:
            self.send_error(exc.code, exc.message)
        except (struct.error, IndexError) as exc:
            self.send_error(ER.MALFORMED_PACKET, f"Malformed communication packet: {exc}")
        except ParamError as exc:
            self.send_error(ER.WRONG_ARGUMENTS, f"Incorrect arguments to mysqld_stmt_execute: {exc}")
        except ValueError as exc:  # a shard key value the sharding rules cannot place (ShardKeyError)
            self.send_error(ER.UNKNOWN_ERROR, f"cannot route the statement: {exc}")
        except asyncio.CancelledError:
            return
        except Exception as exc:  # a bug must not take the worker down; the client gets an error
            log.exception("internal error serving %s", self.peer)
            self.send_error(ER.UNKNOWN_ERROR, f"ddm internal error: {type(exc).__name__}: {exc}")
        self.command_done()

    def _after_statement_error(self) -> None:
        conn = self.conn
        if conn is not None and conn.closed:
            self.conn = None

    @property
    def logged_in(self) -> bool:
        return self.phase == PH_COMMAND or self.phase == PH_INFILE










    # --- COM_QUERY --------------------------------------------------------------------------------------------
    def _com_query(self, payload: bytes) -> None:
        sql = payload[1:]
        lexed = None
        guard = privileges.guard(self.config, self.user)
        if guard is not None:
            lexed = lex(sql)  # lexed once: the sharded path and multi-statements use it too
            if self._refused(guard, sql, lexed):
                return
        kw = first_word(sql)
        if b";" in sql and self._multi is None and not executor.is_compound(kw, sql):
            if lexed is None:
                lexed = lex(sql)
            if lexed.statement_count > 1 and self._multi_statement(lexed):
                return
        if kw != b"KILL" and connid.HINT(sql) is not None and connid.PLAIN(sql) is None:
            own = connid.rewrite(sql, self.conn_id)  # ddm's id, not the node connection's (ddm.frontend.connid)
            if own is not None:
                sql, lexed, self.raw = own, None, None
                payload = self.payload = b"\x03" + own
        handler = LOCAL_STATEMENTS.get(kw)
        if handler is not None and handler(self, sql):
            return
        # DATABASE() / LAST_INSERT_ID() / CONNECTION_ID() are answered here; all have a parenthesis
        if kw == b"SELECT" and len(sql) < 48 and b"(" in sql and self._select_database(sql):
            return
        # (LOCK_HINT: one case-insensitive search for "_lock", the cheapest test measured)
        if kw in NOTE_WORDS or LOCK_HINT(sql) is not None:
            self._note_sticky(kw, sql)
        # SELECT FOUND_ROWS() after SQL_CALC_FOUND_ROWS must read this statement's connection (held by _settle)
        self._calc_found_rows = (b"_ROWS" in sql or b"_rows" in sql) and CALC_FOUND_ROWS.search(sql) is not None
        dbconf = self.session.dbconf
        if dbconf is not None and dbconf.tables:
            self._sharded_query(sql, lexed)
            return
        node, phys = self._target()
        if kw in METADATA_WORDS and dbconf is not None and dbconf.renamed and metadata_statement(kw, sql):
            # the node would answer with the physical database's name: ddm.execute.metadata shows the logical one
            self.run_slow(self._renamed_metadata(sql, payload, node, phys))
            return
        pipes = self.server.pipelines
        if pipes.nodes and kw == b"SELECT" and pipes.submit(self, node, phys, sql, self.raw or frame(payload, 0)):
            return  # queued on a shared connection (ddm.execute.pipeline)
        conn = self.ready_conn(node, phys)
        if conn is not None:
            self.forward(conn, self.raw or frame(payload, 0))
            return
        self.run_slow(self._forward_slow(payload, KIND_RESULT, node, phys))

    def _refused(self, guard: privileges.Guard, sql: bytes, lexed) -> bool:
        """ddm.protect.privileges: whether this user may not run `sql` (then the client has its error)."""
        refusal = guard.check(sql, self.session.db, lexed)
        if refusal is None:
            return False
        self.send_error(refusal.code, refusal.message.replace("{host}", self.peer))
        self.command_done()
        return True

    def _multi_statement(self, lexed) -> bool:
        """Several statements in one COM_QUERY: refused without CLIENT_MULTI_STATEMENTS, else answered statement
        by statement (ddm.frontend.multistatement) when one of them is ddm's to answer; False: the node runs it whole."""
        if not self.session.multi_statements:
            # the data-node connection accepts multi-statements; this client did not ask for them
            self.send_error(ER.PARSE_ERROR, "You have an error in your SQL syntax: multi-statements are not enabled "
                                        "on this connection (CLIENT_MULTI_STATEMENTS)")
            self.command_done()
            return True
        statements = multistatement.split(lexed)
        dbconf = self.session.dbconf
        if not multistatement.needs_split(statements, dbconf is not None and bool(dbconf.tables), SPLIT_WORDS):
            return False
        self._multi = self.loop.create_task(self._run_statements(statements))
        return True

    async def _run_statements(self, statements: list[bytes]) -> None:
        """Each statement through the COM_QUERY path as if it came alone, its answer renumbered into one
        response; an error ends the chain."""
        real = self.transport
        seq = 1
        try:
            for i, sql in enumerate(statements):
                out = multistatement.Reframer(real, seq)
                await self._answer_through(out, sql)
                if not out.finish(more=i + 1 < len(statements)) or self.phase == PH_CLOSED:
                    break
                seq = out.seq
        finally:
            self._multi = None
        self.command_done()

    async def _answer_through(self, out: multistatement.Reframer, sql: bytes) -> None:
        """Answer one statement of a multi-statement with `out` as the client's transport, until its command_done."""
        real, done = self.transport, self.loop.create_future()
        self.transport = out
        self.command_done = lambda: done.done() or done.set_result(None)  # noqa: E731 (this statement only)
        self.no_pipe = True  # its answer comes through `out`, not on a shared connection
        self.raw = None
        payload = b"\x03" + sql
        try:
            if is_load_local(sql):
                # the node's file request would wait for a file the client sends between results
                self.send_error(ER.NOT_SUPPORTED_YET, "This version of ddm doesn't yet support 'LOAD DATA LOCAL INFILE "
                                                  "inside a multi-statement'")
                self.command_done()
            elif not ((self.diag_conn is not None or self.diag_rerun is not None) and self._diagnostics(payload)):
                self.payload = payload
                self._com_query(payload)
        except Exception as exc:  # as in on_command: the client gets an error, the worker goes on
            log.exception("internal error serving %s", self.peer)
            self.send_error(ER.UNKNOWN_ERROR, f"ddm internal error: {type(exc).__name__}: {exc}")
            self.command_done()
        try:
            await done
        finally:
            self.transport = real
            del self.command_done
            self.no_pipe = False

    def _sharded_query(self, sql: bytes, lexed=None) -> None:
        route, lexed, bound = executor.fast_units(self, sql, lexed)
        if route is not None and not self.txn_conns and self.txn_begin is None:
            pipes = self.server.pipelines
            if (pipes.nodes and lexed.first_keyword == b"SELECT"
                    and pipes.submit(self, route[0], route[1], sql, route[2], lexed.digest)):
                return  # one shard's SELECT, queued on a shared connection (ddm.execute.pipeline)
            conn = self.ready_conn(route[0], route[1])
            if conn is not None:
                self.forward(conn, route[2])
                return
        self.run_slow(executor.run_query(self, sql, lexed, bound))

    async def _renamed_metadata(self, sql: bytes, payload: bytes, node: str, phys: bytes | None) -> None:
        if not await metadata.answer(self, lex(sql), sql, lambda s: executor.run_query(self, s)):
            await self._forward_slow(payload, KIND_RESULT, node, phys)





















    # --- other commands ---------------------------------------------------------------------------------------
    def _com_set_option(self, payload: bytes) -> None:
        option = struct.unpack_from("<H", payload, 1)[0]
        if option not in (0, 1):
            self.send_error(ER.UNKNOWN_COM_ERROR, "Unknown command")
        else:
            self.session.multi_statements = option == 0
            # MySQL answers COM_SET_OPTION with an EOF packet (an OK one under CLIENT_DEPRECATE_EOF).
            if self.deprecate_eof:
                self.send_ok()
            else:
                self.send_packet(b"\xfe\x00\x00" + struct.pack("<H", self.status_flags()), 1)
        self.command_done()

    def _com_refresh(self, payload: bytes) -> None:
        """COM_REFRESH (the old form of FLUSH): checked like FLUSH (the RELOAD privilege, ddm's `admin`) and sent to
        the data node of the session's database, as a FLUSH statement would be."""
        guard = privileges.guard(self.config, self.user)
        if guard is not None and self._refused(guard, b"FLUSH TABLES", None):
            return
        self.run_slow(self._forward_slow(payload, KIND_RESULT))

    def _com_statistics(self) -> None:
        up = int(time.monotonic() - self.server.started)
        text = (f"Uptime: {up}  Threads: {len(self.server.clients)}  Questions: {self.server.questions()}  "
                f"Slow queries: 0  Opens: 0  Open tables: 0  Queries per second avg: "
                f"{self.server.questions() / max(up, 1):.3f}")
        self.send_packet(text.encode(), 1)
        self.command_done()

    async def _com_reset_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.give_back(conn, dirty=True)
        for stmt in self.stmts.values():
            if stmt.cursor_conn is not None and stmt.cursor_conn is not conn:
                self.give_back(stmt.cursor_conn, dirty=True)
        self._release_txn_conns()
        self.sticky.clear()
        self._drop_statements()
        self.cursors = 0
        self.session.reset()
        self.send_ok()























# first words a multi-statement is cut into single statements for (ddm.frontend.multistatement): the statements ddm answers
# or tracks itself, and DDL; LOAD DATA LOCAL on a pass-through database goes to the node with the rest
SPLIT_WORDS = (frozenset(LOCAL_STATEMENTS) - {b"LOAD"}) | STICKY_KEYWORDS | {b"ALTER", b"RENAME", b"TRUNCATE"}

