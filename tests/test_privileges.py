"""ddm.protect.privileges: the statement checker on tokens, and the users[].privileges configuration."""

from __future__ import annotations

import pytest

from ddm.config import PRIVILEGES, ConfigError, from_dict
from ddm.protect import privileges
from ddm.protect.privileges import Guard, scan


def _doc(users: list[dict]) -> dict:
    return {
        "server": {"listen": "127.0.0.1:0"},
        "users": users,
        "nodes": {"n0": {"host": "127.0.0.1", "port": 3306, "user": "r", "password": "r"},
                  "n1": {"host": "127.0.0.1", "port": 3307, "user": "r", "password": "r"}},
        "databases": {
            "sbtest": {"node": "n0"},
            "other": {"node": "n0"},
            "far": {"node": "n1"},
            "app": {"node": "n0", "database": "app_phys"},
            "one": {"node": "n0", "database": "1rel"},
            "rel": {"datasources": {"ds${0..1}": {"node": "n0", "database": "rel_${0..1}"}},
                    "tables": {"t": {"nodes": "ds${0..1}.t", "database_strategy": {"column": "id",
                                                                                   "algorithm": "mod"}}}},
        },
    }


CFG = from_dict(_doc([
    {"name": "u", "password": "p", "databases": ["sbtest"]},
    {"name": "many", "password": "p", "databases": ["sbtest", "other", "far", "app", "rel"]},
    {"name": "sys", "password": "p", "databases": ["sbtest"], "privileges": ["system_schemas", "file"]},
    {"name": "adm", "password": "p", "databases": ["sbtest"], "privileges": ["admin", "dynamic_sql"]},
    {"name": "root", "password": "p", "privileges": "all"},
]))
U = Guard(CFG, CFG.users["u"])


def code(sql: str, guard: Guard = U, db: str | None = "sbtest") -> int | None:
    r = guard.check(sql.encode(), db)
    return None if r is None else r.code


ALLOWED = [
    "SELECT c FROM sbtest1 WHERE id = 5021",
    "SELECT c FROM sbtest1 WHERE id BETWEEN 1 AND 100 ORDER BY c",
    "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 1 AND 100 ORDER BY c",
    "SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 1 AND 100",
    "UPDATE sbtest1 SET k = k + 1 WHERE id = 5",
    "UPDATE sbtest1 SET c = 'x' WHERE id = 5",
    "DELETE FROM sbtest1 WHERE id = 5",
    "INSERT INTO sbtest1 (id, k, c, pad) VALUES (1, 2, 'c', 'p')",
    "SELECT t.id, u.c FROM sbtest1 t JOIN sbtest2 u ON t.id = u.id WHERE t.k = 3",
    "SELECT secret.c FROM t secret",  # an alias named like an unknown database
    "SELECT * FROM t a JOIN t b ON a.id = b.id, t c WHERE c.id = a.id",
    "INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE t.c = 2, t.d = 3",
    "SELECT * FROM sbtest.t",
    "SELECT `sbtest`.`t`.`c` FROM `sbtest`.`t`",
    "SELECT * FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'sbtest'",
    "SELECT * FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()",
    "SHOW TABLES",
    "SHOW TABLES FROM sbtest",
    "SHOW COLUMNS FROM t",
    "SHOW INDEX FROM t IN sbtest",
    "SHOW DATABASES",
    "SHOW GRANTS",
    "SET @mc = @@global.max_connections",
    "SET NAMES utf8mb4",
    "SET SESSION sql_mode = 'ANSI_QUOTES'",
    "SELECT @@global.version",
    "LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t",
    "PREPARE s FROM 'SELECT * FROM t'",
    "EXECUTE s",
    "EXECUTE IMMEDIATE 'SELECT 1'",
    "USE sbtest",
    "SELECT DATABASE()",
    "/*!40101 SET NAMES utf8mb4 */",
    "SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t",
    "CREATE TABLE t2 (id INT PRIMARY KEY, c INT REFERENCES t(id))",
    "ALTER TABLE t ADD COLUMN x INT, CHANGE c c2 INT",
    "START TRANSACTION",
    "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t LOCK IN SHARE MODE",
    "LOCK TABLES t READ, t2 WRITE",
    "CREATE DATABASE rel_0",  # refused by the frontend (database DDL), not here
    "SELECT 'rel_0.t'",  # a string
    "SELECT 1 -- rel_0.t",  # a comment
    "SELECT EXTRACT(YEAR FROM o.d), TRIM(BOTH 'x' FROM o.s), SUBSTRING(o.s FROM 2 FOR 3) FROM t o",
    "SELECT CONVERT(o.s USING utf8mb4) FROM t o",
    "CREATE TABLE t4 (connection VARCHAR(10), file_name INT)",
]


