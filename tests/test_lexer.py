"""Lexer / digest: MySQL lexical rules, digest stability, sqlglot-parseable digests, Cython == Python twin."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from types import ModuleType

import pytest
import sqlglot
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ddm._py import lexer as py_lexer

try:
    from ddm_core import lexer as cy_lexer
except ImportError:  # extension not built: the twin is still tested
    cy_lexer = None

IMPLS = [pytest.param(py_lexer, id="py")]
if cy_lexer is not None:
    IMPLS.append(pytest.param(cy_lexer, id="cy"))
needs_cy = pytest.mark.skipif(cy_lexer is None, reason="ddm_core.lexer is not built")

L = py_lexer  # kind constants (the same numbers in both modules)


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


def tokens(lx: object) -> list[tuple[int, bytes]]:
    return [(lx.kind(i), lx.text(i)) for i in range(lx.ntokens)]  # type: ignore[attr-defined]


def values(lx: object) -> list[object]:
    return [lx.slot_value(k) for k in range(len(lx.slots))]  # type: ignore[attr-defined]


# --- sysbench and driver/ORM statements: the digest must parse with sqlglot's MySQL dialect ---

SYSBENCH = [
    b"SELECT c FROM sbtest1 WHERE id=5012",
    b"SELECT c FROM sbtest7 WHERE id BETWEEN 4980 AND 5079",
    b"SELECT SUM(k) FROM sbtest3 WHERE id BETWEEN 4980 AND 5079",
    b"SELECT c FROM sbtest1 WHERE id BETWEEN 4980 AND 5079 ORDER BY c",
    b"SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 4980 AND 5079 ORDER BY c",
    b"UPDATE sbtest1 SET k=k+1 WHERE id=5012",
    b"UPDATE sbtest1 SET c='18227035498-20212227391-35098209183-64467358813-98062339017' WHERE id=5012",
    b"DELETE FROM sbtest1 WHERE id=5012",
    b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (5012, 4993, '68487932199-96439406143-93774651418', "
    b"'22195207048-70116052123-74140395089')",
    b"INSERT INTO sbtest1(k, c, pad) VALUES(4993, '68487932199', '22195207048'),(1, 'a', 'b'),(2, 'c', 'd')",
    b"CREATE TABLE sbtest1(\n  id INTEGER NOT NULL AUTO_INCREMENT,\n  k INTEGER DEFAULT '0' NOT NULL,\n"
    b"  c CHAR(120) DEFAULT '' NOT NULL,\n  pad CHAR(60) DEFAULT '' NOT NULL,\n  PRIMARY KEY (id)\n)"
    b" /*! ENGINE = innodb */",
    b"CREATE INDEX k_1 ON sbtest1(k)",
    b"DROP TABLE IF EXISTS sbtest1",
    b"BEGIN",
    b"COMMIT",
]

DRIVERS = [
    b"SET NAMES utf8mb4",
    b"SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'",
    b"SET autocommit=0",
    b"SET autocommit = 1",
    b"SET SESSION sql_mode = 'STRICT_TRANS_TABLES'",
    b"SET @@session.transaction_isolation = 'READ-COMMITTED'",
    b"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    b"SET @a := 5",
    b"SELECT @@version",
    b"SELECT @@version_comment LIMIT 1",
    b"SELECT @@session.autocommit, @@SESSION.transaction_isolation",
    b"SELECT DATABASE(), USER()",
    b"SELECT CONNECTION_ID()",
    b"SELECT 1",
    b"select 1;",
    b"SHOW DATABASES",
    b"SHOW TABLES",
    b"SHOW FULL TABLES FROM `app` LIKE 'probably\\_not'",
    b"SHOW VARIABLES LIKE 'sql_mode'",
    b"SHOW WARNINGS",
    b"SHOW CREATE TABLE users",
    b"USE app",
    b"USE `app`",
    b"START TRANSACTION",
    b"START TRANSACTION READ ONLY",
    b"ROLLBACK",
    b"SAVEPOINT sp1",
    b"ROLLBACK TO SAVEPOINT sp1",
    b"DESCRIBE users",
    b"EXPLAIN SELECT * FROM users WHERE id = 3",
    b"SELECT `users`.`id` AS `users_id`, `users`.`name` AS `users_name` FROM `users` "
    b"WHERE `users`.`id` = 42 LIMIT 1",
    b"SELECT u.id, u.name FROM users AS u INNER JOIN orders o ON o.user_id = u.id "
    b"WHERE u.name LIKE 'a%' AND o.total >= 10.50 ORDER BY u.id DESC LIMIT 10 OFFSET 20",
    b"SELECT * FROM users WHERE id IN (1, 2, 3) AND deleted_at IS NULL AND active = TRUE",
    b"SELECT * FROM t WHERE a IS NOT NULL OR b <=> NULL OR c != -5 OR d <> 'x'",
    b"SELECT COUNT(*) AS cnt FROM orders GROUP BY user_id HAVING COUNT(*) > 2",
    b"SELECT id FROM t WHERE created > NOW() - INTERVAL 1 DAY",
    b"SELECT CASE WHEN a = 1 THEN 'one' ELSE 'other' END FROM t",
    b"SELECT * FROM t WHERE id = 5 FOR UPDATE",
    b"SELECT * FROM t WHERE id = 5 LOCK IN SHARE MODE",
    b"SELECT * FROM t LIMIT 10, 20",
    b"SELECT doc->'$.a', doc->>'$.b' FROM j",
    b"SELECT a DIV 2, a MOD 3, a XOR b, a || b, a && b, a << 2, ~a FROM t",
    b"SELECT /*+ MAX_EXECUTION_TIME(1000) */ id FROM t",
    b"SELECT _utf8mb4'caf\xc3\xa9' COLLATE utf8mb4_bin, N'x', X'0A', 0x0A, B'01', 0b01",
    b"SELECT 'a' 'b' \"c\"",
    b"SELECT * FROM t WHERE name = _binary'\\0\\n'",
    b"SELECT 1.5, .5, 1e3, 1.5E-3, 2. FROM dual",
    b"INSERT INTO t (a, b) VALUES (1, 'x') ON DUPLICATE KEY UPDATE b = VALUES(b)",
    b"INSERT IGNORE INTO t SET a = 1, b = 'two'",
    b"REPLACE INTO t (a) VALUES (1)",
    b"UPDATE t SET a = a + 1, b = NULL WHERE c = 'x' LIMIT 5",
    b"DELETE FROM t WHERE id > 100 ORDER BY id LIMIT 10",
    b"SELECT a FROM t UNION ALL SELECT b FROM u",
    b"SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.t_id = t.id)",
    b"SELECT id FROM t WHERE id = ?",
    b"INSERT INTO t VALUES (?, ?, ?)",
    b"TRUNCATE TABLE t",
    b"ALTER TABLE t ADD COLUMN x INT DEFAULT 0",
    b"CREATE DATABASE IF NOT EXISTS app",
    b"SELECT * FROM `db`.`t` WHERE `a``b` = 1 -- trailing comment",
    b"SELECT * FROM t # hash comment\nWHERE a = 1",
    b"SELECT /* plain */ a FROM t",
]


@pytest.mark.parametrize("sql", SYSBENCH + DRIVERS)
def test_digest_parses_with_sqlglot(impl: ModuleType, sql: bytes) -> None:
    digest = impl.lex(sql).digest
    logging.getLogger("sqlglot").setLevel(logging.ERROR)  # REPLACE INTO: sqlglot warns, returns a Command
    assert sqlglot.parse_one(digest.decode(), read="mysql") is not None, digest


@pytest.mark.parametrize("sql", SYSBENCH + DRIVERS)
def test_digest_is_idempotent(impl: ModuleType, sql: bytes) -> None:
    digest = impl.lex(sql).digest
    assert impl.lex(digest).digest == digest


SYSBENCH_DIGESTS = {
    SYSBENCH[0]: b"SELECT c FROM sbtest1 WHERE id = ?",
    SYSBENCH[1]: b"SELECT c FROM sbtest7 WHERE id BETWEEN ? AND ?",
    SYSBENCH[2]: b"SELECT SUM(k) FROM sbtest3 WHERE id BETWEEN ? AND ?",
    SYSBENCH[4]: b"SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN ? AND ? ORDER BY c",
    SYSBENCH[5]: b"UPDATE sbtest1 SET k = k + ? WHERE id = ?",
    SYSBENCH[6]: b"UPDATE sbtest1 SET c = ? WHERE id = ?",
    SYSBENCH[7]: b"DELETE FROM sbtest1 WHERE id = ?",
    SYSBENCH[8]: b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (?, ?, ?, ?)",
    SYSBENCH[9]: b"INSERT INTO sbtest1(k, c, pad) VALUES(?, ?, ?), (?, ?, ?), (?, ?, ?)",
}


@pytest.mark.parametrize("sql", list(SYSBENCH_DIGESTS))
def test_sysbench_digests(impl: ModuleType, sql: bytes) -> None:
    assert impl.lex(sql).digest == SYSBENCH_DIGESTS[sql]


# --- digest canonical form ---


@pytest.mark.parametrize(
    ("sql", "digest"),
    [
        (b"select  c\n\tfrom T where ID = 1", b"SELECT c FROM T WHERE ID = ?"),
        (b"SELECT a,b , c FROM t", b"SELECT a, b, c FROM t"),
        (b"SELECT COUNT( * ) FROM t", b"SELECT COUNT(*) FROM t"),
        (b"SELECT count (*) FROM t", b"SELECT count (*) FROM t"),  # whitespace before ( is kept
        (b"SELECT t . c, t.*, `t` . `c` FROM db . t", b"SELECT t.c, t.*, `t`.`c` FROM db.t"),
        (b"SELECT @a . b, 1 . 5, (. 5)", b"SELECT @a . b, ? . ?, (. ?)"),  # . joins names only
        (b"SELECT a FROM t WHERE x IN (1,2, 3)", b"SELECT a FROM t WHERE x IN (?, ?, ?)"),
        (b"SELECT a FROM t WHERE x=-1", b"SELECT a FROM t WHERE x = - ?"),
        (b"SELECT 1--1", b"SELECT ? - - ?"),  # -- without a space is two minus signs
        (b"SELECT 1 -- 1", b"SELECT ?"),
        (b"SELECT 1 --\t1\nFROM t", b"SELECT ? FROM t"),
        (b"SELECT 1 --", b"SELECT ?"),
        (b"SELECT 1 # x\n, 2", b"SELECT ?, ?"),
        (b"SELECT /* c */ 1 /**/", b"SELECT ?"),
        (b"SELECT /*! STRAIGHT_JOIN */ a FROM t", b"SELECT /*! STRAIGHT_JOIN */ a FROM t"),
        (b"/*!50001 CREATE ALGORITHM=UNDEFINED */ VIEW v", b"/*!50001 CREATE ALGORITHM=UNDEFINED */ VIEW v"),
        (b"SELECT /*+ BKA(t) */ 1", b"SELECT /*+ BKA(t) */ ?"),
        (b"SELECT /*M!100101 1, */ 2", b"SELECT /*M!100101 1, */ ?"),
        (b"SELECT 1;", b"SELECT ?"),
        (b"SELECT 1 ; ; ", b"SELECT ?"),
        (b"SELECT 1; SELECT 'a'", b"SELECT ?; SELECT ?"),
        (b"SELECT NULL, TRUE, false", b"SELECT NULL, TRUE, FALSE"),
        (b"SELECT ?, ? FROM t", b"SELECT ?, ? FROM t"),
        (b"SELECT `Select`, `a``b` FROM `T`", b"SELECT `Select`, `a``b` FROM `T`"),
        (b"select t.select, t.from from t", b"SELECT t.select, t.from FROM t"),  # after t. a word is a name
        (b"SELECT @a, @@GLOBAL.max_connections", b"SELECT @a, @@GLOBAL.max_connections"),
        (b"SELECT 'a' 'b', 'c'", b"SELECT ?, ?"),
        (b"SELECT _utf8mb4 'x', _UTF8MB4'y', _foo 'z'", b"SELECT ?, ?, _foo ?"),
        (b"SELECT a<=>b, a:=b, a->'$.x', a->>'$.y'", b"SELECT a <=> b, a := b, a -> ?, a ->> ?"),
        (b"SELECT {d '2024-01-01'}", b"SELECT { d ? }"),
        (b"SELECT caf\xc3\xa9 FROM `t\xc3\xa9`", b"SELECT caf\xc3\xa9 FROM `t\xc3\xa9`"),
        (b"", b""),
        (b"  -- only a comment\n", b""),
    ],
)
def test_digest(impl: ModuleType, sql: bytes, digest: bytes) -> None:
    assert impl.lex(sql).digest == digest


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b"SELECT c FROM sbtest1 WHERE id=5012", b"select c from sbtest1 where id = 1 /* other */"),
        (b"SELECT 'x' FROM t", b"SELECT \"it''s\" FROM t"),
        (b"SELECT 1.5e3, X'0a'", b"SELECT 7, 0b1"),
        (b"UPDATE t SET c = 'a' 'b' WHERE id = 1", b"UPDATE t SET c = _utf8mb4'z' WHERE id = 99"),
        (b"SELECT a FROM t WHERE b = ?", b"SELECT a FROM t WHERE b = 42"),
    ],
)
def test_same_digest(impl: ModuleType, a: bytes, b: bytes) -> None:
    assert impl.lex(a).digest == impl.lex(b).digest


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b"SELECT c FROM sbtest1 WHERE id = 1", b"SELECT c FROM sbtest2 WHERE id = 1"),
        (b"SELECT a FROM t WHERE x IN (1, 2)", b"SELECT a FROM t WHERE x IN (1, 2, 3)"),
        (b"SELECT a FROM t WHERE x = NULL", b"SELECT a FROM t WHERE x = 1"),
        (b"SELECT a FROM t WHERE x = -1", b"SELECT a FROM t WHERE x = 1"),
        (b"SELECT `a` FROM t", b"SELECT a FROM t"),
        (b"SELECT a FROM t", b"SELECT A FROM t"),
        (b"SELECT /*! 1 */ 2", b"SELECT /*! 3 */ 2"),
        (b"SELECT @a", b"SELECT @b"),
    ],
)
def test_different_digest(impl: ModuleType, a: bytes, b: bytes) -> None:
    assert impl.lex(a).digest != impl.lex(b).digest


# --- tokens ---


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            b"SELECT c FROM t",
            [(L.T_KEYWORD, b"SELECT"), (L.T_IDENT, b"c"), (L.T_KEYWORD, b"FROM"), (L.T_IDENT, b"t")],
        ),
        (
            b"a$b 1abc 1e 0x 0x1g 0X1 0b2 $x",
            [(L.T_IDENT, w) for w in b"a$b 1abc 1e 0x 0x1g 0X1 0b2 $x".split()],
        ),
        (
            b"1 1.5 .5 1. 1e3 1E+3 1.5e-3 007",
            [(L.T_NUMBER, w) for w in b"1 1.5 .5 1. 1e3 1E+3 1.5e-3 007".split()],
        ),
        (b"1e5x", [(L.T_NUMBER, b"1e5"), (L.T_IDENT, b"x")]),
        (b"1.5e", [(L.T_NUMBER, b"1.5"), (L.T_IDENT, b"e")]),
        (b"-1", [(L.T_OPERATOR, b"-"), (L.T_NUMBER, b"1")]),
        (b"X'0a' x'' B'01' b'' 0xFF 0b10", [(L.T_HEX, w) for w in b"X'0a' x'' B'01' b'' 0xFF 0b10".split()]),
        (b"X'0' X'zz' B'12'", [(L.T_ERROR, b"X'0'"), (L.T_ERROR, b"X'zz'"), (L.T_ERROR, b"B'12'")]),
        (b"'a' \"b\" N'c' n'd'", [(L.T_STRING, b"'a' \"b\""), (L.T_STRING, b"N'c'"), (L.T_STRING, b"n'd'")]),
        (b"N'c' 'd'", [(L.T_STRING, b"N'c' 'd'")]),
        (
            b"'a' /* x */ 'b' # y\n 'c', 'd'",
            [(L.T_STRING, b"'a' /* x */ 'b' # y\n 'c'"), (L.T_PUNCT, b","), (L.T_STRING, b"'d'")],
        ),
        (b"'a' /*! 'b' */", [(L.T_STRING, b"'a'"), (L.T_COMMENT_EXEC, b"/*! 'b' */")]),
        (
            b"_utf8mb4'x' _binary 0x41 _latin1 X'41' _ascii",
            [
                (L.T_STRING, b"_utf8mb4'x'"),
                (L.T_HEX, b"_binary 0x41"),
                (L.T_HEX, b"_latin1 X'41'"),
                (L.T_IDENT, b"_ascii"),
            ],
        ),
        (
            b"`a``b` `c`.`d`",
            [
                (L.T_QUOTED_IDENT, b"`a``b`"),
                (L.T_QUOTED_IDENT, b"`c`"),
                (L.T_PUNCT, b"."),
                (L.T_QUOTED_IDENT, b"`d`"),
            ],
        ),
        (
            b"db.1t t.select `t`.5",
            [
                (L.T_IDENT, b"db"),
                (L.T_PUNCT, b"."),
                (L.T_IDENT, b"1t"),
                (L.T_IDENT, b"t"),
                (L.T_PUNCT, b"."),
                (L.T_IDENT, b"select"),
                (L.T_QUOTED_IDENT, b"`t`"),
                (L.T_PUNCT, b"."),
                (L.T_IDENT, b"5"),
            ],
        ),
        (b"select.x", [(L.T_IDENT, b"select"), (L.T_PUNCT, b"."), (L.T_IDENT, b"x")]),
        (b"t .5", [(L.T_IDENT, b"t"), (L.T_NUMBER, b".5")]),
        (
            b"@a @a.b @'q x' @\"q\" @`q` @@v @@session.v @ @@",
            [(L.T_VARIABLE, w) for w in (b"@a", b"@a.b", b"@'q x'", b'@"q"', b"@`q`", b"@@v", b"@@session.v")]
            + [(L.T_OPERATOR, b"@"), (L.T_OPERATOR, b"@"), (L.T_OPERATOR, b"@")],
        ),
        (
            b"<=> := -> ->> << >> != <> <= >= || && = < > ! + - * / % & | ^ ~ :",
            [
                (L.T_OPERATOR, w)
                for w in b"<=> := -> ->> << >> != <> <= >= || && = < > ! + - * / % & | ^ ~ :".split()
            ],
        ),
        (b"( ) , . ; { }", [(L.T_PUNCT, w) for w in b"( ) , . ; { }".split()]),
        (b"?", [(L.T_PARAM, b"?")]),
        (
            b"/*!50001 x */ /*+ h */ /*M!1 y */",
            [
                (L.T_COMMENT_EXEC, b"/*!50001 x */"),
                (L.T_COMMENT_EXEC, b"/*+ h */"),
                (L.T_COMMENT_EXEC, b"/*M!1 y */"),
            ],
        ),
        (b"'abc", [(L.T_ERROR, b"'abc")]),
        (b"'abc\\'", [(L.T_ERROR, b"'abc\\'")]),
        (b"`abc", [(L.T_ERROR, b"`abc")]),
        (b"1 /* abc", [(L.T_NUMBER, b"1"), (L.T_ERROR, b"/* abc")]),
        (b"'a' 'b", [(L.T_ERROR, b"'a' 'b")]),
        (b"\\ [ ] \x00", [(L.T_ERROR, b"\\"), (L.T_ERROR, b"["), (L.T_ERROR, b"]"), (L.T_ERROR, b"\x00")]),
        (b"\xc3\xa9t\xc3\xa9", [(L.T_IDENT, b"\xc3\xa9t\xc3\xa9")]),
    ],
)
def test_tokens(impl: ModuleType, sql: bytes, expected: list[tuple[int, bytes]]) -> None:
    assert tokens(impl.lex(sql)) == expected


def test_keywords(impl: ModuleType) -> None:
    lx = impl.lex(b"select Distinct a from t where b Between 1 and 2 or c is not null")
    kws = [lx.keyword(i) for i in range(lx.ntokens) if lx.kind(i) == L.T_KEYWORD]
    assert kws == [
        b"SELECT",
        b"DISTINCT",
        b"FROM",
        b"WHERE",
        b"BETWEEN",
        b"AND",
        b"OR",
        b"IS",
        b"NOT",
        b"NULL",
    ]
    assert lx.keyword(2) == b""  # `a` is an identifier
    assert impl.lex(b"SELECT count(*), now(), int8 FROM t").kind(1) == L.T_IDENT  # functions and types too


@needs_cy
def test_keyword_lists_agree() -> None:
    assert cy_lexer.KEYWORDS == py_lexer.KEYWORDS
    assert cy_lexer.CHARSETS == py_lexer.CHARSETS
    for name in (
        "T_KEYWORD",
        "T_IDENT",
        "T_QUOTED_IDENT",
        "T_NUMBER",
        "T_STRING",
        "T_HEX",
        "T_PARAM",
        "T_OPERATOR",
        "T_PUNCT",
        "T_VARIABLE",
        "T_COMMENT_EXEC",
        "T_ERROR",
    ):
        assert getattr(cy_lexer, name) == getattr(py_lexer, name)
    for kw in py_lexer.KEYWORDS:  # every keyword is found by the C hash table, in any case
        assert cy_lexer.lex(kw.lower()).first_keyword == kw


def test_first_keyword_and_statement_count(impl: ModuleType) -> None:
    cases = [
        (b"select 1", b"SELECT", 1),
        (b"  begin", b"BEGIN", 1),
        (b"(SELECT 1) UNION (SELECT 2)", b"SELECT", 1),
        (b"/*!40101 SET NAMES utf8 */", b"", 1),
        (b"SELECT 1; SELECT 2;", b"SELECT", 2),
        (b"SELECT 1;;SELECT 2;; ;", b"SELECT", 2),
        (b"SELECT ';' ; -- ;\n", b"SELECT", 1),
        (b"", b"", 0),
        (b" ; ;", b"", 0),
        (b"foo", b"", 1),
    ]
    for sql, kw, count in cases:
        lx = impl.lex(sql)
        assert (lx.first_keyword, lx.statement_count) == (kw, count), sql


# --- literal values ---


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (b"1 007 18446744073709551616 123456789012345678", [1, 7, 18446744073709551616, 123456789012345678]),
        (b"1.5 .5 1. 0.10", [Decimal("1.5"), Decimal("0.5"), Decimal("1"), Decimal("0.10")]),
        (b"1e3 1.5E-3 .5e1", [1000.0, 0.0015, 5.0]),
        (
            b"X'0A' x'' 0x0A 0xA 0x100 B'1' B'100000001' b'' 0b01",
            [b"\n", b"", b"\n", b"\n", b"\x01\x00", b"\x01", b"\x01\x01", b"", b"\x01"],
        ),
        (b"'abc', \"abc\", ''", [b"abc", b"abc", b""]),
        (rb"'\0\'\"\b\n\r\t\Z\\\%\_\x\q'", [b"\x00'\"\x08\n\r\t\x1a\\\\%\\_xq"]),
        (b'\'it\'\'s\', "say ""hi""", \'a"b\', "a\'b"', [b"it's", b'say "hi"', b'a"b', b"a'b"]),
        (b"'a' 'b' \"c\" /* x */ 'd'", [b"abcd"]),
        (
            b"_utf8mb4'caf\xc3\xa9' N'x' _binary 'y' 'z' _latin1 X'41' _binary 0b1",
            [b"caf\xc3\xa9", b"x", b"yz", b"A", b"\x01"],
        ),
        (b"? 1 ?", [py_lexer.PARAM, 1, py_lexer.PARAM]),
        (b"9" * 5000, [int("9" * 1000) * (10**4000) + int("9" * 4000)]),  # beyond int()'s 4300-digit limit
    ],
)
def test_slot_values(impl: ModuleType, sql: bytes, expected: list[object]) -> None:
    got = values(impl.lex(sql))
    if impl is cy_lexer:
        got = [py_lexer.PARAM if v is cy_lexer.PARAM else v for v in got]
    assert got == expected
    assert [type(v) for v in got] == [type(v) for v in expected]


