"""Thread ids a client sees are ddm's: CONNECTION_ID(), SHOW PROCESSLIST, KILL and COM_PROCESS_KILL.

The id in ddm's greeting (`Server.next_connection_id`: the worker id in the top 10 bits, so ids are unique across
workers) is the only one a client can name; data-node thread ids stay inside ddm, and a KILL is never passed to a
node as written (every node thread belongs to ddm's node account). KILL QUERY sends `KILL QUERY <node thread id>`
over a separate pooled connection for each backend connection running the target's statement; KILL CONNECTION also
closes the target, whose backend connections then go back reset (or closed when mid-response). A client finds and
kills connections of its own worker only. Like MariaDB, a user may kill its own connections, and a user with ddm's
`admin` privilege (the counterpart of SUPER / CONNECTION ADMIN) any user's; SHOW PROCESSLIST lists the connections a
user may kill (PROCESS).
A SELECT on a shared pipelined connection (`ddm.execute.pipeline`) that is running there is killed the same way once its
pipe is isolated (`Pipe.prepare_kill`: the other clients queued move to the normal path, the pipe takes nothing more
and closes after it), so the node thread cannot be running another client's statement when the KILL arrives; a
SELECT still queued behind another's is dropped from the queue and, for KILL QUERY, answered as interrupted.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ddm.protect import privileges
from ddm.wire.backend import BackendError
from ddm.wire.constants import er as ER
from ddm.wire.constants import field_type as FT
from ddm.wire.resultset import column_definition, text_resultset, text_row
from ddm_core.protocol import MODE_IDLE

if TYPE_CHECKING:
    from ddm.execute.client import ClientSession
    from ddm.wire.backend import BackendConnection

# KILL [HARD | SOFT] [CONNECTION | QUERY] {id | CONNECTION_ID()}; KILL USER and KILL QUERY ID (a query id) are not
# ddm's to answer. https://mariadb.com/kb/en/kill/
_KILL = re.compile(rb"^\s*KILL\s+(?:(?:HARD|SOFT)\s+)?(?:(CONNECTION|QUERY)\s+)?(\d+|CONNECTION_ID\s*\(\s*\))\s*;?\s*$",
                   re.I)
_SELECT_ID = re.compile(rb"^\s*SELECT\s+(CONNECTION_ID\s*\(\s*\))(?:\s+(?:AS\s+)?(\w+|`[^`]+`))?\s*;?\s*$", re.I)
BINARY_CHARSET = 63
NOT_NULL, UNSIGNED, BINARY = 0x01, 0x20, 0x80  # column definition flags


# --- CONNECTION_ID() ------------------------------------------------------------------------------------------
def select_connection_id(client: ClientSession, sql: bytes) -> bool:
    """Answer `SELECT CONNECTION_ID() [[AS] alias]` with the client's ddm id; False for any other statement."""
    m = _SELECT_ID.match(sql)
    if m is None:
        return False
    name = (m.group(2) or m.group(1)).strip(b"`").decode("utf-8", "replace")
    # the column as MariaDB describes it: INT(10) UNSIGNED NOT NULL, binary
    col = column_definition(name, FT.LONG, length=10, charset=BINARY_CHARSET, flags=NOT_NULL | UNSIGNED | BINARY)
    client.transport.write(text_resultset([col], [text_row((client.conn_id,))], deprecate_eof=client.deprecate_eof,
                                          status=client.status_flags()))
    client.command_done()
    return True


# --- SHOW PROCESSLIST ---------------------------------------------------------------------------------------
_PROCESSLIST_COLUMNS = (  # MariaDB's: name, type, length, charset, flags, decimals
    ("Id", FT.LONGLONG, 11, BINARY_CHARSET, NOT_NULL | BINARY, 0),
    ("User", FT.VAR_STRING, 512, 45, NOT_NULL, 39),
    ("Host", FT.VAR_STRING, 256, 45, NOT_NULL, 39),
    ("db", FT.VAR_STRING, 256, 45, 0, 39),
    ("Command", FT.VAR_STRING, 64, 45, NOT_NULL, 39),
    ("Time", FT.LONG, 7, BINARY_CHARSET, NOT_NULL | BINARY, 0),
    ("State", FT.VAR_STRING, 120, 45, 0, 39),
    ("Info", FT.VAR_STRING, 400, 45, 0, 39),
    ("Progress", FT.DOUBLE, 7, BINARY_CHARSET, NOT_NULL | BINARY, 3),
)


def show_processlist(client: ClientSession, sql: bytes, full: bool) -> None:
    """This worker's connections of the client's user. ddm keeps no per-command clock or text (that would cost on
    the query path): Time is 0, and Info is known for the asking connection only."""
    cols = [column_definition(n, t, length=ln, charset=cs, flags=f, decimals=d)
            for n, t, ln, cs, f, d in _PROCESSLIST_COLUMNS]
    rows = []
    for c in sorted(_visible(client), key=lambda c: c.conn_id):
        own = c is client
        info = sql.decode("utf-8", "replace") if own else None
        if info is not None and not full:
            info = info[:100]
        command = "Query" if own or c.busy or c.infile_conn() is not None else "Sleep"
        rows.append(text_row((c.conn_id, c.session.user, _host(c), c.session.db, command, 0, "", info, "0.000")))
    client.transport.write(text_resultset(cols, rows, deprecate_eof=client.deprecate_eof, status=client.status_flags()))
    client.command_done()


