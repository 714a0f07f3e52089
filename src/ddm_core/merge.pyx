# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Scatter-gather result merge: an I/O-free, push-based state machine over raw MySQL row payloads of N shards.

API (the pure-Python twin `ddm._py.merge` is identical)::

    spec = MergeSpec(order_by=((col, desc), ...), group_by=(col, ...),
                     aggregates=((col, func, arg_cols), ...), distinct=False, having=None,
                     limit=None, offset=0, visible_columns=None, binary=False, shard_order=None)
    m = Merger(spec, columns, nshards, max_buffer=1000)   # columns: ColumnDef or raw ColumnDefinition41 payloads
    m.feed(shard, rows)     # rows: list of row payloads (text or binary protocol)
    m.finish(shard)         # the shard's result set ended
    m.take() -> list[bytes] # output row payloads ready to send (call after feeding/finishing)
    m.done                  # True: nothing more will be produced (limit reached or every shard consumed)
    m.wants(shard)          # False: that shard's buffer is full (or done) -> stop reading it for now
    m.output_columns        # ColumnDefs of the output (AVG/COUNT types rewritten); send [:visible]
    ColumnDef.parse(payload) -> ColumnDef(name, type, flags, charset, decimals, ...); .to_payload()

Spec fields:
- order_by: the statement's final ORDER BY over result columns (derived columns allowed).
- shard_order: the ORDER BY each shard ran. Default (None): `order_by` for plain queries; unsorted for
  GROUP BY / aggregate queries. For GROUP BY the rewriter should push `ORDER BY <group keys>` (MySQL 8 does not
  sort GROUP BY output) and set shard_order to it: when the first len(group_by) entries of shard_order are the
  group columns (any directions), groups are folded while streaming (k-way merge, adjacent fold); otherwise the
  merger aggregates in a hash table and sorts at the end.
- aggregates: (col, func, arg_cols). `col` is the output column. func:
  count (sum of the shards' COUNTs), sum, min, max, avg (arg_cols = (sum_col, count_col): the derived SUM(x) and
  COUNT(x) columns; the shard's value in `col` is ignored), count_distinct (arg_cols = (value_col,): the shards
  run `GROUP BY <group keys>, x` (or DISTINCT) so each shard row carries one distinct x per group in value_col;
  the merger counts the collation-distinct non-NULL values per group; other aggregates of the same query stay
  correct with that finer per-shard grouping because COUNT/SUM partials add up and MIN/MAX compose).
  Aggregate results are re-encoded: COUNT/COUNT(DISTINCT) as BIGINT, AVG as DECIMAL with the SUM column's scale
  + 4 (div_precision_increment) rounded half up, or DOUBLE for FLOAT/DOUBLE input; SUM/MIN/MAX keep the column
  type (MIN/MAX pass the winning shard value through unchanged). Non-aggregate columns take the group's first row.
  Aggregates without GROUP BY give exactly one row, even over zero input rows (COUNT 0, SUM/AVG/MIN/MAX NULL).
- having: callable(tuple of decoded output values, all columns incl. derived) -> bool, applied after grouping.
- distinct: drops rows whose visible columns equal (collation-wise) an earlier row's.
- limit/offset: the real ones (shards ran LIMIT offset+limit); applied last. `done` turns True when reached.
- visible_columns: columns from this index on are derived (ORDER BY/AVG helpers) and stripped from the output.

Order of operations: merge (k-way or concat) -> group/aggregate -> HAVING -> DISTINCT -> final ORDER BY -> OFFSET/
LIMIT -> strip derived columns. Output rows are the input payloads unchanged whenever nothing was rewritten.

Comparison (MySQL semantics, approximated where noted). Each compared value becomes a byte string whose byte
order is the MySQL order, computed in C once per row; comparing rows is then one memcmp (DESC inverts the bytes):
NULL first in ASC, last in DESC; integers/DECIMAL exactly by their digits (any length, unsigned 64-bit, negative);
FLOAT/DOUBLE as doubles (-0 = 0); DATE/DATETIME/TIMESTAMP by their text (binary rows: by fields); TIME as signed
microseconds (so '-01:00:00' < '00:00:00'); strings of charset 63 byte-wise; *_bin collations byte-wise (= code
point order for utf8) ignoring trailing spaces (PAD SPACE) except MySQL 8's NO PAD *_0900_bin; other collations
case- and accent-insensitively: ASCII letters folded in C (upper-case for *_general_ci whose weights are upper-case
letters, lower-case otherwise), non-ASCII text NFKD-stripped of marks and upper-cased/casefolded, then by code
point — not the real UCA weights; trailing spaces ignored except for NO PAD 0900 collations. ENUM/SET compare as
strings (MySQL sorts ENUM by index). Ties keep shard index order (stable).

Streaming: in k-way merge mode a row is released only when every unfinished shard has a buffered head row.
Memory stays bounded by nshards * max_buffer for concat, ORDER BY merge and sorted GROUP BY; hash GROUP BY,
DISTINCT and final sorts hold state proportional to the groups/rows.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from libc.stdlib cimport free, malloc, realloc, strtod
from libc.string cimport memcmp, memcpy

