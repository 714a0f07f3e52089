"""Result merge: unit tests, Cython/Python twin agreement, and an oracle over the union of shard rows."""

from __future__ import annotations

import math
import os
import struct
import unicodedata
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddm._py import merge as pymerge
from ddm.wire.constants import field_type as FT
from ddm.wire.resultset import column_definition
from ddm.wire.rowcodec import (
    ColumnDef,
    MergeSpec,
    decode_value,
    encode_value,
    format_double,
    format_float,
    lenenc_str,
)
from ddm_core import merge as cmerge

IMPLS = [cmerge, pymerge]
EXAMPLES = int(os.environ.get("DDM_HYPOTHESIS_EXAMPLES", "300"))
ids = ["cython", "python"]

# ----------------------------------------------------------------------------------------------- encoding helpers
# Independent of the code under test: how a MySQL server would put these values on the wire.


class T:
    """A test column type: its ColumnDef and how values are written/compared."""

    def __init__(self, name: str, type_: int, *, flags: int = 0, charset: int = 63, decimals: int = 0) -> None:
        self.name = name
        self.col = ColumnDef(name, type_, flags=flags, charset=charset, decimals=decimals)
        self.type = type_

    def text(self, v: Any) -> bytes:
        t = self.type
        if t == FT.NEWDECIMAL:
            return format(v.quantize(Decimal(1).scaleb(-self.col.decimals)), "f").encode()
        if t == FT.DOUBLE:
            return repr(v).encode()
        if t == FT.TIME:
            sign = "-" if v < 0 else ""
            a = abs(v)
            return f"{sign}{a // 3600:02d}:{a // 60 % 60:02d}:{a % 60:02d}".encode()
        if t == FT.DATETIME:
            return "{:04d}-{:02d}-{:02d} {:02d}:{:02d}:{:02d}".format(*v).encode()
        if isinstance(v, str):
            return v.encode()
        return str(v).encode()

    def binary(self, v: Any) -> bytes:
        t = self.type
        if t == FT.LONGLONG:
            return struct.pack("<Q" if self.col.flags & 32 else "<q", v)
        if t == FT.SHORT:
            return struct.pack("<h", v)
        if t == FT.DOUBLE:
            return struct.pack("<d", v)
        if t == FT.TIME:
            a = abs(v)
            return bytes((8, 1 if v < 0 else 0)) + struct.pack("<IBBB", a // 86400, a // 3600 % 24, a // 60 % 60,
                                                                a % 60)
        if t == FT.DATETIME:
            return bytes((7,)) + struct.pack("<HBBBBB", *v)
        return lenenc_str(self.text(v))

    def key(self, v: Any) -> Any:
        """Oracle comparison value (NULL handled by the caller)."""
        if self.type in (FT.VARCHAR, FT.VAR_STRING):
            if self.col.charset == 46:                      # utf8mb4_bin: bytes, PAD SPACE
                return v.encode().rstrip(b" ")
            s = "".join(c for c in unicodedata.normalize("NFKD", v) if not unicodedata.combining(c))
            return s.upper().rstrip(" ")                     # utf8mb4_general_ci
        if self.type == FT.DOUBLE and v == 0:
            return 0.0
        return v


TYPES = [
    T("i", FT.LONGLONG),
    T("u", FT.LONGLONG, flags=32),
    T("s", FT.SHORT),
    T("d", FT.NEWDECIMAL, decimals=2),
    T("f", FT.DOUBLE),
    T("ci", FT.VAR_STRING, charset=45),
    T("bin", FT.VAR_STRING, charset=46, flags=128),
    T("dt", FT.DATETIME),
    T("tm", FT.TIME),
]


