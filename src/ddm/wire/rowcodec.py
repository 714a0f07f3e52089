"""Row/value codec shared by the result merger (`ddm_core.merge`) and its pure-Python twin (`ddm._py.merge`).

Holds the parts of the merge that are not per-row hot paths: the `MergeSpec` and `ColumnDef` types, collation
classification, decoding a column value into a Python value (HAVING, SUM/AVG inputs) and encoding aggregate
results back into text or binary protocol values with MySQL's formatting.

A *field* here is the content of one column value of a row: for text rows the string bytes without their
length prefix; for binary rows the value bytes without their length prefix (lenenc strings, temporal length
byte) — fixed-size integers/floats are their raw little-endian bytes. NULL is `None`.

Python value mapping (what `having` sees, what `decode_value` returns): integers -> int, DECIMAL -> Decimal,
FLOAT/DOUBLE -> float, YEAR -> int, DATE/DATETIME/TIMESTAMP/TIME -> str in MySQL's text form (binary rows are
formatted to the same text), strings -> str decoded by the column charset (charset 63 `binary` -> bytes),
BIT/GEOMETRY -> bytes.
"""

from __future__ import annotations

import decimal
import math
import re
import struct
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from ddm.wire.constants import field_type as FT
from ddm_core import rowconv

UNSIGNED_FLAG = 32
BINARY_FLAG = 128
BINARY_CHARSET = 63

# Column "kinds" for comparison keys (the Cython merger uses the same numbers).
K_NULL = 0      # MYSQL_TYPE_NULL: always NULL
K_INT = 1       # integer types, YEAR
K_DEC = 2       # DECIMAL / NEWDECIMAL, compared exactly on their digits
K_FLT = 3       # FLOAT / DOUBLE
K_BYTES = 4     # byte-wise, no padding (binary charset, BIT, JSON, GEOMETRY, NO PAD *_bin collations)
K_PADBIN = 5    # byte-wise with trailing spaces ignored (PAD SPACE *_bin collations: 'a' = 'a ')
K_CI = 6        # case/accent-insensitive collation (approximation, see fold_ci)
K_TIME = 7      # TIME, signed microseconds
K_DT = 8        # DATE / DATETIME / TIMESTAMP

# Flags for K_CI.
CI_UPPER = 1    # *_general_ci family: weights are the upper-cased letters ('_' sorts after 'Z')
CI_LATIN1 = 2   # latin1 character set (decode as latin-1, not utf-8)
CI_NOPAD = 4    # NO PAD collation: trailing spaces are significant

# Binary-protocol wire formats.
W_LENENC = 0
W_FIX1 = 1
W_FIX2 = 2
W_FIX4 = 4
W_FIX8 = 8
W_TEMPORAL = 9  # length byte + 0/4/7/11 (dates) or 0/8/12 (TIME) bytes
W_NONE = 10     # MYSQL_TYPE_NULL: never has a value

_INT_TYPES = {FT.TINY, FT.SHORT, FT.LONG, FT.LONGLONG, FT.INT24, FT.YEAR}
_WIRE = {FT.TINY: W_FIX1, FT.SHORT: W_FIX2, FT.YEAR: W_FIX2, FT.LONG: W_FIX4, FT.INT24: W_FIX4,
         FT.FLOAT: W_FIX4, FT.LONGLONG: W_FIX8, FT.DOUBLE: W_FIX8, FT.DATE: W_TEMPORAL,
         FT.DATETIME: W_TEMPORAL, FT.TIMESTAMP: W_TEMPORAL, FT.NEWDATE: W_TEMPORAL, FT.TIME: W_TEMPORAL,
         FT.NULL: W_NONE}
_STRING_TYPES = {FT.VARCHAR, FT.VAR_STRING, FT.STRING, FT.TINY_BLOB, FT.MEDIUM_BLOB, FT.LONG_BLOB, FT.BLOB,
                 FT.ENUM, FT.SET}
