"""Pipelined pass-through SELECTs (ddm.execute.pipeline) against a real MariaDB: answers go to the right clients, errors
stay with their statement, slow or session-dependent statements take the normal path, queued clients survive a
lost node connection with a clean error, and a client vanishing while queued does not disturb the pipe.

ddm runs in a thread of this process (thread form) so the tests can read the pipes' counters."""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import (
    DDM,
    NO_TLS,
    PHYS,
    Node,
    RawClient,
    ServerError,
    column_type,
    create_two_level_tables,
    ddm_config,
    decode_binary_row,
    free_port,
    query_all,
    start_ddm,
    two_level_database,
)

pytestmark = pytest.mark.integration

SLOW = "SELECT SUM(seq) > 0 FROM seq_1_to_{n}"  # MariaDB's sequence engine: a read-only SELECT that takes a while


@pytest.fixture(scope="module")
def pddm(node0: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DDM]:
    n0 = node0.conf()
    n0["pool"] = {**n0["pool"], "pipelining": {"connections": 1, "max_depth": 8, "max_head_wait": "300ms"}}
    # sharded: kv split over two physical databases of n0 x two tables (k % 2, then k / 2 % 2)
    dbs = {"app": {"node": "n0", "database": PHYS["app"]},
           "shp": two_level_database(["n0", "n0"], "pipe_sh", "kv", "k")}
    create_two_level_tables(node0, 2, "pipe_sh", "kv", "k INT PRIMARY KEY, v VARCHAR(20)",
                            rows=lambda i, t: ", ".join(f"({k}, 'v{k}')" for k in range(200)
                                                        if k % 2 == i and k // 2 % 2 == t))
    d = start_ddm(tmp_path_factory.mktemp("pddm"), ddm_config(free_port(), {"n0": n0}, dbs), mode="thread")
    try:
        yield d
    finally:
        d.stop()


def _connect(d: DDM, **kw: Any) -> pymysql.connections.Connection:
    params: dict[str, Any] = {"host": "127.0.0.1", "port": d.port, "user": "ddm", "password": "ddm",
                              "database": "app", "autocommit": True, "connect_timeout": 10, "read_timeout": 30,
                              **NO_TLS}
    params.update(kw)
    return pymysql.connect(**params)


def _stats(d: DDM) -> dict:
    return dict(d._server.pipelines.stats())


def _pipe_ready(d: DDM) -> None:
    """Run a SELECT until the pipe exists (it is opened on first use; that statement takes the normal path)."""
    c = _connect(d)
    try:
        deadline = time.monotonic() + 10
        while _stats(d)["pipes"] < 1:
            assert time.monotonic() < deadline, _stats(d)
            query_all(c, "SELECT 1")
            time.sleep(0.02)
    finally:
        c.close()


def _clients_ready(d: DDM, nclients: int) -> tuple[dict, list[str], threading.Barrier]:
    """For a test of many clients at once: the pipe open, the counters before, an error list, a start barrier."""
    _pipe_ready(d)
    return _stats(d), [], threading.Barrier(nclients)


def _pipe_conn(d: DDM):
    for group in d._server.pipelines.groups.values():
        for pipe in group.pipes:
            return pipe
    raise AssertionError("no pipe")


def _assert_pipelined(d: DDM, before: dict, at_least: int) -> None:
    """More than `at_least` statements went over the pipes since `before`, and no pipe failed."""
    after = _stats(d)
    assert after["pipelined"] - before["pipelined"] > at_least, (before, after)
    assert after["failed"] == before["failed"]


def _run_clients(client, n: int, errors: list[str]) -> None:
    """client(0) .. client(n - 1), each in its own thread, all joined; what one raises goes to `errors`."""
    def guarded(cid: int) -> None:
        try:
            client(cid)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"client {cid}: {exc!r}")

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def test_many_clients_get_their_own_answers(pddm: DDM) -> None:
    nclients, nqueries = 12, 150
    before, errors, start = _clients_ready(pddm, nclients)

    def client(cid: int) -> None:
        c = _connect(pddm)
        start.wait()
        for n in range(nqueries):
            rows = query_all(c, f"SELECT {cid}, {n}, REPEAT('x', {(cid * 7 + n) % 300})")
            if rows != [(cid, n, "x" * ((cid * 7 + n) % 300))]:
                errors.append(f"client {cid} query {n} got {rows!r}")
        c.close()

    _run_clients(client, nclients, errors)
    assert not errors, errors[:5]
    _assert_pipelined(pddm, before, nclients * nqueries // 2)


def test_node_error_for_one_client_only(pddm: DDM) -> None:
    _pipe_ready(pddm)
    errors: list[str] = []
    stop = threading.Event()

    def good(cid: int) -> None:
        c = _connect(pddm)
        n = 0
        while not stop.is_set():
            rows = query_all(c, f"SELECT {cid}, {n}")
            if rows != [(cid, n)]:
                errors.append(f"{cid}/{n}: {rows!r}")
            n += 1
        c.close()

    threads = [threading.Thread(target=good, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    bad = _connect(pddm)
    before = _stats(pddm)["pipelined"]
    for _ in range(50):
        with pytest.raises(pymysql.err.ProgrammingError) as info:
            query_all(bad, "SELECT * FROM no_such_table_here")
        assert info.value.args[0] == 1146
        assert query_all(bad, "SELECT 'still fine'") == [("still fine",)]
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[:5]
    assert _stats(pddm)["pipelined"] - before >= 50
    bad.close()


def test_sleep_is_not_pipelined_and_does_not_delay_others(pddm: DDM) -> None:
    _pipe_ready(pddm)
    before = _stats(pddm)
    sleeper = _connect(pddm)
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("rows", query_all(sleeper, "SELECT SLEEP(1)")))
    t.start()
    time.sleep(0.1)
    other = _connect(pddm)
    t0 = time.monotonic()
    for n in range(20):
        assert query_all(other, f"SELECT {n}") == [(n,)]
    elapsed = time.monotonic() - t0
    t.join(10)
    assert out["rows"] == [(0,)]
    assert elapsed < 0.5, elapsed
    after = _stats(pddm)
    assert after["refused_statement"] > before["refused_statement"]
    assert after["pipelined"] - before["pipelined"] >= 20
    sleeper.close()
    other.close()


def test_slow_head_sends_others_to_the_normal_path(pddm: DDM) -> None:
    _pipe_ready(pddm)
    c = _connect(pddm)
    t0 = time.monotonic()
    query_all(c, SLOW.format(n=20_000_000))
    slow_seconds = time.monotonic() - t0
    if slow_seconds < 0.6:
        pytest.skip(f"the slow SELECT took only {slow_seconds:.2f}s here")
    before = _stats(pddm)
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("rows", query_all(c, SLOW.format(n=20_000_000))))
    t.start()
    time.sleep(0.4)  # longer than max_head_wait (300ms)
    other = _connect(pddm)
    t1 = time.monotonic()
    for n in range(10):
        assert query_all(other, f"SELECT {n}") == [(n,)]
    assert time.monotonic() - t1 < slow_seconds / 2
    t.join(30)
    assert out["rows"] == [(1,)]
    assert _stats(pddm)["slow_head"] > before["slow_head"]
    c.close()
    other.close()


def _slow_seconds(c: pymysql.connections.Connection, n: int = 20_000_000) -> float:
    t0 = time.monotonic()
    query_all(c, SLOW.format(n=n))
    return time.monotonic() - t0


def test_clients_queued_behind_a_slow_head_move_to_the_normal_path(pddm: DDM) -> None:
    _pipe_ready(pddm)
    slow = _connect(pddm)
    slow_seconds = _slow_seconds(slow)
    if slow_seconds < 0.8:
        pytest.skip(f"the slow SELECT took only {slow_seconds:.2f}s here")
    other = _connect(pddm)
    query_all(other, "SELECT 0")
    before = _stats(pddm)
    done: list[str] = []
    t = threading.Thread(target=lambda: (query_all(slow, SLOW.format(n=20_000_000)), done.append("slow")))
    t.start()
    time.sleep(0.05)  # the slow SELECT is the pipe's head; the next one joins behind it (head younger than 300ms)
    assert query_all(other, "SELECT 42") == [(42,)]
    done.append("other")
    t.join(30)
    # answered after max_head_wait on another connection, not after the slow SELECT
    assert done == ["other", "slow"], done
    after = _stats(pddm)
    assert after["rescued"] > before["rescued"], (before, after)
    assert after["failed"] == before["failed"]
    assert query_all(other, "SELECT 43") == [(43,)]
    slow.close()
    other.close()


def test_kill_query_of_a_pipelined_select(pddm: DDM) -> None:
    _pipe_ready(pddm)
    slow = _connect(pddm)
    if _slow_seconds(slow) < 0.8:
        pytest.skip("the slow SELECT is too fast here")
    killer = _connect(pddm)
    before = _stats(pddm)
    out: dict = {}

    def run() -> None:
        try:
            out["rows"] = query_all(slow, SLOW.format(n=20_000_000))
        except pymysql.err.MySQLError as exc:
            out["error"] = exc.args[0]

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.1)
    assert _stats(pddm)["pipelined"] > before["pipelined"]  # the slow SELECT runs on the pipe
    query_all(killer, f"KILL QUERY {slow.thread_id()}")
    t.join(30)
    assert out.get("error") == 1317, out  # ER_QUERY_INTERRUPTED, from the data node
    assert query_all(slow, "SELECT 7") == [(7,)]
    assert query_all(killer, "SELECT 8") == [(8,)]
    assert _stats(pddm)["failed"] == before["failed"]
    slow.close()
    killer.close()


def test_session_dependent_statements_are_not_pipelined(pddm: DDM) -> None:
    _pipe_ready(pddm)
    c = _connect(pddm)
    with contextlib.closing(_connect(pddm, user="ddm")) as d, d.cursor() as cur:
        # in the session's database `app`: its physical name is refused to clients (ddm.protect.privileges)
        cur.execute("CREATE TABLE IF NOT EXISTS pl (id INT PRIMARY KEY, v INT)")
        cur.execute("REPLACE INTO pl VALUES (1, 10)")
    before = _stats(pddm)
    assert query_all(c, "SET @x = 5") == []
    assert query_all(c, "SELECT @x") == [(5,)]
    assert query_all(c, "SELECT @y := 7") == [(7,)]
    assert query_all(c, "SELECT v FROM pl WHERE id = 1 FOR UPDATE") == [(10,)]
    assert query_all(c, "SELECT v FROM pl WHERE id = 1 LOCK IN SHARE MODE") == [(10,)]
    mid = _stats(pddm)
    assert mid["pipelined"] == before["pipelined"], (before, mid)
    assert mid["refused_statement"] - before["refused_statement"] == 4
    # in a transaction nothing is pipelined, not even a plain SELECT
    c.begin()
    assert query_all(c, "SELECT v FROM pl WHERE id = 1") == [(10,)]
    c.commit()
    assert _stats(pddm)["pipelined"] == before["pipelined"]
    # the session's SET @x made its signature one without a pipe yet: the normal path
    assert query_all(c, "SELECT v FROM pl WHERE id = 1") == [(10,)]
    assert _stats(pddm)["pipelined"] == before["pipelined"]
    c.close()
    fresh = _connect(pddm)
    assert query_all(fresh, "SELECT v FROM pl WHERE id = 1") == [(10,)]
    assert _stats(pddm)["pipelined"] == before["pipelined"] + 1
    fresh.close()


def test_client_vanishing_while_queued(pddm: DDM) -> None:
    _pipe_ready(pddm)
    before = _stats(pddm)
    head = _connect(pddm)
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("rows", query_all(head, SLOW.format(n=2_000_000))))
    t.start()
    time.sleep(0.02)  # the head is running, for less than max_head_wait
    gone = _connect(pddm)
    gone._execute_command(pymysql.constants.COMMAND.COM_QUERY, "SELECT 'gone'")
    gone._sock.close()  # vanish without reading the answer
    t.join(30)
    assert out["rows"] == [(1,)]
    c = _connect(pddm)
    for n in range(20):
        assert query_all(c, f"SELECT {n}") == [(n,)]
    after = _stats(pddm)
    assert after["failed"] == before["failed"] and after["pipes"] >= 1
    c.close()
    head.close()