from ddm_core.packets cimport read_lenenc

from ddm.wire.rowcodec import (
    ColumnDef,
    MergeSpec,
    add_values,
    avg_value,
    binary_wire,
    column_kind,
    decode_value,
    encode_value,
    fold_ci,
    join_binary_row,
    output_columns,
)

__all__ = ["ColumnDef", "MergeSpec", "Merger", "output_columns"]

# Mirrors of ddm.wire.rowcodec constants (kinds, ci flags, wire formats) and aggregate codes.
cdef enum:
    K_NULL = 0
    K_INT = 1
    K_DEC = 2
    K_FLT = 3
    K_BYTES = 4
    K_PADBIN = 5
    K_CI = 6
    K_TIME = 7
    K_DT = 8
    CI_UPPER = 1
    CI_NOPAD = 4
    W_LENENC = 0
    W_TEMPORAL = 9
    W_NONE = 10
    F_COUNT = 0
    F_SUM = 1
    F_MIN = 2
    F_MAX = 3
    F_AVG = 4
    F_CDIST = 5

_FUNC_CODES = {"count": F_COUNT, "sum": F_SUM, "min": F_MIN, "max": F_MAX, "avg": F_AVG, "count_distinct": F_CDIST}


class MalformedRow(ValueError):
    """A row payload that does not match the column definitions."""


cdef inline unsigned long long rd_le(const unsigned char* p, int n) noexcept nogil:
    cdef unsigned long long v = 0
    cdef int i
    for i in range(n - 1, -1, -1):
        v = (v << 8) | p[i]
    return v


cdef bytes join_text(list fields):
    """Text-protocol row from field contents (lenenc strings, 0xFB for NULL)."""
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t ln, j = 0
    cdef char* o
    for f in fields:
        if f is None:
            total += 1
        else:
            ln = PyBytes_GET_SIZE(f)
            total += ln + (1 if ln < 0xFB else 3 if ln < 0x10000 else 4 if ln < 0x1000000 else 9)
    out = PyBytes_FromStringAndSize(NULL, total)
    o = PyBytes_AS_STRING(out)
    for f in fields:
        if f is None:
            o[j] = <char>0xFB
            j += 1
            continue
        ln = PyBytes_GET_SIZE(f)
        if ln < 0xFB:
            o[j] = <char>ln
            j += 1
        elif ln < 0x10000:
            o[j] = <char>0xFC
            o[j + 1] = <char>(ln & 0xFF)
            o[j + 2] = <char>(ln >> 8)
            j += 3
        elif ln < 0x1000000:
            o[j] = <char>0xFD
            o[j + 1] = <char>(ln & 0xFF)
            o[j + 2] = <char>((ln >> 8) & 0xFF)
            o[j + 3] = <char>(ln >> 16)
            j += 4
        else:
            o[j] = <char>0xFE
            for ln2 in range(8):
                o[j + 1 + ln2] = <char>((ln >> (8 * ln2)) & 0xFF)
            j += 9
        memcpy(o + j, PyBytes_AS_STRING(f), ln)
        j += ln
    return out


cdef class _Plan:
    def __cinit__(self, plan):
        self.n = len(plan)
        self.maxcol = -1
        self.cols = <int*>malloc(max(self.n, 1) * sizeof(int))
        self.desc = <unsigned char*>malloc(max(self.n, 1))
        if self.cols == NULL or self.desc == NULL:
            raise MemoryError()
        for i, (c, d) in enumerate(plan):
            self.cols[i] = c
            self.desc[i] = 1 if d else 0
            if c > self.maxcol:
                self.maxcol = c

    def __dealloc__(self):
        free(self.cols)
        free(self.desc)


