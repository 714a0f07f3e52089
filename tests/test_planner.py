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

from ddm.config import DatabaseConfig, load_text
from ddm.execute.scatter import plan_sources
from ddm.sharding import planner
from ddm.sharding.plan import InsertPlan, MergeDesc, Plan, PlanError, Position, QueryPlan, UnsupportedPlan
from ddm.sharding.rewrite import keys_needed, make_predicate
from ddm.wire.constants import er

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


def test_key_generator_on_another_column_than_the_key_fills_it() -> None:
    """shop.orders is sharded by user_id and generates order_id: an INSERT without order_id gets one per row,
    appended to the column list and to every row; the key routes as given; the first id is the insert id."""
    p, lexed = _plan("shop", b"INSERT INTO orders (user_id, amount) VALUES (1, 2.5), (6, 3)")
    assert isinstance(p, InsertPlan)
    assert keys_needed(p, lexed) == 2
    u = p.bind(lexed, None, keys=[900, 901])
    assert u.generated_ids == (900, 901)
    got = sorted((x.datasource, x.sql) for x in u.units)
    assert got == [("ds0", b"INSERT INTO orders_2 (user_id, amount, `order_id`) VALUES (1, 2.5, 900)"),
                   ("ds1", b"INSERT INTO orders_2 (user_id, amount, `order_id`) VALUES (6, 3, 901)")], got
    given, lexed2 = _plan("shop", b"INSERT INTO orders (order_id, user_id) VALUES (5, 1)")
    assert keys_needed(given, lexed2) == 0  # given: left alone


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


# --- ORDER BY / GROUP BY column positions on several shards ---------------------------------------------------
# `ORDER BY 1` and `ORDER BY 2` have one digest (and one plan): the plan records "the position in slot k"
# (ddm.sharding.plan.Position) and the bind turns this query's number into the column index, or MySQL's error.

def _bind(sql: bytes, plan_sql: bytes | None = None, params: list[Any] | None = None) -> Any:
    """Bind `sql` with the plan of `plan_sql` (same digest; default: its own)."""
    lexed = lexer.lex(sql)
    p, plan_lexed = _plan("sbtest", plan_sql or sql)
    assert plan_lexed.digest == lexed.digest
    return p.bind(lexed, params)


def _bind_error(sql: bytes, params: list[Any] | None = None) -> tuple[int, str]:
    with pytest.raises(PlanError) as e:
        _bind(sql, params=params)
    return e.value.code, e.value.message


def test_positions_are_resolved_at_bind_time() -> None:
    first = b"SELECT c, k, pad FROM sbtest1 WHERE id IN (1, 2) ORDER BY 2 DESC, 1"
    u = _bind(first)
    assert u.merge is not None and u.merge.order_by == ((1, True), (0, False))
    assert [x.sql for x in u.units] == [b"SELECT c, k, pad FROM sbtest1_0 WHERE id IN (1) ORDER BY 2 DESC, 1",
                                        b"SELECT c, k, pad FROM sbtest1_0 WHERE id IN (2) ORDER BY 2 DESC, 1"]
    # another statement of the digest, bound with the cached plan: its own numbers
    u = _bind(b"SELECT c, k, pad FROM sbtest1 WHERE id IN (1, 2) ORDER BY 3 DESC, 1", first)
    assert u.merge is not None and u.merge.order_by == ((2, True), (0, False))
    assert u.units[0].sql.endswith(b"ORDER BY 3 DESC, 1")


def test_position_mixed_with_names_and_parentheses() -> None:
    u = _bind(b"SELECT c, k FROM sbtest1 WHERE id IN (1, 2) ORDER BY 2, c DESC, (1)")
    assert u.merge is not None and u.merge.order_by == ((1, False), (0, True), (0, False))
    assert u.merge.nderived == 0
    u = _bind(b"SELECT c FROM sbtest1 WHERE id IN (1, 2) ORDER BY k, 1")  # k is derived, 1 is not
    assert u.merge is not None and u.merge.order_by == ((1, False), (0, False)) and u.merge.nderived == 1


def test_group_by_position_with_aggregates_having_and_limit() -> None:
    sql = b"SELECT k, AVG(id), COUNT(*) FROM sbtest1 WHERE id IN (1, 2) GROUP BY 1 HAVING COUNT(*) > 1 ORDER BY 2 DESC"
    u = _bind(sql)
    m = u.merge
    assert m is not None
    assert m.group_by == (0,) and m.order_by == ((1, True),)
    assert m.aggregates == ((1, "AVG", (3, 4)), (2, "COUNT", ()))
    assert m.having is not None and m.visible_columns == 3 and m.nderived == 2
    # shards group and sort by the position as written; the user's ORDER BY is the merger's
    assert u.units[0].sql == (b"SELECT k, AVG(id), COUNT(*), SUM(id) AS AVG_DERIVED_SUM_0, COUNT(id) AS "
                              b"AVG_DERIVED_COUNT_0 FROM sbtest1_0 WHERE id IN (1) GROUP BY 1 ORDER BY 1")