def test_node_connection_killed(pddm: DDM, node0: Node) -> None:
    _pipe_ready(pddm)
    pipe = _pipe_conn(pddm)
    clients = [_connect(pddm) for _ in range(4)]
    results: list[Any] = [None] * 4

    def run(i: int, sql: str) -> None:
        try:
            results[i] = query_all(clients[i], sql)
        except pymysql.err.Error as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(0, SLOW.format(n=50_000_000)))]
    threads[0].start()
    time.sleep(0.05)
    for i in (1, 2, 3):
        threads.append(threading.Thread(target=run, args=(i, f"SELECT {i}")))
        threads[-1].start()
    time.sleep(0.1)
    assert len(pipe.queue) >= 2, len(pipe.queue)  # queued behind the slow head
    with contextlib.closing(pymysql.connect(host="127.0.0.1", port=node0.port, user=node0.user,
                                            password=node0.password, autocommit=True)) as admin, \
            admin.cursor() as cur:
        cur.execute(f"KILL {pipe.conn.conn_id}")
    for t in threads:
        t.join(30)
    queued = [r for r in results[1:] if isinstance(r, Exception)]
    assert isinstance(results[0], Exception), results
    assert queued, results  # at least the statements still queued got an error
    for r in queued:
        assert r.args[0] in (1927, 2013), r
    assert pipe.dead
    # ddm keeps serving: the clients that got an error, and new ones, run statements (a new pipe opens)
    for i in range(4):
        if isinstance(results[i], pymysql.err.OperationalError) and results[i].args[0] == 2013:
            clients[i] = _connect(pddm)  # ddm closed it: part of a result had gone out
        assert query_all(clients[i], f"SELECT {i}") == [(i,)]
    _pipe_ready(pddm)
    assert _pipe_conn(pddm) is not pipe
    for c in clients:
        c.close()


