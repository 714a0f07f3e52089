"""Privileges that hold (issue 17, item 1), tried as an attacker would.

The finding: a ddm user allowed only one database got 1044 for `USE rel`, but from its own database it read and
wrote `rel_0.t` (the physical shard of another logical database) with a qualified name, read `mysql.user` password
hashes and ran LOAD_FILE: every statement runs as the node account, so ddm's checks (ddm.protect.privileges) are the only
ones. Here every way tried to name another database's table, a system schema, a file or the node's administration
is refused, over text and prepared statements, and what the user may do still works.

Layout on node0: logical `psb` (pass-through, same physical name), `pother` (pass-through, same name), `papp`
(pass-through, physical `papp_phys`), `prel` (sharded: prel_0.t_0/t_1, prel_1.t_0/t_1), and `psecret`, a database of
the node that ddm does not know. Every table holds a row ('secret') that user `u` must never see.
"""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import (
    DDM,
    NO_TLS,
    Node,
    RawClient,
    ServerError,
    ddm_config,
    free_port,
    query_all,
    start_ddm,
    two_level_database,
)

pytestmark = pytest.mark.integration

PHYSICAL = ["psb", "pother", "papp_phys", "prel_0", "prel_1", "psecret"]
USERS = [
    {"name": "u", "password": "upw", "auth_plugin": "mysql_native_password", "databases": ["psb"]},
    {"name": "both", "password": "bothpw", "auth_plugin": "mysql_native_password",
     "databases": ["psb", "pother", "papp", "prel"]},
    {"name": "sysu", "password": "syspw", "auth_plugin": "mysql_native_password", "databases": ["psb"],
     "privileges": ["system_schemas"]},
    {"name": "trusted", "password": "trustpw", "auth_plugin": "mysql_native_password", "privileges": "all"},
]
PASSWORDS = {u["name"]: u["password"] for u in USERS}
MULTI = pymysql.constants.CLIENT.MULTI_STATEMENTS


def _direct(node: Node, db: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=node.port, user=node.user, password=node.password, database=db,
                           autocommit=True)


def _snapshot(node: Node) -> dict:
    with _direct(node) as c:
        out = {}
        for db, table in (("prel_0", "t_0"), ("prel_1", "t_1"), ("papp_phys", "t"), ("psecret", "t"),
                          ("pother", "t")):
            out[f"{db}.{table}"] = query_all(c, f"SELECT * FROM `{db}`.`{table}` ORDER BY id")
        out["tables"] = sorted(query_all(c, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
                                            "WHERE TABLE_SCHEMA LIKE 'p%'"))
        out["users"] = query_all(c, "SELECT COUNT(*) FROM mysql.user WHERE user LIKE 'priv_evil%'")
        return out


@pytest.fixture(scope="module")
def ddm_priv(node0: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DDM]:
    with _direct(node0) as c:
        for db in PHYSICAL:
            query_all(c, f"DROP DATABASE IF EXISTS `{db}`")
            query_all(c, f"CREATE DATABASE `{db}`")
        for db, table in (("psb", "t"), ("pother", "t"), ("papp_phys", "t"), ("psecret", "t"),
                          ("prel_0", "t_0"), ("prel_0", "t_1"), ("prel_1", "t_0"), ("prel_1", "t_1")):
            query_all(c, f"CREATE TABLE `{db}`.`{table}` (id INT PRIMARY KEY, v VARCHAR(20))")
            query_all(c, f"INSERT INTO `{db}`.`{table}` VALUES (1, '{'mine' if db == 'psb' else 'secret'}')")
    dbs = {"psb": {"node": "n0"}, "pother": {"node": "n0"}, "papp": {"node": "n0", "database": "papp_phys"},
           "prel": two_level_database(["n0", "n0"], "prel", "t", "id")}
    cfg = ddm_config(free_port(), {"n0": node0.conf()}, dbs)
    cfg["users"] = USERS
    d = start_ddm(tmp_path_factory.mktemp("ddm-priv"), cfg, mode="thread")
    try:
        yield d
    finally:
        d.stop()
        with _direct(node0) as c:
            for db in PHYSICAL:
                query_all(c, f"DROP DATABASE IF EXISTS `{db}`")
            query_all(c, "DROP USER IF EXISTS priv_evil@localhost")


