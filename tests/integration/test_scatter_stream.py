"""Streaming scatter SELECTs (ddm.execute.scatter) end to end: big results flow through a ddm-server whose memory stays
flat, in order, with errors and vanished clients handled.

Logical database `streamdb` over the session sandbox's two nodes: `big` sharded by id over ds0/ds1 x big_0..3
(database id % 2, table id / 2 % 4), filled straight on the data nodes (60,000 rows of ~1 KiB: 60 MiB that a
buffering proxy would hold at once).
"""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pymysql.cursors
import pytest
from ddm_fixtures import NO_TLS, ddm_config, free_port, start_ddm

from ddm.tools import sandbox as sb

pytestmark = pytest.mark.integration

DB = "streamdb"
ROWS = 60_000
PAD = 1000
RULES = {DB: {
    "datasources": {"ds0": {"node": "n0", "database": "stream_0"}, "ds1": {"node": "n1", "database": "stream_1"}},
    "default_datasource": "ds0",
    "tables": {"big": {"nodes": "ds${0..1}.big_${0..3}",
                       "database_strategy": {"column": "id", "algorithm": "mod"},
                       "table_strategy": {"column": "id", "algorithm": "two_level"}}}}}


@pytest.fixture(scope="module")
def ddm_stream(sandbox: sb.Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    nodes = {n: {"host": "127.0.0.1", "port": sandbox.primary(n).port, "user": sandbox.node_user,
                 "password": sandbox.node_password} for n in ("n0", "n1")}
    d = start_ddm(tmp_path_factory.mktemp("stream-ddm"), ddm_config(free_port(), nodes, RULES), mode="subprocess")
    try:
        for ds, node in enumerate(("n0", "n1")):  # ddm refuses CREATE DATABASE: made on the nodes
            sb.run_sql(sandbox.primary(node), f"CREATE DATABASE IF NOT EXISTS stream_{ds}")
        with _connect(d.port) as c, c.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS big")
            cur.execute("CREATE TABLE big (id BIGINT NOT NULL PRIMARY KEY, k INT NOT NULL, pad VARCHAR(1000))")
        for ds, node in enumerate(("n0", "n1")):
            for t in range(4):
                sb.run_sql(sandbox.primary(node),
                           f"INSERT INTO stream_{ds}.big_{t} SELECT seq, seq % 997, REPEAT(CHAR(97 + seq % 26), {PAD})"
                           f" FROM stream_{ds}.seq_1_to_{ROWS} WHERE seq % 2 = {ds} AND (seq DIV 2) % 4 = {t}")
        d.extra["box"] = sandbox
        yield d
    finally:
        d.stop()


def _connect(port: int, **kw: Any) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="ddm", password="ddm", database=DB, autocommit=True,
                           charset="utf8mb4", connect_timeout=10, read_timeout=120, **NO_TLS, **kw)


def _rss_kib(d: Any) -> int:
    total = 0
    for pid in d.worker_pids():
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def _read_slowly(d: Any, sql: str) -> tuple[list[tuple], int]:
    """All rows of sql through an unbuffered cursor, pausing now and then (the client reads slower than the nodes
    send); returns the rows without their pad and the largest worker RSS growth seen, in KiB."""
    base = _rss_kib(d)
    peak = 0
    out = []
    with _connect(d.port, cursorclass=pymysql.cursors.SSCursor) as c, c.cursor() as cur:
        cur.execute(sql)
        for n, row in enumerate(cur):
            out.append(row[:-1] if len(row) > 2 else row)
            if n % 5000 == 0:
                time.sleep(0.05)
                peak = max(peak, _rss_kib(d) - base)
    return out, peak


def test_plain_scan_streams_every_row_with_flat_memory(ddm_stream):
    rows, growth = _read_slowly(ddm_stream, "SELECT id, k, pad FROM big")
    assert sorted(r[0] for r in rows) == list(range(1, ROWS + 1))
    assert all(r[1] == r[0] % 997 for r in rows)
    # 60 MiB of rows went through; a buffered merge holds all of them at once
    assert growth < 30 * 1024, f"worker RSS grew by {growth} KiB"


def test_order_by_without_limit_is_merged_in_order_with_flat_memory(ddm_stream):
    rows, growth = _read_slowly(ddm_stream, "SELECT id, k, pad FROM big ORDER BY k DESC, id")
    assert [r[0] for r in rows] == [i for _, i in sorted((-(i % 997), i) for i in range(1, ROWS + 1))]
    assert growth < 30 * 1024, f"worker RSS grew by {growth} KiB"


