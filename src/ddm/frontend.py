"""The server side of one client connection: handshake, authentication, then the command loop.

Fast path (`_com_query`, `_com_stmt_execute`): the statement runs on a pooled connection that already has the
session's state, the command goes out as framed by the client (statement id swapped for execute), and the response
streams back through BackendCore without being decoded; no coroutine is created. Anything else (a connection to
open, state to replay, a statement to prepare first, a sharded plan) runs as a task, `_slow`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ddm import auth, backend, executor, metadata, multistatement, threads
from ddm.backend import FLAVOUR_BITS, METADATA_CHANGED, BackendConnection, BackendError, NodeUnavailable
from ddm.config import Config, UserConfig
from ddm.constants import client as CLIENT
from ddm.constants import er as ER
from ddm.constants import field_type as FT
from ddm.constants import server_status as SS
from ddm.infile import InfileRelay
from ddm.params import ParamError
from ddm.plan import PlanError, database_ddl_refusal
from ddm.pool import PoolTimeout
from ddm.resultset import column_definition, simple_resultset, text_resultset, text_row
from ddm.session import COLLATIONS, Session, in_sync, set_names_for, synchronize
from ddm_core.lexer import lex
from ddm_core.packets import PacketTooLarge, err_packet, first_word, frame, ok_packet
from ddm_core.protocol import KIND_FIELD_LIST, KIND_RESULT, KIND_ROWS, FrontendCore

log = logging.getLogger("ddm.frontend")

PH_HANDSHAKE, PH_AUTH, PH_COMMAND, PH_CLOSED, PH_INFILE = range(5)  # PH_INFILE: the client sends a LOCAL file
NATIVE = b"mysql_native_password"
SHA2 = b"caching_sha2_password"

COM_QUIT, COM_INIT_DB, COM_QUERY, COM_FIELD_LIST = 0x01, 0x02, 0x03, 0x04
COM_STATISTICS, COM_PROCESS_KILL, COM_PING, COM_CHANGE_USER = 0x09, 0x0C, 0x0E, 0x11
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA = 0x16, 0x17, 0x18
COM_STMT_CLOSE, COM_STMT_RESET, COM_SET_OPTION, COM_STMT_FETCH, COM_RESET_CONNECTION = 0x19, 0x1A, 0x1B, 0x1C, 0x1F
CURSOR_EXISTS = SS.CURSOR_EXISTS
PIN_STATUS = SS.IN_TRANS | SS.CURSOR_EXISTS  # a response ending with these keeps its connection


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


class ClientConnection(FrontendCore):
    """asyncio Protocol for one client of ddm."""

    def __init__(self, server) -> None:
        self.server = server
        self.config: Config = server.config
        self.loop = server.loop
        self.phase = PH_HANDSHAKE
        self.conn_id = server.next_connection_id()
        self.scramble = auth.new_scramble()
        self.caps = 0
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
        self.peer = ""
        self.started = time.monotonic()
        self.queries = 0
        self._task: asyncio.Task | None = None
        self._paused_backend: BackendConnection | None = None
        self._scatter = None  # the ddm.scatter.ScatterStream sending this client rows, if any
        self._fwd: BackendConnection | None = None
        self._infile: InfileRelay | None = None  # LOAD DATA LOCAL: the node waits for the client's file
        self._target_key: tuple | None = None
        self._target_val: tuple[str, bytes | None] = ("", None)
        self._pools: dict = {}
        self.cursors = 0  # statements with an open cursor (they pin their connection)
        self.txn_conns: dict[str, BackendConnection] = {}  # sharded: one connection per node in a transaction
        self.txn_begin: bytes | None = None  # sharded: the BEGIN to send to each node the transaction reaches
        self.sticky: set[str] = set()  # reasons the pinned connection must stay (locks, temporary tables)
        self._piped = None  # the ddm.pipeline.Pipe this client's SELECT is queued on
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
        self._multi: asyncio.Task | None = None  # ddm.multistatement: the statements of one COM_QUERY, in turn
        self.ddl_ran = False  # the last command was DDL: the schema epoch moves again once it is over

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
            self._send(err_packet(ER.CON_COUNT_ERROR, ER.sqlstate(ER.CON_COUNT_ERROR), b"Too many connections"), 0)
            self.close()
            return
        self._send_handshake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = PH_CLOSED
        self.server.clients.discard(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._multi is not None:
            self._multi.cancel()
        relay, self._infile = self._infile, None
        self._drop_diagnostics()
        if relay is not None:
            relay.abandon()
        if self._piped is not None:
            self._piped.client_gone(self)  # its response is read and discarded
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.sink = None
            if conn.mode == 0:
                self._give_back(conn, dirty=True)
            # a connection still streaming a response is given back by _forward_done
        self._release_txn_conns()
        for stmt in self.stmts.values():
            if stmt.cursor_conn is not None and stmt.cursor_conn is not conn:
                self._give_back(stmt.cursor_conn, dirty=True)
        self._drop_statements()

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

    def _release_txn_conns(self) -> None:
        conns, self.txn_conns = self.txn_conns, {}
        self.txn_begin = None
        for c in conns.values():
            if c is not self.conn and c.mode == 0:
                self._give_back(c, dirty=True)

    def pause_writing(self) -> None:
        # The client reads slower than the data node sends: stop reading the node until it catches up.
        if self._scatter is not None:
            self._scatter.pause()
            return
        conn = self._streaming_conn()
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()
            self._paused_backend = conn

    def resume_writing(self) -> None:
        if self._scatter is not None:
            self._scatter.resume()
            return
        conn, self._paused_backend = self._paused_backend, None
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.resume_reading()

    def eof_received(self) -> bool:
        return False

    def _streaming_conn(self) -> BackendConnection | None:
        piped = self._piped
        if piped is not None and piped.queue and piped.queue[0] is self:
            return piped.conn  # the shared connection is streaming this client's response
        return self._fwd

    # --- output helpers ---------------------------------------------------------------------------------------
    def _send(self, payload: bytes, seq: int) -> None:
        if self.phase != PH_CLOSED:
            self.transport.write(frame(payload, seq))

    def _status(self) -> int:
        status = SS.AUTOCOMMIT if self.session.autocommit else 0
        if (self.conn is not None and self.conn.in_transaction) or self.txn_conns or self.txn_begin is not None:
            status |= SS.IN_TRANS
        if self.session.no_backslash_escapes:
            status |= SS.NO_BACKSLASH_ESCAPES
        return status

    def _ok(self, seq: int = 1, affected: int = 0, insert_id: int = 0, info: bytes = b"") -> None:
        self._send(ok_packet(affected, insert_id, self._status(), 0, info, self.session_track), seq)

    def _error(self, code: int, message: str, seq: int = 1, sqlstate: bytes | None = None) -> None:
        self._send(err_packet(code, sqlstate or ER.sqlstate(code), message.encode()), seq)

    def close(self) -> None:
        if self.phase != PH_CLOSED:
            self.phase = PH_CLOSED
            self.transport.close()

    # --- handshake and authentication -------------------------------------------------------------------------
    def _send_handshake(self) -> None:
        version = (self.config.server.server_version or self.server.version_string()).encode()
        caps = CLIENT.SERVER_CAPABILITIES
        if not self.server.tls_context:
            caps &= ~CLIENT.SSL
        s = self.scramble
        payload = (b"\x0a" + version + b"\0" + struct.pack("<I", self.conn_id) + s[:8] + b"\0"
                   + struct.pack("<HBHHB", caps & 0xFFFF, 45, SS.AUTOCOMMIT, caps >> 16, 21) + b"\0" * 10
                   + s[8:] + b"\0" + NATIVE + b"\0")
        self.server_caps = caps
        self._send(payload, 0)
        self.phase = PH_AUTH
        self.auth_state = "response"

    def on_framing_error(self, exc: Exception) -> None:
        if isinstance(exc, PacketTooLarge):
            self._error(ER.NET_PACKET_TOO_LARGE, "Got a packet bigger than 'max_allowed_packet' bytes",
                        seq=(self.framer.last_seq + 1) & 0xFF)
        else:
            self._error(ER.MALFORMED_PACKET, f"Malformed communication packet: {exc}")
        self.close()

    def on_command(self, payload: bytes) -> None:
        try:
            if self.phase == PH_COMMAND:
                self._dispatch(payload)
            elif self.phase == PH_INFILE:
                self._infile.packet(payload)
            elif self.phase == PH_AUTH:
                self.seq = (self.framer.last_seq + 1) & 0xFF
                self._on_auth_packet(payload)
            # bytes after close are ignored
        except (IndexError, struct.error, ValueError, UnicodeDecodeError) as exc:
            log.info("malformed packet from %s: %r", self.peer, exc)
            self._error(ER.MALFORMED_PACKET, "Malformed communication packet", seq=(self.framer.last_seq + 1) & 0xFF)
            if self.phase != PH_COMMAND:
                self.close()
            else:
                self.command_done()

    def _on_auth_packet(self, payload: bytes) -> None:
        state = self.auth_state
        if state == "response":
            caps = struct.unpack_from("<I", payload, 0)[0]
            if len(payload) == 32 and caps & CLIENT.SSL:  # SSLRequest: switch to TLS, the real response follows
                self._start_tls(caps)
                return
            self._on_handshake_response(payload)
        elif state == "switch":
            self._verify(payload)
        elif state == "sha2_full":
            self._sha2_full(payload)
        else:
            self._error(ER.HANDSHAKE_ERROR, "Bad handshake", self.seq)
            self.close()
            return
        self.command_done()

    def _start_tls(self, caps: int) -> None:
        if not self.server.tls_context:
            self._error(ER.HANDSHAKE_ERROR, "TLS is not enabled on this server", self.seq)
            self.close()
            return

        # The client may send its TLS ClientHello right behind the SSLRequest, in the same read: those bytes are in
        # the framer and must reach the TLS layer once start_tls has installed it (it runs connection_made and
        # resume_reading via call_soon in its first step; two call_soon hops land after both).
        early = self.framer.take_pending()

        async def upgrade() -> None:
            try:
                self.transport = await self.loop.start_tls(self.transport, self, self.server.tls_context,
                                                           server_side=True)
            except Exception as exc:  # a failed TLS handshake ends the connection
                log.info("TLS handshake with %s failed: %s", self.peer, exc)
                self.close()
                return
            self.tls = True
            self.command_done()

        def feed_early() -> None:
            proto = self.transport.get_protocol()
            if hasattr(proto, "get_buffer"):
                buf = proto.get_buffer(len(early))
                buf[:len(early)] = early
                proto.buffer_updated(len(early))
            else:
                proto.data_received(early)

        self._task = self.loop.create_task(upgrade())
        if early:
            self.loop.call_soon(self.loop.call_soon, feed_early)

    def _on_handshake_response(self, p: bytes) -> None:
        caps, _max_packet, charset = struct.unpack_from("<IIB", p, 0)
        if not caps & CLIENT.PROTOCOL_41:
            self._error(ER.HANDSHAKE_ERROR, "Client does not support the 4.1 protocol", self.seq)
            self.close()
            return
        if self.config.server.tls.require and not self.tls:
            self._error(ER.ACCESS_DENIED_ERROR, "Connections using insecure transport are prohibited", self.seq)
            self.close()
            return
        pos = 32
        end = p.index(b"\0", pos)
        user = p[pos:end].decode("utf-8", "replace")
        pos = end + 1
        if caps & CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            n = p[pos]
            if n == 0xFC:
                n = struct.unpack_from("<H", p, pos + 1)[0]
                pos += 2
            pos += 1
            resp = p[pos:pos + n]
            pos += n
        elif caps & CLIENT.SECURE_CONNECTION:
            n = p[pos]
            resp = p[pos + 1:pos + 1 + n]
            pos += 1 + n
        else:
            end = p.index(b"\0", pos)
            resp = p[pos:end]
            pos = end + 1
        db = None
        if caps & CLIENT.CONNECT_WITH_DB and pos < len(p):
            raw_db, pos = _cstring(p, pos)
            db = raw_db.decode("utf-8", "replace") or None
        plugin = NATIVE
        if caps & CLIENT.PLUGIN_AUTH and pos < len(p):
            plugin, pos = _cstring(p, pos)
        self.caps = caps & self.server_caps
        self.flavour = self.caps & FLAVOUR_BITS
        self.deprecate_eof = bool(self.caps & CLIENT.DEPRECATE_EOF)
        self.session_track = bool(self.caps & CLIENT.SESSION_TRACK)
        self.session.multi_statements = bool(self.caps & CLIENT.MULTI_STATEMENTS)
        names = set_names_for(charset)
        if names:
            self.session.record(names)
        self.pending_db = db
        self._begin_auth(user, plugin, resp)

    def _begin_auth(self, user: str, plugin: bytes, resp: bytes) -> None:
        self.session.user = user
        self.user = self.config.users.get(user)
        want = SHA2 if self.user is not None and self.user.auth_plugin == "caching_sha2_password" else NATIVE
        self.auth_plugin = want
        if plugin != want:
            # AuthSwitchRequest: https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_auth_switch_request.html
            self.scramble = auth.new_scramble()
            self.auth_state = "switch"
            self._send(b"\xfe" + want + b"\0" + self.scramble + b"\0", self.seq)
            return
        self._verify(resp)

    def _password(self) -> bytes | None:
        return self.user.password.encode() if self.user is not None else None

    def _verify(self, resp: bytes) -> None:
        pw = self._password()
        if self.auth_plugin == NATIVE:
            ok = pw is not None and auth.native_password_verify(pw, self.scramble, resp)
            self._auth_result(ok, bool(resp))
            return
        # caching_sha2_password: ddm holds the password, so the fast path verifies any client that has it; a
        # non-matching scramble gets full authentication (cleartext over TLS, else RSA). An empty response means an
        # empty password and is answered at once, as MySQL does.
        if not resp:
            self._auth_result(pw == b"", False)
            return
        if pw is not None and auth.sha2_password_verify_fast(pw, self.scramble, resp):
            self._send(b"\x01\x03", self.seq)  # fast_auth_success, then OK
            self.seq = (self.seq + 1) & 0xFF
            self._auth_result(True, True)
            return
        if self.user is None:
            self._auth_result(False, bool(resp))
            return
        self.auth_state = "sha2_full"
        self._send(b"\x01\x04", self.seq)  # perform_full_authentication

    def _sha2_full(self, p: bytes) -> None:
        pw = self._password()
        if p == b"\x02" and not self.tls:  # the client asks for the server's RSA public key
            self._send(b"\x01" + self.server.rsa_keys.public_pem(), self.seq)
            return
        if self.tls:
            given = auth.clear_password_decode(p)
        else:
            try:
                given = auth.sha2_decrypt_password(self.server.rsa_keys, p, self.scramble)
            except Exception:
                given = None
        self._auth_result(pw is not None and given is not None and auth.constant_time_eq(given, pw), True)

    def _auth_result(self, ok: bool, used_password: bool) -> None:
        if not ok:
            self.server.auth_failures += 1
            self._error(ER.ACCESS_DENIED_ERROR,
                        f"Access denied for user '{self.session.user}'@'{self.peer}' "
                        f"(using password: {'YES' if used_password else 'NO'})", self.seq)
            self.close()
            return
        db = self.pending_db
        if db is not None:
            problem = self._check_db(db)
            if problem:
                self._error(problem[0], problem[1], self.seq)
                self.close()
                return
        self.session.bind_database(self.config, db)
        self.phase = PH_COMMAND
        self._send(ok_packet(0, 0, SS.AUTOCOMMIT, 0, b"", self.session_track), self.seq)

    def _check_db(self, db: str) -> tuple[int, str] | None:
        if db not in self.config.databases:
            return ER.BAD_DB_ERROR, f"Unknown database '{db}'"
        allowed = self.user.databases if self.user is not None else ()
        if "*" not in allowed and db not in allowed:
            return ER.DBACCESS_DENIED_ERROR, f"Access denied for user '{self.session.user}'@'{self.peer}' to database '{db}'"
        return None

    # --- command dispatch -------------------------------------------------------------------------------------
    def _dispatch(self, payload: bytes) -> None:
        cmd = payload[0] if payload else -1
        self.queries += 1
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
            self._slow(self._com_stmt_prepare(payload))
        elif cmd == COM_STMT_CLOSE:
            stmt = self.stmts.pop(struct.unpack_from("<I", payload, 1)[0], None)
            if stmt is not None and stmt.cursor_conn is not None:
                self.cursors -= 1
                conn, stmt.cursor_conn = stmt.cursor_conn, None
                if conn is not self.conn:
                    self._give_back(conn, dirty=True)
            if stmt is not None:
                self._drop_statement(stmt)  # its node statements close once nobody holds them
            self.command_done()
        elif cmd == COM_STMT_SEND_LONG_DATA:
            stmt = self.stmts.get(struct.unpack_from("<I", payload, 1)[0])
            if stmt is not None:
                stmt.long_data.append(payload)
            self.command_done()
        elif cmd == COM_PING:
            self._ok()
            self.command_done()
        elif cmd == COM_QUIT:
            self.close()
        elif cmd == COM_INIT_DB:
            self._use(payload[1:].decode("utf-8", "replace"))
            self.command_done()
        elif cmd == COM_STMT_RESET:
            self._slow(self._com_stmt_reset(payload))
        elif cmd == COM_STMT_FETCH:
            self._com_stmt_fetch(payload)
        elif cmd == COM_SET_OPTION:
            self._com_set_option(payload)
        elif cmd == COM_FIELD_LIST:
            self._slow(self._forward_slow(payload, KIND_FIELD_LIST))
        elif cmd == COM_STATISTICS:
            self._com_statistics()
        elif cmd == COM_RESET_CONNECTION:
            self._slow(self._com_reset_connection())
        elif cmd == COM_CHANGE_USER:
            self._com_change_user(payload)
        elif cmd == COM_PROCESS_KILL:  # deprecated form of KILL CONNECTION <id>
            threads.kill(self, struct.unpack_from("<I", payload, 1)[0], query_only=False)
        else:
            self._error(ER.UNKNOWN_COM_ERROR, "Unknown command")
            self.command_done()

    def _slow(self, coro) -> None:
        self._task = self.loop.create_task(self._run_slow(coro))

    async def _run_slow(self, coro) -> None:
        try:
            await coro
        except BackendError as exc:
            self._send(exc.payload, 1)
            self._after_statement_error()
        except NodeUnavailable as exc:
            self._error(ER.CONNECTION_KILLED, str(exc))
            self._after_statement_error()
        except PoolTimeout as exc:
            self._error(ER.CON_COUNT_ERROR, str(exc))
        except PlanError as exc:
            self._error(exc.code, exc.message)
        except (struct.error, IndexError) as exc:
            self._error(ER.MALFORMED_PACKET, f"Malformed communication packet: {exc}")
        except ParamError as exc:
            self._error(ER.WRONG_ARGUMENTS, f"Incorrect arguments to mysqld_stmt_execute: {exc}")
        except ValueError as exc:  # a shard key value the sharding rules cannot place (ShardKeyError)
            self._error(ER.UNKNOWN_ERROR, f"cannot route the statement: {exc}")
        except asyncio.CancelledError:
            return
        except Exception as exc:  # a bug must not take the worker down; the client gets an error
            log.exception("internal error serving %s", self.peer)
            self._error(ER.UNKNOWN_ERROR, f"ddm internal error: {type(exc).__name__}: {exc}")
        self.command_done()

    def _after_statement_error(self) -> None:
        conn = self.conn
        if conn is not None and conn.closed:
            self.conn = None

    # --- routing ----------------------------------------------------------------------------------------------
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

    def _pool(self, node: str):
        pool = self._pools.get(node)
        if pool is None or pool.closed:
            pool = self._pools[node] = self.server.pools.get(node, self.flavour)
        return pool

    def _ready_conn(self, node: str, phys: bytes | None) -> BackendConnection | None:
        """A connection that can run the next statement right now, or None (then the slow path)."""
        conn = self.conn
        if conn is None:
            pool = self._pool(node)
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
            conn = await self._pool(node).acquire()
        try:
            await synchronize(conn, self.session, phys)
        except BaseException:
            if conn is not self.conn:
                self._give_back(conn, dirty=True)
            raise
        return conn

    def _give_back(self, conn: BackendConnection, dirty: bool = False) -> None:
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

    # --- LOAD DATA LOCAL INFILE (ddm.infile) ------------------------------------------------------------------
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
        self._fwd = conn
        self.phase = PH_INFILE
        self.command_done()  # the file's packets come in as "commands"

    def end_infile(self, conn: BackendConnection) -> None:
        """The client sent the empty packet: back to commands, with the node's answer still to forward."""
        self._infile = None
        self.phase = PH_COMMAND
        self._fwd = conn

    def infile_conn(self) -> BackendConnection | None:
        return self._infile.conn if self._infile is not None else None

    @property
    def logged_in(self) -> bool:
        return self.phase == PH_COMMAND or self.phase == PH_INFILE

    def _settle(self, conn: BackendConnection) -> bool:
        """Pin the connection (transaction, cursor) or give it back; False when the client is gone."""
        self._fwd = None
        if conn.closed or conn.broken:
            if self.conn is conn:
                self.conn = None
            if conn.forwarded_any:
                self.close()  # half a result already went out: the only honest end is closing
                return False
            self._error(ER.CONNECTION_KILLED, f"Connection to data node '{conn.node_name}' was lost")
        elif self.phase == PH_CLOSED:
            self.conn = None
            self._give_back(conn, dirty=True)
            return False
        else:
            if conn.last_insert_id:
                self.session.last_insert_id = conn.last_insert_id  # for SELECT LAST_INSERT_ID() (_select_database)
            if conn.last_status & METADATA_CHANGED:
                backend.bump_schema_epoch()  # the node re-prepared a statement: its tables changed
            if self.sticky:
                conn.user_locks = "userlock" in self.sticky
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

    def keep_diagnostics(self, conn: BackendConnection | None, rerun: tuple | None = None) -> None:
        """The last statement left warnings, an error, an insert id or found rows on its connection: hold it (or,
        pipelined, keep the statement to run again) for a SHOW WARNINGS / SHOW ERRORS / SELECT LAST_INSERT_ID() /
        SELECT FOUND_ROWS() that may come next (`_diagnostics`)."""
        old, self.diag_conn = self.diag_conn, conn
        self.diag_rerun = rerun
        if old is not None and old is not conn:
            _release(old)
        if conn is not None and self._diag_timer is None:
            # an idle client must not keep a pooled connection from the others for long
            self._diag_timer = self.loop.call_later(DIAGNOSTICS_HOLD, self._drop_diagnostics)

    def _drop_diagnostics(self) -> None:
        if self._diag_timer is not None:
            self._diag_timer.cancel()
            self._diag_timer = None
        conn, self.diag_conn = self.diag_conn, None
        self.diag_rerun = None
        if conn is not None:
            _release(conn)

    def _diagnostics(self, payload: bytes) -> bool:
        """Before the next command: answer a diagnostics statement from the previous statement's connection (True),
        else let the held connection go (False: the command runs as usual)."""
        conn, self.diag_conn = self.diag_conn, None
        rerun, self.diag_rerun = self.diag_rerun, None
        if self._diag_timer is not None:
            self._diag_timer.cancel()
            self._diag_timer = None
        if payload[:1] == b"\x03" and _DIAGNOSTICS.match(payload, 1):
            if conn is not None and not conn.closed and self.conn is None:
                self.payload = payload
                self._forward(conn, frame(payload, 0))
                return True
            if rerun is not None and self.conn is None:
                self.payload = payload
                self._slow(self._rerun_for_diagnostics(rerun, payload))
                if conn is not None:
                    _release(conn)
                return True
        if conn is not None:
            _release(conn)
        return False

    async def _rerun_for_diagnostics(self, rerun: tuple, payload: bytes) -> None:
        """A pipelined SELECT left warnings or an error on a shared connection that has run other clients'
        statements since: run it again on a connection of the same node and database (read-only; its rows are
        dropped), then the diagnostics statement there."""
        node, phys, command = rerun
        conn = await self._conn_for(node, phys)
        try:
            if command[:1] == b"\x17":  # COM_STMT_EXECUTE of a pass-through statement
                stmt = self.stmts.get(struct.unpack_from("<I", command, 1)[0])
                if stmt is None:
                    raise BackendError(ER.UNKNOWN_STMT_HANDLER, ER.sqlstate(ER.UNKNOWN_STMT_HANDLER),
                                       b"the statement was closed")
                bstmt, _ = await conn.prepare(stmt.sql)
                command = self._execute_payload(stmt, bstmt, command)
            await conn.command(command)
        except BackendError:
            pass  # the error is what SHOW WARNINGS / SHOW ERRORS will show
        except BaseException:
            self._give_back(conn, dirty=True)
            raise
        await self.forward_and_wait(conn, frame(payload, 0), KIND_RESULT)
        self._settle(conn)

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
        elif kw == b"UNLOCK":
            self.sticky.discard("lock")
        if _LOCK_HINT(sql) is not None:
            funcs = {f.upper() for f in _USER_LOCK_CALL.findall(sql)}
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

    def _forward(self, conn: BackendConnection, packet: bytes, kind: int = KIND_RESULT) -> None:
        self._fwd = conn
        conn.forward(packet, self.transport, kind, self._forward_done)

    # --- COM_QUERY --------------------------------------------------------------------------------------------
    def _com_query(self, payload: bytes) -> None:
        sql = payload[1:]
        kw = first_word(sql)
        if b";" in sql and self._multi is None and not executor.is_compound(kw, sql):
            lexed = lex(sql)
            if lexed.statement_count > 1 and self._multi_statement(lexed):
                return
        handler = LOCAL_STATEMENTS.get(kw)
        if handler is not None and handler(self, sql):
            return
        # DATABASE() / LAST_INSERT_ID() / CONNECTION_ID() are answered here; all have a parenthesis
        if kw == b"SELECT" and len(sql) < 48 and b"(" in sql and self._select_database(sql):
            return
        # (_LOCK_HINT: one case-insensitive search for "_lock", the cheapest test measured)
        if kw in NOTE_WORDS or _LOCK_HINT(sql) is not None:
            self._note_sticky(kw, sql)
        # SELECT FOUND_ROWS() after SQL_CALC_FOUND_ROWS must read this statement's connection (held by _settle)
        self._calc_found_rows = (b"_ROWS" in sql or b"_rows" in sql) and _CALC_FOUND_ROWS.search(sql) is not None
        dbconf = self.session.dbconf
        if dbconf is not None and dbconf.tables:
            self._sharded_query(sql)
            return
        node, phys = self._target()
        if kw in _METADATA_WORDS and dbconf is not None and dbconf.renamed and _metadata_statement(kw, sql):
            # the node would answer with the physical database's name: ddm.metadata shows the logical one
            self._slow(self._renamed_metadata(sql, payload, node, phys))
            return
        pipes = self.server.pipelines
        if pipes.nodes and kw == b"SELECT" and pipes.submit(self, node, phys, sql, self.raw or frame(payload, 0)):
            return  # queued on a shared connection (ddm.pipeline)
        conn = self._ready_conn(node, phys)
        if conn is not None:
            self._forward(conn, self.raw or frame(payload, 0))
            return
        self._slow(self._forward_slow(payload, KIND_RESULT, node, phys))

    def _multi_statement(self, lexed) -> bool:
        """Several statements in one COM_QUERY: refused without CLIENT_MULTI_STATEMENTS, else answered statement
        by statement (ddm.multistatement) when one of them is ddm's to answer; False: the node runs it whole."""
        if not self.session.multi_statements:
            # the data-node connection accepts multi-statements; this client did not ask for them
            self._error(ER.PARSE_ERROR, "You have an error in your SQL syntax: multi-statements are not enabled "
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
            if _is_load_local(sql):
                # the node's file request would wait for a file the client sends between results
                self._error(ER.NOT_SUPPORTED_YET, "This version of ddm doesn't yet support 'LOAD DATA LOCAL INFILE "
                                                  "inside a multi-statement'")
                self.command_done()
            elif not ((self.diag_conn is not None or self.diag_rerun is not None) and self._diagnostics(payload)):
                self.payload = payload
                self._com_query(payload)
        except Exception as exc:  # as in on_command: the client gets an error, the worker goes on
            log.exception("internal error serving %s", self.peer)
            self._error(ER.UNKNOWN_ERROR, f"ddm internal error: {type(exc).__name__}: {exc}")
            self.command_done()
        try:
            await done
        finally:
            self.transport = real
            del self.command_done
            self.no_pipe = False

    def _sharded_query(self, sql: bytes) -> None:
        route, lexed, bound = executor.fast_units(self, sql)
        if route is not None and not self.txn_conns and self.txn_begin is None:
            pipes = self.server.pipelines
            if (pipes.nodes and lexed.first_keyword == b"SELECT"
                    and pipes.submit(self, route[0], route[1], sql, route[2], lexed.digest)):
                return  # one shard's SELECT, queued on a shared connection (ddm.pipeline)
            conn = self._ready_conn(route[0], route[1])
            if conn is not None:
                self._forward(conn, route[2])
                return
        self._slow(executor.run_query(self, sql, lexed, bound))

    async def _renamed_metadata(self, sql: bytes, payload: bytes, node: str, phys: bytes | None) -> None:
        if not await metadata.answer(self, lex(sql), sql):
            await self._forward_slow(payload, KIND_RESULT, node, phys)

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
                self._give_back(c, dirty=True)
            elif not done.done():
                done.set_result(None)

        # connection_lost gives back the connections the client holds (pinned, transaction) once they are idle
        held = conn is self.conn or conn in self.txn_conns.values()
        self._fwd = conn
        conn.forward(packet, self.transport, kind, finished)
        try:
            await done
        except asyncio.CancelledError:
            if done.done() and not done.cancelled() and not held:  # it had ended before the client went away
                self._give_back(conn, dirty=True)
            raise
        finally:
            self._fwd = None

    async def execute_on(self, conn: BackendConnection, stmt: ClientStatement, bstmt, payload: bytes) -> None:
        """Send the statement's buffered long data, then its execute, with the backend statement id."""
        stmt.hold(conn, bstmt)
        for chunk in stmt.long_data:
            conn.send_only(b"\x18" + struct.pack("<I", bstmt.stmt_id) + chunk[5:])
        stmt.long_data = []
        await self.forward_and_wait(conn, frame(self._execute_payload(stmt, bstmt, payload), 0))

    def _stmt_use(self, sql: bytes) -> bool:
        parts = sql.split(None, 1)
        if len(parts) < 2:
            return False
        name = parts[1].strip().rstrip(b";").strip().strip(b"`").decode("utf-8", "replace")
        self._use(name)
        self.command_done()
        return True

    def _use(self, name: str) -> None:
        problem = self._check_db(name)
        if problem:
            self._error(*problem)
            return
        self.session.bind_database(self.config, name)
        self._target_key = None
        self._ok()

    def _select_database(self, sql: bytes) -> bool:
        norm = sql.upper().replace(b" ", b"").replace(b"\n", b"").rstrip(b";")
        if norm == b"SELECTLAST_INSERT_ID()" and self.conn is None and not self.txn_conns:
            # the connection that ran the client's last INSERT went back to the pool (or, held for this, was asked
            # already by _diagnostics): the value is the one its OK packet carried (sharded: the id ddm made)
            col = column_definition("LAST_INSERT_ID()", FT.LONGLONG, length=21, charset=63, flags=0x1 | 0x20 | 0x80)
            self.transport.write(text_resultset([col], [text_row((self.session.last_insert_id,))],
                                                deprecate_eof=self.deprecate_eof, status=self._status()))
            self.command_done()
            return True
        if norm.startswith(b"SELECTCONNECTION_ID()"):
            return threads.select_connection_id(self, sql)  # ddm's id, the one in its greeting
        if norm not in (b"SELECTDATABASE()", b"SELECTSCHEMA()"):
            return False
        # the logical name: forwarding would show the data node's physical database
        name = "DATABASE()" if b"DATABASE" in norm else "SCHEMA()"
        self.transport.write(simple_resultset([name], [(self.session.db,)], deprecate_eof=self.deprecate_eof,
                                              status=self._status()))
        self.command_done()
        return True

    def _stmt_set(self, sql: bytes) -> bool:
        if _SET_STATEMENT.match(sql):
            # SET STATEMENT var = value [, ...] FOR <statement> (MariaDB): settings for that one statement, which
            # runs and answers as it would alone; nothing of it belongs in the session
            dbconf = self.session.dbconf
            if dbconf is not None and dbconf.tables:
                self._error(ER.NOT_SUPPORTED_YET, "This version of ddm doesn't yet support 'SET STATEMENT ... FOR' "
                                                  "on a sharded database")
                self.command_done()
                return True
            return False  # the normal path forwards it, and its answer, as any statement
        if _sets_global(sql):
            # replayed as session state, it would be set again on every connection ddm opens, on one node only
            self._error(ER.NOT_SUPPORTED_YET, "This version of ddm doesn't yet support 'SET GLOBAL' from a client "
                                              "(change the data nodes' global settings on the nodes)")
            self.command_done()
            return True
        local = _local_set(sql) if self.conn is None and not self.txn_conns and self.txn_begin is None else None
        if local is not None:
            # SET NAMES / SET autocommit need no round trip: they are replayed where statements run, and a
            # client can set them even while the node of its database is down.
            kind, value = local
            if kind == "autocommit":
                self.session.autocommit = value
            self.session.record(sql.strip().rstrip(b";"))
            self._ok()
            self.command_done()
            return True
        self._slow(self._run_set(sql))
        return True

    async def _run_set(self, sql: bytes) -> None:
        node, phys = self._target()
        conn = await self._conn_for(node, phys)
        try:
            res = await conn.query(sql)
        except BaseException:
            if conn is not self.conn:
                conn.pool.release(conn) if conn.pool else conn.close()
            raise
        self.session.record(sql.strip().rstrip(b";"))
        self.session.no_backslash_escapes = bool(res.status & SS.NO_BACKSLASH_ESCAPES)
        conn.signature = self.session.signature
        low = sql.lower().replace(b" ", b"")
        if b"autocommit=" in low:
            self.session.autocommit = not (b"autocommit=0" in low or b"autocommit=off" in low
                                           or b"autocommit=false" in low)
        self._send(ok_packet(res.affected_rows, res.insert_id, res.status, res.warnings, res.info,
                             self.session_track), 1)
        if conn is not self.conn:
            if conn.in_transaction:
                self.conn = conn
            else:
                conn.pool.release(conn)

    def _stmt_show(self, sql: bytes) -> bool:
        words = sql.upper().split()
        if (len(words) > 1 and words[1].rstrip(b";") in (b"WARNINGS", b"ERRORS", b"COUNT(*)") and self.conn is None
                and not self.txn_conns and self.txn_begin is None and _DIAGNOSTICS.match(sql)):
            # `_diagnostics` found no connection holding the previous statement's warnings or error: it had none
            # (any pooled connection would show another client's)
            if words[1] == b"COUNT(*)":
                name = "@@session.warning_count" if words[2].startswith(b"WARNINGS") else "@@session.error_count"
                col = column_definition(name, FT.LONG, length=10, charset=63, flags=0x81)  # NOT NULL, BINARY
                self.transport.write(text_resultset([col], [text_row((0,))], deprecate_eof=self.deprecate_eof,
                                                    status=self._status()))
            else:
                self.transport.write(simple_resultset(["Level", "Code", "Message"], [],
                                                      deprecate_eof=self.deprecate_eof, status=self._status()))
            self.command_done()
            return True
        if [w.rstrip(b";") for w in words[1:3]] in ([b"PROCESSLIST"], [b"FULL", b"PROCESSLIST"]):
            threads.show_processlist(self, sql, full=words[1] == b"FULL")  # ddm's thread ids, not the node's
            return True
        if words[:2] in ([b"SHOW", b"DATABASES"], [b"SHOW", b"SCHEMAS"]):
            allowed = self.user.databases if self.user else ()
            names = [n for n in self.config.databases if "*" in allowed or n in allowed]
            rows = [(n,) for n in sorted(names)]
            if len(words) >= 4 and words[2] == b"LIKE":
                import fnmatch

                pat = words[3].strip(b"'\"").decode().lower().replace("%", "*").replace("_", "?")
                rows = [r for r in rows if fnmatch.fnmatch(r[0].lower(), pat)]
            self.transport.write(simple_resultset(["Database"], rows, deprecate_eof=self.deprecate_eof,
                                                  status=self._status()))
            self.command_done()
            return True
        return False

    def _stmt_kill(self, sql: bytes) -> bool:
        threads.kill_statement(self, sql)  # ddm's thread ids: never passed to a node as written
        return True

    def _stmt_database_ddl(self, sql: bytes) -> bool:
        """CREATE / DROP DATABASE (SCHEMA) from a client: refused, in every session (see database_ddl_refusal)."""
        message = database_ddl_refusal(sql)
        if message is None:
            return False
        self._error(ER.NOT_SUPPORTED_YET, message)
        self.command_done()
        return True

    def _stmt_load(self, sql: bytes) -> bool:
        dbconf = self.session.dbconf
        if dbconf is None or not dbconf.tables or not _is_load_local(sql):
            return False  # pass-through: the node's file request is relayed (ddm.infile)
        self._error(ER.NOT_SUPPORTED_YET, "This version of ddm doesn't yet support 'LOAD DATA LOCAL INFILE on "
                                          f"sharded database {self.session.db}'")
        self.command_done()
        return True

    # --- prepared statements ----------------------------------------------------------------------------------
    async def _com_stmt_prepare(self, payload: bytes) -> None:
        sql = payload[1:]
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
        stmt = self.stmts[stmt_id] = ClientStatement(stmt_id, sql, node, prepared.nparams, prepared.ncols, response,
                                                     phys=phys, plan=plan, lexed=lexed, logical_db=logical_db)
        if conn is not None and not prepared.closed:
            stmt.hold(conn, prepared)
        kw = first_word(sql)
        if kw in NOTE_WORDS:
            stmt.effects = kw
        elif _USER_LOCK_CALL.search(sql) is not None:
            stmt.effects = b""
        first = response[0]
        out = [frame(first[:1] + struct.pack("<I", stmt_id) + first[5:], 1)]
        out.extend(frame(p, (i + 2) & 0xFF) for i, p in enumerate(response[1:]))
        self.transport.write(b"".join(out))

    def _com_stmt_execute(self, payload: bytes) -> None:
        stmt_id = struct.unpack_from("<I", payload, 1)[0]
        stmt = self.stmts.get(stmt_id)
        if stmt is None:
            self._error(ER.UNKNOWN_STMT_HANDLER, f"Unknown prepared statement handler ({stmt_id}) given to "
                                                 "mysqld_stmt_execute")
            self.command_done()
            return
        if stmt.effects is not None:
            self._note_sticky(stmt.effects, stmt.sql)  # CREATE TEMPORARY, GET_LOCK(), DDL: as for a text one
        if stmt.plan is not None:
            if stmt.logical_db != self.session.db:
                # its plan routes over the sharded database it was prepared in; USE changed the rules in force
                self._error(ER.NOT_SUPPORTED_YET, f"This version of ddm doesn't yet support executing a statement "
                                                  f"prepared in sharded database '{stmt.logical_db}' after USE of "
                                                  "another database: prepare it again")
                self.command_done()
                return
            if not executor.fast_execute(self, stmt, payload):
                self._slow(executor.execute(self, stmt, payload))
            return
        node, phys = stmt.node, stmt.phys  # where it was prepared (see ClientStatement.phys)
        # A cursor request (flags & 7) takes the slow path, which remembers the connection holding the cursor for
        # COM_STMT_FETCH.
        plain = not stmt.long_data and stmt.cursor_conn is None and len(payload) > 5 and not payload[5] & 0x07
        pipes = self.server.pipelines
        if plain and pipes.nodes and pipes.submit_execute(self, node, phys, stmt, payload):
            return  # queued on a shared connection (ddm.pipeline)
        conn = self._ready_conn(node, phys) if plain else None
        if conn is not None:
            bstmt = conn.cached_stmt(stmt.sql)
            if bstmt is not None:
                if bstmt not in stmt.held:
                    stmt.hold(conn, bstmt)
                self._forward(conn, frame(self._execute_payload(stmt, bstmt, payload), 0))
                return
            if conn is not self.conn:
                conn.pool.release(conn)
        self._slow(self._execute_slow(stmt, payload, node, phys))

    def run_unpiped(self) -> None:
        """Answer the current command again, without a pipe: it was queued on one behind a slow statement
        (ddm.pipeline.Pipe.rescue) and its response there will be dropped."""
        payload = self.payload
        self.no_pipe = True
        try:
            if payload[0] == COM_QUERY:
                self._com_query(payload)
            else:
                self._com_stmt_execute(payload)
        except Exception as exc:  # it was parsed once already; anything here is ddm's fault, not the client's
            log.exception("re-running a pipelined statement failed")
            self._error(ER.UNKNOWN_ERROR, f"ddm could not run the statement: {exc}")
            self.command_done()
        finally:
            self.no_pipe = False

    def _execute_payload(self, stmt: ClientStatement, bstmt, payload: bytes) -> bytes:
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
                self._give_back(conn)
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
            self._error(ER.UNKNOWN_STMT_HANDLER, "Unknown prepared statement handler given to mysqld_stmt_fetch")
            self.command_done()
            return
        conn = stmt.cursor_conn
        bstmt = stmt.cursor_bstmt
        self._forward(conn, frame(b"\x1c" + struct.pack("<I", bstmt.stmt_id) + payload[5:], 0), KIND_ROWS)

    async def _com_stmt_reset(self, payload: bytes) -> None:
        stmt = self.stmts.get(struct.unpack_from("<I", payload, 1)[0])
        if stmt is None:
            self._error(ER.UNKNOWN_STMT_HANDLER, "Unknown prepared statement handler given to mysqld_stmt_reset")
            return
        stmt.long_data = []
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
        self._ok()

    # --- other commands ---------------------------------------------------------------------------------------
    def _com_set_option(self, payload: bytes) -> None:
        option = struct.unpack_from("<H", payload, 1)[0]
        if option not in (0, 1):
            self._error(ER.UNKNOWN_COM_ERROR, "Unknown command")
        else:
            self.session.multi_statements = option == 0
            # MySQL answers COM_SET_OPTION with an EOF packet (an OK one under CLIENT_DEPRECATE_EOF).
            if self.deprecate_eof:
                self._ok()
            else:
                self._send(b"\xfe\x00\x00" + struct.pack("<H", self._status()), 1)
        self.command_done()

    def _com_statistics(self) -> None:
        up = int(time.monotonic() - self.server.started)
        text = (f"Uptime: {up}  Threads: {len(self.server.clients)}  Questions: {self.server.questions()}  "
                f"Slow queries: 0  Opens: 0  Open tables: 0  Queries per second avg: "
                f"{self.server.questions() / max(up, 1):.3f}")
        self._send(text.encode(), 1)
        self.command_done()

    async def _com_reset_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self._give_back(conn, dirty=True)
        for stmt in self.stmts.values():
            if stmt.cursor_conn is not None and stmt.cursor_conn is not conn:
                self._give_back(stmt.cursor_conn, dirty=True)
        self._release_txn_conns()
        self.sticky.clear()
        self._drop_statements()
        self.cursors = 0
        self.session.reset()
        self._ok()

    def _com_change_user(self, p: bytes) -> None:
        pos = 1
        end = p.index(b"\0", pos)
        user = p[pos:end].decode("utf-8", "replace")
        pos = end + 1
        if self.caps & CLIENT.SECURE_CONNECTION:
            n = p[pos]
            resp = p[pos + 1:pos + 1 + n]
            pos += 1 + n
        else:
            end = p.index(b"\0", pos)
            resp = p[pos:end]
            pos = end + 1
        db = None
        if pos < len(p):
            raw_db, pos = _cstring(p, pos)
            db = raw_db.decode("utf-8", "replace") or None
        charset = None
        if pos + 2 <= len(p):
            charset = struct.unpack_from("<H", p, pos)[0]
            pos += 2
        plugin = NATIVE
        if self.caps & CLIENT.PLUGIN_AUTH and pos < len(p):
            plugin, pos = _cstring(p, pos)
        # A new user starts from a clean session, like after COM_RESET_CONNECTION.
        conn, self.conn = self.conn, None
        if conn is not None:
            self._give_back(conn, dirty=True)
        self._release_txn_conns()
        self.sticky.clear()
        self._drop_statements()
        self.cursors = 0
        self.session = Session()
        self._target_key = None
        self.session.multi_statements = bool(self.caps & CLIENT.MULTI_STATEMENTS)
        names = set_names_for(charset) if charset is not None else None
        if names:
            self.session.record(names)
        self.pending_db = db
        self.phase = PH_AUTH
        self.seq = 1
        self._begin_auth(user, plugin, resp)
        self.command_done()


_METADATA_WORDS = frozenset((b"SHOW", b"DESC", b"DESCRIBE", b"EXPLAIN", b"SELECT"))


_METADATA_SHOW = frozenset((b"TABLES", b"COLUMNS", b"FIELDS", b"INDEX", b"INDEXES", b"KEYS", b"CREATE", b"TABLE"))


def _metadata_statement(kw: bytes, sql: bytes) -> bool:
    """Whether ddm.metadata may have to answer this statement on a database whose physical name differs (SHOW
    WARNINGS, VARIABLES etc. keep the direct path)."""
    if kw == b"SELECT":
        low = sql.lower()
        return b"information_schema" in low or b"database" in low or b"schema" in low
    if kw == b"SHOW":
        words = sql.upper().split(None, 3)
        word = words[2] if len(words) > 2 and words[1] == b"FULL" else words[1] if len(words) > 1 else b""
        return word.rstrip(b";") in _METADATA_SHOW
    return True


DIAGNOSTICS_HOLD = 2.0  # seconds a connection with the last statement's warnings waits for a SHOW WARNINGS


def _release(conn: BackendConnection) -> None:
    """Back to its pool as after any statement (nothing runs on it, its session state is the client's)."""
    if conn.pool is not None:
        conn.pool.release(conn)
    else:
        conn.close()


# what reads the previous statement's diagnostics area, its LAST_INSERT_ID() or FOUND_ROWS()
_DIAGNOSTICS = re.compile(rb"\s*(?:SHOW\s+(?:COUNT\s*\(\s*\*\s*\)\s+)?(?:WARNINGS|ERRORS)\b|"
                          rb"SELECT\s+(?:@@(?:SESSION\.)?(?:WARNING_COUNT|ERROR_COUNT)|LAST_INSERT_ID\s*\(\s*\)|"
                          rb"FOUND_ROWS\s*\(\s*\))\s*;?\s*$)", re.I)
_CALC_FOUND_ROWS = re.compile(rb"\bSQL_CALC_FOUND_ROWS\b", re.I)
_SET_STATEMENT = re.compile(rb"^\s*SET\s+STATEMENT\s", re.I)


def _sets_global(sql: bytes) -> bool:
    """Whether a SET assigns a global variable (`SET GLOBAL x = ..`, `SET @@global.x = ..`, in any of its
    comma-separated assignments); reading one (`SET @x = @@global.max_connections`) is a session statement."""
    lexed = lex(sql)
    depth = 0
    target = True  # the next token names what is assigned
    for i in range(1, lexed.ntokens):
        text = lexed.text(i)
        if target:
            word = text.upper()
            if word == b"GLOBAL" or word.startswith(b"@@GLOBAL."):
                return True
            target = word in (b"SESSION", b"LOCAL")  # SET SESSION x = ..: x is the target
            continue
        if text == b"(":
            depth += 1
        elif text == b")":
            depth -= 1
        elif text == b"," and depth == 0:
            target = True
    return False
_SET_NAMES = re.compile(rb"^\s*SET\s+NAMES\s+'?(\w+)'?(\s+COLLATE\s+'?(\w+)'?)?\s*;?\s*$", re.I)
_SET_AUTOCOMMIT = re.compile(rb"^\s*SET\s+(?:@@(?:SESSION\.)?|SESSION\s+)?AUTOCOMMIT\s*=\s*(\w+)\s*;?\s*$", re.I)
_KNOWN_CHARSETS = {cs.encode() for cs, _ in COLLATIONS.values()} | {b"utf8"}
_KNOWN_COLLATIONS = {co.encode() for _, co in COLLATIONS.values()}
def _cstring(p: bytes, pos: int) -> tuple[bytes, int]:
    """A NUL-terminated string at `pos` (running to the end of the packet when the NUL is missing)."""
    end = p.find(b"\0", pos)
    end = len(p) if end < 0 else end
    return p[pos:end], end + 1


def _is_load_local(sql: bytes) -> bool:
    """LOAD {DATA | XML} [LOW_PRIORITY | CONCURRENT] LOCAL INFILE ... (comments skipped by the lexer)."""
    lexed = lex(sql)
    words = [lexed.text(i).upper() for i in range(min(lexed.ntokens, 4))]
    return words[:1] == [b"LOAD"] and words[1:2] in ([b"DATA"], [b"XML"]) and b"LOCAL" in words[2:4]


def _local_set(sql: bytes) -> tuple[str, object] | None:
    m = _SET_NAMES.match(sql)
    if m is not None:
        if m.group(1).lower() in _KNOWN_CHARSETS and (m.group(3) is None or m.group(3).lower() in _KNOWN_COLLATIONS):
            return "names", m.group(1).lower()
        return None
    m = _SET_AUTOCOMMIT.match(sql)
    if m is not None:
        v = m.group(1).upper()
        if v in (b"1", b"ON", b"TRUE"):
            return "autocommit", True
        if v in (b"0", b"OFF", b"FALSE"):
            return "autocommit", False
    return None


STICKY_KEYWORDS = {b"LOCK", b"UNLOCK", b"CREATE"}  # GET_LOCK() etc.: `_USER_LOCK_CALL`, on a bytes search's hit
DDL_WORDS = frozenset((b"CREATE", b"DROP", b"ALTER", b"RENAME", b"TRUNCATE"))  # move the schema epoch
NOTE_WORDS = frozenset(STICKY_KEYWORDS) | DDL_WORDS  # first words `_note_sticky` looks at
_USER_LOCK_CALL = re.compile(rb"\b(GET_LOCK|RELEASE_ALL_LOCKS)\s*\(", re.I)
# Run on every COM_QUERY: ~70 ns on a 35-byte statement, ~340 ns on 1 KB (a bytes `in` per letter case costs 3x
# that, _USER_LOCK_CALL itself 5-40x); only a hit pays for _USER_LOCK_CALL
_LOCK_HINT = re.compile(rb"_lock", re.I).search

LOCAL_STATEMENTS = {
    b"USE": ClientConnection._stmt_use,
    b"SET": ClientConnection._stmt_set,
    b"SHOW": ClientConnection._stmt_show,
    b"KILL": ClientConnection._stmt_kill,
    b"LOAD": ClientConnection._stmt_load,
    b"CREATE": ClientConnection._stmt_database_ddl,
    b"DROP": ClientConnection._stmt_database_ddl,
}

# first words a multi-statement is cut into single statements for (ddm.multistatement): the statements ddm answers
# or tracks itself, and DDL; LOAD DATA LOCAL on a pass-through database goes to the node with the rest
SPLIT_WORDS = (frozenset(LOCAL_STATEMENTS) - {b"LOAD"}) | STICKY_KEYWORDS | {b"ALTER", b"RENAME", b"TRUNCATE"}

