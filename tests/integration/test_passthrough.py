"""Pass-through proxy with real clients: PyMySQL (both auth plugins, TLS or not), a raw protocol client for the
commands PyMySQL cannot send, the mariadb CLI and sysbench."""

from __future__ import annotations

import hashlib
import re
import shutil
import ssl
import struct
import subprocess
import time

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import (
    NO_TLS,
    PHYS,
    TLS,
    RawClient,
    ServerError,
    column_name,
    native_scramble,
    query_all,
    sha2_scramble,
)
from pymysql.constants import CLIENT

pytestmark = pytest.mark.integration

USERS = [("ddm", "ddm"), ("native", "nativepw")]


def _errcode(exc: pymysql.err.Error) -> int:
    return exc.args[0]


# ---------------------------------------------------------------------------------------------- auth and TLS


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
@pytest.mark.parametrize("user,password", USERS, ids=["caching_sha2", "native"])
def test_login_each_plugin_with_and_without_tls(connect, user, password, tls):
    c = connect(user=user, password=password, **(TLS if tls else NO_TLS))
    assert isinstance(c._sock, ssl.SSLSocket) is tls
    assert query_all(c, "SELECT 1 + 1") == [(2,)]
    assert "ddm" in c.get_server_info()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
@pytest.mark.parametrize("user", ["ddm", "native", "nobody"])
def test_wrong_password_is_1045(connect, user, tls):
    with pytest.raises(pymysql.err.OperationalError) as ei:
        connect(user=user, password="wrong", **(TLS if tls else NO_TLS))
    assert _errcode(ei.value) == 1045
    assert f"Access denied for user '{user}'" in ei.value.args[1]


def test_unknown_database_is_1049(connect):
    with pytest.raises(pymysql.err.OperationalError) as ei:
        connect(database="nosuch")
    assert _errcode(ei.value) == 1049
    assert "nosuch" in ei.value.args[1]


def test_physical_database_name_is_not_a_logical_one(connect):
    with pytest.raises(pymysql.err.OperationalError) as ei:
        connect(database=PHYS["app"])
    assert _errcode(ei.value) == 1049


# ---------------------------------------------------------------------------------------------- databases


def test_show_databases_lists_logical_names(connect):
    c = connect()
    names = {r[0] for r in query_all(c, "SHOW DATABASES")}
    assert {"sbtest", "app"} <= names
    assert not names & set(PHYS.values())
    assert query_all(c, "SHOW DATABASES LIKE 'ap%'") == [("app",)]


def test_use_switches_logical_database(connect, direct):
    c = connect(database="sbtest")
    query_all(c, "USE app")
    query_all(c, "CREATE OR REPLACE TABLE pt_use (id INT PRIMARY KEY)")
    query_all(c, "INSERT INTO pt_use VALUES (7)")
    assert query_all(direct("app"), "SELECT id FROM pt_use") == [(7,)]  # landed in app_phys
    query_all(c, "USE `sbtest`")
    with pytest.raises(pymysql.err.ProgrammingError) as ei:
        query_all(c, "SELECT id FROM pt_use")
    assert _errcode(ei.value) == 1146
    with pytest.raises(pymysql.err.OperationalError) as ei:
        query_all(c, "USE nosuch")
    assert _errcode(ei.value) == 1049
    assert query_all(c, "SELECT 1") == [(1,)]  # still usable, still in sbtest
    query_all(direct("app"), "DROP TABLE pt_use")


def test_database_function_returns_logical_name(connect):
    c = connect(database="app")
    assert query_all(c, "SELECT DATABASE()") == [("app",)]


# ---------------------------------------------------------------------------------------------- DML, DDL


def test_crud(connect, direct):
    c = connect()
    query_all(c, "CREATE OR REPLACE TABLE pt_crud (id INT PRIMARY KEY, name VARCHAR(20), n INT)")
    with c.cursor() as cur:
        assert cur.executemany("INSERT INTO pt_crud VALUES (%s, %s, %s)",
                               [(i, f"row{i}", i * 10) for i in range(1, 11)]) == 10
        assert cur.execute("UPDATE pt_crud SET n = n + 1 WHERE id <= 3") == 3
        assert cur.execute("DELETE FROM pt_crud WHERE id > 8") == 2
        cur.execute("INSERT INTO pt_crud (id, name) VALUES (100, 'ünïcode ✓')")
    assert query_all(c, "SELECT COUNT(*), SUM(n) FROM pt_crud")[0][0] == 9
    assert query_all(c, "SELECT n FROM pt_crud WHERE id IN (1, 4) ORDER BY id") == [(11,), (40,)]
    assert query_all(c, "SELECT name FROM pt_crud WHERE id = 100") == [("ünïcode ✓",)]
    assert query_all(direct(), "SELECT COUNT(*) FROM pt_crud") == [(9,)]
    query_all(c, "ALTER TABLE pt_crud ADD COLUMN extra INT DEFAULT 5")
    assert query_all(c, "SELECT extra FROM pt_crud WHERE id = 1") == [(5,)]
    query_all(c, "DROP TABLE pt_crud")
    assert query_all(direct(), "SHOW TABLES LIKE 'pt_crud'") == []


