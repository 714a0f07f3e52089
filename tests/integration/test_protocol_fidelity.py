"""Protocol fidelity (issue 9 items 5, 6, 8, 9, 10, 11): each test runs the same exchange through ddm and straight
against the MariaDB node and compares the answers.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import (
    DDM,
    PHYS,
    RAW_CAPS,
    Node,
    RawClient,
    ServerError,
    column_name,
    ddm_config,
    free_port,
    lenenc,
    start_ddm,
)

pytestmark = pytest.mark.integration

DB = "sbtest"


@pytest.fixture(scope="module")
def pf_ddm(node0: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DDM]:
    cfg = ddm_config(free_port(), {"n0": node0.conf()}, {DB: {"node": "n0", "database": PHYS[DB]}})
    cfg["users"].append({"name": "pfadmin", "password": "adminpw", "auth_plugin": "mysql_native_password",
                         "databases": "*", "privileges": "all"})  # trusted like the node account
    d = start_ddm(tmp_path_factory.mktemp("ddm-pf"), cfg, mode="subprocess")
    try:
        yield d
    finally:
        d.stop()


def raw(target: DDM | Node, caps: int = RAW_CAPS, admin: bool = False, **kw) -> RawClient:
    """A raw client of ddm (user native, or pfadmin with every privilege) or of the node (its account)."""
    if isinstance(target, DDM):
        user, pw = ("pfadmin", "adminpw") if admin else ("native", "nativepw")
        return RawClient(target.port, user, pw, DB, caps=caps, **kw)
    return RawClient(target.port, target.user, target.password, PHYS[DB], caps=caps, **kw)


def both(pf_ddm: DDM, node0: Node) -> list[DDM | Node]:
    return [pf_ddm, node0]


def full_log(d: DDM) -> str:
    return d.log_path.read_text(errors="replace") if d.log_path and d.log_path.exists() else ""


# ------------------------------------------------------------------------------- item 11: client leaves mid-query

def test_client_closing_during_query_is_quiet(pf_ddm: DDM, node0: Node) -> None:
    """A raw client sends SELECT SLEEP(1) and closes its socket at once: ddm logs no traceback, and both ddm and
    the node go on serving (the same statement answers the same afterwards)."""
    before = len(full_log(pf_ddm))
    statements = [b"SELECT SLEEP(1), REPEAT('x', 100000)", b"DO SLEEP(1)",
                  b"SELECT REPEAT('x', 100000) FROM seq_1_to_300",
                  b"SELECT SLEEP(0.3), REPEAT('x', 1000) FROM seq_1_to_3000"]
    for target in both(pf_ddm, node0):
        for delay in (0, 0.1, 0.6):
            for sql in statements:
                c = raw(target)
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                c.command(b"\x03" + sql)
                time.sleep(delay)
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, at once
                c.close()
    time.sleep(2.0)
    answers = []
    for target in both(pf_ddm, node0):
        with raw(target) as c:
            answers.append(c.query("SELECT 1 + 1"))
    assert answers[0] == answers[1] == [(b"2",)]
    log = full_log(pf_ddm)[before:]
    assert "Traceback" not in log and "Fatal error" not in log, log[-3000:]


# ------------------------------------------------------------------------------- item 8: one connection id

def login(target: DDM | Node, caps: int = RAW_CAPS, charset: int = 45) -> tuple[RawClient, int]:
    """A raw client logged in (native password) with `charset` in its handshake; (client, greeting thread id)."""
    port, user, pw, db = ((target.port, "native", "nativepw", DB) if isinstance(target, DDM)
                          else (target.port, target.user, target.password, PHYS[DB]))
    c = RawClient(port, caps=caps, login=False)
    g = c.greeting()
    tid = struct.unpack_from("<I", g, g.index(b"\0", 1) + 1)[0]
    p = bytearray(c.handshake_response(user, pw, db, b"mysql_native_password"))
    p[8] = charset
    c.write_packet(bytes(p))
    c.finish_auth(pw)
    return c, tid


def named_rows(c: RawClient, sql: str) -> tuple[list[str], list[tuple]]:
    c.command(b"\x03" + sql.encode())
    cols, rows, _ = c.read_result()
    out = []
    for r in rows:
        pos, vals = 0, []
        for _ in cols:
            n, pos = lenenc(r, pos)
            vals.append(None if n is None else r[pos:pos + n].decode())
            pos += n or 0
        out.append(tuple(vals))
    return [column_name(col) for col in cols], out


def test_connection_id_in_expressions_is_the_greeting_id(pf_ddm: DDM, node0: Node) -> None:
    """Every expression holding CONNECTION_ID() (text, SET, prepared) answers the greeting's thread id, under the
    same column names as on the node."""
    answers = []
    for target in both(pf_ddm, node0):
        c, tid = login(target)
        with c:
            got = []
            for sql in ("SELECT CONNECTION_ID()", "SELECT CONNECTION_ID()+0", "SELECT CONNECTION_ID() * 1 AS x, 'z'",
                        "SELECT CONCAT('id:', CONNECTION_ID()) FROM DUAL WHERE CONNECTION_ID() > 0",
                        "SELECT 'CONNECTION_ID()' /* CONNECTION_ID() */"):
                names, rows = named_rows(c, sql)
                got.append((names, [tuple(v.replace(str(tid), "<tid>") for v in r) for r in rows]))
            c.ok(b"\x03SET @cid = CONNECTION_ID() + 0")
            got.append(named_rows(c, "SELECT @cid")[1] == [(str(tid),)])
            stmt_id, _, _ = c.prepare("SELECT CONNECTION_ID() + ?")
            got.append(c.execute(stmt_id, [0]) == [(tid,)])
            answers.append(got)
    assert answers[0] == answers[1]
    assert answers[0][1] == (["CONNECTION_ID()+0"], [("<tid>",)]) and answers[0][-1] is True


# ------------------------------------------------------------------------------- item 5: handshake collations

def test_handshake_collations_follow_the_node(pf_ddm: DDM, node0: Node) -> None:
    """A collation id in the handshake gives the session what the node gives it (its own collation list), ucs2 /
    utf16 / utf32 are refused with the node's error, an id the node does not know keeps its defaults."""
    ids = (48, 51, 7, 36, 11, 8, 46, 33, 63, 224, 35, 54, 60, 101, 250, 255)
    answers = []
    for target in both(pf_ddm, node0):
        got = {}
        for cs in ids:
            try:
                c, _ = login(target, charset=cs)
            except ServerError as exc:
                got[cs] = ("error", exc.code, exc.message)
                continue
            with c:
                got[cs] = c.query("SELECT @@character_set_client, @@collation_connection, @@character_set_results, "
                                  "HEX(CONVERT('\u0430' USING utf8mb4))")
        answers.append(got)
    assert answers[0] == answers[1]
    assert answers[1][48][0][1] == b"latin1_general_ci" and answers[1][35][:2] == ("error", 1231)


