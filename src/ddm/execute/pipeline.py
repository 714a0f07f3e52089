"""Pipelined pass-through SELECTs: many clients' statements on one shared data-node connection.

A MySQL server reads the commands of a connection one after the other and answers each completely before it
reads the next, so responses come back in the order the commands were sent
(https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_command_phase.html). A `Pipe` sends the text
COM_QUERY of every client that joins its queue at once (the commands that arrive in one loop iteration go out in one
write at the start of the next: uvloop itself writes at every `write()` call) and forwards the responses in order:
`BackendCore` in M_FORWARD follows the head client's response and stops at its end; the rest of the chunk
(`protocol_violation(extra)`) belongs to the next queued client. On a loaded box this saves the syscalls and
wake-ups of one connection per statement (perf/RESULTS.md: ~3 socket syscalls per point select instead of 4).

Only statements whose answer cannot depend on which connection runs them, or change it, are pipelined
(`pipelinable`): one read-only SELECT without locking clauses, INTO, user or system variables, or functions that
read or change per-connection state. The client must be between transactions in autocommit, with nothing pinned.
Pipes are keyed by (node, physical database, flavour, session signature), so the state replayed on the pipe's
connection (`ddm.wire.session.synchronize`) is exactly the client's. Everything else, and everything when a pipe is
missing, full (`max_depth`) or stuck behind a slow head (`max_head_wait`), takes the normal pooled path.

Prepared statements: a COM_STMT_EXECUTE of a pipelinable statement (no cursor, no long data) runs on a pipe too,
with the pipe connection's own statement id swapped in. A pipe that has not prepared the statement yet lets that
execute take the normal path and queues a COM_STMT_PREPARE of its own (`_Prepare`), whose response it keeps in its
connection's statement cache instead of forwarding it; the next executes find it there.

Failure: an ERR answers one statement; the node goes on with the next command, so only that client sees it. A lost
pipe connection gives every queued client what a client of a lost normal connection gets (ER_CONNECTION_KILLED, or
a closed connection when part of its result was already sent), and the pipe is dropped. A client that disconnects
while queued has its response read and discarded.

Slow heads: statements queued behind one that has run `max_head_wait` move to the normal path (`Pipe.rescue`: run
again there, their responses on the pipe dropped), and new ones stop joining that pipe until it is through, so one
slow SELECT costs the others at most `max_head_wait` of waiting.

KILL: the node thread of a pipe runs many clients' statements, so a KILL QUERY for it must not arrive while another
client's statement runs there. `Pipe.prepare_kill` makes sure of that before `ddm.execute.threads` sends it: the target's
running statement gets its pipe to itself (the others move, the pipe closes after it); a queued one is dropped.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from typing import TYPE_CHECKING

from ddm.execute.client import PH_CLOSED
from ddm.wire.constants import er as ER
from ddm.wire.constants import server_status as SS
from ddm.wire.session import synchronize
from ddm_core.lexer import lex
from ddm_core.packets import frame
from ddm_core.protocol import KIND_PREPARE, KIND_RESULT, MODE_COLLECT, MODE_FORWARD

if TYPE_CHECKING:
    from ddm.config import Config, PipelineConfig
    from ddm.execute.client import ClientSession
    from ddm.wire.backend import BackendConnection

log = logging.getLogger("ddm.execute.pipeline")

MAX_SQL = 16384  # longer statements take the normal path
RETRY_AFTER = 1.0  # seconds before opening a pipe is tried again after a failure
MAX_UNPREPARABLE = 256  # statements a pipe remembers it could not prepare
MAX_KEYS_PER_NODE = 16  # distinct (database, flavour, signature) pipe groups per node; more go the normal path
SWEEP_EVERY = 1.0  # seconds between looks for pipes past the pool's idle_timeout or max_lifetime

# Words that make a SELECT depend on, or change, the state of the connection it runs on, or lock, wait, write or
# run long by design. Matched as whole words of the digest (upper-cased; string literals are already `?`), so a
# column named like one of them only costs the pipelining of that statement.
FORBIDDEN = frozenset(w.encode() for w in (
    "FOR", "LOCK", "INTO", "PROCEDURE", "HANDLER",  # FOR UPDATE/SHARE, LOCK IN SHARE MODE, SELECT INTO, NEXT VALUE FOR
    "GET_LOCK", "RELEASE_LOCK", "RELEASE_ALL_LOCKS", "IS_FREE_LOCK", "IS_USED_LOCK",
    "SLEEP", "BENCHMARK", "LOAD_FILE",
    "LAST_INSERT_ID", "FOUND_ROWS", "ROW_COUNT", "CONNECTION_ID", "SQL_CALC_FOUND_ROWS",
    "NEXTVAL", "LASTVAL", "SETVAL", "NEXT", "PREVIOUS",  # sequences
    "MASTER_POS_WAIT", "MASTER_GTID_WAIT", "SOURCE_POS_WAIT", "WAIT_FOR_EXECUTED_GTID_SET",
    "WAIT_UNTIL_SQL_THREAD_AFTER_GTIDS",
))
_WORD = re.compile(rb"[A-Za-z_$][A-Za-z0-9_$]*")
_verdicts: dict[bytes, bool] = {}  # digest -> pipelinable
MAX_VERDICTS = 8192


def verdict(digest: bytes) -> bool:
    """Whether a statement with this digest may run on a shared connection (see the module docstring)."""
    if (not digest.startswith(b"SELECT ") or b"@" in digest or b":=" in digest or b";" in digest
            or b"/*" in digest or b"`" in digest):
        return False
    return not any(w.upper() in FORBIDDEN for w in _WORD.findall(digest))


def pipelinable(sql: bytes, digest: bytes | None = None) -> bool:
    """`verdict` of the statement's digest (given, or lexed here: ~0.2 us), cached per digest."""
    if len(sql) > MAX_SQL:
        return False
    if digest is None:
        digest = lex(sql).digest
    v = _verdicts.get(digest)
    if v is None:
        if len(_verdicts) >= MAX_VERDICTS:
            _verdicts.clear()
        v = _verdicts[digest] = verdict(digest)
    return v


