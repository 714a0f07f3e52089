"""Which scatter SELECTs stream, and the statement each data source gets (ddm.execute.scatter.plan_sources).

The streaming itself runs against real data nodes in tests/integration/test_scatter_stream.py and, for every
generated multi-shard SELECT, in tests/integration/test_differential.py.
"""

from __future__ import annotations

from ddm.execute.scatter import plan_sources, union_units
from ddm.sharding.plan import ExecutionUnits, MergeDesc, Unit

LOC = {"ds0": ("n0", b"p0"), "ds1": ("n1", b"p1"), "ds2": ("n0", b"p2")}


def merge(order_by=(), limit=None, offset=0, **kw) -> MergeDesc:
    fields = {"group_by": (), "aggregates": (), "distinct": False, "having": None, "visible_columns": 2}
    fields.update(kw)
    return MergeDesc(order_by=order_by, limit=limit, offset=offset, **fields)


def units(*pairs) -> tuple[Unit, ...]:
    return tuple(Unit(ds, sql) for ds, sql in pairs)


def plan(eu, in_txn=False):
    return plan_sources(eu, LOC.__getitem__, in_txn)


def test_concatenation_sends_one_union_all_per_source():
    eu = ExecutionUnits(units(("ds0", b"SELECT a FROM t_0 -- c"), ("ds1", b"SELECT a FROM t_1"),
                              ("ds0", b"SELECT a FROM t_2;")), merge())
    sources, nshards = plan(eu)
    assert nshards == 2  # one result set per source
    assert [(s.datasource, s.node, s.phys, s.sql, s.shards) for s in sources] == [
        ("ds0", "n0", b"p0", b"(SELECT a FROM t_0 -- c\n) UNION ALL (SELECT a FROM t_2\n)", [0]),
        ("ds1", "n1", b"p1", b"SELECT a FROM t_1", [1]),
    ]


def test_concatenation_with_limit_keeps_each_branch_limit_and_bounds_the_union():
    eu = ExecutionUnits(units(("ds0", b"SELECT a FROM t_0 LIMIT 0, 7"), ("ds0", b"SELECT a FROM t_2 LIMIT 0, 7")),
                        merge(limit=5, offset=2))
    sources, nshards = plan(eu)
    assert nshards == 1
    assert sources[0].sql == b"(SELECT a FROM t_0 LIMIT 0, 7\n) UNION ALL (SELECT a FROM t_2 LIMIT 0, 7\n) LIMIT 7"


def test_statements_unfit_for_a_union_branch_go_as_a_multi_statement():
    for sql in (b"SELECT SQL_CALC_FOUND_ROWS a FROM t_{}", b"SELECT a FROM t_{} UNION SELECT 1",
                b"WITH x AS (SELECT 1) SELECT a FROM t_{}", b"SELECT sql_no_cache a FROM t_{}"):
        eu = ExecutionUnits(units(("ds0", sql.replace(b"{}", b"0")), ("ds0", sql.replace(b"{}", b"1")),
                                  ("ds1", sql.replace(b"{}", b"2"))), merge())
        sources, nshards = plan(eu)
        assert nshards == 3, sql
        assert sources[0].sql == sql.replace(b"{}", b"0") + b"\n;\n" + sql.replace(b"{}", b"1")
        assert sources[0].shards == [0, 1] and sources[1].shards == [2]
        # a k-way merge needs one sorted stream per source: without the UNION form it stays buffered
        kway = ExecutionUnits(eu.units, merge(order_by=((0, False),)))
        assert plan(kway) is None, sql


def test_locking_reads_stream_as_a_union():
    eu = ExecutionUnits(units(("ds0", b"SELECT a FROM t_0 FOR UPDATE"), ("ds0", b"SELECT a FROM t_1 FOR UPDATE")),
                        merge())
    sources, _ = plan(eu)
    assert sources[0].sql == b"(SELECT a FROM t_0 FOR UPDATE\n) UNION ALL (SELECT a FROM t_1 FOR UPDATE\n)"


def test_kway_merge_gets_one_sorted_union_per_source():
    eu = ExecutionUnits(units(("ds0", b"SELECT a, b FROM t_0 ORDER BY b DESC, a LIMIT 0, 5 -- x"),
                              ("ds0", b"SELECT a, b FROM t_1 ORDER BY b DESC, a LIMIT 0, 5"),
                              ("ds1", b"SELECT a, b FROM t_2 ORDER BY b DESC, a LIMIT 0, 5")),
                        merge(order_by=((1, True), (0, False)), limit=3, offset=2))
    sources, nshards = plan(eu)
    assert nshards == 2
    assert sources[0].sql == (b"(SELECT a, b FROM t_0 ORDER BY b DESC, a LIMIT 0, 5 -- x\n) UNION ALL "
                              b"(SELECT a, b FROM t_1 ORDER BY b DESC, a LIMIT 0, 5\n) ORDER BY 2 DESC, 1 LIMIT 5")
    assert sources[0].shards == [0] and sources[1].shards == [1]
    assert sources[1].sql == b"SELECT a, b FROM t_2 ORDER BY b DESC, a LIMIT 0, 5"


