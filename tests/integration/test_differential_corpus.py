"""Differential test over the shapes of an outside corpus of sharded applications (layouts USR10 and SPLIT10 in
diff_fixtures.py, rules in diff_rules_corpus.yaml): the generator, comparison and DML sequence of
test_differential.py, run through ddm and against one plain MariaDB database holding the same rows.

- usr10: sharded by a user id over ten databases on ONE node (the physical tables keep the logical names),
  `orders` + binding `order_items`, broadcast `dict`, single tables `solo` on ds3 and `solo2` on ds7.
- split10: one table `t` split into t_0..t_9 inside one database by id mod 10.

Knobs: DDM_CORPUS_EXAMPLES (generated SELECTs per layout, default 300), DDM_CORPUS_DML_BATCHES (batches of 5 DML
statements per layout, default 20), DDM_CORPUS_AFTER (seeded SELECTs per layout after the DML, default 300),
DDM_CORPUS_SEED (that sweep's seed, default 123), DDM_CORPUS_DML_SEED (default 11). Run one layout with
`-k usr10` or `-k split10`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import pytest
from diff_fixtures import COLUMNS, DiffEnv, split10, usr10
from test_differential import (
    STATS,
    Mismatch,
    Query,
    check_contents,
    check_one,
    generated_dml,
    generated_selects,
    sweep,
)

pytestmark = pytest.mark.integration

__all__ = ["split10", "usr10"]  # the fixtures, re-exported for pytest

N_SELECT = int(os.environ.get("DDM_CORPUS_EXAMPLES", "300"))
N_DML_BATCHES = int(os.environ.get("DDM_CORPUS_DML_BATCHES", "20"))
N_AFTER = int(os.environ.get("DDM_CORPUS_AFTER", "300"))
SEED = int(os.environ.get("DDM_CORPUS_SEED", "123"))  # of the sweep after the DML
DML_SEED = int(os.environ.get("DDM_CORPUS_DML_SEED", "11"))


def _mariadb_desc_decimal_group(q: Query) -> bool:
    """MariaDB 10.11 (the oracle; found by this test) folds the NULL group into a neighbouring group when a query
    groups by a DECIMAL expression, orders by it DESC and has a DISTINCT aggregate:
        CREATE TABLE t (id INT PRIMARY KEY, c DECIMAL(10,2), n VARCHAR(10));
        INSERT INTO t VALUES (1, NULL, 'a'), (2, NULL, 'b'), (3, -5.00, 'a'), (4, 3.00, 'c'), (5, NULL, 'c');
        SELECT c * 2, COUNT(DISTINCT n), COUNT(*) FROM t GROUP BY c * 2 ORDER BY c * 2 DESC
        -> (6.00, 1, 1), (-10.00, 3, 4): the NULL group (3, 3) is missing and folded into -10.00
    (also with the expression as a second group key: GROUP BY s, c * 2 ORDER BY s, c * 2 DESC). ASC, a plain
    column, an integer expression or COUNT instead of COUNT(DISTINCT) answer correctly; so does ddm (its shards
    sort ascending), so the oracle cannot judge such a query: it is counted, not compared."""
    s = q.sql
    m = re.search(r" GROUP BY (.*?)(?: HAVING | ORDER BY |$)", s)
    if "DISTINCT" not in s or m is None:
        return False
    keys = re.findall(r"[\w.`]+ \* 2", m.group(1))
    return any(re.search(r"ORDER BY .*" + re.escape(k) + " DESC", s) for k in keys)


# Known bugs a generated query shape may meet: layout -> [(reason, predicate over the Query)]. Such queries are
# counted (STATS["known"]) instead of compared; each entry's predicate describes the bug (query, expected, got).
_ORACLE_BUG = "MariaDB: GROUP BY <decimal expr> ORDER BY it DESC with a DISTINCT aggregate (oracle wrong)"
KNOWN: dict[str, list[tuple[str, Callable[[Query], bool]]]] = {
    "usr10": [(_ORACLE_BUG, _mariadb_desc_decimal_group)],
    "split10": [(_ORACLE_BUG, _mariadb_desc_decimal_group)],
}


def known_bug(layout: str) -> Callable[[Query], str | None]:
    def check(q: Query) -> str | None:
        return next((reason for reason, hit in KNOWN[layout] if hit(q)), None)
    return check


@pytest.fixture(scope="module", params=["usr10", "split10"])
def env(request: pytest.FixtureRequest) -> DiffEnv:
    return request.getfixturevalue(request.param)


# MariaDB 10.11's subquery cache answers `x NOT IN (SELECT ...)` wrongly for some data (found by this test first;
# ddm's shard and the oracle hold different rows, so only one side met it; test_differential.py turns it off too).
# With the ten-database layout's shard usr10_5:
#   CREATE TABLE users (id BIGINT PRIMARY KEY, a INT); CREATE TABLE dict (k INT PRIMARY KEY, name VARCHAR(20));
#   INSERT INTO users VALUES (265, -6), (325, -6), (455, -5), (475, NULL), (505, -5);
#   INSERT INTO dict VALUES (-5, 'lambda'), (-3, 'Renamed'), (-1, ' theta'), (5, 'Beta ');
#   SELECT users.id FROM users JOIN dict ON users.a = dict.k WHERE users.id BETWEEN 263 AND 517
#     AND ABS(dict.k) NOT IN (SELECT k FROM dict WHERE name < 'm')
#   -> (505) with subquery_cache=on, () (right: 5 is in the subquery) with subquery_cache=off.
# Both sides run without it (ddm replays the SET on every shard connection, which this exercises too).
NO_SUBQUERY_CACHE = "SET SESSION optimizer_switch = 'subquery_cache=off'"


@pytest.fixture(scope="module")
def conns(env: DiffEnv) -> tuple[Any, Any]:
    ddm, oracle = env.connect_ddm(), env.connect_oracle()
    for c in (ddm, oracle):
        with c.cursor() as cur:
            cur.execute(NO_SUBQUERY_CACHE)
    return ddm, oracle


HANDPICKED = {
    "usr10": [
        Query("SELECT id, a FROM users WHERE id = 15", False, False),
        Query("SELECT id FROM users WHERE id IN (1, 2, 3, 13, -4, 700) ORDER BY id", True, False),
        Query("SELECT COUNT(*), SUM(a), MIN(s), MAX(dt) FROM users", True, True),
        Query("SELECT o.user_id, COUNT(*), SUM(i.qty) FROM orders o JOIN order_items i ON o.user_id = i.user_id "
              "GROUP BY o.user_id ORDER BY o.user_id", True, True),
        Query("SELECT o.order_id, i.item_id FROM orders o JOIN order_items i ON o.user_id = i.user_id "
              "AND o.order_id = i.order_id WHERE o.user_id = 7 ORDER BY o.order_id, i.item_id", True, False),
        Query("SELECT users.id, dict.name FROM users JOIN dict ON users.a = dict.k WHERE users.id < 60 "
              "ORDER BY users.id", True, False),
        Query("SELECT v, COUNT(*) FROM solo GROUP BY v ORDER BY v", True, True),
        Query("SELECT id, s FROM solo2 WHERE id BETWEEN 3 AND 30 ORDER BY id DESC LIMIT 5", True, False),
        Query("SELECT status, COUNT(*) FROM usr10.orders WHERE user_id BETWEEN 5 AND 25 GROUP BY status "
              "ORDER BY status", True, True),
        Query("SELECT k, name FROM dict ORDER BY k", True, False),
    ],
    "split10": [
        Query("SELECT id, a FROM t WHERE id = 15", False, False),
        Query("SELECT id FROM t WHERE id IN (1, 2, 3, 13, -4, 700) ORDER BY id", True, False),
        Query("SELECT id FROM t WHERE id BETWEEN -10 AND 10 ORDER BY id DESC", True, False),
        Query("SELECT a, COUNT(*), SUM(c), AVG(c), MIN(s), MAX(dt) FROM t GROUP BY a ORDER BY a", True, True),
        Query("SELECT COUNT(DISTINCT s), COUNT(*), AVG(d) FROM split10.t", True, True),
        Query("SELECT a, d FROM t ORDER BY a DESC, d, id LIMIT 7, 9", True, False),
        Query("SELECT x.id, x.s FROM t AS x WHERE x.id % 10 = 3 ORDER BY x.id LIMIT 4", True, False),
        # found by this test: ANDed key conditions of mixed types were intersected as Python values (rewrite._same)
        Query("SELECT id FROM t WHERE id IN (1.0, '0', '0') AND id = '1'", False, False),
        Query("SELECT id FROM t WHERE id IN ('11', '12') AND id BETWEEN '5' AND '100'", False, False),
    ],
}


def test_loaded_rows_agree(env: DiffEnv, conns: tuple[Any, Any]) -> None:
    check_contents(env, *conns)


def test_handpicked_queries(env: DiffEnv, conns: tuple[Any, Any]) -> None:
    ddm, oracle = conns
    failures = []
    for q in HANDPICKED[env.layout.name]:
        try:
            check_one(env, ddm, oracle, q.sql, q)
        except Mismatch as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)


def test_metadata_lists_the_logical_tables(env: DiffEnv, conns: tuple[Any, Any]) -> None:
    """SHOW TABLES and information_schema.TABLES show the logical tables once each, wherever they are (ten
    physical databases on one node: single tables on ds3 and ds7)."""
    ddm, _ = conns
    want = sorted(env.layout.tables.values())
    with ddm.cursor() as cur:
        cur.execute("SHOW TABLES")
        assert sorted(r[0] for r in cur.fetchall()) == want
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY 1")
        assert sorted(r[0] for r in cur.fetchall()) == want
        cur.execute("SELECT COUNT(DISTINCT TABLE_NAME), COUNT(*) FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA = DATABASE()")
        assert cur.fetchall() == ((len(want), sum(len(COLUMNS[r]) for r in env.layout.tables)),)
        # DATABASE() next to a sharded table: the logical name on every shard (found by this test: a shard's
        # physical database, e.g. usr10_0, came back)
        cur.execute(f"SELECT DISTINCT DATABASE() FROM {env.layout.tables['t']}")
        assert cur.fetchall() == ((env.layout.name,),)


def test_generated_selects(env: DiffEnv, conns: tuple[Any, Any]) -> None:
    ddm, oracle = conns
    assert generated_selects(env, ddm, oracle, N_SELECT, known_bug(env.layout.name)) >= N_SELECT


def test_generated_dml(env: DiffEnv, conns: tuple[Any, Any]) -> None:
    ddm, oracle = conns
    generated_dml(env, ddm, oracle, seed=DML_SEED, batches=N_DML_BATCHES)


def test_selects_after_dml(env: DiffEnv, conns: tuple[Any, Any]) -> None:
    """A seeded sweep over the data the DML test left behind."""
    problems = sweep(env, *conns, seed=SEED, n=N_AFTER, known=known_bug(env.layout.name))
    print(f"\n{env.layout.name}: {N_AFTER} SELECTs after the DML, {len(problems)} mismatches; known bugs met: "
          f"{dict(STATS['known'])}")
    assert not problems, "\n".join(problems[:20])

