"""Planner + bind: golden cases (tests/testdata/plan_cases.json) and properties of the plan/bind split."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlglot

from ddm import planner
from ddm.config import DatabaseConfig, load_text
from ddm.constants import er
from ddm.plan import InsertPlan, MergeDesc, Plan, PlanError, QueryPlan, UnsupportedPlan
from ddm.rewrite import keys_needed, make_predicate

CASES_PATH = Path(__file__).parent / "testdata" / "plan_cases.json"
GOLDEN = json.loads(CASES_PATH.read_text())
CONFIG = load_text(GOLDEN["config"])


def _lexers() -> list[ModuleType]:
    """The Cython lexer first when it is built, and always the pure-Python twin (same API)."""
    out = []
    try:
        out.append(importlib.import_module("ddm_core.lexer"))
    except ImportError:
        pass
    out.append(importlib.import_module("ddm._py.lexer"))
    return out


LEXERS = _lexers()
lexer = LEXERS[0]  # the one the server uses


def _params(raw: list[Any] | None) -> list[Any] | None:
    if raw is None:
        return None
    return [v["bytes"].encode("latin1") if isinstance(v, dict) else v for v in raw]


def run_case(lex: ModuleType, db: DatabaseConfig, query: str, params: list[Any] | None) -> dict[str, Any]:
    """Plan + bind one statement, in the JSON shape of the golden file (generated keys are 1000, 1001, ...)."""
    lexed = lex.lex(query.encode())
    p = planner.plan(lexed, db)
    if isinstance(p, UnsupportedPlan):
        return {"error": [p.code, p.message]}
    if p.kind == "database":
        return {"database": [p.action, p.name, p.if_exists]}  # type: ignore[attr-defined]
    keys = None
    if isinstance(p, InsertPlan):
        keys = list(range(1000, 1000 + keys_needed(p, lexed, params)))
    try:
        u = p.bind(lexed, params, keys)
    except PlanError as e:
        return {"error": [e.code, e.message]}
    out: dict[str, Any] = {"units": [[x.datasource, x.sql.decode()] for x in u.units]}
    if u.merge is not None:
        m = u.merge
        out["merge"] = {"order_by": [list(x) for x in m.order_by], "group_by": list(m.group_by),
                        "aggregates": [[a, f, list(args)] for a, f, args in m.aggregates], "distinct": m.distinct,
                        "having": m.having is not None, "limit": m.limit, "offset": m.offset,
                        "visible_columns": m.visible_columns, "nderived": m.nderived}
    if u.generated_ids:
        out["generated_ids"] = list(u.generated_ids)
    return out


@pytest.mark.parametrize("lex", LEXERS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["comment"] for c in GOLDEN["cases"]])
def test_golden(case: dict[str, Any], lex: ModuleType) -> None:
    got = run_case(lex, CONFIG.databases[case["db"]], case["query"], _params(case.get("params")))
    want = case["expected"]
    if "unit_count" in want:
        units = got.pop("units")
        got["unit_count"] = len(units)
        got["units_head"] = units[:2]
    assert got == want


def _plan(db: str, sql: bytes) -> tuple[Plan, Any]:
    lexed = lexer.lex(sql)
    return planner.plan(lexed, CONFIG.databases[db]), lexed


def test_one_plan_serves_every_literal_value() -> None:
    p, _ = _plan("sbtest", b"SELECT c FROM sbtest1 WHERE id = 1")
    for i in (5, 123456789, 2**40):
        other = lexer.lex(f"SELECT c FROM sbtest1 WHERE id = {i}".encode())
        u = p.bind(other)
        assert len(u.units) == 1
        ds, table = u.units[0].datasource, f"sbtest1_{i // 4 % 8}"
        assert (ds, u.units[0].sql) == (f"ds{i % 4}", f"SELECT c FROM {table} WHERE id = {i}".encode())


def test_hit_path_never_touches_sqlglot(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = [b"SELECT c FROM sbtest1 WHERE id = 7", b"SELECT AVG(k) FROM sbtest1 WHERE id IN (1, 2, 3) LIMIT 4",
               b"INSERT INTO sbtest1 (k, c, pad) VALUES (1, 'a', 'b'), (2, 'c', 'd')",
               b"SELECT k, SUM(id) s FROM sbtest1 GROUP BY k HAVING s > 3 ORDER BY s LIMIT 2"]
    plans = [_plan("sbtest", q) for q in queries]

    def boom(*_: Any, **__: Any) -> None:
        raise AssertionError("sqlglot used on the hit path")

    monkeypatch.setattr(sqlglot, "parse_one", boom)
    monkeypatch.setattr(sqlglot, "parse", boom)
    for p, lexed in plans:
        keys = list(range(10, 10 + keys_needed(p, lexed))) if isinstance(p, InsertPlan) else None
        assert p.bind(lexed, keys=keys).units


def test_bulk_insert_is_planned_from_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    # sysbench prepare sends ~512 KiB multi-row INSERTs: no sqlglot parse, rows split by target
    rows = ", ".join(f"({i}, {i * 7}, 'c{i}', 'p')" for i in range(1, 2001))
    lexed = lexer.lex(f"INSERT INTO sbtest1 (id, k, c, pad) VALUES {rows}".encode())
    monkeypatch.setattr(sqlglot, "parse_one", lambda *a, **k: pytest.fail("sqlglot used for INSERT"))
    p = planner.plan(lexed, CONFIG.databases["sbtest"])
    assert isinstance(p, InsertPlan)
    u = p.bind(lexed)
    assert len(u.units) == 32
    total = sum(unit.sql.count(b"(") - 1 for unit in u.units)
    assert total == 2000
    first = u.units[0].sql  # ds0.sbtest1_0 holds ids with id % 4 == 0 and id // 4 % 8 == 0
    assert first.startswith(b"INSERT INTO sbtest1_0 (id, k, c, pad) VALUES (32, 224, 'c32', 'p'), (64, ")


def test_plans_are_immutable() -> None:
    p, _ = _plan("sbtest", b"SELECT c FROM sbtest1 WHERE id BETWEEN 1 AND 3 ORDER BY k")
    assert isinstance(p, QueryPlan)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.dnf = None  # type: ignore[misc]
    assert isinstance(p.tables, tuple) and isinstance(p.scatter.edits, tuple)  # type: ignore[union-attr]


def test_routing_ignores_unplaceable_values() -> None:
    # `id = 'abc'` cannot be placed by mod: MySQL would still compare, so every table is asked
    p, lexed = _plan("sbtest", b"SELECT c FROM sbtest1 WHERE id = 'abc'")
    assert len(p.bind(lexed).units) == 32


def test_prepared_parameter_count_mismatch() -> None:
    p, lexed = _plan("sbtest", b"SELECT c FROM sbtest1 WHERE id = ? AND k = ?")
    with pytest.raises(PlanError) as e:
        p.bind(lexed, [1])
    assert e.value.code == er.WRONG_ARGUMENTS


def test_insert_needs_keys_from_the_executor() -> None:
    p, lexed = _plan("sbtest", b"INSERT INTO sbtest1 (id, k) VALUES (?, 1), (?, 2), (3, 3)")
    assert isinstance(p, InsertPlan)
    assert keys_needed(p, lexed, [None, 5]) == 1
    u = p.bind(lexed, [None, 5], keys=[4])
    assert u.generated_ids == (4,)
    assert sorted(x.sql for x in u.units) == [b"INSERT INTO sbtest1_0 (id, k) VALUES (3, 3)",
                                              b"INSERT INTO sbtest1_1 (id, k) VALUES (4, 1)",
                                              b"INSERT INTO sbtest1_1 (id, k) VALUES (5, 2)"]
    with pytest.raises(PlanError):
        p.bind(lexed, [None, 5], keys=[])


def test_having_predicate_three_valued() -> None:
    p, lexed = _plan("sbtest", b"SELECT k, SUM(id) s FROM sbtest1 GROUP BY k HAVING s > 10 AND NOT COUNT(*) = 2")
    u = p.bind(lexed)
    assert u.merge is not None and u.merge.having is not None
    pred = u.merge.having
    assert pred([b"1", b"11", b"3"]) is True  # text-protocol values compare numerically
    assert pred([b"1", b"11", b"2"]) is False
    assert pred([b"1", b"9", b"3"]) is False
    assert pred([b"1", None, b"3"]) is False  # NULL > 10 is unknown: row dropped


def test_make_predicate_or_with_unknown() -> None:
    class Vals:
        def value(self, k: int, neg: bool = False) -> Any:
            return -5 if neg else 5

    tree = ("or", ("cmp", ">", ("col", 0), ("slot", 0, False)), ("cmp", "<", ("col", 1), ("slot", 0, True)))
    pred = make_predicate(tree, Vals())
    assert pred([None, -6]) is True
    assert pred([None, 0]) is False
    assert pred([6, None]) is True


def test_merge_desc_resolve_star_columns() -> None:
    p, lexed = _plan("sbtest", b"SELECT *, COUNT(*) FROM sbtest1 WHERE id IN (1, 2) GROUP BY k ORDER BY pad")
    m = p.bind(lexed).merge
    assert m is not None and m.visible_columns == -1
    r = m.resolve(7)  # 4 table columns + COUNT(*) + 2 derived (k for GROUP BY, pad for ORDER BY)
    assert r.visible_columns == 5
    assert r.group_by == (5,)
    assert r.order_by == ((6, False),)
    assert r.aggregates == ((4, "COUNT", ()),)
    assert isinstance(r, MergeDesc)


def test_unsupported_plans_raise_on_bind() -> None:
    p, lexed = _plan("sbtest", b"SELECT c FROM sbtest1 WHERE id IN (SELECT id FROM sbtest1)")
    assert isinstance(p, UnsupportedPlan) and p.code == er.NOT_SUPPORTED_YET
    with pytest.raises(PlanError, match="subquery on sharded table 'sbtest1'"):
        p.bind(lexed)


def test_syntax_error_on_sharded_table_is_a_parse_error() -> None:
    p, _ = _plan("sbtest", b"SELECT c FROM sbtest1 WHERE id = = 3")
    assert isinstance(p, UnsupportedPlan) and p.code == er.PARSE_ERROR


def test_syntax_error_elsewhere_goes_to_the_data_node() -> None:
    # the data node produces the real MySQL error message
    p, lexed = _plan("sbtest", b"SELECT FROM WHERE")
    assert isinstance(p, QueryPlan)
    assert p.bind(lexed).units[0].datasource == "ds0"


def test_column_named_like_a_table_is_refused_when_ambiguous() -> None:
    p, _ = _plan("shop", b"SELECT x FROM orders o WHERE o.order_id = 1 AND orders = 2")
    assert isinstance(p, QueryPlan)  # an unqualified column `orders` is not in table position: not renamed
    p2, lexed2 = _plan("shop", b"SELECT x FROM orders o, countries WHERE o.order_id = 1")
    assert isinstance(p2, QueryPlan)
    assert p2.bind(lexed2).units[0].sql == b"SELECT x FROM orders_0 o, countries WHERE o.order_id = 1"
