"""Multi-statements whose statements ddm answers or tracks itself (SET, USE, SHOW, KILL, ...): answered statement by
statement as the node answers them, and only the SETs / USEs become session state (issue: `set @a = 1; insert ...`
was replayed whole on other pooled connections, running the INSERT again)."""

from __future__ import annotations

import threading

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import PHYS, query_all
from pymysql.constants import CLIENT

pytestmark = pytest.mark.integration

MULTI = {"client_flag": CLIENT.MULTI_STATEMENTS}


def answers(conn: pymysql.connections.Connection, sql: str) -> list[tuple]:
    """Every result of one COM_QUERY, in order: ("rows", rows) / ("ok", affected) / ("error", code); the chain
    ends at the first error, as the server ends it."""
    out: list[tuple] = []
    cur = conn.cursor()
    try:
        cur.execute(sql)
        while True:
            if cur.description is not None:
                out.append(("rows", [tuple(r) for r in cur.fetchall()]))
            else:
                out.append(("ok", cur.rowcount))
            if not cur.nextset():
                break
    except pymysql.err.Error as exc:
        out.append(("error", exc.args[0]))
    return out


def both(connect, direct, db: str = "sbtest"):
    return connect(database=db, **MULTI), direct(db, **MULTI)


@pytest.fixture
def table(direct):
    d = direct("sbtest")
    query_all(d, "DROP TABLE IF EXISTS ms_t")
    query_all(d, "CREATE TABLE ms_t (id INT)")
    yield "ms_t"
    query_all(d, "DROP TABLE IF EXISTS ms_t")


def test_set_then_select_answers_both(connect, direct):
    via, node = both(connect, direct)
    sql = "set @a = 1; select 1; select @a"
    assert answers(via, sql) == answers(node, sql) == [("ok", 0), ("rows", [(1,)]), ("rows", [(1,)])]
    assert query_all(via, "select @a + 1") == [(2,)]


def test_set_then_insert_runs_the_insert_once(connect, direct, table):
    via = connect(**MULTI)
    assert answers(via, f"set @a = 7; insert into {table} values (1)") == [("ok", 0), ("ok", 1)]
    # other clients use the pool, the same client's session is replayed elsewhere: the INSERT must not run again
    others = [connect() for _ in range(4)]
    for _ in range(5):
        for o in others:
            assert query_all(o, "select 1") == [(1,)]
        assert query_all(via, "select @a") == [(7,)]
    assert query_all(direct("sbtest"), f"select count(*) from {table}") == [(1,)]


def test_use_then_select_database(connect, direct):
    via = connect(**MULTI)
    got = answers(via, "USE app; select database(); select count(*) from information_schema.schemata "
                       "where schema_name = 'nope'")
    assert got == [("ok", 0), ("rows", [("app",)]), ("rows", [(0,)])]
    assert query_all(via, "select database()") == [("app",)]
    node = direct("sbtest", **MULTI)
    assert answers(node, f"USE {PHYS['app']}; select database()") == [("ok", 0), ("rows", [(PHYS["app"],)])]


def test_show_databases_like_then_select(connect, direct):
    via, node = both(connect, direct)
    sql = "SHOW DATABASES LIKE 'no_such_db_x'; select 2"
    assert answers(via, sql) == answers(node, sql) == [("rows", []), ("rows", [(2,)])]


def test_kill_then_select_kills(connect):
    victim = connect()
    victim_id = query_all(victim, "select connection_id()")[0][0]
    via = connect(**MULTI)
    assert answers(via, f"KILL {victim_id}; select 1") == [("ok", 0), ("rows", [(1,)])]
    with pytest.raises(pymysql.err.OperationalError):
        query_all(victim, "select 1")


def test_error_ends_the_chain(connect, direct, table):
    via, node = both(connect, direct)
    sql = f"insert into {table} values (5); select * from no_such_table_ms; insert into {table} values (6)"
    assert answers(via, "set @x = 1; " + sql) == answers(node, "set @x = 1; " + sql)
    assert answers(via, "set @x = 1; " + sql)[:2] == [("ok", 0), ("ok", 1)]
    assert answers(via, "set @x = 1; " + sql)[2][0] == "error"
    # the statement after the error ran on neither side
    assert query_all(direct("sbtest"), f"select id, count(*) from {table} group by id order by id") == [(5, 4)]  # four runs above, each inserted 5 and stopped
    assert query_all(via, "select 3") == [(3,)]  # the connection goes on


def test_set_inside_whole_multi_statement_is_session_state(connect, direct):
    via, node = both(connect, direct)
    sql = "select 1; set @m = 42; select @m"
    assert answers(via, sql) == answers(node, sql) == [("rows", [(1,)]), ("ok", 0), ("rows", [(42,)])]
    for _ in range(3):  # wherever the next statements land, @m follows the session
        assert query_all(via, "select @m") == [(42,)]