def value_strategy(t: T, exact_doubles: bool = False) -> st.SearchStrategy:
    if t.type == FT.LONGLONG:
        if t.col.flags & 32:
            return st.one_of(st.integers(0, 5), st.integers(0, 2**64 - 1))
        return st.one_of(st.integers(-3, 3), st.integers(-2**63, 2**63 - 1))
    if t.type == FT.SHORT:
        return st.integers(-4, 4)
    if t.type == FT.NEWDECIMAL:
        return st.one_of(st.integers(-300, 300), st.integers(-10**12, 10**12)).map(lambda i: Decimal(i) / 100)
    if t.type == FT.DOUBLE and exact_doubles:
        return st.integers(-4000, 4000).map(lambda i: i / 4)     # sums are exact in any order
    if t.type == FT.DOUBLE:
        return st.one_of(st.sampled_from([0.0, -0.0, 1.5, -2.25, 1e20, -1e-7]),
                         st.floats(allow_nan=False, allow_infinity=False))
    if t.type in (FT.VARCHAR, FT.VAR_STRING):
        return st.text(alphabet="aAbB _zZé\x00", max_size=4)
    if t.type == FT.DATETIME:
        return st.tuples(st.integers(1999, 2001), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23),
                         st.integers(0, 59), st.integers(0, 59))
    if t.type == FT.TIME:
        return st.one_of(st.integers(-7200, 7200), st.integers(-838 * 3600, 838 * 3600))
    raise AssertionError


def text_row(types: list[T], vals: list[Any]) -> bytes:
    return b"".join(b"\xfb" if v is None else lenenc_str(t.text(v)) for t, v in zip(types, vals, strict=True))


