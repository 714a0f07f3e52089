"""ddm.wire.rowcodec's text -> binary row conversion (merged scatter results answering COM_STMT_EXECUTE): the fast form
(string-like fields copied with their length prefix, integers packed from their text) gives the same bytes as the
reference that decodes and encodes every field, for generated rows of every column kind."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ddm.wire.constants import field_type as FT
from ddm.wire.rowcodec import (
    UNSIGNED_FLAG,
    ColumnDef,
    lenenc_str,
    text_rows_to_binary,
    text_rows_to_binary_reference,
)

BINARY = 63

INT_RANGES = {FT.TINY: 8, FT.SHORT: 16, FT.INT24: 24, FT.LONG: 32, FT.LONGLONG: 64}


def _int_column(draw: st.DrawFn) -> tuple[ColumnDef, st.SearchStrategy[bytes]]:
    t = draw(st.sampled_from(sorted(INT_RANGES)))
    unsigned = draw(st.booleans())
    bits = INT_RANGES[t]
    lo, hi = (0, 2 ** bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    col = ColumnDef("i", t, flags=UNSIGNED_FLAG if unsigned else 0, charset=BINARY)
    return col, st.integers(lo, hi).map(lambda v: str(v).encode())


@st.composite
def column(draw: st.DrawFn) -> tuple[ColumnDef, st.SearchStrategy[bytes]]:
    kind = draw(st.sampled_from(["int", "year", "varchar", "blob", "json", "decimal", "double", "float", "date",
                                 "datetime", "time", "enum", "bit"]))
    if kind == "int":
        return _int_column(draw)
    if kind == "year":
        return ColumnDef("y", FT.YEAR, flags=UNSIGNED_FLAG, charset=BINARY), st.integers(1901, 2155).map(
            lambda v: str(v).encode())
    if kind in ("varchar", "enum"):
        charset = draw(st.sampled_from([45, 33, 8, BINARY]))  # utf8mb4, utf8, latin1, binary
        t = FT.VAR_STRING if kind == "varchar" else FT.STRING
        return ColumnDef("s", t, charset=charset), st.binary(max_size=300)
    if kind == "blob":
        return ColumnDef("b", FT.BLOB, charset=BINARY), st.binary(max_size=70000)
    if kind == "json":
        return ColumnDef("j", FT.JSON, charset=45), st.text(max_size=50).map(lambda s: s.encode("utf-8", "replace"))
    if kind == "bit":
        return ColumnDef("t", FT.BIT, charset=BINARY), st.binary(min_size=1, max_size=8)
    if kind == "decimal":
        scale = draw(st.integers(0, 6))
        digits = st.integers(-(10 ** 12), 10 ** 12)
        return (ColumnDef("d", FT.NEWDECIMAL, decimals=scale, charset=BINARY),
                digits.map(lambda v: (f"{v // 10 ** scale}.{abs(v) % 10 ** scale:0{scale}d}" if scale
                                      else str(v)).encode()))
    if kind in ("double", "float"):
        t = FT.DOUBLE if kind == "double" else FT.FLOAT
        return ColumnDef("f", t, decimals=31, charset=BINARY), st.sampled_from(
            [b"0", b"1.5", b"-2.25", b"1e20", b"3.14159", b"-0.001"])
    if kind == "date":
        return ColumnDef("dt", FT.DATE, charset=BINARY), st.dates().map(lambda d: d.isoformat().encode())
    if kind == "datetime":
        return ColumnDef("ts", FT.DATETIME, charset=BINARY), st.datetimes().map(
            lambda d: d.isoformat(" ").encode())
    return ColumnDef("tm", FT.TIME, charset=BINARY), st.sampled_from([b"00:00:00", b"12:34:56", b"-838:59:59",
                                                                     b"01:02:03.250000"])


@st.composite
def result(draw: st.DrawFn) -> tuple[list[ColumnDef], list[bytes]]:
    cols = draw(st.lists(column(), min_size=1, max_size=6))
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        fields = []
        for _col, values in cols:
            v = draw(st.none() | values)
            fields.append(b"\xfb" if v is None else lenenc_str(v))
        rows.append(b"".join(fields))
    return [c for c, _ in cols], rows


@settings(max_examples=400, deadline=None)
@given(result())
def test_fast_conversion_matches_the_reference(res: tuple[list[ColumnDef], list[bytes]]) -> None:
    cols, rows = res
    assert text_rows_to_binary(rows, cols) == text_rows_to_binary_reference(rows, cols)


def test_sysbench_shapes() -> None:
    c = ColumnDef("c", FT.STRING, charset=45)
    k = ColumnDef("k", FT.LONG, charset=BINARY)
    rows = [lenenc_str(b"x" * 120) + lenenc_str(b"-42"), b"\xfb" + lenenc_str(b"7")]
    got = text_rows_to_binary(rows, [c, k])
    assert got == [b"\x00\x00" + lenenc_str(b"x" * 120) + (-42).to_bytes(4, "little", signed=True),
                   b"\x00\x04" + (7).to_bytes(4, "little")]
    assert got == text_rows_to_binary_reference(rows, [c, k])
