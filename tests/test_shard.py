"""Shard functions: Cython (ddm_core.shard) against the pure-Python twin (ddm._py.shard), and both against the
algorithm definitions (brute force)."""

from __future__ import annotations

import sys
import types
import zlib
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddm._py import shard as pyshard
from ddm.config import ShardStrategy
from ddm_core import shard as cshard

IMPLS = [pytest.param(cshard, id="cython"), pytest.param(pyshard, id="python")]


def strat(algorithm: str, **props: object) -> ShardStrategy:
    return ShardStrategy(column="id", algorithm=algorithm, props=MappingProxyType(dict(props)))


def outcome(fn, *args):
    """The result, or the exception's class name (each module has its own ShardKeyError class)."""
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - the comparison is the point
        return ("err", type(e).__name__)


# Values as they reach a shard function: literals from the lexer, protocol values, parameters.
numeric_text = st.from_regex(r"\A\s?[+-]?(\d{1,25}(\.\d{0,5})?|\.\d{1,5})([eE][+-]?\d{1,3})?\s?\Z")
date_text = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda d: d.isoformat(sep=" ")
) | st.dates().map(str)
values = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**80), 2**80),
    st.booleans(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=-(10**20), max_value=10**20, places=2),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
    numeric_text,
    numeric_text.map(str.encode),
    date_text,
    date_text.map(str.encode),
    st.dates(),
    st.datetimes(),
    st.sampled_from(["0000-00-00", "2024-02-30", "2024-13-01", "1e99999999", "nan", "inf", "\ud800"]),
    st.text(st.sampled_from("aAzZ_ -.09éÉßẞͅı😀\x00\t"), max_size=12),  # what the ci fold folds
    st.text(st.sampled_from("aAzZ_ -.09éÉßẞͅı😀\x00\t"), max_size=12).map(str.encode),
    st.text(st.sampled_from("aB "), min_size=250, max_size=300),  # past the C fold's stack buffer
    st.binary(max_size=20).map(bytearray),
    st.text(st.sampled_from("aB é"), max_size=8).map(lambda s: memoryview(s.encode())),
    st.sampled_from([b"\xc3", b"A\xff  ", "x" * 257 + " ", b"y" * 256]),
)

STRATEGIES = [
    (strat("mod"), 8),
    (strat("mod"), 1),
    (strat("mod"), 1000),
    (strat("two_level", databases=4), 8),
    (strat("two_level", databases=32), 32),
    (strat("hash_mod"), 16),
    (strat("hash_mod", hash="crc32"), 7),
    (strat("hash_mod", hash="murmur3"), 16),
    (strat("hash_mod", hash="murmur3", seed=0x9747B28C), 5),
    (strat("hash_mod", key_collation="binary"), 16),
    (strat("hash_mod", hash="murmur3", key_collation="ci"), 7),
    (strat("range", boundaries=(-100, 0, 100, 10**6)), 5),
    (strat("range", boundaries=(Decimal("0.5"), 2**64)), 3),
    (strat("interval", unit="day", start="2024-01-01", step=1), 400),
    (strat("interval", unit="month", start=date(2020, 1, 1), step=3), 40),
    (strat("interval", unit="year", start=datetime(2000, 7, 1, 12), step=2), 30),
]


# -- hashes -------------------------------------------------------------------------------------------------------