def test_order_by_limit_offset(ddm_stream):
    with _connect(ddm_stream.port) as c, c.cursor() as cur:
        cur.execute("SELECT id, k FROM big WHERE id > 100 ORDER BY k, id DESC LIMIT 7, 5")
        want = sorted((i % 997, -i) for i in range(101, ROWS + 1))[7:12]
        assert cur.fetchall() == tuple((-i, k) for k, i in want)
        cur.execute("SELECT id FROM big ORDER BY id LIMIT 0")
        assert cur.fetchall() == ()


def test_an_error_on_one_node_is_the_whole_answer(ddm_stream):
    box = ddm_stream.extra["box"]
    sb.run_sql(box.primary("n1"), "RENAME TABLE stream_1.big_2 TO stream_1.big_2_away")
    try:
        with _connect(ddm_stream.port) as c, c.cursor() as cur:
            for sql in ("SELECT id FROM big", "SELECT id FROM big ORDER BY id"):
                with pytest.raises(pymysql.err.ProgrammingError) as err:
                    cur.execute(sql)
                assert err.value.args[0] == 1146  # the node's ER_NO_SUCH_TABLE, untouched
            cur.execute("SELECT COUNT(*) FROM big WHERE id = 1")  # the session goes on
            assert cur.fetchall() == ((1,),)
    finally:
        sb.run_sql(box.primary("n1"), "RENAME TABLE stream_1.big_2_away TO stream_1.big_2")


def test_a_client_that_vanishes_mid_stream_leaves_ddm_serving(ddm_stream):
    for _ in range(3):
        c = _connect(ddm_stream.port, cursorclass=pymysql.cursors.SSCursor)
        cur = c.cursor()
        cur.execute("SELECT id, pad FROM big ORDER BY id")
        assert cur.fetchone()[0] == 1
        c._sock.shutdown(socket.SHUT_RDWR)  # gone without COM_QUIT, with the result still flowing
        c._sock.close()
        with contextlib.suppress(pymysql.err.Error):  # PyMySQL reads the rest of the result on close: it fails
            cur.close()
        for res in (c._result, getattr(cur, "_result", None)):
            if res is not None:
                res.unbuffered_active = False  # its __del__ would read the closed socket again
        c._result = None
        del cur, c
        gc.collect()
    with _connect(ddm_stream.port) as c, c.cursor() as cur:
        for _ in range(20):  # the pools got their connections back (or replaced them)
            cur.execute("SELECT id FROM big WHERE id BETWEEN 10 AND 20 ORDER BY id DESC")
            assert [r[0] for r in cur.fetchall()] == list(range(20, 9, -1))
    assert ddm_stream.alive()


def test_streaming_inside_a_transaction(ddm_stream):
    with _connect(ddm_stream.port) as c, c.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("UPDATE big SET k = 5000 WHERE id = 3")
        cur.execute("SELECT id FROM big WHERE k = 5000 ORDER BY id")  # sees its own uncommitted row
        assert cur.fetchall() == ((3,),)
        cur.execute("ROLLBACK")
        cur.execute("SELECT k FROM big WHERE id = 3")
        assert cur.fetchall() == ((3,),)


def test_kill_query_stops_a_streaming_scatter(ddm_stream):
    victim = _connect(ddm_stream.port)
    out: dict = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            with victim.cursor() as cur:
                cur.execute("SELECT id, SLEEP(0.01) FROM big WHERE id <= 2000 ORDER BY id")  # ~2.5 s per table
                out["rows"] = cur.fetchall()
        except pymysql.err.MySQLError as exc:
            out["error"] = exc.args[0]
        out["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.8)
    with _connect(ddm_stream.port) as c, c.cursor() as cur:
        cur.execute(f"KILL QUERY {victim.server_thread_id[0]}")
    t.join(30)
    assert out.get("error") == 1317, out  # ER_QUERY_INTERRUPTED from the nodes, not a partial result
    assert out["elapsed"] < 2.0, out
    with victim.cursor() as cur:  # the victim's session goes on
        cur.execute("SELECT COUNT(*) FROM big WHERE id = 5")
        assert cur.fetchall() == ((1,),)
    victim.close()