# ------------------------------------------------------------------------------- item 10: COM_DEBUG, COM_REFRESH,
# wait_timeout, KILL of another user's connection

def test_com_debug_and_com_refresh_answer_as_the_node(pf_ddm: DDM, node0: Node) -> None:
    answers = []
    for target in both(pf_ddm, node0):
        with raw(target, admin=True) as c:
            c.command(b"\x0d")  # COM_DEBUG
            debug = c.read_packet()
            c.command(b"\x07\x04")  # COM_REFRESH(REFRESH_TABLES)
            refresh = c.read_packet()
            answers.append((debug, refresh[:1] if refresh[:1] != b"\xff" else refresh, c.query("SELECT 7")))
    assert answers[0] == answers[1]
    assert answers[0][0][:1] == b"\xfe" and answers[0][1] == b"\x00"


def read_until_closed(c: RawClient, timeout: float) -> tuple[bool, bytes, float]:
    """(closed by the server within `timeout`, what it sent first, seconds until then)."""
    t0 = time.monotonic()
    c.sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = c.sock.recv(65536)
            if not chunk:
                return True, data, time.monotonic() - t0
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return True, data, time.monotonic() - t0
    except TimeoutError:
        return False, data, time.monotonic() - t0


def test_wait_timeout_closes_an_idle_client(pf_ddm: DDM, node0: Node) -> None:
    """SET SESSION wait_timeout = 1: the idle client is closed (no packet) after about a second; a client with the
    default stays; COM_RESET_CONNECTION gives the default back."""
    answers = []
    for target in both(pf_ddm, node0):
        short, default, reset = raw(target), raw(target), raw(target)
        short.ok(b"\x03SET SESSION wait_timeout = 1")
        reset.ok(b"\x03SET @@session.wait_timeout = 1")
        reset.ok(b"\x1f")  # COM_RESET_CONNECTION
        closed, sent, after = read_until_closed(short, 6.0)
        time.sleep(1.5)
        answers.append((closed, sent, 0.9 < after < 3.0, default.query("SELECT @@wait_timeout"),
                        reset.query("SELECT @@wait_timeout")))
        for c in (short, default, reset):
            c.close()
    assert answers[0] == answers[1]
    assert answers[0][:3] == (True, b"", True)


