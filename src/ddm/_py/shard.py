"""Pure-Python twin of ddm_core.shard: shard functions that map a shard-key value to a shard index.

Same public API and the same results as the Cython module (tests check the two against each other with
hypothesis); the server never imports this module.

Value canonicalisation (shared by every algorithm; a value that cannot be canonicalised raises ShardKeyError):

* NULL (None) never has a shard: a NULL shard key cannot be placed.
* Integer algorithms (mod, two_level): int, integral Decimal/float, and str/bytes holding a decimal number with an
  integral value ("42", " -7 ", "5.0", "1e3") are accepted, because MySQL compares an integer column with a string
  numerically. Non-integral numbers ("1.5") cannot equal an integer key: ShardKeyError.
* Negative keys use floor modulo (Python's %, result always in [0, n)) rather than MySQL's sign-keeping %, and
  two_level uses floor division: ddm computes routing itself, so it only has to be consistent and in range.
* hash_mod hashes the key's canonical bytes (`key_bytes`): ints (and integral Decimal/float) as their decimal ASCII
  text, str as UTF-8, bytes as is, non-integral Decimal/float as their shortest plain decimal text ("1.5"),
  date/datetime as ISO text ("2024-01-31", "2024-01-31 12:00:00"). So 42, "42" and b"42" land on the same shard.
  Strings (str and bytes) are then folded by the rule's key collation, so that values the column's collation calls
  equal hash alike: `ci` (the default; utf8mb4_general_ci, the utf8mb4 default of MariaDB 10.x and MySQL 5.7) strips
  trailing spaces (PAD SPACE: 'abc' = 'abc  ') and folds case and accents through ddm.wire.rowcodec.fold_ci
  (CI_UPPER): 'ABC', 'abc ' and 'Abc' place alike, so do 'élan' and 'ELAN', 'straße' and 'STRASE'; ASCII keys
  are only upper-cased and stripped. `binary` hashes the exact bytes (VARBINARY/BLOB keys, NO PAD *_bin
  collations; PAD SPACE utf8mb4_bin ignores trailing spaces, so ci is right there too).
  Bytes are taken as UTF-8 (the utf8mb4 connection charset); invalid sequences are kept as they are.
* range compares numerically (int, Decimal, float, numeric strings); its boundaries are numbers (the loader refuses
  strings), so a string key is read as a number or refused: there is no string order to get wrong.
* class gets the value as it came (str/bytes spelled as the client wrote them): a class that places strings must
  give values its column's collation calls equal the same index, e.g. by hashing key_bytes(value, "ci").
* interval accepts date/datetime objects, 'YYYY-MM-DD[ HH:MM[:SS[.ffffff]]]' str/bytes (also with a 'T'), and
  ints YYYYMMDD / YYYYMMDDHHMMSS. Timezone-aware datetimes are taken at their wall time.
"""

from __future__ import annotations

import importlib
import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Context, Decimal
from typing import Any

from ddm.wire.rowcodec import CI_UPPER, fold_ci

__all__ = [
    "ShardKeyError",
    "ShardFunction",
    "make_shard_function",
    "crc32",
    "murmur3_32",
    "ALGORITHMS",
    "COLLATIONS",
    "PointRoute",
    "key_bytes",
]

ALGORITHMS = ("mod", "hash_mod", "range", "interval", "two_level", "class")
COLLATIONS = ("ci", "binary")  # hash_mod key_collation values; "ci" is the default

# A decimal number as MySQL would read it from a string (surrounding whitespace allowed).
_NUMBER_RE = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*\Z")
_DATETIME_RE = re.compile(
    r"\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,6}))?)?)?\s*\Z"
)
# Keys whose magnitude exceeds 10**64 are rejected before int() conversion ("1e999999999" would eat memory);
# no MySQL integer column holds more than 20 digits anyway.
_MAX_ADJUSTED = 64
_ONE_US = timedelta(microseconds=1)
# A fixed context for canonical Decimal text: the thread's current context must not change hashes.
_DEC_CTX = Context(prec=100)


