"""ddm_core.rowconv (C) against its pure-Python twin ddm._py.rowconv: the same binary rows, or both refusing a
malformed text row, for generated column plans and rows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddm._py import rowconv as py
from ddm_core import rowconv as c


def _lenenc(b: bytes) -> bytes:
    n = len(b)
    if n < 0xFB:
        return bytes((n,)) + b
    if n < 0x10000:
        return b"\xfc" + n.to_bytes(2, "little") + b
    return b"\xfd" + n.to_bytes(3, "little") + b


def _generic(i: int, text: bytes) -> bytes:
    return text[::-1] + bytes((i,))  # any deterministic function of (column, text)


WIDTH_RANGE = {1: 8, 2: 16, 4: 32, 8: 64}


@st.composite
def plan_and_rows(draw: st.DrawFn) -> tuple[tuple, tuple, list[bytes]]:
    ncols = draw(st.integers(1, 12))
    kinds, args, values = [], [], []
    for _ in range(ncols):
        kind = draw(st.sampled_from([c.COPY, c.INT, c.GENERIC]))
        if kind == c.INT:
            width = draw(st.sampled_from([1, 2, 4, 8]))
            bits = WIDTH_RANGE[width]
            ints = st.integers(-(2 ** (bits - 1)), 2 ** bits - 1).map(lambda v: str(v).encode())
            values.append(ints)
            args.append(width)
        elif kind == c.GENERIC:
            values.append(st.binary(max_size=300))
            args.append(draw(st.sampled_from([c.LENENC, c.FIXED, c.TEMPORAL])))
        else:
            values.append(st.binary(max_size=70000 if draw(st.booleans()) else 40))
            args.append(None)
        kinds.append(kind)
    rows = []
    for _ in range(draw(st.integers(0, 4))):
        rows.append(b"".join(b"\xfb" if draw(st.booleans()) and draw(st.booleans())
                             else _lenenc(draw(v)) for v in values))
    return tuple(kinds), tuple(args), rows


@settings(max_examples=300, deadline=None)
@given(plan_and_rows())
def test_c_and_twin_agree(case: tuple[tuple, tuple, list[bytes]]) -> None:
    kinds, args, rows = case
    assert c.text_rows_to_binary(rows, kinds, args, _generic) == py.text_rows_to_binary(rows, kinds, args, _generic)


@settings(max_examples=300, deadline=None)
@given(plan_and_rows(), st.data())
def test_both_refuse_truncated_or_garbled_rows(case: tuple[tuple, tuple, list[bytes]], data: st.DataObject) -> None:
    kinds, args, rows = case
    if not rows or not rows[0]:
        return
    row = rows[0]
    cut = data.draw(st.integers(0, len(row) - 1))
    bad = [row[:cut]] if data.draw(st.booleans()) else [row[:cut] + b"\xff" + row[cut:]]
    outcomes = []
    for impl in (c, py):
        try:
            outcomes.append(impl.text_rows_to_binary(bad, kinds, args, _generic))
        except ValueError:
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]


def test_integer_edges() -> None:
    kinds, args = (c.INT, c.INT, c.INT), (8, 8, 1)
    row = _lenenc(b"18446744073709551615") + _lenenc(b"-9223372036854775808") + _lenenc(b"-1")
    want = [b"\x00\x00" + b"\xff" * 8 + b"\x00" * 7 + b"\x80" + b"\xff"]
    assert c.text_rows_to_binary([row], kinds, args, _generic) == want
    assert py.text_rows_to_binary([row], kinds, args, _generic) == want
    for bad in (b"", b"-", b"1x", b" 1", b"1" * 21):
        for impl in (c, py):
            with pytest.raises(ValueError):
                impl.text_rows_to_binary([_lenenc(bad)], (c.INT,), (4,), _generic)
