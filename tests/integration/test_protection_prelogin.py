"""An attacker's view of ddm before login (issue 17, item 2), of a frozen data node and of long data.

ddm runs here with short limits (connect_timeout 2 s, a 64 KiB pre-auth packet cap, 8 unauthenticated connections
per address, failed logins delayed from the second on) in front of the sandbox's n0 and n1.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from collections.abc import Iterator

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import DDM, RawClient, ServerError, ddm_config, free_port, start_ddm

CONNECT_TIMEOUT = 2.0
PER_ADDRESS = 8


@pytest.fixture(scope="module")
def guarded(node0, tmp_path_factory) -> Iterator[DDM]:
    port = free_port()
    cfg = ddm_config(port, {"n0": node0.conf()}, {"sbtest": {"node": "n0", "database": "ddmit_sbtest"}},
                     connect_timeout=CONNECT_TIMEOUT, max_unauthenticated_per_address=PER_ADDRESS,
                     login_failure_threshold=1, login_failure_delay=0.5, login_failure_max_delay=1.0)
    d = start_ddm(tmp_path_factory.mktemp("prelogin"), cfg)
    try:
        yield d
    finally:
        d.stop()


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def worker_rss(d: DDM) -> int | None:
    pids = d.worker_pids()
    return rss_kb(pids[0]) if len(pids) == 1 else None


def login(d: DDM, user: str = "ddm", password: str = "ddm") -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=d.port, user=user, password=password, database="sbtest",
                           autocommit=True, ssl_disabled=True, connect_timeout=10, read_timeout=30)


def raw_greeted(d: DDM) -> RawClient:
    raw = RawClient(d.port, login=False, timeout=10)
    raw.greeting()
    return raw


def read_error_then_close(raw: RawClient, timeout: float) -> ServerError:
    raw.sock.settimeout(timeout)
    p = raw.read_packet()
    assert p[0] == 0xFF, p[:20]
    assert raw.closed_by_server(timeout)
    return RawClient.error(p)


def test_silent_connection_closed_after_connect_timeout(guarded):
    raw = raw_greeted(guarded)
    start = time.monotonic()
    with raw:
        raw.sock.settimeout(CONNECT_TIMEOUT + 5)
        assert raw.sock.recv(100) == b""  # closed without a word, as MariaDB does at its connect_timeout
    assert time.monotonic() - start < CONNECT_TIMEOUT + 5
    login(guarded).close()  # a real login still works


def test_slow_but_finished_login_is_not_cut(guarded):
    c = login(guarded)
    time.sleep(CONNECT_TIMEOUT + 0.5)  # the timeout ends with the login
    with c.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchall() == ((1,),)
    c.close()


def test_oversized_preauth_packet_refused_without_buffering(guarded):
    before = worker_rss(guarded)
    for _ in range(6):
        with raw_greeted(guarded) as raw:
            # a handshake response announcing 16 MiB - 1 that never ends (the old code buffered up to 64 MiB of it)
            raw.sock.sendall(b"\xff\xff\xff\x01" + b"\x8d\xa2\x0a\x00")
            try:
                for _ in range(64):
                    raw.sock.sendall(b"x" * (128 * 1024))
            except OSError:
                pass  # refused and closed while we were still sending
            err = read_error_then_close(raw, 10)
            assert err.code == 1153, err
    after = worker_rss(guarded)
    if before is not None:
        assert after - before < 16 * 1024, (before, after)  # KiB; the old code grew by up to 6 x 64 MiB
    login(guarded).close()


def _first_reply(d: DDM, user: str, plugin: bytes) -> tuple[RawClient, bytes]:
    raw = raw_greeted(d)
    raw.write_packet(raw.handshake_response(user, "not-the-password", "sbtest", plugin), 1)
    return raw, raw.read_packet()


@pytest.mark.parametrize("plugin", [b"mysql_native_password", b"caching_sha2_password"])
def test_unknown_user_gets_the_same_first_reply(guarded, plugin):
    known, reply_known = _first_reply(guarded, "ddm", plugin)  # ddm: caching_sha2_password
    unknown, reply_unknown = _first_reply(guarded, "nobody_here", plugin)
    with known, unknown:
        if plugin == b"mysql_native_password":  # auth switch to caching_sha2_password with a random salt
            assert reply_known[:1] == b"\xfe" and len(reply_known) == len(reply_unknown)
            assert reply_known[:-21] == reply_unknown[:-21] == b"\xfecaching_sha2_password\0"
            for raw in (known, unknown):
                raw.write_packet(b"\x11" * 32)  # a wrong caching_sha2 scramble
            reply_known, reply_unknown = known.read_packet(), unknown.read_packet()
        assert reply_known == reply_unknown == b"\x01\x04"  # perform full authentication, for both
        keys = []
        for raw in (known, unknown):
            raw.write_packet(b"\x02")  # the RSA public key, please
            keys.append(raw.read_packet())
        assert keys[0] == keys[1] and keys[0].startswith(b"\x01-----BEGIN PUBLIC KEY")
        for raw in (known, unknown):
            raw.write_packet(b"\x00" * 256)  # not a valid encrypted password
        codes = [read_error_then_close(raw, 10).code for raw in (known, unknown)]
    assert codes == [1045, 1045]


def test_failed_logins_are_logged_and_delayed(guarded):
    times = []
    for _ in range(3):
        start = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as ei:
            login(guarded, "ddm", "wrong")
        times.append(time.monotonic() - start)
        assert ei.value.args[0] == 1045
    # threshold 1, 0.5 s more per failure, at most 1 s: the 2nd waits 0.5 s, the 3rd 1 s (lower bounds only)
    assert times[1] >= 0.45 and times[2] >= 0.95, times
    with pytest.raises(pymysql.err.OperationalError):
        login(guarded, "ghost", "x")  # an unknown user is throttled and logged on its own count
    login(guarded).close()  # the right password still gets in (and clears the count)
    start = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError):
        login(guarded, "ddm", "wrong")
    assert time.monotonic() - start < 10
    if guarded.log_path is not None:
        log = guarded.log_path.read_text(errors="replace")
        assert "login failed: user 'ddm' from 127.0.0.1: wrong password (failure 3 in a row; answered after 1.0 s)" \
            in log, log[-3000:]
        assert "login failed: user 'ghost' from 127.0.0.1: unknown user" in log


def test_wrong_sequence_id_refused(guarded):
    with raw_greeted(guarded) as raw:
        raw.write_packet(raw.handshake_response("native", "nativepw", "sbtest", b"mysql_native_password"), 5)
        raw.sock.settimeout(10)
        p = raw.read_packet()
        assert raw.seq == 2, raw.seq  # the ERR carries the id ddm expected (1), as MariaDB's does
        assert raw.closed_by_server(10)
    err = RawClient.error(p)
    assert (err.code, err.message) == (1156, "Got packets out of order")
    with raw_greeted(guarded) as raw:  # the right id still logs in
        raw.write_packet(raw.handshake_response("native", "nativepw", "sbtest", b"mysql_native_password"), 1)
        raw.finish_auth("nativepw")
        assert raw.query("SELECT 7") == [(b"7",)]


def test_unauthenticated_connections_capped_per_address(guarded):
    silent = [raw_greeted(guarded) for _ in range(PER_ADDRESS)]
    try:
        with RawClient(guarded.port, login=False, timeout=10) as extra:
            p = extra.read_packet()
            assert p[0] == 0xFF and RawClient.error(p).code == 1040, p
            assert extra.closed_by_server(5)
    finally:
        for raw in silent:
            raw.close()
    deadline = time.monotonic() + 10
    while True:  # the worker sees the closes asynchronously
        try:
            login(guarded).close()
            break
        except pymysql.err.OperationalError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


# ------------------------------------------------------------------------------------- a frozen data node, long data

READ_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def two_nodes(sandbox, node0, tmp_path_factory) -> Iterator[tuple[DDM, int]]:
    """ddm over n0 (sbtest) and the sandbox's n1 (database fz, read_timeout 2 s), max_long_data_size 4 MiB;
    yields (ddm, n1's mariadbd pid)."""
    n1 = sandbox.primary("n1")
    with pymysql.connect(host="127.0.0.1", port=n1.port, user=sandbox.node_user, password=sandbox.node_password,
                         autocommit=True) as c, c.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS prelogin_fz")
    n1_conf = {"host": "127.0.0.1", "port": n1.port, "user": sandbox.node_user, "password": sandbox.node_password,
               "pool": {"max_size": 8, "connect_timeout": 2, "read_timeout": READ_TIMEOUT}}
    cfg = ddm_config(free_port(), {"n0": node0.conf(), "n1": n1_conf},
                     {"sbtest": {"node": "n0", "database": "ddmit_sbtest"}, "fz": {"node": "n1", "database": "prelogin_fz"}},
                     max_long_data_size="4M")
    d = start_ddm(tmp_path_factory.mktemp("frozen"), cfg)
    try:
        yield d, n1.pid
    finally:
        d.stop()


def _login_db(d: DDM, db: str, **kw) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=d.port, user="ddm", password="ddm", database=db, autocommit=True,
                           ssl_disabled=True, connect_timeout=10, read_timeout=60, **kw)