def _connect(d: DDM, user: str = "u", db: str | None = "psb", **kw) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=d.port, user=user, password=PASSWORDS[user], database=db,
                           autocommit=True, charset="utf8mb4", **NO_TLS, **kw)


def _code(c: pymysql.connections.Connection, sql: str) -> int | list:
    """The error code of `sql` on c, or its rows when it ran."""
    try:
        with c.cursor() as cur:
            cur.execute(sql)
            rows = list(cur.fetchall())
            while cur.nextset():
                rows.extend(cur.fetchall())
            return rows
    except pymysql.err.MySQLError as exc:
        return exc.args[0]


# statement -> the error MariaDB would give a user without the privilege
REFUSED = [
    # another logical database's physical shard, every spelling
    ("SELECT * FROM prel_0.t_0", 1142),
    ("SELECT * FROM `prel_0`.`t_0`", 1142),
    ("select * from PREL_0.T_0", 1142),
    ("SELECT * FROM prel_0 . t_0", 1142),
    ("SELECT * FROM /* hide */ prel_0./* hide */t_0", 1142),
    ("SELECT x.v FROM t JOIN prel_0.t_0 AS x ON x.id = t.id", 1142),
    ("SELECT * FROM t, prel_1.t_1", 1142),
    ("SELECT * FROM t a, psecret.t AS psecret", 1142),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM prel_1.t_1)", 1142),
    ("SELECT * FROM t WHERE v = ANY (SELECT v FROM prel_1.t_1)", 1142),
    ("SELECT * FROM t a JOIN t b ON a.id = b.id, psecret.t", 1142),
    ("SELECT * FROM t a JOIN (t b JOIN psecret.t c ON b.id = c.id) ON a.id = b.id", 1142),
    ("SELECT (SELECT v FROM prel_0.t_0 LIMIT 1)", 1142),
    ("SELECT * FROM (SELECT * FROM prel_0.t_0) d", 1142),
    ("WITH s AS (SELECT * FROM prel_0.t_0) SELECT * FROM s", 1142),
    ("SELECT v FROM t UNION SELECT v FROM prel_0.t_0", 1142),
    ("SELECT prel_0.t_0.v FROM t", 1142),
    ("INSERT INTO prel_0.t_0 VALUES (100, 'pwned')", 1142),
    ("INSERT INTO t SELECT id + 10, v FROM prel_0.t_0", 1142),
    ("REPLACE INTO prel_0.t_0 VALUES (1, 'pwned')", 1142),
    ("UPDATE prel_0.t_0 SET v = 'pwned'", 1142),
    ("UPDATE t, prel_0.t_0 SET prel_0.t_0.v = 'pwned'", 1142),
    ("DELETE FROM prel_0.t_0", 1142),
    ("DELETE x FROM prel_0.t_0 x", 1142),
    ("DROP TABLE prel_0.t_0", 1142),
    ("TRUNCATE TABLE prel_0.t_0", 1142),
    ("CREATE TABLE prel_0.evil (id INT)", 1142),
    ("ALTER TABLE prel_0.t_0 ADD COLUMN evil INT", 1142),
    ("RENAME TABLE prel_0.t_0 TO psb.stolen", 1142),
    ("CREATE TABLE stolen AS SELECT * FROM prel_0.t_0", 1142),
    ("CREATE TABLE stolen LIKE prel_0.t_0", 1142),
    ("CREATE VIEW stolen AS SELECT * FROM prel_0.t_0", 1142),
    ("LOCK TABLES t READ, prel_0.t_0 WRITE", 1142),
    ("HANDLER prel_0.t_0 OPEN", 1142),
    # other logical databases, their physical names, a database ddm does not know
    ("SELECT * FROM prel.t", 1142),
    ("SELECT * FROM papp.t", 1142),
    ("SELECT * FROM papp_phys.t", 1142),
    ("SELECT * FROM pother.t", 1142),
    ("SELECT * FROM psecret.t", 1142),
    ("SELECT psecret.t.v FROM t", 1142),
    # system schemas
    ("SELECT user, password FROM mysql.user", 1142),
    ("SELECT * FROM `mysql`.`user`", 1142),
    ("SELECT * FROM t JOIN mysql.user u ON 1", 1142),
    ("SELECT * FROM performance_schema.threads", 1142),
    ("SELECT sys.version_major()", 1142),
    # databases by name
    ("SHOW TABLES FROM prel_0", 1044),
    ("SHOW TABLES IN mysql", 1044),
    ("SHOW TABLE STATUS FROM psecret", 1044),
    ("SHOW COLUMNS FROM t_0 FROM prel_0", 1044),
    ("SHOW CREATE TABLE prel_0.t_0", 1142),
    ("DESCRIBE prel_0.t_0", 1142),
    ("DESC mysql.user", 1142),
    ("ALTER DATABASE prel_0 CHARACTER SET latin1", 1044),
    ("USE prel_0", 1044),
    ("USE mysql", 1044),
    # executable comments
    ("/*!40100 SELECT * FROM prel_0.t_0 */", 1142),
    ("SELECT * FROM t /*!, prel_0.t_0 */", 1142),
    ("/*M!100100 SELECT user FROM mysql.user */", 1142),
    ("SELECT * FROM /*!psecret.t*/", 1142),
    # files
    ("SELECT LOAD_FILE('/etc/passwd')", 1227),
    ("SELECT load_file(0x2f6574632f706173737764)", 1227),
    ("SELECT /*!LOAD_FILE('/etc/passwd')*/", 1227),
    ("SELECT v FROM t INTO OUTFILE '/tmp/ddm_priv_outfile'", 1227),
    ("SELECT v FROM t INTO DUMPFILE '/tmp/ddm_priv_dumpfile'", 1227),
    ("LOAD DATA INFILE '/etc/hostname' INTO TABLE t", 1227),
    # the node's administration
    ("CREATE USER priv_evil@localhost", 1227),
    ("GRANT SELECT ON psb.* TO priv_evil@localhost", 1227),
    ("FLUSH STATUS", 1227),
    ("STOP SLAVE", 1227),
    ("PURGE BINARY LOGS BEFORE '2000-01-01 00:00:00'", 1227),
    ("SET @@global.max_connections = 4000", 1227),
    ("SHOW ENGINE INNODB STATUS", 1227),
    ("SELECT * FROM information_schema.PROCESSLIST", 1227),
    # dynamic SQL
    ("PREPARE s FROM 'SELECT * FROM mysql.user'", 1142),
    ("PREPARE s FROM 'SELECT * FROM prel_' '0.t_0'", 1142),
    ("PREPARE s FROM @q", 1227),
    ("EXECUTE IMMEDIATE 'SELECT * FROM prel_0.t_0'", 1142),
    ("EXECUTE IMMEDIATE CONCAT('SELECT * FROM ', 'prel_0.t_0')", 1227),
    ("BEGIN NOT ATOMIC SELECT * FROM prel_0.t_0; END", 1142),
    ("CREATE PROCEDURE evil() SELECT * FROM prel_0.t_0", 1142),
    # information_schema about another database
    ("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'prel_0'", 1044),
    ("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ('psb', 'prel_1')", 1044),
]