def test_slots_point_at_literals(impl: ModuleType) -> None:
    sql = b"UPDATE t SET a = 'x', b = -2.5 WHERE id IN (?, 0x1F, _utf8mb4 'q') AND c = NULL"
    lx = impl.lex(sql)
    assert [lx.text(i) for i in lx.slots] == [b"'x'", b"2.5", b"?", b"0x1F", b"_utf8mb4 'q'"]
    assert [sql[lx.start(i) : lx.end(i)] for i in lx.slots] == [lx.text(i) for i in lx.slots]


def test_index_errors(impl: ModuleType) -> None:
    lx = impl.lex(b"SELECT 1")
    for bad in (-1, 2):
        for method in (lx.kind, lx.start, lx.end, lx.text, lx.keyword):
            with pytest.raises(IndexError):
                method(bad)
    with pytest.raises(IndexError):
        lx.slot_value(1)
    with pytest.raises(IndexError):
        lx.slot_value(-1)


@needs_cy
def test_many_tokens_and_long_input() -> None:
    # past the inline token/slot arrays and the stack digest buffer
    sql = b"INSERT INTO t VALUES " + b", ".join(b"(%d, 'v%d', NULL)" % (i, i) for i in range(500))
    for mod in (cy_lexer, py_lexer):
        lx = mod.lex(sql)
        assert len(lx.slots) == 1000
        assert lx.slot_value(998) == 499 and lx.slot_value(999) == b"v499"
    assert cy_lexer.lex(sql).digest == py_lexer.lex(sql).digest


