"""Inline expression expansion: ${a..b}, ${[x, y]}, cartesian order, errors."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddm.config.expr import MAX_EXPANSION, ExprError, expand, is_expression


def test_cartesian_product_groups_by_first_segment() -> None:
    got = expand("ds${0..1}.t_${0..2}")
    assert got == ("ds0.t_0", "ds0.t_1", "ds0.t_2", "ds1.t_0", "ds1.t_1", "ds1.t_2")


def test_sbtest_4x8_layout() -> None:
    got = expand("ds${0..3}.sbtest1_${0..7}")
    assert len(got) == 32
    assert got[:2] == ("ds0.sbtest1_0", "ds0.sbtest1_1")
    assert got[8] == "ds1.sbtest1_0"
    assert got[-1] == "ds3.sbtest1_7"


def test_no_zero_padding_by_default() -> None:
    got = expand("sbtest_${0..31}")
    assert got[0] == "sbtest_0" and got[9] == "sbtest_9" and got[10] == "sbtest_10" and got[-1] == "sbtest_31"
    assert len(got) == 32


def test_leading_zero_start_pads_to_its_width() -> None:
    assert expand("t_${00..11}") == tuple(f"t_{i:02d}" for i in range(12))
    assert expand("m${2024..2025}${01..12}")[:2] == ("m202401", "m202402")
    assert expand("m${2024..2025}${01..12}")[12] == "m202501"
    assert expand("x${007..008}") == ("x007", "x008")


def test_single_value_range() -> None:
    assert expand("t_${5..5}") == ("t_5",)


def test_lists_quoted_and_bare() -> None:
    assert expand("${['a','b']}_x") == ("a_x", "b_x")
    assert expand('${["a", "b,c"]}') == ("a", "b,c")
    assert expand("t_${[us, eu ,asia]}") == ("t_us", "t_eu", "t_asia")
    assert expand("${['}']}") == ("}",)


def test_top_level_commas_concatenate() -> None:
    assert expand("ds0.t_${0..1}, ds1.t_9") == ("ds0.t_0", "ds0.t_1", "ds1.t_9")
    assert expand("a,b") == ("a", "b")


def test_plain_text_and_literal_dollar() -> None:
    assert expand("orders") == ("orders",)
    assert expand("a$b") == ("a$b",)
    assert expand("$") == ("$",)
    assert not is_expression("orders")
    assert is_expression("t_${0..1}")
    assert is_expression("a, b")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("t_${0..3", "unterminated"),
        ("t_${3..1}", "goes backwards"),
        ("t_${a..b}", "expected ${a..b} or ${[x, y]}"),
        ("t_${}", "expected ${a..b} or ${[x, y]}"),
        ("t_${[]}", "empty list"),
        ("t_${[a,]}", "trailing ','"),
        ("t_${['a}", "unterminated"),
        ("t_${['a' b]}", "expected ','"),
        ("a,,b", "empty item"),
        ("", "empty item"),
        ("t_${0..2000000}", "more than"),
        ("a${0..999}b${0..9999}", "more than"),
    ],
)
def test_errors(text: str, fragment: str) -> None:
    with pytest.raises(ExprError, match=None) as info:
        expand(text)
    assert fragment in str(info.value)


def test_non_string_is_an_error() -> None:
    with pytest.raises(ExprError):
        expand(3)  # type: ignore[arg-type]


def test_limit_is_inclusive() -> None:
    assert len(expand(f"${{1..{MAX_EXPANSION}}}")) == MAX_EXPANSION


_literal = st.text(alphabet="abcxyz_.", min_size=0, max_size=4)
_range = st.tuples(st.integers(0, 50), st.integers(0, 6))  # (start, extra length)


@given(st.lists(st.tuples(_literal, _range), min_size=1, max_size=3), _literal)
def test_expansion_is_the_cartesian_product(parts: list[tuple[str, tuple[int, int]]], tail: str) -> None:
    text = "".join(f"{lit}${{{lo}..{lo + extra}}}" for lit, (lo, extra) in parts) + tail
    choices = [[f"{lit}{v}" for v in range(lo, lo + extra + 1)] for lit, (lo, extra) in parts]
    expected = tuple("".join(combo) + tail for combo in itertools.product(*choices))
    assert expand(text) == expected


@given(st.text(alphabet=st.characters(blacklist_characters="$,"), min_size=1).filter(lambda s: s.strip()))
def test_text_without_expressions_is_itself(text: str) -> None:
    assert expand(text) == (text.strip(),)


@given(st.lists(st.text(alphabet="abc123_", min_size=1, max_size=5), min_size=1, max_size=6))
def test_list_segment_roundtrip(items: list[str]) -> None:
    quoted = ", ".join(repr(i) for i in items)
    assert expand(f"p_${{[{quoted}]}}") == tuple(f"p_{i}" for i in items)