# latin1_* collations (MySQL ids): decode as latin-1.
_LATIN1 = {5, 8, 15, 31, 47, 48, 49, 94}
# *_general_ci collations compare upper-cased letters: latin1_swedish_ci, utf8mb3/utf8mb4_general_ci, ascii.
_GENERAL_CI = {8, 11, 33, 45}
# MySQL 8's utf8mb4_0900_* collations (255..323) are NO PAD; all older ones are PAD SPACE.
_NOPAD = range(255, 324)

# Exact decimal arithmetic: 65-digit DECIMALs summed over many rows stay exact with 200 digits.
DEC_CTX = decimal.Context(prec=200, rounding=decimal.ROUND_HALF_UP, Emax=999999, Emin=-999999)
DECIMAL_MAX_SCALE = 30
# MySQL's div_precision_increment default: AVG of a DECIMAL/integer has the input scale + 4 digits.
DIV_PRECISION_INCREMENT = 4

AGG_FUNCS = ("count", "sum", "min", "max", "avg", "count_distinct")


class ColumnDef:
    """A parsed Protocol::ColumnDefinition41 (the fields the merger needs, plus the names to re-encode it)."""

    __slots__ = ("catalog", "schema", "table", "org_table", "name", "org_name", "charset", "length", "type",
                 "flags", "decimals")

    def __init__(self, name: str | bytes = b"", type: int = FT.VAR_STRING, *, flags: int = 0,
                 charset: int = 45, decimals: int = 0, length: int = 0, schema: bytes = b"", table: bytes = b"",
                 org_table: bytes | None = None, org_name: bytes | None = None, catalog: bytes = b"def") -> None:
        nm = name.encode() if isinstance(name, str) else name
        self.catalog = catalog
        self.schema = schema
        self.table = table
        self.org_table = table if org_table is None else org_table
        self.name = nm
        self.org_name = nm if org_name is None else org_name
        self.charset = charset
        self.length = length
        self.type = type
        self.flags = flags
        self.decimals = decimals

    @classmethod
    def parse(cls, payload: bytes) -> ColumnDef:
        """Parse a ColumnDefinition41 payload (lenenc strings, then the 0x0c fixed-length block)."""
        pos = 0
        strs = []
        for _ in range(6):
            n, pos = read_lenenc(payload, pos)
            if n is None or pos + n > len(payload):
                raise ValueError("malformed column definition")
            strs.append(bytes(payload[pos:pos + n]))
            pos += n
        _, pos = read_lenenc(payload, pos)  # length of the fixed fields, always 0x0c
        if pos + 10 > len(payload):
            raise ValueError("malformed column definition")
        charset, length, type_, flags, decimals = struct.unpack_from("<HIBHB", payload, pos)
        return cls(strs[4], type_, flags=flags, charset=charset, decimals=decimals, length=length,
                   schema=strs[1], table=strs[2], org_table=strs[3], org_name=strs[5], catalog=strs[0])

    def to_payload(self) -> bytes:
        return (b"".join(lenenc_str(s) for s in (self.catalog, self.schema, self.table, self.org_table, self.name,
                                                  self.org_name))
                + b"\x0c" + struct.pack("<HIBHB", self.charset, self.length, self.type, self.flags, self.decimals)
                + b"\x00\x00")

    def replace(self, **kw: object) -> ColumnDef:
        c = ColumnDef(self.name)
        for k in self.__slots__:
            setattr(c, k, kw.get(k, getattr(self, k)))
        return c

    @property
    def unsigned(self) -> bool:
        return bool(self.flags & UNSIGNED_FLAG)

    def __repr__(self) -> str:
        return (f"ColumnDef({self.name!r}, type={self.type}, flags={self.flags}, charset={self.charset}, "
                f"decimals={self.decimals})")


