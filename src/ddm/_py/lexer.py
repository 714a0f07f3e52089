"""Pure-Python twin of ``ddm_core.lexer``: the MySQL lexer and statement digest.

Same API and behaviour as the Cython module (checked by hypothesis in tests/test_lexer.py); written for clarity,
not speed. It assumes the default sql_mode (``"`` quotes strings, backslash escapes on) and an ASCII-compatible
connection charset (utf8mb4, latin1, binary), where a backslash or quote byte is never part of a multi-byte char.

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

from __future__ import annotations

from decimal import Decimal

__all__ = [
    "PARAM",
    "T_COMMENT_EXEC",
    "T_ERROR",
    "T_HEX",
    "T_IDENT",
    "T_KEYWORD",
    "T_NUMBER",
    "T_OPERATOR",
    "T_PARAM",
    "T_PUNCT",
    "T_QUOTED_IDENT",
    "T_STRING",
    "T_VARIABLE",
    "KEYWORDS",
    "Lexed",
    "lex",
]

T_KEYWORD = 1
T_IDENT = 2
T_QUOTED_IDENT = 3
T_NUMBER = 4
T_STRING = 5
T_HEX = 6  # X'..', 0x.., B'..', 0b.. (MySQL: binary strings)
T_PARAM = 7
T_OPERATOR = 8
T_PUNCT = 9
T_VARIABLE = 10
T_COMMENT_EXEC = 11
T_ERROR = 12


class _Param:
    """Value of a prepared-statement ``?`` slot (the value comes with COM_STMT_EXECUTE)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PARAM"


PARAM = _Param()

# Reserved words of MySQL 8 that matter to a proxy, plus the non-reserved words that start or shape
# statements (BEGIN, COMMIT, START TRANSACTION, ...). Types and function names are identifiers.
KEYWORDS: tuple[bytes, ...] = tuple(
    sorted(
        set(
            b"""
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
    """.split()
        )
    )
)
_KEYWORD_SET = frozenset(KEYWORDS)

# Charset names that make ``_name`` an introducer (``_utf8mb4'x'``, ``_binary 0x41``); any other ``_word`` is
# an identifier, as in MySQL's lexer.
CHARSETS: frozenset[bytes] = frozenset(
    b"""
    armscii8 ascii big5 binary cp1250 cp1251 cp1256 cp1257 cp850 cp852 cp866 cp932 dec8 eucjpms euckr gb18030
    gb2312 gbk geostd8 greek hebrew hp8 keybcs2 koi8r koi8u latin1 latin2 latin5 latin7 macce macroman sjis swe7
    tis620 ucs2 ujis utf16 utf16le utf32 utf8 utf8mb3 utf8mb4
    """.split()
)

# Identifier bytes: ASCII letters, digits, _ and $, and every byte >= 0x80 (utf8 passes through).
_IDENT = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$") | frozenset(
    range(128, 256)
)
_SPACE = frozenset(b" \t\n\r\x0b\x0c")
_DIGIT = frozenset(b"0123456789")
_HEXDIGIT = frozenset(b"0123456789abcdefABCDEF")
_BITDIGIT = frozenset(b"01")
_LITERALS = (T_NUMBER, T_STRING, T_HEX, T_PARAM)
_NAMES = (T_KEYWORD, T_IDENT, T_QUOTED_IDENT)
_WORDS = (T_KEYWORD, T_IDENT, T_QUOTED_IDENT, T_VARIABLE)

# Backslash escapes in string literals; any other escaped byte stands for itself. \% and \_ keep the
# backslash (they exist for LIKE patterns).
_ESCAPES = {
    ord("0"): b"\x00",
    ord("b"): b"\x08",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("Z"): b"\x1a",
    ord("%"): b"\\%",
    ord("_"): b"\\_",
}

_Q1, _Q2, _BQ = 0x27, 0x22, 0x60  # ' " `


def _scan_word(p: bytes, n: int, i: int) -> int:
    while i < n and p[i] in _IDENT:
        i += 1
    return i


