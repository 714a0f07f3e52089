# cython: language_level=3, wraparound=False, cdivision=True
"""MySQL lexer and statement digest for every COM_QUERY (pure-Python twin: ddm._py.lexer).

One pass over the bytes: token spans go to a C array, then the digest is written into a C buffer from them.
Literal values are only materialised when ``slot_value(k)`` asks. Assumes the default sql_mode (``"`` quotes
strings, backslash escapes on) and an ASCII-compatible connection charset (utf8mb4, latin1, binary), where a
backslash or quote byte is never part of a multi-byte character; other bytes >= 0x80 pass through.

Digest canonical form (stable: it keys the plan cache):
- literals (numbers, strings, hex/bit) and ``?`` markers become ``?``; adjacent string literals (``'a' 'b'``,
  MySQL concatenates them) are one literal, and a charset introducer (``_utf8mb4'x'``, ``N'x'``) is part of it;
- keywords are upper-cased, identifiers, backquoted identifiers and variables are kept as written;
- comments vanish, executable ``/*! */`` / ``/*M! */`` comments and ``/*+ */`` hints are kept verbatim;
- tokens are separated by one space, except: none after ``(``, none before ``)``, ``,`` and ``;``, qualified
  names are joined (``db.t``, ``t.c``, ``t.*``: a ``.`` after a name, and a name or ``*`` after such a ``.``),
  and a ``(`` right after a word keeps the original choice (MySQL resolves ``COUNT(`` and ``COUNT (``
  differently unless IGNORE_SPACE is set, so whitespace there is significant);
- trailing ``;`` are dropped.

The digest lexes back to the same token structure (count, and kinds up to literal -> ``?`` and keyword case), so
token indexes are the same for every statement of one digest (plans name tokens by index).
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_FromLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memchr, memcmp, memcpy

from decimal import Decimal


class _Param:
    """Value of a prepared-statement ``?`` slot (the value comes with COM_STMT_EXECUTE)."""

    __slots__ = ()

    def __repr__(self):
        return "PARAM"


PARAM = _Param()

# Reserved words of MySQL 8 that matter to a proxy, plus the non-reserved words that start or shape
# statements (BEGIN, COMMIT, START TRANSACTION, ...). Types and function names are identifiers.
KEYWORDS = tuple(sorted(set(b"""
    ADD ALL ALTER ANALYZE AND AS ASC BEGIN BETWEEN BINARY BOTH BY CALL CASCADE CASE CHANGE CHARACTER CHECK
    COLLATE COLUMN COMMIT CONSTRAINT CONVERT CREATE CROSS CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP
    CURRENT_USER DATABASE DATABASES DEALLOCATE DEFAULT DELAYED DELETE DESC DESCRIBE DISTINCT DISTINCTROW DIV DO
    EXCEPT FLUSH INTERSECT LOAD PROCEDURE PURGE RECURSIVE RESET WINDOW
    DROP DUAL DUPLICATE EACH ELSE ELSEIF END ESCAPE EXECUTE EXISTS EXPLAIN FALSE FETCH FOR FORCE FOREIGN FROM
    FULLTEXT GRANT GROUP HANDLER HAVING HIGH_PRIORITY IF IGNORE IN INDEX INNER INSERT INTERVAL INTO IS ISOLATION
    JOIN KEY KEYS KILL LATERAL LEADING LEFT LIKE LIMIT LOCK LOW_PRIORITY MATCH MOD MODE NAMES NATURAL NOT NOWAIT
    NULL OFFSET ON OPTIMIZE OR ORDER OUTER PARTITION PREPARE PRIMARY QUICK READ REFERENCES REGEXP RELEASE RENAME
    REPLACE RESTRICT REVOKE RIGHT RLIKE ROLLBACK SAVEPOINT SCHEMA SCHEMAS SELECT SEPARATOR SET SHARE SHOW SKIP
    SPATIAL SQL_BIG_RESULT SQL_CALC_FOUND_ROWS SQL_SMALL_RESULT START STRAIGHT_JOIN TABLE TEMPORARY THEN TO
    TRAILING TRANSACTION TRIGGER TRUE TRUNCATE UNION UNIQUE UNLOCK UPDATE USE USING VALUE VALUES VIEW WHEN WHERE
    WITH WORK WRITE XA XOR
    """.split())))

# Charset names that make ``_name`` an introducer (``_utf8mb4'x'``, ``_binary 0x41``); any other ``_word`` is
# an identifier, as in MySQL's lexer.
CHARSETS = frozenset(b"""
    armscii8 ascii big5 binary cp1250 cp1251 cp1256 cp1257 cp850 cp852 cp866 cp932 dec8 eucjpms euckr gb18030
    gb2312 gbk geostd8 greek hebrew hp8 keybcs2 koi8r koi8u latin1 latin2 latin5 latin7 macce macroman sjis swe7
    tis620 ucs2 ujis utf16 utf16le utf32 utf8 utf8mb3 utf8mb4
    """.split())

# --- character classes and keyword table (filled once at import) ---

cdef enum:
    C_IDENT = 1     # letters, digits, _ $ and every byte >= 0x80
    C_SPACE = 2
    C_DIGIT = 4
    C_HEX = 8
    C_BIT = 16
    KW_TABLE = 1024  # open-addressing hash table of keyword numbers
    KW_MAX = 32      # longest keyword
    CS_MAX = 16      # longest charset name

cdef unsigned char CC[256]
cdef short KW_SLOT[KW_TABLE]
cdef const unsigned char* KW_PTR[512]
cdef int KW_LEN[512]
cdef int NKW = 0
cdef const unsigned char* CS_PTR[64]
cdef int CS_LEN[64]
cdef int NCS = 0
cdef tuple _KW_BYTES = KEYWORDS
cdef tuple _CS_BYTES = tuple(sorted(CHARSETS))


cdef inline unsigned int kw_hash(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef unsigned int h = 2166136261u  # FNV-1a
    cdef Py_ssize_t k
    for k in range(n):
        h = (h ^ s[k]) * 16777619u
    return h


cdef void _init_tables():
    global NKW, NCS
    cdef int c, k
    cdef unsigned int h
    cdef bytes w
    for c in range(256):
        CC[c] = 0
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 95 or c == 36 or c >= 128:
            CC[c] |= C_IDENT
        if 48 <= c <= 57:
            CC[c] |= C_DIGIT | C_HEX
        if (65 <= c <= 70) or (97 <= c <= 102):
            CC[c] |= C_HEX
        if c == 48 or c == 49:
            CC[c] |= C_BIT
        if c == 32 or (9 <= c <= 13):
            CC[c] |= C_SPACE
    for k in range(KW_TABLE):
        KW_SLOT[k] = -1
    for k, w in enumerate(_KW_BYTES):
        KW_PTR[k] = <const unsigned char*>PyBytes_AS_STRING(w)
        KW_LEN[k] = len(w)
        h = kw_hash(KW_PTR[k], KW_LEN[k]) & (KW_TABLE - 1)
        while KW_SLOT[h] >= 0:
            h = (h + 1) & (KW_TABLE - 1)
        KW_SLOT[h] = k
    NKW = len(_KW_BYTES)
    for k, w in enumerate(_CS_BYTES):
        CS_PTR[k] = <const unsigned char*>PyBytes_AS_STRING(w)
        CS_LEN[k] = len(w)
    NCS = len(_CS_BYTES)


assert len(KEYWORDS) <= 512 and max(map(len, KEYWORDS)) <= KW_MAX and len(CHARSETS) <= 64
_init_tables()


cdef inline int kw_lookup(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Keyword number of the word s[:n] (any case), -1 when it is not a keyword."""
    cdef unsigned char buf[KW_MAX]
    cdef unsigned char c
    cdef unsigned int h = 2166136261u
    cdef Py_ssize_t k
    cdef int slot, idx
    if n < 2 or n > KW_MAX:
        return -1
    for k in range(n):
        c = s[k]
        if 97 <= c <= 122:
            c -= 32
        elif c >= 128:
            return -1
        buf[k] = c
        h = (h ^ c) * 16777619u
    slot = h & (KW_TABLE - 1)
    while True:
        idx = KW_SLOT[slot]
        if idx < 0:
            return -1
        if KW_LEN[idx] == n and memcmp(KW_PTR[idx], buf, n) == 0:
            return idx
        slot = (slot + 1) & (KW_TABLE - 1)


