"""A connection from ddm to a data node: handshake and authentication as a MySQL client, then commands.

The packet state machine lives in `ddm_core.protocol.BackendCore`; this subclass adds the asyncio glue, the
client side of the handshake (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html)
and the per-connection state a pooled connection carries between clients (current database, the session
statements it has replayed, the statements prepared on it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ddm.wire import auth, nodewatch
from ddm.wire.constants import client as CLIENT
from ddm.wire.constants import command as COM
from ddm.wire.constants import er as ER
from ddm.wire.constants import server_status as SS
from ddm_core import packets as P
from ddm_core.protocol import (
    KIND_PREPARE,
    KIND_RESULT,
    MODE_COLLECT,
    MODE_FORWARD,
    MODE_IDLE,
    MODE_RAW,
    BackendCore,
)

# Capabilities ddm asks of a data node. The "flavour" bits (DEPRECATE_EOF, SESSION_TRACK, FOUND_ROWS) change the
# shape or meaning of responses, so they are taken from the client and pools are kept per flavour: a response can
# then be forwarded as the bytes the node sent. LOCAL_FILES lets the node answer LOAD DATA LOCAL with a file request
# that ddm.execute.infile relays to the client, so only clients that accept those get it.
BASE_CAPABILITIES = (
    CLIENT.LONG_PASSWORD | CLIENT.LONG_FLAG | CLIENT.PROTOCOL_41 | CLIENT.TRANSACTIONS | CLIENT.SECURE_CONNECTION
    | CLIENT.MULTI_STATEMENTS | CLIENT.MULTI_RESULTS | CLIENT.PS_MULTI_RESULTS | CLIENT.PLUGIN_AUTH
    | CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT.INTERACTIVE
)
FLAVOUR_BITS = CLIENT.DEPRECATE_EOF | CLIENT.SESSION_TRACK | CLIENT.FOUND_ROWS | CLIENT.LOCAL_FILES
DEFAULT_COLLATION = 45  # utf8mb4_general_ci: known to MariaDB and MySQL alike
log = logging.getLogger("ddm.wire.backend")
STMT_CACHE_SIZE = 512  # statements kept prepared per connection (the server's max_prepared_stmt_count is global)
METADATA_CHANGED = 0x400  # SERVER_STATUS_METADATA_CHANGED: the node re-prepared a statement whose tables changed

# The schema epoch of this worker: it moves on every DDL statement through ddm (and when a node reports that a
# statement's metadata changed). A node statement prepared in an older epoch is not reused: the next use
# prepares it again (`BackendConnection.prepare`, `cached_stmt`).
schema_epoch = 0


def bump_schema_epoch() -> None:
    global schema_epoch
    schema_epoch += 1


class BackendError(Exception):
    """An ERR packet from a data node: forwarded to the client with the node's own code and SQLSTATE."""

    def __init__(self, code: int, sqlstate: bytes, message: bytes, payload: bytes | None = None) -> None:
        super().__init__(f"({code}) {message.decode('utf-8', 'replace')}")
        self.code = code
        self.sqlstate = sqlstate
        self.message = message
        self.payload = payload if payload is not None else P.err_packet(code, sqlstate, message)

    @classmethod
    def from_payload(cls, payload: bytes) -> BackendError:
        code, state, msg = P.parse_err(payload)
        return cls(code, state, msg, payload)


class NodeUnavailable(Exception):
    """The data node cannot be reached, or the connection to it broke."""

    code = ER.CONNECTION_KILLED

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"data node '{node}' is unavailable: {reason}")
        self.node = node


@dataclass
class Result:
    """One buffered response: result-set columns/rows (raw payloads) or the OK packet's fields."""

    columns: list[bytes] = field(default_factory=list)
    rows: list[bytes] = field(default_factory=list)
    affected_rows: int = 0
    insert_id: int = 0
    status: int = 0
    warnings: int = 0
    info: bytes = b""
    ok: bytes | None = None  # the raw OK / terminating packet