def _scan_quoted(p: bytes, n: int, i: int, backslash: bool) -> int:
    """End (after the closing quote) of the quoted text opening at p[i], or -1 when unterminated.
    A doubled quote stands for itself; backslash escapes apply to strings, not to backquoted names."""
    q = p[i]
    i += 1
    while i < n:
        c = p[i]
        if c == 0x5C and backslash:
            i += 2
        elif c == q:
            if i + 1 < n and p[i + 1] == q:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return -1


def _is_dashdash(p: bytes, n: int, i: int) -> bool:
    # "-- " starts a comment only when followed by whitespace/control char (or the end): 1--1 is 1 - -1.
    return (
        i + 1 < n
        and p[i] == 0x2D
        and p[i + 1] == 0x2D
        and (i + 2 >= n or p[i + 2] <= 0x20 or p[i + 2] == 0x7F)
    )


def _is_exec_comment(p: bytes, n: int, i: int) -> bool:
    # p[i:i+2] == b"/*": /*! (MySQL), /*M! (MariaDB) executable comments and /*+ optimizer hints
    if i + 2 < n and p[i + 2] in (0x21, 0x2B):
        return True
    return i + 3 < n and p[i + 2] == 0x4D and p[i + 3] == 0x21


def _skip_space(p: bytes, n: int, i: int) -> int:
    """Skips whitespace and plain comments (not executable ones, not an unterminated one)."""
    while i < n:
        c = p[i]
        if c in _SPACE:
            i += 1
        elif c == 0x23 or _is_dashdash(p, n, i):
            k = p.find(b"\n", i)
            i = n if k < 0 else k
        elif c == 0x2F and i + 1 < n and p[i + 1] == 0x2A and not _is_exec_comment(p, n, i):
            k = p.find(b"*/", i + 2)
            if k < 0:
                return i
            i = k + 2
        else:
            break
    return i


def _scan_string(p: bytes, n: int, i: int) -> int:
    """End of the string literal opening at p[i], with the adjacent literals MySQL concatenates to it
    ('a' 'b' == 'ab', also across comments); -1 when one of them is unterminated."""
    k = _scan_quoted(p, n, i, True)
    while k >= 0:
        m = _skip_space(p, n, k)
        if m < n and (p[m] == _Q1 or p[m] == _Q2):
            k = _scan_quoted(p, n, m, True)
        else:
            break
    return k


def _scan_hex_number(p: bytes, n: int, i: int) -> int:
    """End of a 0x.. / 0b.. literal at p[i] (p[i] == '0'), or -1 when it is an identifier start instead:
    MySQL reads 0x1g and 0x as identifiers, and only a lower-case x/b makes a hex/bit number."""
    if i + 1 >= n:
        return -1
    if p[i + 1] == 0x78:
        digits = _HEXDIGIT
    elif p[i + 1] == 0x62:
        digits = _BITDIGIT
    else:
        return -1
    k = i + 2
    while k < n and p[k] in digits:
        k += 1
    if k == i + 2 or (k < n and p[k] in _IDENT):
        return -1
    return k


def _scan_quoted_hex(p: bytes, n: int, i: int) -> tuple[int, int]:
    """X'..' / B'..' at p[i] (p[i+1] is the quote): (end, kind). Only hex (even count) or bit digits are
    allowed; anything else is an ERROR up to the next quote."""
    digits = _HEXDIGIT if p[i] in b"xX" else _BITDIGIT
    k = i + 2
    while k < n and p[k] in digits:
        k += 1
    if k < n and p[k] == _Q1 and (digits is _BITDIGIT or (k - i - 2) % 2 == 0):
        return k + 1, T_HEX
    k = p.find(b"'", k)
    return (n if k < 0 else k + 1), T_ERROR


def _exponent(p: bytes, n: int, k: int) -> int:
    """End of an exponent e5 / E-3 at p[k], or k when there is none."""
    if k < n and p[k] in b"eE":
        m = k + 1
        if m < n and p[m] in b"+-":
            m += 1
        if m < n and p[m] in _DIGIT:
            while m < n and p[m] in _DIGIT:
                m += 1
            return m
    return k


_OPS3 = (b"<=>", b"->>")
_OPS2 = (b":=", b"->", b"<<", b">>", b"!=", b"<>", b"<=", b">=", b"||", b"&&")
_OPS1 = frozenset(b"=<>!+-*/%&|^~:@")
_PUNCT = frozenset(b"(),.;{}")


