"""Router: TableRule + conditions -> physical tables."""

from __future__ import annotations

import gc
from decimal import Decimal
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddm.config import DatabaseConfig, DataSource, ShardStrategy, TableRule
from ddm.sharding import routing
from ddm.sharding.routing import (
    Eq,
    Range,
    ShardKeyError,
    TableRouter,
    Target,
    group_values_by_target,
    route,
    route_all,
    route_one,
)


def sharded(
    nds: int,
    ntb: int,
    db: tuple[str, str] | None = ("id", "mod"),
    tb: tuple[str, str] | None = ("id", "two_level"),
    name: str = "t",
    **tb_props: object,
) -> TableRule:
    dss = tuple(f"ds{i}" for i in range(nds))
    return TableRule(
        name=name,
        kind="sharded",
        datasources=dss,
        tables=MappingProxyType({ds: tuple(f"{name}_{j}" for j in range(ntb)) for ds in dss}),
        database_strategy=ShardStrategy(db[0], db[1]) if db else None,
        table_strategy=ShardStrategy(tb[0], tb[1], MappingProxyType(dict(tb_props))) if tb else None,
    )


R4x8 = sharded(4, 8)
R32x32 = sharded(32, 32)


def expect_two_level(k: int, d: int, t: int) -> Target:
    return Target(f"ds{k % d}", f"t_{k // d % t}")


@given(st.integers(-(2**63), 2**64 - 1))
def test_eq_two_level_layouts(k):
    assert route(R4x8, {"id": Eq((k,))}) == (expect_two_level(k, 4, 8),)
    # the classic 32x32 scheme: database = id % 32, table = id / 32 % 32
    assert route(R32x32, {"id": Eq((k,))}) == (expect_two_level(k, 32, 32),)


def test_every_physical_table_is_reachable_once():
    r = TableRouter(R4x8)
    hits = {}
    for k in range(32):
        (t,) = r.route({"id": Eq((k,))})
        hits[t] = hits.get(t, 0) + 1
    assert len(hits) == 32 and set(hits.values()) == {1}


def test_no_condition_is_everything_in_order():
    r = TableRouter(R4x8)
    every = r.route({})
    assert len(every) == 32
    assert every == tuple(Target(f"ds{d}", f"t_{t}") for d in range(4) for t in range(8))
    assert r.route({"other": Eq((1,))}) == every
    assert route_all(R4x8) == every


def test_in_list_union_dedup_and_order():
    vals = (33, 1, 5, 1, 64, 2)
    got = route(R4x8, {"id": Eq(vals)})
    expected = sorted(
        {expect_two_level(k, 4, 8) for k in vals}, key=lambda t: (t.datasource, int(t.table[2:]))
    )
    assert got == tuple(expected)
    # pairwise on the same column: 1 -> (ds1, t_0) and 6 -> (ds2, t_1), not the 4-target cartesian product
    assert route(R4x8, {"id": Eq((1, 6))}) == (Target("ds1", "t_0"), Target("ds2", "t_1"))


def test_string_and_decimal_keys():
    assert (
        route(R4x8, {"id": Eq(("37",))})
        == route(R4x8, {"id": Eq((Decimal("37.0"),))})
        == route(R4x8, {"id": Eq((37,))})
    )
    with pytest.raises(ShardKeyError):
        route(R4x8, {"id": Eq(("abc",))})
    with pytest.raises(ShardKeyError):
        route(R4x8, {"id": Eq((1, 1.5))})


def test_null_matches_no_row():
    assert route(R4x8, {"id": Eq((None,))}) == ()
    assert route(R4x8, {"id": Eq((None, 5))}) == (expect_two_level(5, 4, 8),)
    assert route(R4x8, {"id": Eq(())}) == ()


@settings(max_examples=300)
@given(
    lo=st.none() | st.integers(-200, 200),
    hi=st.none() | st.integers(-200, 200),
    lo_inc=st.booleans(),
    hi_inc=st.booleans(),
)
def test_range_superset_and_exact_when_small(lo, hi, lo_inc, hi_inc):
    got = route(R4x8, {"id": Range(lo, lo_inc, hi, hi_inc)})
    keys = [
        k
        for k in range(-300, 301)
        if (lo is None or k > lo or (lo_inc and k == lo)) and (hi is None or k < hi or (hi_inc and k == hi))
    ]
    want = {expect_two_level(k, 4, 8) for k in keys}
    assert want <= set(got)
    assert len(set(got)) == len(got)
    if lo is not None and hi is not None and len(keys) <= 64:
        assert set(got) == want  # small integer ranges are enumerated exactly
    if lo is not None and hi is not None and not keys:
        assert got == ()