# --- hypothesis: Cython == Python, literal substitution, spans ---


def snapshot(mod: ModuleType, sql: bytes) -> tuple:
    lx = mod.lex(sql)
    toks = [(lx.kind(i), lx.start(i), lx.end(i), lx.keyword(i)) for i in range(lx.ntokens)]
    vals = []
    for v in values(lx):
        if v is mod.PARAM:
            v = "PARAM"
        vals.append((type(v).__name__, repr(v)))  # repr: 1 == 1.0 == Decimal(1) must not hide a difference
    return lx.digest, toks, lx.slots, vals, lx.first_keyword, lx.statement_count


def check_invariants(mod: ModuleType, sql: bytes) -> None:
    lx = mod.lex(sql)
    pos = 0
    for i in range(lx.ntokens):
        assert pos <= lx.start(i) < lx.end(i) <= len(sql)
        assert not sql[pos : lx.start(i)].strip() or re.search(
            rb"[#/-]", sql[pos : lx.start(i)]
        )  # only comments
        pos = lx.end(i)
    assert all(lx.kind(i) in (L.T_NUMBER, L.T_STRING, L.T_HEX, L.T_PARAM) for i in lx.slots)
    assert lx.digest.count(b"?") >= len(lx.slots)


PIECES = [
    "SELECT",
    "select",
    "FROM",
    "where",
    "IN",
    "and",
    "NULL",
    "true",
    "t",
    "col",
    "a1",
    "x",
    "X",
    "b",
    "B",
    "n",
    "N",
    "e",
    "E",
    "_utf8mb4",
    "_binary",
    "_foo",
    "$",
    "é",
    "\u4e2d",
    " ",
    "  ",
    "\n",
    "\t",
    "\r\n",
    "'",
    "''",
    '"',
    "`",
    "``",
    "\\",
    "\\'",
    "\\\\",
    "--",
    "-- ",
    "#",
    "/*",
    "*/",
    "/*!",
    "/*!50001",
    "/*+",
    "/*M!",
    "@",
    "@@",
    ".",
    ",",
    ";",
    "(",
    ")",
    "{",
    "}",
    "?",
    "0",
    "1",
    "12",
    "0x",
    "0b",
    "0x1F",
    "0b101",
    "1.5",
    ".5",
    "1e3",
    "1e",
    "+",
    "-",
    "*",
    "/",
    "=",
    "<",
    ">",
    "!",
    "|",
    "&",
    ":",
    "^",
    "~",
    "%",
    "[",
    "\x00",
    "\x7f",
    "\xff",
    "X'0a'",
    "'it''s'",
    "'a\\'b'",
    "`a``b`",
    "session",
    "@@session.x",
    "@'h'",
]

