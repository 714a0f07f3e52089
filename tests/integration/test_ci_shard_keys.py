"""String shard keys under a case-insensitive collation, through ddm and against one plain MariaDB (the oracle).

MariaDB compares a utf8mb4_general_ci column case- and accent-insensitively and ignores trailing spaces, so
`WHERE session_id = 'ABC  '` finds the row stored as 'abc'. ddm must route such a value to the shard holding the
row: hash_mod hashes string keys by their collation's equality (`key_collation: ci`, the default). A VARBINARY key
with `key_collation: binary` keeps exact bytes: 'abc' and 'ABC' are two rows there.

Rows are inserted in one spelling and selected (text protocol: plan-cache misses and point-route hits; prepared
statements: the execute point route), updated and deleted in others; every answer is compared with the oracle's,
and the tables' contents at the end. The last test checks the hash fold against the server itself: every BMP
character (and a sample of the supplementary planes) with the same utf8mb4_general_ci weight must fold alike.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from ddm_fixtures import NO_TLS, RawClient, ServerError, ddm_config, free_port, start_ddm

from ddm.config import ShardStrategy
from ddm.tools import sandbox as sb
from ddm_core import shard as cshard

pytestmark = pytest.mark.integration

DB = "cik"
ORACLE = "cik_oracle"
COLLATE = "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
RULES = {
    DB: {
        "datasources": {"ds${0..3}": {"node": "n${[0, 1, 0, 1]}", "database": "cik_${0..3}"}},
        "tables": {
            # key_collation defaults to ci; two hash functions on the one key (data source, then table)
            "sess": {"nodes": "ds${0..3}.sess_${0..1}",
                     "database_strategy": {"column": "session_id", "algorithm": "hash_mod", "hash": "murmur3"},
                     "table_strategy": {"column": "session_id", "algorithm": "hash_mod"}},
            "tok": {"nodes": "ds${0..3}.tok", "key_collation": "binary",
                    "database_strategy": {"column": "token", "algorithm": "hash_mod"}},
        },
    },
}
PHYSICAL = {"sess": ("sess_0", "sess_1"), "tok": ("tok",)}
DDL = {
    "sess": "CREATE TABLE `{name}` (session_id VARCHAR(40) NOT NULL PRIMARY KEY, id INT NOT NULL, v INT NOT NULL) "
            + COLLATE,
    "tok": "CREATE TABLE `{name}` (token VARBINARY(40) NOT NULL PRIMARY KEY, id INT NOT NULL, v INT NOT NULL)",
}

# Stored spelling -> other spellings MariaDB finds it by under utf8mb4_general_ci.
KEYS = {
    "abc": ["ABC", "Abc", "abc  ", "aBC "],
    "Session-42": ["session-42", "SESSION-42   "],
    "élan": ["ELAN", "Élan", "elan ", "éLAN"],
    "Crème Brûlée": ["creme brulee", "CRÈME BRÛLÉE  "],
    "straße": ["STRASE", "strase "],  # general_ci: ß = s
    "key😀": ["KEY😁", "Key😀 "],  # general_ci: every supplementary character weighs U+FFFD
    "MiXeD_cAsE_key_with_a_longer_text": ["mixed_case_key_with_a_longer_text", "MIXED_CASE_KEY_WITH_A_LONGER_TEXT"],
    "zz": ["ZZ", "Zz  "],
}
TOKENS = [b"abc", b"ABC", b"abc ", b"Abc", b"\x00\xff", b"tok-1", b"TOK-1"]


def lit(v: Any) -> str:
    if isinstance(v, bytes):
        return "X'" + v.hex() + "'"
    if isinstance(v, int):
        return str(v)
    return "'" + v.replace("\\", "\\\\").replace("'", "''") + "'"


class Env:
    def __init__(self, box: sb.Sandbox, tmp_path: Any) -> None:
        self.box = box
        self.conns: list[Any] = []
        nodes = {}
        for node in box.nodes:
            p = box.primary(node)
            nodes[node] = {"host": "127.0.0.1", "port": p.port, "user": box.node_user,
                           "password": box.node_password}
        self.port = free_port()
        self.ddm = start_ddm(tmp_path, ddm_config(self.port, nodes, RULES, log_level="warning"), mode="thread")

    def node(self, node: str, db: str | None = None) -> Any:
        p = self.box.primary(node)
        c = pymysql.connect(host="127.0.0.1", port=p.port, user=self.box.node_user, password=self.box.node_password,
                            database=db, autocommit=True, charset="utf8mb4")
        self.conns.append(c)
        return c

    def through_ddm(self) -> Any:
        c = pymysql.connect(host="127.0.0.1", port=self.port, user="ddm", password="ddm", database=DB,
                            autocommit=True, charset="utf8mb4", **NO_TLS)
        self.conns.append(c)
        return c

    def close(self) -> None:
        for c in self.conns:
            try:
                c.close()
            except Exception:  # already closed
                pass
        self.ddm.stop()


def _create(env: Env) -> None:
    for node in env.box.nodes:
        with env.node(node).cursor() as cur:
            for i in range(4):
                if ("n0", "n1")[i % 2] == node:
                    cur.execute(f"DROP DATABASE IF EXISTS cik_{i}")
                    cur.execute(f"CREATE DATABASE cik_{i} {COLLATE}")
                    for table, names in PHYSICAL.items():
                        for name in names:
                            cur.execute(f"USE cik_{i}")
                            cur.execute(DDL[table].format(name=name))
            if node == "n1":
                cur.execute(f"DROP DATABASE IF EXISTS {ORACLE}")
                cur.execute(f"CREATE DATABASE {ORACLE} {COLLATE}")
                cur.execute(f"USE {ORACLE}")
                for table in PHYSICAL:
                    cur.execute(DDL[table].format(name=table))


@pytest.fixture(scope="module")
def env(sandbox: sb.Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = Env(sandbox, tmp_path_factory.mktemp("cikeys"))
    try:
        _create(e)
        yield e
    finally:
        e.close()


def run(conn: Any, sql: str) -> tuple[str, Any]:
    """("rows", rows) / ("affected", n) / ("error", code) of one statement."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            if cur.description is None:
                return "affected", cur.rowcount
            return "rows", cur.fetchall()
    except pymysql.err.MySQLError as e:
        return "error", e.args[0]