@dataclass(eq=False)
class Prepared:
    """A statement prepared on one backend connection.

    `refs` counts the client statements (ddm.frontend.connection.ClientStatement.held) that used it and are still open;
    one nobody holds is closed on the node after `pool.statement_idle_timeout`, or at once when it is no longer
    the connection's cached statement for its text (`retired`: a newer PREPARE of it, a DDL epoch later)."""

    stmt_id: int
    nparams: int
    ncols: int
    types_bound: bytes | None = None  # the parameter types this backend statement last received
    response: list[bytes] = field(default_factory=list)  # the prepare response packets
    epoch: int = 0  # schema_epoch when it was prepared
    refs: int = 0
    idle_since: float = 0.0  # when refs last dropped to 0 (or it was made)
    retired: bool = False  # no longer in the connection's cache: closed when refs drops to 0
    closed: bool = False  # closed on the node (or the node forgot it: COM_RESET_CONNECTION)
    sql: bytes = b""


def parse_handshake(payload: bytes) -> dict:
    """Protocol::HandshakeV10 from a server."""
    if not payload or payload[0] != 10:
        raise ValueError(f"unsupported handshake protocol version {payload[:1]!r}")
    end = payload.index(b"\0", 1)
    version = payload[1:end]
    pos = end + 1
    conn_id = struct.unpack_from("<I", payload, pos)[0]
    pos += 4
    data1 = payload[pos:pos + 8]
    pos += 9  # 8 bytes of scramble + filler
    caps = struct.unpack_from("<H", payload, pos)[0]
    pos += 2
    charset = payload[pos] if pos < len(payload) else DEFAULT_COLLATION
    status = struct.unpack_from("<H", payload, pos + 1)[0] if pos + 3 <= len(payload) else 0
    pos += 3
    caps |= struct.unpack_from("<H", payload, pos)[0] << 16 if pos + 2 <= len(payload) else 0
    pos += 2
    data_len = payload[pos] if pos < len(payload) else 0
    ext_caps = 0  # MariaDB puts its extended capabilities in the last 4 of the 10 reserved bytes
    if not caps & CLIENT.LONG_PASSWORD and pos + 11 <= len(payload):
        ext_caps = struct.unpack_from("<I", payload, pos + 7)[0]
    pos += 11  # length byte + 10 reserved
    data2_len = max(13, data_len - 8)
    data2 = payload[pos:pos + data2_len]
    pos += data2_len
    plugin = b""
    if caps & CLIENT.PLUGIN_AUTH:
        end = payload.find(b"\0", pos)
        plugin = payload[pos:end if end >= 0 else len(payload)]
    scramble = (data1 + data2).rstrip(b"\0")[:20]
    return {"version": version, "conn_id": conn_id, "caps": caps, "charset": charset, "status": status,
            "scramble": scramble, "plugin": plugin, "ext_caps": ext_caps}


def auth_response(plugin: bytes, password: bytes, scramble: bytes) -> bytes:
    if plugin == b"mysql_native_password":
        return auth.native_password_scramble(password, scramble)
    if plugin == b"caching_sha2_password":
        return auth.sha2_password_scramble(password, scramble)
    if plugin == b"mysql_clear_password":
        return password + b"\0"
    raise NodeUnavailable("?", f"data node asks for unsupported auth plugin {plugin.decode(errors='replace')}")