@pytest.mark.parametrize("sql", ALLOWED)
def test_allowed(sql: str) -> None:
    assert code(sql) is None


REFUSED = [
    ("select * from rel_0.t", 1142),
    # conservative: a name of a database ddm knows is refused as any qualifier, even of an alias named like it
    ("SELECT mysql.c FROM t AS mysql", 1142),
    ("SELECT * FROM `REL_0`.`t`", 1142),
    ("SELECT * FROM rel_0 . t", 1142),
    ("SELECT * FROM rel_0./* x */t", 1142),
    ("SELECT * FROM rel_0.1t", 1142),
    ("SELECT * FROM t, rel_0.t", 1142),
    ("SELECT * FROM t a, secret.t AS secret", 1142),
    ("SELECT * FROM t a JOIN b ON a.x = b.x, secret.t", 1142),
    ("SELECT * FROM a JOIN b ON CASE WHEN 1 THEN 1 ELSE 1 END, secret.t", 1142),
    ("SELECT * FROM t FORCE INDEX (PRIMARY), secret.t", 1142),
    ("SELECT * FROM (t, secret.t)", 1142),
    ("SELECT secret.t.c FROM t", 1142),
    ("SELECT secret.f()", 1142),
    ("SELECT * FROM t WHERE c = ANY (SELECT c FROM secret.t)", 1142),
    ("SELECT EXTRACT(YEAR FROM (SELECT d FROM secret.t))", 1142),
    ("SELECT COALESCE((SELECT c FROM secret.t), 1)", 1142),
    ("CREATE TABLE f (id INT) ENGINE=FEDERATED CONNECTION='mysql://root@127.0.0.1/mysql/user'", 1227),
    ("CREATE TABLE c (id INT) ENGINE=CONNECT TABLE_TYPE=CSV FILE_NAME='/etc/passwd'", 1227),
    ("CALL secret.p()", 1142),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM rel_1.t)", 1142),
    ("INSERT INTO rel_0.t VALUES (1)", 1142),
    ("REPLACE INTO rel_0.t VALUES (1)", 1142),
    ("UPDATE rel_0.t SET c = 1", 1142),
    ("UPDATE LOW_PRIORITY IGNORE secret.t SET c = 1", 1142),
    ("UPDATE t, secret.t SET t.c = 1", 1142),
    ("DELETE FROM secret.t", 1142),
    ("DELETE a FROM t a USING t a, secret.t", 1142),
    ("DROP TABLE t, secret.t", 1142),
    ("TRUNCATE secret.t", 1142),
    ("CREATE TABLE t2 LIKE secret.t", 1142),
    ("CREATE INDEX i ON secret.t (c)", 1142),
    ("RENAME TABLE t TO secret.t", 1142),
    ("ALTER TABLE t RENAME TO secret.t", 1142),
    ("ALTER TABLE t ADD FOREIGN KEY (c) REFERENCES secret.t (id)", 1142),
    ("LOCK TABLES t READ, secret.t WRITE", 1142),
    ("HANDLER secret.t OPEN", 1142),
    ("DESCRIBE secret.t", 1142),
    ("SHOW CREATE TABLE secret.t", 1142),
    ("SELECT * FROM rel.t", 1142),
    ("SELECT * FROM app.t", 1142),
    ("SELECT * FROM app_phys.t", 1142),
    ("SELECT * FROM mysql.user", 1142),
    ("SELECT * FROM performance_schema.threads", 1142),
    ("SELECT sys.version_major()", 1142),
    ("SELECT * FROM MySQL.User", 1142),
    ('SELECT * FROM "rel_0"."t"', 1142),  # ANSI_QUOTES
    ("SELECT 'a\\', c FROM rel_0.t -- '", 1142),  # NO_BACKSLASH_ESCAPES
    ("/*!40100 SELECT * FROM rel_0.t */", 1142),
    ("/*M!100100 SELECT * FROM rel_0.t */", 1142),
    ("SELECT * FROM /*!secret.t*/", 1142),
    ("SELECT * FROM t /*!, secret.t */", 1142),
    ("SELECT * FROM t /*!500001rel.t */", 1142),  # version 50000, then the name `1rel`: both readings checked
    ("SELECT * FROM t /*M!1001001rel.t */", 1142),
    ("SELECT 1; SELECT * FROM rel_0.t", 1142),
    ("CREATE PROCEDURE p() BEGIN SELECT * FROM rel_0.t; END", 1142),
    ("CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DO DELETE FROM rel_0.t", 1142),
    ("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW INSERT INTO secret.t VALUES (1)", 1142),
    ("PREPARE s FROM 'SELECT * FROM mysql.user'", 1142),
    ("PREPARE s FROM 'SELECT * FROM my' 'sql.user'", 1142),
    ("EXECUTE IMMEDIATE 'SELECT * FROM rel_0.t'", 1142),
    ("SHOW TABLES FROM rel_0", 1044),
    ("SHOW FULL TABLES IN secret", 1044),
    ("SHOW TABLE STATUS FROM mysql", 1044),
    ("SHOW COLUMNS FROM t FROM rel_0", 1044),
    ("SHOW CREATE DATABASE rel_0", 1044),
    ("ALTER DATABASE rel_0 CHARACTER SET latin1", 1044),
    ("USE rel_0", 1044),
    ("USE mysql", 1044),
    ("USE nosuch", 1049),
    ("SELECT 1; USE rel_0", 1044),
    ("/*!USE rel_0*/", 1044),
    ("SELECT * FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'rel_0'", 1044),
    ("SELECT * FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ('sbtest', 'mysql')", 1044),
    ("SELECT * FROM information_schema.PROCESSLIST", 1227),
    ("SELECT LOAD_FILE('/etc/passwd')", 1227),
    ("SELECT 1 INTO OUTFILE '/tmp/x'", 1227),
    ("SELECT 1 INTO DUMPFILE '/tmp/x'", 1227),
    ("LOAD DATA INFILE '/etc/passwd' INTO TABLE t", 1227),
    ("LOAD XML INFILE '/etc/x.xml' INTO TABLE t", 1227),
    ("CREATE TABLE t3 (id INT) DATA DIRECTORY = '/tmp'", 1227),
    ("GRANT ALL ON *.* TO x", 1227),
    ("REVOKE ALL ON *.* FROM x", 1227),
    ("CREATE USER evil", 1227),
    ("CREATE OR REPLACE USER evil", 1227),
    ("ALTER USER ddm IDENTIFIED BY 'x'", 1227),
    ("DROP USER ddm", 1227),
    ("RENAME USER a TO b", 1227),
    ("CREATE ROLE r", 1227),
    ("SET PASSWORD FOR root = PASSWORD('x')", 1227),
    ("SET ROLE admin", 1227),
    ("SET DEFAULT ROLE admin FOR x", 1227),
    ("SET GLOBAL max_connections = 1", 1227),
    ("SET @@global.max_connections = 1", 1227),
    ("SET SESSION x = 1, GLOBAL y = 2", 1227),
    ("FLUSH PRIVILEGES", 1227),
    ("SHUTDOWN", 1227),
    ("INSTALL SONAME 'ha_connect'", 1227),
    ("UNINSTALL PLUGIN x", 1227),
    ("CREATE FUNCTION sys_exec RETURNS INT SONAME 'lib_mysqludf_sys.so'", 1227),
    ("CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (HOST 'x')", 1227),
    ("CHANGE MASTER TO MASTER_HOST = 'x'", 1227),
    ("START SLAVE", 1227),
    ("STOP ALL SLAVES", 1227),
    ("RESET MASTER", 1227),
    ("PURGE BINARY LOGS TO 'x'", 1227),
    ("BINLOG 'xxxx'", 1227),
    ("SHOW BINLOG EVENTS", 1227),
    ("SHOW ENGINE INNODB STATUS", 1227),
    ("/*!GRANT ALL ON *.* TO x*/", 1227),
    ("CREATE PROCEDURE p() BEGIN FLUSH PRIVILEGES; END", 1227),
    ("BEGIN NOT ATOMIC SET GLOBAL x = 1; END", 1227),
    ("PREPARE s FROM @q", 1227),
    ("EXECUTE IMMEDIATE @q", 1227),
    ("EXECUTE IMMEDIATE CONCAT('SELECT ', '1')", 1227),
    ("PREPARE s FROM 'PREPARE t FROM @q'", 1227),
]