@dataclass(frozen=True)
class MergeSpec:
    """What to do with the rows of N shards (see ddm_core.merge for the semantics)."""

    order_by: tuple[tuple[int, bool], ...] = ()
    group_by: tuple[int, ...] = ()
    aggregates: tuple[tuple[int, str, tuple[int, ...]], ...] = ()
    distinct: bool = False
    having: Callable[[tuple], bool] | None = None
    limit: int | None = None
    offset: int = 0
    visible_columns: int | None = None
    binary: bool = False
    # The ORDER BY each shard ran. None = `order_by` for plain queries, unsorted () for GROUP BY/aggregates.
    shard_order: tuple[tuple[int, bool], ...] | None = None

    def __post_init__(self) -> None:
        for _col, func, args in self.aggregates:
            if func not in AGG_FUNCS:
                raise ValueError(f"unknown aggregate {func!r}")
            if func == "avg" and len(args) != 2:
                raise ValueError("avg needs (sum_col, count_col)")
            if func == "count_distinct" and len(args) != 1:
                raise ValueError("count_distinct needs (value_col,)")
        if self.offset < 0 or (self.limit is not None and self.limit < 0):
            raise ValueError("negative limit/offset")


def column_kind(col: ColumnDef) -> tuple[int, int]:
    """(kind, ci_flags) used to build comparison keys for a column."""
    t = col.type
    if t in _INT_TYPES:
        return K_INT, 0
    if t in (FT.DECIMAL, FT.NEWDECIMAL):
        return K_DEC, 0
    if t in (FT.FLOAT, FT.DOUBLE):
        return K_FLT, 0
    if t == FT.TIME:
        return K_TIME, 0
    if t in (FT.DATE, FT.DATETIME, FT.TIMESTAMP, FT.NEWDATE):
        return K_DT, 0
    if t == FT.NULL:
        return K_NULL, 0
    if t in _STRING_TYPES:
        cs = col.charset
        if cs == BINARY_CHARSET:
            return K_BYTES, 0
        if col.flags & BINARY_FLAG:      # a *_bin collation: byte order (= code point order for utf8)
            return (K_BYTES if cs in _NOPAD else K_PADBIN), 0
        fl = (CI_UPPER if cs in _GENERAL_CI else 0) | (CI_LATIN1 if cs in _LATIN1 else 0)
        if cs in _NOPAD:
            fl |= CI_NOPAD
        return K_CI, fl
    return K_BYTES, 0  # BIT, JSON, GEOMETRY


def binary_wire(col: ColumnDef) -> int:
    return _WIRE.get(col.type, W_LENENC)


# utf8mb3/utf8mb4_general_ci weights that NFKD + upper-casing miss (found by comparing with MariaDB's WEIGHT_STRING
# over every BMP character, tests/integration/test_ci_shard_keys.py): 'ß' weighs as 'S' (not 'SS'), U+0345 (combining
# ypogegrammeni) as 'Ι', and every character beyond the BMP as U+FFFD (so they are all equal).
_GENERAL_CI_MAP = {0xDF: "s", 0x345: "\u03b9"}
_SUPPLEMENTARY = re.compile("[\U00010000-\U0010FFFF]")


def fold_ci(s: bytes, flags: int) -> bytes:
    """Collation weight string approximation for case-insensitive collations.

    MySQL's *_ci collations compare by weights: letters case-insensitively, and (general_ci, unicode_ci,
    0900_ai_ci) accents ignored. We approximate with NFKD + dropping combining marks, then upper-casing
    (general_ci, whose weights are upper-case letters) or casefolding (others), then code point order.
    PAD SPACE collations ignore trailing spaces ('a' = 'a  '); NO PAD (0900) ones do not.
    For utf8 general_ci (CI_UPPER without CI_LATIN1) every two characters MariaDB weighs alike fold alike (checked
    against MariaDB 10.11 over the whole BMP; general_ci compares character by character, so equal strings fold
    alike, which the hash_mod `key_collation: ci` routing relies on); it may also join strings MariaDB tells apart
    ('ﬁ' and 'fi'). For the other collations it is an approximation.
    """
    text = s.decode("latin-1" if flags & CI_LATIN1 else "utf-8", "surrogateescape")
    if not text.isascii():
        if flags & CI_UPPER and not flags & CI_LATIN1:
            if "ß" in text or "\u0345" in text:
                text = text.translate(_GENERAL_CI_MAP)
            if max(text) > "\uffff":
                text = _SUPPLEMENTARY.sub("\ufffd", text)
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = text.upper() if flags & CI_UPPER else text.casefold()
    if not flags & CI_NOPAD:
        text = text.rstrip(" ")
    return text.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------- lenenc