def _visible(client: ClientSession) -> list[ClientSession]:
    admin = is_admin(client)
    return [c for c in client.server.clients if c.logged_in and (admin or c.session.user == client.session.user)]


def is_admin(client: ClientSession) -> bool:
    """Whether the client's user has ddm's `admin` privilege (all privileges included): it sees and may kill
    every user's connections."""
    user = getattr(client, "user", None)
    if user is None:
        return False
    g = privileges.guard(client.config, user)
    return g is None or g.admin


def _host(c: ClientSession) -> str:
    peer = c.transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "localhost"


# --- KILL ---------------------------------------------------------------------------------------------------
def kill_statement(client: ClientSession, sql: bytes) -> None:
    m = _KILL.match(sql)
    if m is None:
        client.send_error(ER.NOT_SUPPORTED_YET, "This version of ddm doesn't yet support 'KILL USER or KILL QUERY ID' "
                                            "(KILL [CONNECTION | QUERY] <thread id> is supported)")
        client.command_done()
        return
    query_only = (m.group(1) or b"").upper() == b"QUERY"
    target = m.group(2)
    kill(client, client.conn_id if target[:1] in b"Cc" else int(target), query_only)


def kill(client: ClientSession, thread_id: int, query_only: bool) -> None:
    """KILL [QUERY] thread_id from `client`: errors as MariaDB gives them, OK once the node queries are killed."""
    target = find(client, thread_id)
    if target is None:
        client.send_error(ER.NO_SUCH_THREAD, f"Unknown thread id: {thread_id}")
    elif target.session.user != client.session.user and not is_admin(client):
        client.send_error(ER.KILL_DENIED_ERROR, f"You are not owner of thread {thread_id}")
    elif target is client:  # the statement running is the KILL itself
        if query_only:
            client.send_error(ER.QUERY_INTERRUPTED, "Query execution was interrupted")
        else:
            client.send_error(ER.CONNECTION_KILLED, "Connection was killed", sqlstate=b"70100")
            client.close()
            return
    else:
        if target.piped is not None:
            target.piped.prepare_kill(target, query_only)  # its statement is on a shared connection
            if query_only and target.piped is None:  # it was queued there, not running: answered as interrupted
                client.send_ok()
                client.command_done()
                return
        conns = busy_backends(target)
        if conns:
            client.run_slow(_kill_queries(client, target, conns, close=not query_only))
            return
        if not query_only:
            target.close()  # its connection_lost gives the backend connections back (reset)
        client.send_ok()
    client.command_done()


def find(client: ClientSession, thread_id: int) -> ClientSession | None:
    """The logged-in client of this worker with `thread_id` (ids of other workers are unknown here)."""
    for c in client.server.clients:
        if c.conn_id == thread_id and c.logged_in:
            return c
    return None


def busy_backends(target: ClientSession) -> list[BackendConnection]:
    """The backend connections running `target`'s current statement: the one streaming its response, the one a
    LOAD DATA LOCAL waits on, pinned and per-node transaction connections in the middle of a command, and those of
    a streaming scatter SELECT. (The buffered scatter path's borrowed connections are not tracked per client.)"""
    relay = target.infile_conn()
    found: list[BackendConnection] = []
    streaming = [s.conn for s in target.scatter_stream.sources] if target.scatter_stream is not None else []
    piped = target.piped
    if piped is not None and piped.closing and piped.queue and piped.queue[0] is target:
        streaming.append(piped.conn)  # a pipe given to this statement alone (Pipe.prepare_kill)
    for c in (target.fwd_conn, relay, target.conn, *target.txn_conns.values(), *streaming):
        if c is not None and not c.closed and c not in found and (c.mode != MODE_IDLE or c is relay):
            found.append(c)
    return found


async def _kill_queries(client: ClientSession, target: ClientSession, conns: list[BackendConnection],
                        close: bool) -> None:
    """KILL QUERY on the nodes for each of `conns`, then (KILL CONNECTION) close the target."""
    pools = client.server.pools
    try:
        for conn in conns:
            if conn.node_name not in pools.nodes:  # a configuration swap removed the node
                continue
            pool = pools.get(conn.node_name, conn.flavour)
            killer = await pool.acquire()
            try:
                # the statement may have ended meanwhile and its connection gone to another client: look again last
                if conn in busy_backends(target):
                    await killer.query(b"KILL QUERY %d" % conn.conn_id)
            except BackendError as exc:
                if exc.code != ER.NO_SUCH_THREAD:  # else the node thread ended by itself
                    raise
            finally:
                pool.release(killer)
    finally:
        if close:
            target.close()
    client.send_ok()