class BackendConnection(BackendCore):
    """asyncio Protocol for one data-node connection (one command at a time)."""

    def __init__(self, node_name: str, user: str, password: str, flavour: int, *, tls: bool = False,
                 pool: object | None = None, read_timeout: float = nodewatch.DEFAULT_READ_TIMEOUT) -> None:
        self.node_name = node_name
        self.read_timeout = read_timeout  # seconds of silence while a response is due (ddm.wire.nodewatch); 0 = none
        self.lost_reason = ""  # why ddm dropped the connection (read timeout), for the client's error
        self.user = user.encode()
        self.password = password.encode()
        self.flavour = flavour
        self.want_tls = tls
        self.pool = pool
        self.deprecate_eof = bool(flavour & CLIENT.DEPRECATE_EOF)
        self.session_track = bool(flavour & CLIENT.SESSION_TRACK)
        self.loop = asyncio.get_event_loop()
        self.closed = False
        self.broken = False
        self.in_pool = False  # idle in its pool (set and cleared by ddm.execute.pool only)
        self.created = time.monotonic()
        self.last_used = self.created
        self.server_version = b""
        self.server_ext_caps = 0  # MariaDB's extended capabilities the node offered (CLIENT.MARIADB_*)
        self.conn_id = 0
        self.db: bytes | None = None  # physical database selected on the node
        self.signature: tuple = ()  # session statements replayed on this connection (see ddm.wire.session)
        self.stmts: OrderedDict[tuple[bytes | None, bytes], Prepared] = OrderedDict()
        self.pending_close: list[int] = []  # statement ids to close when nothing runs here (`flush_closes`)
        self.user_locks = False  # a client left session state here (GET_LOCK() locks, temporary tables, SQL PREPARE): reset first
        self.pipe = None  # the ddm.execute.pipeline.Pipe that owns this connection, if any
        self._waiter: asyncio.Future | None = None
        self._done_cb: Callable[[BackendConnection], None] | None = None
        self._chunk_cb: Callable[[BackendConnection], None] | None = None
        self.mode = MODE_RAW  # the server speaks first: its greeting may arrive before connect() returns

    # --- asyncio.Protocol -------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nodewatch.watch(self.loop).track(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.broken = True
        nodewatch.watch(self.loop).untrack(self)
        mode = self.mode
        self.mode = MODE_IDLE
        if self._waiter is not None and not self._waiter.done():
            why = self.lost_reason or (f": {exc}" if exc else "")
            self._waiter.set_exception(NodeUnavailable(self.node_name, "connection lost" + why))
        self._chunk_cb = None
        if mode in (MODE_FORWARD, MODE_COLLECT) and self._done_cb is not None:
            cb, self._done_cb = self._done_cb, None
            cb(self)
        if self.pool is not None:
            self.pool.discard(self)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:  # commands are small; a full socket buffer resolves itself
        pass

    def resume_writing(self) -> None:
        pass

    # --- hooks from BackendCore -------------------------------------------------------------------------------
    def response_done(self) -> None:
        self._chunk_cb = None
        cb, self._done_cb = self._done_cb, None  # (last_used is stamped when the pool takes it back)
        if cb is not None:
            cb(self)

    def packets_ready(self) -> None:
        if self._chunk_cb is not None:
            self._chunk_cb(self)

    def raw_ready(self) -> None:
        if self._waiter is not None and not self._waiter.done() and self.packets:
            self._waiter.set_result(None)

    def protocol_violation(self, extra: bytes) -> None:
        # Bytes after the end of a response: ddm sent one command at a time, so the stream is out of step.
        self.broken = True
        self.close()

    def read_timed_out(self) -> None:
        """ddm.wire.nodewatch: no byte of the awaited response for read_timeout seconds: drop the connection (the
        statement may still run on the node; ddm never reuses the connection)."""
        log.warning("data node %s: no response for %g s (read_timeout) on connection %d: dropped", self.node_name,
                    self.read_timeout, self.conn_id)
        self.lost_reason = f": no response within read_timeout ({self.read_timeout:g} s)"
        self.broken = True
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # connection_lost follows: waiters fail, callbacks run, the pool forgets it

    # --- connection phase -------------------------------------------------------------------------------------
    async def _read_raw(self, timeout: float) -> bytes:
        if not self.packets:
            self._waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            finally:
                self._waiter = None
        return self.packets.pop(0)

    def _write_raw(self, payload: bytes, seq: int) -> None:
        self.transport.write(P.frame(payload, seq))

    async def connect(self, host: str, port: int, unix_socket: str | None, timeout: float) -> None:
        try:
            if unix_socket:
                await asyncio.wait_for(self.loop.create_unix_connection(lambda: self, unix_socket), timeout)
            else:
                await asyncio.wait_for(self.loop.create_connection(lambda: self, host, port), timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            where = unix_socket or f"{host}:{port}"
            raise NodeUnavailable(self.node_name, f"cannot connect to {where}: {exc or 'timeout'}") from None
        try:
            await asyncio.wait_for(self._handshake(host), timeout)
        except asyncio.TimeoutError:
            self.close()
            raise NodeUnavailable(self.node_name, "handshake timed out") from None
        except (ValueError, IndexError, struct.error) as exc:
            self.close()
            raise NodeUnavailable(self.node_name, f"bad handshake: {exc}") from None

    async def _handshake(self, host: str) -> None:
        first = await self._read_raw(30)
        if first[:1] == b"\xff":
            raise BackendError.from_payload(first)
        hs = parse_handshake(first)
        self.server_version = hs["version"]
        self.conn_id = hs["conn_id"]
        server_caps = hs["caps"]
        self.server_ext_caps = hs["ext_caps"]
        caps = (BASE_CAPABILITIES | self.flavour) & (server_caps | CLIENT.LONG_FLAG)
        # MariaDB's extended capabilities ddm forwards (only a MariaDB node, LONG_PASSWORD clear, reads them)
        ext = CLIENT.MARIADB_OFFERED & self.server_ext_caps if not caps & CLIENT.LONG_PASSWORD else 0
        missing = self.flavour & ~server_caps & ~CLIENT.LOCAL_FILES  # without it the node refuses LOAD DATA LOCAL
        if missing:
            raise NodeUnavailable(self.node_name, f"data node lacks capabilities 0x{missing:x}")
        seq = 1
        if self.want_tls:
            if not server_caps & CLIENT.SSL:
                raise NodeUnavailable(self.node_name, "TLS requested but the data node does not offer it")
            caps |= CLIENT.SSL
            self._write_raw(struct.pack("<IIB23x", caps, 1 << 24, DEFAULT_COLLATION), seq)
            seq += 1
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.transport = await self.loop.start_tls(self.transport, self, ctx, server_hostname=host)
        plugin = hs["plugin"] or b"mysql_native_password"
        scramble = hs["scramble"]
        resp = auth_response(plugin, self.password, scramble)
        payload = (struct.pack("<IIB19xI", caps, 1 << 24, DEFAULT_COLLATION, ext) + self.user + b"\0"
                   + P.lenenc_str(resp) + plugin + b"\0")
        self._write_raw(payload, seq)
        while True:
            pkt = await self._read_raw(30)
            seq = (self.framer.last_seq + 1) & 0xFF
            head = pkt[:1]
            if head == b"\x00":
                break
            if head == b"\xff":
                raise BackendError.from_payload(pkt)
            if head == b"\xfe":  # AuthSwitchRequest: plugin name NUL, new scramble
                end = pkt.index(b"\0", 1)
                plugin = pkt[1:end]
                scramble = pkt[end + 1:].rstrip(b"\0")
                self._write_raw(auth_response(plugin, self.password, scramble), seq)
            elif head == b"\x01":  # AuthMoreData (caching_sha2_password)
                if pkt[1:2] == b"\x03":  # fast auth succeeded, OK follows
                    continue
                if pkt[1:2] == b"\x04":  # full authentication: cleartext over TLS, else RSA key exchange
                    if self.want_tls:
                        self._write_raw(self.password + b"\0", seq)
                    else:
                        self._write_raw(b"\x02", seq)
                else:  # the server's RSA public key
                    self._write_raw(auth.sha2_encrypt_password(self.password, scramble, pkt[1:]), seq)
            else:
                raise NodeUnavailable(self.node_name, f"unexpected packet during authentication: {pkt[:8]!r}")
        self.mode = MODE_IDLE
        self.packets = []

    # --- commands ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                try:
                    self.transport.write(b"\x01\x00\x00\x00\x01")  # COM_QUIT
                except Exception:
                    pass
                self.transport.close()

    def forward(self, packet: bytes, sink: asyncio.Transport | None, kind: int,
                on_done: Callable[[BackendConnection], None]) -> None:
        """Send a framed command and stream the response to `sink` untouched; `on_done(self)` at its end."""
        self._done_cb = on_done
        self.sink = sink
        self.begin(MODE_FORWARD, kind)
        if self.pending_close:
            self.flush_closes()
        self.transport.write(packet)

    def stream(self, payload: bytes, on_packets: Callable[[BackendConnection], None],
               on_done: Callable[[BackendConnection], None]) -> None:
        """Send one command and hand its response over as it arrives: `on_packets(self)` whenever `packets` (and
        `marks`, where the response state changed) hold new payloads, `on_done(self)` at the end or when the
        connection is lost (then `closed` is set). The callee takes the lists it reads (replacing them)."""
        self._chunk_cb = on_packets
        self._done_cb = on_done
        self.begin(MODE_COLLECT, KIND_RESULT)
        self.streaming = True
        self.transport.write(P.frame(payload, 0))

    def send_only(self, payload: bytes) -> None:
        """A command without a response (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA)."""
        self.transport.write(P.frame(payload, 0))

    async def command(self, payload: bytes, kind: int = KIND_RESULT) -> list[bytes]:
        """Send one command and collect its whole response as payloads. Raises BackendError on ERR."""
        if self.closed:
            raise NodeUnavailable(self.node_name, "connection closed")
        fut = self.loop.create_future()
        self._done_cb = lambda _conn: fut.done() or fut.set_result(None)
        self.begin(MODE_COLLECT, kind)
        if self.pending_close:
            self.flush_closes()
        self.transport.write(P.frame(payload, 0))
        await fut
        if self.closed and self.mode == MODE_IDLE and not self.packets:
            raise NodeUnavailable(self.node_name, "connection lost during a command" + self.lost_reason)
        packets = self.packets
        self.packets = []
        if self.last_error:
            last = packets[-1] if packets else b""
            if last[:1] == b"\xff":
                raise BackendError.from_payload(last)
            raise NodeUnavailable(self.node_name, "connection lost during a command" + self.lost_reason)
        return packets

    async def query(self, sql: bytes) -> Result:
        """COM_QUERY with a buffered result (the last result set, for multi-statements)."""
        packets = await self.command(b"\x03" + sql)
        return self.to_result(packets)

    def to_result(self, packets: list[bytes]) -> Result:
        res = Result()
        starts = self.result_cols
        if starts:
            start = starts[-1]
            ncols = packets[start][0] if packets[start][0] < 0xFB else _lenenc(packets[start])
            res.columns = packets[start + 1:start + 1 + ncols]
            rows_from = start + 1 + ncols + (0 if self.deprecate_eof else 1)
            res.rows = packets[rows_from:-1]
            res.ok = packets[-1]
            res.status = self.last_status
        else:
            res.ok = packets[-1]
            res.affected_rows, res.insert_id, res.status, res.warnings, res.info = P.parse_ok(
                packets[-1], self.session_track)
        return res

    def split_results(self, packets: list[bytes]) -> list[Result]:
        """The results of a multi-statement response, one Result per statement."""
        out: list[Result] = []
        i, n = 0, len(packets)
        while i < n:
            p = packets[i]
            if p[0] == 0x00:
                res = Result(ok=p)
                res.affected_rows, res.insert_id, res.status, res.warnings, res.info = P.parse_ok(
                    p, self.session_track)
                out.append(res)
                i += 1
                continue
            if p[0] == 0xFF:
                raise BackendError.from_payload(p)
            ncols = p[0] if p[0] < 0xFB else _lenenc(p)
            res = Result(columns=packets[i + 1:i + 1 + ncols])
            i += 1 + ncols + (0 if self.deprecate_eof else 1)
            start = i
            while i < n and not (packets[i][:1] == b"\xfe" and len(packets[i]) < 0xFFFFFF
                                 and (self.deprecate_eof or len(packets[i]) < 9)):
                if packets[i][:1] == b"\xff":
                    raise BackendError.from_payload(packets[i])
                i += 1
            res.rows = packets[start:i]
            res.ok = packets[i] if i < n else None
            out.append(res)
            i += 1
        return out

    async def prepare(self, sql: bytes, fresh: bool = False) -> tuple[Prepared, list[bytes]]:
        """Prepare `sql` here, or reuse the statement cached for it (not with `fresh`: a client's own PREPARE is
        always answered by the node, so it describes the tables as they are now, nor when it was prepared before
        the last DDL); returns the statement and the response packets when newly made."""
        key = (self.db, sql)  # a prepared statement binds its tables in the database current at PREPARE
        found = self.stmts.get(key)
        if found is not None:
            if not fresh and found.epoch == schema_epoch:
                self.stmts.move_to_end(key)
                return found, []
            self._retire(key)
        epoch = schema_epoch
        for attempt in range(4):
            try:
                packets = await self.command(b"\x16" + sql, KIND_PREPARE)
                break
            except BackendError as exc:
                if exc.code != ER.MAX_PREPARED_STMT_COUNT_REACHED or attempt == 3:
                    raise
                if attempt == 0 and not self.shed_statements():
                    raise
                # COM_STMT_CLOSE has no response: the node's threads of the other connections may not have run
                # the closes yet
                await asyncio.sleep(0.005 * (attempt + 1))
        stmt = self.remember_statement(sql, packets)
        stmt.epoch = min(epoch, stmt.epoch)  # a DDL during the round trip: not reused
        return stmt, packets

    def shed_statements(self) -> int:
        """The node's max_prepared_stmt_count (a global limit) is reached: close the older half of the statements
        kept on the idle connections of this pool (nothing runs on them, no cursor is open there) and on its
        pipelines' shared connections (the closes follow what is queued there), or, when they have none, of those
        kept here. Returns how many were closed."""
        closed = 0
        if self.pool is not None:
            for conn in [*self.pool.idle, *self.pool.shared]:
                if conn is not self and not conn.closed:
                    if conn.pipe is not None:
                        conn.pipe.flush()  # executes already queued there go out before the closes
                    closed += conn._close_oldest(max(1, len(conn.stmts) // 2))
        if not closed:
            closed = self._close_oldest(max(1, len(self.stmts) // 2))
        log.info("data node %s: max_prepared_stmt_count reached; closed %d cached statements", self.node_name,
                 closed)
        return closed

    def _close_oldest(self, n: int) -> int:
        n = min(n, len(self.stmts))
        for _ in range(n):
            _, old = self.stmts.popitem(last=False)
            self._close_now(old)
        return n

    def _close_now(self, stmt: Prepared) -> None:
        """COM_STMT_CLOSE now (no response; the node runs it after what it was sent before). Its holders prepare
        again where they need it (`retired`)."""
        stmt.retired = True
        if not stmt.closed:
            stmt.closed = True
            if not self.closed:
                self.send_only(b"\x19" + struct.pack("<I", stmt.stmt_id))

    def _retire(self, key: tuple) -> None:
        """Take the cached statement for `key` out of the cache; closed on the node once nobody holds it."""
        old = self.stmts.pop(key, None)
        if old is not None:
            old.retired = True
            if old.refs <= 0:
                self.close_statement(old)

    def close_statement(self, stmt: Prepared) -> None:
        """Close `stmt` on the node: now when nothing runs here (idle in its pool, or a pipeline's connection,
        whose queued commands go first), else when the connection comes back (`flush_closes`): a COM_STMT_CLOSE
        must not land between the packets of a command being relayed (LOAD DATA LOCAL)."""
        stmt.retired = True
        if stmt.closed or self.closed:
            stmt.closed = True
            return
        if self.in_pool or self.pipe is not None:
            if self.pipe is not None:
                self.pipe.flush()
            self._close_now(stmt)
        else:
            stmt.closed = True
            self.pending_close.append(stmt.stmt_id)

    def flush_closes(self) -> None:
        ids, self.pending_close = self.pending_close, []
        if not self.closed and ids:
            self.transport.write(b"".join(P.frame(b"\x19" + struct.pack("<I", i), 0) for i in ids))

    def hold(self, stmt: Prepared) -> None:
        stmt.refs += 1

    def drop(self, stmt: Prepared) -> None:
        """A client statement that used `stmt` is closed (or its client left)."""
        stmt.refs -= 1
        if stmt.refs <= 0:
            stmt.idle_since = time.monotonic()
            if stmt.retired:
                self.close_statement(stmt)

    def sweep_statements(self, now: float, idle_timeout: float) -> int:
        """Close the cached statements nobody holds that are older than the schema epoch or unused for
        `idle_timeout` seconds (call when nothing runs here). Returns how many."""
        stale = [key for key, st in self.stmts.items()
                 if st.refs <= 0 and (st.epoch != schema_epoch or now - st.idle_since >= idle_timeout)]
        for key in stale:
            self._retire(key)
        return len(stale)

    def remember_statement(self, sql: bytes, packets: list[bytes]) -> Prepared:
        """Cache the statement a COM_STMT_PREPARE of `sql` made here (its OK response in `packets`), in place of
        any older one for the same text; the least recently used one beyond STMT_CACHE_SIZE is closed on the node."""
        head = packets[0]
        stmt = Prepared(stmt_id=struct.unpack_from("<I", head, 1)[0], nparams=struct.unpack_from("<H", head, 7)[0],
                        ncols=struct.unpack_from("<H", head, 5)[0], response=packets, epoch=schema_epoch,
                        idle_since=time.monotonic(), sql=sql)
        key = (self.db, sql)
        if key in self.stmts:
            self._retire(key)
        self.stmts[key] = stmt
        if len(self.stmts) > STMT_CACHE_SIZE:
            _, old = self.stmts.popitem(last=False)
            self._close_now(old)
        return stmt

    def cached_stmt(self, sql: bytes) -> Prepared | None:
        """The statement prepared here for `sql` in the current database and schema epoch, if any."""
        st = self.stmts.get((self.db, sql))
        return st if st is not None and st.epoch == schema_epoch else None

    def forget_statements(self) -> None:
        """The node dropped every statement of this connection (COM_RESET_CONNECTION)."""
        for st in self.stmts.values():
            st.closed = st.retired = True
        self.stmts.clear()
        self.pending_close = []

    @property
    def in_transaction(self) -> bool:
        return bool(self.last_status & SS.IN_TRANS)

    @property
    def more_results(self) -> bool:
        return bool(self.last_status & SS.MORE_RESULTS_EXISTS)


def _lenenc(payload: bytes) -> int:
    c = payload[0]
    if c == 0xFC:
        return struct.unpack_from("<H", payload, 1)[0]
    if c == 0xFD:
        return int.from_bytes(payload[1:4], "little")
    return struct.unpack_from("<Q", payload, 1)[0]


__all__ = ["BackendConnection", "BackendError", "NodeUnavailable", "Prepared", "Result", "COM", "MODE_RAW"]