cdef class _ColInfo:
    def __cinit__(self, list cols, bint binary):
        cdef int i
        n = len(cols)
        self.ncols = n
        self.binary = binary
        m = max(n, 1)
        self.kind = <int*>malloc(m * sizeof(int))
        self.ciflags = <int*>malloc(m * sizeof(int))
        self.wire = <int*>malloc(m * sizeof(int))
        self.unsigned_ = <unsigned char*>malloc(m)
        self.vb = <Py_ssize_t*>malloc(m * sizeof(Py_ssize_t))
        self.vl = <Py_ssize_t*>malloc(m * sizeof(Py_ssize_t))
        self.cap = 256
        self.buf = <unsigned char*>malloc(self.cap)
        if (self.kind == NULL or self.ciflags == NULL or self.wire == NULL or self.unsigned_ == NULL
                or self.vb == NULL or self.vl == NULL or self.buf == NULL):
            raise MemoryError()
        for i in range(n):
            c = cols[i]
            k, fl = column_kind(c)
            self.kind[i] = k
            self.ciflags[i] = fl
            self.wire[i] = binary_wire(c)
            self.unsigned_[i] = 1 if c.flags & 32 or c.type == 13 else 0   # YEAR is unsigned
        self.fold = fold_ci
        self.cols = cols

    def __dealloc__(self):
        free(self.kind)
        free(self.ciflags)
        free(self.wire)
        free(self.unsigned_)
        free(self.vb)
        free(self.vl)
        free(self.buf)

    cdef Py_ssize_t locate(self, const unsigned char* p, Py_ssize_t n, int upto) except -1:
        """Fill vb/vl for columns [0, upto); returns the offset just past column upto-1."""
        cdef Py_ssize_t pos
        cdef Py_ssize_t ln
        cdef int i, w, bit
        if not self.binary:
            pos = 0
            for i in range(upto):
                if pos >= n:
                    raise MalformedRow("row has fewer columns than its definitions")
                ln = <Py_ssize_t>read_lenenc(p, n, &pos)
                if ln == -1:          # NULL
                    self.vl[i] = -1
                    continue
                if ln < 0:
                    raise MalformedRow("bad length-encoded column")
                if ln < 0 or ln > n - pos:
                    raise MalformedRow("column value runs past the row")
                self.vb[i] = pos
                self.vl[i] = ln
                pos += ln
            return pos
        # Binary row: 0x00, NULL bitmap with a 2-bit offset, then the non-NULL values.
        pos = 1 + (self.ncols + 9) // 8
        if pos > n:
            raise MalformedRow("binary row shorter than its NULL bitmap")
        for i in range(upto):
            w = self.wire[i]
            bit = i + 2
            if (p[1 + (bit >> 3)] >> (bit & 7)) & 1 or w == W_NONE:
                self.vl[i] = -1
                continue
            if w == W_LENENC:
                if pos >= n:
                    raise MalformedRow("truncated binary row")
                ln = <Py_ssize_t>read_lenenc(p, n, &pos)
                if ln < 0:            # NULL marker or truncated: neither is a valid binary length
                    raise MalformedRow("bad length-encoded column")
            elif w == W_TEMPORAL:
                if pos >= n:
                    raise MalformedRow("truncated binary row")
                ln = p[pos]
                pos += 1
            else:
                ln = w
            if ln < 0 or ln > n - pos:
                raise MalformedRow("column value runs past the row")
            self.vb[i] = pos
            self.vl[i] = ln
            pos += ln
        return pos

    cdef int reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t need = self.len + extra
        cdef unsigned char* nb
        if need > self.cap:
            while self.cap < need:
                self.cap *= 2
            nb = <unsigned char*>realloc(self.buf, self.cap)
            if nb == NULL:
                raise MemoryError()
            self.buf = nb
        return 0

    cdef int enc(self, int col, const unsigned char* v, Py_ssize_t n, bint desc) except -1:
        """Append the comparison key of one value (n < 0: NULL) to buf (see merge.pyx docstring)."""
        cdef Py_ssize_t start = self.len
        cdef Py_ssize_t i, j, ib, ie, fb, fe, nint
        cdef int kind = self.kind[col]
        cdef int fl
        cdef unsigned char x, c
        cdef unsigned char* o
        cdef unsigned long long u
        cdef long long sv
        cdef double d
        cdef float f32
        cdef char tmp[72]
        cdef long long comp[3]
        cdef bint neg, ascii
        if n < 0 or kind == K_NULL:
            self.reserve(1)
            self.buf[self.len] = 0x00 if not desc else 0xFF
            self.len += 1
            return 0
        if kind == K_INT or kind == K_DEC:
            if kind == K_INT and self.binary:
                # Fixed-size little-endian integer -> its decimal digits, then the digits encoding below.
                u = rd_le(v, <int>n)
                neg = False
                if not self.unsigned_[col]:
                    sv = <long long>(u << (64 - 8 * n)) >> (64 - 8 * n)   # sign-extend
                    if sv < 0:
                        neg = True
                        u = <unsigned long long>(-(sv + 1)) + 1
                j = 71
                while True:
                    tmp[j] = <char>(48 + u % 10)
                    u //= 10
                    j -= 1
                    if u == 0:
                        break
                if neg:
                    tmp[j] = b'-'
                    j -= 1
                v = <const unsigned char*>tmp + j + 1
                n = 71 - j
            # Exact decimal: 02 zero; 03 <int digit count> <digits> 00; negative: 01 + that inverted.
            i = 0
            neg = False
            if i < n and (v[i] == b'-' or v[i] == b'+'):
                neg = v[i] == b'-'
                i += 1
            while i < n and v[i] == b'0':
                i += 1
            ib = i
            while i < n and 48 <= v[i] <= 57:
                i += 1
            ie = i
            fb = fe = i
            if i < n and v[i] == b'.':
                i += 1
                fb = i
                while i < n and 48 <= v[i] <= 57:
                    i += 1
                fe = i
                while fe > fb and v[fe - 1] == b'0':
                    fe -= 1
            nint = ie - ib
            if nint > 255:
                raise ValueError("number too long")
            self.reserve(4 + nint + (fe - fb))
            o = self.buf + self.len
            o[0] = 0x01
            j = 1
            if nint == 0 and fe == fb:
                o[1] = 0x02
                j = 2
            else:
                x = 0xFF if neg else 0x00
                o[1] = 0x01 if neg else 0x03
                o[2] = (<unsigned char>nint) ^ x
                j = 3
                for i in range(ib, ie):
                    o[j] = v[i] ^ x
                    j += 1
                for i in range(fb, fe):
                    o[j] = v[i] ^ x
                    j += 1
                o[j] = x
                j += 1
            self.len += j
        elif kind == K_FLT:
            if self.binary:
                if n == 4:
                    memcpy(&f32, v, 4)
                    d = f32
                else:
                    memcpy(&d, v, 8)
            elif n < 64:
                memcpy(tmp, v, n)
                tmp[n] = 0
                d = strtod(tmp, NULL)
            else:
                d = float(PyBytes_FromStringAndSize(<char*>v, n))
            if d == 0:
                d = 0.0
            memcpy(&u, &d, 8)
            if u >> 63:
                u = ~u
            else:
                u |= (<unsigned long long>1) << 63
            self.reserve(9)
            o = self.buf + self.len
            o[0] = 0x01
            for i in range(8):
                o[1 + i] = (u >> (56 - 8 * i)) & 0xFF
            self.len += 9
        elif kind == K_TIME:
            if self.binary:
                sv = 0
                if n >= 8:
                    sv = (((<long long>rd_le(v + 1, 4) * 24 + v[5]) * 60 + v[6]) * 60 + v[7]) * 1000000
                    if n >= 12:
                        sv += <long long>rd_le(v + 8, 4)
                    if v[0]:
                        sv = -sv
            else:
                # [-]H+:MM:SS[.ffffff]
                i = 0
                neg = n > 0 and v[0] == b'-'
                if neg:
                    i = 1
                comp[0] = comp[1] = comp[2] = 0
                for j in range(3):
                    while i < n and 48 <= v[i] <= 57:
                        comp[j] = comp[j] * 10 + v[i] - 48
                        i += 1
                    if i < n and v[i] == b':':
                        i += 1
                    else:
                        break
                sv = (comp[0] * 60 + comp[1]) * 60 + comp[2]
                sv *= 1000000
                if i < n and v[i] == b'.':
                    i += 1
                    ib = 0
                    for j in range(6):
                        ib *= 10
                        if i < n and 48 <= v[i] <= 57:
                            ib += v[i] - 48
                            i += 1
                    sv += ib
                if neg:
                    sv = -sv
            u = <unsigned long long>sv + ((<unsigned long long>1) << 63)
            self.reserve(9)
            o = self.buf + self.len
            o[0] = 0x01
            for i in range(8):
                o[1 + i] = (u >> (56 - 8 * i)) & 0xFF
            self.len += 9
        elif kind == K_DT and self.binary:
            # length 0/4/7/11: year u16, month, day, hour, minute, second, microsecond u32 -> big-endian fields.
            for i in range(11):
                tmp[i] = v[i] if i < n else 0
            self.reserve(12)
            o = self.buf + self.len
            o[0] = 0x01
            o[1] = <unsigned char>tmp[1]
            o[2] = <unsigned char>tmp[0]
            for i in range(2, 7):
                o[1 + i] = <unsigned char>tmp[i]
            o[8] = <unsigned char>tmp[10]
            o[9] = <unsigned char>tmp[9]
            o[10] = <unsigned char>tmp[8]
            o[11] = <unsigned char>tmp[7]
            self.len += 12
        else:
            # Strings: K_BYTES / K_DT text as is, K_PADBIN without trailing spaces, K_CI folded.
            fl = self.ciflags[col]
            if kind == K_PADBIN or (kind == K_CI and not (fl & CI_NOPAD)):
                while n > 0 and v[n - 1] == 32:
                    n -= 1
            ascii = True
            if kind == K_CI:
                for i in range(n):
                    if v[i] >= 0x80:
                        ascii = False
                        break
            if not ascii:
                folded = self.fold(PyBytes_FromStringAndSize(<char*>v, n), fl)
                v = <const unsigned char*>PyBytes_AS_STRING(folded)
                n = PyBytes_GET_SIZE(folded)
                kind = K_BYTES
            self.reserve(2 * n + 3)
            o = self.buf + self.len
            o[0] = 0x01
            j = 1
            if kind == K_CI:
                if fl & CI_UPPER:
                    for i in range(n):
                        c = v[i]
                        if 97 <= c <= 122:
                            c -= 32
                        o[j] = c
                        j += 1
                        if c == 0:
                            o[j] = 0xFF
                            j += 1
                else:
                    for i in range(n):
                        c = v[i]
                        if 65 <= c <= 90:
                            c += 32
                        o[j] = c
                        j += 1
                        if c == 0:
                            o[j] = 0xFF
                            j += 1
            else:
                for i in range(n):
                    c = v[i]
                    o[j] = c
                    j += 1
                    if c == 0:       # escape 00 -> 00 FF so the 00 00 terminator stays the smallest
                        o[j] = 0xFF
                        j += 1
            o[j] = 0
            o[j + 1] = 0
            self.len += j + 2
        if desc:
            o = self.buf
            for i in range(start, self.len):
                o[i] ^= 0xFF
        return 0

    cdef bytes key_row(self, bytes row, _Plan plan):
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(row)
        self.locate(p, PyBytes_GET_SIZE(row), plan.maxcol + 1)
        return self.key_located(p, plan)

    cdef bytes key_located(self, const unsigned char* p, _Plan plan):
        """Key of the row last passed to locate() (which must have covered plan.maxcol)."""
        cdef int i, c
        self.len = 0
        for i in range(plan.n):
            c = plan.cols[i]
            self.enc(c, p + self.vb[c], self.vl[c], plan.desc[i])
        return PyBytes_FromStringAndSize(<char*>self.buf, self.len)

    cdef object num_at(self, const unsigned char* p, int col):
        """Numeric value of a located column (SUM/COUNT/AVG inputs): int, Decimal or float; None for NULL."""
        cdef Py_ssize_t n = self.vl[col]
        cdef Py_ssize_t i
        cdef const unsigned char* v
        cdef long long acc
        cdef unsigned long long u
        cdef int w
        if n < 0:
            return None
        v = p + self.vb[col]
        if self.kind[col] == K_INT:
            if self.binary:
                w = <int>n
                u = rd_le(v, w)
                if self.unsigned_[col]:
                    return u
                return <long long>(u << (64 - 8 * w)) >> (64 - 8 * w)
            if 0 < n <= 18:
                i = 1 if v[0] == b'-' else 0
                acc = 0
                while i < n and 48 <= v[i] <= 57:
                    acc = acc * 10 + v[i] - 48
                    i += 1
                if i == n:
                    return -acc if v[0] == b'-' else acc
        return decode_value(PyBytes_FromStringAndSize(<char*>v, n), self.cols[col], self.binary)

    cdef bytes key_fields(self, list fields, _Plan plan):
        cdef int i, c
        self.len = 0
        for i in range(plan.n):
            c = plan.cols[i]
            f = fields[c]
            if f is None:
                self.enc(c, NULL, -1, plan.desc[i])
            else:
                self.enc(c, <const unsigned char*>PyBytes_AS_STRING(f), PyBytes_GET_SIZE(f), plan.desc[i])
        return PyBytes_FromStringAndSize(<char*>self.buf, self.len)

    cdef list split(self, bytes row):
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(row)
        cdef int i
        cdef list out = []
        self.locate(p, PyBytes_GET_SIZE(row), self.ncols)
        for i in range(self.ncols):
            if self.vl[i] < 0:
                out.append(None)
            else:
                out.append(PyBytes_FromStringAndSize(<char*>p + self.vb[i], self.vl[i]))
        return out