MURMUR3_VECTORS = [  # MurmurHash3_x86_32 reference values (from the SMHasher verification set and common ports)
    (b"", 0, 0x00000000),
    (b"", 1, 0x514E28B7),
    (b"", 0xFFFFFFFF, 0x81F16F39),
    (b"\x00\x00\x00\x00", 0, 0x2362F9DE),
    (b"\xff\xff\xff\xff", 0, 0x76293B50),
    (b"\x21\x43\x65\x87", 0, 0xF55B516B),
    (b"\x21\x43\x65\x87", 0x5082EDEE, 0x2362F9DE),
    (b"\x21\x43\x65", 0, 0x7E4A8634),
    (b"\x21\x43", 0, 0xA0F7B07A),
    (b"\x21", 0, 0x72661CF4),
    (b"\x00\x00\x00", 0, 0x85F0B427),
    (b"\x00\x00", 0, 0x30F4C306),
    (b"\x00", 0, 0x514E28B7),
    (b"a", 0x9747B28C, 0x7FA09EA6),
    (b"aa", 0x9747B28C, 0x5D211726),
    (b"aaa", 0x9747B28C, 0x283E0130),
    (b"aaaa", 0x9747B28C, 0x5A97808A),
    (b"ab", 0x9747B28C, 0x74875592),
    (b"abc", 0, 0xB3DD93FA),
    (b"abc", 0x9747B28C, 0xC84A62DD),
    (b"abcd", 0x9747B28C, 0xF0478627),
    (b"Hello, world!", 0x9747B28C, 0x24884CBA),
    (b"The quick brown fox jumps over the lazy dog", 0x9747B28C, 0x2FA826CD),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("data,seed,expected", MURMUR3_VECTORS)
def test_murmur3_vectors(impl, data, seed, expected):
    assert impl.murmur3_32(data, seed) == expected


@given(st.binary(max_size=300), st.integers(0, 2**32 - 1))
def test_hashes_match(data, seed):
    assert cshard.crc32(data) == pyshard.crc32(data) == zlib.crc32(data)
    assert cshard.murmur3_32(data, seed) == pyshard.murmur3_32(data, seed)


# -- equivalence of the two implementations -----------------------------------------------------------------------


@pytest.mark.parametrize("strategy,n", STRATEGIES, ids=lambda x: getattr(x, "algorithm", str(x)))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
def test_index_equivalent(strategy, n, value):
    fc = cshard.make_shard_function(strategy, n)
    fp = pyshard.make_shard_function(strategy, n)
    rc, rp = outcome(fc.index, value), outcome(fp.index, value)
    assert rc == rp
    if rc[0] == "ok":
        assert 0 <= rc[1] < n and type(rc[1]) is int
    else:
        assert rc[1] == "ShardKeyError"


@pytest.mark.parametrize("strategy,n", STRATEGIES, ids=lambda x: getattr(x, "algorithm", str(x)))
@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(lo=values, hi=values, lo_inc=st.booleans(), hi_inc=st.booleans())
def test_ranges_equivalent(strategy, n, lo, hi, lo_inc, hi_inc):
    fc = cshard.make_shard_function(strategy, n)
    fp = pyshard.make_shard_function(strategy, n)
    rc = outcome(fc.indexes_for_range, lo, lo_inc, hi, hi_inc)
    assert rc == outcome(fp.indexes_for_range, lo, lo_inc, hi, hi_inc)
    assert rc[0] == "ok"  # pruning never raises: it returns None (all) when it cannot tell
    if rc[1] is not None:
        assert list(rc[1]) == sorted(set(rc[1])) and all(0 <= i < n for i in rc[1])


# -- the algorithms -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_mod_canonical_values(impl):
    f = impl.make_shard_function(strat("mod"), 8)
    assert f.index(42) == 2
    for v in (
        "42",
        b"42",
        " 42 ",
        "+42",
        "42.0",
        "4.2e1",
        Decimal("42"),
        Decimal("42.000"),
        42.0,
        True and 42,
    ):
        assert f.index(v) == 2, v
    assert f.index(-1) == 7  # floor modulo: always in [0, n)
    assert f.index(-9) == 7
    assert f.index(2**64 - 1) == (2**64 - 1) % 8
    assert f.index(-(2**63)) == 0
    assert f.index(2**63) == 0
    for bad in (
        None,
        "abc",
        "4x",
        "1.5",
        Decimal("1.5"),
        1.5,
        float("nan"),
        date(2024, 1, 1),
        "",
        b"\xff",
        "1e999",
    ):
        with pytest.raises(impl.ShardKeyError):
            f.index(bad)


@pytest.mark.parametrize("impl", IMPLS)
@given(st.integers(-(2**80), 2**80), st.integers(1, 1024), st.integers(1, 64))
def test_mod_two_level_formulas(impl, k, n, d):
    assert impl.make_shard_function(strat("mod"), n).index(k) == k % n
    assert impl.make_shard_function(strat("two_level", databases=d), n).index(k) == k // d % n
    # the router passes the data source count when props do not name it
    assert impl.make_shard_function(strat("two_level"), n, datasources=d).index(k) == k // d % n


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("collation", ["ci", "binary"])
def test_hash_mod_canonical_bytes(impl, collation):
    for h, fn in (("crc32", zlib.crc32), ("murmur3", pyshard.murmur3_32)):
        f = impl.make_shard_function(strat("hash_mod", hash=h, key_collation=collation), 1000)
        for v, raw in (
            (12345, b"12345"),
            (-7, b"-7"),
            (2**64 - 1, b"18446744073709551615"),
            (-(2**63), b"-9223372036854775808"),
            ("12345", b"12345"),
            (b"12345", b"12345"),
            (Decimal("12345.00"), b"12345"),
            (Decimal("1.50"), b"1.5"),
            (1.5, b"1.5"),
            ("héllo", b"HELLO" if collation == "ci" else "héllo".encode()),
            ("abc  ", b"ABC" if collation == "ci" else b"abc  "),
            (b"Abc ", b"ABC" if collation == "ci" else b"Abc "),
            (date(2024, 1, 31), b"2024-01-31"),
            (datetime(2024, 1, 31, 12, 0, 1), b"2024-01-31 12:00:01"),
        ):
            assert f.index(v) == fn(raw) % 1000, (h, v)
            assert impl.key_bytes(v, collation) == raw
        with pytest.raises(impl.ShardKeyError):
            f.index(None)


# Spellings utf8mb4_general_ci calls equal (checked on MariaDB 10.11 by tests/integration/test_ci_shard_keys.py).
CI_EQUAL = [
    ["abc", "ABC", "Abc", "abc   ", b"aBC ", bytearray(b"abc"), memoryview(b"ABC  ")],
    ["élan", "ELAN", "Élan", "elan ", "éLAN".encode()],
    ["Crème Brûlée", "creme brulee", "CRÈME BRÛLÉE  "],
    ["straße", "STRASE", "strase ", "STRAßE"],  # ß = s
    ["key😀", "KEY😁", "Key\U0010ffff "],  # every supplementary character weighs U+FFFD
    ["ǅemal", "Ǆemal", "ǆEMAL"],
    ["ı", "I", "i"],
    ["x" * 300, "X" * 300 + " " * 5],  # longer than the C fold's stack buffer
    ["", " ", "   "],
]
CI_DIFFERENT = ["abc", "abcd", " abc", "ab c", "abc\t", "abç\x00", "æ", "ø", "ss", "\x00"]


@pytest.mark.parametrize("impl", IMPLS)
def test_hash_mod_key_collation(impl):
    for h in ("crc32", "murmur3"):
        ci = impl.make_shard_function(strat("hash_mod", hash=h), 2**31 - 1)  # ci is the default
        binary = impl.make_shard_function(strat("hash_mod", hash=h, key_collation="binary"), 2**31 - 1)
        for group in CI_EQUAL:
            assert len({ci.index(v) for v in group}) == 1, group
            assert len({impl.key_bytes(v) for v in group}) == 1, group
        assert len({ci.index(v) for v in CI_DIFFERENT}) == len(CI_DIFFERENT)
        assert len({binary.index(v) for v in CI_EQUAL[0][:5]}) == 5  # exact bytes: every spelling its own
        assert binary.index("héllo") == binary.index("héllo".encode()) != binary.index("hello")
        # integers and other non-strings are not folded: 42 and "42 " meet only because "42 " is a string
        assert ci.index(42) == ci.index("42") == ci.index(b"42  ") == ci.index(Decimal("42.0"))
        assert binary.index(42) == binary.index("42") != binary.index("42 ")
    assert impl.make_shard_function(strat("hash_mod"), 4).key_collation == "ci"
    for bad in ("cs", "", None, "CI"):
        with pytest.raises(ValueError):
            impl.make_shard_function(strat("hash_mod", key_collation=bad), 4)
        with pytest.raises(ValueError):
            impl.key_bytes("a", bad)
    with pytest.raises(impl.ShardKeyError):
        impl.key_bytes(None)
    with pytest.raises(impl.ShardKeyError):
        impl.key_bytes("\ud800")


@settings(max_examples=300)
@given(st.text(st.sampled_from("abcxyzABCXYZéÉèÈüÜñÑçÇ_-. 019"), max_size=30), st.integers(0, 3))
def test_ci_spellings_place_alike(text, spaces):
    """Case (ASCII and Latin-1 letters, where str.upper agrees with general_ci), accents and trailing spaces."""
    for impl in (cshard, pyshard):
        f = impl.make_shard_function(strat("hash_mod", hash="murmur3"), 97)
        want = f.index(text)
        for v in (text.upper(), text.lower(), text + " " * spaces, text.swapcase().encode()):
            assert f.index(v) == want, v


@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)), st.sampled_from(["ci", "binary"]))
def test_key_bytes_equivalent(value, collation):
    assert outcome(cshard.key_bytes, value, collation) == outcome(pyshard.key_bytes, value, collation)