def test_limit_with_positions_in_a_grouped_query() -> None:
    # groups in shard order (no ORDER BY): each shard's first groups are enough
    u = _bind(b"SELECT k, COUNT(*) FROM sbtest1 WHERE id IN (1, 2) GROUP BY 1 LIMIT 2, 3")
    assert u.units[0].sql.endswith(b"GROUP BY 1 ORDER BY 1 LIMIT 5")
    assert u.merge is not None and (u.merge.limit, u.merge.offset) == (3, 2)
    # whether ORDER BY 1 follows GROUP BY k is only known at bind time: every group is fetched
    for sql in (b"SELECT k, COUNT(*) FROM sbtest1 WHERE id IN (1, 2) GROUP BY k ORDER BY 1 LIMIT 3",
                b"SELECT k, COUNT(*) FROM sbtest1 WHERE id IN (1, 2) GROUP BY 1 ORDER BY k LIMIT 3"):
        u = _bind(sql)
        assert b"LIMIT" not in u.units[0].sql
        assert u.merge is not None and u.merge.limit == 3 and u.merge.group_by == (0,)
    u = _bind(b"SELECT c, k FROM sbtest1 WHERE id IN (1, 2) ORDER BY 2 DESC LIMIT 1, 4")
    assert u.units[0].sql.endswith(b"ORDER BY 2 DESC LIMIT 5")


def test_position_out_of_range_is_mysqls_unknown_column() -> None:
    base = b"SELECT c, k FROM sbtest1 WHERE id IN (1, 2) "
    bad = er.BAD_FIELD_ERROR
    assert _bind_error(base + b"ORDER BY 3") == (bad, "Unknown column '3' in 'ORDER BY'")
    assert _bind_error(base + b"ORDER BY 0") == (bad, "Unknown column '0' in 'ORDER BY'")
    assert _bind_error(base + b"ORDER BY -1") == (bad, "Unknown column '-1' in 'ORDER BY'")
    assert _bind_error(base + b"ORDER BY -(2)") == (bad, "Unknown column '-2' in 'ORDER BY'")
    assert _bind_error(base + b"ORDER BY 05") == (bad, "Unknown column '5' in 'ORDER BY'")
    assert _bind_error(base + b"GROUP BY 3") == (bad, "Unknown column '3' in 'GROUP BY'")
    # ORDER BY is checked first, as MySQL does
    assert _bind_error(base + b"GROUP BY 3 ORDER BY 4") == (bad, "Unknown column '4' in 'ORDER BY'")
    # the number is read as 32 bits, as MySQL does: 2**64 - 1 is -1, 2**32 + 2 is column 2
    assert _bind_error(base + b"ORDER BY 18446744073709551615") == (bad, "Unknown column '-1' in 'ORDER BY'")
    assert _bind_error(base + b"ORDER BY 9223372036854775808") == (bad, "Unknown column '0' in 'ORDER BY'")
    u = _bind(base + b"ORDER BY 4294967298")
    assert u.merge is not None and u.merge.order_by == ((1, False),)
    # derived columns are the shards' business: a position beyond the client's select list is an error
    assert _bind_error(b"SELECT c, AVG(k) FROM sbtest1 WHERE id IN (1, 2) GROUP BY 1 ORDER BY 3")[0] == bad


def test_a_position_of_one_target_is_the_data_nodes_business() -> None:
    u = _bind(b"SELECT c, k FROM sbtest1 WHERE id = 1 ORDER BY 7")
    assert u.merge is None and u.units[0].sql == b"SELECT c, k FROM sbtest1_0 WHERE id = 1 ORDER BY 7"


def test_constants_sharing_the_digest_of_a_position() -> None:
    first = b"SELECT c, k FROM sbtest1 WHERE id IN (1, 2) ORDER BY 2, c"
    # a string, decimal, float, hex or out-of-BIGINT number orders by a constant: every row ties
    for const in (b"'2'", b"1.0", b"2e0", b"0x02", b"X'02'", b"18446744073709551616"):
        u = _bind(b"SELECT c, k FROM sbtest1 WHERE id IN (1, 2) ORDER BY " + const + b", c", first)
        assert u.merge is not None and u.merge.order_by == ((0, False),), const
        assert u.units[0].sql.endswith(b"ORDER BY " + const + b", c")
    # a constant GROUP BY is one group over every row: not something the merger does
    code, msg = _bind_error(b"SELECT c, COUNT(*) FROM sbtest1 WHERE id IN (1, 2) GROUP BY 'x'")
    assert code == er.NOT_SUPPORTED_YET and "GROUP BY a constant" in msg
    # `- -1` is an expression (a constant), not position -1
    u = _bind(b"SELECT c, k FROM sbtest1 WHERE id IN (1, 2) ORDER BY - -1")
    assert u.merge is not None and u.merge.nderived == 1