sqlish = st.lists(st.sampled_from(PIECES), max_size=30).map(
    lambda ps: "".join(ps).encode("utf-8", "surrogatepass")
)
sqlish_bytes = st.one_of(sqlish, st.binary(max_size=60))


@needs_cy
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sqlish_bytes)
@example(b"'a' -- x\n'b'")
@example(b"_utf8mb4\n'x' 'y")
@example(b"t.`x`.5.e")
def test_cython_equals_python(sql: bytes) -> None:
    assert snapshot(cy_lexer, sql) == snapshot(py_lexer, sql)
    check_invariants(cy_lexer, sql)


@needs_cy
@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(SYSBENCH + DRIVERS), st.data())
def test_cython_equals_python_on_mutated_corpus(sql: bytes, data: st.DataObject) -> None:
    # cut/insert at random places of real statements: nearly-valid SQL
    i = data.draw(st.integers(0, len(sql)))
    j = data.draw(st.integers(i, len(sql)))
    mutated = sql[:i] + data.draw(st.sampled_from(PIECES)).encode() + sql[j:]
    assert snapshot(cy_lexer, mutated) == snapshot(py_lexer, mutated)


def mysql_string(value: bytes, quote: bytes, doubled: bool) -> bytes:
    """value as a MySQL string literal: backslash escapes, the quote doubled or backslash-escaped."""
    out = value.replace(b"\\", b"\\\\").replace(b"\x00", b"\\0").replace(b"\n", b"\\n")
    out = out.replace(quote, quote + quote if doubled else b"\\" + quote)
    return quote + out + quote


