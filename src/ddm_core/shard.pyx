# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Shard functions: map a shard-key value to a shard index in [0, n).

`make_shard_function(strategy, n)` builds one per ShardStrategy; `index(value)` places a key (ShardKeyError when it
cannot be placed), `indexes_for_range(lo, lo_inclusive, hi, hi_inclusive)` prunes a range (None = all n).
The pure-Python twin ddm._py.shard documents the value canonicalisation rules and must give identical results;
this module adds C fast paths for int keys (mod, two_level, hash_mod, range), for str/bytes keys of hash_mod (the
`key_collation: ci` fold of ASCII keys is done in C, other keys go through ddm.wire.rowcodec.fold_ci like the merger's
comparisons) and C implementations of CRC-32 and MurmurHash3. Negative keys use floor modulo/division (Python
semantics), not MySQL's sign-keeping %.
"""

import importlib
import math
import re
from bisect import bisect_left, bisect_right
from datetime import date, datetime, time, timedelta
from decimal import Context, Decimal

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from ddm_core.lexer cimport T_NUMBER, T_PARAM, LexToken, Lexed

from ddm.wire.rowcodec import CI_UPPER, fold_ci

__all__ = ["ShardKeyError", "ShardFunction", "make_shard_function", "crc32", "murmur3_32", "ALGORITHMS",
           "COLLATIONS", "PointRoute", "key_bytes"]

ALGORITHMS = ("mod", "hash_mod", "range", "interval", "two_level", "class")
COLLATIONS = ("ci", "binary")  # hash_mod key_collation values; "ci" is the default

_NUMBER_RE = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*\Z")
_DATETIME_RE = re.compile(
    r"\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,6}))?)?)?\s*\Z"
)
# Keys above 10**64 in magnitude are rejected before int() conversion ("1e999999999" would eat memory).
cdef enum:
    MAX_ADJUSTED = 64
_ONE_US = timedelta(microseconds=1)
# A fixed context for canonical Decimal text: the thread's current context must not change hashes.
_DEC_CTX = Context(prec=100)
_ONE_DAY = timedelta(days=1)


class ShardKeyError(ValueError):
    """A shard-key value that cannot be placed on a shard (NULL, wrong type, out of the configured range)."""


# ---------------------------------------------------------------------------------------------------------------
# hashes

cdef uint32_t CRC_TABLE[256]

cdef void _init_crc_table() noexcept:
    cdef uint32_t c
    cdef int i, j
    for i in range(256):
        c = <uint32_t>i
        for j in range(8):
            c = (c >> 1) ^ 0xEDB88320U if c & 1 else c >> 1
        CRC_TABLE[i] = c

_init_crc_table()


cdef uint32_t crc32_c(const unsigned char* p, Py_ssize_t n, uint32_t crc) noexcept nogil:
    cdef uint32_t c = crc ^ 0xFFFFFFFFU
    cdef Py_ssize_t i
    for i in range(n):
        c = CRC_TABLE[(c ^ p[i]) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFFU


cdef inline uint32_t rotl32(uint32_t x, int r) noexcept nogil:
    return (x << r) | (x >> (32 - r))


cdef uint32_t murmur3_c(const unsigned char* p, Py_ssize_t n, uint32_t seed) noexcept nogil:
    # MurmurHash3_x86_32 (public domain, Austin Appleby); blocks read little-endian byte by byte (portable).
    cdef uint32_t c1 = 0xCC9E2D51U, c2 = 0x1B873593U
    cdef uint32_t h = seed, k
    cdef Py_ssize_t nblocks = n // 4, i
    cdef const unsigned char* b
    for i in range(nblocks):
        b = p + 4 * i
        k = b[0] | (<uint32_t>b[1] << 8) | (<uint32_t>b[2] << 16) | (<uint32_t>b[3] << 24)
        k *= c1
        k = rotl32(k, 15)
        k *= c2
        h ^= k
        h = rotl32(h, 13)
        h = h * 5 + 0xE6546B64U
    b = p + 4 * nblocks
    k = 0
    i = n & 3
    if i >= 3:
        k ^= <uint32_t>b[2] << 16
    if i >= 2:
        k ^= <uint32_t>b[1] << 8
    if i >= 1:
        k ^= b[0]
        k *= c1
        k = rotl32(k, 15)
        k *= c2
        h ^= k
    h ^= <uint32_t>n
    h ^= h >> 16
    h *= 0x85EBCA6BU
    h ^= h >> 13
    h *= 0xC2B2AE35U
    h ^= h >> 16
    return h


def crc32(const unsigned char[:] data, unsigned int value=0):
    """zlib-compatible CRC-32 of a bytes-like object."""
    if data.shape[0] == 0:
        return crc32_c(NULL, 0, value)
    return crc32_c(&data[0], data.shape[0], value)


def murmur3_32(const unsigned char[:] data, unsigned int seed=0):
    """MurmurHash3 x86 32-bit of a bytes-like object (unsigned result)."""
    if data.shape[0] == 0:
        return murmur3_c(NULL, 0, seed)
    return murmur3_c(&data[0], data.shape[0], seed)


# ---------------------------------------------------------------------------------------------------------------
# value canonicalisation (same rules as ddm._py.shard)

cdef object _null():
    return ShardKeyError("a NULL shard key cannot be placed")


cdef object _bad(object value, str what):
    return ShardKeyError(f"shard key {value!r} is not {what}")


cdef object _parse_number(object value):
    cdef str text, s
    if isinstance(value, (bytes, bytearray)):
        try:
            text = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise _bad(value, "a number") from None
    else:
        text = str(value)
    m = _NUMBER_RE.match(text)
    if m is None:
        raise _bad(value, "a number")
    s = m.group(1)
    if "." not in s and "e" not in s and "E" not in s:
        if len(s) > MAX_ADJUSTED + 2:
            raise _bad(value, "a number in range")
        return int(s)
    d = Decimal(s)
    if d and d.adjusted() > MAX_ADJUSTED:
        raise _bad(value, "a number in range")
    return d


cdef object _to_number(object value):
    if value is None:
        raise _null()
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


cdef object _to_int(object value):
    if type(value) is int:
        return value
    num = _to_number(value)
    if isinstance(num, int):
        return num
    if isinstance(num, Decimal):
        if num and num.adjusted() > MAX_ADJUSTED:
            raise _bad(value, "an integer in range")
        if num != num.to_integral_value():
            raise _bad(value, "an integer")
        return int(num)
    if not num.is_integer():
        raise _bad(value, "an integer")
    return int(num)


cdef bytes _hash_bytes(object value):
    if type(value) is bytes:
        return value
    if type(value) is str:
        try:
            return (<str>value).encode("utf-8")
        except UnicodeEncodeError:
            raise _bad(value, "valid UTF-8 text") from None
    if value is None:
        raise _null()
    if isinstance(value, int):
        return str(int(value)).encode("ascii")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return _hash_bytes(str(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _bad(value, "a finite number")
        if value and value.adjusted() > MAX_ADJUSTED:
            raise _bad(value, "a number in range")
        if value == value.to_integral_value():
            return str(int(value)).encode("ascii")
        return format(value.normalize(_DEC_CTX), "f").encode("ascii")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(value, "a finite number")
        if value.is_integer():
            return str(int(value)).encode("ascii")
        return format(Decimal(repr(value)).normalize(_DEC_CTX), "f").encode("ascii")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ").encode("ascii")
    if isinstance(value, (date, time)):
        return value.isoformat().encode("ascii")
    raise _bad(value, "hashable as a shard key")


_TEXT = (str, bytes, bytearray, memoryview)


cdef bytes _fold_ci(bytes data):
    # key_collation ci: utf8mb4_general_ci equality (trailing spaces dropped, case and accents folded)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i
    cdef bytes out
    cdef unsigned char* w
    while n > 0 and p[n - 1] == 32:
        n -= 1
    for i in range(n):
        if p[i] >= 0x80:
            return fold_ci(data, CI_UPPER)
    out = PyBytes_FromStringAndSize(NULL, n)
    w = <unsigned char*>PyBytes_AS_STRING(out)
    for i in range(n):
        w[i] = p[i] - 32 if 97 <= p[i] <= 122 else p[i]
    return out


def key_bytes(value, collation="ci"):
    """The bytes hash_mod hashes for a key value under a key collation ("ci" or "binary"; see ddm._py.shard):
    two values the column's collation calls equal give the same bytes. For user shard classes that hash string
    keys themselves. ShardKeyError for values that cannot be placed."""
    if collation not in COLLATIONS:
        raise ValueError(f"key_collation must be one of {', '.join(COLLATIONS)}, not {collation!r}")
    data = _hash_bytes(value)
    if collation == "ci" and isinstance(value, _TEXT):
        return _fold_ci(data)
    return data


cdef object _to_datetime(object value):
    if value is None:
        raise _null()
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is not None else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    try:
        if isinstance(value, (str, bytes, bytearray)):
            text = value if isinstance(value, str) else bytes(value).decode("ascii")
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
                return datetime(d8 // 10000, d8 // 100 % 100, d8 % 100, t6 // 10000, t6 // 100 % 100, t6 % 100)
    except (ValueError, UnicodeDecodeError) as e:
        if isinstance(e, ShardKeyError):
            raise
        raise _bad(value, "a valid date or datetime") from None
    raise _bad(value, "a date or datetime")


cdef object _int_bounds(object lo, bint lo_inclusive, object hi, bint hi_inclusive):
    # (smallest, largest) integer inside the range; None when a bound is missing or not numeric.
    if lo is None or hi is None:
        return None
    try:
        nlo = _to_number(lo)
        nhi = _to_number(hi)
    except ShardKeyError:
        return None
    if lo_inclusive:
        a = nlo if isinstance(nlo, int) else math.ceil(nlo)
    else:
        a = (nlo if isinstance(nlo, int) else math.floor(nlo)) + 1
    if hi_inclusive:
        b = nhi if isinstance(nhi, int) else math.floor(nhi)
    else:
        b = (nhi if isinstance(nhi, int) else math.ceil(nhi)) - 1
    return a, b


cdef inline long long floor_mod(long long k, long long n) noexcept nogil:
    cdef long long r = k % n
    if r < 0:
        r += n
    return r


cdef inline long long floor_div(long long k, long long d) noexcept nogil:
    # d > 0
    cdef long long q = k / d
    if k < 0 and q * d != k:
        q -= 1
    return q


# ---------------------------------------------------------------------------------------------------------------
# shard functions

cdef class ShardFunction:
    """Maps a shard-key value to an index in [0, n)."""

    algorithm = ""

    def __init__(self, n):
        if not isinstance(n, int) or n < 1 or n > 0x7FFFFFFF:
            raise ValueError(f"shard count must be a positive integer, not {n!r}")
        self.n = n

    cpdef int index(self, object value) except -1:
        raise NotImplementedError

    cpdef object indexes_for_range(self, object lo, bint lo_inclusive, object hi, bint hi_inclusive):
        """The indexes that can hold keys in the range (None bound = unbounded); None = cannot prune (all n)."""
        return None

    def __repr__(self):
        return f"<{type(self).__name__} {self.algorithm} n={self.n}>"


cdef class ModShard(ShardFunction):
    algorithm = "mod"

    cpdef int index(self, object value) except -1:
        cdef int overflow = 0
        cdef long long k
        if type(value) is int:
            k = PyLong_AsLongLongAndOverflow(value, &overflow)
            if not overflow:
                return <int>floor_mod(k, self.n)
        return <int>(_to_int(value) % self.n)

    cpdef object indexes_for_range(self, object lo, bint lo_inclusive, object hi, bint hi_inclusive):
        b = _int_bounds(lo, lo_inclusive, hi, hi_inclusive)
        if b is None:
            return None
        a, z = b
        if z < a:
            return ()
        if z - a + 1 >= self.n:
            return None
        return tuple(sorted({k % self.n for k in range(a, z + 1)}))


cdef class TwoLevelShard(ShardFunction):
    """Table index in the two-level scheme: key // D % n (D = data source count, floor division)."""

    algorithm = "two_level"

    def __init__(self, n, databases):
        super().__init__(n)
        if not isinstance(databases, int) or isinstance(databases, bool) or not 1 <= databases <= 0x7FFFFFFF:
            raise ValueError(f"two_level: databases must be a positive integer, not {databases!r}")
        self.databases = databases

    cpdef int index(self, object value) except -1:
        cdef int overflow = 0
        cdef long long k
        if type(value) is int:
            k = PyLong_AsLongLongAndOverflow(value, &overflow)
            if not overflow:
                return <int>floor_mod(floor_div(k, self.databases), self.n)
        return <int>(_to_int(value) // self.databases % self.n)

    cpdef object indexes_for_range(self, object lo, bint lo_inclusive, object hi, bint hi_inclusive):
        b = _int_bounds(lo, lo_inclusive, hi, hi_inclusive)
        if b is None:
            return None
        a, z = b
        if z < a:
            return ()
        qa = a // self.databases
        qz = z // self.databases
        if qz - qa + 1 >= self.n:
            return None
        return tuple(sorted({q % self.n for q in range(qa, qz + 1)}))


cdef class HashModShard(ShardFunction):
    algorithm = "hash_mod"

    def __init__(self, n, hash_name="crc32", seed=0, key_collation="ci"):
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
        self._murmur = hash_name == "murmur3"
        self._ci = key_collation == "ci"

    cdef uint32_t _hash(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        if self._murmur:
            return murmur3_c(p, n, self.seed)
        return crc32_c(p, n, 0)

    cdef int _index_text(self, const unsigned char* p, Py_ssize_t n) except -1:
        # A str/bytes key's UTF-8 bytes: as they are (binary) or folded (ci: ASCII in C, the rest by fold_ci).
        cdef unsigned char buf[CI_STACK]
        cdef unsigned char* w
        cdef Py_ssize_t i
        cdef uint32_t h
        cdef bytes folded
        if not self._ci:
            return <int>(self._hash(p, n) % <unsigned int>self.n)
        while n > 0 and p[n - 1] == 32:
            n -= 1
        for i in range(n):
            if p[i] >= 0x80:
                folded = fold_ci(PyBytes_FromStringAndSize(<const char*>p, n), CI_UPPER)
                return <int>(self._hash(<const unsigned char*>PyBytes_AS_STRING(folded), PyBytes_GET_SIZE(folded))
                             % <unsigned int>self.n)
        if n <= CI_STACK:
            w = &buf[0]
        else:
            w = <unsigned char*>malloc(n)
            if w == NULL:
                raise MemoryError()
        for i in range(n):
            w[i] = p[i] - 32 if 97 <= p[i] <= 122 else p[i]
        h = self._hash(w, n)
        if n > CI_STACK:
            free(w)
        return <int>(h % <unsigned int>self.n)

    cpdef int index(self, object value) except -1:
        cdef int overflow = 0
        cdef long long k
        cdef unsigned long long u
        cdef unsigned char buf[24]
        cdef int pos = 24
        cdef bint neg
        cdef Py_ssize_t size
        cdef const char* s
        cdef bytes data
        if type(value) is int:
            k = PyLong_AsLongLongAndOverflow(value, &overflow)
            if not overflow:
                # decimal ASCII text of k, written right to left without a Python str
                neg = k < 0
                u = (<unsigned long long>(-(k + 1))) + 1 if neg else <unsigned long long>k
                while True:
                    pos -= 1
                    buf[pos] = <unsigned char>(48 + u % 10)
                    u //= 10
                    if u == 0:
                        break
                if neg:
                    pos -= 1
                    buf[pos] = 45  # '-'
                return <int>(self._hash(buf + pos, 24 - pos) % <unsigned int>self.n)
        elif type(value) is str:
            try:
                s = PyUnicode_AsUTF8AndSize(value, &size)
            except UnicodeEncodeError:
                raise _bad(value, "valid UTF-8 text") from None
            return self._index_text(<const unsigned char*>s, size)
        elif type(value) is bytes:
            return self._index_text(<const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
        data = _hash_bytes(value)
        if self._ci and isinstance(value, _TEXT):
            data = _fold_ci(data)
        return <int>(self._hash(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
                     % <unsigned int>self.n)


cdef class RangeShard(ShardFunction):
    """Index i holds boundaries[i-1] <= key < boundaries[i]; the first and last indexes are open-ended."""

    algorithm = "range"

    def __cinit__(self, *args, **kwargs):
        self._cb = NULL
        self._nb = 0

    def __dealloc__(self):
        if self._cb != NULL:
            free(self._cb)

    def __init__(self, n, boundaries):
        super().__init__(n)
        cdef Py_ssize_t i
        cdef int overflow = 0
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
        if all(type(b) is int and -(1 << 63) <= b < (1 << 63) for b in bs):
            self._cb = <long long*>malloc(max(1, len(bs)) * sizeof(long long))
            if self._cb == NULL:
                raise MemoryError()
            for i in range(len(bs)):
                self._cb[i] = PyLong_AsLongLongAndOverflow(bs[i], &overflow)
            self._nb = len(bs)

    cpdef int index(self, object value) except -1:
        cdef int overflow = 0
        cdef long long k
        cdef Py_ssize_t lo = 0, hi = self._nb, mid
        if self._cb != NULL and type(value) is int:
            k = PyLong_AsLongLongAndOverflow(value, &overflow)
            if not overflow:
                # bisect_right over the C boundaries
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if k < self._cb[mid]:
                        hi = mid
                    else:
                        lo = mid + 1
                return <int>lo
        return bisect_right(self.boundaries, _to_number(value))

    cpdef object indexes_for_range(self, object lo, bint lo_inclusive, object hi, bint hi_inclusive):
        try:
            nlo = None if lo is None else _to_number(lo)
            nhi = None if hi is None else _to_number(hi)
        except ShardKeyError:
            return None
        if nlo is not None and nhi is not None and (nlo > nhi or (nlo == nhi and not (lo_inclusive and hi_inclusive))):
            return ()
        b = self.boundaries
        # A key > lo or >= lo can only be in the index holding lo or later ones.
        first = 0 if nlo is None else bisect_right(b, nlo)
        # Index i can hold a key below hi iff its lower boundary b[i-1] < hi (<= hi when inclusive).
        if nhi is None:
            last = self.n - 1
        elif hi_inclusive:
            last = bisect_right(b, nhi)
        else:
            last = bisect_left(b, nhi)
        return tuple(range(first, last + 1))


cdef class IntervalShard(ShardFunction):
    """index = (whole units between start and key) // step; a key outside [0, n) is an error."""

    algorithm = "interval"

    def __init__(self, n, unit, start, step=1):
        super().__init__(n)
        if unit not in ("day", "month", "year"):
            raise ValueError(f"interval: unit must be day, month or year, not {unit!r}")
        if not isinstance(step, int) or isinstance(step, bool) or not 1 <= step <= 0x7FFFFFFF:
            raise ValueError(f"interval: step must be a positive integer, not {step!r}")
        if start is None:
            raise ValueError("interval: start is required")
        try:
            self.start = _to_datetime(start)
        except ShardKeyError as e:
            raise ValueError(f"interval: start: {e}") from None
        self.unit = unit
        self._unit = ("day", "month", "year").index(unit)
        self.step = step

    cdef object _units(self, object dt):
        s = self.start
        if self._unit == 0:
            return (dt - s) // _ONE_DAY
        if self._unit == 1:
            units = (dt.year - s.year) * 12 + dt.month - s.month
            if (dt.day, dt.time()) < (s.day, s.time()):
                units -= 1
            return units
        units = dt.year - s.year
        if (dt.month, dt.day, dt.time()) < (s.month, s.day, s.time()):
            units -= 1
        return units

    cpdef int index(self, object value) except -1:
        i = self._units(_to_datetime(value)) // self.step
        if i < 0 or i >= self.n:
            raise ShardKeyError(f"shard key {value!r} is outside the configured intervals")
        return i

    cpdef object indexes_for_range(self, object lo, bint lo_inclusive, object hi, bint hi_inclusive):
        try:
            dlo = None if lo is None else _to_datetime(lo)
            dhi = None if hi is None else _to_datetime(hi)
        except ShardKeyError:
            return None
        # datetime has microsecond resolution: key > lo is key >= lo + 1us, key < hi is key <= hi - 1us.
        try:
            if dlo is not None and not lo_inclusive:
                dlo = dlo + _ONE_US
            if dhi is not None and not hi_inclusive:
                dhi = dhi - _ONE_US
        except OverflowError:
            return ()
        if dlo is not None and dhi is not None and dlo > dhi:
            return ()
        first = 0 if dlo is None else max(0, self._units(dlo) // self.step)
        last = self.n - 1 if dhi is None else min(self.n - 1, self._units(dhi) // self.step)
        return tuple(range(first, last + 1))


cdef class ClassShard(ShardFunction):
    """A user class "pkg.module:Name", constructed with the remaining props as keyword arguments.

    It implements index(value, n) -> int and optionally indexes_for_range(lo, lo_inclusive, hi, hi_inclusive, n)
    -> iterable of int or None. NULL keys are rejected before the class is called."""

    algorithm = "class"

    def __init__(self, n, spec, props):
        super().__init__(n)
        self.impl = _load_class(spec)(**props)
        self._ranges = getattr(self.impl, "indexes_for_range", None)

    cpdef int index(self, object value) except -1:
        if value is None:
            raise _null()
        try:
            i = self.impl.index(value, self.n)
        except ShardKeyError:
            raise
        except (ValueError, TypeError, KeyError, ArithmeticError) as e:
            raise ShardKeyError(f"shard key {value!r}: {e}") from e
        if not isinstance(i, int) or not 0 <= i < self.n:
            raise ShardKeyError(f"shard class returned {i!r} for {value!r}, not an index in [0, {self.n})")
        return i

    cpdef object indexes_for_range(self, object lo, bint lo_inclusive, object hi, bint hi_inclusive):
        if self._ranges is None:
            return None
        r = self._ranges(lo, lo_inclusive, hi, hi_inclusive, self.n)
        if r is None:
            return None
        out = sorted({int(i) for i in r})
        if out and (out[0] < 0 or out[len(out) - 1] >= self.n):
            raise ValueError(f"shard class returned indexes outside [0, {self.n}): {out}")
        return tuple(out)


def _load_class(spec):
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f'class: expected "package.module:ClassName", not {spec!r}')
    mod_name, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(mod_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"class: cannot load {spec!r}: {e}") from None
    if not callable(obj):
        raise ValueError(f"class: {spec!r} is not a class")
    return obj


def make_shard_function(strategy, n, *, datasources=None):
    """Build the shard function of a ShardStrategy over n shards.

    two_level reads props["databases"], falling back to `datasources` (the router passes the rule's data source
    count). Raises ValueError for a bad algorithm or bad props."""
    algo = strategy.algorithm
    props = strategy.props or {}
    if algo == "mod":
        return ModShard(n)
    if algo == "two_level":
        d = props.get("databases", datasources)
        if d is None:
            raise ValueError("two_level: props.databases (the data source count) is required")
        return TwoLevelShard(n, d)
    if algo == "hash_mod":
        return HashModShard(n, props.get("hash", "crc32"), props.get("seed", 0), props.get("key_collation", "ci"))
    if algo == "range":
        return RangeShard(n, props.get("boundaries", ()))
    if algo == "interval":
        return IntervalShard(n, props.get("unit", "day"), props.get("start"), props.get("step", 1))
    if algo == "class":
        rest = {k: v for k, v in props.items() if k != "class"}
        return ClassShard(n, props.get("class"), rest)
    raise ValueError(f"unknown shard algorithm {algo!r} (expected one of {', '.join(ALGORITHMS)})")


# ---------------------------------------------------------------------------------------------------------------
# point routes: `key = literal` on one sharded table, bound straight from the lexer's token array

cdef object _NO = object()  # "the point route does not apply": the caller binds the plan the generic way


@cython.final
cdef class PointRoute:
    """The plan-cache-hit path of the commonest statement shape: one sharded table, a WHERE that is one equality on
    its shard key (`id = 5`, `id = ?`), so the statement reaches exactly one physical table.

    Built once per plan (ddm.sharding.rewrite.point_route) from immutable data: `slot` is the literal slot of the key value
    (`neg`: written `-?`), `refs` the token ranges (first, last) of the table names in text order, and
    `names[d][t]` the replacement bytes of each ref for physical table t of data source `datasources[d]`. The key
    places as `d = db_function.index(v)` (0 without one), `t = table_functions[d].index(v)` (0 without one).

    Every method returns None whenever it is not certain to produce exactly what `QueryPlan.bind` would (a value
    the shard functions refuse, NULL, `-'x'`, unusual parameter types, malformed packets): the caller then takes
    the generic path, which also reports the errors."""

    def __init__(self, int slot, bint neg, refs, ShardFunction db_function, table_functions, datasources, names):
        cdef int i
        refs = tuple(tuple(r) for r in refs)
        if slot < 0 or len(refs) > POINT_MAX_REFS:
            raise ValueError("point route: bad slot or too many table references")
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
        for i in range(len(refs)):
            self._first[i], self._last[i] = refs[i]
            if self._first[i] < 0 or self._last[i] < self._first[i] or (i and self._first[i] <= self._last[i - 1]):
                raise ValueError("point route: table references must be ordered and disjoint")
        self._nrefs = len(refs)
        self.slot = slot
        self.neg = neg
        self.refs = refs
        self.db_function = db_function
        self.table_functions = table_functions
        self.datasources = datasources
        self.names = names

    def __repr__(self):
        return f"<PointRoute slot={self.slot} neg={self.neg} refs={self.refs} datasources={len(self.datasources)}>"

    cdef object _negate(self, object value):
        if not self.neg:
            return value
        if isinstance(value, (int, Decimal, float)) and not isinstance(value, bool):
            return -value
        return _NO  # `-'abc'`: the generic path does not prune either

    cdef object _key_from_text(self, Lexed lx):
        cdef LexToken* t
        cdef const unsigned char* p
        cdef long long v = 0
        cdef Py_ssize_t k
        cdef bint plain = True
        if self.slot >= lx.nslots:
            return _NO
        t = &lx.toks[lx.slot_tok[self.slot]]
        if t.kind == T_PARAM:
            return _NO
        if t.kind == T_NUMBER and t.end - t.start <= 18:  # the common case: a plain integer, no int object parse
            p = <const unsigned char*>PyBytes_AS_STRING(lx.sql)
            for k in range(t.start, t.end):
                if p[k] < 48 or p[k] > 57:
                    plain = False
                    break
                v = v * 10 + (p[k] - 48)
            if plain:
                return PyLong_FromLongLong(-v if self.neg else v)
        return self._negate(lx.slot_value(self.slot))

    cdef object _place(self, object value, Lexed lx, bint framed):
        cdef int d, t, i
        cdef ShardFunction f
        cdef tuple row, repl
        cdef bytes sql = lx.sql, out
        cdef const char* p = PyBytes_AS_STRING(sql)
        cdef char* w
        cdef Py_ssize_t n = PyBytes_GET_SIZE(sql), total = n, pos = 0, s, e, ln, hdr
        cdef Py_ssize_t starts[POINT_MAX_REFS]
        cdef Py_ssize_t ends[POINT_MAX_REFS]
        if value is None or value is _NO:
            return None
        try:
            d = self.db_function.index(value) if self.db_function is not None else 0
            if d < 0 or d >= len(self.names):
                return None
            f = self.table_functions[d]
            t = f.index(value) if f is not None else 0
        except Exception:
            return None
        row = <tuple>self.names[d]
        if t < 0 or t >= len(row):
            return None
        repl = <tuple>row[t]
        for i in range(self._nrefs):
            if self._last[i] >= lx.ntokens:
                return None
            s = lx.toks[self._first[i]].start
            e = lx.toks[self._last[i]].end
            if s < (ends[i - 1] if i else 0) or e < s:
                return None  # (tokens never overlap; kept as a guard for the copies below)
            starts[i] = s
            ends[i] = e
            total += PyBytes_GET_SIZE(<bytes>repl[i]) - (e - s)
        hdr = 5 if framed else 0
        if framed and total + 1 >= 0xFFFFFF:
            return None  # a COM_QUERY that needs continuation packets: frame() splits it
        out = PyBytes_FromStringAndSize(NULL, total + hdr)
        w = PyBytes_AS_STRING(out)
        if framed:
            w[0] = <char>((total + 1) & 0xFF)
            w[1] = <char>(((total + 1) >> 8) & 0xFF)
            w[2] = <char>((total + 1) >> 16)
            w[3] = 0
            w[4] = 3  # COM_QUERY
        w += hdr
        for i in range(self._nrefs):
            ln = starts[i] - pos
            memcpy(w, p + pos, ln)
            w += ln
            ln = PyBytes_GET_SIZE(<bytes>repl[i])
            memcpy(w, PyBytes_AS_STRING(<bytes>repl[i]), ln)
            w += ln
            pos = ends[i]
        memcpy(w, p + pos, n - pos)
        return (self.datasources[d], out)

    cpdef object route_query(self, object lexed):
        """(datasource, packet) for a COM_QUERY: the physical statement framed as one COM_QUERY packet, sequence
        id 0 (what `frame(b"\\x03" + unit.sql, 0)` gives for the plan's one unit). None = bind generically."""
        if type(lexed) is not Lexed:
            return None
        return self._place(self._key_from_text(<Lexed>lexed), <Lexed>lexed, True)

    cpdef object route_execute(self, object lexed, bytes payload, int nparams, object types):
        """(datasource, physical statement with its ? markers) for a COM_STMT_EXECUTE of the prepared statement
        `lexed` (payload: the command, byte 0x17 included; types: the last bound parameter types). The parameter
        block is checked like ddm.wire.params.decode_params does (None when it would not decode cleanly or holds a
        DECIMAL or temporal value). None = bind generically."""
        cdef Lexed lx
        cdef int k, j = -1, nmark = 0
        if type(lexed) is not Lexed or payload is None:
            return None
        lx = <Lexed>lexed
        if self.slot >= lx.nslots:
            return None
        for k in range(lx.nslots):
            if lx.toks[lx.slot_tok[k]].kind == T_PARAM:
                if k == self.slot:
                    j = nmark
                nmark += 1
        if nparams <= 0:  # no values: markers stay unbound
            if j >= 0:
                return None
            return self._place(self._key_from_text(lx), lx, False)
        if nmark > nparams:
            return None  # more markers than the statement has parameters: an error, reported generically
        value = _param_value(payload, nparams, types, j)
        if value is _NO:
            return None
        if j < 0:
            value = self._key_from_text(lx)
        else:
            value = self._negate(value)
        return self._place(value, lx, False)


cdef object _param_value(bytes payload, int n, object types, int want):
    # Walk a COM_STMT_EXECUTE parameter block (layout: ddm.wire.params) and return parameter `want` (-1: none, only
    # check the block): int for the integer types, bytes for length-encoded ones, None for NULL. _NO when
    # decode_params would fail or decodes a DECIMAL/temporal value (those can fail on content, not only length).
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(payload)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(payload), nb = (n + 7) // 8, pos, sz
    cdef const unsigned char* tp
    cdef const unsigned char* bitmap = p + 10
    cdef unsigned long long ln
    cdef int i, t, c
    cdef bint uns
    cdef object found = None
    if 10 + nb >= size:
        return _NO
    pos = 10 + nb
    if p[pos]:
        pos += 1
        if pos + 2 * <Py_ssize_t>n > size:
            return _NO
        tp = p + pos
        pos += 2 * n
    else:
        pos += 1
        if type(types) is not bytes or PyBytes_GET_SIZE(types) < 2 * <Py_ssize_t>n:
            return _NO
        tp = <const unsigned char*>PyBytes_AS_STRING(types)
    for i in range(n):
        if bitmap[i >> 3] & (1 << (i & 7)):
            continue  # NULL (found stays None when i == want)
        t = tp[2 * i]
        uns = tp[2 * i + 1] & 0x80
        if t == 1 or t == 2 or t == 13 or t == 3 or t == 9 or t == 8:  # TINY SHORT YEAR LONG INT24 LONGLONG
            sz = 1 if t == 1 else 2 if t == 2 or t == 13 else 8 if t == 8 else 4
            if pos + sz > size:
                return _NO
            if i == want:
                found = _int_le(p + pos, sz, uns)
            pos += sz
        elif t == 5 or t == 4:  # DOUBLE FLOAT
            sz = 8 if t == 5 else 4
            if pos + sz > size or i == want:
                return _NO
            pos += sz
        elif t == 6:  # NULL type: no bytes
            if i == want:
                return _NO
        elif t == 0 or t == 246 or t == 7 or t == 10 or t == 11 or t == 12:  # DECIMAL, temporal
            return _NO
        else:  # length-encoded bytes
            if pos >= size:
                return _NO
            c = p[pos]
            if c < 0xFB:
                ln = c
                pos += 1
            elif c == 0xFC:
                if pos + 3 > size:
                    return _NO
                ln = p[pos + 1] | (<unsigned long long>p[pos + 2] << 8)
                pos += 3
            elif c == 0xFD:
                if pos + 4 > size:
                    return _NO
                ln = p[pos + 1] | (<unsigned long long>p[pos + 2] << 8) | (<unsigned long long>p[pos + 3] << 16)
                pos += 4
            elif c == 0xFE:
                if pos + 9 > size:
                    return _NO
                ln = 0
                for c in range(8):
                    ln |= (<unsigned long long>p[pos + 1 + c]) << (8 * c)
                pos += 9
            else:
                return _NO
            if ln > <unsigned long long>(size - pos):
                return _NO
            if i == want:
                found = PyBytes_FromStringAndSize(<const char*>p + pos, <Py_ssize_t>ln)
            pos += <Py_ssize_t>ln
    return found


cdef object _int_le(const unsigned char* q, Py_ssize_t sz, bint uns):
    cdef unsigned long long u = 0
    cdef Py_ssize_t k
    for k in range(sz):
        u |= (<unsigned long long>q[k]) << (8 * k)
    if uns:
        return PyLong_FromUnsignedLongLong(u)
    if sz == 1:
        return PyLong_FromLongLong(<signed char>u)
    if sz == 2:
        return PyLong_FromLongLong(<short>u)
    if sz == 4:
        return PyLong_FromLongLong(<int>u)
    return PyLong_FromLongLong(<long long>u)
