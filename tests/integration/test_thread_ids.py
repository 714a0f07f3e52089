"""Thread ids a client sees are ddm's (ddm.execute.threads): CONNECTION_ID() is the greeting's id, SHOW PROCESSLIST lists
ddm connections, KILL [QUERY] <ddm id> and COM_PROCESS_KILL act on ddm clients and their node statements."""

from __future__ import annotations

import threading
import time

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import query_all

pytestmark = pytest.mark.integration


def _code(exc: pytest.ExceptionInfo) -> int:
    return exc.value.args[0]


def _in_background(c: pymysql.connections.Connection, sql: str) -> tuple[threading.Thread, dict]:
    """Run `sql` on `c` in a thread; the outcome lands in the dict (error, seconds)."""
    out: dict = {}

    def run() -> None:
        start = time.monotonic()
        try:
            out["rows"] = query_all(c, sql)
        except pymysql.err.Error as exc:
            out["error"] = exc
        out["seconds"] = time.monotonic() - start

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)  # the statement is running on the node
    return t, out


def test_connection_id_is_the_greeting_id(connect):
    c = connect()
    own = c.server_thread_id[0]
    with c.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        assert cur.fetchall() == ((own,),)
        assert cur.description[0][:2] == ("CONNECTION_ID()", pymysql.constants.FIELD_TYPE.LONG)
        cur.execute("select connection_id() AS id")
        assert cur.fetchall() == ((own,),) and cur.description[0][0] == "id"
    assert connect().server_thread_id[0] != own


def test_show_processlist_lists_ddm_connections_of_the_user(connect):
    a, other, native = connect(), connect(), connect(user="native")
    rows = query_all(a, "SHOW PROCESSLIST")
    by_id = {r[0]: r for r in rows}
    me = by_id[a.server_thread_id[0]]
    assert me[1] == "ddm" and me[3] == "sbtest" and me[4] == "Query" and me[7] == "SHOW PROCESSLIST"
    assert by_id[other.server_thread_id[0]][4] == "Sleep"
    assert native.server_thread_id[0] not in by_id  # another user's connections are not shown
    full = query_all(a, "SHOW FULL PROCESSLIST")
    assert {r[0] for r in full} == set(by_id)


def test_com_process_info_answers_the_processlist(connect, direct):
    """COM_PROCESS_INFO (libmariadb's mysql_list_processes(); Connector/C's test_conc457) answers SHOW PROCESSLIST's
    9 columns, as MariaDB does, not "Unknown command"."""
    for c in (direct(), connect()):
        c._execute_command(pymysql.constants.COMMAND.COM_PROCESS_INFO, b"")
        result = pymysql.connections.MySQLResult(c)
        result.read()
        assert [f.name for f in result.fields] == ["Id", "User", "Host", "db", "Command", "Time", "State", "Info",
                                                   "Progress"]
        assert c.thread_id() in {r[0] for r in result.rows}
        assert query_all(c, "SELECT 1") == [(1,)]


def test_kill_query_interrupts_a_running_statement(connect):
    victim, killer = connect(), connect()
    t, out = _in_background(victim, "SELECT SLEEP(10)")
    killed_at = time.monotonic()
    with killer.cursor() as cur:
        cur.execute(f"KILL QUERY {victim.server_thread_id[0]}")
    t.join(5)
    assert not t.is_alive()
    assert isinstance(out.get("error"), pymysql.err.OperationalError), out
    assert out["error"].args[0] == 1317  # ER_QUERY_INTERRUPTED, as the node gives it
    assert time.monotonic() - killed_at < 1.0
    assert query_all(victim, "SELECT 1") == [(1,)]  # the connection survives a KILL QUERY


def test_kill_connection_drops_the_target_and_its_node_statement(connect, direct):
    victim, killer = connect(), connect()
    t, out = _in_background(victim, "SELECT SLEEP(9.5)")
    query_all(killer, f"KILL {victim.server_thread_id[0]}")
    t.join(5)
    assert not t.is_alive() and "error" in out, out
    with pytest.raises(pymysql.err.Error):
        query_all(victim, "SELECT 1")
    deadline = time.monotonic() + 3  # the node statement was killed too, not left running
    while any(r[7] == "SELECT SLEEP(9.5)" for r in query_all(direct(), "SHOW PROCESSLIST")):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    ids = {r[0] for r in query_all(killer, "SHOW PROCESSLIST")}
    assert victim.server_thread_id[0] not in ids and killer.server_thread_id[0] in ids


def test_kill_idle_connection_and_com_process_kill(connect):
    a, b, killer = connect(), connect(), connect()
    query_all(a, "BEGIN")
    query_all(a, "SELECT 1")
    query_all(killer, f"KILL CONNECTION {a.server_thread_id[0]}")
    killer.kill(b.server_thread_id[0])  # PyMySQL sends COM_PROCESS_KILL
    for victim in (a, b):
        with pytest.raises(pymysql.err.Error):
            query_all(victim, "SELECT 1")
    assert query_all(killer, "SELECT 1") == [(1,)]


def test_kill_errors_like_mariadb(connect):
    c, native = connect(), connect(user="native")
    with pytest.raises(pymysql.err.OperationalError) as exc:
        query_all(c, "KILL 4000000000")
    assert exc.value.args == (1094, "Unknown thread id: 4000000000")
    with pytest.raises(pymysql.err.OperationalError) as exc:
        query_all(c, f"KILL QUERY {native.server_thread_id[0]}")
    assert exc.value.args == (1095, f"You are not owner of thread {native.server_thread_id[0]}")
    with pytest.raises(pymysql.err.OperationalError) as exc:
        query_all(c, "KILL QUERY CONNECTION_ID()")
    assert _code(exc) == 1317
    with pytest.raises(pymysql.err.NotSupportedError) as exc:
        query_all(c, "KILL USER ddm")
    assert _code(exc) == 1235
    assert query_all(native, "SELECT 1") == [(1,)]  # nothing was killed so far
    with pytest.raises(pymysql.err.OperationalError) as exc:
        query_all(c, f"KILL {c.server_thread_id[0]}")
    assert _code(exc) == 1927  # Connection was killed
    with pytest.raises(pymysql.err.Error):
        query_all(c, "SELECT 1")