def test_admin_may_kill_another_users_connection(pf_ddm: DDM, node0: Node) -> None:
    """A user with every privilege kills a connection of another user (the node's account does so with another
    node account): OK, and the victim's next command finds its connection gone; the other user may not (1095)."""
    with raw(node0) as admin:
        admin.ok(b"\x03CREATE USER IF NOT EXISTS 'pf_other'@'%' IDENTIFIED BY 'otherpw'")
        admin.ok(b"\x03GRANT SELECT ON *.* TO 'pf_other'@'%'")
    answers = []
    for target in both(pf_ddm, node0):
        if isinstance(target, DDM):
            victim, killer = raw(target), raw(target, admin=True)
        else:
            victim, killer = RawClient(target.port, "pf_other", "otherpw", None), raw(target)
        vid = int(victim.query("SELECT CONNECTION_ID()")[0][0])
        kid = int(killer.query("SELECT CONNECTION_ID()")[0][0])
        users = {r[1] for r in killer.query("SHOW PROCESSLIST")}
        try:
            victim.ok(b"\x03KILL %d" % kid)
            denied = None
        except ServerError as exc:
            denied = exc.code
        try:
            killed = killer.ok(b"\x03KILL %d" % vid)[:1]
        except ServerError as exc:
            killed = exc.code
        time.sleep(0.3)
        try:
            after = victim.query("SELECT 1")
        except ServerError as exc:
            after = exc.code
        except OSError:
            after = "gone"
        answers.append((denied, killed, after, len(users) >= 2))
        killer.close()
        victim.close()
    assert answers[0] == answers[1]
    assert answers[0][:2] == (1095, b"\x00")


# ------------------------------------------------------------------------------- item 6: session-state tracking

SESSION_TRACK = 1 << 23


def session_state(ok: bytes) -> tuple[int, list[tuple[int, list[bytes]]]]:
    """(status flags, [(entry type, its length-encoded strings)]) of an OK packet under CLIENT_SESSION_TRACK."""
    pos = 1
    for _ in range(2):
        _, pos = lenenc(ok, pos)
    status = struct.unpack_from("<H", ok, pos)[0]
    pos += 4
    entries: list[tuple[int, list[bytes]]] = []
    if pos >= len(ok):
        return status, entries
    n, pos = lenenc(ok, pos)  # info
    pos += n or 0
    if not status & 0x4000:
        return status, entries
    total, pos = lenenc(ok, pos)
    end = pos + total
    while pos < end:
        kind = ok[pos]
        size, pos = lenenc(ok, pos + 1)
        data, pos, fields, at = ok[pos:pos + size], pos + size, [], 0
        while at < len(data):
            m, at = lenenc(data, at)
            fields.append(data[at:at + m])
            at += m
        entries.append((kind, fields))
    return status, entries


def test_session_state_changes_are_tracked(pf_ddm: DDM, node0: Node) -> None:
    """Under CLIENT_SESSION_TRACK the OK packets of SET NAMES / SET autocommit / other SETs / USE / COM_INIT_DB
    carry the same session-state changes (MariaDB's default tracking) through ddm as from the node."""
    statements = [b"\x03SET NAMES latin1", b"\x03SET NAMES utf8", b"\x03SET NAMES utf8mb4 COLLATE utf8mb4_bin",
                  b"\x03SET autocommit = 0", b"\x03SET autocommit = 1", b"\x03SET character_set_client = latin1",
                  b"\x03SET time_zone = '+01:00'", b"\x03SET @a = 1", b"\x03SET sql_mode = ''", b"\x03USE {db}",
                  b"\x02{db}", b"\x03SELECT 1 FROM DUAL WHERE 0"]
    answers = []
    for target in both(pf_ddm, node0):
        db = (DB if isinstance(target, DDM) else PHYS[DB]).encode()
        with raw(target, caps=RAW_CAPS | SESSION_TRACK) as c:
            got = []
            for stmt in statements:
                if stmt.startswith(b"\x03SELECT"):
                    c.command(stmt)
                    got.append(c.read_result()[2][:1])
                    continue
                status, entries = session_state(c.ok(stmt.replace(b"{db}", db)))
                # (the node lists changed variables in its hash table's order, which varies: compared as a set)
                got.append((status, sorted((k, [f.replace(db, b"<db>") for f in fields]) for k, fields in entries)))
            answers.append(got)
    assert answers[0] == answers[1]
    assert (0, [b"character_set_connection", b"latin1"]) in answers[1][0][1]
    assert answers[1][9][1] == [(1, [b"<db>"])]