class ShardKeyError(ValueError):
    """A shard-key value that cannot be placed on a shard (NULL, wrong type, out of the configured range)."""


# ---------------------------------------------------------------------------------------------------------------
# hashes


def _make_crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_crc_table()


def crc32(data: bytes, value: int = 0) -> int:
    """zlib-compatible CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320)."""
    c = value ^ 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit (Austin Appleby's MurmurHash3_x86_32), unsigned result."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & 0xFFFFFFFF
    n = len(data)
    nblocks = n // 4
    for i in range(nblocks):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * c1) & 0xFFFFFFFF
        k = _rotl32(k, 15)
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
        h = _rotl32(h, 13)
        h = (h * 5 + 0xE6546B64) & 0xFFFFFFFF
    tail = data[4 * nblocks :]
    k = 0
    if len(tail) >= 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if len(tail) >= 1:
        k ^= tail[0]
        k = (k * c1) & 0xFFFFFFFF
        k = _rotl32(k, 15)
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
    h ^= n & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


# ---------------------------------------------------------------------------------------------------------------
# value canonicalisation


def _null(value: object) -> ShardKeyError:
    return ShardKeyError("a NULL shard key cannot be placed")


def _bad(value: object, what: str) -> ShardKeyError:
    return ShardKeyError(f"shard key {value!r} is not {what}")


def _parse_number(value: object) -> int | Decimal:
    """str/bytes holding a decimal number -> int (plain integer text) or Decimal."""
    if isinstance(value, (bytes, bytearray)):
        try:
            text = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise _bad(value, "a number") from None
    else:
        text = value  # type: ignore[assignment]
    m = _NUMBER_RE.match(text)  # type: ignore[arg-type]
    if m is None:
        raise _bad(value, "a number")
    s = m.group(1)
    if "." not in s and "e" not in s and "E" not in s:
        if len(s) > _MAX_ADJUSTED + 2:
            raise _bad(value, "a number in range")
        return int(s)
    d = Decimal(s)
    if d and d.adjusted() > _MAX_ADJUSTED:
        raise _bad(value, "a number in range")
    return d