def test_byte_hashing_would_scatter_the_spellings() -> None:
    """The test has teeth: with exact-byte hashing (the old placement, `key_collation: binary`) the spellings of
    most keys land on other data sources than the stored one."""
    binary = cshard.make_shard_function(ShardStrategy("session_id", "hash_mod",
                                                      {"hash": "murmur3", "key_collation": "binary"}), 4)
    ci = cshard.make_shard_function(ShardStrategy("session_id", "hash_mod", {"hash": "murmur3"}), 4)
    moved = sum(binary.index(v) != binary.index(k) for k, vs in KEYS.items() for v in vs)
    assert moved >= 8
    assert all(ci.index(v) == ci.index(k) for k, vs in KEYS.items() for v in vs)


def test_case_and_trailing_spaces_agree_with_mariadb(env: Env) -> None:
    ddm, oracle = env.through_ddm(), env.node("n1", ORACLE)
    problems: list[str] = []

    def check(sql: str) -> None:
        got, want = run(ddm, sql), run(oracle, sql)
        if got != want:
            problems.append(f"{sql}\n  ddm:    {got}\n  oracle: {want}")

    rows = [(k, i, 0) for i, k in enumerate(KEYS)]
    for r in rows:  # one INSERT each: the point path of INSERT
        check(f"INSERT INTO sess (session_id, id, v) VALUES ({lit(r[0])}, {r[1]}, {r[2]})")
    check("INSERT INTO tok (token, id, v) VALUES "
          + ", ".join(f"({lit(t)}, {i}, 0)" for i, t in enumerate(TOKENS)))  # a multi-row INSERT, split by shard

    for stored, variants in KEYS.items():
        for v in [stored, *variants, stored]:  # the first of a shape plans, the rest hit the plan cache
            check(f"SELECT session_id, id, v FROM sess WHERE session_id = {lit(v)}")
            check(f"SELECT id FROM sess WHERE {lit(v)} = session_id")
            check(f"SELECT session_id, id FROM sess WHERE session_id IN ({lit(v)}, 'no such key') ORDER BY id")
            check(f"SELECT COUNT(*) FROM sess WHERE session_id = {lit(v)} AND id >= 0")
        # a duplicate in another spelling is a duplicate key on the stored row's shard
        check(f"INSERT INTO sess (session_id, id, v) VALUES ({lit(variants[0])}, 100, 0)")
        check(f"UPDATE sess SET v = v + 1 WHERE session_id = {lit(variants[-1])}")
        check(f"UPDATE sess SET v = v + 10 WHERE session_id IN ({lit(variants[0])}, {lit(variants[-1])})")
    check("SELECT session_id, id, v FROM sess ORDER BY id")
    check("SELECT COUNT(*) FROM sess WHERE session_id BETWEEN 'A' AND 'n'")

    for t in TOKENS:  # binary keys: exact bytes, every spelling its own row
        check(f"SELECT token, id FROM tok WHERE token = {lit(t)}")
        check(f"SELECT token, id FROM tok WHERE token = {lit(t.upper())}")
    check("SELECT token, id FROM tok WHERE token = 'abc'")
    check("UPDATE tok SET v = v + 1 WHERE token = 'ABC'")
    check("SELECT token, id, v FROM tok ORDER BY id")

    for i, variants in enumerate(KEYS.values()):
        if i % 2:
            check(f"DELETE FROM sess WHERE session_id = {lit(variants[-1])}")
    check("DELETE FROM sess WHERE session_id IN ('ZZ ', 'Abc')")
    check("SELECT session_id, id, v FROM sess ORDER BY id")
    assert not problems, "\n".join(problems)


