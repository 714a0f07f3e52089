"""Point routes (ddm_core.shard.PointRoute, twin ddm._py.shard.PointRoute): the plan-cache-hit path of `key = value`
statements must give exactly the unit the generic `QueryPlan.bind` gives, or None (then the generic path runs).

Checked three ways: the Cython class against its pure-Python twin (same outcome, None included), both against the
generic bind, and the golden plan cases."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ddm._py import lexer as pylexer
from ddm._py import shard as pyshard
from ddm.config import load_text
from ddm.sharding import planner
from ddm.sharding.plan import PlanError, QueryPlan
from ddm.sharding.rewrite import point_route
from ddm.wire.constants import field_type as FT
from ddm.wire.params import ParamError, decode_params
from ddm_core import lexer as clexer
from ddm_core import shard as cshard
from ddm_core.packets import frame

CONFIG = load_text("""
users: [{name: u, password: p}]
nodes:
  n0: {host: 127.0.0.1, user: u, password: p}
  n1: {host: 127.0.0.2, user: u, password: p}
databases:
  db:
    datasources:
      ds${0..3}: {node: "n${[0, 1, 0, 1]}", database: "db_${0..3}"}
    tables:
      sbtest1:
        nodes: "ds${0..3}.sbtest1_${0..7}"
        database_strategy: {column: id, algorithm: mod}
        table_strategy: {column: id, algorithm: two_level}
      users:
        nodes: "ds${0..3}.users_${0..1}"
        database_strategy: {column: name, algorithm: hash_mod, hash: murmur3}
        table_strategy: {column: name, algorithm: hash_mod}
      dbonly:
        nodes: "ds${0..3}.dbonly"
        database_strategy: {column: id, algorithm: hash_mod}
      tbonly:
        nodes: "ds1.tbonly_${0..4}"
        table_strategy: {column: id, algorithm: mod}
      ranged:
        nodes: "ds${0..1}.ranged_${0..2}"
        database_strategy: {column: id, algorithm: range, boundaries: [1000]}
        table_strategy: {column: id, algorithm: mod}
      byday:
        nodes: "ds0.byday_${0..9}"
        table_strategy: {column: d, algorithm: interval, unit: day, start: 2024-01-01}
      twocols:
        nodes: "ds${0..3}.twocols_${0..1}"
        database_strategy: {column: a, algorithm: mod}
        table_strategy: {column: b, algorithm: mod}
      orders:
        nodes: "ds${0..3}.orders_${0..3}"
        database_strategy: {column: order_id, algorithm: mod}
        table_strategy: {column: order_id, algorithm: two_level}
      order_items:
        nodes: "ds${0..3}.order_items_${0..3}"
        database_strategy: {column: order_id, algorithm: mod}
        table_strategy: {column: order_id, algorithm: two_level}
    binding_tables: [[orders, order_items]]