def test_many_clients_mixed(connect, direct, table):
    """Concurrent clients each with their own variable: each sees its own value, rows inserted once each."""
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            c = connect(**MULTI)
            for i in range(10):
                got = answers(c, f"set @v = {n * 100 + i}; select @v; insert into {table} values ({n})")
                assert got == [("ok", 0), ("rows", [(n * 100 + i,)]), ("ok", 1)], got
                assert query_all(c, "select @v") == [(n * 100 + i,)]
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    rows = query_all(direct("sbtest"), f"select id, count(*) from {table} group by id order by id")
    assert rows == [(n, 10) for n in range(4)]


def test_multi_statements_not_enabled(connect):
    via = connect()  # no CLIENT_MULTI_STATEMENTS
    assert answers(via, "USE app; select 1") == [("error", 1064)]
    assert query_all(via, "select database()") == [("sbtest",)]


@pytest.fixture(scope="module")
def sharded(node0, tmp_path_factory):
    from ddm_fixtures import create_two_level_tables, ddm_config, free_port, start_ddm, two_level_database

    nodes = {"na": node0.conf(), "nb": node0.conf()}
    dbs = {"msh": two_level_database(["na", "nb"], "msh", "acct", "id")}
    create_two_level_tables(node0, 2, "msh", "acct", "id INT PRIMARY KEY, bal INT NOT NULL")
    d = start_ddm(tmp_path_factory.mktemp("msh"), ddm_config(free_port(), nodes, dbs), mode="thread")
    try:
        yield d
    finally:
        d.stop()


def test_sharded_multi_statement_runs_each_statement(sharded):
    from ddm_fixtures import NO_TLS

    c = pymysql.connect(host="127.0.0.1", port=sharded.port, user="ddm", password="ddm", database="msh",
                        autocommit=True, read_timeout=30, **NO_TLS, **MULTI)
    try:
        values = ", ".join(f"({i}, {i})" for i in range(20))
        got = answers(c, f"delete from acct; insert into acct (id, bal) values {values}; set @s = 1; "
                         "select count(*), sum(bal) from acct; select id from acct where id = 7")
        assert got == [("ok", got[0][1]), ("ok", 20), ("ok", 0), ("rows", [(20, 190)]), ("rows", [(7,)])]
        assert query_all(c, "select @s") == [(1,)]
        got = answers(c, "select id from acct where id = 3; select * from no_such_table; select 1")
        assert got[0] == ("rows", [(3,)]) and got[1][0] == "error" and len(got) == 2
        assert query_all(c, "select count(*) from acct") == [(20,)]
    finally:
        c.close()


def test_set_reading_a_global_is_a_session_statement(connect, direct):
    via, node = both(connect, direct)
    sql = "SET @mc = @@global.max_connections; select @mc > 0"
    assert answers(via, sql) == answers(node, sql) == [("ok", 0), ("rows", [(1,)])]
    # still refused: 1227 for a user without the admin privilege (ddm.protect.privileges), else 1235 (never replayed)
    assert answers(via, "SET GLOBAL max_connections = 1000")[0] in (("error", 1227), ("error", 1235))


def test_create_database_inside_a_multi_statement_is_refused(connect, direct):
    via = connect(**MULTI)
    got = answers(via, "select 1; create database ms_never_made; select 2")
    assert got == [("rows", [(1,)]), ("error", 1235)]
    # on the node itself: ddm's SHOW DATABASES lists its configuration, not what the node holds
    assert query_all(direct("sbtest"), "show databases like 'ms_never_made'") == []


def test_compound_statement_bodies_are_not_cut(connect, direct):
    """A multi-statement holding a stored program (node-mysql2's test-binary-multiple-results sends
    `DROP PROCEDURE IF EXISTS p; CREATE PROCEDURE p() BEGIN ...; END`): the `;` inside BEGIN ... END (and its CASE,
    IF, LOOP blocks) do not end the statement; through ddm it was cut there (1064 "near '' at line 3")."""
    via, node = both(connect, direct)
    for conn, name in ((node, "ms_sp_direct"), (via, "ms_sp_ddm")):
        sql = (f"SET @ms_sp = 1; DROP PROCEDURE IF EXISTS {name};\nCREATE PROCEDURE {name}()\nBEGIN\n"
               "SELECT CASE WHEN @ms_sp = 1 THEN 'a' END AS c; IF @ms_sp = 1 THEN SELECT 2; END IF;\n"
               "CASE @ms_sp WHEN 1 THEN SELECT 3; ELSE SELECT 4; END CASE;\nEND; SELECT 9")
        assert answers(conn, sql) == [("ok", 0), ("ok", 0), ("ok", 0), ("rows", [(9,)])]
        assert answers(conn, f"CALL {name}()") == [("rows", [("a",)]), ("rows", [(2,)]), ("rows", [(3,)]), ("ok", 0)]
        assert answers(conn, "BEGIN NOT ATOMIC SELECT 5; SELECT 6; END; SELECT 7") == [
            ("rows", [(5,)]), ("rows", [(6,)]), ("ok", 0), ("rows", [(7,)])]
        query_all(conn, f"DROP PROCEDURE {name}")