def _tokenize(p: bytes) -> list[tuple[int, int, int, bytes]]:
    """Tokens (kind, start, end, keyword) of p; keyword is the upper-case keyword for T_KEYWORD, else b""."""
    n = len(p)
    toks: list[tuple[int, int, int, bytes]] = []
    i = 0
    ident_sep = False  # previous token is a `.` that joins names: the next word is an identifier
    while i < n:
        c = p[i]
        if c in _SPACE:
            i += 1
            continue
        start = i
        kind = T_ERROR
        kw = b""
        if ident_sep:
            # db.1t, t.select: after ident + '.', MySQL reads any word as an identifier
            ident_sep = False
            i = _scan_word(p, n, i)
            kind = T_IDENT
        elif c in _DIGIT:
            k = _scan_hex_number(p, n, i) if c == 0x30 else -1
            if k >= 0:
                i, kind = k, T_HEX
            else:
                k = i
                while k < n and p[k] in _DIGIT:
                    k += 1
                if k < n and p[k] in _IDENT:
                    m = _exponent(p, n, k)
                    if m > k:  # 1e5, 1E-3
                        i, kind = m, T_NUMBER
                    else:  # 1abc, 1e, 0x1g: identifiers
                        i, kind = _scan_word(p, n, k), T_IDENT
                elif k < n and p[k] == 0x2E:  # 1.5, 1., 1.5e3
                    m = k + 1
                    while m < n and p[m] in _DIGIT:
                        m += 1
                    i, kind = _exponent(p, n, m), T_NUMBER
                else:
                    i, kind = k, T_NUMBER
        elif c in _IDENT:
            nxt = p[i + 1] if i + 1 < n else -1
            if nxt == _Q1 and c in b"xXbB":
                i, kind = _scan_quoted_hex(p, n, i)
            elif nxt == _Q1 and c in b"nN":  # N'..' national string
                k = _scan_string(p, n, i + 1)
                i, kind = (n, T_ERROR) if k < 0 else (k, T_STRING)
            else:
                k = _scan_word(p, n, i)
                i, kind = k, T_IDENT
                if c == 0x5F and p[start + 1 : k].lower() in CHARSETS:
                    i, kind = _introduced(p, n, start, k)
                if kind == T_IDENT and not (k + 1 < n and p[k] == 0x2E and p[k + 1] in _IDENT):
                    # a word right before `.name` is a qualifier, never a keyword (MySQL does the same)
                    word = p[start:k].upper()
                    if word in _KEYWORD_SET:
                        kind, kw = T_KEYWORD, word
        elif c == _Q1 or c == _Q2:
            k = _scan_string(p, n, i)
            i, kind = (n, T_ERROR) if k < 0 else (k, T_STRING)
        elif c == _BQ:
            k = _scan_quoted(p, n, i, False)
            i, kind = (n, T_ERROR) if k < 0 else (k, T_QUOTED_IDENT)
        elif c == 0x3F:
            i, kind = i + 1, T_PARAM
        elif c == 0x40:
            i, kind = _variable(p, n, i)
        elif c == 0x23 or _is_dashdash(p, n, i):
            k = p.find(b"\n", i)
            i = n if k < 0 else k
            continue
        elif c == 0x2F and i + 1 < n and p[i + 1] == 0x2A:
            k = p.find(b"*/", i + 2)
            if k < 0:
                i, kind = n, T_ERROR  # unterminated comment
            elif _is_exec_comment(p, n, i):
                i, kind = k + 2, T_COMMENT_EXEC
            else:
                i = k + 2
                continue
        elif c == 0x2E:
            prev = toks[-1] if toks else None
            joins = prev is not None and prev[2] == i and prev[0] in (T_IDENT, T_QUOTED_IDENT)
            if i + 1 < n and p[i + 1] in _DIGIT and not joins:  # .5
                k = i + 1
                while k < n and p[k] in _DIGIT:
                    k += 1
                i, kind = _exponent(p, n, k), T_NUMBER
            else:
                ident_sep = joins and i + 1 < n and p[i + 1] in _IDENT
                i, kind = i + 1, T_PUNCT
        elif c in _PUNCT:
            i, kind = i + 1, T_PUNCT
        elif p[i : i + 3] in _OPS3:
            i, kind = i + 3, T_OPERATOR
        elif p[i : i + 2] in _OPS2:
            i, kind = i + 2, T_OPERATOR
        elif c in _OPS1:
            i, kind = i + 1, T_OPERATOR
        else:
            i += 1  # a byte that starts no token (control char, backslash, [, ]): ERROR
        toks.append((kind, start, i, kw))
    return toks