def test_frozen_node_gives_an_error_within_read_timeout(two_nodes):
    d, pid = two_nodes
    fz, other = _login_db(d, "fz"), _login_db(d, "sbtest")
    with fz.cursor() as cur:
        cur.execute("CREATE OR REPLACE TABLE t (id INT)")
        cur.execute("INSERT INTO t VALUES (1), (2)")
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as ei, fz.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM t")
        elapsed = time.monotonic() - start
        assert ei.value.args[0] == 1927, ei.value
        assert "read_timeout" in ei.value.args[1], ei.value
        assert READ_TIMEOUT - 0.5 <= elapsed < READ_TIMEOUT + 5, elapsed
        with other.cursor() as cur:  # the worker keeps serving the other node's clients
            cur.execute("SELECT 1")
            assert cur.fetchall() == ((1,),)
    finally:
        os.kill(pid, signal.SIGCONT)
    with fz.cursor() as cur:  # the same client connection, a fresh node connection: works again
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchall() == ((2,),)
    fz.close()
    other.close()


def test_slow_reader_is_not_a_frozen_node(two_nodes):
    """ddm stops reading the node while its client does not read: that silence is not the node's."""
    d, _ = two_nodes
    c = _login_db(d, "fz")
    with c.cursor(pymysql.cursors.SSCursor) as cur:
        cur.execute("SELECT seq, REPEAT('x', 200) FROM seq_1_to_200000")
        assert cur.fetchone()[0] == 1
        time.sleep(READ_TIMEOUT * 2)
        assert sum(1 for _ in cur) == 199_999
    c.close()


