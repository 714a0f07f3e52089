"""Span rewriting and SQL literals: apply_edits, format_literal, and a property test that binding a cached plan to
statements with literals of any length changes exactly the intended spans."""

from __future__ import annotations

import datetime
import importlib
from decimal import Decimal
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddm.config import load_text
from ddm.sharding import planner
from ddm.sharding.plan import PlanError
from ddm.sharding.rewrite import apply_edits, format_blob, format_literal, format_param, quote_bytes
from ddm.wire.constants import er

CONFIG = load_text("""
users: [{name: u, password: p}]
nodes:
  n0: {host: 127.0.0.1, user: u, password: p}
  n1: {host: 127.0.0.2, user: u, password: p}
databases:
  sbtest:
    datasources:
      ds${0..3}: {node: "n${[0, 1, 0, 1]}", database: "sbtest_${0..3}"}
    tables:
      sbtest1:
        nodes: "ds${0..3}.sbtest1_${0..7}"
        database_strategy: {column: id, algorithm: mod}
        table_strategy: {column: id, algorithm: two_level}
""")
DB = CONFIG.databases["sbtest"]


def _lexer() -> ModuleType:
    try:
        return importlib.import_module("ddm_core.lexer")
    except ImportError:
        return importlib.import_module("ddm._py.lexer")


lexer = _lexer()


def test_apply_edits_one_pass_in_order() -> None:
    sql = b"SELECT a FROM t WHERE x = 1"
    edits = [(14, 15, b"t_3"), (26, 27, b"42"), (8, 8, b", b AS D0")]  # unsorted input
    assert apply_edits(sql, edits) == b"SELECT a, b AS D0 FROM t_3 WHERE x = 42"


def test_apply_edits_insertion_before_replacement_at_same_offset() -> None:
    assert apply_edits(b"abc", [(1, 2, b"X"), (1, 1, b"+")]) == b"a+Xc"


def test_apply_edits_drops_edits_inside_a_larger_one() -> None:
    # a parameter inside a LIMIT clause that is rewritten as a whole
    sql = b"SELECT c FROM t LIMIT ?, ?"
    edits = [(22, 23, b"5"), (25, 26, b"10"), (22, 26, b"15")]
    assert apply_edits(sql, edits) == b"SELECT c FROM t LIMIT 15"


def test_apply_edits_rejects_partial_overlap() -> None:
    with pytest.raises(ValueError):
        apply_edits(b"abcdef", [(0, 3, b"x"), (2, 5, b"y")])


def test_apply_edits_subrange() -> None:
    sql = b"(1, 'a'), (2, 'b')"
    assert apply_edits(sql, [(1, 2, b"7"), (11, 12, b"8")], 10, 18) == b"(8, 'b')"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, b"NULL"),
        (True, b"1"),
        (-12, b"-12"),
        (Decimal("1.50"), b"1.50"),
        (Decimal("1E+3"), b"1000"),
        (1.5, b"1.5"),
        ("it's", b"'it''s'"),
        ("a\\b\n\r\x00\x1a", b"'a\\\\b\\n\\r\\0\\Z'"),
        ("é", "'é'".encode()),
        (b"\x00'", b"'\\0'''"),
        (datetime.date(2024, 2, 29), b"'2024-02-29'"),
        (datetime.datetime(2024, 1, 2, 3, 4, 5, 6), b"'2024-01-02 03:04:05.000006'"),
        (datetime.time(23, 59), b"'23:59:00'"),
        (datetime.timedelta(hours=-1, seconds=30), b"'-00:59:30'"),
        (datetime.timedelta(days=1, microseconds=5), b"'24:00:00.000005'"),
    ],
)
def test_format_literal(value: object, text: bytes) -> None:
    assert format_literal(value) == text


def test_format_blob_and_param() -> None:
    assert format_blob(b"\x00\xff") == b"X'00ff'"
    assert format_param(b"\x00\xff", is_blob=True) == b"X'00ff'"
    assert format_param(b"ab") == b"'ab'"
    with pytest.raises(ValueError):
        format_literal(float("nan"))
    with pytest.raises(TypeError):
        format_literal(object())