def _introduced(p: bytes, n: int, start: int, k: int) -> tuple[int, int]:
    """``_charset`` at p[start:k] followed (whitespace allowed) by a string or hex/bit literal: the literal,
    including the introducer. Otherwise (k, T_IDENT)."""
    m = k
    while m < n and p[m] in _SPACE:
        m += 1
    if m >= n:
        return k, T_IDENT
    c = p[m]
    if c == _Q1 or c == _Q2:
        e = _scan_string(p, n, m)
        return (n, T_ERROR) if e < 0 else (e, T_STRING)
    if c in b"xXbB" and m + 1 < n and p[m + 1] == _Q1:
        return _scan_quoted_hex(p, n, m)
    if c == 0x30:
        e = _scan_hex_number(p, n, m)
        if e >= 0:
            return e, T_HEX
    return k, T_IDENT


def _variable(p: bytes, n: int, i: int) -> tuple[int, int]:
    """@var, @var.x, @'quoted', @`quoted`, @@sys_var, @@session.sys_var; a lone @ is an operator
    ('user'@'host' is a string, @'host')."""
    nxt = p[i + 1] if i + 1 < n else -1
    if nxt == 0x40:
        k = i + 2
        if k < n and p[k] in _IDENT:
            k = _scan_word(p, n, k)
            while k + 1 < n and p[k] == 0x2E and p[k + 1] in _IDENT:
                k = _scan_word(p, n, k + 1)
            return k, T_VARIABLE
        return i + 1, T_OPERATOR
    if nxt in (_Q1, _Q2, _BQ):
        k = _scan_quoted(p, n, i + 1, nxt != _BQ)
        return (n, T_ERROR) if k < 0 else (k, T_VARIABLE)
    if nxt in _IDENT or nxt == 0x2E:
        k = i + 1
        while k < n and (p[k] in _IDENT or p[k] == 0x2E):
            k += 1
        return k, T_VARIABLE
    return i + 1, T_OPERATOR


def _digest(p: bytes, toks: list[tuple[int, int, int, bytes]]) -> bytes:
    out = bytearray()
    keep = 0  # digest length without trailing ';'
    prev: tuple[int, int, int, bytes] | None = None
    prev_join = False  # prev is a `.` right after a name: the next name (or *) is glued to it
    for tok in toks:
        kind, start, end, kw = tok
        c = p[start]
        join = False
        if prev is not None:
            pk, ps, pe, _ = prev
            space = True
            if pk == T_PUNCT and p[ps] == 0x28:  # after (
                space = False
            elif prev_join and (kind in _NAMES or (kind == T_OPERATOR and c == 0x2A)):  # t.c, t.*
                space = False
            elif kind == T_PUNCT:
                if c in b"),;":
                    space = False
                elif c == 0x2E and pk in _NAMES:  # a name qualifier: db.t, t.c
                    space, join = False, True
                elif c == 0x28 and pe == start and pk in _WORDS:  # f( stays f(, f ( stays f (
                    space = False
            if space:
                out.append(0x20)
        if kind == T_KEYWORD:
            out += kw
        elif kind in _LITERALS:
            out.append(0x3F)
        else:
            out += p[start:end]
        if not (kind == T_PUNCT and c == 0x3B):
            keep = len(out)
        prev = tok
        prev_join = join
    return bytes(out[:keep])