def test_different_columns_cartesian():
    rule = sharded(4, 8, db=("user_id", "mod"), tb=("order_id", "mod"))
    assert route(rule, {"user_id": Eq((6,)), "order_id": Eq((13,))}) == (Target("ds2", "t_5"),)
    assert route(rule, {"user_id": Eq((6,))}) == tuple(Target("ds2", f"t_{t}") for t in range(8))
    assert route(rule, {"order_id": Eq((13,))}) == tuple(Target(f"ds{d}", "t_5") for d in range(4))
    assert route(rule, {"user_id": Eq((1, 2)), "order_id": Eq((0, 9))}) == (
        Target("ds1", "t_0"),
        Target("ds1", "t_1"),
        Target("ds2", "t_0"),
        Target("ds2", "t_1"),
    )
    assert route(rule, {"user_id": Range(1, True, 2, True), "order_id": Eq((3,))}) == (
        Target("ds1", "t_3"),
        Target("ds2", "t_3"),
    )


def test_range_strategy_and_mixed_case_column():
    dss = ("ds0", "ds1")
    rule = TableRule(
        name="logs",
        kind="sharded",
        datasources=dss,
        tables=MappingProxyType({ds: tuple(f"logs_{i}" for i in range(4)) for ds in dss}),
        database_strategy=ShardStrategy(
            "Created", "interval", MappingProxyType({"unit": "year", "start": "2024-01-01"})
        ),
        table_strategy=ShardStrategy(
            "Created", "interval", MappingProxyType({"unit": "month", "start": "2024-01-01", "step": 6})
        ),
    )
    r = TableRouter(rule)
    assert r.db_column == "created"
    assert r.route({"created": Eq(("2025-08-01",))}) == (Target("ds1", "logs_3"),)
    assert r.route({"created": Range("2024-03-01", True, "2024-05-01", False)}) == (Target("ds0", "logs_0"),)
    assert r.route({"created": Range("2024-03-01", True, None, True)}) == r.all_targets
    with pytest.raises(ShardKeyError):
        r.route({"created": Eq(("2030-01-01",))})


def test_uneven_tables_per_datasource():
    rule = TableRule(
        name="u",
        kind="sharded",
        datasources=("a", "b"),
        tables=MappingProxyType({"a": ("u0", "u1"), "b": ("u0", "u1", "u2")}),
        database_strategy=ShardStrategy("k", "mod"),
        table_strategy=ShardStrategy("k", "mod"),
    )
    r = TableRouter(rule)
    assert r.route({"k": Eq((5,))}) == (Target("b", "u2"),)
    assert r.route({"k": Eq((4,))}) == (Target("a", "u0"),)


def test_db_only_and_table_only():
    db_only = sharded(4, 1, tb=None)
    assert route(db_only, {"id": Eq((7,))}) == (Target("ds3", "t_0"),)
    tb_only = sharded(1, 8, db=None, tb=("id", "mod"))
    assert route(tb_only, {"id": Eq((7,))}) == (Target("ds0", "t_7"),)
    with pytest.raises(ValueError):
        TableRouter(sharded(2, 2, db=("id", "mod"), tb=None))


def test_broadcast_and_single():
    b = TableRule(
        name="countries",
        kind="broadcast",
        datasources=("ds0", "ds1", "ds2"),
        tables=MappingProxyType({ds: ("countries",) for ds in ("ds0", "ds1", "ds2")}),
    )
    assert route(b, {"id": Eq((1,))}) == tuple(Target(ds, "countries") for ds in ("ds0", "ds1", "ds2"))
    assert route_one(b) == Target("ds0", "countries")
    assert route_one(b, "ds2") == Target("ds2", "countries")
    assert route_one(b, 4) == Target("ds1", "countries")
    assert route_one(b, "nope") == Target("ds0", "countries")
    s = TableRule(
        name="settings", kind="single", datasources=("ds1",), tables=MappingProxyType({"ds1": ("settings",)})
    )
    assert route(s, {}) == route_all(s) == (Target("ds1", "settings"),)
    assert route_one(s) == Target("ds1", "settings")
    g = group_values_by_target(b, "id", [1, 2])
    assert g == {Target(ds, "countries"): [0, 1] for ds in ("ds0", "ds1", "ds2")}


def test_group_values_splits_in_lists():
    vals = [0, 1, 2, 3, 4, 36, 68, 5]
    g = group_values_by_target(R4x8, "ID", vals)
    expected: dict[Target, list[int]] = {}
    for i, k in enumerate(vals):
        expected.setdefault(expect_two_level(k, 4, 8), []).append(i)
    assert g == expected
    assert list(g) == sorted(g, key=lambda t: (t.datasource, int(t.table[2:])))
    with pytest.raises(ShardKeyError):
        group_values_by_target(R4x8, "id", [1, None])
    assert group_values_by_target(R4x8, "id", [None, 1], skip_null=True) == {Target("ds1", "t_0"): [1]}