@given(st.binary(max_size=40))
def test_quoted_bytes_lex_back_to_the_value(value: bytes) -> None:
    lexed = lexer.lex(b"SELECT " + quote_bytes(value))
    assert len(lexed.slots) == 1 and lexed.slot_value(0) == value


# --- property: a cached plan rewrites only the intended spans ---------------------------------------------------

TEMPLATE = "SELECT c, k FROM sbtest1 WHERE id = {id} AND c = {c} AND k IN ({k1}, {k2}) ORDER BY k LIMIT {n}"
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
values = st.fixed_dictionaries({
    "id": st.integers(min_value=0, max_value=2**62),
    "c": text,
    # non-negative: `-1` lexes as operator + literal, a different digest (negatives are golden cases)
    "k1": st.one_of(st.integers(0, 10**12), st.decimals(min_value=0, allow_nan=False, allow_infinity=False, places=3)),
    "k2": text,
    "n": st.integers(0, 10**6),
})
PLAN = planner.plan(lexer.lex(TEMPLATE.format(id=1, c="'x'", k1=1, k2="'y'", n=1).encode()), DB)


def _expected(v: dict[str, object], table: str) -> bytes:
    lit = {k: format_literal(x).decode() for k, x in v.items()}
    return TEMPLATE.format(**lit).replace("FROM sbtest1 ", f"FROM {table} ").encode()


@settings(max_examples=200, deadline=None)
@given(values)
def test_bind_changes_only_the_intended_spans(v: dict[str, object]) -> None:
    sql = TEMPLATE.format(**{k: format_literal(x).decode() for k, x in v.items()}).encode()
    lexed = lexer.lex(sql)
    assert lexed.digest == lexer.lex(TEMPLATE.format(id=1, c="'x'", k1=1, k2="'y'", n=1).encode()).digest
    (unit,) = PLAN.bind(lexed).units
    i = v["id"]
    assert isinstance(i, int)
    assert unit.datasource == f"ds{i % 4}"
    assert unit.sql == _expected(v, f"sbtest1_{i // 4 % 8}")


@settings(max_examples=200, deadline=None)
@given(values)
def test_prepared_parameters_are_inlined_as_literals(v: dict[str, object]) -> None:
    lexed = lexer.lex(TEMPLATE.format(id="?", c="?", k1="?", k2="?", n="?").encode())
    plan = planner.plan(lexed, DB)
    (unit,) = plan.bind(lexed, [v["id"], v["c"], v["k1"], v["k2"], v["n"]]).units
    i = v["id"]
    assert isinstance(i, int)
    assert unit.sql == _expected(v, f"sbtest1_{i // 4 % 8}")


SCATTER = "SELECT c FROM sbtest1 WHERE id IN ({a}, {b}) AND c <> {c} ORDER BY k DESC LIMIT {off}, {n}"


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**9), st.integers(0, 10**9), text, st.integers(0, 1000), st.integers(0, 1000))
def test_scatter_rewrite_spans(a: int, b: int, c: str, off: int, n: int) -> None:
    lit = format_literal(c).decode()
    sql = SCATTER.format(a=a, b=b, c=lit, off=off, n=n).encode()
    plan = planner.plan(lexer.lex(SCATTER.format(a=1, b=2, c="''", off=1, n=1).encode()), DB)
    u = plan.bind(lexer.lex(sql))
    targets = {(f"ds{x % 4}", f"sbtest1_{x // 4 % 8}") for x in (a, b)}
    assert {(x.datasource, x.sql.split(b" FROM ")[1].split()[0].decode()) for x in u.units} == targets
    if len(targets) == 1:
        assert u.merge is None
        assert u.units[0].sql == sql.replace(b"FROM sbtest1 ", f"FROM {targets.pop()[1]} ".encode())
        return
    assert u.merge is not None and (u.merge.limit, u.merge.offset) == (n, off)
    for unit in u.units:
        table = unit.sql.split(b" FROM ")[1].split()[0].decode()
        mine = [x for x in (a, b) if f"sbtest1_{x // 4 % 8}" == table and f"ds{x % 4}" == unit.datasource]
        want = (f"SELECT c, k AS ORDER_BY_DERIVED_0 FROM {table} WHERE id IN ({', '.join(map(str, mine))}) "
                f"AND c <> {lit} ORDER BY k DESC LIMIT {off + n}")
        assert unit.sql == want.encode()


