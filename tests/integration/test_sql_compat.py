"""SQL compatibility regressions through ddm against the plain MariaDB oracle (the differential layout `difft`,
see diff_fixtures.py): tables aliased with their own name, multi-table DELETE of one table."""

from __future__ import annotations

from typing import Any

import pytest
from diff_fixtures import DiffEnv, difft
from test_differential import Mismatch, Query, check_contents, check_one, run

pytestmark = pytest.mark.integration

__all__ = ["difft"]


@pytest.fixture(scope="module")
def pair(difft: DiffEnv) -> tuple[Any, Any]:
    return difft.connect_ddm(), difft.connect_oracle()


SELF_ALIAS_SELECTS = [
    Query("SELECT t.* FROM t t WHERE t.id = 5", False, False),
    Query("SELECT t.id, t.s FROM t AS t WHERE id IN (1, 2, 3, 7) ORDER BY t.id", True, False),
    Query("SELECT `t`.a, COUNT(*) FROM t `t` GROUP BY `t`.a ORDER BY `t`.a", True, True),
    Query("SELECT t.id FROM t t WHERE t.a > 3 ORDER BY t.id DESC LIMIT 5", True, False),
    Query("SELECT orders.order_id, items.item_id FROM orders orders JOIN items items "
          "ON orders.user_id = items.user_id WHERE orders.user_id = 3 ORDER BY 1, 2", True, False),
    Query("SELECT orders.user_id, COUNT(*) FROM orders AS orders JOIN items AS items "
          "ON orders.user_id = items.user_id GROUP BY orders.user_id ORDER BY 1", True, True),
    Query("SELECT t.id, dict.name FROM t t JOIN dict dict ON t.a = dict.k WHERE t.id < 40 ORDER BY t.id",
          True, False),
    Query("SELECT solo.v FROM solo solo WHERE solo.id < 10 ORDER BY solo.id", True, False),
]


def test_self_aliased_selects(difft: DiffEnv, pair: tuple[Any, Any]) -> None:
    ddm, oracle = pair
    failures = []
    for q in SELF_ALIAS_SELECTS:
        try:
            assert check_one(difft, ddm, oracle, q.sql, q) == "ok", q.sql
        except Mismatch as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)


SELF_ALIAS_DML = [
    "INSERT INTO t (id, a, s) VALUES (900001, 1, 'x'), (900002, 2, 'y'), (900003, 3, 'z'), (900004, 4, 'w')",
    "UPDATE t t SET t.s = 'upd' WHERE t.id = 900001",
    "UPDATE t AS t SET t.a = t.a + 10 WHERE t.id IN (900002, 900003)",
    "UPDATE t t SET t.b = 7 WHERE t.id >= 900001",
    "DELETE t FROM t t WHERE t.id = 900002",
    "DELETE t FROM t WHERE id = 900003",
    "DELETE x FROM t x WHERE x.id = 900004",
    "DELETE FROM t USING t AS t WHERE t.id = 900001",
]


def test_self_aliased_dml(difft: DiffEnv, pair: tuple[Any, Any]) -> None:
    """The same writes through ddm and on the oracle: same affected rows, then same contents (and placement)."""
    ddm, oracle = pair
    for sql in SELF_ALIAS_DML:
        kg, g = run(ddm, sql)
        kw, w = run(oracle, sql)
        assert kg == kw == "ok", (sql, g, w)
        assert g[1] == w[1], f"affected rows through ddm {g[1]} != {w[1]}: {sql}"
        check_contents(difft, ddm, oracle, ["t"])