def _to_number(value: object) -> int | Decimal | float:
    """A key for numeric comparison (range): int, Decimal or float; ShardKeyError otherwise."""
    if value is None:
        raise _null(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _bad(value, "a finite number")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(value, "a finite number")
        return value
    if isinstance(value, (str, bytes, bytearray)):
        return _parse_number(value)
    raise _bad(value, "a number")


def _to_int(value: object) -> int:
    """A key for integer algorithms; non-integral numbers raise ShardKeyError."""
    if type(value) is int:
        return value  # type: ignore[return-value]
    num = _to_number(value)
    if isinstance(num, int):
        return num
    if isinstance(num, Decimal):
        if num and num.adjusted() > _MAX_ADJUSTED:
            raise _bad(value, "an integer in range")
        if num != num.to_integral_value():
            raise _bad(value, "an integer")
        return int(num)
    if not num.is_integer():
        raise _bad(value, "an integer")
    return int(num)


def _decimal_text(d: Decimal) -> str:
    # Shortest plain (no exponent) text of a non-integral number: 1.50 -> "1.5".
    return format(d.normalize(_DEC_CTX), "f")


def _hash_bytes(value: object) -> bytes:
    """The canonical bytes hash_mod hashes (see the module docstring)."""
    if type(value) is bytes:
        return value  # type: ignore[return-value]
    if type(value) is str:
        try:
            return value.encode("utf-8")  # type: ignore[union-attr]
        except UnicodeEncodeError:
            raise _bad(value, "valid UTF-8 text") from None
    if value is None:
        raise _null(value)
    if isinstance(value, int):
        return str(int(value)).encode("ascii")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return _hash_bytes(str(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _bad(value, "a finite number")
        if value and value.adjusted() > _MAX_ADJUSTED:
            raise _bad(value, "a number in range")
        if value == value.to_integral_value():
            return str(int(value)).encode("ascii")
        return _decimal_text(value).encode("ascii")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(value, "a finite number")
        if value.is_integer():
            return str(int(value)).encode("ascii")
        return _decimal_text(Decimal(repr(value))).encode("ascii")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ").encode("ascii")
    if isinstance(value, (date, time)):
        return value.isoformat().encode("ascii")
    raise _bad(value, "hashable as a shard key")


_TEXT = (str, bytes, bytearray, memoryview)


def _fold_ci(data: bytes) -> bytes:
    """key_collation ci: utf8mb4_general_ci equality (trailing spaces dropped, case and accents folded)."""
    if data.isascii():
        return data.rstrip(b" ").upper()
    return fold_ci(data, CI_UPPER)


def key_bytes(value: object, collation: str = "ci") -> bytes:
    """The bytes hash_mod hashes for a key value under a key collation ("ci" or "binary"; see the module
    docstring): two values the column's collation calls equal give the same bytes. For user shard classes that
    hash string keys themselves. ShardKeyError for values that cannot be placed."""
    if collation not in COLLATIONS:
        raise ValueError(f"key_collation must be one of {', '.join(COLLATIONS)}, not {collation!r}")
    data = _hash_bytes(value)
    if collation == "ci" and isinstance(value, _TEXT):
        return _fold_ci(data)
    return data


def _to_datetime(value: object) -> datetime:
    """A key for interval: datetime (naive, wall time)."""
    if value is None:
        raise _null(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is not None else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    try:
        if isinstance(value, (str, bytes, bytearray)):
            text = bytes(value).decode("ascii") if not isinstance(value, str) else value
            m = _DATETIME_RE.match(text)
            if m is None:
                raise _bad(value, "a date or datetime")
            y, mo, d, hh, mi, ss, frac = m.groups()
            us = int(frac.ljust(6, "0")) if frac else 0
            return datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0), us)
        if isinstance(value, int) and not isinstance(value, bool):
            v = int(value)
            if 10_000_101 <= v <= 99_991_231:  # YYYYMMDD
                return datetime(v // 10000, v // 100 % 100, v % 100)
            if 10_000_101_000_000 <= v <= 99_991_231_235_959:  # YYYYMMDDHHMMSS
                d8, t6 = divmod(v, 1_000_000)
                return datetime(
                    d8 // 10000, d8 // 100 % 100, d8 % 100, t6 // 10000, t6 // 100 % 100, t6 % 100
                )
    except (ValueError, UnicodeDecodeError):
        raise _bad(value, "a valid date or datetime") from None
    raise _bad(value, "a date or datetime")


def _floor_int(num: int | Decimal | float) -> int:
    return num if isinstance(num, int) else math.floor(num)


def _ceil_int(num: int | Decimal | float) -> int:
    return num if isinstance(num, int) else math.ceil(num)


def _int_bounds(lo: object, lo_inclusive: bool, hi: object, hi_inclusive: bool) -> tuple[int, int] | None:
    """The smallest and largest integers inside the range, or None when a bound is missing or not numeric."""
    if lo is None or hi is None:
        return None
    try:
        nlo = _to_number(lo)
        nhi = _to_number(hi)
    except ShardKeyError:
        return None
    a = _ceil_int(nlo) if lo_inclusive else _floor_int(nlo) + 1
    b = _floor_int(nhi) if hi_inclusive else _ceil_int(nhi) - 1
    return a, b


def _prop(props: Mapping[str, Any], key: str, default: Any = None) -> Any:
    return props.get(key, default) if props is not None else default


# ---------------------------------------------------------------------------------------------------------------
# shard functions


class ShardFunction:
    """Maps a shard-key value to an index in [0, n)."""

    algorithm = ""

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"shard count must be a positive integer, not {n!r}")
        self.n = n

    def index(self, value: object) -> int:
        raise NotImplementedError

    def indexes_for_range(
        self, lo: object, lo_inclusive: bool, hi: object, hi_inclusive: bool
    ) -> tuple[int, ...] | None:
        """The indexes that can hold keys in the range (None bound = unbounded); None = cannot prune (all n)."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.algorithm} n={self.n}>"


class ModShard(ShardFunction):
    algorithm = "mod"

    def index(self, value: object) -> int:
        return _to_int(value) % self.n

    def indexes_for_range(
        self, lo: object, lo_inclusive: bool, hi: object, hi_inclusive: bool
    ) -> tuple[int, ...] | None:
        b = _int_bounds(lo, lo_inclusive, hi, hi_inclusive)
        if b is None:
            return None
        a, z = b
        if z < a:
            return ()
        if z - a + 1 >= self.n:
            return None
        return tuple(sorted({k % self.n for k in range(a, z + 1)}))


class TwoLevelShard(ShardFunction):
    """Table index in the two-level scheme: key // D % n (D = data source count, floor division)."""

    algorithm = "two_level"

    def __init__(self, n: int, databases: int) -> None:
        super().__init__(n)
        if not isinstance(databases, int) or isinstance(databases, bool) or databases < 1:
            raise ValueError(f"two_level: databases must be a positive integer, not {databases!r}")
        self.databases = databases

    def index(self, value: object) -> int:
        return _to_int(value) // self.databases % self.n

    def indexes_for_range(
        self, lo: object, lo_inclusive: bool, hi: object, hi_inclusive: bool
    ) -> tuple[int, ...] | None:
        b = _int_bounds(lo, lo_inclusive, hi, hi_inclusive)
        if b is None:
            return None
        a, z = b
        if z < a:
            return ()
        qa, qz = a // self.databases, z // self.databases
        if qz - qa + 1 >= self.n:
            return None
        return tuple(sorted({q % self.n for q in range(qa, qz + 1)}))


class HashModShard(ShardFunction):
    algorithm = "hash_mod"

    def __init__(self, n: int, hash_name: str = "crc32", seed: int = 0, key_collation: str = "ci") -> None:
        super().__init__(n)
        if hash_name not in ("crc32", "murmur3"):
            raise ValueError(f"hash_mod: hash must be crc32 or murmur3, not {hash_name!r}")
        if not isinstance(seed, int) or not 0 <= seed <= 0xFFFFFFFF:
            raise ValueError(f"hash_mod: seed must be an integer in [0, 2**32), not {seed!r}")
        if key_collation not in COLLATIONS:
            raise ValueError(f"hash_mod: key_collation must be one of {', '.join(COLLATIONS)}, not {key_collation!r}")
        self.hash_name = hash_name
        self.seed = seed
        self.key_collation = key_collation
        self._ci = key_collation == "ci"

    def index(self, value: object) -> int:
        data = _hash_bytes(value)
        if self._ci and isinstance(value, _TEXT):
            data = _fold_ci(data)
        h = crc32(data) if self.hash_name == "crc32" else murmur3_32(data, self.seed)
        return h % self.n


class RangeShard(ShardFunction):
    """Index i holds boundaries[i-1] <= key < boundaries[i]; the first and last indexes are open-ended."""

    algorithm = "range"

    def __init__(self, n: int, boundaries: Any) -> None:
        super().__init__(n)
        if isinstance(boundaries, (str, bytes)) or not hasattr(boundaries, "__iter__"):
            raise ValueError("range: boundaries must be a list of numbers")
        try:
            bs = [_to_number(b) for b in boundaries]
        except ShardKeyError as e:
            raise ValueError(f"range: boundaries: {e}") from None
        if any(bs[i] >= bs[i + 1] for i in range(len(bs) - 1)):
            raise ValueError("range: boundaries must be strictly increasing")
        if len(bs) + 1 != n:
            raise ValueError(f"range: {len(bs)} boundaries make {len(bs) + 1} shards, but there are {n}")
        self.boundaries = tuple(bs)

    def index(self, value: object) -> int:
        return bisect_right(self.boundaries, _to_number(value))

    def indexes_for_range(
        self, lo: object, lo_inclusive: bool, hi: object, hi_inclusive: bool
    ) -> tuple[int, ...] | None:
        try:
            nlo = None if lo is None else _to_number(lo)
            nhi = None if hi is None else _to_number(hi)
        except ShardKeyError:
            return None
        if (
            nlo is not None
            and nhi is not None
            and (nlo > nhi or (nlo == nhi and not (lo_inclusive and hi_inclusive)))
        ):
            return ()
        b = self.boundaries
        # A key > lo or >= lo can only be in the index holding lo or later ones.
        first = 0 if nlo is None else bisect_right(b, nlo)
        # Index i can hold a key below hi iff its lower boundary b[i-1] < hi (<= hi when inclusive).
        last = self.n - 1 if nhi is None else (bisect_right(b, nhi) if hi_inclusive else bisect_left(b, nhi))
        return tuple(range(first, last + 1))


class IntervalShard(ShardFunction):
    """index = (whole units between start and key) // step; a key outside [0, n) is an error."""

    algorithm = "interval"

    def __init__(self, n: int, unit: str, start: object, step: int = 1) -> None:
        super().__init__(n)
        if unit not in ("day", "month", "year"):
            raise ValueError(f"interval: unit must be day, month or year, not {unit!r}")
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise ValueError(f"interval: step must be a positive integer, not {step!r}")
        if start is None:
            raise ValueError("interval: start is required")
        try:
            self.start = _to_datetime(start)
        except ShardKeyError as e:
            raise ValueError(f"interval: start: {e}") from None
        self.unit = unit
        self.step = step

    def _units(self, dt: datetime) -> int:
        s = self.start
        if self.unit == "day":
            return (dt - s) // timedelta(days=1)
        if self.unit == "month":
            units = (dt.year - s.year) * 12 + dt.month - s.month
            if (dt.day, dt.time()) < (s.day, s.time()):
                units -= 1
            return units
        units = dt.year - s.year
        if (dt.month, dt.day, dt.time()) < (s.month, s.day, s.time()):
            units -= 1
        return units

    def index(self, value: object) -> int:
        i = self._units(_to_datetime(value)) // self.step
        if i < 0 or i >= self.n:
            raise ShardKeyError(f"shard key {value!r} is outside the configured intervals")
        return i

    def indexes_for_range(
        self, lo: object, lo_inclusive: bool, hi: object, hi_inclusive: bool
    ) -> tuple[int, ...] | None:
        try:
            dlo = None if lo is None else _to_datetime(lo)
            dhi = None if hi is None else _to_datetime(hi)
        except ShardKeyError:
            return None
        # datetime has microsecond resolution: key > lo is key >= lo + 1us, key < hi is key <= hi - 1us.
        try:
            if dlo is not None and not lo_inclusive:
                dlo = dlo + _ONE_US
        except OverflowError:
            return ()
        try:
            if dhi is not None and not hi_inclusive:
                dhi = dhi - _ONE_US
        except OverflowError:
            return ()
        if dlo is not None and dhi is not None and dlo > dhi:
            return ()
        first = 0 if dlo is None else max(0, self._units(dlo) // self.step)
        last = self.n - 1 if dhi is None else min(self.n - 1, self._units(dhi) // self.step)
        return tuple(range(first, last + 1))


class ClassShard(ShardFunction):
    """A user class "pkg.module:Name", constructed with the remaining props as keyword arguments.

    It implements index(value, n) -> int and optionally indexes_for_range(lo, lo_inclusive, hi, hi_inclusive, n)
    -> iterable of int or None. NULL keys are rejected before the class is called."""

    algorithm = "class"

    def __init__(self, n: int, spec: str, props: Mapping[str, Any]) -> None:
        super().__init__(n)
        self.impl = _load_class(spec)(**props)
        self._ranges = getattr(self.impl, "indexes_for_range", None)

    def index(self, value: object) -> int:
        if value is None:
            raise _null(value)
        try:
            i = self.impl.index(value, self.n)
        except ShardKeyError:
            raise
        except (ValueError, TypeError, KeyError, ArithmeticError) as e:
            raise ShardKeyError(f"shard key {value!r}: {e}") from e
        if not isinstance(i, int) or not 0 <= i < self.n:
            raise ShardKeyError(f"shard class returned {i!r} for {value!r}, not an index in [0, {self.n})")
        return int(i)

    def indexes_for_range(
        self, lo: object, lo_inclusive: bool, hi: object, hi_inclusive: bool
    ) -> tuple[int, ...] | None:
        if self._ranges is None:
            return None
        r = self._ranges(lo, lo_inclusive, hi, hi_inclusive, self.n)
        if r is None:
            return None
        out = sorted({int(i) for i in r})
        if out and (out[0] < 0 or out[-1] >= self.n):
            raise ValueError(f"shard class returned indexes outside [0, {self.n}): {out}")
        return tuple(out)


def _load_class(spec: object) -> Any:
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f'class: expected "package.module:ClassName", not {spec!r}')
    mod_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"class: cannot load {spec!r}: {e}") from None
    if not callable(obj):
        raise ValueError(f"class: {spec!r} is not a class")
    return obj


def make_shard_function(strategy: Any, n: int, *, datasources: int | None = None) -> ShardFunction:
    """Build the shard function of a ShardStrategy over n shards.

    two_level reads props["databases"], falling back to `datasources` (the router passes the rule's data source
    count). Raises ValueError for a bad algorithm or bad props."""
    algo = strategy.algorithm
    props = strategy.props or {}
    if algo == "mod":
        return ModShard(n)
    if algo == "two_level":
        d = _prop(props, "databases", datasources)
        if d is None:
            raise ValueError("two_level: props.databases (the data source count) is required")
        return TwoLevelShard(n, d)
    if algo == "hash_mod":
        return HashModShard(n, _prop(props, "hash", "crc32"), _prop(props, "seed", 0),
                            _prop(props, "key_collation", "ci"))
    if algo == "range":
        return RangeShard(n, _prop(props, "boundaries", ()))
    if algo == "interval":
        return IntervalShard(n, _prop(props, "unit", "day"), _prop(props, "start"), _prop(props, "step", 1))
    if algo == "class":
        rest = {k: v for k, v in props.items() if k != "class"}
        return ClassShard(n, _prop(props, "class"), rest)
    raise ValueError(f"unknown shard algorithm {algo!r} (expected one of {', '.join(ALGORITHMS)})")


# ---------------------------------------------------------------------------------------------------------------
# point routes: `key = literal` on one sharded table, bound straight from the lexer's tokens

_NO = object()  # "the point route does not apply": the caller binds the plan the generic way
_T_NUMBER, _T_PARAM = 4, 7  # ddm_core.lexer / ddm._py.lexer token kinds
_MAX_REFS = 8
_INT_SIZES = {1: 1, 2: 2, 13: 2, 3: 4, 9: 4, 8: 8}  # TINY SHORT YEAR LONG INT24 LONGLONG
_REFUSED = frozenset({0, 246, 7, 10, 11, 12})  # DECIMAL and temporal values: decoded (and refused) generically


class PointRoute:
    """The plan-cache-hit path of the commonest statement shape: one sharded table, a WHERE that is one equality on
    its shard key (`id = 5`, `id = ?`), so the statement reaches exactly one physical table.

    Built once per plan (ddm.sharding.rewrite.point_route) from immutable data: `slot` is the literal slot of the key value
    (`neg`: written `-?`), `refs` the token ranges (first, last) of the table names in text order, and
    `names[d][t]` the replacement bytes of each ref for physical table t of data source `datasources[d]`. The key
    places as `d = db_function.index(v)` (0 without one), `t = table_functions[d].index(v)` (0 without one).

    Every method returns None whenever it is not certain to produce exactly what `QueryPlan.bind` would (a value
    the shard functions refuse, NULL, `-'x'`, unusual parameter types, malformed packets): the caller then takes
    the generic path, which also reports the errors."""

    __slots__ = ("slot", "neg", "refs", "db_function", "table_functions", "datasources", "names")

    def __init__(self, slot: int, neg: bool, refs: Any, db_function: ShardFunction | None, table_functions: Any,
                 datasources: Any, names: Any) -> None:
        refs = tuple(tuple(r) for r in refs)
        if slot < 0 or len(refs) > _MAX_REFS:
            raise ValueError("point route: bad slot or too many table references")
        if db_function is not None and not isinstance(db_function, ShardFunction):
            raise TypeError("point route: the database function must be a ShardFunction or None")
        table_functions = tuple(table_functions)
        datasources = tuple(datasources)
        names = tuple(tuple(tuple(x) for x in row) for row in names)
        if len(table_functions) != len(datasources) or len(names) != len(datasources) or not datasources:
            raise ValueError("point route: one table function and one name row per data source")
        for f in table_functions:
            if f is not None and not isinstance(f, ShardFunction):
                raise TypeError("point route: table functions must be ShardFunctions or None")
        for row in names:
            for x in row:
                if len(x) != len(refs) or not all(type(b) is bytes for b in x):
                    raise ValueError("point route: one replacement per table reference")
        for i, (first, last) in enumerate(refs):
            if first < 0 or last < first or (i and first <= refs[i - 1][1]):
                raise ValueError("point route: table references must be ordered and disjoint")
        for name, value in (("slot", int(slot)), ("neg", bool(neg)), ("refs", refs), ("db_function", db_function),
                            ("table_functions", table_functions), ("datasources", datasources), ("names", names)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("PointRoute is immutable")

    def __repr__(self) -> str:
        return f"<PointRoute slot={self.slot} neg={self.neg} refs={self.refs} datasources={len(self.datasources)}>"

    def _negate(self, value: Any) -> Any:
        if not self.neg:
            return value
        if isinstance(value, (int, Decimal, float)) and not isinstance(value, bool):
            return -value
        return _NO  # `-'abc'`: the generic path does not prune either

    def _key_from_text(self, lx: Any) -> Any:
        if self.slot >= len(lx.slots) or lx.kind(lx.slots[self.slot]) == _T_PARAM:
            return _NO
        return self._negate(lx.slot_value(self.slot))

    def _place(self, value: Any, lx: Any, framed: bool) -> tuple[str, bytes] | None:
        if value is None or value is _NO:
            return None
        try:
            d = self.db_function.index(value) if self.db_function is not None else 0
            if not 0 <= d < len(self.names):
                return None
            f = self.table_functions[d]
            t = f.index(value) if f is not None else 0
        except Exception:
            return None
        row = self.names[d]
        if not 0 <= t < len(row):
            return None
        sql = lx.sql
        parts = []
        pos = 0
        for (first, last), repl in zip(self.refs, row[t], strict=True):
            if last >= lx.ntokens or lx.start(first) < pos or lx.end(last) < lx.start(first):
                return None
            parts.append(sql[pos:lx.start(first)])
            parts.append(repl)
            pos = lx.end(last)
        parts.append(sql[pos:])
        out = b"".join(parts)
        if framed:
            n = len(out) + 1
            if n >= 0xFFFFFF:
                return None  # a COM_QUERY that needs continuation packets: frame() splits it
            out = n.to_bytes(3, "little") + b"\x00\x03" + out
        return self.datasources[d], out

    def route_query(self, lexed: Any) -> tuple[str, bytes] | None:
        """(datasource, packet) for a COM_QUERY: the physical statement framed as one COM_QUERY packet, sequence
        id 0 (what `frame(b"\\x03" + unit.sql, 0)` gives for the plan's one unit). None = bind generically."""
        return self._place(self._key_from_text(lexed), lexed, True)

    def route_execute(self, lexed: Any, payload: bytes, nparams: int, types: bytes | None
                      ) -> tuple[str, bytes] | None:
        """(datasource, physical statement with its ? markers) for a COM_STMT_EXECUTE of the prepared statement
        `lexed` (payload: the command, byte 0x17 included; types: the last bound parameter types). The parameter
        block is checked like ddm.wire.params.decode_params does (None when it would not decode cleanly or holds a
        DECIMAL or temporal value). None = bind generically."""
        if payload is None:
            return None
        slots = lexed.slots
        if self.slot >= len(slots):
            return None
        j = -1
        nmark = 0
        for k, tok in enumerate(slots):
            if lexed.kind(tok) == _T_PARAM:
                if k == self.slot:
                    j = nmark
                nmark += 1
        if nparams <= 0:  # no values: markers stay unbound
            if j >= 0:
                return None
            return self._place(self._key_from_text(lexed), lexed, False)
        if nmark > nparams:
            return None  # more markers than the statement has parameters: an error, reported generically
        value = _param_value(payload, nparams, types, j)
        if value is _NO:
            return None
        value = self._key_from_text(lexed) if j < 0 else self._negate(value)
        return self._place(value, lexed, False)


def _param_value(p: bytes, n: int, types: bytes | None, want: int) -> Any:
    """Walk a COM_STMT_EXECUTE parameter block (layout: ddm.wire.params) and return parameter `want` (-1: none, only
    check the block): int for the integer types, bytes for length-encoded ones, None for NULL. _NO when
    decode_params would fail or decodes a DECIMAL/temporal value (those can fail on content, not only length)."""
    size = len(p)
    nb = (n + 7) // 8
    if 10 + nb >= size:
        return _NO
    bitmap = p[10:10 + nb]
    pos = 10 + nb
    if p[pos]:
        pos += 1
        if pos + 2 * n > size:
            return _NO
        tp = p[pos:pos + 2 * n]
        pos += 2 * n
    else:
        pos += 1
        if type(types) is not bytes or len(types) < 2 * n:
            return _NO
        tp = types
    found: Any = None
    for i in range(n):
        if bitmap[i >> 3] & (1 << (i & 7)):
            continue
        t, flag = tp[2 * i], tp[2 * i + 1]
        sz = _INT_SIZES.get(t)
        if sz is not None:
            if pos + sz > size:
                return _NO
            if i == want:
                found = int.from_bytes(p[pos:pos + sz], "little", signed=not flag & 0x80)
            pos += sz
        elif t == 5 or t == 4:  # DOUBLE FLOAT
            sz = 8 if t == 5 else 4
            if pos + sz > size or i == want:
                return _NO
            pos += sz
        elif t == 6:  # NULL type: no bytes
            if i == want:
                return _NO
        elif t in _REFUSED:
            return _NO
        else:  # length-encoded bytes
            if pos >= size:
                return _NO
            c = p[pos]
            if c < 0xFB:
                ln, pos = c, pos + 1
            elif c in (0xFC, 0xFD, 0xFE):
                w = {0xFC: 2, 0xFD: 3, 0xFE: 8}[c]
                if pos + 1 + w > size:
                    return _NO
                ln, pos = int.from_bytes(p[pos + 1:pos + 1 + w], "little"), pos + 1 + w
            else:
                return _NO
            if ln > size - pos:
                return _NO
            if i == want:
                found = p[pos:pos + ln]
            pos += ln
    return found