cdef class Merger:
    """Merge the result rows of `nshards` shards according to a MergeSpec (see the module docstring)."""

    def __cinit__(self):
        self.pos = NULL
        self.finished = NULL
        self.waiting = NULL
        self.heap = NULL
        self.headkey = NULL

    def __init__(self, spec, columns, int nshards, Py_ssize_t max_buffer=1000):
        cdef int s
        cols = [c if isinstance(c, ColumnDef) else ColumnDef.parse(c) for c in columns]
        if nshards < 1:
            raise ValueError("nshards must be >= 1")
        self.spec = spec
        self.columns = cols
        self.output_columns = output_columns(spec, cols)
        self.nshards = nshards
        self.max_buffer = max_buffer
        self.ncols = len(cols)
        self.vis = self.ncols if spec.visible_columns is None else spec.visible_columns
        self.binary = spec.binary
        self.cin = _ColInfo(cols, spec.binary)
        self.cout = _ColInfo(self.output_columns, spec.binary)
        grouped = bool(spec.group_by or spec.aggregates)
        shard_order = tuple(spec.shard_order if spec.shard_order is not None else
                            (() if grouped else spec.order_by))
        ob = tuple(spec.order_by)
        ng = len(spec.group_by)
        self.grouped = grouped
        self.stream_group = False
        self.merge_plan = None
        if grouped:
            # Streaming GROUP BY when every shard sorted by all group keys first: a group's rows are adjacent
            # in the k-way merge. Otherwise hash aggregation over all rows, then the final sort.
            self.stream_group = ng > 0 and len(shard_order) >= ng and \
                {c for c, _ in shard_order[:ng]} == set(spec.group_by)
            if self.stream_group:
                self.merge_plan = _Plan(shard_order[:ng])
            k = min(len(ob), ng)
            self.final_sort = bool(ob) and not (self.stream_group and ob[:k] == shard_order[:k])
        elif ob and shard_order[:len(ob)] == ob:
            self.merge_plan = _Plan(ob)        # shards are sorted by (at least) the ORDER BY: k-way merge
            self.final_sort = False
        else:
            self.final_sort = bool(ob)
        self.group_plan = _Plan([(c, False) for c in spec.group_by])
        self.distinct_plan = _Plan([(c, False) for c in range(self.vis)])
        self.order_plan = _Plan(ob)
        self.simple = not grouped and not self.final_sort and not spec.distinct and spec.having is None
        # (col, code, arg0, arg1, key plan of the compared column for MIN/MAX/COUNT(DISTINCT))
        self.aggs = [(col, _FUNC_CODES[func], args[0] if args else -1, args[1] if len(args) > 1 else -1,
                      _Plan([(args[0] if func == "count_distinct" else col, False)]))
                     for col, func, args in spec.aggregates]
        used = [c for c in spec.group_by] + [c for col, _, args in spec.aggregates for c in (col, *args)]
        self.need_cols = max(used) + 1 if used else 0
        self.bufs = [[] for _ in range(nshards)]
        self.keys = [[] for _ in range(nshards)]
        self.pos = <Py_ssize_t*>malloc(nshards * sizeof(Py_ssize_t))
        self.finished = <unsigned char*>malloc(nshards)
        self.waiting = <unsigned char*>malloc(nshards)
        self.heap = <int*>malloc(nshards * sizeof(int))
        self.headkey = <PyObject**>malloc(nshards * sizeof(PyObject*))
        if self.pos == NULL or self.finished == NULL or self.waiting == NULL or self.heap == NULL \
                or self.headkey == NULL:
            raise MemoryError()
        for s in range(nshards):
            self.pos[s] = 0
            self.finished[s] = 0
            self.waiting[s] = 1 if self.merge_plan is not None else 0
            self.headkey[s] = NULL
        self.nwaiting = nshards if self.merge_plan is not None else 0
        self.heapn = 0
        self.output = []
        self.skip = spec.offset
        self.left = -1 if spec.limit is None else spec.limit
        self._done = spec.limit == 0
        self.flushed = False
        self.cur_key = None
        self.cur = None
        self.groups = {}
        self.seen = set()
        self.sorted_rows = []

    def __dealloc__(self):
        free(self.pos)
        free(self.finished)
        free(self.waiting)
        free(self.heap)
        free(self.headkey)

    # -------------------------------------------------------------------------------------------- public API

    @property
    def done(self):
        return self._done

    def wants(self, int shard):
        if shard < 0 or shard >= self.nshards:
            raise IndexError(shard)
        return (not self._done and not self.finished[shard]
                and PyList_GET_SIZE(self.bufs[shard]) - self.pos[shard] < self.max_buffer)

    def feed(self, int shard, list rows):
        cdef list keys
        cdef _Plan plan = self.merge_plan
        if shard < 0 or shard >= self.nshards:
            raise IndexError(shard)
        if self._done or not rows:
            return
        if self.finished[shard]:
            raise ValueError(f"shard {shard} already finished")
        buf = <list>self.bufs[shard]
        buf.extend(rows)
        if plan is not None:
            keys = <list>self.keys[shard]
            for row in rows:
                keys.append(self.cin.key_row(<bytes?>row, plan))
            if self.waiting[shard]:
                self.waiting[shard] = 0
                self.nwaiting -= 1
                self.headkey[shard] = PyList_GET_ITEM(keys, self.pos[shard])
                self.heap[self.heapn] = shard
                self.heapn += 1
                self.sift_up(self.heapn - 1)

    def finish(self, int shard):
        if shard < 0 or shard >= self.nshards:
            raise IndexError(shard)
        self.finished[shard] = 1
        if self.waiting[shard]:
            self.waiting[shard] = 0
            self.nwaiting -= 1

    def take(self):
        cdef int s
        cdef Py_ssize_t i
        cdef list buf
        if not self._done:
            if self.merge_plan is not None:
                self.run_merge()
            else:
                for s in range(self.nshards):
                    buf = <list>self.bufs[s]
                    for i in range(self.pos[s], PyList_GET_SIZE(buf)):
                        if self._done:
                            break
                        self.push(<bytes?>PyList_GET_ITEM(buf, i))
                    self.bufs[s] = []
                    self.pos[s] = 0
            if not self._done and not self.flushed and self.nwaiting == 0:
                for s in range(self.nshards):
                    if not self.finished[s]:
                        break
                else:
                    self.flush()
        out = self.output
        self.output = []
        return out

    # -------------------------------------------------------------------------------------------- k-way merge

    cdef inline bint less(self, int a, int b) noexcept:
        cdef PyObject* ka = self.headkey[a]
        cdef PyObject* kb = self.headkey[b]
        cdef Py_ssize_t la = PyBytes_GET_SIZE(<object>ka)
        cdef Py_ssize_t lb = PyBytes_GET_SIZE(<object>kb)
        cdef int r = memcmp(PyBytes_AS_STRING(<object>ka), PyBytes_AS_STRING(<object>kb), la if la < lb else lb)
        if r != 0:
            return r < 0
        if la != lb:
            return la < lb
        return a < b      # ties: lower shard index first (stable)

    cdef void sift_down(self, int i) noexcept:
        cdef int n = self.heapn
        cdef int* h = self.heap
        cdef int c, item = h[i]
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and self.less(h[c + 1], h[c]):
                c += 1
            if not self.less(h[c], item):
                break
            h[i] = h[c]
            i = c
        h[i] = item

    cdef void sift_up(self, int i) noexcept:
        cdef int* h = self.heap
        cdef int p, item = h[i]
        while i > 0:
            p = (i - 1) >> 1
            if not self.less(item, h[p]):
                break
            h[i] = h[p]
            i = p
        h[i] = item

    cdef int run_merge(self) except -1:
        cdef int s
        cdef Py_ssize_t p
        cdef list buf, keys
        while self.heapn > 0 and self.nwaiting == 0 and not self._done:
            s = self.heap[0]
            buf = <list>self.bufs[s]
            keys = <list>self.keys[s]
            p = self.pos[s]
            row = <bytes>PyList_GET_ITEM(buf, p)
            p += 1
            if p < PyList_GET_SIZE(buf):
                self.pos[s] = p
                self.headkey[s] = PyList_GET_ITEM(keys, p)
                self.sift_down(0)
            else:
                # Shard drained: leave the heap; unless finished, nothing more may be emitted until it is fed.
                self.heapn -= 1
                if self.heapn > 0:
                    self.heap[0] = self.heap[self.heapn]
                    self.sift_down(0)
                self.headkey[s] = NULL
                self.bufs[s] = []
                self.keys[s] = []
                self.pos[s] = 0
                if not self.finished[s]:
                    self.waiting[s] = 1
                    self.nwaiting += 1
            if p > 4096 and p * 2 > PyList_GET_SIZE(buf) and self.headkey[s] != NULL:
                # Compact a long-lived buffer so consumed rows are freed.
                del buf[:p]
                del keys[:p]
                self.pos[s] = 0
                self.headkey[s] = PyList_GET_ITEM(keys, 0)
            self.push(row)
        return 0

    # -------------------------------------------------------------------------------------------- pipeline

    cdef int push(self, bytes row) except -1:
        cdef const unsigned char* p
        cdef Py_ssize_t end
        cdef list fields
        if self.simple:
            # Plain concat / ORDER BY merge: OFFSET/LIMIT and derived-column stripping only.
            if self.skip > 0:
                self.skip -= 1
                return 0
            if self.vis < self.ncols:
                if self.binary:
                    row = self.strip_binary(row)
                else:
                    p = <const unsigned char*>PyBytes_AS_STRING(row)
                    end = self.cin.locate(p, PyBytes_GET_SIZE(row), self.vis)
                    row = row[:end]
            self.output.append(row)
            if self.left > 0:
                self.left -= 1
                if self.left == 0:
                    self._done = True
                    self.release()
            return 0
        if not self.grouped:
            return self.post(self.cin.split(row), row)
        p = <const unsigned char*>PyBytes_AS_STRING(row)
        self.cin.locate(p, PyBytes_GET_SIZE(row), self.need_cols)
        gkey = self.cin.key_located(p, self.group_plan)
        if self.stream_group:
            if self.cur is None or gkey != self.cur_key:
                if self.cur is not None:
                    self.post(self.finish_group(self.cur), None)
                    # finishing split another row through cin: locate this one again
                    self.cin.locate(p, PyBytes_GET_SIZE(row), self.need_cols)
                self.cur_key = gkey
                self.cur = self.new_group(row)
            self.accumulate(self.cur, p)
        else:
            g = self.groups.get(gkey)
            if g is None:
                g = self.groups[gkey] = self.new_group(row)
            self.accumulate(<list>g, p)
        return 0

    cdef bytes strip_binary(self, bytes row):
        """Binary row cut to the visible columns: same NULL bits (offset 2), shorter bitmap, values prefix."""
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(row)
        cdef Py_ssize_t end = self.cin.locate(p, PyBytes_GET_SIZE(row), self.vis)
        cdef Py_ssize_t onb = (self.ncols + 9) // 8
        cdef Py_ssize_t nb = (self.vis + 9) // 8
        cdef int bit
        out = PyBytes_FromStringAndSize(NULL, 1 + nb + end - 1 - onb)
        cdef unsigned char* o = <unsigned char*>PyBytes_AS_STRING(out)
        memcpy(o, p, 1 + nb)
        for bit in range(self.vis + 2, nb * 8):      # clear the NULL bits of the dropped columns
            o[1 + (bit >> 3)] &= ~(1 << (bit & 7))
        memcpy(o + 1 + nb, p + 1 + onb, end - 1 - onb)
        return out

    cdef list new_group(self, object row):
        # [first row of the group (its non-aggregate columns are output), aggregate accumulators]
        cdef list accs = []
        for _, code, _, _, _ in self.aggs:
            if code == F_COUNT:
                accs.append(0)
            elif code == F_CDIST:
                accs.append(set())
            elif code == F_AVG:
                accs.append([None, 0])
            else:
                accs.append(None)
        return [row, accs]

    cdef int accumulate(self, list g, const unsigned char* p) except -1:
        """Fold the row last located by cin into the group's accumulators."""
        cdef list accs = g[1]
        cdef _ColInfo ci = self.cin
        cdef int i = 0
        cdef int code, col, a0, a1
        for col, code, a0, a1, kplan in self.aggs:
            if code == F_COUNT:
                v = ci.num_at(p, col)
                if v is not None:
                    accs[i] += v if type(v) is int else int(v)
            elif code == F_SUM:
                v = ci.num_at(p, col)
                a = accs[i]
                if type(v) is int and type(a) is int:
                    accs[i] = a + v
                elif v is not None:
                    accs[i] = add_values(a, v)
            elif code == F_MIN or code == F_MAX:
                if ci.vl[col] >= 0:
                    k = ci.key_located(p, <_Plan>kplan)
                    cur = accs[i]
                    if cur is None or (k < cur[0] if code == F_MIN else k > cur[0]):
                        accs[i] = (k, PyBytes_FromStringAndSize(<char*>p + ci.vb[col], ci.vl[col]))
            elif code == F_AVG:
                a = accs[i]
                a[0] = add_values(a[0], ci.num_at(p, a0))
                v = ci.num_at(p, a1)
                if v is not None:
                    a[1] += int(v)
            else:   # COUNT(DISTINCT): collation-distinct non-NULL values of the value column
                if ci.vl[a0] >= 0:
                    (<set>accs[i]).add(ci.key_located(p, <_Plan>kplan))
            i += 1
        return 0

    cdef list finish_group(self, list g):
        cdef list fields = [None] * self.ncols if g[0] is None else self.cin.split(<bytes>g[0])
        cdef list accs = g[1]
        cdef list out = self.output_columns
        cdef bint b = self.binary
        cdef int i = 0
        cdef int code
        for col, code, _, _, _ in self.aggs:
            a = accs[i]
            if code == F_COUNT or code == F_SUM:
                fields[col] = encode_value(a, out[col], b)
            elif code == F_MIN or code == F_MAX:
                fields[col] = None if a is None else a[1]
            elif code == F_AVG:
                fields[col] = encode_value(avg_value(a[0], a[1], out[col]), out[col], b)
            else:
                fields[col] = encode_value(len(a), out[col], b)
            i += 1
        return fields

    cdef int post(self, list fields, object row) except -1:
        spec = self.spec
        if spec.having is not None:
            vals = tuple([decode_value(f, c, self.binary) for f, c in zip(fields, self.output_columns)])
            if not spec.having(vals):
                return 0
        if spec.distinct:
            dk = self.cout.key_fields(fields, self.distinct_plan)
            if dk in self.seen:
                return 0
            self.seen.add(dk)
        if self.final_sort:
            self.sorted_rows.append((self.cout.key_fields(fields, self.order_plan), len(self.sorted_rows), fields))
            return 0
        return self.emit(fields, row)

    cdef int emit(self, list fields, object row) except -1:
        if self.skip > 0:
            self.skip -= 1
            return 0
        if row is None or self.vis < self.ncols:
            vf = fields[:self.vis]
            if self.binary:
                row = join_binary_row(vf, [self.cout.wire[i] for i in range(self.vis)])
            else:
                row = join_text(vf)
        self.output.append(row)
        if self.left > 0:
            self.left -= 1
            if self.left == 0:
                self._done = True
                self.release()
        return 0

    cdef int flush(self) except -1:
        self.flushed = True
        if self.grouped:
            if self.stream_group:
                if self.cur is not None:
                    self.post(self.finish_group(self.cur), None)
                    self.cur = None
            else:
                if not self.spec.group_by and not self.groups:
                    # Aggregates without GROUP BY: exactly one row even over no rows (COUNT 0, SUM NULL).
                    self.groups[b""] = self.new_group(None)
                for g in self.groups.values():
                    self.post(self.finish_group(<list>g), None)
                    if self._done:
                        break
                self.groups = {}
        if self.final_sort and not self._done:
            self.sorted_rows.sort()
            for t in self.sorted_rows:
                self.emit(<list>(<tuple>t)[2], None)
                if self._done:
                    break
        self._done = True
        self.release()
        return 0

    cdef int release(self) except -1:
        cdef int s
        for s in range(self.nshards):
            self.headkey[s] = NULL
            self.pos[s] = 0
        self.heapn = 0
        self.bufs = [[] for _ in range(self.nshards)]
        self.keys = [[] for _ in range(self.nshards)]
        self.groups = {}
        self.seen = set()
        self.sorted_rows = []
        return 0