INSERT_FORMS = [
    "INSERT INTO t SET id = 910001, a = 1, s = 'set'",
    "INSERT INTO t SET t.id = 910002, t.a = 2, t.s = 'qualified'",
    "REPLACE INTO t SET id = 910001, a = 11, s = 'replaced'",
    "REPLACE INTO t (id, a, s) VALUES (910002, 22, 'replaced'), (910003, 3, 'new'), (910004, 4, 'new')",
    "INSERT INTO t (id, a, s) VALUES (910003, 0, 'dup'), (910005, 5, 'five') "
    "ON DUPLICATE KEY UPDATE a = a + 100, s = VALUES(s)",
    "INSERT INTO t SET id = 910004, a = 9 ON DUPLICATE KEY UPDATE t.a = t.a * 2",
    "INSERT IGNORE INTO t SET id = 910005, a = 55",
    "INSERT INTO orders SET order_id = 910001, user_id = 7, status = 'set'",
    "REPLACE INTO orders SET order_id = 910001, user_id = 7, status = 'again'",
    "INSERT INTO orders (order_id, user_id, status) VALUES (910001, 7, 'x') ON DUPLICATE KEY UPDATE status = 'odku'",
    "INSERT INTO dict SET k = 910001, name = 'bset'",
    "INSERT INTO solo SET id = 910001, v = 1",
    "DELETE FROM t WHERE id BETWEEN 910001 AND 910005",
    "DELETE FROM orders WHERE order_id = 910001 AND user_id = 7",
    "DELETE FROM dict WHERE k = 910001",
    "DELETE FROM solo WHERE id = 910001",
]


def test_insert_forms(difft: DiffEnv, pair: tuple[Any, Any]) -> None:
    """INSERT ... SET, REPLACE (VALUES and SET), ON DUPLICATE KEY UPDATE: the same affected rows as the oracle, then
    the same contents, each row on the shard its key names."""
    ddm, oracle = pair
    for sql in INSERT_FORMS:
        kg, g = run(ddm, sql)
        kw, w = run(oracle, sql)
        assert kg == kw == "ok", (sql, g, w)
        assert g[1] == w[1], f"affected rows through ddm {g[1]} != {w[1]}: {sql}"
        check_contents(difft, ddm, oracle, ["t", "orders", "dict", "solo"])


NO_COLUMN_LIST = [
    "INSERT INTO t VALUES (920001, 1, 2, 3.5, 4.25, 'v', '2024-01-01', '2024-01-01 10:00:00')",
    "INSERT INTO t VALUES (920002, 2, NULL, NULL, NULL, 'w', NULL, NULL), (920003, 3, 3, 3, 3, 'x', NULL, NULL)",
    "REPLACE INTO t VALUES (920002, 22, NULL, NULL, NULL, 'replaced', NULL, NULL)",
    "INSERT INTO t VALUES (920003, 0, 0, 0, 0, 'dup', NULL, NULL) ON DUPLICATE KEY UPDATE a = a + 1",
    "INSERT INTO t VALUES (920009, 1)",  # 1136 on both sides
    "INSERT INTO orders VALUES (920001, 5, 1.5, 'nolist', '2024-02-02')",
    "ALTER TABLE t ADD COLUMN extra INT NULL",
    "INSERT INTO t VALUES (920004, 4, 4, 4, 4, 'extra', NULL, NULL, 44)",  # the new definition at once
    "INSERT INTO t VALUES (920005, 5, 5, 5, 5, 'short', NULL, NULL)",  # 1136 now
    "ALTER TABLE t DROP COLUMN extra",
    "INSERT INTO t VALUES (920005, 5, 5, 5, 5, 'again', NULL, NULL)",
    "DELETE FROM t WHERE id BETWEEN 920001 AND 920009",
    "DELETE FROM orders WHERE order_id = 920001 AND user_id = 5",
]


def test_insert_without_a_column_list(difft: DiffEnv, pair: tuple[Any, Any]) -> None:
    """VALUES in the order of the table's definition (read from its shards, forgotten after DDL through ddm): the
    same affected rows or the same error as the oracle, then the same contents."""
    ddm, oracle = pair
    for sql in NO_COLUMN_LIST:
        kg, g = run(ddm, sql)
        kw, w = run(oracle, sql)
        assert kg == kw, (sql, g, w)
        if kg == "err":
            assert g[0] == w[0], (sql, g, w)
            continue
        assert g[1] == w[1], f"affected rows through ddm {g[1]} != {w[1]}: {sql}"
        check_contents(difft, ddm, oracle, ["t", "orders"])