""")
DB = CONFIG.databases["db"]

# {v}: the key value's text. Shapes with a point route and shapes without one (they must return None or be absent).
TEMPLATES = [
    "SELECT c FROM sbtest1 WHERE id={v}",
    "SELECT c FROM sbtest1 WHERE id = -{v}",
    "SELECT c FROM sbtest1 WHERE {v} = id",
    "select sbtest1.c, pad from db.sbtest1 where sbtest1.id = {v} /* x */",
    "SELECT c FROM `sbtest1` AS s WHERE s.id = {v} AND k > 3 ORDER BY k LIMIT 5",
    "SELECT COUNT(*), SUM(k) FROM sbtest1 WHERE id = {v} GROUP BY k",
    "UPDATE sbtest1 SET k = k + 1 WHERE id = {v}",
    "DELETE FROM sbtest1 WHERE id = {v} LIMIT 1",
    "SELECT * FROM users WHERE name = {v}",
    "SELECT * FROM dbonly WHERE id = {v}",
    "SELECT * FROM tbonly WHERE id = {v}",
    "SELECT * FROM ranged WHERE id = {v}",
    "SELECT * FROM byday WHERE d = {v}",
    "SELECT * FROM twocols WHERE a = {v}",
    "SELECT * FROM twocols WHERE a = {v} AND b = 3",
    "SELECT o.x, i.y FROM orders o JOIN order_items i ON o.order_id = i.order_id WHERE o.order_id = {v}",
    "SELECT c FROM sbtest1 WHERE id IN ({v})",
    "SELECT c FROM sbtest1 WHERE id = {v} OR id = 7",
    "SELECT c FROM sbtest1 WHERE id = {v}; ",
]

literals = st.one_of(
    st.integers(0, 10**20).map(str),
    st.integers(0, 2**63).map(str),
    st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False).map(str),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).map(
        lambda s: "'" + s.replace("\\", "\\\\").replace("'", "''") + "'"),
    st.sampled_from(["NULL", "'2024-01-05'", "'2024-01-05 10:00:00'", "1e3", "0x1F", "X'41'", "'17'", "' 9 '",
                     "_utf8mb4'a'", "'abc'", "5.5", "TRUE", "18446744073709551615", "99999999999999999999"]),
)


def _py_route(route: Any, rule: Any) -> pyshard.PointRoute:
    """The pure-Python twin of a Cython point route (same data, pure-Python shard functions)."""
    nds = len(route.datasources)
    dbf = None
    if route.db_function is not None:
        dbf = pyshard.make_shard_function(rule.database_strategy, nds, datasources=nds)
    tbfs = tuple(None if f is None else pyshard.make_shard_function(rule.table_strategy, f.n, datasources=nds)
                 for f in route.table_functions)
    return pyshard.PointRoute(route.slot, route.neg, route.refs, dbf, tbfs, route.datasources, route.names)


def _generic_text(plan: QueryPlan, lexed: Any) -> Any:
    try:
        eu = plan.bind(lexed)
    except Exception as e:  # noqa: BLE001 - the outcome is compared
        return ("err", type(e).__name__)
    return [(u.datasource, u.sql) for u in eu.units], eu.merge is None


def _check_text(sql: bytes) -> bool:
    """True when the statement took the point route."""
    lexed = clexer.lex(sql)
    plan = planner.plan(lexed, DB)
    if type(plan) is not QueryPlan or plan.point is None:
        return False
    route = plan.point
    got = route.route_query(lexed)
    twin = _py_route(route, plan.rule).route_query(pylexer.lex(sql))
    assert got == twin
    if got is None:
        return False
    units, no_merge = _generic_text(plan, lexed)
    assert no_merge and len(units) == 1
    assert got == (units[0][0], frame(b"\x03" + units[0][1], 0))
    return True


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TEMPLATES), literals)
@example(TEMPLATES[0], "12345")
def test_point_route_matches_generic_bind(template: str, literal: str) -> None:
    _check_text(template.format(v=literal).encode())


def test_point_route_shapes() -> None:
    routed = {t for t in TEMPLATES if _check_text(t.format(v="1234").encode())}
    assert routed == set(TEMPLATES) - {
        "SELECT * FROM byday WHERE d = {v}",  # 1234 is no date: the generic path reports it
        "SELECT * FROM twocols WHERE a = {v}",  # a places the data source, every table of it is asked
        "SELECT * FROM twocols WHERE a = {v} AND b = 3",  # two conditions: generic
        "SELECT c FROM sbtest1 WHERE id = {v} OR id = 7",
    }
    assert _check_text(b"SELECT * FROM byday WHERE d = '2024-01-05'")
    assert _check_text(b"SELECT * FROM users WHERE name = 'bob'")


def test_point_route_values() -> None:
    plan = planner.plan(clexer.lex(b"SELECT c FROM sbtest1 WHERE id=1"), DB)
    route = plan.point
    assert route is not None and route.slot == 0 and not route.neg and route.refs == ((3, 3),)
    for i in (0, 1, 5, 31, 32, 10**17, 10**18 - 1, 10**18, 2**63 - 1, 2**63, 10**30):
        ds, pkt = route.route_query(clexer.lex(b"SELECT c FROM sbtest1 WHERE id=%d" % i))
        assert ds == f"ds{i % 4}"
        assert pkt == frame(b"\x03SELECT c FROM sbtest1_%d WHERE id=%d" % (i // 4 % 8, i), 0)
    assert route.route_query(clexer.lex(b"SELECT c FROM sbtest1 WHERE id=NULL")) is None
    assert route.route_query(clexer.lex(b"SELECT c FROM sbtest1 WHERE id='x'")) is None
    assert route.route_query(pylexer.lex(b"SELECT c FROM sbtest1 WHERE id=1")) is None  # not a ddm_core Lexed
    neg = planner.plan(clexer.lex(b"SELECT c FROM sbtest1 WHERE id = -1"), DB).point
    assert neg.neg and neg.route_query(clexer.lex(b"SELECT c FROM sbtest1 WHERE id = -6"))[0] == "ds2"
    assert neg.route_query(clexer.lex(b"SELECT c FROM sbtest1 WHERE id = -'6'")) is None
    assert _check_text(b"SELECT * FROM users WHERE name = 'alice'")


def test_point_route_string_keys_follow_the_key_collation() -> None:
    """users is placed by hash_mod on a string column (key_collation ci, the default): every spelling of one key
    that utf8mb4_general_ci calls equal takes the point route to the stored spelling's physical table, text and
    executes alike, and that is the table the generic bind picks."""
    want = planner.plan(clexer.lex(b"SELECT * FROM users WHERE name = 'bob'"), DB).point.route_query(
        clexer.lex(b"SELECT * FROM users WHERE name = 'bob'"))
    table = want[1][5:].split(b"FROM ")[1].split(b" ")[0]
    for lit in ("'BOB'", "'Bob  '", "_utf8mb4'bOb'", "'b' 'OB'", "X'424f4220'", "'böb'"):
        sql = f"SELECT * FROM users WHERE name = {lit}".encode()
        assert _check_text(sql), lit  # the point route, equal to the generic bind and to the twin
        got = planner.plan(clexer.lex(sql), DB).point.route_query(clexer.lex(sql))
        assert got[0] == want[0] and table in got[1], lit
    sql = b"SELECT * FROM users WHERE name = ?"
    lexed = clexer.lex(sql)
    plan = planner.plan(lexed, DB)
    for v in (b"bob", b"BOB", b"Bob   ", "BÖB".encode()):
        payload = b"\x17" + struct.pack("<IBI", 1, 0, 1) + b"\x00\x01\xfd\x00" + bytes((len(v),)) + v
        got = plan.point.route_execute(lexed, payload, 1, None)
        assert got == _py_route(plan.point, plan.rule).route_execute(pylexer.lex(sql), payload, 1, None)
        assert got == _generic_execute(plan, lexed, payload, 1, None)
        assert got == (want[0], b"SELECT * FROM %s WHERE name = ?" % table)


def test_point_route_is_immutable_and_not_compared() -> None:
    a = planner.plan(clexer.lex(b"SELECT c FROM sbtest1 WHERE id=1"), DB)
    b = planner.plan(clexer.lex(b"SELECT c FROM sbtest1 WHERE id=2"), DB)
    assert a == b and a.point is not b.point
    with pytest.raises(AttributeError):
        a.point.slot = 3  # type: ignore[misc]
    twin = _py_route(a.point, a.rule)
    with pytest.raises(AttributeError):
        twin.slot = 3  # type: ignore[misc]
    assert point_route(a) is not None
    assert "point" not in repr(a).split("router=")[0]


@pytest.mark.parametrize("impl", [cshard, pyshard], ids=["cython", "python"])
def test_point_route_validates(impl: Any) -> None:
    f = impl.make_shard_function(DB.tables["sbtest1"].database_strategy, 2)
    ok = dict(slot=0, neg=False, refs=((1, 1),), db_function=f, table_functions=(None, None),
              datasources=("a", "b"), names=(((b"t",),), ((b"t",),)))
    impl.PointRoute(**ok)
    for bad in (dict(refs=((2, 1),)), dict(refs=((1, 2), (2, 3))), dict(names=(((b"t", b"u"),), ((b"t",),))),
                dict(datasources=("a",)), dict(table_functions=(None,)), dict(slot=-1),
                dict(refs=tuple((i, i) for i in range(9)))):
        with pytest.raises((ValueError, TypeError)):
            impl.PointRoute(**{**ok, **bad})


# --- golden cases: every plan with a point route agrees with the generic bind ------------------------------------

GOLDEN = json.loads((Path(__file__).parent / "testdata" / "plan_cases.json").read_text())
GOLDEN_CONFIG = load_text(GOLDEN["config"])


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["comment"] for c in GOLDEN["cases"]])
def test_golden_cases(case: dict[str, Any]) -> None:
    sql = case["query"].encode()
    lexed = clexer.lex(sql)
    plan = planner.plan(lexed, GOLDEN_CONFIG.databases[case["db"]])
    if type(plan) is not QueryPlan or plan.point is None:
        return
    if case.get("params") is None:
        got = plan.point.route_query(lexed)
        assert got == _py_route(plan.point, plan.rule).route_query(pylexer.lex(sql))
        if got is not None:
            units, no_merge = _generic_text(plan, lexed)
            assert no_merge and got == (units[0][0], frame(b"\x03" + units[0][1], 0))


# --- COM_STMT_EXECUTE --------------------------------------------------------------------------------------------

PREPARED = [
    "SELECT c FROM sbtest1 WHERE id=?",
    "SELECT c FROM sbtest1 WHERE id = -?",
    "SELECT c FROM sbtest1 WHERE k = ? AND id = ?",
    "SELECT c FROM sbtest1 WHERE id = ? AND k = ? AND c = ?",
    "SELECT c FROM sbtest1 WHERE id = 6 AND k = ?",
    "SELECT c FROM sbtest1 WHERE id = 6",
    "UPDATE sbtest1 SET c = ? WHERE id = ?",
    "SELECT * FROM users WHERE name = ?",
]
INT_TYPES = {FT.TINY: 1, FT.SHORT: 2, FT.YEAR: 2, FT.LONG: 4, FT.INT24: 4, FT.LONGLONG: 8}
ALL_TYPES = sorted(set(INT_TYPES) | {FT.DOUBLE, FT.FLOAT, FT.NULL, FT.DECIMAL, FT.NEWDECIMAL, FT.DATE, FT.DATETIME,
                                     FT.TIMESTAMP, FT.TIME, FT.VARCHAR, FT.VAR_STRING, FT.STRING, FT.BLOB, FT.JSON,
                                     FT.BIT, FT.NEWDATE, 0x55})


def _lenenc(b: bytes, form: int) -> bytes:
    n = len(b)
    if form == 0 and n < 0xFB:
        return bytes((n,)) + b
    if form <= 1 and n < 0x10000:
        return b"\xfc" + struct.pack("<H", n) + b
    if form <= 2:
        return b"\xfd" + n.to_bytes(3, "little") + b
    return b"\xfe" + struct.pack("<Q", n) + b


@st.composite
def params_block(draw: Any, n: int) -> tuple[bytes, bytes | None]:
    """(payload, last bound types) of a COM_STMT_EXECUTE with n parameters, mostly well-formed."""
    types = b""
    body = b""
    nulls = 0
    for i in range(n):
        t = draw(st.sampled_from(ALL_TYPES) if draw(st.booleans()) else st.sampled_from(
            [FT.LONGLONG, FT.LONG, FT.VAR_STRING, FT.TINY]))
        flag = draw(st.sampled_from([0, 0x80]))
        types += bytes((t, flag))
        if draw(st.integers(0, 9)) == 0:
            nulls |= 1 << i
            continue
        if t in INT_TYPES:
            body += draw(st.binary(min_size=INT_TYPES[t], max_size=INT_TYPES[t]))
        elif t in (FT.DOUBLE, FT.FLOAT):
            body += draw(st.binary(min_size=8 if t == FT.DOUBLE else 4, max_size=8 if t == FT.DOUBLE else 4))
        elif t == FT.NULL:
            pass
        elif t in (FT.DECIMAL, FT.NEWDECIMAL):
            body += _lenenc(draw(st.sampled_from([b"1.5", b"x", b"12"])), 0)
        elif t in (FT.DATE, FT.DATETIME, FT.TIMESTAMP):
            body += draw(st.sampled_from([b"\x00", b"\x04\xe8\x07\x01\x02", b"\x04\xe8\x07\x0d\x02"]))
        elif t == FT.TIME:
            body += b"\x00"
        else:
            body += _lenenc(draw(st.binary(max_size=20)), draw(st.integers(0, 3)))
    bitmap = nulls.to_bytes((n + 7) // 8, "little")
    bound = draw(st.booleans())
    head = b"\x17" + struct.pack("<IBI", 1, 0, 1)
    if not n:
        payload = head
    elif bound:
        payload = head + bitmap + b"\x01" + types + body
    else:
        payload = head + bitmap + b"\x00" + body
    cut = draw(st.integers(0, 3))
    if cut == 1:
        payload = payload[:draw(st.integers(0, len(payload)))]
    elif cut == 2:
        payload += draw(st.binary(max_size=4))
    last_types = draw(st.sampled_from([types, None, types[:-1], b""])) if not bound else draw(
        st.sampled_from([types, None]))
    return payload, last_types


def _generic_execute(plan: QueryPlan, lexed: Any, payload: bytes, n: int, types: bytes | None) -> Any:
    try:
        values, _ = decode_params(payload, n, types)
        eu = plan.bind(lexed, values, None, None, inline=False)
    except (PlanError, ParamError, ValueError):
        return None
    if len(eu.units) != 1 or eu.merge is not None:
        return None
    return eu.units[0].datasource, eu.units[0].sql


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PREPARED), st.data())
def test_route_execute_matches_generic(template: str, data: Any) -> None:
    sql = template.encode()
    lexed = clexer.lex(sql)
    plan = planner.plan(lexed, DB)
    assert type(plan) is QueryPlan and plan.point is not None
    n = data.draw(st.sampled_from([sql.count(b"?"), sql.count(b"?"), sql.count(b"?") + 1, max(0, sql.count(b"?") - 1),
                                   0]))
    payload, types = data.draw(params_block(n))
    got = plan.point.route_execute(lexed, payload, n, types)
    assert got == _py_route(plan.point, plan.rule).route_execute(pylexer.lex(sql), payload, n, types)
    if got is not None:
        assert got == _generic_execute(plan, lexed, payload, n, types)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 4), st.one_of(st.none(), st.binary(max_size=10)))
def test_route_execute_never_crashes(payload: bytes, n: int, types: bytes | None) -> None:
    for template in PREPARED[:4]:
        sql = template.encode()
        lexed = clexer.lex(sql)
        plan = planner.plan(lexed, DB)
        got = plan.point.route_execute(lexed, payload, n, types)
        assert got == _py_route(plan.point, plan.rule).route_execute(pylexer.lex(sql), payload, n, types)
        if got is not None:
            assert got == _generic_execute(plan, lexed, payload, n, types)


def test_route_execute_sysbench_statement() -> None:
    sql = b"SELECT c FROM sbtest1 WHERE id=?"
    lexed = clexer.lex(sql)
    route = planner.plan(lexed, DB).point
    for i, (t, fmt) in enumerate([(FT.LONG, "<i"), (FT.LONGLONG, "<q"), (FT.TINY, "<b"), (FT.SHORT, "<h")]):
        v = -5 - i if i % 2 else 5 + i
        payload = b"\x17" + struct.pack("<IBI", 1, 0, 1) + b"\x00\x01" + bytes((t, 0)) + struct.pack(fmt, v)
        assert route.route_execute(lexed, payload, 1, None) == (
            f"ds{v % 4}", b"SELECT c FROM sbtest1_%d WHERE id=?" % (v // 4 % 8))
        # types from an earlier execute
        payload = b"\x17" + struct.pack("<IBI", 1, 0, 1) + b"\x00\x00" + struct.pack(fmt, v)
        assert route.route_execute(lexed, payload, 1, bytes((t, 0)))[0] == f"ds{v % 4}"
        assert route.route_execute(lexed, payload, 1, None) is None
    unsigned = b"\x17" + struct.pack("<IBI", 1, 0, 1) + b"\x00\x01\x08\x80" + struct.pack("<Q", 2**64 - 3)
    assert route.route_execute(lexed, unsigned, 1, None)[0] == f"ds{(2**64 - 3) % 4}"
    string = b"\x17" + struct.pack("<IBI", 1, 0, 1) + b"\x00\x01\xfd\x00\x0242"
    assert route.route_execute(lexed, string, 1, None)[0] == "ds2"
    null = b"\x17" + struct.pack("<IBI", 1, 0, 1) + b"\x01\x01\x08\x00"
    assert route.route_execute(lexed, null, 1, None) is None
    assert route.route_execute(pylexer.lex(sql), null, 1, None) is None  # not a ddm_core Lexed