# ------------------------------------------------------------------------------- item 9: MariaDB's extended capabilities

BULK = 1 << 2  # MARIADB_CLIENT_STMT_BULK_OPERATIONS


def greeting_ext_caps(target: DDM | Node) -> tuple[int, int]:
    """(capability flags, MariaDB extended capabilities) of the greeting."""
    with RawClient(target.port, login=False) as c:
        g = c.greeting()
    pos = g.index(b"\0", 1) + 1 + 4 + 8 + 1
    caps = struct.unpack_from("<H", g, pos)[0]
    caps |= struct.unpack_from("<H", g, pos + 5)[0] << 16
    return caps, struct.unpack_from("<I", g, pos + 8 + 6)[0]


def bulk_login(target: DDM | Node) -> RawClient:
    """A raw client that clears CLIENT_MYSQL and asks for STMT_BULK_OPERATIONS, as libmariadb does."""
    port, user, pw, db = ((target.port, "native", "nativepw", DB) if isinstance(target, DDM)
                          else (target.port, target.user, target.password, PHYS[DB]))
    c = RawClient(port, caps=RAW_CAPS & ~1, login=False)
    c.greeting()
    p = bytearray(c.handshake_response(user, pw, db, b"mysql_native_password"))
    p[28:32] = struct.pack("<I", BULK)
    c.write_packet(bytes(p))
    c.finish_auth(pw)
    return c


def test_bulk_execute_as_the_node(pf_ddm: DDM, node0: Node) -> None:
    """ddm offers STMT_BULK_OPERATIONS when the node does (MariaDB's way: CLIENT_MYSQL clear, the bits in the
    greeting's reserved bytes), and COM_STMT_BULK_EXECUTE inserts the rows as on the node, types sent once."""
    node_caps, node_ext = greeting_ext_caps(node0)
    ddm_caps, ddm_ext = greeting_ext_caps(pf_ddm)
    assert node_ext & BULK and ddm_ext == BULK and not ddm_caps & 1 and not node_caps & 1
    answers = []
    for target in both(pf_ddm, node0):
        table = "pf_bulk_ddm" if isinstance(target, DDM) else "pf_bulk_direct"
        with bulk_login(target) as c:
            c.ok(f"\x03DROP TABLE IF EXISTS {table}".encode())
            c.ok(f"\x03CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(20))".encode())
            stmt_id, _, _ = c.prepare(f"INSERT INTO {table} VALUES (?, ?)")
            got = []
            for start, send_types in ((1, True), (10, False)):
                rows = b"".join(b"\x00" + struct.pack("<q", i) + (b"\x01" if i % 3 == 0 else
                                b"\x00" + bytes([len(b"v%d" % i)]) + b"v%d" % i) for i in range(start, start + 4))
                head = b"\xfa" + struct.pack("<IH", stmt_id, 128 if send_types else 0)
                ok = c.ok(head + (b"\x08\x00\xfd\x00" if send_types else b"") + rows)
                got.append(ok[1])  # affected rows
            try:
                c.ok(b"\xfa" + struct.pack("<IH", stmt_id, 0) + b"\x00" + struct.pack("<q", 1) + b"\x01")
            except ServerError as exc:
                got.append(exc.code)  # a duplicate key
            got.append(c.query(f"SELECT id, v FROM {table} ORDER BY id"))
            c.ok(f"\x03DROP TABLE {table}".encode())
            answers.append(got)
    assert answers[0] == answers[1]
    assert answers[0][:3] == [4, 4, 1062]