def _unescape(p: bytes, i: int, end: int) -> bytes:
    """Value of the string literal parts in p[i:end] (i at the first opening quote)."""
    out = bytearray()
    while i < end:
        q = p[i]
        i += 1
        while True:
            c = p[i]
            if c == 0x5C:
                e = p[i + 1]
                out += _ESCAPES.get(e, bytes((e,)))
                i += 2
            elif c == q:
                if i + 1 < end and p[i + 1] == q:
                    out.append(q)
                    i += 2
                else:
                    i += 1
                    break
            else:
                out.append(c)
                i += 1
        if i < end:
            i = _skip_space(p, end, i)
    return bytes(out)


def _bits_to_bytes(bits: bytes) -> bytes:
    if not bits:
        return b""
    return int(bits, 2).to_bytes((len(bits) + 7) // 8, "big")


def _literal(p: bytes, kind: int, start: int, end: int) -> object:
    if kind == T_PARAM:
        return PARAM
    if kind == T_NUMBER:
        text = p[start:end]
        if b"e" in text or b"E" in text:
            return float(text)  # approximate-value literal: DOUBLE in MySQL
        if b"." in text:
            return Decimal(text.decode("ascii"))  # exact-value literal: DECIMAL
        # via Decimal: int(str) refuses more than 4300 digits (sys.int_max_str_digits), int(Decimal) does not
        return int(Decimal(text.decode("ascii")))
    i = start
    if p[i] == 0x5F:  # charset introducer: dropped
        i = _scan_word(p, end, i)
        while p[i] in _SPACE:
            i += 1
    if kind == T_STRING:
        if p[i] in b"nN":
            i += 1
        return _unescape(p, i, end)
    # hex / bit literal: a binary string
    if p[i + 1] == _Q1:  # X'..' / B'..'
        digits = p[i + 2 : end - 1]
        return bytes.fromhex(digits.decode("ascii")) if p[i] in b"xX" else _bits_to_bytes(digits)
    digits = p[i + 2 : end]
    if p[i + 1] == 0x78:  # 0x..: an odd digit count is left-padded with 0
        if len(digits) % 2:
            digits = b"0" + digits
        return bytes.fromhex(digits.decode("ascii"))
    return _bits_to_bytes(digits)


class Lexed:
    """Tokens, digest and literal slots of one SQL text (see ddm_core.lexer.Lexed)."""

    __slots__ = ("sql", "digest", "ntokens", "statement_count", "first_keyword", "slots", "_toks")

    def __init__(self, sql: bytes) -> None:
        toks = _tokenize(sql)
        self.sql = sql
        self._toks = toks
        self.ntokens = len(toks)
        self.digest = _digest(sql, toks)
        self.slots: tuple[int, ...] = tuple(i for i, t in enumerate(toks) if t[0] in _LITERALS)
        self.first_keyword = next((t[3] for t in toks if t[0] == T_KEYWORD), b"")
        count = 0
        in_statement = False
        for kind, start, _, _ in toks:
            if kind == T_PUNCT and sql[start] == 0x3B:
                in_statement = False
            elif not in_statement:
                in_statement = True
                count += 1
        self.statement_count = count

    def _tok(self, i: int) -> tuple[int, int, int, bytes]:
        if not 0 <= i < self.ntokens:
            raise IndexError("token index out of range")
        return self._toks[i]

    def kind(self, i: int) -> int:
        return self._tok(i)[0]

    def start(self, i: int) -> int:
        return self._tok(i)[1]

    def end(self, i: int) -> int:
        return self._tok(i)[2]

    def text(self, i: int) -> bytes:
        """The original text of token i."""
        t = self._tok(i)
        return self.sql[t[1] : t[2]]

    def keyword(self, i: int) -> bytes:
        """The upper-case keyword of token i, b"" when it is not a keyword."""
        return self._tok(i)[3]

    def slot_value(self, k: int) -> object:
        if not 0 <= k < len(self.slots):
            raise IndexError("slot index out of range")
        kind, start, end, _ = self._toks[self.slots[k]]
        return _literal(self.sql, kind, start, end)

    def __repr__(self) -> str:
        return f"<Lexed {self.digest!r} slots={len(self.slots)}>"


def lex(sql: bytes) -> Lexed:
    """Lexes one COM_QUERY text. Never raises on bytes input: malformed pieces become T_ERROR tokens."""
    return Lexed(sql)