def test_shapes_with_state_beyond_the_shard_heads_stay_buffered():
    two = units(("ds0", b"SELECT 1"), ("ds1", b"SELECT 1"))
    assert plan(ExecutionUnits(two, merge(group_by=(0,)))) is None
    assert plan(ExecutionUnits(two, merge(aggregates=((0, "count", ()),)))) is None
    assert plan(ExecutionUnits(two, merge(distinct=True))) is None
    assert plan(ExecutionUnits(two, merge(having=lambda row: True))) is None
    assert plan(ExecutionUnits(two, None, is_write=True)) is None  # a write over shards
    assert plan(ExecutionUnits(two[:1], merge())) is None  # one shard: forwarded as is


def test_star_with_order_by_over_several_tables_of_one_source_stays_buffered():
    # `SELECT *` puts the derived ORDER BY column at a position counted from the end: unknown before the columns
    eu = ExecutionUnits(units(("ds0", b"SELECT * FROM t_0"), ("ds0", b"SELECT * FROM t_1")),
                        merge(order_by=((-1, False),), visible_columns=-1, nderived=1))
    assert plan(eu) is None
    one_each = ExecutionUnits(units(("ds0", b"SELECT * FROM t_0"), ("ds1", b"SELECT * FROM t_1")),
                              merge(order_by=((-1, False),), visible_columns=-1, nderived=1))
    assert plan(one_each) is not None


def test_a_transaction_cannot_stream_two_sources_of_one_node():
    eu = ExecutionUnits(units(("ds0", b"SELECT 1"), ("ds2", b"SELECT 1")), merge())
    assert plan(eu, in_txn=False) is not None
    assert plan(eu, in_txn=True) is None


# --- the buffered path (GROUP BY, aggregates, DISTINCT): one UNION ALL unit per data source -------------------

def test_buffered_units_of_a_source_become_one_union_sorted_for_the_merger():
    eu = ExecutionUnits(units(("ds0", b"SELECT k, SUM(v) FROM t_0 GROUP BY k"), ("ds1", b"SELECT k, SUM(v) FROM t_1 "
                                                                                      b"GROUP BY k"),
                              ("ds0", b"SELECT k, SUM(v) FROM t_2 GROUP BY k")),
                        merge(group_by=(0,), aggregates=((1, "sum", ()),), order_by=((1, True),)))
    got = union_units(eu)
    assert got == (Unit("ds0", b"(SELECT k, SUM(v) FROM t_0 GROUP BY k\n) UNION ALL "
                               b"(SELECT k, SUM(v) FROM t_2 GROUP BY k\n) ORDER BY 1"),  # group order, no LIMIT
                   Unit("ds1", b"SELECT k, SUM(v) FROM t_1 GROUP BY k"))
    distinct = ExecutionUnits(units(("ds0", b"SELECT DISTINCT c FROM t_0 ORDER BY c LIMIT 0, 5"),
                                    ("ds0", b"SELECT DISTINCT c FROM t_1 ORDER BY c LIMIT 0, 5")),
                              merge(distinct=True, order_by=((0, False),), limit=5))
    assert union_units(distinct) == (Unit("ds0", b"(SELECT DISTINCT c FROM t_0 ORDER BY c LIMIT 0, 5\n) UNION ALL "
                                                 b"(SELECT DISTINCT c FROM t_1 ORDER BY c LIMIT 0, 5\n) ORDER BY 1"),)
    total = ExecutionUnits(units(("ds0", b"SELECT SUM(k) FROM t_0"), ("ds0", b"SELECT SUM(k) FROM t_1")),
                           merge(aggregates=((0, "sum", ()),)))
    assert union_units(total) == (Unit("ds0", b"(SELECT SUM(k) FROM t_0\n) UNION ALL (SELECT SUM(k) FROM t_1\n)"),)


def test_buffered_units_stay_apart_when_they_must():
    one_each = ExecutionUnits(units(("ds0", b"SELECT COUNT(*) FROM t_0"), ("ds1", b"SELECT COUNT(*) FROM t_1")),
                              merge(aggregates=((0, "count", ()),)))
    assert union_units(one_each) is None  # nothing to join
    unsafe = ExecutionUnits(units(("ds0", b"SELECT SQL_CALC_FOUND_ROWS COUNT(*) FROM t_0"),
                                  ("ds0", b"SELECT SQL_CALC_FOUND_ROWS COUNT(*) FROM t_1")),
                            merge(aggregates=((0, "count", ()),)))
    assert union_units(unsafe) is None
    star = ExecutionUnits(units(("ds0", b"SELECT * FROM t_0"), ("ds0", b"SELECT * FROM t_1")),
                          merge(distinct=True, order_by=((-1, False),), visible_columns=-1, nderived=1))
    assert union_units(star) is None
    write = ExecutionUnits(units(("ds0", b"DELETE FROM t_0"), ("ds0", b"DELETE FROM t_1")), None, is_write=True)
    assert union_units(write) is None