def test_parameter_marker_is_not_taken_for_a_position() -> None:
    # MySQL orders by the constant value of `?` (MariaDB takes an integer value as a position); the shards run the
    # statement as text with the value inlined, where it would be a position: refused on several shards
    sql = b"SELECT c, k FROM sbtest1 WHERE id IN (?, ?) ORDER BY ?"
    code, msg = _bind_error(sql, [1, 2, 2])
    assert code == er.NOT_SUPPORTED_YET and "parameter marker" in msg
    # the text statement of the same digest, bound with the prepared statement's plan (and the reverse)
    text = b"SELECT c, k FROM sbtest1 WHERE id IN (1, 2) ORDER BY 2"
    u = _bind(text, sql)
    assert u.merge is not None and u.merge.order_by == ((1, False),)
    with pytest.raises(PlanError, match="parameter marker"):
        _bind(sql, text, [1, 2, 2])
    # on one target the data node decides (prepared there, or its text with the value inlined)
    lexed = lexer.lex(sql)
    p, _ = _plan("sbtest", sql)
    (unit,) = p.bind(lexed, [1, 1, 2], inline=False).units
    assert unit.sql == b"SELECT c, k FROM sbtest1_0 WHERE id IN (?, ?) ORDER BY ?"


def test_positions_with_star() -> None:
    # `*` stands for at least one column: a position up to the number of items is an absolute column index
    u = _bind(b"SELECT * FROM sbtest1 WHERE id IN (1, 2) ORDER BY 1 DESC")
    assert u.merge is not None and u.merge.order_by == ((0, True),) and u.merge.visible_columns == -1
    assert u.merge.resolve(4).order_by == ((0, True),)
    u = _bind(b"SELECT k, sbtest1.*, c FROM sbtest1 WHERE id IN (1, 2) ORDER BY 3, c")
    assert u.merge is not None
    r = u.merge.resolve(6)  # k, 4 table columns, c
    assert r.order_by == ((2, False), (5, False)) and r.visible_columns == 6
    # beyond: which column depends on the table's width
    code, msg = _bind_error(b"SELECT * FROM sbtest1 WHERE id IN (1, 2) ORDER BY 2")
    assert code == er.NOT_SUPPORTED_YET and "`*`" in msg
    assert _bind_error(b"SELECT * FROM sbtest1 WHERE id IN (1, 2) ORDER BY 0") == (
        er.BAD_FIELD_ERROR, "Unknown column '0' in 'ORDER BY'")


def test_positions_reach_the_streaming_union() -> None:
    # ids 0 and 4 live in two tables of ds0: the node merges them with `ORDER BY <positions>` of the columns
    u = _bind(b"SELECT c, k FROM sbtest1 WHERE id IN (0, 4, 1) ORDER BY 2 DESC, 1 LIMIT 3")
    planned = plan_sources(u, lambda ds: ("n0", ds.encode()), False)
    assert planned is not None
    sources, _ = planned
    assert sources[0].sql == (b"(SELECT c, k FROM sbtest1_0 WHERE id IN (0) ORDER BY 2 DESC, 1 LIMIT 3\n) UNION ALL "
                              b"(SELECT c, k FROM sbtest1_1 WHERE id IN (4) ORDER BY 2 DESC, 1 LIMIT 3\n) "
                              b"ORDER BY 2 DESC, 1 LIMIT 3")


def test_plans_with_positions_are_immutable_and_cacheable() -> None:
    p, _ = _plan("sbtest", b"SELECT k, COUNT(*) FROM sbtest1 WHERE id IN (1, 2) GROUP BY 1 ORDER BY -2, 1")
    assert isinstance(p, QueryPlan) and p.scatter is not None
    assert p.scatter.positions and p.scatter.items == 2
    assert p.scatter.group_by == (Position(2),)
    assert p.scatter.order_by == ((Position(3, True), False), (Position(4), False))
    hash(p.scatter.order_by)


def test_item_between_two_stars_is_refused_on_several_shards() -> None:
    """Found while adding positions: `o.*, i.sku, i.*` placed i.sku at -2 from the end of the row, which is a column
    of i.* (the widths of both `*` are only known from the result set). A position stays absolute."""
    head = b"SELECT o.*, i.sku, i.* FROM orders o JOIN order_items i ON o.order_id = i.order_id WHERE o.order_id "
    for sql in (head + b"IN (1, 2) ORDER BY i.sku", head + b"IN (1, 2) ORDER BY sku"):
        p, lexed = _plan("shop", sql)
        with pytest.raises(PlanError, match="between two `\\*` items") as e:
            p.bind(lexed)
        assert e.value.code == er.NOT_SUPPORTED_YET
    p, lexed = _plan("shop", head + b"= 1 ORDER BY i.sku")  # one target: the data node sorts
    assert len(p.bind(lexed).units) == 1
    p, lexed = _plan("shop", head + b"IN (1, 2) ORDER BY 2 DESC")
    m = p.bind(lexed).merge
    assert m is not None and m.order_by == ((1, True),)
    p, lexed = _plan("shop", b"SELECT o.*, i.* , i.sku FROM orders o JOIN order_items i ON o.order_id = i.order_id "
                             b"WHERE o.order_id IN (1, 2) ORDER BY i.sku")  # after the last `*`: from the end
    m = p.bind(lexed).merge
    assert m is not None and m.order_by == ((-1, False),)