cdef inline bint is_charset(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef unsigned char buf[CS_MAX]
    cdef unsigned char c
    cdef Py_ssize_t k
    cdef int j
    if n < 1 or n > CS_MAX:
        return False
    for k in range(n):
        c = s[k]
        if 65 <= c <= 90:
            c += 32
        buf[k] = c
    for j in range(NCS):
        if CS_LEN[j] == n and memcmp(CS_PTR[j], buf, n) == 0:
            return True
    return False


# --- scanners: each returns the end of what it scanned (-1: unterminated / not that kind of token) ---

cdef inline Py_ssize_t scan_word(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    while i < n and CC[p[i]] & C_IDENT:
        i += 1
    return i


cdef inline Py_ssize_t scan_digits(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    while i < n and CC[p[i]] & C_DIGIT:
        i += 1
    return i


cdef Py_ssize_t scan_quoted(const unsigned char* p, Py_ssize_t n, Py_ssize_t i, bint backslash) noexcept nogil:
    # A doubled quote stands for itself; backslash escapes apply to strings, not to backquoted names.
    # memchr finds the next quote, then a backslash before it (both vectorised in libc); the quote position is
    # reused until passed, so the scan stays linear however many escapes there are.
    cdef unsigned char q = p[i]
    cdef const unsigned char* r
    cdef Py_ssize_t qpos = -1, b
    i += 1
    while i < n:
        if qpos < i:
            r = <const unsigned char*>memchr(p + i, q, n - i)
            if r == NULL:
                return -1
            qpos = r - p
        if backslash and qpos > i:
            r = <const unsigned char*>memchr(p + i, 92, qpos - i)
            if r != NULL:
                i = (r - p) + 2  # the escaped byte may be the quote itself
                continue
        if qpos + 1 < n and p[qpos + 1] == q:
            i = qpos + 2  # doubled quote
            continue
        return qpos + 1
    return -1


cdef inline bint is_dashdash(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    # "-- " starts a comment only when followed by whitespace/control char (or the end): 1--1 is 1 - -1.
    return (i + 1 < n and p[i] == 45 and p[i + 1] == 45
            and (i + 2 >= n or p[i + 2] <= 32 or p[i + 2] == 127))


cdef inline bint is_exec_comment(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    # p[i:i+2] == "/*": /*! (MySQL), /*M! (MariaDB) executable comments and /*+ optimizer hints
    if i + 2 < n and (p[i + 2] == 33 or p[i + 2] == 43):
        return True
    return i + 3 < n and p[i + 2] == 77 and p[i + 3] == 33


cdef inline Py_ssize_t find_newline(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    cdef const void* r = memchr(p + i, 10, n - i) if i < n else NULL
    return n if r == NULL else <const unsigned char*>r - p


cdef inline Py_ssize_t find_comment_end(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    # index of the "*/" at or after i, -1 when none
    while i + 1 < n:
        if p[i] == 42 and p[i + 1] == 47:
            return i
        i += 1
    return -1


cdef Py_ssize_t skip_space(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    # whitespace and plain comments (not executable ones, not an unterminated one)
    cdef unsigned char c
    cdef Py_ssize_t k
    while i < n:
        c = p[i]
        if CC[c] & C_SPACE:
            i += 1
        elif c == 35 or is_dashdash(p, n, i):
            i = find_newline(p, n, i)
        elif c == 47 and i + 1 < n and p[i + 1] == 42 and not is_exec_comment(p, n, i):
            k = find_comment_end(p, n, i + 2)
            if k < 0:
                return i
            i = k + 2
        else:
            break
    return i


cdef Py_ssize_t scan_string(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    # the literal at p[i] and the adjacent ones MySQL concatenates to it ('a' 'b' == 'ab', also across comments)
    cdef Py_ssize_t k = scan_quoted(p, n, i, True)
    cdef Py_ssize_t m
    while k >= 0:
        m = skip_space(p, n, k)
        if m < n and (p[m] == 39 or p[m] == 34):
            k = scan_quoted(p, n, m, True)
        else:
            break
    return k


cdef Py_ssize_t scan_hex_number(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    # 0x.. / 0b.. at p[i] == '0'; -1 when it is an identifier start instead (MySQL reads 0x1g and 0x as
    # identifiers, and only a lower-case x/b makes a hex/bit number)
    cdef unsigned char cls
    cdef Py_ssize_t k
    if i + 1 >= n:
        return -1
    if p[i + 1] == 120:
        cls = C_HEX
    elif p[i + 1] == 98:
        cls = C_BIT
    else:
        return -1
    k = i + 2
    while k < n and CC[p[k]] & cls:
        k += 1
    if k == i + 2 or (k < n and CC[p[k]] & C_IDENT):
        return -1
    return k


cdef Py_ssize_t scan_quoted_hex(const unsigned char* p, Py_ssize_t n, Py_ssize_t i, int* kind) noexcept nogil:
    # X'..' / B'..' at p[i]: only hex (even count) or bit digits; anything else is an ERROR up to the next quote
    cdef bint hexa = p[i] == 120 or p[i] == 88
    cdef unsigned char cls = C_HEX if hexa else C_BIT
    cdef Py_ssize_t k = i + 2
    while k < n and CC[p[k]] & cls:
        k += 1
    if k < n and p[k] == 39 and (not hexa or (k - i - 2) % 2 == 0):
        kind[0] = T_HEX
        return k + 1
    kind[0] = T_ERROR
    while k < n and p[k] != 39:
        k += 1
    return n if k >= n else k + 1


cdef inline Py_ssize_t scan_exponent(const unsigned char* p, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    # end of an exponent e5 / E-3 at p[k], or k when there is none
    cdef Py_ssize_t m
    if k < n and (p[k] == 101 or p[k] == 69):
        m = k + 1
        if m < n and (p[m] == 43 or p[m] == 45):
            m += 1
        if m < n and CC[p[m]] & C_DIGIT:
            return scan_digits(p, n, m)
    return k


cdef Py_ssize_t scan_introduced(const unsigned char* p, Py_ssize_t n, Py_ssize_t k, int* kind) noexcept nogil:
    # _charset (ending at k) followed, whitespace allowed, by a string or hex/bit literal: that literal, the
    # introducer included. Otherwise the word stays an identifier.
    cdef Py_ssize_t m = k
    cdef Py_ssize_t e
    cdef unsigned char c
    while m < n and CC[p[m]] & C_SPACE:
        m += 1
    if m >= n:
        return k
    c = p[m]
    if c == 39 or c == 34:
        e = scan_string(p, n, m)
        if e < 0:
            kind[0] = T_ERROR
            return n
        kind[0] = T_STRING
        return e
    if (c == 120 or c == 88 or c == 98 or c == 66) and m + 1 < n and p[m + 1] == 39:
        return scan_quoted_hex(p, n, m, kind)
    if c == 48:
        e = scan_hex_number(p, n, m)
        if e >= 0:
            kind[0] = T_HEX
            return e
    return k


cdef Py_ssize_t scan_variable(const unsigned char* p, Py_ssize_t n, Py_ssize_t i, int* kind) noexcept nogil:
    # @var, @var.x, @'quoted', @`quoted`, @@sys_var, @@session.sys_var; a lone @ is an operator
    cdef int nxt = p[i + 1] if i + 1 < n else -1
    cdef Py_ssize_t k
    if nxt == 64:
        k = i + 2
        if k < n and CC[p[k]] & C_IDENT:
            k = scan_word(p, n, k)
            while k + 1 < n and p[k] == 46 and CC[p[k + 1]] & C_IDENT:
                k = scan_word(p, n, k + 1)
            kind[0] = T_VARIABLE
            return k
        kind[0] = T_OPERATOR
        return i + 1
    if nxt == 39 or nxt == 34 or nxt == 96:
        k = scan_quoted(p, n, i + 1, nxt != 96)
        if k < 0:
            kind[0] = T_ERROR
            return n
        kind[0] = T_VARIABLE
        return k
    if nxt >= 0 and (CC[nxt] & C_IDENT or nxt == 46):
        k = i + 1
        while k < n and (CC[p[k]] & C_IDENT or p[k] == 46):
            k += 1
        kind[0] = T_VARIABLE
        return k
    kind[0] = T_OPERATOR
    return i + 1


cdef inline Py_ssize_t scan_operator(const unsigned char* p, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    # end of the operator at p[i], i when p[i] starts none
    cdef unsigned char c = p[i]
    cdef int c1 = p[i + 1] if i + 1 < n else -1
    cdef int c2 = p[i + 2] if i + 2 < n else -1
    if c == 60:  # <
        if c1 == 61 and c2 == 62:
            return i + 3  # <=>
        if c1 == 61 or c1 == 62 or c1 == 60:
            return i + 2  # <= <> <<
        return i + 1
    if c == 45:  # -
        if c1 == 62:
            return i + 3 if c2 == 62 else i + 2  # ->> ->
        return i + 1
    if c == 62:  # >
        return i + 2 if c1 == 61 or c1 == 62 else i + 1  # >= >>
    if c == 33 or c == 58:  # ! :
        return i + 2 if c1 == 61 else i + 1  # != :=
    if c == 124 or c == 38:  # | &
        return i + 2 if c1 == c else i + 1  # || &&
    if c == 61 or c == 43 or c == 42 or c == 47 or c == 37 or c == 94 or c == 126 or c == 64:
        return i + 1  # = + * / % ^ ~ @
    return i


# --- Lexed ---

@cython.freelist(16)
@cython.final
cdef class Lexed:
    """Tokens, digest and literal slots of one SQL text. Read-only; built by lex()."""

    def __cinit__(self):
        self.toks = self._tok_inline
        self._tok_cap = INLINE_TOKENS
        self.slot_tok = self._slot_inline
        self._slot_cap = INLINE_SLOTS

    def __dealloc__(self):
        if self.toks != self._tok_inline:
            PyMem_Free(self.toks)
        if self.slot_tok != self._slot_inline:
            PyMem_Free(self.slot_tok)

    cdef int _push(self, int kind, Py_ssize_t start, Py_ssize_t end, int kw) except -1:
        cdef LexToken* nt
        cdef int* ns
        cdef LexToken* t
        if self.ntokens == self._tok_cap:
            if self.toks == self._tok_inline:
                nt = <LexToken*>PyMem_Malloc(2 * self._tok_cap * sizeof(LexToken))
                if nt != NULL:
                    memcpy(nt, self._tok_inline, self._tok_cap * sizeof(LexToken))
            else:
                nt = <LexToken*>PyMem_Realloc(self.toks, 2 * self._tok_cap * sizeof(LexToken))
            if nt == NULL:
                raise MemoryError()
            self.toks = nt
            self._tok_cap *= 2
        t = &self.toks[self.ntokens]
        t.kind = kind
        t.start = start
        t.end = end
        t.kw = kw
        if kind == T_NUMBER or kind == T_STRING or kind == T_HEX or kind == T_PARAM:
            if self.nslots == self._slot_cap:
                if self.slot_tok == self._slot_inline:
                    ns = <int*>PyMem_Malloc(2 * self._slot_cap * sizeof(int))
                    if ns != NULL:
                        memcpy(ns, self._slot_inline, self._slot_cap * sizeof(int))
                else:
                    ns = <int*>PyMem_Realloc(self.slot_tok, 2 * self._slot_cap * sizeof(int))
                if ns == NULL:
                    raise MemoryError()
                self.slot_tok = ns
                self._slot_cap *= 2
            self.slot_tok[self.nslots] = self.ntokens
            self.nslots += 1
        self.ntokens += 1
        return 0

    cpdef int kind(self, int i) except -1:
        if i < 0 or i >= self.ntokens:
            raise IndexError("token index out of range")
        return self.toks[i].kind

    cpdef Py_ssize_t start(self, int i) except -1:
        if i < 0 or i >= self.ntokens:
            raise IndexError("token index out of range")
        return self.toks[i].start

    cpdef Py_ssize_t end(self, int i) except -1:
        if i < 0 or i >= self.ntokens:
            raise IndexError("token index out of range")
        return self.toks[i].end

    cpdef bytes text(self, int i):
        """The original text of token i."""
        if i < 0 or i >= self.ntokens:
            raise IndexError("token index out of range")
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(self.sql) + self.toks[i].start,
                                         self.toks[i].end - self.toks[i].start)

    cpdef bytes keyword(self, int i):
        """The upper-case keyword of token i, b"" when it is not a keyword."""
        if i < 0 or i >= self.ntokens:
            raise IndexError("token index out of range")
        return <bytes>_KW_BYTES[self.toks[i].kw] if self.toks[i].kind == T_KEYWORD else b""

    @property
    def slots(self):
        """Token indexes of the digest's ? positions, in order."""
        cdef int k
        if self._slots is None:
            self._slots = tuple([self.slot_tok[k] for k in range(self.nslots)])
        return self._slots

    cpdef object slot_value(self, int k):
        """Value of slot k: int, Decimal (1.5), float (1e3), bytes (strings, hex/bit literals) or PARAM."""
        cdef LexToken* t
        if k < 0 or k >= self.nslots:
            raise IndexError("slot index out of range")
        t = &self.toks[self.slot_tok[k]]
        return _literal(<const unsigned char*>PyBytes_AS_STRING(self.sql), t.kind, t.start, t.end)

    def __repr__(self):
        return f"<Lexed {self.digest!r} slots={self.nslots}>"


cdef int _tokenize(Lexed lx, const unsigned char* p, Py_ssize_t n) except -1:
    cdef Py_ssize_t i = 0, start, k, m
    cdef unsigned char c
    cdef int kind, kw, nxt
    cdef bint ident_sep = False  # previous token is a `.` that joins names: the next word is an identifier
    cdef bint joins
    cdef LexToken* prev
    while i < n:
        c = p[i]
        if CC[c] & C_SPACE:
            i += 1
            continue
        start = i
        kind = T_ERROR
        kw = -1
        if ident_sep:
            # db.1t, t.select: after ident + '.', MySQL reads any word as an identifier
            ident_sep = False
            i = scan_word(p, n, i)
            kind = T_IDENT
        elif CC[c] & C_DIGIT:
            k = scan_hex_number(p, n, i) if c == 48 else -1
            if k >= 0:
                i = k
                kind = T_HEX
            else:
                k = scan_digits(p, n, i)
                if k < n and CC[p[k]] & C_IDENT:
                    m = scan_exponent(p, n, k)
                    if m > k:  # 1e5, 1E-3
                        i = m
                        kind = T_NUMBER
                    else:  # 1abc, 1e, 0x1g: identifiers
                        i = scan_word(p, n, k)
                        kind = T_IDENT
                elif k < n and p[k] == 46:  # 1.5, 1., 1.5e3
                    i = scan_exponent(p, n, scan_digits(p, n, k + 1))
                    kind = T_NUMBER
                else:
                    i = k
                    kind = T_NUMBER
        elif CC[c] & C_IDENT:
            nxt = p[i + 1] if i + 1 < n else -1
            if nxt == 39 and (c == 120 or c == 88 or c == 98 or c == 66):  # X'..' B'..'
                i = scan_quoted_hex(p, n, i, &kind)
            elif nxt == 39 and (c == 110 or c == 78):  # N'..' national string
                k = scan_string(p, n, i + 1)
                if k < 0:
                    i = n
                else:
                    i = k
                    kind = T_STRING
            else:
                k = scan_word(p, n, i)
                i = k
                kind = T_IDENT
                if c == 95 and is_charset(p + start + 1, k - start - 1):
                    i = scan_introduced(p, n, k, &kind)
                if kind == T_IDENT and not (k + 1 < n and p[k] == 46 and CC[p[k + 1]] & C_IDENT):
                    # a word right before `.name` is a qualifier, never a keyword (MySQL does the same)
                    kw = kw_lookup(p + start, k - start)
                    if kw >= 0:
                        kind = T_KEYWORD
        elif c == 39 or c == 34:
            k = scan_string(p, n, i)
            if k < 0:
                i = n
            else:
                i = k
                kind = T_STRING
        elif c == 96:
            k = scan_quoted(p, n, i, False)
            if k < 0:
                i = n
            else:
                i = k
                kind = T_QUOTED_IDENT
        elif c == 63:
            i += 1
            kind = T_PARAM
        elif c == 64:
            i = scan_variable(p, n, i, &kind)
        elif c == 35 or is_dashdash(p, n, i):
            i = find_newline(p, n, i)
            continue
        elif c == 47 and i + 1 < n and p[i + 1] == 42:
            k = find_comment_end(p, n, i + 2)
            if k < 0:
                i = n  # unterminated comment: ERROR
            elif is_exec_comment(p, n, i):
                i = k + 2
                kind = T_COMMENT_EXEC
            else:
                i = k + 2
                continue
        elif c == 46:
            joins = False
            if lx.ntokens > 0:
                prev = &lx.toks[lx.ntokens - 1]
                joins = prev.end == i and (prev.kind == T_IDENT or prev.kind == T_QUOTED_IDENT)
            if i + 1 < n and CC[p[i + 1]] & C_DIGIT and not joins:  # .5
                i = scan_exponent(p, n, scan_digits(p, n, i + 1))
                kind = T_NUMBER
            else:
                ident_sep = joins and i + 1 < n and CC[p[i + 1]] & C_IDENT
                i += 1
                kind = T_PUNCT
        elif c == 40 or c == 41 or c == 44 or c == 59 or c == 123 or c == 125:  # ( ) , ; { }
            i += 1
            kind = T_PUNCT
        else:
            k = scan_operator(p, n, i)
            if k > i:
                i = k
                kind = T_OPERATOR
            else:
                i += 1  # a byte that starts no token (control char, backslash, [, ]): ERROR
        lx._push(kind, start, i, kw)
    return 0


cdef inline bint is_name(int kind) noexcept nogil:
    return kind == T_KEYWORD or kind == T_IDENT or kind == T_QUOTED_IDENT


cdef bytes _digest(Lexed lx, const unsigned char* p, Py_ssize_t n):
    # every token writes at most one space plus its own length, so 2n bytes always suffice
    cdef char stackbuf[1024]
    cdef char* out = stackbuf
    cdef Py_ssize_t cap = 2 * n + 1, pos = 0, keep = 0, ln
    cdef int j
    cdef LexToken* t
    cdef LexToken* prev = NULL
    cdef unsigned char c
    cdef bint space, join, prev_join = False  # prev is a `.` right after a name: the next name (or *) is glued
    cdef bytes result
    if cap > <Py_ssize_t>sizeof(stackbuf):
        out = <char*>PyMem_Malloc(cap)
        if out == NULL:
            raise MemoryError()
    for j in range(lx.ntokens):
        t = &lx.toks[j]
        c = p[t.start]
        join = False
        if prev != NULL:
            space = True
            if prev.kind == T_PUNCT and p[prev.start] == 40:  # after (
                space = False
            elif prev_join and (is_name(t.kind) or (t.kind == T_OPERATOR and c == 42)):  # t.c, t.*
                space = False
            elif t.kind == T_PUNCT:
                if c == 41 or c == 44 or c == 59:  # before ) , ;
                    space = False
                elif c == 46 and is_name(prev.kind):  # a name qualifier: db.t, t.c
                    space = False
                    join = True
                elif c == 40 and prev.end == t.start and (is_name(prev.kind) or prev.kind == T_VARIABLE):
                    space = False  # f( stays f(, f ( stays f (
            if space:
                out[pos] = 32
                pos += 1
        if t.kind == T_KEYWORD:
            ln = KW_LEN[t.kw]
            memcpy(out + pos, KW_PTR[t.kw], ln)
            pos += ln
        elif t.kind == T_NUMBER or t.kind == T_STRING or t.kind == T_HEX or t.kind == T_PARAM:
            out[pos] = 63
            pos += 1
        else:
            ln = t.end - t.start
            memcpy(out + pos, p + t.start, ln)
            pos += ln
        if not (t.kind == T_PUNCT and c == 59):
            keep = pos
        prev = t
        prev_join = join
    result = PyBytes_FromStringAndSize(out, keep)
    if out != stackbuf:
        PyMem_Free(out)
    return result


cpdef Lexed lex(bytes sql):
    """Lexes one COM_QUERY text. Never raises on bytes input: malformed pieces become T_ERROR tokens."""
    if sql is None:
        raise TypeError("lex() needs bytes, not None")
    cdef Lexed lx = Lexed.__new__(Lexed)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(sql)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(sql)
    cdef int j, count = 0, first_kw = -1
    cdef bint in_statement = False
    cdef LexToken* t
    lx.sql = sql
    _tokenize(lx, p, n)
    lx.digest = _digest(lx, p, n)
    for j in range(lx.ntokens):
        t = &lx.toks[j]
        if t.kind == T_PUNCT and p[t.start] == 59:
            in_statement = False
        else:
            if not in_statement:
                in_statement = True
                count += 1
            if first_kw < 0 and t.kind == T_KEYWORD:
                first_kw = t.kw
    lx.statement_count = count
    lx.first_keyword = <bytes>_KW_BYTES[first_kw] if first_kw >= 0 else b""
    return lx


# --- literal values ---

cdef bytes _bits_to_bytes(const unsigned char* d, Py_ssize_t nd):
    # B'101' / 0b101: big-endian, left-padded to whole bytes
    cdef Py_ssize_t nb = (nd + 7) // 8, pad = nb * 8 - nd, j, g
    cdef bytes out = PyBytes_FromStringAndSize(NULL, nb)
    cdef unsigned char* o = <unsigned char*>PyBytes_AS_STRING(out)
    for j in range(nb):
        o[j] = 0
    for j in range(nd):
        if d[j] == 49:
            g = pad + j
            o[g >> 3] |= <unsigned char>(0x80 >> (g & 7))
    return out


cdef inline int _hexval(unsigned char c) noexcept nogil:
    if c <= 57:
        return c - 48
    return (c | 32) - 87


cdef bytes _hex_to_bytes(const unsigned char* d, Py_ssize_t nd):
    # X'0A' / 0xA: an odd digit count is left-padded with 0
    cdef Py_ssize_t nb = (nd + 1) // 2, j = 0, o = 0
    cdef bytes out = PyBytes_FromStringAndSize(NULL, nb)
    cdef unsigned char* w = <unsigned char*>PyBytes_AS_STRING(out)
    if nd % 2:
        w[0] = _hexval(d[0])
        j = 1
        o = 1
    while j < nd:
        w[o] = (_hexval(d[j]) << 4) | _hexval(d[j + 1])
        j += 2
        o += 1
    return out


cdef bytes _unescape(const unsigned char* p, Py_ssize_t i, Py_ssize_t end):
    # Value of the string literal parts in p[i:end] (i at the first opening quote). Backslash escapes per
    # MySQL: \0 \b \n \r \t \Z, \% and \_ keep the backslash (LIKE patterns), any other \x is x.
    cdef Py_ssize_t k, o = 0
    cdef unsigned char q, c, e
    cdef unsigned char* buf
    cdef bytes result
    cdef bint plain = True
    # fast path: one part, no backslash, no doubled quote
    q = p[i]
    for k in range(i + 1, end - 1):
        if p[k] == 92 or p[k] == q:
            plain = False
            break
    if plain and p[end - 1] == q:
        return PyBytes_FromStringAndSize(<const char*>p + i + 1, end - i - 2)
    buf = <unsigned char*>PyMem_Malloc(end - i + 1)
    if buf == NULL:
        raise MemoryError()
    while i < end:
        q = p[i]
        i += 1
        while True:
            c = p[i]
            if c == 92:
                e = p[i + 1]
                i += 2
                if e == 48:
                    buf[o] = 0
                elif e == 98:
                    buf[o] = 8
                elif e == 110:
                    buf[o] = 10
                elif e == 114:
                    buf[o] = 13
                elif e == 116:
                    buf[o] = 9
                elif e == 90:
                    buf[o] = 26
                elif e == 37 or e == 95:
                    buf[o] = 92
                    o += 1
                    buf[o] = e
                else:
                    buf[o] = e
                o += 1
            elif c == q:
                if i + 1 < end and p[i + 1] == q:
                    buf[o] = q
                    o += 1
                    i += 2
                else:
                    i += 1
                    break
            else:
                buf[o] = c
                o += 1
                i += 1
        if i < end:
            i = skip_space(p, end, i)
    result = PyBytes_FromStringAndSize(<const char*>buf, o)
    PyMem_Free(buf)
    return result


cdef object _literal(const unsigned char* p, int kind, Py_ssize_t start, Py_ssize_t end):
    cdef Py_ssize_t i, k
    cdef long long v
    cdef bint dot = False
    if kind == T_PARAM:
        return PARAM
    if kind == T_NUMBER:
        for k in range(start, end):
            if p[k] == 101 or p[k] == 69:
                return float(PyBytes_FromStringAndSize(<const char*>p + start, end - start))  # DOUBLE
            if p[k] == 46:
                dot = True
        if dot:  # exact-value literal: DECIMAL
            return Decimal(PyUnicode_DecodeASCII(<const char*>p + start, end - start, NULL))
        if end - start <= 18:
            v = 0
            for k in range(start, end):
                v = v * 10 + (p[k] - 48)
            return PyLong_FromLongLong(v)
        # via Decimal: int(str) refuses more than 4300 digits (sys.int_max_str_digits), int(Decimal) does not
        return int(Decimal(PyUnicode_DecodeASCII(<const char*>p + start, end - start, NULL)))
    i = start
    if p[i] == 95:  # charset introducer: dropped
        i = scan_word(p, end, i)
        while CC[p[i]] & C_SPACE:
            i += 1
    if kind == T_STRING:
        if p[i] == 110 or p[i] == 78:
            i += 1
        return _unescape(p, i, end)
    # hex / bit literal: a binary string
    if p[i + 1] == 39:  # X'..' / B'..'
        if p[i] == 120 or p[i] == 88:
            return _hex_to_bytes(p + i + 2, end - i - 3)
        return _bits_to_bytes(p + i + 2, end - i - 3)
    if p[i + 1] == 120:
        return _hex_to_bytes(p + i + 2, end - i - 2)
    return _bits_to_bytes(p + i + 2, end - i - 2)
