# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Text-protocol rows -> binary-protocol rows, one pass in C (twin: ddm._py.rowconv).

    text_rows_to_binary(rows, kinds, args, generic) -> list[bytes]

kinds[i] / args[i] per column: CONV_COPY (args unused): the field goes over as it came, length prefix and all, which
is the binary protocol's form for every length-encoded type; CONV_INT (args = width 1/2/4/8): the decimal text
becomes a little-endian integer of that width (unsigned values past the signed range wrap to the same bytes, as
MySQL's binary protocol sends them); CONV_GENERIC (args = WIRE_LENENC / WIRE_FIXED / WIRE_TEMPORAL): generic(i, text)
returns the field's bytes and the wire says which prefix they get. A binary row is 0x00, the NULL bitmap with a
2-bit offset, then the non-NULL fields. Malformed rows (truncated, non-digits in an integer) raise ValueError.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memset

from ddm_core.packets cimport read_lenenc


cdef struct Buf:
    char* p
    Py_ssize_t n
    Py_ssize_t cap


cdef int _reserve(Buf* b, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap
    cdef char* p
    if b.n + more <= b.cap:
        return 0
    cap = max(b.cap * 2, b.n + more, 256)
    p = <char*>realloc(b.p, cap)
    if p == NULL:
        raise MemoryError()
    b.p = p
    b.cap = cap
    return 0


cdef int _put_lenenc(Buf* b, unsigned long long v) except -1:
    cdef unsigned char* q
    cdef int i
    _reserve(b, 9)
    q = <unsigned char*>b.p + b.n
    if v < 0xFB:
        q[0] = <unsigned char>v
        b.n += 1
    elif v < 0x10000:
        q[0] = 0xFC
        q[1] = v & 0xFF
        q[2] = (v >> 8) & 0xFF
        b.n += 3
    elif v < 0x1000000:
        q[0] = 0xFD
        q[1] = v & 0xFF
        q[2] = (v >> 8) & 0xFF
        q[3] = (v >> 16) & 0xFF
        b.n += 4
    else:
        q[0] = 0xFE
        for i in range(8):
            q[1 + i] = (v >> (8 * i)) & 0xFF
        b.n += 9
    return 0


cdef int _put_int(Buf* b, const unsigned char* s, Py_ssize_t n, int width) except -1:
    cdef Py_ssize_t i = 0
    cdef bint neg = False
    cdef unsigned long long v = 0
    cdef int k
    cdef unsigned char* q
    if n > 0 and (s[0] == 45 or s[0] == 43):  # '-' / '+'
        neg = s[0] == 45
        i = 1
    if i >= n or n - i > 20:
        raise ValueError("bad integer in a text row")
    while i < n:
        if s[i] < 48 or s[i] > 57:
            raise ValueError("bad integer in a text row")
        v = v * 10 + (s[i] - 48)
        i += 1
    if neg:
        v = (~v) + 1
    _reserve(b, width)
    q = <unsigned char*>b.p + b.n
    for k in range(width):
        q[k] = (v >> (8 * k)) & 0xFF
    b.n += width
    return 0


cpdef list text_rows_to_binary(list rows, tuple kinds, tuple args, object generic):
    cdef Py_ssize_t ncols = len(kinds)
    cdef Py_ssize_t nbitmap = (ncols + 9) // 8
    cdef list out = []
    cdef Buf b
    cdef bytes row, f
    cdef const unsigned char* p
    cdef Py_ssize_t n, pos, start, ln, bm, fl
    cdef long long length
    cdef int kind, i, bit
    cdef int* kind_arr
    cdef int* arg_arr
    b.p = NULL
    b.n = 0
    b.cap = 0
    kind_arr = <int*>realloc(NULL, (ncols + 1) * sizeof(int))
    arg_arr = <int*>realloc(NULL, (ncols + 1) * sizeof(int))
    if kind_arr == NULL or arg_arr == NULL:
        free(kind_arr)
        free(arg_arr)
        raise MemoryError()
    try:
        for i in range(ncols):
            kind_arr[i] = kinds[i]
            arg_arr[i] = args[i] if args[i] is not None else 0
        for row in rows:
            p = <const unsigned char*>PyBytes_AS_STRING(row)
            n = PyBytes_GET_SIZE(row)
            b.n = 0
            _reserve(&b, 1 + nbitmap + n + 8 * ncols)
            b.p[0] = 0
            memset(b.p + 1, 0, nbitmap)
            bm = 1
            b.n = 1 + nbitmap
            pos = 0
            for i in range(ncols):
                start = pos
                length = read_lenenc(p, n, &pos)
                if length == -1:  # NULL
                    bit = i + 2
                    b.p[bm + (bit >> 3)] |= <char>(1 << (bit & 7))
                    continue
                if length < 0 or pos + length > n:
                    raise ValueError("truncated text row")
                ln = <Py_ssize_t>length
                kind = kind_arr[i]
                if kind == CONV_COPY:
                    _reserve(&b, pos + ln - start)
                    memcpy(b.p + b.n, p + start, pos + ln - start)
                    b.n += pos + ln - start
                elif kind == CONV_INT:
                    _put_int(&b, p + pos, ln, arg_arr[i])
                else:
                    f = generic(i, row[pos:pos + ln])
                    fl = PyBytes_GET_SIZE(f)
                    if arg_arr[i] == WIRE_LENENC:
                        _put_lenenc(&b, fl)
                    elif arg_arr[i] == WIRE_TEMPORAL:
                        _reserve(&b, 1)
                        b.p[b.n] = <char>fl
                        b.n += 1
                    _reserve(&b, fl)
                    memcpy(b.p + b.n, PyBytes_AS_STRING(f), fl)
                    b.n += fl
                pos += ln
            out.append(PyBytes_FromStringAndSize(b.p, b.n))
    finally:
        free(b.p)
        free(kind_arr)
        free(arg_arr)
    return out


COPY = CONV_COPY
INT = CONV_INT
GENERIC = CONV_GENERIC
LENENC = WIRE_LENENC
FIXED = WIRE_FIXED
TEMPORAL = WIRE_TEMPORAL