@pytest.mark.parametrize("sql,expected", REFUSED, ids=[s for s, _ in REFUSED])
def test_refused(sql: str, expected: int) -> None:
    assert code(sql) == expected


def test_messages() -> None:
    r = U.check(b"SELECT * FROM rel_0.t", "sbtest")
    assert r.message == "SELECT command denied to user 'u'@'{host}' for table `rel_0`.`t`"
    r = U.check(b"insert into `Rel_0`.t values (1)", "sbtest")
    assert r.message == "INSERT command denied to user 'u'@'{host}' for table `rel_0`.`t`"
    r = U.check(b"SHOW TABLES FROM rel_0", "sbtest")
    assert r.message == "Access denied for user 'u'@'{host}' to database 'rel_0'"
    r = U.check(b"SELECT LOAD_FILE('x')", "sbtest")
    assert r.message == "Access denied; you need (at least one of) the FILE privilege(s) for this operation"


def test_cross_database_routing() -> None:
    g = Guard(CFG, CFG.users["many"])
    assert code("SELECT * FROM other.t JOIN t USING (id)", g) is None  # pass-through, same node, same name
    assert code("SELECT * FROM other.t", g, db=None) is None  # no database: the first database's node
    assert code("SELECT * FROM far.t", g) == 1235  # another node
    assert code("SELECT * FROM app.t", g) == 1235  # renamed: the node would read database `app`
    assert code("SELECT * FROM rel.t", g) == 1235  # sharded
    assert code("SELECT * FROM sbtest.t", g, db="rel") == 1235  # from a sharded session
    assert code("SELECT * FROM rel.t", g, db="rel") is None  # its own name: the planner resolves it
    assert code("SELECT * FROM app.t", g, db="app") is None
    assert code("SELECT * FROM app_phys.t", g, db="app") == 1142  # physical names stay refused
    assert code("USE app", g) is None and code("SELECT 1; USE rel", g) is None
    assert code("SELECT * FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app_phys'", g) is None