@pytest.mark.parametrize("sql,code", REFUSED, ids=[s for s, _ in REFUSED])
def test_refused_as_text(ddm_priv: DDM, node0: Node, sql: str, code: int) -> None:
    before = _snapshot(node0)
    with _connect(ddm_priv) as c:
        query_all(c, "SET @q = 'SELECT * FROM mysql.user'")
        got = _code(c, sql)
        assert got == code, (sql, got)
        assert _code(c, "SELECT v FROM t") == [("mine",)]  # the session goes on
    assert _snapshot(node0) == before, sql


@pytest.mark.parametrize("sql,code", [r for r in REFUSED if not r[0].startswith(("USE", "BEGIN", "PREPARE",
                                                                                 "EXECUTE"))],
                         ids=[s for s, _ in REFUSED if not s.startswith(("USE", "BEGIN", "PREPARE", "EXECUTE"))])
def test_refused_when_prepared(ddm_priv: DDM, sql: str, code: int) -> None:
    with RawClient(ddm_priv.port, user="u", password="upw", db="psb") as raw:
        with pytest.raises(ServerError) as exc:
            raw.prepare(sql)
        assert exc.value.code == code, (sql, exc.value)
        assert raw.query("SELECT v FROM t") == [(b"mine",)]


def test_error_messages_as_mariadb_words_them(ddm_priv: DDM) -> None:
    with _connect(ddm_priv) as c:
        with pytest.raises(pymysql.err.MySQLError) as exc:
            query_all(c, "SELECT * FROM prel_0.t_0")
        assert exc.value.args[1] == "SELECT command denied to user 'u'@'127.0.0.1' for table `prel_0`.`t_0`"
        with pytest.raises(pymysql.err.MySQLError) as exc:
            query_all(c, "SHOW TABLES FROM prel_0")
        assert exc.value.args[1] == "Access denied for user 'u'@'127.0.0.1' to database 'prel_0'"
        with pytest.raises(pymysql.err.MySQLError) as exc:
            query_all(c, "SELECT LOAD_FILE('/etc/passwd')")
        assert exc.value.args[1] == "Access denied; you need (at least one of) the FILE privilege(s) for this operation"