def test_group_values_other_column():
    rule = sharded(2, 4, db=("user_id", "mod"), tb=("order_id", "mod"))
    # order ids split by table; the data source dimension comes from the other condition, else every one
    g = group_values_by_target(rule, "order_id", [1, 5, 2], {"user_id": Eq((3,))})
    assert g == {Target("ds1", "t_1"): [0, 1], Target("ds1", "t_2"): [2]}
    g = group_values_by_target(rule, "order_id", [1, 2])
    assert g == {
        Target("ds0", "t_1"): [0],
        Target("ds0", "t_2"): [1],
        Target("ds1", "t_1"): [0],
        Target("ds1", "t_2"): [1],
    }


def test_group_rows_for_insert():
    rule = sharded(2, 4, db=("user_id", "mod"), tb=("order_id", "mod"))
    r = TableRouter(rule)
    rows = [(10, 1, "a"), (11, 2, "b"), (12, 5, "c")]
    assert r.group_rows(["user_id", "order_id", "note"], rows) == {
        Target("ds0", "t_1"): [0, 2],
        Target("ds1", "t_2"): [1],
    }
    with pytest.raises(ShardKeyError):
        r.group_rows(["user_id", "note"], [(1, "x")])
    with pytest.raises(ShardKeyError):
        r.group_rows(["user_id", "order_id"], [(1, None)])
    assert TableRouter(R4x8).group_rows(["id"], [(5,), (9,)]) == {
        Target("ds1", "t_1"): [0],
        Target("ds1", "t_2"): [1],
    }


def test_router_cache_follows_rule_objects():
    rule = sharded(2, 2)
    r1 = routing.router_for(rule)
    assert routing.router_for(rule) is r1
    key = id(rule)
    del rule, r1
    gc.collect()
    assert key not in routing._routers


def test_build_routers():
    rule = sharded(2, 2, name="Orders")
    db = DatabaseConfig(
        name="app",
        datasources=MappingProxyType(
            {"ds0": DataSource("ds0", "n0", "a"), "ds1": DataSource("ds1", "n1", "a")}
        ),
        default_datasource="ds0",
        tables=MappingProxyType({"Orders": rule}),
    )
    routers = routing.build_routers(db)
    assert list(routers) == ["orders"]
    assert routers["orders"].route({"id": Eq((3,))}) == (Target("ds1", "Orders_1"),)


def test_conditions_are_immutable_values():
    e = Eq([1, 2])
    assert e.values == (1, 2)
    assert hash(e) == hash(Eq((1, 2)))
    with pytest.raises(AttributeError):
        e.values = (3,)  # type: ignore[misc]
    assert Range(1, True, 2, False) == Range(1, True, 2, False)



def _string_rule(**props: object) -> TableRule:
    """4 data sources x 2 tables, both placed by hash_mod on the string column sid."""
    return TableRule(name="s", kind="sharded", datasources=("ds0", "ds1", "ds2", "ds3"),
                     tables=MappingProxyType({f"ds{i}": ("s_0", "s_1") for i in range(4)}),
                     database_strategy=ShardStrategy("sid", "hash_mod", MappingProxyType({"hash": "murmur3", **props})),
                     table_strategy=ShardStrategy("sid", "hash_mod", MappingProxyType(dict(props))))


def test_string_keys_route_by_their_collation():
    """hash_mod on a string key, key_collation ci (the default): spellings MariaDB's utf8mb4_general_ci calls equal
    (case, accents, trailing spaces) reach one physical table through every routing entry point; binary keeps the
    exact bytes."""
    ci = TableRouter(_string_rule())
    assert TableRouter(_string_rule(key_collation="ci")).all_targets == ci.all_targets
    spellings = ["session-ABC", b"SESSION-abc", "Session-Abc   ", b"session-abc ", "séssion-abc"]
    stored = ci.route({"sid": Eq(("session-abc",))})
    assert len(stored) == 1
    for v in spellings:
        assert ci.route({"sid": Eq((v,))}) == stored
        assert TableRouter(_string_rule(key_collation="ci")).route({"sid": Eq((v,))}) == stored
    assert ci.route({"sid": Eq(tuple(spellings))}) == stored  # an IN list of spellings: one table
    assert list(ci.group_values("sid", spellings)) == list(stored)
    assert list(ci.group_rows(["sid", "x"], [(v, 1) for v in spellings])) == list(stored)
    binary = TableRouter(_string_rule(key_collation="binary"))
    assert binary.route({"sid": Eq(("session-abc",))}) != binary.route({"sid": Eq(("SESSION-ABC",))})
