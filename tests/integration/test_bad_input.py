"""Bad input and failures: malformed packets, oversized packets, bad logins, data nodes down or dying mid-query.
After every case ddm must still serve a normal client."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import (
    DDM,
    PHYS,
    RAW_CAPS,
    RawClient,
    ServerError,
    ddm_config,
    free_port,
    private_node,
    query_all,
    start_ddm,
)

from ddm.tools import sandbox as sb

pytestmark = pytest.mark.integration

MAX_PACKET = 1024 * 1024


def serves(port: int, db: str = "sbtest") -> None:
    """A normal client logs in and runs a statement."""
    c = pymysql.connect(host="127.0.0.1", port=port, user="ddm", password="ddm", database=db, ssl_disabled=True,
                        connect_timeout=10, read_timeout=30)
    try:
        assert query_all(c, "SELECT 40 + 2") == [(42,)]
    finally:
        c.close()


def raw_err(p: bytes) -> tuple[int, str]:
    assert p[0] == 0xFF, p[:40]
    e = RawClient.error(p)
    return e.code, e.sqlstate


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    """A private data node of its own, to be killed."""
    if not sb.mariadb_available():
        pytest.skip(f"MariaDB server not installed: {sb.APT_INSTALL}")
    root = str(tmp_path_factory.mktemp("victim"))
    node = private_node(root, start=35500)
    try:
        yield node
    finally:
        sb.down(root)


@pytest.fixture(scope="module")
def ddm2(node0, victim, tmp_path_factory):
    """A second ddm: small max_packet_size, node n0 (shared) and nk (the victim)."""
    with pymysql.connect(host="127.0.0.1", port=victim.port, user=victim.user, password=victim.password) as c:
        query_all(c, "CREATE DATABASE IF NOT EXISTS killdb")
    nodes = {"n0": node0.conf(), "nk": victim.conf()}
    dbs = {"sbtest": {"node": "n0", "database": PHYS["sbtest"]}, "killdb": {"node": "nk"}}
    d = start_ddm(tmp_path_factory.mktemp("ddm2"), ddm_config(free_port(), nodes, dbs, max_packet_size=MAX_PACKET))
    try:
        yield d
    finally:
        d.stop()


# ---------------------------------------------------------------------------------------------- before login


def test_garbage_before_login(ddm_proc: DDM):
    for junk in (b"\x05\x00\x00\x01\xff\xff\xff\xff\xff",  # a frame too short to be a handshake response
                 b"\x01\x00\x00\x01\x00",
                 b"\x20\x00\x00\x01" + b"\x00" * 32):  # 32 zero bytes: no PROTOCOL_41
        with RawClient(ddm_proc.port, login=False) as raw:
            raw.greeting()
            raw.sock.sendall(junk)
            p = raw.read_packet()
            assert p[0] == 0xFF, p
            assert raw.closed_by_server()
        serves(ddm_proc.port)


def test_http_request_instead_of_handshake(ddm_proc: DDM):
    with RawClient(ddm_proc.port, login=False) as raw:
        raw.greeting()
        raw.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.sock.shutdown(socket.SHUT_WR)
        assert raw.closed_by_server()
    serves(ddm_proc.port)


def test_truncated_handshake_response(ddm_proc: DDM):
    with RawClient(ddm_proc.port, login=False) as raw:
        raw.greeting()
        full = raw.handshake_response("native", "nativepw", "sbtest", b"mysql_native_password")
        cut = full[:32 + len("native") + 1]  # ends after the user name: no auth response
        raw.write_packet(cut, 1)
        p = raw.read_packet()
        assert raw_err(p)[0] in (1043, 1835, 1045)
        assert raw.closed_by_server()
    serves(ddm_proc.port)


def test_disconnect_mid_handshake(ddm_proc: DDM):
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", ddm_proc.port))
        s.recv(10)
        s.sendall(b"\x50\x00\x00\x01\x85\xa6")  # half a frame, then gone
        s.close()
    serves(ddm_proc.port)


def test_wrong_password_and_unknown_database_raw(ddm_proc: DDM):
    with pytest.raises(ServerError) as ei:
        RawClient(ddm_proc.port, user="native", password="bad")
    assert (ei.value.code, ei.value.sqlstate) == (1045, "28000")
    with pytest.raises(ServerError) as ei:
        RawClient(ddm_proc.port, db="no_such_db")
    assert (ei.value.code, ei.value.sqlstate) == (1049, "42000")
    with pytest.raises(ServerError) as ei:
        RawClient(ddm_proc.port, user="", password="")
    assert ei.value.code == 1045
    serves(ddm_proc.port)


# ---------------------------------------------------------------------------------------------- after login


def test_unknown_command_is_1047_and_connection_survives(ddm_proc: DDM):
    with RawClient(ddm_proc.port) as raw:
        for cmd in (b"\x99", b"\xfe\x01\x02", b"\x00", b"\x20"):
            raw.command(cmd)
            assert raw_err(raw.read_packet())[0] == 1047
        assert raw.query("SELECT 1") == [(b"1",)]
    serves(ddm_proc.port)


def test_empty_command_packet(ddm_proc: DDM):
    with RawClient(ddm_proc.port) as raw:
        raw.command(b"")
        assert raw_err(raw.read_packet())[0] in (1047, 1835)
        assert raw.query("SELECT 1") == [(b"1",)]


@pytest.mark.parametrize("payload", [
    b"\x17\x01",  # COM_STMT_EXECUTE without a statement id
    b"\x17",
    b"\x19\x01",  # COM_STMT_CLOSE, truncated id
    b"\x1a",  # COM_STMT_RESET without a statement id
    b"\x1c\x01\x00",  # COM_STMT_FETCH
    b"\x1b",  # COM_SET_OPTION without the option
    b"\x11",  # COM_CHANGE_USER without a user
], ids=["execute-short", "execute-empty", "close", "reset", "fetch", "set-option", "change-user"])
def test_truncated_commands_get_an_error(ddm_proc: DDM, payload: bytes):
    with RawClient(ddm_proc.port) as raw:
        raw.command(payload)
        code, _ = raw_err(raw.read_packet())
        assert code in (1835, 1243, 1047, 1064, 1210), code
        assert raw.query("SELECT 7") == [(b"7",)]
    serves(ddm_proc.port)


def test_truncated_execute_of_a_real_statement(ddm_proc: DDM):
    with RawClient(ddm_proc.port) as raw:
        stmt, _, nparams = raw.prepare("SELECT ? + ?")
        assert nparams == 2
        full = RawClient.execute_payload(stmt, [1, 2])
        for cut in (len(full) - 3, 11, 10, 6):  # inside the values, the bitmap, the header
            raw.command(full[:cut])
            p = raw.read_packet()
            assert p[0] == 0xFF, (cut, p)
        assert raw.execute(stmt, [1, 2]) == [(3,)]
        assert raw.query("SELECT 8") == [(b"8",)]
    serves(ddm_proc.port)


def test_long_data_for_unknown_statement_or_parameter(ddm_proc: DDM):
    with RawClient(ddm_proc.port) as raw:
        raw.send_long_data(12345, 0, b"x" * 1000)  # no response to long data, even for an unknown statement
        stmt, _, _ = raw.prepare("SELECT LENGTH(?)")
        assert raw.execute(stmt, ["abc"]) == [(3,)]
        raw.send_long_data(stmt, 5, b"y" * 10)  # a parameter that does not exist
        raw.command(RawClient.execute_payload(stmt, ["abcd"]))
        try:
            assert raw.read_result()[1]  # the data node may ignore it ...
        except ServerError as exc:
            assert exc.code in (1210, 1835), exc  # ... or refuse the execute
        assert raw.query("SELECT 9") == [(b"9",)]
    serves(ddm_proc.port)


def test_packet_larger_than_max_packet_size(ddm2: DDM):
    big = b"\x03SELECT '" + b"x" * (MAX_PACKET + 10) + b"'"
    with RawClient(ddm2.port) as raw:
        raw.write_packet(big, 0)
        code, state = raw_err(raw.read_packet())
        assert (code, state) == (1153, "08S01")
        assert raw.closed_by_server()
    with RawClient(ddm2.port) as raw:  # a multi-packet command: 16 MiB continuation frames
        raw.sock.sendall(b"\xff\xff\xff\x00" + b"\x03" + b"y" * 4096)
        code, _ = raw_err(raw.read_packet())
        assert code == 1153
        assert raw.closed_by_server()
    c = pymysql.connect(host="127.0.0.1", port=ddm2.port, user="ddm", password="ddm", database="sbtest",
                        ssl_disabled=True)
    with pytest.raises(pymysql.err.OperationalError) as ei:
        query_all(c, "SELECT %s", ("z" * (MAX_PACKET + 1),))
    # 1153, or gone away when ddm closed while PyMySQL was still writing (MariaDB does the same)
    assert ei.value.args[0] in (1153, 2006, 2013), ei.value
    ok = "w" * (MAX_PACKET - 1000)
    serves(ddm2.port)
    c = pymysql.connect(host="127.0.0.1", port=ddm2.port, user="ddm", password="ddm", database="sbtest",
                        ssl_disabled=True)
    assert query_all(c, "SELECT LENGTH(%s)", (ok,)) == [(len(ok),)]  # just under the limit: fine
    c.close()


def test_tls_request_garbage(ddm_proc: DDM):
    with RawClient(ddm_proc.port, login=False) as raw:
        raw.greeting()
        ssl_request = struct.pack("<IIB", RAW_CAPS | 0x800, 1 << 24, 45) + b"\0" * 23
        raw.write_packet(ssl_request, 1)
        raw.sock.sendall(b"this is not a TLS ClientHello" * 10)
        assert raw.closed_by_server()
    serves(ddm_proc.port)


# ---------------------------------------------------------------------------------------------- data nodes down


def test_data_node_down_at_connect_time(ddm_proc: DDM):
    t0 = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as ei:  # PyMySQL's SET NAMES at connect already fails
        c = pymysql.connect(host="127.0.0.1", port=ddm_proc.port, user="ddm", password="ddm", database="downdb",
                            ssl_disabled=True, read_timeout=30)
        query_all(c, "SELECT 1")
    assert time.monotonic() - t0 < 10
    assert ei.value.args[0] == 1927 and "'ndown'" in ei.value.args[1], ei.value
    with RawClient(ddm_proc.port, db="downdb") as raw:
        with pytest.raises(ServerError) as ei:
            raw.query("SELECT 1")
        assert ei.value.code == 1927 and "'ndown'" in ei.value.message, ei.value
        raw.ok(b"\x02sbtest")  # the client goes on in another database
        assert raw.query("SELECT 1") == [(b"1",)]
        raw.ok(b"\x02downdb")
        with pytest.raises(ServerError) as ei:
            raw.query("SELECT 1")
        assert "'ndown'" in ei.value.message
    serves(ddm_proc.port)


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_data_node_killed_mid_query(ddm2: DDM, victim):
    serves(ddm2.port, "killdb")
    workers = ddm2.worker_pids()
    outcome: dict = {}

    def sleeper() -> None:
        c = pymysql.connect(host="127.0.0.1", port=ddm2.port, user="ddm", password="ddm", database="killdb",
                            ssl_disabled=True, read_timeout=30)
        t0 = time.monotonic()
        try:
            outcome["rows"] = query_all(c, "SELECT SLEEP(5)")
        except pymysql.err.MySQLError as exc:
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - t0
        c.close()

    other = pymysql.connect(host="127.0.0.1", port=ddm2.port, user="ddm", password="ddm", database="sbtest",
                            ssl_disabled=True)
    t = threading.Thread(target=sleeper)
    t.start()
    time.sleep(1.0)
    os.kill(victim.pid, signal.SIGKILL)
    for _ in range(10):
        assert query_all(other, "SELECT 1") == [(1,)]  # clients of other nodes are unaffected
        time.sleep(0.1)
    t.join(30)
    assert not t.is_alive()
    assert "error" in outcome, outcome  # never a fake result
    assert outcome["elapsed"] < 4.5, outcome  # reported when the node died, not after SLEEP(5)
    assert isinstance(outcome["error"], pymysql.err.OperationalError), outcome
    # the dead node now gives a clear error at once; ddm itself keeps running and serving
    before = {pid: _fd_count(pid) for pid in workers}
    for _ in range(20):
        with RawClient(ddm2.port, db="killdb") as raw, pytest.raises(ServerError) as ei:
            raw.query("SELECT 1")
        assert ei.value.code == 1927 and "'nk'" in ei.value.message, ei.value
    assert ddm2.alive()
    if ddm2.mode == "subprocess":
        assert ddm2.worker_pids() == workers  # no worker crashed and was replaced
        time.sleep(0.5)
        for pid, n in before.items():
            assert _fd_count(pid) <= n + 3, (pid, n, _fd_count(pid))  # no leaked sockets
    assert query_all(other, "SELECT 2") == [(2,)]
    other.close()
    serves(ddm2.port)