def test_kill_query_of_a_queued_select_leaves_the_head_alone(pddm: DDM) -> None:
    """KILL QUERY of a client queued on a pipe behind another's statement: it is answered as interrupted, without a
    KILL on the node (whose thread runs the head's statement), and the head completes."""
    _pipe_ready(pddm)
    head, queued, killer = _connect(pddm), _connect(pddm), _connect(pddm)
    qid = query_all(queued, "SELECT CONNECTION_ID()")[0][0]
    out: dict = {}

    def run(name: str, c: pymysql.connections.Connection, sql: str) -> None:
        try:
            out[name] = query_all(c, sql)
        except pymysql.err.MySQLError as exc:
            out[name] = exc.args[0]

    t1 = threading.Thread(target=run, args=("head", head, SLOW.format(n=5_000_000)))
    t1.start()
    time.sleep(0.02)
    t2 = threading.Thread(target=run, args=("queued", queued, "SELECT 2"))
    t2.start()
    time.sleep(0.02)  # well within max_head_wait (300ms): still queued behind the head
    with killer.cursor() as cur:
        cur.execute(f"KILL QUERY {qid}")
    t1.join(30)
    t2.join(30)
    assert out == {"head": [(1,)], "queued": 1317}, out
    assert query_all(queued, "SELECT 3") == [(3,)]
    for c in (head, queued, killer):
        c.close()