def read_lenenc(b: bytes, pos: int) -> tuple[int | None, int]:
    """(value, new pos); value None for the NULL marker 0xFB."""
    c = b[pos]
    if c < 0xFB:
        return c, pos + 1
    if c == 0xFB:
        return None, pos + 1
    if c == 0xFC:
        return b[pos + 1] | b[pos + 2] << 8, pos + 3
    if c == 0xFD:
        return b[pos + 1] | b[pos + 2] << 8 | b[pos + 3] << 16, pos + 4
    if c == 0xFE:
        return int.from_bytes(b[pos + 1:pos + 9], "little"), pos + 9
    raise ValueError("bad length-encoded integer")


def lenenc_int(n: int) -> bytes:
    if n < 0xFB:
        return bytes((n,))
    if n < 0x10000:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 0x1000000:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def lenenc_str(s: bytes) -> bytes:
    return lenenc_int(len(s)) + s


# ---------------------------------------------------------------------------------------------- rows


def split_text_row(row: bytes, ncols: int) -> list[bytes | None]:
    out: list[bytes | None] = []
    pos = 0
    for _ in range(ncols):
        n, pos = read_lenenc(row, pos)
        if n is None:
            out.append(None)
        else:
            out.append(row[pos:pos + n])
            pos += n
    return out


def split_binary_row(row: bytes, wires: Sequence[int]) -> list[bytes | None]:
    ncols = len(wires)
    nb = (ncols + 9) // 8
    pos = 1 + nb
    out: list[bytes | None] = []
    for i, w in enumerate(wires):
        bit = i + 2
        if row[1 + (bit >> 3)] & (1 << (bit & 7)) or w == W_NONE:
            out.append(None)
            continue
        if w == W_LENENC:
            n, pos = read_lenenc(row, pos)
            assert n is not None
        elif w == W_TEMPORAL:
            n = row[pos]
            pos += 1
        else:
            n = w
        out.append(row[pos:pos + n])
        pos += n
    return out


def join_text_row(fields: Sequence[bytes | None]) -> bytes:
    return b"".join(b"\xfb" if f is None else lenenc_int(len(f)) + f for f in fields)