def test_prepared_statements_route_like_text(env: Env) -> None:
    """COM_STMT_EXECUTE with the key as a string parameter (the point route of executes), ddm against the oracle
    through the same raw client."""
    ddm = RawClient(env.port, db=DB)
    p = env.box.primary("n1")
    oracle = RawClient(p.port, user=env.box.node_user, password=env.box.node_password, db=ORACLE)
    problems = []
    try:
        for c in (ddm, oracle):
            c.query("DELETE FROM tok")
            c.query("DELETE FROM sess")
        ins = [c.prepare("INSERT INTO sess (session_id, id, v) VALUES (?, ?, 0)") for c in (ddm, oracle)]
        sel = [c.prepare("SELECT session_id, id, v FROM sess WHERE session_id = ?") for c in (ddm, oracle)]
        upd = [c.prepare("UPDATE sess SET v = v + ? WHERE session_id = ?") for c in (ddm, oracle)]

        def both(stmts: list[tuple[int, int, int]], params: list[Any]) -> None:
            out = []
            for c, (sid, _, _) in zip((ddm, oracle), stmts, strict=True):
                try:
                    out.append(("rows", c.execute(sid, params)))
                except ServerError as e:
                    out.append(("error", e.code))
            if out[0] != out[1]:
                problems.append(f"{params}: ddm {out[0]} oracle {out[1]}")

        for i, stored in enumerate(KEYS):
            both(ins, [stored, i])
        for stored, variants in KEYS.items():
            for v in variants:
                both(sel, [v])
                both(sel, [v.encode()])
            both(upd, [1, variants[0]])
            both(sel, [stored])
            both(ins, [variants[-1], 100])  # duplicate key
        assert not problems, "\n".join(problems)
        assert sorted(ddm.query("SELECT session_id, id, v FROM sess")) == sorted(
            oracle.query("SELECT session_id, id, v FROM sess"))
    finally:
        ddm.close()
        oracle.close()


def test_fold_is_no_finer_than_general_ci(env: Env) -> None:
    """Every two characters utf8mb4_general_ci weighs alike hash alike under key_collation ci (the whole BMP and a
    sample of the supplementary planes, as the data node computes WEIGHT_STRING)."""
    conn = env.node("n1")
    cps = [cp for cp in range(1, 0x110000) if not 0xD800 <= cp <= 0xDFFF and (cp < 0x10000 or cp % 997 == 0)]
    with conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE cik_oracle.chars (cp INT PRIMARY KEY, ch VARCHAR(3)) " + COLLATE)
        for i in range(0, len(cps), 4000):
            cur.executemany("INSERT INTO cik_oracle.chars VALUES (%s, %s)", [(cp, chr(cp)) for cp in cps[i:i + 4000]])
        cur.execute("SELECT cp, HEX(WEIGHT_STRING(ch)) FROM cik_oracle.chars")
        weights = cur.fetchall()
    groups: dict[str, dict[bytes, int]] = collections.defaultdict(dict)
    for cp, w in weights:
        # inside a word, so that the trailing-space rule plays no part
        groups[w].setdefault(cshard.key_bytes("x" + chr(cp) + "y", "ci"), cp)
    split = {w: [hex(cp) for cp in f.values()][:4] for w, f in groups.items() if len(f) > 1}
    assert not split, f"{len(split)} general_ci weight(s) whose characters fold apart: {list(split.items())[:20]}"
    assert len(groups) > 30000  # the query saw the characters