@pytest.mark.parametrize("impl", IMPLS)
def test_range_strict(impl):
    f = impl.make_shard_function(strat("range", boundaries=[100, 200, 300]), 4)
    assert [f.index(k) for k in (-(10**30), 0, 99, 100, 199, 200, 299, 300, 10**30)] == [
        0,
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]
    assert f.index("150") == 1 and f.index(Decimal("99.9")) == 0 and f.index(99.99) == 0
    with pytest.raises(impl.ShardKeyError):
        f.index(None)
    with pytest.raises(ValueError):
        impl.make_shard_function(strat("range", boundaries=[100, 200, 300]), 3)  # n must be len + 1
    with pytest.raises(ValueError):
        impl.make_shard_function(strat("range", boundaries=[200, 100]), 3)
    with pytest.raises(ValueError):
        impl.make_shard_function(strat("range", boundaries=["a"]), 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_interval(impl):
    f = impl.make_shard_function(strat("interval", unit="month", start="2024-01-01"), 12)
    assert f.index("2024-01-01") == 0
    assert f.index("2024-01-31 23:59:59.999999") == 0
    assert f.index(b"2024-02-01 00:00:00") == 1
    assert f.index(date(2024, 12, 31)) == 11
    assert f.index(datetime(2024, 6, 15, 8)) == 5
    assert f.index(20240315) == 2 and f.index(20240315120000) == 2
    for bad in ("2023-12-31 23:59:59", "2025-01-01", None, "2024-02-30", "yesterday", 5, Decimal("20240101")):
        with pytest.raises(impl.ShardKeyError):
            f.index(bad)
    d = impl.make_shard_function(strat("interval", unit="day", start=date(2024, 1, 1), step=7), 10)
    assert d.index("2024-01-07 23:00") == 0 and d.index("2024-01-08") == 1
    y = impl.make_shard_function(strat("interval", unit="year", start="2020-01-01"), 5)
    assert y.index("2024-12-31") == 4
    with pytest.raises(ValueError):
        impl.make_shard_function(strat("interval", unit="week", start="2024-01-01"), 4)
    with pytest.raises(ValueError):
        impl.make_shard_function(strat("interval", unit="day"), 4)


# -- pruning against brute force ----------------------------------------------------------------------------------


def brute(f, keys, lo, lo_inc, hi, hi_inc):
    out = set()
    for k in keys:
        if lo is not None and (k < lo or (k == lo and not lo_inc)):
            continue
        if hi is not None and (k > hi or (k == hi and not hi_inc)):
            continue
        try:
            out.add(f.index(k))
        except Exception:  # noqa: BLE001 - keys outside the table's intervals cannot exist
            pass
    return out


bounds = st.none() | st.integers(-60, 60)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=300)
@given(
    bs=st.lists(st.integers(-50, 50), min_size=0, max_size=6, unique=True).map(sorted),
    lo=bounds,
    hi=bounds,
    lo_inc=st.booleans(),
    hi_inc=st.booleans(),
)
def test_range_pruning_exact(impl, bs, lo, hi, lo_inc, hi_inc):
    f = impl.make_shard_function(strat("range", boundaries=bs), len(bs) + 1)
    got = f.indexes_for_range(lo, lo_inc, hi, hi_inc)
    # half-integer keys stand in for any real key between integer boundaries: the pruning is exact for reals
    keys = [Decimal(k) / 2 for k in range(-130, 131)]
    assert set(got) == brute(f, keys, lo, lo_inc, hi, hi_inc)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=300)