def join_binary_row(fields: Sequence[bytes | None], wires: Sequence[int]) -> bytes:
    bitmap = bytearray((len(fields) + 9) // 8)
    parts = []
    for i, f in enumerate(fields):
        if f is None:
            bit = i + 2
            bitmap[bit >> 3] |= 1 << (bit & 7)
            continue
        w = wires[i]
        if w == W_LENENC:
            parts.append(lenenc_int(len(f)))
        elif w == W_TEMPORAL:
            parts.append(bytes((len(f),)))
        parts.append(f)
    return b"\x00" + bytes(bitmap) + b"".join(parts)


# ---------------------------------------------------------------------------------------------- values

_INT_FMT = {W_FIX1: "b", W_FIX2: "h", W_FIX4: "i", W_FIX8: "q"}


def _charset_codec(charset: int) -> str:
    return "latin-1" if charset in _LATIN1 else "utf-8"


def format_temporal(f: bytes, col: ColumnDef) -> str:
    """Binary-protocol DATE/DATETIME/TIMESTAMP/TIME value -> MySQL's text form."""
    n = len(f)
    frac = col.decimals if 0 < col.decimals <= 6 else 0
    if col.type == FT.TIME:
        if n == 0:
            return "00:00:00" + ("." + "0" * frac if frac else "")
        neg, days, h, m, s = struct.unpack_from("<BIBBB", f)
        us = struct.unpack_from("<I", f, 8)[0] if n >= 12 else 0
        txt = f"{'-' if neg else ''}{days * 24 + h:02d}:{m:02d}:{s:02d}"
        return txt + (f".{us:06d}"[:frac + 1] if frac else "")
    y, mo, d, h, mi, s, us = 0, 0, 0, 0, 0, 0, 0
    if n >= 4:
        y, mo, d = struct.unpack_from("<HBB", f)
    if n >= 7:
        h, mi, s = f[4], f[5], f[6]
    if n >= 11:
        us = struct.unpack_from("<I", f, 7)[0]
    if col.type in (FT.DATE, FT.NEWDATE):
        return f"{y:04d}-{mo:02d}-{d:02d}"
    txt = f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
    return txt + (f".{us:06d}"[:frac + 1] if frac else "")


def temporal_binary(text: str, t: int) -> bytes:
    """MySQL text form of a DATE/DATETIME/TIMESTAMP/TIME -> binary-protocol value (without the length byte),
    using the shortest length MySQL allows (0 for all-zero, 4 date only, 7 without / 11 with microseconds)."""
    if t == FT.TIME:
        neg = text.startswith("-")
        main, _, frac = text.lstrip("-").partition(".")
        hms = [int(x or 0) for x in main.split(":")] + [0, 0]
        us = int((frac + "000000")[:6]) if frac else 0
        h, m, sec = hms[0], hms[1], hms[2]
        if not (h or m or sec or us):
            return b""
        body = struct.pack("<BIBBB", 1 if neg else 0, h // 24, h % 24, m, sec)
        return body + struct.pack("<I", us) if us else body
    date, _, tod = text.partition(" ")
    y, mo, d = (int(x) for x in (date.split("-") + ["0", "0"])[:3])
    main, _, frac = tod.partition(".")
    hh, mi, ss = ([int(x or 0) for x in main.split(":")] + [0, 0, 0])[:3] if main else (0, 0, 0)
    us = int((frac + "000000")[:6]) if frac else 0
    if us:
        return struct.pack("<HBBBBBI", y, mo, d, hh, mi, ss, us)
    if hh or mi or ss:
        return struct.pack("<HBBBBB", y, mo, d, hh, mi, ss)
    if y or mo or d:
        return struct.pack("<HBB", y, mo, d)
    return b""


def decode_value(f: bytes | None, col: ColumnDef, binary: bool) -> object:
    """One field -> Python value (see the module docstring for the mapping)."""
    if f is None:
        return None
    t = col.type
    if t in _INT_TYPES:
        if not binary:
            return int(f)
        fmt = _INT_FMT[_WIRE[t]]
        return struct.unpack("<" + (fmt.upper() if col.flags & UNSIGNED_FLAG or t == FT.YEAR else fmt), f)[0]
    if t in (FT.DECIMAL, FT.NEWDECIMAL):
        return Decimal(f.decode("ascii"))
    if t in (FT.FLOAT, FT.DOUBLE):
        if not binary:
            return float(f)
        return struct.unpack("<f" if t == FT.FLOAT else "<d", f)[0]
    if t in (FT.DATE, FT.DATETIME, FT.TIMESTAMP, FT.NEWDATE, FT.TIME):
        return format_temporal(f, col) if binary else f.decode("ascii")
    if t in _STRING_TYPES or t == FT.JSON:
        if col.charset == BINARY_CHARSET and t != FT.JSON:
            return bytes(f)
        return f.decode(_charset_codec(col.charset), "surrogateescape")
    return bytes(f)


def format_double(v: float) -> str:
    """MySQL-like text for a DOUBLE: shortest round-trip digits; plain notation for decimal exponents
    -5 < e < 15, otherwise `1.5e20` / `1e-7` (no '+', no zero padding). Approximates MySQL's my_gcvt."""
    if v == 0:
        return "0"
    if math.isinf(v) or math.isnan(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return _format_digits(repr(v))


def format_float(v: float) -> str:
    """FLOAT (single precision): the shortest digits that round-trip through a 4-byte float."""
    if v == 0:
        return "0"
    f32 = struct.unpack("<f", struct.pack("<f", v))[0]
    for p in range(6, 10):
        s = f"{f32:.{p}g}"
        if struct.unpack("<f", struct.pack("<f", float(s)))[0] == f32:
            return _format_digits(repr(float(s)))
    return _format_digits(repr(f32))


def _format_digits(r: str) -> str:
    neg = r.startswith("-")
    if neg:
        r = r[1:]
    mant, _, exp = r.partition("e")
    e = int(exp) if exp else 0
    ip, _, fp = mant.partition(".")
    digits = (ip + fp).lstrip("0")
    # Decimal exponent of the first significant digit.
    lead = len(ip.lstrip("0")) - 1 if ip.lstrip("0") else -(len(fp) - len(fp.lstrip("0")) + 1)
    e10 = e + lead
    digits = digits.rstrip("0") or "0"
    if -5 < e10 < 15:
        if e10 >= 0:
            if len(digits) <= e10 + 1:
                out = digits + "0" * (e10 + 1 - len(digits))
            else:
                out = digits[:e10 + 1] + "." + digits[e10 + 1:]
        else:
            out = "0." + "0" * (-e10 - 1) + digits
    else:
        out = digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + f"e{e10}"
    return "-" + out if neg else out


def format_decimal(v: Decimal | int, decimals: int) -> str:
    """DECIMAL text with exactly `decimals` fraction digits (rounded half up, like MySQL)."""
    d = Decimal(v) if isinstance(v, int) else v
    q = d.quantize(Decimal(1).scaleb(-decimals), rounding=decimal.ROUND_HALF_UP, context=DEC_CTX)
    if q.is_zero():
        q = q.copy_abs()
    return format(q, "f")


def encode_value(v: object, col: ColumnDef, binary: bool) -> bytes | None:
    """Python value -> field content for the column's type (aggregate results)."""
    if v is None:
        return None
    t = col.type
    if t in _INT_TYPES:
        iv = int(v)  # type: ignore[call-overload]
        if not binary:
            return str(iv).encode()
        fmt = _INT_FMT[_WIRE[t]]
        return struct.pack("<" + (fmt.upper() if col.flags & UNSIGNED_FLAG or t == FT.YEAR else fmt), iv)
    if t in (FT.DECIMAL, FT.NEWDECIMAL):
        dv = v if isinstance(v, (Decimal, int)) else Decimal(repr(v))
        return format_decimal(dv, min(col.decimals, DECIMAL_MAX_SCALE)).encode()
    if t in (FT.FLOAT, FT.DOUBLE):
        fv = float(v)  # type: ignore[arg-type]
        if binary:
            return struct.pack("<f" if t == FT.FLOAT else "<d", fv)
        return (format_float(fv) if t == FT.FLOAT else format_double(fv)).encode()
    if binary and t in (FT.DATE, FT.DATETIME, FT.TIMESTAMP, FT.NEWDATE, FT.TIME):
        return temporal_binary(v if isinstance(v, str) else str(v), t)
    if isinstance(v, bytes):
        return v
    if isinstance(v, Decimal):
        return format(v, "f").encode()
    if isinstance(v, float):
        return format_double(v).encode()
    return str(v).encode(_charset_codec(col.charset), "surrogateescape")


# Types whose binary-protocol field is the text-protocol field, length prefix included: strings, blobs, JSON,
# ENUM/SET, BIT, GEOMETRY (decode_value/encode_value give the bytes back unchanged; the wire is W_LENENC).
_NOT_COPIED = _INT_TYPES | {FT.DECIMAL, FT.NEWDECIMAL, FT.FLOAT, FT.DOUBLE, FT.DATE, FT.DATETIME, FT.TIMESTAMP,
                            FT.NEWDATE, FT.TIME, FT.NULL}
_GENERIC_WIRE = {W_LENENC: rowconv.LENENC, W_TEMPORAL: rowconv.TEMPORAL}


def _conversion(col: ColumnDef) -> tuple[int, int | None]:
    """(kind, arg) of ddm_core.rowconv for one column."""
    t = col.type
    wire = binary_wire(col)
    if t in _INT_TYPES:
        return rowconv.INT, wire  # W_FIX1/2/4/8 are the widths
    if t not in _NOT_COPIED and wire == W_LENENC:
        return rowconv.COPY, None
    if t in (FT.DECIMAL, FT.NEWDECIMAL) and col.decimals <= DECIMAL_MAX_SCALE:
        # the binary protocol sends a DECIMAL as the same string as the text protocol (the server's own digits)
        return rowconv.COPY, None
    return rowconv.GENERIC, _GENERIC_WIRE.get(wire, rowconv.FIXED)


def text_rows_to_binary(rows: Sequence[bytes], columns: Sequence[ColumnDef]) -> list[bytes]:
    """Text-protocol rows -> binary-protocol rows (a merged scatter result answering COM_STMT_EXECUTE).

    One pass in C (ddm_core.rowconv): string-like fields are copied with their length prefix and integers packed
    from their text; other types go through decode_value/encode_value. Same bytes as
    `text_rows_to_binary_reference`, which the tests compare it with."""
    plan = [_conversion(c) for c in columns]

    def generic(i: int, text: bytes) -> bytes:
        col = columns[i]
        f = encode_value(decode_value(text, col, False), col, True)
        assert f is not None
        return f

    return rowconv.text_rows_to_binary(rows if type(rows) is list else list(rows), tuple(k for k, _ in plan),
                                       tuple(a for _, a in plan), generic)


def text_rows_to_binary_reference(rows: Sequence[bytes], columns: Sequence[ColumnDef]) -> list[bytes]:
    """The plain form of text_rows_to_binary (every field decoded and encoded again), for the tests."""
    wires = [binary_wire(c) for c in columns]
    out = []
    for row in rows:
        fields = split_text_row(row, len(columns))
        values = [decode_value(f, c, False) for f, c in zip(fields, columns, strict=True)]
        out.append(join_binary_row([encode_value(v, c, True) for v, c in zip(values, columns, strict=True)], wires))
    return out


# ---------------------------------------------------------------------------------------------- aggregates


def output_columns(spec: MergeSpec, columns: Sequence[ColumnDef]) -> list[ColumnDef]:
    """Column definitions of the merged rows (all columns, derived ones included).

    COUNT / COUNT(DISTINCT) -> BIGINT; AVG -> DECIMAL(scale of the SUM column + 4) or DOUBLE when the SUM column
    is FLOAT/DOUBLE (MySQL: AVG of an approximate value is DOUBLE); SUM/MIN/MAX keep the shard's column type.
    The executor sends `[c.to_payload() for c in out[:visible]]` to the client.
    """
    out = list(columns)
    for col, func, args in spec.aggregates:
        c = columns[col]
        if func in ("count", "count_distinct"):
            if c.type != FT.LONGLONG or c.flags & UNSIGNED_FLAG:
                out[col] = c.replace(type=FT.LONGLONG, flags=c.flags & ~UNSIGNED_FLAG, decimals=0, length=21,
                                     charset=BINARY_CHARSET)
        elif func == "avg":
            s = columns[args[0]]
            if s.type in (FT.FLOAT, FT.DOUBLE):
                out[col] = c.replace(type=FT.DOUBLE, decimals=31, charset=BINARY_CHARSET, length=23)
            else:
                dec = min(s.decimals + DIV_PRECISION_INCREMENT, DECIMAL_MAX_SCALE)
                out[col] = c.replace(type=FT.NEWDECIMAL, decimals=dec, charset=BINARY_CHARSET,
                                     length=min(max(s.length, 1) + DIV_PRECISION_INCREMENT + 1, 67))
    return out


def add_values(a: object, b: object) -> object:
    """SUM/COUNT accumulation: None (NULL) is skipped; ints stay ints; DECIMALs exact; doubles as floats."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, float) or isinstance(b, float):
        return float(a) + float(b)  # type: ignore[arg-type]
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    return DEC_CTX.add(Decimal(a), Decimal(b))  # type: ignore[arg-type]


def avg_value(total: object, count: object, outcol: ColumnDef) -> object:
    """AVG = SUM / COUNT over all shards; NULL for no non-NULL values. DECIMAL rounded half up to the scale."""
    if total is None or not count:
        return None
    if outcol.type in (FT.FLOAT, FT.DOUBLE) or isinstance(total, float):
        return float(total) / int(count)  # type: ignore[arg-type,call-overload]
    q = DEC_CTX.divide(Decimal(total), Decimal(int(count)))  # type: ignore[arg-type,call-overload]
    return q.quantize(Decimal(1).scaleb(-outcol.decimals), rounding=decimal.ROUND_HALF_UP, context=DEC_CTX)