@pytest.mark.parametrize("where,ids", [
    ("id IN (1, 0) AND id = '1'", [1]),  # '1' = 1 in MySQL: the intersection must not be empty
    ("id IN (1.0, '0') AND id = '1'", [1]),
    ("id IN ('11', '01') AND id = '1'", [1]),  # '01' = '1' for an integer key
    ("id = '11' AND id >= '5'", [11]),  # compared as numbers, not as bytes ('11' < '5')
    ("id IN ('11', '12') AND id BETWEEN '5' AND '100'", [11, 12]),
])
def test_key_conditions_of_mixed_types_keep_every_possible_target(where: str, ids: list[int]) -> None:
    """Regression (found by the corpus differential test): ANDed conditions on a shard key were intersected by
    Python equality and ordering, so `id IN (1, 0) AND id = '1'` routed nowhere and returned no row (MySQL: id 1)."""
    lexed = lexer.lex(f"SELECT id FROM sbtest1 WHERE {where}".encode())
    units = planner.plan(lexed, DB).bind(lexed).units
    got = {(u.datasource, u.sql.split(b" FROM ")[1].split()[0].decode()) for u in units}
    assert {(f"ds{i % 4}", f"sbtest1_{i // 4 % 8}") for i in ids} <= got


def test_contradicting_numeric_key_conditions_still_route_to_one_target() -> None:
    lexed = lexer.lex(b"SELECT id FROM sbtest1 WHERE id = 1 AND id = 2")
    assert len(planner.plan(lexed, DB).bind(lexed).units) == 1


# --- property: ORDER BY / GROUP BY positions bound from a cached plan -----------------------------------------

POSITIONAL = "SELECT c, k, pad FROM sbtest1 WHERE id IN ({a}, {b}) GROUP BY {g} ORDER BY {p} DESC, {q} LIMIT {n}"
position = st.one_of(st.integers(0, 5), st.integers(0, 2**64 - 1), st.integers(2**32 - 2, 2**32 + 5))


def _column(v: int) -> int | None:
    """MySQL's reading of an integer literal as a position of a 3-item select list: column index, None = error."""
    n = v & 0xFFFFFFFF
    return n - 1 if 1 <= n <= 3 else None


@settings(max_examples=100, deadline=None)
@given(position, position, position, st.integers(0, 1000))
def test_positions_bind_like_mysql_reads_them(g: int, p: int, q: int, n: int) -> None:
    plan = planner.plan(lexer.lex(POSITIONAL.format(a=1, b=2, g=1, p=2, q=3, n=1).encode()), DB)
    sql = POSITIONAL.format(a=1, b=2, g=g, p=p, q=q, n=n).encode()
    bad = [(v, clause) for v, clause in ((p, "ORDER BY"), (q, "ORDER BY"), (g, "GROUP BY")) if _column(v) is None]
    if bad:
        v, clause = bad[0]
        shown = v & 0xFFFFFFFF
        shown = shown - 2**32 if shown >= 2**31 else shown
        with pytest.raises(PlanError) as e:
            plan.bind(lexer.lex(sql))
        assert (e.value.code, e.value.message) == (er.BAD_FIELD_ERROR, f"Unknown column '{shown}' in '{clause}'")
        return
    u = plan.bind(lexer.lex(sql))
    assert u.merge is not None
    assert u.merge.group_by == (_column(g),)
    assert u.merge.order_by == ((_column(p), True), (_column(q), False))
    assert u.merge.limit == n
    # the shards group and sort by the position as written, and need every group (LIMIT removed)
    assert [x.sql for x in u.units] == [
        f"SELECT c, k, pad FROM sbtest1_0 WHERE id IN ({i}) GROUP BY {g} ORDER BY {g}".encode() for i in (1, 2)]