def _execute_long(raw: RawClient, stmt: int) -> list[bytes]:
    """COM_STMT_EXECUTE of a one-parameter statement whose value came as long data (type BLOB, no value)."""
    raw.command(b"\x17" + struct.pack("<IBI", stmt, 0, 1) + b"\x00" + b"\x01" + b"\xfc\x00")
    return raw.read_result(binary=True)[1]


def test_long_data_over_max_long_data_size(two_nodes):
    d, _ = two_nodes
    mib = b"y" * (1024 * 1024)
    with RawClient(d.port) as raw, RawClient(d.port) as other:
        stmt, _, _ = raw.prepare("SELECT LENGTH(?)")
        raw.ok(b"\x0e")
        before = worker_rss(d)
        for _ in range(100):
            raw.send_long_data(stmt, 0, mib)
        raw.ok(b"\x0e")  # answered once the long data was taken
        after = worker_rss(d)
        if before is not None:
            assert after - before < 48 * 1024, (before, after)  # KiB; the old code held all 100 MiB
        with pytest.raises(ServerError) as ei:
            _execute_long(raw, stmt)
        assert ei.value.code == 1105 and "longer than 'max_long_data_size' bytes" in ei.value.message, ei.value
        assert other.query("SELECT 5") == [(b"5",)]  # the worker keeps serving
        for _ in range(3):  # the same statement within the cap works
            raw.send_long_data(stmt, 0, mib)
        assert len(_execute_long(raw, stmt)) == 1
        assert raw.query("SELECT 6") == [(b"6",)]