class _Prepare:
    """A COM_STMT_PREPARE the pipe sends for itself: its response is kept, not forwarded to a client."""

    __slots__ = ("sql",)

    def __init__(self, sql: bytes) -> None:
        self.sql = sql


class _Discard:
    """The place in the queue of a client moved to the normal path (`Pipe.rescue`): its command went out on the
    pipe already, so its response is read and dropped."""

    __slots__ = ()


_DISCARD = _Discard()


class _Signature:
    """What `ddm.wire.session.synchronize` reads of a session: its signature."""

    __slots__ = ("signature",)

    def __init__(self, signature: tuple) -> None:
        self.signature = signature


class Pipe:
    """One shared data-node connection and the clients whose statements it is answering, in order."""

    def __init__(self, owner: Pipelines, group: _Group, conn: BackendConnection) -> None:
        self.owner = owner
        self.group = group
        self.conn = conn
        self.cfg = group.cfg
        self.queue: deque[ClientSession] = deque()
        self.leftover = b""
        self.head_started = 0.0
        self.dead = False
        self.closing = False
        self.preparing: set[bytes] = set()  # statements this pipe's own COM_STMT_PREPARE is out for
        self.unpreparable: set[bytes] = set()  # statements whose prepare failed here: not tried again
        self.outbuf: list[bytes] = []  # commands queued in this loop iteration, written together by _flush
        self.watch = None  # timer handle of _check_head while clients wait behind the head
        conn.protocol_violation = self._extra  # bytes past the head's response: the next client's
        conn.pipe = self

    def has_room(self) -> bool:
        """Whether one more statement may join the queue now (not full, head not stuck)."""
        n = len(self.queue)
        owner = self.owner
        if n >= self.cfg.max_depth:
            owner.counters["full"] += 1
            return False
        if n and owner.loop.time() - self.head_started > self.cfg.max_head_wait:
            owner.counters["slow_head"] += 1
            return False
        return True

    def submit(self, client: ClientSession, packet: bytes) -> bool:
        if not self.has_room():
            return False
        self.push(client, packet)
        return True

    def push(self, client: ClientSession, packet: bytes) -> None:
        """Queue the client and send its framed command (the caller checked `has_room`)."""
        q = self.queue
        q.append(client)
        client.piped = self
        client.piped_command = packet
        if len(q) == 1:
            self._start(client)
        elif self.watch is None:
            self.watch = self.owner.loop.call_at(self.head_started + self.cfg.max_head_wait, self._check_head)
        self._send(packet)
        self.owner.counters["pipelined"] += 1

    def _send(self, packet: bytes) -> None:
        out = self.outbuf
        if not out:
            self.owner.loop.call_soon(self._flush)
        out.append(packet)

    def _flush(self) -> None:
        out, self.outbuf = self.outbuf, []
        if out and not self.dead and not self.conn.closed:
            self.conn.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def flush(self) -> None:
        """Write what this loop iteration queued now (before a command written to the connection directly)."""
        self._flush()

    def prepare(self, sql: bytes) -> None:
        """Prepare `sql` on this pipe's connection, behind what is queued (once at a time per statement)."""
        if sql in self.preparing or sql in self.unpreparable or self.closing or self.dead:
            return
        self.preparing.add(sql)
        item = _Prepare(sql)
        self.queue.append(item)  # type: ignore[arg-type]
        if len(self.queue) == 1:
            self._start(item)  # type: ignore[arg-type]
        self._send(frame(b"\x16" + sql, 0))
        self.owner.counters["prepared"] += 1

    def _start(self, client: ClientSession) -> None:
        conn = self.conn
        conn._done_cb = self._done
        if type(client) is _Prepare:
            conn.sink = None
            conn.packets = []
            conn.begin(MODE_COLLECT, KIND_PREPARE)
        elif type(client) is _Discard:
            conn.sink = None
            conn.begin(MODE_FORWARD, KIND_RESULT)
        else:
            conn.sink = client.transport if client.phase != PH_CLOSED else None
            conn.begin(MODE_FORWARD, KIND_RESULT)
        self.head_started = self.owner.loop.time()

    def _check_head(self) -> None:
        """Clients wait behind the head: once it has run max_head_wait, they move to the normal path."""
        self.watch = None
        if len(self.queue) < 2 or self.dead:
            return
        due = self.head_started + self.cfg.max_head_wait
        if self.owner.loop.time() >= due:
            self.rescue()
        else:  # the head changed since the timer was set
            self.watch = self.owner.loop.call_at(due, self._check_head)

    def rescue(self) -> None:
        """Run the statements of the clients queued behind the head again on the normal path, so one slow SELECT
        does not hold up other clients' statements (read-only: running one twice is harmless). Their commands went
        out on this connection already: their places become `_Discard`s, whose responses are read and dropped."""
        q = self.queue
        moved = []
        for i in range(1, len(q)):
            c = q[i]
            if type(c) is not _Prepare and type(c) is not _Discard:
                q[i] = _DISCARD
                c.piped = None
                moved.append(c)
        self.owner.counters["rescued"] += len(moved)
        for c in moved:
            if c.phase != PH_CLOSED:
                c.run_unpiped()

    def prepare_kill(self, client: ClientSession, query_only: bool) -> None:
        """KILL [QUERY] of `client`, whose statement is on this pipe. Running (the head): the other clients move to
        the normal path and the pipe takes nothing more and closes after it, so a KILL QUERY sent to this
        connection's node thread (`ddm.execute.threads.busy_backends`) can only interrupt `client`'s statement or one whose
        response is dropped. Still queued: its place is dropped and (KILL QUERY) it is answered as interrupted."""
        q = self.queue
        if self.dead or client not in q:
            return
        if q[0] is client:
            self.rescue()
            if not self.closing:
                self.close()
            return
        q[q.index(client)] = _DISCARD
        client.piped = None
        if query_only and client.phase != PH_CLOSED:
            client.send_error(ER.QUERY_INTERRUPTED, "Query execution was interrupted")
            client.command_done()

    def _extra(self, extra: bytes) -> None:
        if not self.queue:  # bytes nobody asked for: the stream is out of step
            self.fail("unexpected bytes from the data node")
            return
        if not extra:  # M_COLLECT (our own prepare) leaves what follows its response in the framer
            extra = self.conn.framer.take_pending()
        self.leftover = extra

    def _prepared(self, item: _Prepare, conn: BackendConnection) -> None:
        """Our COM_STMT_PREPARE answered: keep the statement in the connection's cache (as conn.prepare would)."""
        self.preparing.discard(item.sql)
        packets, conn.packets = conn.packets, []
        if conn.last_error or not packets or packets[0][:1] != b"\x00":
            # the executes go on taking the normal path, which reports the error if there is one
            if len(self.unpreparable) >= MAX_UNPREPARABLE:
                self.unpreparable.clear()
            self.unpreparable.add(item.sql)
            return
        self._flush()  # an eviction's COM_STMT_CLOSE must follow the executes already queued
        conn.remember_statement(item.sql, packets)

    def _done(self, conn: BackendConnection) -> None:
        q = self.queue
        client = q.popleft()
        if type(client) is _Discard:
            if conn.closed or conn.broken:
                self.fail("connection lost", head_forwarded=False)
                return
            self._next(conn)
            return
        if type(client) is _Prepare:
            if conn.closed or conn.broken:
                self.fail("connection lost", head_forwarded=False)
                return
            self._prepared(client, conn)  # type: ignore[arg-type]
            self._next(conn)
            return
        client.piped = None
        self._unpause(client)
        if conn.closed or conn.broken:
            self._finish_lost(client, conn.node_name, conn.forwarded_any)
            self.fail("connection lost", head_forwarded=False)  # nothing of the others' responses went out
            return
        if conn.local_infile or conn.last_status & SS.IN_TRANS:  # not from a plain SELECT: give the pipe up
            self.fail("unexpected response state", head_forwarded=False)
            if client.phase != PH_CLOSED:
                client.command_done()
            return
        if (conn.last_warnings or conn.last_error) and client.phase != PH_CLOSED:
            # diagnostics for a SHOW WARNINGS next: this connection moves on, so the command to run again
            client.keep_diagnostics(None, self._rerun_of(client))
        leftover = self._advance()
        if client.phase != PH_CLOSED:
            client.command_done()  # may queue this client's next statement here
        if leftover and not self.dead:
            conn.data_received(leftover)

    def _rerun_of(self, client: ClientSession) -> tuple | None:
        """(node, physical db, command) that answers as the client's statement just answered here, or None: the
        client's text SELECT as the node ran it (pass-through: as sent; sharded: the shard's rewrite), or a
        pass-through COM_STMT_EXECUTE (prepared again where it runs)."""
        node, phys = self.group.key[0], self.group.key[1]
        payload = client.payload
        dbconf = client.session.dbconf
        if dbconf is None or not dbconf.tables:
            return (node, phys, payload) if payload[:1] in (b"\x03", b"\x17") else None
        sent = client.piped_command  # framed, one packet (MAX_SQL)
        return (node, phys, sent[4:]) if sent is not None and sent[4:5] == b"\x03" else None

    def _advance(self) -> bytes:
        """Start the next queued item; returns the bytes of its response that arrived with the last one."""
        leftover, self.leftover = self.leftover, b""
        if self.queue:
            self._start(self.queue[0])
        elif leftover:
            self.fail("unexpected bytes from the data node")
        elif self.closing:
            self._close_conn()
        return leftover

    def _next(self, conn: BackendConnection) -> None:
        leftover = self._advance()
        if leftover and not self.dead:
            conn.data_received(leftover)

    def client_gone(self, client: ClientSession) -> None:
        """The client disconnected while queued: its response will be read and discarded."""
        if self.queue and self.queue[0] is client:
            self.conn.sink = None
            self._unpause(client)

    def _unpause(self, client: ClientSession) -> None:
        if client.paused_backend is self.conn:  # the client's socket was full: reading was paused for it
            client.paused_backend = None
            if self.conn.transport is not None and not self.conn.closed:
                self.conn.transport.resume_reading()

    @staticmethod
    def _finish_lost(client: ClientSession, node: str, forwarded: bool) -> None:
        """A client whose statement was on a connection that broke: the treatment of the normal path."""
        if client.phase == PH_CLOSED:
            return
        if forwarded:
            client.close()  # half a result already went out: the only honest end is closing
            return
        client.send_error(ER.CONNECTION_KILLED, f"Connection to data node '{node}' was lost")
        client.command_done()

    def fail(self, reason: str, head_forwarded: bool | None = None) -> None:
        """Drop the pipe: close its connection, give every queued client the lost-connection treatment."""
        if self.dead:
            return
        self.dead = True
        self.owner.counters["failed"] += 1
        log.warning("pipeline to data node %s dropped: %s", self.conn.node_name, reason)
        self.group.remove(self)
        if head_forwarded is None:
            head_forwarded = self.conn.forwarded_any
        clients = [c for c in self.queue if type(c) is not _Prepare and type(c) is not _Discard]
        head_forwarded = head_forwarded and bool(self.queue) and self.queue[0] is (clients[0] if clients else None)
        self.queue.clear()
        self.preparing.clear()
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        for c in clients:
            c.piped = None
            self._unpause(c)
        self._close_conn()
        for i, c in enumerate(clients):
            self._finish_lost(c, self.conn.node_name, head_forwarded and i == 0)

    def close(self) -> None:
        """Configuration change: take no more statements; the connection closes once the queue is empty."""
        self.group.remove(self)
        self.closing = True
        if not self.queue:
            self._close_conn()

    def _close_conn(self) -> None:
        self.dead = True
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        conn = self.conn
        conn._done_cb = None
        conn.sink = None
        conn.pipe = None
        if conn.pool is not None:
            conn.pool.shared.discard(conn)
            conn.pool.discard(conn)
        conn.close()