def binary_row(types: list[T], vals: list[Any]) -> bytes:
    bitmap = bytearray((len(vals) + 9) // 8)
    parts = []
    for i, (t, v) in enumerate(zip(types, vals, strict=True)):
        if v is None:
            bitmap[(i + 2) >> 3] |= 1 << ((i + 2) & 7)
        else:
            parts.append(t.binary(v))
    return b"\x00" + bytes(bitmap) + b"".join(parts)


def okey(types: list[T], vals: list[Any], col: int) -> tuple:
    v = vals[col]
    return (0,) if v is None else (1, types[col].key(v))


def oracle_sort(types: list[T], rows: list[list[Any]], order: tuple[tuple[int, bool], ...]) -> list[list[Any]]:
    out = list(rows)
    for col, desc in reversed(order):      # stable multi-pass: NULL first ASC, last DESC
        out.sort(key=lambda r, c=col: okey(types, r, c), reverse=desc)
    return out


def order_keys(types: list[T], rows: list[list[Any]], order: tuple[tuple[int, bool], ...]) -> list[tuple]:
    return [tuple(okey(types, r, c) for c, _ in order) for r in rows]


def run(impl: Any, spec: MergeSpec, cols: list[Any], shards: list[list[bytes]], *, chunk: int = 3,
        max_buffer: int = 1000) -> list[bytes]:
    """Drive a merger like the executor would: feed chunks round-robin, take after each feed."""
    m = impl.Merger(spec, cols, len(shards), max_buffer=max_buffer)
    out: list[bytes] = []
    pos = [0] * len(shards)
    live = set(range(len(shards)))
    while live and not m.done:
        for s in sorted(live):
            if not m.wants(s):
                continue
            rows = shards[s][pos[s]:pos[s] + chunk]
            pos[s] += len(rows)
            if rows:
                m.feed(s, rows)
            if pos[s] >= len(shards[s]):
                m.finish(s)
                live.discard(s)
            out.extend(m.take())
        out.extend(m.take())
    out.extend(m.take())
    assert m.done
    return out


# ----------------------------------------------------------------------------------------------- unit tests


def test_column_definition_parse() -> None:
    raw = column_definition("price", FT.NEWDECIMAL, schema="db", table="t", length=12, charset=63, flags=32 | 128,
                            decimals=2)
    c = ColumnDef.parse(raw)
    assert (c.name, c.type, c.flags, c.charset, c.decimals, c.length) == (b"price", FT.NEWDECIMAL, 160, 63, 2, 12)
    assert c.schema == b"db" and c.table == b"t"
    assert c.to_payload() == raw
    assert cmerge.ColumnDef is pymerge.ColumnDef


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_order_by_nulls_and_stability(impl: Any) -> None:
    t = [TYPES[0], TYPES[5]]
    s0 = [text_row(t, v) for v in ([None, "x"], [1, "b"], [3, "a"])]
    s1 = [text_row(t, v) for v in ([None, "y"], [1, "B"], [2, "c"])]
    cols = [x.col for x in t]
    out = run(impl, MergeSpec(order_by=((0, False),)), cols, [s0, s1])
    assert out == [s0[0], s1[0], s0[1], s1[1], s1[2], s0[2]]
    # DESC: NULLs last; ties on the ci string keep shard order ('b' from shard 0 before 'B').
    s0 = [text_row(t, v) for v in ([1, "x"], [2, "b"], [3, "a"], [4, None])]
    s1 = [text_row(t, v) for v in ([5, "y"], [6, "c"], [7, "B"])]
    out = run(impl, MergeSpec(order_by=((1, True),)), cols, [s0, s1])
    assert out == [s1[0], s0[0], s1[1], s0[1], s1[2], s0[2], s0[3]]


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_emits_only_when_every_shard_has_a_head(impl: Any) -> None:
    t = [TYPES[0]]
    m = impl.Merger(MergeSpec(order_by=((0, False),)), [t[0].col], 2)
    m.feed(0, [text_row(t, [1]), text_row(t, [5])])
    assert m.take() == []
    m.feed(1, [text_row(t, [2])])
    assert m.take() == [text_row(t, [1]), text_row(t, [2])]   # shard 1 drained: 5 must wait
    m.finish(1)
    assert m.take() == [text_row(t, [5])]
    assert not m.done
    m.finish(0)
    assert m.take() == [] and m.done


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_backpressure_and_limit(impl: Any) -> None:
    t = [TYPES[0]]
    m = impl.Merger(MergeSpec(order_by=((0, False),), limit=3, offset=2), [t[0].col], 2, max_buffer=4)
    m.feed(0, [text_row(t, [i]) for i in range(0, 10, 2)])
    assert not m.wants(0) and m.wants(1)
    assert m.take() == []
    m.feed(1, [text_row(t, [i]) for i in range(1, 10, 2)])
    assert m.take() == [text_row(t, [i]) for i in (2, 3, 4)]
    assert m.done and not m.wants(0) and not m.wants(1)


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_concat_streams_without_waiting(impl: Any) -> None:
    t = [TYPES[0]]
    m = impl.Merger(MergeSpec(limit=2), [t[0].col], 3)
    m.feed(2, [text_row(t, [7])])
    assert m.take() == [text_row(t, [7])]
    m.feed(0, [text_row(t, [8]), text_row(t, [9])])
    assert m.take() == [text_row(t, [8])]
    assert m.done


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_mysql_orderings(impl: Any) -> None:
    cases = [
        (TYPES[1], [2**64 - 1, 0, 2**63, 5]),
        (TYPES[0], [-2**63, 2**63 - 1, -1, 0]),
        (TYPES[3], [Decimal("-0.50"), Decimal("-0.05"), Decimal("10.00"), Decimal("9.99"), Decimal("0.00")]),
        (TYPES[4], [-0.0, 1e-300, -1e300, 2.5, 0.0]),
        (TYPES[8], [-3600, -1, 0, 3599 * 3600 // 5, -838 * 3600]),
        (TYPES[7], [(2000, 1, 2, 3, 4, 5), (1999, 12, 31, 23, 59, 59)]),
    ]
    for binary in (False, True):
        enc = binary_row if binary else text_row
        for t, vals in cases:
            exp = sorted(vals, key=t.key)
            shards = [[enc([t], [v])] for v in vals]
            out = run(impl, MergeSpec(order_by=((0, False),), binary=binary), [t.col], shards)
            assert out == [enc([t], [v]) for v in exp], (t.name, binary)


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_collations(impl: Any) -> None:
    ci, b = TYPES[5], TYPES[6]
    spec = MergeSpec(distinct=True)
    vals = ["a", "A", "a  ", "b", "é", "E", "_"]
    out = run(impl, spec, [ci.col], [[text_row([ci], [v])] for v in vals])
    assert out == [text_row([ci], [v]) for v in ("a", "b", "é", "_")]
    out = run(impl, spec, [b.col], [[text_row([b], [v])] for v in vals])
    assert out == [text_row([b], [v]) for v in ("a", "A", "b", "é", "E", "_")]
    # general_ci weights are upper-case letters: '_' (0x5F) sorts after 'Z' (0x5A), 'a' ~ 'A' (0x41).
    out = run(impl, MergeSpec(order_by=((0, False),)), [ci.col], [[text_row([ci], [v])] for v in ("_", "a", "Z")])
    assert out == [text_row([ci], [v]) for v in ("a", "Z", "_")]


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_general_ci_weights_nfkd_misses(impl: Any) -> None:
    """utf8mb4_general_ci weighs 'ß' as 'S' (not 'SS') and every character beyond the BMP as U+FFFD, as MariaDB's
    WEIGHT_STRING says (tests/integration/test_ci_shard_keys.py checks fold_ci over the whole BMP)."""
    ci = TYPES[5]
    vals = ["straße", "STRASE", "strasse", "a\U0001F600", "A\U0001F601", "ab"]
    out = run(impl, MergeSpec(distinct=True), [ci.col], [[text_row([ci], [v])] for v in vals])
    assert out == [text_row([ci], [v]) for v in ("straße", "strasse", "a\U0001F600", "ab")]
    out = run(impl, MergeSpec(order_by=((0, False),)), [ci.col],
              [[text_row([ci], [v])] for v in ("strasse", "a\U0001F600", "straße", "ab")])
    assert out == [text_row([ci], [v]) for v in ("ab", "a\U0001F600", "straße", "strasse")]


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_aggregates_without_group_by_over_no_rows(impl: Any) -> None:
    cols = [ColumnDef("c", FT.LONGLONG), ColumnDef("s", FT.NEWDECIMAL), ColumnDef("a", FT.NEWDECIMAL, decimals=4),
            ColumnDef("mx", FT.LONGLONG), ColumnDef("as", FT.NEWDECIMAL), ColumnDef("ac", FT.LONGLONG)]
    spec = MergeSpec(aggregates=((0, "count", ()), (1, "sum", ()), (2, "avg", (4, 5)), (3, "max", ())),
                     visible_columns=4)
    out = run(impl, spec, cols, [[], [], []])
    assert out == [b"\x010\xfb\xfb\xfb"]
    spec_b = MergeSpec(aggregates=spec.aggregates, visible_columns=4, binary=True)
    out = run(impl, spec_b, cols, [[]])
    assert out == [b"\x00" + bytes([0b00111000]) + struct.pack("<q", 0)]


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_aggregates_text_and_binary(impl: Any) -> None:
    cols = [ColumnDef("g", FT.VAR_STRING, charset=45), ColumnDef("c", FT.LONGLONG),
            ColumnDef("s", FT.NEWDECIMAL, decimals=2), ColumnDef("avg", FT.NEWDECIMAL, decimals=6),
            ColumnDef("f", FT.DOUBLE), ColumnDef("as", FT.NEWDECIMAL, decimals=2), ColumnDef("ac", FT.LONGLONG)]
    types = [T("g", FT.VAR_STRING, charset=45), T("c", FT.LONGLONG), T("s", FT.NEWDECIMAL, decimals=2),
             T("avg", FT.NEWDECIMAL, decimals=6), T("f", FT.DOUBLE), T("as", FT.NEWDECIMAL, decimals=2),
             T("ac", FT.LONGLONG)]
    aggs = ((1, "count", ()), (2, "sum", ()), (3, "avg", (5, 6)), (4, "sum", ()))
    s0 = [["a", 2, Decimal("1.50"), None, 0.1, Decimal("1.00"), 2], ["b", 1, None, None, 1e20, None, 0]]
    s1 = [["A", 3, Decimal("-0.25"), None, 0.2, Decimal("1.00"), 1]]
    for binary in (False, True):
        enc = binary_row if binary else text_row
        spec = MergeSpec(group_by=(0,), aggregates=aggs, shard_order=((0, False),), visible_columns=5,
                         binary=binary)
        out = run(impl, spec, cols, [[enc(types, r) for r in s0], [enc(types, r) for r in s1]])
        ocols = pymerge.output_columns(spec, cols)
        assert ocols[3].decimals == 6 and ocols[3].type == FT.NEWDECIMAL
        dec = [[decode_value(f, c, binary) for f, c in zip(_split(r, ocols[:5], binary), ocols, strict=False)] for r in out]
        assert dec == [["a", 5, Decimal("1.25"), Decimal("0.666667"), 0.1 + 0.2],
                       ["b", 1, None, None, 1e20]]
        if not binary:
            assert out[0] == b"\x01a\x015\x041.25\x080.666667\x130.30000000000000004"


def _split(row: bytes, cols: list[ColumnDef], binary: bool) -> list[bytes | None]:
    from ddm.wire.rowcodec import binary_wire, split_binary_row, split_text_row
    return split_binary_row(row, [binary_wire(c) for c in cols]) if binary else split_text_row(row, len(cols))


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_count_distinct_and_having(impl: Any) -> None:
    # Shards ran: SELECT g, COUNT(DISTINCT x), x, COUNT(*) ... GROUP BY g, x ORDER BY g, x
    t = [TYPES[0], TYPES[0], TYPES[5], TYPES[0]]
    cols = [x.col for x in t]
    s0 = [[1, 1, "a", 2], [1, 1, "b", 1], [2, 1, "z", 1]]
    s1 = [[1, 1, "A", 4], [1, 0, None, 3], [3, 1, "q", 1]]
    spec = MergeSpec(group_by=(0,), aggregates=((1, "count_distinct", (2,)), (3, "count", ())),
                     shard_order=((0, False), (2, False)), visible_columns=2, having=lambda r: r[3] > 1,
                     order_by=((1, True),))
    out = run(impl, spec, cols, [[text_row(t, r) for r in s0], [text_row(t, r) for r in s1]])
    assert out == [text_row(t[:2], [1, 2])]


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_strip_derived_columns(impl: Any) -> None:
    t = [TYPES[5], TYPES[0], TYPES[4]]
    cols = [x.col for x in t]
    rows = [["x", 2, 1.5], [None, 1, None], ["y", None, 2.0]]
    for binary in (False, True):
        enc = binary_row if binary else text_row
        spec = MergeSpec(order_by=((1, False),), visible_columns=1, binary=binary)
        out = run(impl, spec, cols, [[enc(t, r)] for r in rows])
        assert out == [enc(t[:1], r[:1]) for r in (rows[2], rows[1], rows[0])]


@pytest.mark.parametrize("type_,decimals,text", [
    (FT.DATE, 0, "2024-02-29"), (FT.DATE, 0, "0000-00-00"), (FT.DATETIME, 0, "2024-02-29 13:14:15"),
    (FT.DATETIME, 0, "2024-02-29 00:00:00"), (FT.DATETIME, 6, "2024-02-29 13:14:15.000123"),
    (FT.TIMESTAMP, 3, "1999-12-31 23:59:59.500"), (FT.TIME, 0, "-838:59:59"), (FT.TIME, 0, "00:00:00"),
    (FT.TIME, 6, "12:00:00.250000"), (FT.TIME, 0, "-00:00:01")])
def test_temporal_binary_round_trip(type_: int, decimals: int, text: str) -> None:
    col = ColumnDef("t", type_, charset=63, decimals=decimals)
    assert decode_value(encode_value(text, col, True), col, True) == text


def test_double_formatting() -> None:
    assert [format_double(v) for v in (1.5, 1e20, 100.0, 0.1 + 0.2, -1e-7, 1e14, 1e15, 0.0001, 123456.789)] == [
        "1.5", "1e20", "100", "0.30000000000000004", "-1e-7", "100000000000000", "1e15", "0.0001", "123456.789"]
    assert format_float(1.100000023841858) == "1.1"


# ----------------------------------------------------------------------------------------------- hypothesis oracle


@st.composite
def plain_case(draw: Any) -> tuple:
    ncols = draw(st.integers(1, 4))
    types = [draw(st.sampled_from(TYPES)) for _ in range(ncols)]
    nshards = draw(st.integers(1, 4))
    rows = [[[draw(st.one_of(st.none(), value_strategy(t))) for t in types]
             for _ in range(draw(st.integers(0, 8)))] for _ in range(nshards)]
    order = tuple((c, draw(st.booleans())) for c in draw(st.permutations(range(ncols)))[:draw(st.integers(0, ncols))])
    limit = draw(st.one_of(st.none(), st.integers(0, 10)))
    offset = draw(st.integers(0, 4))
    distinct = draw(st.booleans())
    binary = draw(st.booleans())
    sorted_input = draw(st.booleans())
    chunk = draw(st.integers(1, 5))
    return types, rows, order, limit, offset, distinct, binary, sorted_input, chunk


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_case())
def test_oracle_plain(case: tuple) -> None:
    types, rows, order, limit, offset, distinct, binary, sorted_input, chunk = case
    enc = binary_row if binary else text_row
    cols = [t.col for t in types]
    # Shards ran the ORDER BY (unless sorted_input is False: shard_order=() forces the merger's own sort) and
    # LIMIT offset+limit (only valid without DISTINCT, like the rewriter would do).
    shard_rows = []
    for rs in rows:
        rs = oracle_sort(types, rs, order) if sorted_input else rs
        if limit is not None and not distinct and (sorted_input or not order):
            rs = rs[:offset + limit]
        shard_rows.append(rs)
    spec = MergeSpec(order_by=order, limit=limit, offset=offset, distinct=distinct, binary=binary,
                     shard_order=None if sorted_input else ())
    payloads = [[enc(types, r) for r in rs] for rs in shard_rows]
    outs = [run(impl, spec, cols, payloads, chunk=chunk, max_buffer=3) for impl in IMPLS]
    assert outs[0] == outs[1]
    out = outs[0]
    by_payload = {enc(types, r): r for rs in rows for r in rs}
    got = [by_payload[p] for p in out]
    union = [r for rs in rows for r in rs]
    if distinct:
        seen, dd = set(), []
        for r in union:
            k = tuple(okey(types, r, c) for c in range(len(types)))
            if k not in seen:
                seen.add(k)
                dd.append(r)
        union = dd
    exp = oracle_sort(types, union, order)
    end = None if limit is None else offset + limit
    exp = exp[offset:end]
    assert len(got) == len(exp)
    assert order_keys(types, got, order) == order_keys(types, exp, order)
    full = tuple((c, False) for c in range(len(types)))
    if limit is None and offset == 0:
        assert Counter(order_keys(types, got, full)) == Counter(order_keys(types, exp, full))
    if not distinct and len(types) > 1:
        # Same merge with the last column derived (stripped): same rows, cut.
        vis = len(types) - 1
        spec2 = MergeSpec(order_by=order, limit=limit, offset=offset, binary=binary, visible_columns=vis,
                          shard_order=None if sorted_input else ())
        for impl in IMPLS:
            assert run(impl, spec2, cols, payloads, chunk=chunk) == [enc(types[:vis], r[:vis]) for r in got]


AGG_TYPES = [TYPES[0], TYPES[3], TYPES[4], TYPES[5], TYPES[8], TYPES[2]]


@st.composite
def group_case(draw: Any) -> tuple:
    ng = draw(st.integers(0, 2))
    gtypes = [draw(st.sampled_from([TYPES[2], TYPES[5], TYPES[6], TYPES[8]])) for _ in range(ng)]
    vt = draw(st.sampled_from(AGG_TYPES))           # the aggregated column x
    funcs = draw(st.lists(st.sampled_from(["count", "sum", "min", "max", "avg", "count_distinct"]), min_size=1,
                          max_size=4))
    if vt.type in (FT.VAR_STRING, FT.TIME):
        funcs = [f for f in funcs if f not in ("sum", "avg")] or ["count"]
    nshards = draw(st.integers(1, 4))
    rows = [[[draw(value_strategy(t)) if draw(st.integers(0, 5)) else None for t in gtypes]
             + [draw(st.one_of(st.none(), value_strategy(vt, True)))]
             for _ in range(draw(st.integers(0, 8)))] for _ in range(nshards)]
    gorder = tuple((c, draw(st.booleans())) for c in draw(st.permutations(range(ng))))
    stream = ng > 0 and draw(st.booleans())
    final = draw(st.sampled_from(["none", "group", "agg"]))
    limit = draw(st.one_of(st.none(), st.integers(0, 6)))
    offset = draw(st.integers(0, 3))
    having = draw(st.booleans())
    binary = draw(st.booleans())
    chunk = draw(st.integers(1, 4))
    return gtypes, vt, funcs, rows, gorder, stream, final, limit, offset, having, binary, chunk


COUNT_T = T("cnt", FT.LONGLONG)


def sum_type(vt: T) -> T:
    if vt.type == FT.DOUBLE:
        return T("sum", FT.DOUBLE)
    return T("sum", FT.NEWDECIMAL, decimals=vt.col.decimals)


def avg_scale(vt: T) -> int:
    return vt.col.decimals + 4


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(group_case())
def test_oracle_group(case: tuple) -> None:
    gtypes, vt, funcs, rows, gorder, stream, final, limit, offset, having, binary, chunk = case
    ng = len(gtypes)
    enc = binary_row if binary else text_row
    # Result columns the rewriter would produce: g..., one column per aggregate, then derived columns:
    # AVG -> SUM(x), COUNT(x); COUNT(DISTINCT x) -> x (and the shards GROUP BY g..., x).
    out_types: list[T] = list(gtypes)
    aggs: list[tuple[int, str, tuple[int, ...]]] = []
    derived: list[T] = []
    dkinds: list[str] = []      # what each derived column carries: "sum", "count" (of x) or "x"
    cd = "count_distinct" in funcs
    xcol = None
    nvis = ng + len(funcs)
    for f in funcs:
        col = len(out_types)
        if f == "count":
            out_types.append(COUNT_T)
            aggs.append((col, f, ()))
        elif f == "sum":
            out_types.append(sum_type(vt))
            aggs.append((col, f, ()))
        elif f in ("min", "max"):
            out_types.append(vt)
            aggs.append((col, f, ()))
        elif f == "avg":
            out_types.append(T("avg", FT.DOUBLE) if vt.type == FT.DOUBLE else
                             T("avg", FT.NEWDECIMAL, decimals=avg_scale(vt)))
            si, ci = nvis + len(derived), nvis + len(derived) + 1
            derived += [sum_type(vt), COUNT_T]
            dkinds += ["sum", "count"]
            aggs.append((col, f, (si, ci)))
        else:
            out_types.append(COUNT_T)
            if xcol is None:
                xcol = nvis + len(derived)
                derived.append(vt)
                dkinds.append("x")
            aggs.append((col, f, (xcol,)))
    all_types = out_types + derived
    cols = [t.col for t in all_types]

    def gkey(r: list) -> tuple:
        return tuple(okey(gtypes + [vt], r, c) for c in range(ng))

    def sub_group(rs: list[list]) -> dict:
        groups: dict[tuple, list] = {}
        for r in rs:
            k = gkey(r) + ((okey(gtypes + [vt], r, ng),) if cd else ())
            groups.setdefault(k, []).append(r)
        return groups

    def agg(rs: list[list], f: str) -> Any:
        xs = [r[ng] for r in rs if r[ng] is not None]
        if f == "count":
            return len(xs)
        if f == "sum":
            return (math.fsum(xs) if vt.type == FT.DOUBLE else sum(xs, Decimal(0))) if xs else None
        if f in ("min", "max"):
            if not xs:
                return None
            return (min if f == "min" else max)(xs, key=vt.key)
        if f == "avg":
            if not xs:
                return None
            if vt.type == FT.DOUBLE:
                return math.fsum(xs) / len(xs)
            return (sum(xs, Decimal(0)) / len(xs)).quantize(Decimal(1).scaleb(-avg_scale(vt)), ROUND_HALF_UP)
        return len({vt.key(x) for x in xs})

    # What each shard returns.
    shard_payloads = []
    for rs in rows:
        out_rows = []
        for grs in sub_group(rs).values():
            r0 = grs[0]
            vals = list(r0[:ng])
            for f in funcs:
                vals.append(agg(grs, "count" if f == "count_distinct" else f) if f != "avg" else None)
            vals += [r0[ng] if d == "x" else agg(grs, d) for d in dkinds]
            out_rows.append(vals)
        if not ng and not out_rows and not cd:
            out_rows.append([agg([], f) if f != "avg" else None for f in funcs] + [agg([], d) for d in dkinds])
        sorder = tuple(gorder) + (((xcol, False),) if cd else ())
        if stream:
            out_rows = oracle_sort(all_types, out_rows, sorder)
        shard_payloads.append([enc(all_types, r) for r in out_rows])

    # Final ORDER BY.
    if final == "group" and ng:
        order = tuple(gorder[:1])
    elif final == "agg":
        order = ((ng, True),) + tuple((c, False) for c in range(ng))
    else:
        order = ()
    if funcs[0] in ("count", "count_distinct"):
        hv = (lambda r: r[ng] > 1) if having else None
    else:
        hv = (lambda r: r[ng] is not None) if having else None
    spec = MergeSpec(group_by=tuple(range(ng)), aggregates=tuple(aggs), order_by=order, limit=limit, offset=offset,
                     visible_columns=nvis, binary=binary, having=hv,
                     shard_order=(tuple(gorder) + (((xcol, False),) if cd else ())) if stream else ())
    outs = [run(impl, spec, cols, shard_payloads, chunk=chunk, max_buffer=2) for impl in IMPLS]
    assert outs[0] == outs[1]
    ocols = pymerge.output_columns(spec, cols)
    got = [[decode_value(f, c, binary) for f, c in zip(_split(p, ocols[:nvis], binary), ocols, strict=False)] for p in outs[0]]

    # Oracle over the union of the raw rows.
    union = [r for rs in rows for r in rs]
    groups: dict[tuple, list] = {}
    for r in union:
        groups.setdefault(gkey(r), []).append(r)
    if not ng and not groups:
        groups[()] = []
    exp = []
    for grs in groups.values():
        vals = list(grs[0][:ng]) if grs else []
        vals += [agg(grs, f) for f in funcs]
        exp.append(vals)
    if hv:
        exp = [r for r in exp if hv(tuple(r))]
    exp = oracle_sort(out_types, exp, order)
    end = None if limit is None else offset + limit

    def norm(r: list) -> tuple:
        out: list[Any] = []
        for t, v in zip(out_types, r, strict=True):
            if v is None:
                out.append(None)
            elif t.type in (FT.TIME, FT.DATETIME):
                out.append(v if isinstance(v, str) else t.text(v).decode())
            else:
                out.append(t.key(v))
        return tuple(out)

    assert len(got) == len(exp[offset:end])
    if order:
        gk = [tuple(norm(r)[c] for c, _ in order) for r in got]
        ek = [tuple(norm(r)[c] for c, _ in order) for r in exp[offset:end]]
        assert gk == ek
    exp_all = Counter(norm(r) for r in exp)
    got_c = Counter(norm(r) for r in got)
    if limit is None and offset == 0:
        assert got_c == exp_all
    else:
        assert not (got_c - exp_all)