@given(
    n=st.integers(1, 12),
    d=st.integers(1, 5),
    lo=bounds,
    hi=bounds,
    lo_inc=st.booleans(),
    hi_inc=st.booleans(),
    frac=st.sampled_from([Decimal(0), Decimal("0.5")]),
)
def test_mod_pruning(impl, n, d, lo, hi, lo_inc, hi_inc, frac):
    lo = None if lo is None else lo + frac
    hi = None if hi is None else hi - frac
    keys = range(-100, 101)
    for f in (
        impl.make_shard_function(strat("mod"), n),
        impl.make_shard_function(strat("two_level", databases=d), n),
    ):
        got = f.indexes_for_range(lo, lo_inc, hi, hi_inc)
        expect = brute(f, keys, lo, lo_inc, hi, hi_inc)
        if got is None:
            assert lo is None or hi is None or len(expect) >= 1  # only gives up when the range is wide
        else:
            assert set(got) == expect


_INTERVAL_BASE = datetime(2024, 1, 1)
_INTERVAL_SPAN_DAYS = {"day": 12, "month": 366, "year": 12 * 366}  # 12 shards of one unit
_interval_keys: dict = {}


def interval_keys(impl, unit, step):
    """(key, index) over the table's span +-10% on a 12-hour grid, computed once per function."""
    k = (impl.__name__, unit, step)
    if k not in _interval_keys:
        f = impl.make_shard_function(strat("interval", unit=unit, start=_INTERVAL_BASE.date(), step=step), 12)
        span = _INTERVAL_SPAN_DAYS[unit] * step
        pairs = []
        for h in range(-span // 10 * 2, (span + span // 10) * 2):
            key = _INTERVAL_BASE + timedelta(hours=12 * h)
            try:
                pairs.append((key, f.index(key)))
            except impl.ShardKeyError:
                pass
        _interval_keys[k] = (f, pairs)
    return _interval_keys[k]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("unit,step", [("day", 1), ("day", 3), ("month", 1), ("month", 2), ("year", 1)])
@settings(max_examples=100, deadline=None)
@given(
    lo=st.none() | st.integers(-30, 330),
    hi=st.none() | st.integers(-30, 330),
    lo_inc=st.booleans(),
    hi_inc=st.booleans(),
)
def test_interval_pruning_exact(impl, unit, step, lo, hi, lo_inc, hi_inc):
    f, pairs = interval_keys(impl, unit, step)
    # bounds on a whole-day grid (300 positions over the span; passed as date and string), keys every 12 hours
    scale = max(1, _INTERVAL_SPAN_DAYS[unit] * step // 300)
    dlo = None if lo is None else _INTERVAL_BASE + timedelta(days=lo * scale)
    dhi = None if hi is None else _INTERVAL_BASE + timedelta(days=hi * scale)
    got = f.indexes_for_range(
        None if dlo is None else dlo.date(), lo_inc, None if dhi is None else str(dhi), hi_inc
    )
    expect = {
        i
        for key, i in pairs
        if (dlo is None or key > dlo or (lo_inc and key == dlo))
        and (dhi is None or key < dhi or (hi_inc and key == dhi))
    }
    assert set(got) == expect


# -- class --------------------------------------------------------------------------------------------------------


class EvenOdd:
    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def index(self, value, n):
        return (int(value) + self.offset) % 2 if n == 2 else int(value) % n

    def indexes_for_range(self, lo, lo_inclusive, hi, hi_inclusive, n):
        return None if lo is None or hi is None else [0, 1]


@pytest.fixture
def shard_class_module():
    mod = types.ModuleType("ddm_test_shard_classes")
    mod.EvenOdd = EvenOdd
    sys.modules[mod.__name__] = mod
    yield mod.__name__
    del sys.modules[mod.__name__]


@pytest.mark.parametrize("impl", IMPLS)
def test_class_strategy(impl, shard_class_module):
    f = impl.make_shard_function(strat("class", **{"class": f"{shard_class_module}:EvenOdd", "offset": 1}), 2)
    assert f.index(4) == 1 and f.index("5") == 0
    assert f.indexes_for_range(1, True, 9, True) == (0, 1)
    assert f.indexes_for_range(None, True, 9, True) is None
    with pytest.raises(impl.ShardKeyError):
        f.index(None)
    with pytest.raises(impl.ShardKeyError):
        f.index("abc")  # the class's ValueError becomes ShardKeyError
    g = impl.make_shard_function(strat("class", **{"class": f"{shard_class_module}:EvenOdd"}), 4)
    assert g.index(7) == 3
    with pytest.raises(ValueError):
        impl.make_shard_function(strat("class", **{"class": "no_such_module_xyz:Cls"}), 2)
    with pytest.raises(ValueError):
        impl.make_shard_function(strat("class", **{"class": "nocolon"}), 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_configs(impl):
    for s, n in [
        (strat("nope"), 2),
        (strat("mod"), 0),
        (strat("two_level"), 4),
        (strat("hash_mod", hash="md5"), 4),
        (strat("hash_mod", seed=-1), 4),
        (strat("interval", unit="day", start="2024-01-01", step=0), 4),
        (strat("interval", unit="day", start="garbage"), 4),
    ]:
        with pytest.raises(ValueError):
            impl.make_shard_function(s, n)


def test_null_everywhere():
    for s, n in STRATEGIES:
        for impl in (cshard, pyshard):
            with pytest.raises(impl.ShardKeyError):
                impl.make_shard_function(s, n).index(None)


@given(st.integers(-(2**63), 2**63 - 1))
def test_hash_int_fast_path_matches_text(k):
    # the Cython int fast path formats digits in C; it must hash exactly str(k)
    for h in ("crc32", "murmur3"):
        f = cshard.make_shard_function(strat("hash_mod", hash=h), 997)
        assert f.index(k) == f.index(str(k)) == f.index(str(k).encode())