class _Group:
    """The pipes of one (node, physical database, flavour, signature)."""

    __slots__ = ("key", "cfg", "pipes", "opening", "retry_at", "hits", "last_used")

    def __init__(self, key: tuple, cfg: PipelineConfig) -> None:
        self.key = key
        self.cfg = cfg
        self.pipes: list[Pipe] = []
        self.opening = False
        self.retry_at = 0.0
        self.hits = 0  # statements seen: a pipe is opened from the second one on (one-off sessions get none)
        self.last_used = 0.0

    def idle(self) -> bool:
        return not self.opening and all(not p.queue for p in self.pipes)

    def remove(self, pipe: Pipe) -> None:
        if pipe in self.pipes:
            self.pipes.remove(pipe)


class Pipelines:
    """A worker's pipes, for the nodes whose pool configuration enables pipelining."""

    def __init__(self, server) -> None:
        self.server = server
        self.loop = server.loop
        self.groups: dict[tuple, _Group] = {}
        self.nodes: dict[str, PipelineConfig] = {}
        self.counters = {"pipelined": 0, "prepared": 0, "refused_statement": 0, "refused_client": 0, "full": 0,
                         "slow_head": 0, "rescued": 0, "no_pipe": 0, "not_prepared": 0, "opened": 0,
                         "open_failed": 0, "failed": 0}
        self._sweeper = None  # timer of _sweep while there are groups
        self.configure(server.config)

    def configure(self, config: Config, changed: set[str] | frozenset[str] = frozenset()) -> None:
        """Take a new configuration: pipes of changed, removed or no longer pipelined nodes are closed."""
        nodes = {name: n.pool.pipelining for name, n in config.nodes.items() if n.pool.pipelining is not None}
        for key, group in list(self.groups.items()):
            node = key[0]
            if node in changed or nodes.get(node) != self.nodes.get(node):
                self._drop(group)
        self.nodes = nodes

    def close(self) -> None:
        for group in list(self.groups.values()):
            self._drop(group)
        self.nodes = {}
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        """The pool's rules for idle and old connections, applied to pipes: a group unused for the node pool's
        idle_timeout is closed, and a pipe connection older than max_lifetime retires once its queue is empty (its
        group opens a new one on demand)."""
        self._sweeper = None
        now = self.loop.time()
        mono = time.monotonic()  # BackendConnection.created is on this clock
        nodes = self.server.config.nodes
        for key, group in list(self.groups.items()):
            node = nodes.get(key[0])
            if node is None:
                self._drop(group)
                continue
            pool = node.pool
            if group.idle() and now - group.last_used > pool.idle_timeout:
                self._drop(group)
                continue
            for pipe in list(group.pipes):
                if mono - pipe.conn.created > pool.max_lifetime:
                    pipe.close()
                elif pipe.conn.stmts:
                    pipe.conn.sweep_statements(mono, pool.statement_idle_timeout)
        if self.groups:
            self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)

    def submit(self, client: ClientSession, node: str, phys: bytes | None, sql: bytes, packet: bytes,
               digest: bytes | None = None) -> bool:
        """Queue the client's SELECT (`sql` as the client sent it, `packet` the framed COM_QUERY for the node,
        rewritten on a sharded database) on a pipe; False (and nothing done) means: take the normal path."""
        pipe = self._pick(client, node, phys, sql, digest)
        return pipe is not None and pipe.submit(client, packet)

    def submit_execute(self, client: ClientSession, node: str, phys: bytes | None, stmt, payload: bytes,
                       node_sql: bytes | None = None) -> bool:
        """Queue the client's COM_STMT_EXECUTE of a pipelinable prepared SELECT on a pipe, with the id of the pipe's
        own statement for `node_sql` (the shard's rewritten text; stmt.sql on a pass-through database); False (and
        nothing done) means: take the normal path."""
        pipe = self._pick(client, node, phys, stmt.sql, stmt.lexed.digest if stmt.lexed is not None else None)
        if pipe is None:
            return False
        sql = stmt.sql if node_sql is None else node_sql
        bstmt = pipe.conn.cached_stmt(sql)
        if bstmt is None:
            pipe.prepare(sql)
            self.counters["not_prepared"] += 1
            return False
        if not pipe.has_room():
            return False
        if bstmt not in stmt.held:
            stmt.hold(pipe.conn, bstmt)  # closed on the node once no client statement holds it (and it idles)
        # built only now: it records on bstmt which parameter types that connection has been sent
        pipe.push(client, frame(client.execute_payload(stmt, bstmt, payload), 0))
        return True

    def _pick(self, client: ClientSession, node: str, phys: bytes | None, sql: bytes,
              digest: bytes | None) -> Pipe | None:
        cfg = self.nodes.get(node)
        if cfg is None:
            return None
        if (client.conn is not None or client.sticky or client.txn_conns or client.txn_begin is not None
                or not client.session.autocommit or client.cursors or client.piped is not None or client.no_pipe):
            self.counters["refused_client"] += 1
            return None
        if not pipelinable(sql, digest):
            self.counters["refused_statement"] += 1
            return None
        key = (node, phys, client.flavour, client.session.signature)
        group = self.groups.get(key)
        now = self.loop.time()
        if group is None:
            if not self._make_room(node, now):
                self.counters["no_pipe"] += 1
                return False
            group = self.groups[key] = _Group(key, cfg)
            if self._sweeper is None:
                self._sweeper = self.loop.call_later(SWEEP_EVERY, self._sweep)
        group.last_used = now
        pipes = group.pipes
        if len(pipes) < cfg.connections and not group.opening and now >= group.retry_at:
            group.hits += 1
            if group.hits >= 2:
                self._open(group, client)
        if not pipes:
            self.counters["no_pipe"] += 1
            return None
        best = pipes[0]
        if len(pipes) > 1:
            for p in pipes:
                if len(p.queue) < len(best.queue):
                    best = p
        if best.conn.closed:
            best.fail("connection closed")
            return None
        return best

    def _make_room(self, node: str, now: float) -> bool:
        """Whether a new group of `node` may be made: groups idle longer than the pool's idle_timeout are closed,
        and at MAX_KEYS_PER_NODE the least recently used idle group makes way."""
        mine = [g for k, g in self.groups.items() if k[0] == node]
        if len(mine) < MAX_KEYS_PER_NODE:
            return True
        pool_cfg = self.server.config.nodes[node].pool if node in self.server.config.nodes else None
        idle_timeout = pool_cfg.idle_timeout if pool_cfg is not None else 300.0
        idle = sorted((g for g in mine if g.idle()), key=lambda g: g.last_used)
        dropped = 0
        for g in idle:
            if dropped and now - g.last_used <= idle_timeout:
                break
            self._drop(g)
            dropped += 1
        return dropped > 0

    def _drop(self, group: _Group) -> None:
        if self.groups.get(group.key) is group:
            del self.groups[group.key]
        for pipe in list(group.pipes):
            pipe.close()

    def _open(self, group: _Group, client: ClientSession) -> None:
        group.opening = True
        pool = client.pool_for(group.key[0])
        self.loop.create_task(self._open_pipe(group, pool))

    async def _open_pipe(self, group: _Group, pool) -> None:
        node, phys, _flavour, signature = group.key
        conn = None
        try:
            conn = await pool.acquire()
            await synchronize(conn, _Signature(signature), phys)  # type: ignore[arg-type]
        except Exception as exc:
            self.counters["open_failed"] += 1
            group.retry_at = self.loop.time() + RETRY_AFTER
            log.info("cannot open a pipeline connection to data node %s: %s", node, exc)
            if conn is not None:
                pool.release(conn)
            return
        finally:
            group.opening = False
        if self.groups.get(group.key) is not group or pool.closed or conn.closed:
            pool.discard(conn)
            conn.close()
            return
        self.counters["opened"] += 1
        group.pipes.append(Pipe(self, group, conn))
        if conn.pool is not None:
            conn.pool.shared.add(conn)

    def stats(self) -> dict:
        return {**self.counters, "pipes": sum(len(g.pipes) for g in self.groups.values()),
                "queued": sum(len(p.queue) for g in self.groups.values() for p in g.pipes)}

