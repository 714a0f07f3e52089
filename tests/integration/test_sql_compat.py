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