@pytest.mark.parametrize("sql", [
    "SELECT 1; SELECT * FROM prel_0.t_0",
    "SELECT 1; USE prel_0; SELECT * FROM t_0",
    "SELECT v FROM t; /*!40100 SELECT * FROM mysql.user */",
    "SET @a = 1; SELECT LOAD_FILE('/etc/passwd')",
])
def test_refused_in_multi_statements(ddm_priv: DDM, sql: str) -> None:
    with _connect(ddm_priv, client_flag=MULTI) as c:
        got = _code(c, sql)
        assert got in (1142, 1044, 1227), (sql, got)
        assert _code(c, "SELECT DATABASE()") == [("psb",)]
        assert _code(c, "SELECT v FROM t") == [("mine",)]


def test_sql_modes_that_lex_otherwise(ddm_priv: DDM) -> None:
    """ANSI_QUOTES makes "db"."t" a table; NO_BACKSLASH_ESCAPES ends 'a\\' at the backslash."""
    with _connect(ddm_priv) as c:
        query_all(c, "SET sql_mode = 'ANSI_QUOTES'")
        assert _code(c, 'SELECT * FROM "prel_0"."t_0"') == 1142
        assert _code(c, 'SELECT * FROM "psecret".t') == 1142
    with _connect(ddm_priv) as c:
        query_all(c, "SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        assert _code(c, "SELECT 'a\\', v FROM prel_0.t_0 -- '") == 1142
        assert _code(c, "SELECT 'a\\', v FROM t -- '") == [("a\\", "mine")]


def test_prepare_from_a_variable_is_refused_even_when_harmless(ddm_priv: DDM) -> None:
    """ddm cannot see a variable's text when it checks PREPARE: PREPARE FROM @var needs dynamic_sql; a literal
    text is checked as the statement it is."""
    with _connect(ddm_priv) as c:
        query_all(c, "SET @q = 'SELECT v FROM t'")
        assert _code(c, "PREPARE s FROM @q") == 1227
        assert _code(c, "PREPARE s FROM 'SELECT v FROM t'") == []
        assert _code(c, "EXECUTE s") == [("mine",)]
        assert _code(c, "EXECUTE IMMEDIATE 'SELECT v FROM t'") == [("mine",)]


def test_allowed_statements_still_run(ddm_priv: DDM) -> None:
    with _connect(ddm_priv) as c:
        assert _code(c, "SELECT v FROM t") == [("mine",)]
        assert _code(c, "SELECT v FROM psb.t") == [("mine",)]
        assert _code(c, "SELECT `psb`.`t`.`v` FROM `psb`.`t`") == [("mine",)]
        assert _code(c, "SELECT t.v FROM t") == [("mine",)]
        assert _code(c, "SELECT psecret.v FROM t AS psecret") == [("mine",)]  # an alias, not the database
        assert _code(c, "SELECT x.v FROM t x JOIN t y ON x.id = y.id WHERE x.id IN (SELECT id FROM t)") == \
            [("mine",)]
        assert _code(c, "INSERT INTO t VALUES (2, 'two') ON DUPLICATE KEY UPDATE t.v = 'two'") == []
        assert _code(c, "DELETE FROM t WHERE id = 2") == []
        assert _code(c, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'psb'") == [("t",)]
        assert _code(c, "SHOW TABLES FROM psb") == [("t",)]
        assert _code(c, "SHOW COLUMNS FROM t") != 1044
        assert _code(c, "SHOW DATABASES") == [("psb",)]
        assert _code(c, "/*!40100 SELECT v FROM t */") == [("mine",)]
        assert _code(c, "SELECT TRIM(BOTH 'x' FROM x.v), EXTRACT(YEAR FROM '2024-01-02') FROM t x") == [("mine", 2024)]
    with RawClient(ddm_priv.port, user="u", password="upw", db="psb") as raw:
        stmt_id, _, _ = raw.prepare("SELECT v FROM psb.t WHERE id = ?")
        assert raw.execute(stmt_id, [1])


def test_user_with_several_databases(ddm_priv: DDM) -> None:
    with _connect(ddm_priv, "both") as c:
        # a pass-through database of the same node under its own name: the node resolves it
        assert _code(c, "SELECT t.v, o.v FROM t JOIN pother.t o ON o.id = t.id") == [("mine", "secret")]
        # a renamed or a sharded one: the node would read another database, so an honest error
        assert _code(c, "SELECT * FROM papp.t") == 1235
        assert _code(c, "SELECT * FROM prel.t") == 1235
        # their physical names stay refused
        assert _code(c, "SELECT * FROM papp_phys.t") == 1142
        assert _code(c, "SELECT * FROM prel_0.t_0") == 1142
        query_all(c, "USE papp")
        assert _code(c, "SELECT v FROM t") == [("secret",)]
        query_all(c, "USE prel")
        assert _code(c, "SELECT v FROM t WHERE id = 1") == [("secret",)]
        assert _code(c, "SELECT COUNT(*) FROM t") == [(4,)]  # one row in each of the 4 physical tables
        assert _code(c, "SELECT * FROM prel_1.t_1") == 1142
        assert _code(c, "SELECT * FROM psb.t") == 1235
        assert sorted(_code(c, "SHOW DATABASES")) == [("papp",), ("pother",), ("prel",), ("psb",)]


def test_granted_privileges(ddm_priv: DDM) -> None:
    with _connect(ddm_priv, "sysu") as c:
        assert _code(c, "SELECT COUNT(*) > 0 FROM mysql.user") == [(1,)]
        assert _code(c, "SELECT * FROM prel_0.t_0") == 1142
        assert _code(c, "SELECT LOAD_FILE('/etc/passwd')") == 1227
    with _connect(ddm_priv, "trusted") as c:  # privileges: all, databases: '*' = the node account's rights
        assert _code(c, "SELECT v FROM prel_0.t_0") == [("secret",)]
        assert _code(c, "SELECT COUNT(*) > 0 FROM mysql.user") == [(1,)]


def test_init_db_and_handshake_database(ddm_priv: DDM) -> None:
    with _connect(ddm_priv) as c:
        with pytest.raises(pymysql.err.MySQLError) as exc:
            c.select_db("prel")
        assert exc.value.args[0] == 1044
    with pytest.raises(pymysql.err.MySQLError) as exc:
        _connect(ddm_priv, db="prel")
    assert exc.value.args[0] == 1044