def test_prepared_executes_share_the_pipe(pddm: DDM) -> None:
    """Binary-protocol executes of many clients on the pipe: each gets its own rows, parameter types sent only on
    a client's first execute still reach the pipe's own statement, and text SELECTs interleave."""
    nclients, nexec = 8, 120
    before, errors, start = _clients_ready(pddm, nclients)
    sql = "SELECT ? + 0, CONCAT('v', ?), REPEAT('x', ?)"

    def client(cid: int) -> None:
        with RawClient(pddm.port, user="ddm", password="ddm", db="app") as c:
            stmt_id, _, nparams = c.prepare(sql)
            assert nparams == 3
            start.wait()
            for n in range(nexec):
                rows = c.execute(stmt_id, [cid * 1000 + n, cid, n % 50], send_types=n == 0)
                want = [(cid * 1000 + n, b"v%d" % cid, b"x" * (n % 50))]
                if rows != want:
                    errors.append(f"client {cid} exec {n}: {rows!r} != {want!r}")
                if n % 10 == 0 and c.query(f"SELECT {cid}, {n}") != [(b"%d" % cid, b"%d" % n)]:
                    errors.append(f"client {cid} text {n}")

    _run_clients(client, nclients, errors)
    assert not errors, errors[:5]
    # (the pipe's statement comes from its own COM_STMT_PREPARE, or was already prepared on the pooled connection
    # the pipe took: either way the executes run on it)
    _assert_pipelined(pddm, before, nclients * nexec // 2)


def test_cursor_executes_are_not_pipelined(pddm: DDM) -> None:
    _pipe_ready(pddm)
    with RawClient(pddm.port, user="ddm", password="ddm", db="app") as c:
        stmt_id, _, _ = c.prepare("SELECT seq FROM seq_1_to_5")
        for _ in range(3):
            assert [r[0] for r in c.execute(stmt_id)] == [1, 2, 3, 4, 5]  # the pipe prepares it meanwhile
        before = _stats(pddm)["pipelined"]
        c.command(c.execute_payload(stmt_id, [], flags=1))  # CURSOR_TYPE_READ_ONLY: rows come by COM_STMT_FETCH
        head = c.read_packet()
        assert head[0] == 1, head  # one column, then its definition and an EOF; rows only on fetch
        c.read_packet()
        eof = c.read_packet()
        assert eof[0] == 0xFE and struct.unpack_from("<H", eof, 3)[0] & 0x40  # SERVER_STATUS_CURSOR_EXISTS
        assert _stats(pddm)["pipelined"] == before
        c.command(b"\x1c" + struct.pack("<II", stmt_id, 10))
        fetched = []
        while True:
            p = c.read_packet()
            if p[0] == 0xFE and len(p) < 9:
                break
            fetched.append(p)
        assert len(fetched) == 5


def test_sharded_single_shard_selects_share_the_pipe(pddm: DDM) -> None:
    """One-shard SELECTs of a sharded database (text: point route; prepared: execute point route) go through the
    pipes of their shard's physical database, rewritten; every client still gets the row of its own key."""
    nclients, n = 6, 100
    before, errors, start = _clients_ready(pddm, nclients)

    def client(cid: int) -> None:
        with RawClient(pddm.port, user="ddm", password="ddm", db="shp") as c:
            stmt_id, _, _ = c.prepare("SELECT k, v FROM kv WHERE k = ?")
            start.wait()
            for i in range(n):
                k = (cid * 37 + i * 11) % 200
                if c.query(f"SELECT v FROM kv WHERE k = {k}") != [(b"v%d" % k,)]:
                    errors.append(f"client {cid} text k={k}")
                rows = c.execute(stmt_id, [k], send_types=i == 0)
                if rows != [(k, b"v%d" % k)]:
                    errors.append(f"client {cid} exec k={k}: {rows!r}")
            assert c.query("SELECT v FROM kv WHERE k = 1000") == []  # no such row, still one shard

    _run_clients(client, nclients, errors)
    assert not errors, errors[:5]
    _assert_pipelined(pddm, before, nclients * n)  # most of the 2 x 600
    # one group per physical database of the sharded database (and the pass-through ones)
    assert {k[1] for k in pddm._server.pipelines.groups} >= {b"pipe_sh_0", b"pipe_sh_1"}


def test_sharded_cursor_request_gets_the_rows_directly(pddm: DDM) -> None:
    """On a sharded database a cursor cannot be fetched later (the rows come from one node's connection, or are
    merged from several): ddm drops the cursor request and the rows come as an ordinary result set, without
    SERVER_STATUS_CURSOR_EXISTS, which clients read as they do when a server opens no cursor."""
    with RawClient(pddm.port, user="ddm", password="ddm", db="shp") as c:
        for sql, params, want in (("SELECT k, v FROM kv WHERE k = ?", [7], [(7, b"v7")]),
                                  ("SELECT k FROM kv WHERE k < ? ORDER BY k", [6], [(k,) for k in range(6)])):
            stmt_id, _, _ = c.prepare(sql)
            for _ in range(3):  # first executes prepare on the node; later ones take the fast path or a pipe
                c.command(c.execute_payload(stmt_id, params, flags=1))  # CURSOR_TYPE_READ_ONLY
                cols, rows, eof = c.read_result()
                assert not struct.unpack_from("<H", eof, 3)[0] & 0x40, sql  # no SERVER_STATUS_CURSOR_EXISTS
                types = [column_type(col) for col in cols]
                assert [decode_binary_row(r, types) for r in rows] == want, sql
            assert c.query("SELECT 1") == [(b"1",)]  # nothing left pinned or out of step


def test_sharded_statement_after_use_of_another_database(pddm: DDM) -> None:
    """A statement prepared in a sharded database routes by that database's rules: after USE of another database its
    execute is refused with a clear error (not run against the wrong tables), and works again after USE back."""
    with RawClient(pddm.port, user="ddm", password="ddm", db="shp") as c:
        stmt_id, _, _ = c.prepare("SELECT v FROM kv WHERE k = ?")
        assert c.execute(stmt_id, [3]) == [(b"v3",)]
        c.ok(b"\x02app")  # COM_INIT_DB
        with pytest.raises(ServerError) as info:
            c.execute(stmt_id, [3])
        assert info.value.code == 1235 and "shp" in info.value.message
        assert c.query("SELECT 1") == [(b"1",)]  # the connection goes on
        c.ok(b"\x02shp")
        assert c.execute(stmt_id, [3]) == [(b"v3",)]


def test_show_warnings_reads_the_clients_own_statement(pddm: DDM) -> None:
    """SHOW WARNINGS / SHOW ERRORS after a statement read that statement's diagnostics, which live on the node
    connection that ran it: a shared (pipelined) one has run other clients' statements since, so ddm runs the
    SELECT again for it; a pooled one is held until the next command. Several clients at once, text and prepared,
    pass-through and sharded: each sees its own warning, never another client's, never none."""
    _pipe_ready(pddm)
    errors: list[str] = []

    def client(cid: int) -> None:
        db = "shp" if cid % 3 == 2 else "app"
        c = _connect(pddm, database=db)
        for n in range(40):
            v = f"c{cid}n{n}x"
            sql = (f"SELECT v, CAST('{v}' AS INT) FROM kv WHERE k = {n}" if db == "shp"
                   else f"SELECT CAST('{v}' AS INT)")
            query_all(c, sql)
            w = query_all(c, "SHOW WARNINGS")
            if len(w) != 1 or v not in w[0][2]:
                errors.append(f"client {cid} ({db}) statement {n}: {w!r}")
            if n % 10 == 0:
                try:
                    query_all(c, f"SELECT * FROM no_such_table_{cid}")
                except pymysql.err.MySQLError:
                    pass
                e = query_all(c, "SHOW ERRORS")
                if len(e) != 1 or f"no_such_table_{cid}" not in e[0][2]:
                    errors.append(f"client {cid} ({db}) SHOW ERRORS {n}: {e!r}")
        c.close()

    def prepared(cid: int) -> None:
        with RawClient(pddm.port, user="ddm", password="ddm", db="app") as c:
            stmt_id, _, _ = c.prepare("SELECT CAST(? AS INT)")
            for n in range(40):
                v = f"p{cid}n{n}x"
                c.execute(stmt_id, [v], send_types=n == 0)
                w = c.query("SHOW WARNINGS")
                if len(w) != 1 or v.encode() not in w[0][2]:
                    errors.append(f"prepared client {cid} statement {n}: {w!r}")

    before = _stats(pddm)
    _run_clients(lambda cid: client(cid) if cid < 6 else prepared(cid), 8, errors)
    assert not errors, errors[:5]
    assert _stats(pddm)["pipelined"] - before["pipelined"] > 50  # the SELECTs did run on the pipes