def test_grants() -> None:
    s = Guard(CFG, CFG.users["sys"])
    assert code("SELECT * FROM mysql.user", s) is None
    assert code("SELECT LOAD_FILE('/etc/passwd')", s) is None
    assert code("SELECT * FROM rel_0.t", s) == 1142
    assert code("FLUSH PRIVILEGES", s) == 1227
    a = Guard(CFG, CFG.users["adm"])
    assert code("FLUSH PRIVILEGES", a) is None and code("PREPARE s FROM @q", a) is None
    assert code("SELECT * FROM information_schema.PROCESSLIST", a) is None
    assert code("SELECT * FROM mysql.user", a) == 1142
    root = Guard(CFG, CFG.users["root"])
    assert root.trusted and privileges.guard(CFG, CFG.users["root"]) is None
    assert privileges.guard(CFG, CFG.users["u"]) is not None
    assert privileges.guard(CFG, None) is None


def test_verdict_cache_by_digest_except_literal_dependent() -> None:
    g = Guard(CFG, CFG.users["u"])
    assert g.check(b"SELECT c FROM t WHERE id = 1", "sbtest") is None
    assert (b"SELECT c FROM t WHERE id = ?", "sbtest") in g._cache
    g.check(b"PREPARE s FROM 'SELECT 1'", "sbtest")
    assert g.check(b"PREPARE s FROM 'SELECT * FROM mysql.user'", "sbtest").code == 1142
    assert not any(k[0].startswith(b"PREPARE") for k in g._cache)
    g.check(b"SELECT * FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'sbtest'", "sbtest")
    assert g.check(b"SELECT * FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'rel_0'", "sbtest").code == 1044
    # the session database is part of the key
    many = Guard(CFG, CFG.users["many"])
    assert many.check(b"SELECT * FROM other.t", "sbtest") is None
    assert many.check(b"SELECT * FROM other.t", "rel").code == 1235