def test_insert_id_and_affected_rows(connect):
    c = connect()
    query_all(c, "CREATE OR REPLACE TABLE pt_ai (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    with c.cursor() as cur:
        cur.execute("INSERT INTO pt_ai (v) VALUES (1), (2), (3)")
        assert cur.lastrowid == 1 and cur.rowcount == 3
        cur.execute("INSERT INTO pt_ai (v) VALUES (4)")
        assert cur.lastrowid == 4
    query_all(c, "DROP TABLE pt_ai")


# ---------------------------------------------------------------------------------------------- transactions


@pytest.fixture
def txn_table(connect):
    c = connect()
    query_all(c, "CREATE OR REPLACE TABLE pt_txn (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
    yield "pt_txn"
    query_all(c, "DROP TABLE IF EXISTS pt_txn")


def test_rollback_discards_and_commit_keeps(connect, txn_table):
    a, b = connect(), connect()
    query_all(a, "BEGIN")
    query_all(a, "INSERT INTO pt_txn VALUES (1, 1), (2, 2)")
    assert query_all(a, "SELECT COUNT(*) FROM pt_txn") == [(2,)]
    assert query_all(b, "SELECT COUNT(*) FROM pt_txn") == [(0,)]  # uncommitted rows are invisible
    assert a.get_autocommit() is True and a.server_status & 1  # SERVER_STATUS_IN_TRANS
    query_all(a, "ROLLBACK")
    assert query_all(a, "SELECT COUNT(*) FROM pt_txn") == [(0,)]
    query_all(a, "START TRANSACTION")
    query_all(a, "INSERT INTO pt_txn VALUES (3, 3)")
    assert query_all(b, "SELECT COUNT(*) FROM pt_txn") == [(0,)]
    query_all(a, "COMMIT")
    assert not a.server_status & 1
    assert query_all(b, "SELECT id FROM pt_txn") == [(3,)]


def test_transaction_survives_many_statements_and_other_clients(connect, txn_table):
    a = connect()
    others = [connect() for _ in range(3)]
    query_all(a, "BEGIN")
    for i in range(30):
        query_all(a, "INSERT INTO pt_txn VALUES (%s, %s)", (i, i))
        query_all(others[i % 3], "SELECT COUNT(*) FROM pt_txn")  # other clients churn the pool meanwhile
    # CONNECTION_ID() is ddm's id; the node's thread id shows which data-node connection ran the statement
    cid = query_all(a, "SELECT @@pseudo_thread_id")
    assert query_all(a, "SELECT @@pseudo_thread_id") == cid  # pinned to one data-node connection
    assert query_all(others[0], "SELECT COUNT(*) FROM pt_txn") == [(0,)]
    a.rollback()
    assert query_all(others[0], "SELECT COUNT(*) FROM pt_txn") == [(0,)]


def test_autocommit_off_session(connect, txn_table):
    a, b = connect(autocommit=False), connect()
    assert query_all(a, "SELECT @@autocommit") == [(0,)]
    query_all(a, "INSERT INTO pt_txn VALUES (1, 1)")
    assert query_all(b, "SELECT COUNT(*) FROM pt_txn") == [(0,)]
    a.rollback()
    assert query_all(a, "SELECT COUNT(*) FROM pt_txn") == [(0,)]
    query_all(a, "INSERT INTO pt_txn VALUES (2, 2)")
    a.commit()
    assert query_all(b, "SELECT id FROM pt_txn") == [(2,)]
    # autocommit stays off after COMMIT: the next write is again a pending transaction
    query_all(a, "INSERT INTO pt_txn VALUES (3, 3)")
    for _ in range(5):
        query_all(b, "SELECT 1")
    assert query_all(b, "SELECT COUNT(*) FROM pt_txn") == [(1,)]
    a.rollback()
    a.autocommit(True)
    query_all(a, "INSERT INTO pt_txn VALUES (4, 4)")
    assert query_all(b, "SELECT COUNT(*) FROM pt_txn") == [(2,)]


def test_no_backslash_escapes_status_survives_sets_ddm_answers_itself(connect):
    """A client escapes string literals by the status flag SERVER_STATUS_NO_BACKSLASH_ESCAPES; the node reports it
    after SET sql_mode, and the OK packets ddm builds itself (SET NAMES, SET autocommit) must keep reporting it, or
    a quote escaped with a backslash ends the literal on the node (mysqlclient's suite found this)."""
    c = connect()
    with c.cursor() as cur:
        cur.execute("SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        assert c.server_status & 0x0200
        cur.execute("SET autocommit = 0")  # answered by ddm without a round trip
        assert c.server_status & 0x0200
        cur.execute("SET NAMES utf8mb4")
        assert c.server_status & 0x0200
        c.autocommit(True)
        cur.execute("SELECT %s", ("a\\' OR 1=1 -- ",))  # PyMySQL escapes by the flag: '' not \'
        assert cur.fetchall() == (("a\\' OR 1=1 -- ",),)
        cur.execute("SET sql_mode = ''")
        assert not c.server_status & 0x0200
        cur.execute("SET autocommit = 1")
        assert not c.server_status & 0x0200


def test_set_autocommit_then_rollback_with_pool_churn(connect, txn_table):
    a = connect()
    query_all(a, "SET autocommit = 0")
    query_all(a, "INSERT INTO pt_txn VALUES (10, 10)")
    for _ in range(3):
        connect().close()
    query_all(a, "ROLLBACK")
    assert query_all(a, "SELECT COUNT(*) FROM pt_txn") == [(0,)]
    query_all(a, "SET autocommit = 1")


# ---------------------------------------------------------------------------------------------- session state


def test_session_state_follows_client_across_pooled_connections(connect):
    a, b = connect(), connect()
    default_mode = query_all(b, "SELECT @@SESSION.sql_mode")[0][0]
    query_all(a, "SET @x = 42")
    query_all(a, "SET SESSION sql_mode = 'ANSI_QUOTES'")
    query_all(a, "SET NAMES latin1")
    seen = set()
    for i in range(40):
        # b grabs whatever connection is free and pins it in a transaction; a must run elsewhere, state intact
        if i % 2 == 0:
            query_all(b, "BEGIN")
            query_all(b, "SELECT 1")
        assert query_all(a, "SELECT @x, @@SESSION.sql_mode, @@character_set_client") == [
            (42, "ANSI_QUOTES", "latin1")]
        seen.add(query_all(a, "SELECT @@pseudo_thread_id")[0][0])  # the data-node connection's thread id
        if i % 2 == 0:
            query_all(b, "COMMIT")
        assert query_all(b, "SELECT @x, @@SESSION.sql_mode") == [(None, default_mode)]
    assert len(seen) >= 2, "a never moved to another data-node connection: the test proved nothing"


def test_session_state_after_failed_set(connect):
    a = connect()
    query_all(a, "SET @y = 'kept'")
    with pytest.raises(pymysql.err.MySQLError):
        query_all(a, "SET SESSION no_such_variable = 1")
    for _ in range(5):
        connect().close()
    assert query_all(a, "SELECT @y") == [("kept",)]


def test_set_statement_for_answers_as_its_statement_and_leaves_no_session_state(connect, direct):
    """MariaDB's SET STATEMENT var = value FOR <statement>: the statement's own answer comes back, and nothing is
    replayed later (replaying it on another pooled connection would run the statement again)."""
    with direct().cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS setstmt")
        cur.execute("CREATE TABLE setstmt (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
    a = connect()
    assert query_all(a, "SET STATEMENT max_statement_time = 5 FOR SELECT 7, @@max_statement_time") == [(7, 5.0)]
    assert query_all(a, "SELECT @@max_statement_time") == [(0.0,)]
    with a.cursor() as cur:
        assert cur.execute("SET STATEMENT sql_mode = '' FOR INSERT INTO setstmt (v) VALUES (1)") == 1
    for _ in range(6):  # make a move to other pooled connections: a replayed INSERT would add rows
        b = connect()
        query_all(b, "BEGIN")
        query_all(a, "SELECT 1")
        b.close()
    assert query_all(a, "SELECT COUNT(*) FROM setstmt") == [(1,)]


def test_show_warnings_after_a_statement_and_after_the_hold_expires(connect):
    """The connection holding a statement's warnings waits DIAGNOSTICS_HOLD (2 s) for SHOW WARNINGS; after that it
    goes back to the pool and SHOW WARNINGS shows nothing (never another client's diagnostics). (A pipelined
    SELECT holds no connection: SHOW WARNINGS runs it again, however late.)"""
    a, b = connect(), connect()
    query_all(a, "SELECT CAST('w1x' AS INT)")
    query_all(b, "SELECT CAST('other' AS INT)")
    assert [r[2] for r in query_all(a, "SHOW WARNINGS")] == ["Truncated incorrect INTEGER value: 'w1x'"]
    assert query_all(a, "SHOW COUNT(*) WARNINGS") == [(0,)]  # of SHOW WARNINGS itself
    query_all(a, "DO CAST('w2x' AS INT)")  # not a SELECT: never pipelined, so its connection is what holds them
    assert [r[2] for r in query_all(a, "SHOW WARNINGS")] == ["Truncated incorrect INTEGER value: 'w2x'"]
    query_all(a, "DO CAST('w3x' AS INT)")
    time.sleep(2.3)
    query_all(b, "DO CAST('other2' AS INT)")  # b may now get the connection a held
    assert query_all(a, "SHOW WARNINGS") == []


def test_last_insert_id_and_found_rows_are_the_clients_own_under_concurrency(connect, direct):
    """SELECT LAST_INSERT_ID() and SELECT FOUND_ROWS() read per-connection state of the node: with pooled
    connections shared by many clients they must still answer about the client's own last statement."""
    import threading

    with direct().cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS lii")
        cur.execute("CREATE TABLE lii (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    errors: list[str] = []

    def client(t: int) -> None:
        c = connect()
        with c.cursor() as cur:
            for i in range(60):
                cur.execute("INSERT INTO lii (v) VALUES (%s)", (i,))
                rid = cur.lastrowid
                cur.execute("SELECT LAST_INSERT_ID()")
                got = cur.fetchone()[0]
                if got != rid:
                    errors.append(f"client {t}: LAST_INSERT_ID() {got} after inserting id {rid}")
                n = (t * 7 + i) % 40 + 1
                cur.execute(f"SELECT SQL_CALC_FOUND_ROWS seq FROM seq_1_to_{n} LIMIT 1")
                cur.fetchall()
                cur.execute("SELECT FOUND_ROWS()")
                found = cur.fetchone()[0]
                if found != n:
                    errors.append(f"client {t}: FOUND_ROWS() {found}, expected {n}")
                if i % 10 == 0:
                    cur.execute("SELECT 1")  # something in between: LAST_INSERT_ID() is what ddm kept
                    cur.execute("SELECT LAST_INSERT_ID()")
                    if cur.fetchone()[0] != rid:
                        errors.append(f"client {t}: LAST_INSERT_ID() after another statement")

    threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors[:5]


def test_set_global_is_refused(connect):
    a = connect()
    with pytest.raises(pymysql.err.MySQLError) as info:
        query_all(a, "SET GLOBAL max_connections = 1000")
    # 1227 for a user without the admin privilege (ddm.protect.privileges), else 1235: never replayed on node connections
    assert info.value.args[0] in (1227, 1235)
    with pytest.raises(pymysql.err.MySQLError) as info:
        query_all(a, "SET @@global.max_connections = 1000, @x = 1")
    assert info.value.args[0] in (1227, 1235)
    query_all(a, "SET @global = 3")  # a user variable named global is fine
    assert query_all(a, "SELECT @global") == [(3,)]


def test_metadata_of_a_renamed_database_shows_the_logical_name(connect, direct):
    """`app` is n0.app_phys: SHOW TABLES, information_schema and DESCRIBE speak of `app`, as JDBC's
    DatabaseMetaData and ORMs expect (they look their tables up under the current database's name)."""
    with direct("app").cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS meta_t")
        cur.execute("CREATE TABLE meta_t (id INT PRIMARY KEY, name VARCHAR(10))")
    a = connect("app")
    with a.cursor() as cur:
        cur.execute("SHOW TABLES")
        assert cur.description[0][0] == "Tables_in_app"
        assert ("meta_t",) in cur.fetchall()
    assert query_all(a, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 'meta_t'") == [("app", "meta_t")]
    assert query_all(a, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                        "AND TABLE_NAME = 'meta_t' ORDER BY ORDINAL_POSITION") == [("id",), ("name",)]
    assert [r[0] for r in query_all(a, "DESCRIBE meta_t")] == ["id", "name"]
    assert query_all(a, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app_phys'") == [(0,)]


# ---------------------------------------------------------------------------------------------- multi-statements


def test_multi_statements_two_result_sets(connect, direct):
    c = connect(client_flag=CLIENT.MULTI_STATEMENTS)
    with c.cursor() as cur:
        cur.execute("SELECT 1 AS a; SELECT 2 AS b, 3 AS c")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((2, 3),)
        assert not cur.nextset()
        cur.execute("CREATE OR REPLACE TABLE pt_multi (id INT); INSERT INTO pt_multi VALUES (1), (2); "
                    "SELECT COUNT(*) FROM pt_multi")
        sets = 1
        while cur.nextset():
            sets += 1
            rows = cur.fetchall()
        assert sets == 3 and rows == ((2,),)
    assert query_all(direct(), "SELECT COUNT(*) FROM pt_multi") == [(2,)]
    query_all(c, "DROP TABLE pt_multi")


def test_multi_statement_error_in_second(connect):
    c = connect(client_flag=CLIENT.MULTI_STATEMENTS)
    with c.cursor() as cur:
        cur.execute("SELECT 1; SELECT * FROM pt_nosuch_table")
        with pytest.raises(pymysql.err.ProgrammingError) as ei:
            cur.nextset()
        assert _errcode(ei.value) == 1146
    assert query_all(c, "SELECT 5") == [(5,)]


def test_stored_procedure_without_multi_statements(connect):
    c = connect()  # no CLIENT_MULTI_STATEMENTS: a compound body is still one statement
    query_all(c, "DROP PROCEDURE IF EXISTS pt_proc")
    query_all(c, "CREATE PROCEDURE pt_proc(IN n INT) BEGIN SELECT n + 1 AS r; SELECT n + 2 AS s; END")
    with c.cursor() as cur:
        cur.execute("CALL pt_proc(1)")
        assert cur.fetchall() == ((2,),)
        assert cur.nextset() and cur.fetchall() == ((3,),)
    assert query_all(c, "SELECT 1") == [(1,)]
    query_all(c, "DROP PROCEDURE pt_proc")


def test_stored_procedure_call_multi_results(connect):
    c = connect(client_flag=CLIENT.MULTI_STATEMENTS)
    query_all(c, "DROP PROCEDURE IF EXISTS pt_proc2")
    query_all(c, "CREATE PROCEDURE pt_proc2() BEGIN SELECT 1 AS a; SELECT 2 AS b; END")
    c2 = connect()  # CALL itself needs no multi-statements; its results come as a multi-result
    with c2.cursor() as cur:
        cur.execute("CALL pt_proc2()")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset() and cur.fetchall() == ((2,),)
    assert query_all(c2, "SELECT 3") == [(3,)]
    query_all(c, "DROP PROCEDURE pt_proc2")


# ---------------------------------------------------------------------------------------------- errors


def test_node_errors_keep_code_sqlstate_message(ddm_proc, connect, direct):
    c, d = connect(), direct()
    query_all(c, "CREATE OR REPLACE TABLE pt_err (id INT PRIMARY KEY)")
    query_all(c, "INSERT INTO pt_err VALUES (1)")
    for sql in ("SELECT * FROM pt_nosuch_table", "INSERT INTO pt_err VALUES (1)", "SELEC 1"):
        with pytest.raises(pymysql.err.MySQLError) as via_ddm:
            query_all(c, sql)
        with pytest.raises(pymysql.err.MySQLError) as via_node:
            query_all(d, sql)
        assert type(via_ddm.value) is type(via_node.value)
        assert via_ddm.value.args == via_node.value.args
    with RawClient(ddm_proc.port) as raw:
        for sql, code, state in (("SELECT * FROM pt_nosuch_table", 1146, "42S02"),
                                 ("INSERT INTO pt_err VALUES (1)", 1062, "23000"),
                                 ("SELEC 1", 1064, "42000")):
            with pytest.raises(ServerError) as ei:
                raw.query(sql)
            assert (ei.value.code, ei.value.sqlstate) == (code, state)
        assert "Duplicate entry '1' for key 'PRIMARY'" in str(ei.value) or ei.value.code == 1064
        assert raw.query("SELECT 1") == [(b"1",)]
    query_all(c, "DROP TABLE pt_err")


# ---------------------------------------------------------------------------------------------- big data


def test_large_result_100k_rows(connect):
    c = connect()
    with c.cursor(pymysql.cursors.SSCursor) as cur:
        cur.execute("SELECT seq, CONCAT('row-', seq) FROM seq_1_to_100000")
        n = total = 0
        for seq, text in cur:
            n += 1
            total += seq
            assert text == f"row-{seq}"
    assert n == 100_000 and total == 100_000 * 100_001 // 2
    assert query_all(c, "SELECT COUNT(*) FROM seq_1_to_100000") == [(100_000,)]


def test_20mib_blob_round_trip(connect, direct):
    blob = hashlib.sha256(b"seed").digest() * (20 * 1024 * 1024 // 32) + b"tail"
    digest = hashlib.md5(blob).hexdigest()
    c = connect(max_allowed_packet=64 * 1024 * 1024)
    assert query_all(c, "SELECT MD5(%s)", (blob,)) == [(digest,)]
    echoed = query_all(c, "SELECT %s", (blob,))[0][0]
    assert echoed == blob
    query_all(c, "CREATE OR REPLACE TABLE pt_blob (id INT PRIMARY KEY, b LONGBLOB)")
    query_all(c, "INSERT INTO pt_blob VALUES (1, %s)", (blob,))
    assert query_all(direct(), "SELECT LENGTH(b), MD5(b) FROM pt_blob") == [(len(blob), digest)]
    assert query_all(c, "SELECT b FROM pt_blob WHERE id = 1")[0][0] == blob
    query_all(c, "DROP TABLE pt_blob")


# ---------------------------------------------------------------------------------------------- other commands


def test_ping_and_select_db(connect, direct):
    c = connect()
    c.ping(reconnect=False)
    query_all(direct("app"), "CREATE OR REPLACE TABLE pt_initdb (v INT)")
    query_all(direct("app"), "INSERT INTO pt_initdb VALUES (3)")
    c.select_db("app")  # COM_INIT_DB
    assert query_all(c, "SELECT v FROM pt_initdb") == [(3,)]
    with pytest.raises(pymysql.err.OperationalError) as ei:
        c.select_db("nosuch")
    assert _errcode(ei.value) == 1049
    assert query_all(c, "SELECT v FROM pt_initdb") == [(3,)]  # still in app
    c.select_db("sbtest")
    with pytest.raises(pymysql.err.ProgrammingError):
        query_all(c, "SELECT v FROM pt_initdb")
    query_all(direct("app"), "DROP TABLE pt_initdb")


def test_com_field_list(ddm_proc, direct):
    query_all(direct(), "CREATE OR REPLACE TABLE pt_fl (id INT, name VARCHAR(10), note TEXT)")
    with RawClient(ddm_proc.port) as raw:
        raw.command(b"\x04pt_fl\0")
        cols = []
        while True:
            p = raw.read_packet()
            if p[0] == 0xFE and len(p) < 9:
                break
            assert p[0] != 0xFF, p
            cols.append(column_name(p))
        assert cols == ["id", "name", "note"]
        raw.command(b"\x04pt_nosuch_table\0")
        p = raw.read_packet()
        assert p[0] == 0xFF and struct.unpack_from("<H", p, 1)[0] == 1146
        assert raw.query("SELECT 2") == [(b"2",)]
    query_all(direct(), "DROP TABLE pt_fl")


def test_com_statistics(ddm_proc):
    with RawClient(ddm_proc.port) as raw:
        raw.command(b"\x09")
        text = raw.read_packet().decode()
        assert re.match(r"Uptime: \d+ +Threads: \d+ +Questions: \d+", text), text
        assert raw.query("SELECT 3") == [(b"3",)]


def test_com_reset_connection(ddm_proc):
    with RawClient(ddm_proc.port) as raw:
        raw.query("SET @r = 5")
        raw.query("SET SESSION sql_mode = 'ANSI_QUOTES'")
        stmt, _, _ = raw.prepare("SELECT ? + 1")
        assert raw.execute(stmt, [1]) == [(2,)]
        raw.query("BEGIN")
        raw.ok(b"\x1f")
        assert raw.query("SELECT @r, @@in_transaction") == [(None, b"0")]
        assert raw.query("SELECT @@SESSION.sql_mode")[0][0] != b"ANSI_QUOTES"
        with pytest.raises(ServerError) as ei:
            raw.execute(stmt, [1])
        assert ei.value.code == 1243
        assert raw.query("SELECT DATABASE() IS NOT NULL") == [(b"1",)]  # the database is kept


def test_com_reset_connection_rolls_back(ddm_proc, connect, txn_table):
    with RawClient(ddm_proc.port) as raw:
        raw.query("BEGIN")
        raw.query("INSERT INTO pt_txn VALUES (1, 1)")
        raw.ok(b"\x1f")
        assert raw.query("SELECT COUNT(*) FROM pt_txn") == [(b"0",)]
    assert query_all(connect(), "SELECT COUNT(*) FROM pt_txn") == [(0,)]


def change_user_payload(raw: RawClient, user: str, password: str, db: str | None, plugin: bytes) -> bytes:
    scr = (sha2_scramble if plugin == b"caching_sha2_password" else native_scramble)(password.encode(), raw.salt)
    return (b"\x11" + user.encode() + b"\0" + bytes([len(scr)]) + scr + (db or "").encode() + b"\0"
            + struct.pack("<H", 45) + plugin + b"\0")


@pytest.mark.parametrize("plugin", [b"mysql_native_password", b"caching_sha2_password"])
def test_com_change_user(ddm_proc, plugin):
    with RawClient(ddm_proc.port, user="native", password="nativepw", db="sbtest") as raw:
        raw.query("SET @before = 1")
        raw.query("BEGIN")
        raw.command(change_user_payload(raw, "ddm", "ddm", "app", plugin))
        raw.finish_auth("ddm")
        assert raw.query("SELECT @before, @@in_transaction") == [(None, b"0")]
        assert raw.query("SELECT 1") == [(b"1",)]
        raw.command(change_user_payload(raw, "native", "nativepw", "sbtest", plugin))
        raw.finish_auth("nativepw")
        assert raw.query("SELECT 2") == [(b"2",)]
        raw.command(change_user_payload(raw, "native", "wrong", None, plugin))
        with pytest.raises(ServerError) as ei:
            raw.finish_auth("wrong")
        assert ei.value.code == 1045
    with RawClient(ddm_proc.port) as raw:
        raw.command(change_user_payload(raw, "native", "nativepw", "nosuch", b"mysql_native_password"))
        with pytest.raises(ServerError) as ei:
            raw.finish_auth("nativepw")
        assert ei.value.code == 1049


# ---------------------------------------------------------------------------------------------- prepared statements


def test_prepared_statements_raw(ddm_proc, connect, direct):
    query_all(direct(), "CREATE OR REPLACE TABLE pt_ps (id BIGINT PRIMARY KEY, name VARCHAR(20))")
    churn = [connect() for _ in range(3)]
    with RawClient(ddm_proc.port) as raw:
        ins, ncols, nparams = raw.prepare("INSERT INTO pt_ps VALUES (?, ?)")
        assert (ncols, nparams) == (0, 2)
        sel, ncols, nparams = raw.prepare("SELECT id, name, ? + 1 FROM pt_ps WHERE id >= ? ORDER BY id")
        assert (ncols, nparams) == (3, 2)
        for i in range(20):
            raw.execute(ins, [i, f"n{i}"], send_types=(i == 0))  # types only on the first execute
            if i % 3 == 0:
                for c in churn:  # others pin connections: the statement must be re-prepared elsewhere
                    query_all(c, "BEGIN")
                    query_all(c, "SELECT 1")
            elif i % 3 == 1:
                for c in churn:
                    query_all(c, "COMMIT")
        for c in churn:
            query_all(c, "COMMIT")
        rows = raw.execute(sel, [10, 17])
        assert rows == [(17, b"n17", 11), (18, b"n18", 11), (19, b"n19", 11)]
        assert raw.execute(sel, [None, 19]) == [(19, b"n19", None)]
        with pytest.raises(ServerError) as ei:
            raw.execute(ins, [1, "dup"])
        assert (ei.value.code, ei.value.sqlstate) == (1062, "23000")
        with pytest.raises(ServerError) as ei:
            raw.prepare("SELECT * FROM pt_nosuch_table WHERE id = ?")
        assert ei.value.code == 1146
        raw.write_packet(b"\x19" + struct.pack("<I", sel), 0)  # COM_STMT_CLOSE: no response
        with pytest.raises(ServerError) as ei:
            raw.execute(sel, [1, 1])
        assert ei.value.code == 1243
        assert raw.execute(ins, [100, "after"]) == []
    assert query_all(direct(), "SELECT COUNT(*) FROM pt_ps") == [(21,)]
    query_all(direct(), "DROP TABLE pt_ps")


def test_prepared_statement_in_transaction(ddm_proc, direct):
    query_all(direct(), "CREATE OR REPLACE TABLE pt_pstx (id INT PRIMARY KEY)")
    with RawClient(ddm_proc.port) as raw:
        ins, _, _ = raw.prepare("INSERT INTO pt_pstx VALUES (?)")
        raw.query("BEGIN")
        for i in range(5):
            raw.execute(ins, [i])
        assert query_all(direct(), "SELECT COUNT(*) FROM pt_pstx") == [(0,)]
        raw.query("ROLLBACK")
        raw.execute(ins, [9])
    assert query_all(direct(), "SELECT id FROM pt_pstx") == [(9,)]
    query_all(direct(), "DROP TABLE pt_pstx")


def test_prepared_statement_keeps_the_database_it_was_prepared_in(ddm_proc, direct, node0):
    """MySQL binds a prepared statement's unqualified tables in the database current at PREPARE: after USE of
    another database (here on the same node, with a table of the same name) its executes still read the first one,
    on ddm as on MariaDB itself."""
    for logical in ("sbtest", "app"):
        query_all(direct(PHYS[logical]), "CREATE OR REPLACE TABLE pt_where (id INT PRIMARY KEY, v VARCHAR(10))")
        query_all(direct(PHYS[logical]), f"INSERT INTO pt_where VALUES (1, '{logical}')")
    answers = {}
    for side, (port, user, pw, first, second) in {
            "ddm": (ddm_proc.port, "native", "nativepw", "sbtest", "app"),
            "mariadb": (node0.port, node0.user, node0.password, PHYS["sbtest"], PHYS["app"])}.items():
        with RawClient(port, user=user, password=pw, db=first) as raw:
            stmt, _, _ = raw.prepare("SELECT v FROM pt_where WHERE id = ?")
            before = raw.execute(stmt, [1])
            raw.ok(b"\x02" + second.encode())  # COM_INIT_DB
            answers[side] = (before, raw.execute(stmt, [1]), raw.query("SELECT v FROM pt_where"))
    assert answers["ddm"] == answers["mariadb"] == ([(b"sbtest",)], [(b"sbtest",)], [(b"app",)])
    for logical in ("sbtest", "app"):
        query_all(direct(PHYS[logical]), "DROP TABLE pt_where")


def test_prepared_statements_beyond_the_nodes_max_prepared_stmt_count(ddm_proc, node0):
    """max_prepared_stmt_count is global on a node and ddm keeps statements prepared on its pooled and shared
    (pipelined) connections: at the limit it closes the older half of those kept on idle and shared connections
    (or on the one preparing) and prepares again, instead of failing the client's statement with 1461."""
    with RawClient(ddm_proc.port, user="ddm", password="ddm", db="app") as warm:
        # statements ddm keeps prepared on the pipelines' shared connections too (they execute these SELECTs)
        for i in range(3):
            for j in range(12):
                stmt_id, _, _ = warm.prepare(f"SELECT CONCAT('warm{j}-', ?)")
                warm.execute(stmt_id, [i])
    with pymysql.connect(host="127.0.0.1", port=node0.port, user=node0.user, password=node0.password,
                         autocommit=True) as admin:
        old = query_all(admin, "SELECT @@GLOBAL.max_prepared_stmt_count")[0][0]
        in_use = int(query_all(admin, "SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")[0][1])
        query_all(admin, f"SET GLOBAL max_prepared_stmt_count = {in_use + 24}")
        try:
            with RawClient(ddm_proc.port, user="ddm", password="ddm", db="app") as c:
                for i in range(80):
                    stmt_id, _, nparams = c.prepare(f"SELECT CONCAT('s{i}-', ?)")
                    assert nparams == 1
                    assert c.execute(stmt_id, [i]) == [(f"s{i}-{i}".encode(),)]
            assert int(query_all(admin, "SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")[0][1]) <= in_use + 24
        finally:
            query_all(admin, f"SET GLOBAL max_prepared_stmt_count = {old}")


def test_send_long_data(ddm_proc, direct):
    query_all(direct(), "CREATE OR REPLACE TABLE pt_long (id INT PRIMARY KEY, b LONGBLOB)")
    chunks = [bytes([65 + i]) * 300_000 for i in range(4)]
    with RawClient(ddm_proc.port) as raw:
        stmt, _, _ = raw.prepare("INSERT INTO pt_long VALUES (?, ?)")
        for ch in chunks:
            raw.send_long_data(stmt, 1, ch)
        # the long-data parameter is sent with its type and no value
        payload = (b"\x17" + struct.pack("<IBI", stmt, 0, 1) + b"\x00" + b"\x01" + b"\x08\x00\xfc\x00"
                   + struct.pack("<q", 1))
        raw.command(payload)
        p = raw.read_packet()
        assert p[0] == 0x00, RawClient.error(p) if p[0] == 0xFF else p
        sel, _, _ = raw.prepare("SELECT LENGTH(b), MD5(b) FROM pt_long WHERE id = ?")
        rows = raw.execute(sel, [1])
    blob = b"".join(chunks)
    assert rows == [(len(blob), hashlib.md5(blob).hexdigest().encode())]
    query_all(direct(), "DROP TABLE pt_long")


# ---------------------------------------------------------------------------------------------- mariadb CLI


def _cli(port: int, *args: str, user: str = "ddm", password: str = "ddm", db: str = "sbtest", sql: str = "",
         timeout: float = 60) -> subprocess.CompletedProcess:
    cli = shutil.which("mariadb") or shutil.which("mysql")
    if cli is None:
        pytest.skip("the mariadb command-line client is not installed")
    return subprocess.run([cli, "--no-defaults", "-h127.0.0.1", f"-P{port}", f"-u{user}", f"-p{password}",
                           "--batch", *args, db, "-e", sql], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "ssl"])
@pytest.mark.parametrize("user,password", USERS, ids=["caching_sha2", "native"])
def test_mariadb_cli_session(ddm_proc, user, password, tls):
    table = f"pt_cli_{user}_{int(tls)}"
    sql = (f"USE sbtest; SHOW DATABASES; CREATE OR REPLACE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(10)); "
           f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b'); SELECT v FROM {table} ORDER BY id; "
           f"BEGIN; INSERT INTO {table} VALUES (3, 'c'); ROLLBACK; "
           f"BEGIN; UPDATE {table} SET v = 'z' WHERE id = 2; COMMIT; "
           f"SELECT CONCAT('count=', COUNT(*)), MAX(v) FROM {table}; DROP TABLE {table}; "
           "SHOW STATUS LIKE 'Ssl_cipher'")
    extra = ["--ssl", "--skip-ssl-verify-server-cert"] if tls else ["--skip-ssl"]
    res = _cli(ddm_proc.port, *extra, user=user, password=password, sql=sql)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "app" in lines and "sbtest" in lines
    assert lines[lines.index("v") + 1:lines.index("v") + 3] == ["a", "b"]
    assert "count=2\tz" in lines


def test_mariadb_cli_tls_is_really_used(ddm_proc):
    res = _cli(ddm_proc.port, "--ssl", "--skip-ssl-verify-server-cert", sql="status")
    assert res.returncode == 0, res.stderr
    assert re.search(r"SSL:\s+Cipher in use is \S+", res.stdout), res.stdout


def test_mariadb_cli_error_shows_node_code_and_message(ddm_proc):
    res = _cli(ddm_proc.port, sql="SELECT 1; SELECT * FROM pt_nosuch_table")
    assert res.returncode == 1
    assert re.search(r"ERROR 1146 \(42S02\) at line 1: Table '\w+\.pt_nosuch_table' doesn't exist", res.stderr), \
        res.stderr
    res = _cli(ddm_proc.port, password="wrong", sql="SELECT 1")
    assert res.returncode == 1 and "ERROR 1045 (28000)" in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------------- sysbench


def _sysbench(port: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["sysbench", "oltp_read_write", "--mysql-host=127.0.0.1", f"--mysql-port={port}",
                           "--mysql-user=native", "--mysql-password=nativepw", "--mysql-db=sbtest",
                           "--db-driver=mysql", "--mysql-ignore-errors=none", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sysbench_tables(ddm_proc):
    if shutil.which("sysbench") is None:
        pytest.skip("sysbench is not installed")
    _sysbench(ddm_proc.port, "cleanup")
    res = _sysbench(ddm_proc.port, "prepare")
    assert res.returncode == 0, res.stdout + res.stderr
    yield
    _sysbench(ddm_proc.port, "cleanup")


@pytest.mark.parametrize("ps_mode", ["auto", "disable"])
def test_sysbench_oltp_read_write(ddm_proc, sysbench_tables, ps_mode):
    # default options (1 thread, 1 table of 10000 rows): no deadlocks, so any error is ddm's
    res = _sysbench(ddm_proc.port, "run", "--time=10", f"--db-ps-mode={ps_mode}")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    txns = int(re.search(r"transactions:\s+(\d+)", out).group(1))
    errors = int(re.search(r"ignored errors:\s+(\d+)", out).group(1))
    assert "FATAL" not in out and "ALERT" not in out, out
    assert txns > 50, out
    assert errors == 0, out