@st.composite
def literal(draw: st.DrawFn) -> tuple[bytes, object]:
    """(literal text, its value)."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        v = draw(st.integers(0, 10**30))
        return str(v).encode(), v
    if choice == 1:
        a, b = draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))
        text = f"{a}.{b}".encode()
        return text, Decimal(text.decode())
    if choice == 2:
        a, ex = draw(st.integers(0, 999)), draw(st.integers(-20, 20))
        text = f"{a}.5e{ex}".encode()
        return text, float(text)
    if choice in (3, 4, 5):
        v = draw(
            st.binary(max_size=12) | st.text(max_size=8).map(lambda s: s.encode("utf-8", "surrogatepass"))
        )
        text = mysql_string(v, draw(st.sampled_from([b"'", b'"'])), draw(st.booleans()))
        prefix = draw(st.sampled_from([b"", b"", b"_utf8mb4", b"_binary ", b"N"]))
        if prefix == b"N" and text[:1] != b"'":
            prefix = b""
        return prefix + text, v
    if choice == 6:
        v = draw(st.binary(max_size=8))
        return draw(st.sampled_from([b"X'%s'", b"x'%s'"])) % v.hex().encode(), v
    if choice == 7:
        v = draw(st.binary(min_size=1, max_size=8))
        return b"0x" + v.hex().upper().encode(), v
    if choice == 8:
        bits = draw(st.text("01", min_size=1, max_size=20))
        v = int(bits, 2).to_bytes((len(bits) + 7) // 8, "big")
        return draw(st.sampled_from([b"B'%s'", b"0b%s"])) % bits.encode(), v
    return b"?", "PARAM"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SYSBENCH + DRIVERS), st.data())
def test_literal_substitution_keeps_digest(sql: bytes, data: st.DataObject) -> None:
    for mod in [py_lexer] + ([cy_lexer] if cy_lexer else []):
        lx = mod.lex(sql)
        new, pos, expect = [], 0, []
        for i in lx.slots:
            text, value = data.draw(literal())
            new += [sql[pos : lx.start(i)], text]
            expect.append((text, value))
            pos = lx.end(i)
        out = b"".join(new) + sql[pos:]
        lx2 = mod.lex(out)
        assert lx2.digest == lx.digest, out
        assert [lx2.text(i) for i in lx2.slots] == [t for t, _ in expect]  # spans point at the literals
        got = ["PARAM" if v is mod.PARAM else v for v in values(lx2)]
        assert got == [v for _, v in expect], out


def shape(lx: object) -> list[int]:
    """Token kinds up to what the digest erases (literal -> ?, keyword case); trailing ';' dropped."""
    out = []
    for i in range(lx.ntokens):  # type: ignore[attr-defined]
        k = lx.kind(i)  # type: ignore[attr-defined]
        out.append(
            L.T_PARAM if k in (L.T_NUMBER, L.T_STRING, L.T_HEX) else L.T_IDENT if k == L.T_KEYWORD else k
        )
    while out and out[-1] == L.T_PUNCT and lx.text(len(out) - 1) == b";":  # type: ignore[attr-defined]
        out.pop()
    return out


@settings(max_examples=3000, deadline=None)
@given(sqlish_bytes)
@example(b"@a . b")
@example(b"t . select")
def test_digest_keeps_token_structure(sql: bytes) -> None:
    # plans name tokens by index: every statement with one digest must have the digest's token structure
    for mod in [py_lexer] + ([cy_lexer] if cy_lexer else []):
        lx = mod.lex(sql)
        again = mod.lex(lx.digest)
        assert shape(again) == shape(lx)
        assert again.digest == lx.digest