def test_scan_reports() -> None:
    s = scan(b"/*!40100 SELECT LOAD_FILE('x') FROM rel_0.t */")
    assert s.file and ("rel_0", "t") in [(r.schema, r.table) for r in s.refs]
    s = scan(b"SELECT a.b FROM t a")
    assert [r.schema for r in s.refs] == ["?a"]  # a qualifier that only matters if it is a known database


def test_config_privileges() -> None:
    assert CFG.users["u"].privileges == ()
    assert CFG.users["root"].privileges == PRIVILEGES
    assert CFG.users["sys"].privileges == ("file", "system_schemas")
    with pytest.raises(ConfigError) as info:
        from_dict(_doc([{"name": "x", "password": "p", "privileges": ["files", "superuser", 3]}]))
    assert info.value.problems == [
        "users[0].privileges[0]: unknown privilege 'files'; did you mean 'file'?",
        "users[0].privileges[1]: unknown privilege 'superuser'; expected one of file, system_schemas, admin, "
        "dynamic_sql or 'all'",
        "users[0].privileges[2]: unknown privilege 3; expected one of file, system_schemas, admin, dynamic_sql "
        "or 'all'",
    ]
    with pytest.raises(ConfigError) as info:
        from_dict(_doc([{"name": "x", "password": "p", "privileges": {"file": True}}]))
    assert info.value.problems == ["users[0].privileges: must be 'all' or a list of file, system_schemas, admin, "
                                   "dynamic_sql, got a mapping"]


_WORDS = [b"SELECT", b"FROM", b"rel_0", b".", b"t", b"`", b"'", b'"', b"\\", b"/*!", b"*/", b"/*M!1", b"--", b"#",
          b"\n", b" ", b",", b"(", b")", b";", b"PREPARE", b"EXECUTE", b"IMMEDIATE", b"@q", b"JOIN", b"ON", b"USE",
          b"SHOW", b"TABLES", b"IN", b"DATABASE", b"BEGIN", b"NOT", b"ATOMIC", b"SET", b"GLOBAL", b"=", b"x\xff"]


def test_never_raises() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=400, deadline=None)
    @hypothesis.given(st.one_of(st.binary(max_size=80), st.lists(st.sampled_from(_WORDS), max_size=30).map(b" ".join),
                                st.lists(st.sampled_from(_WORDS), max_size=30).map(b"".join)))
    def run(sql: bytes) -> None:
        for g in (U, Guard(CFG, CFG.users["many"])):
            r = g.check(sql, "sbtest")
            assert r is None or r.code in (1044, 1049, 1142, 1227, 1235)

    run()
