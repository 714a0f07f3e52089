"""CONNECTION_ID() inside a statement: the client's id is ddm's (the greeting's, `ddm.execute.threads`), never the
thread id of whichever node connection runs the statement. `rewrite` replaces every call by the id as a literal;
an unaliased item of the top-level SELECT list keeps the name the node would have given it (`AS` its original
text), so `SELECT CONNECTION_ID()+0` answers a column named `CONNECTION_ID()+0` holding ddm's id.

Calls in strings and comments are not calls (the lexer's tokens); executable comments (`/*! ... */`) are left as
they are.
"""

from __future__ import annotations

import re

from ddm_core.lexer import T_IDENT, T_KEYWORD, T_OPERATOR, T_PUNCT, T_QUOTED_IDENT, T_STRING, lex

# one case-insensitive search per COM_QUERY (the LOCK_HINT way); only a hit pays for the lexer
HINT = re.compile(rb"connection_id", re.I).search

# `SELECT CONNECTION_ID() [[AS] alias]` alone is answered by ddm.execute.threads (the column as MariaDB types it)
PLAIN = re.compile(rb"^\s*SELECT\s+CONNECTION_ID\s*\(\s*\)(?:\s+(?:AS\s+)?(\w+|`[^`]+`))?\s*;?\s*$", re.I).match

_SELECT_OPTIONS = frozenset((b"ALL", b"DISTINCT", b"DISTINCTROW", b"HIGH_PRIORITY", b"STRAIGHT_JOIN",
                             b"SQL_SMALL_RESULT", b"SQL_BIG_RESULT", b"SQL_BUFFER_RESULT", b"SQL_CACHE",
                             b"SQL_NO_CACHE", b"SQL_CALC_FOUND_ROWS"))
_LIST_END = frozenset((b"FROM", b"INTO", b"WHERE", b"GROUP", b"HAVING", b"ORDER", b"LIMIT", b"UNION", b"FOR",
                       b"LOCK", b"WINDOW", b"EXCEPT", b"INTERSECT", b"PROCEDURE"))
_NAMES = (T_IDENT, T_QUOTED_IDENT, T_STRING)


def _calls(lexed) -> list[tuple[int, int]]:
    """Token index ranges [first, last] of each `CONNECTION_ID ( )`."""
    out = []
    n = lexed.ntokens
    i = 0
    while i + 2 < n:
        if (lexed.kind(i) in (T_IDENT, T_KEYWORD) and lexed.text(i).upper() == b"CONNECTION_ID"
                and lexed.text(i + 1) == b"(" and lexed.text(i + 2) == b")"):
            out.append((i, i + 2))
            i += 3
        else:
            i += 1
    return out


def _select_items(lexed) -> list[tuple[int, int]]:
    """Token ranges [first, last] of the items of a statement's top-level SELECT list ([] when it is no SELECT)."""
    n = lexed.ntokens
    if n == 0 or lexed.keyword(0) != b"SELECT":
        return []
    i = 1
    while i < n and lexed.keyword(i) in _SELECT_OPTIONS:
        i += 1
    items, depth, start = [], 0, i
    while i < n:
        text = lexed.text(i)
        if text == b"(":
            depth += 1
        elif text == b")":
            depth -= 1
        elif depth == 0 and (text == b"," or text == b";" or lexed.keyword(i) in _LIST_END):
            items.append((start, i - 1))
            if text != b",":
                return items
            start = i + 1
        i += 1
    items.append((start, n - 1))
    return items


def _has_alias(lexed, first: int, last: int) -> bool:
    if last <= first or lexed.kind(last) not in _NAMES:
        return False
    prev = last - 1
    if lexed.keyword(prev) == b"AS":
        return True
    kind = lexed.kind(prev)
    return not (kind == T_OPERATOR or (kind == T_PUNCT and lexed.text(prev) != b")") or kind == T_KEYWORD)


def rewrite(sql: bytes, conn_id: int) -> bytes | None:
    """`sql` with CONNECTION_ID() calls replaced by `conn_id`, or None when it has none."""
    lexed = lex(sql)
    calls = _calls(lexed)
    if not calls:
        return None
    literal = str(conn_id).encode()
    edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement) in the text
    for first, last in calls:
        edits.append((lexed.start(first), lexed.end(last), literal))
    for first, last in _select_items(lexed):
        if last < first or _has_alias(lexed, first, last):
            continue
        if any(first <= c <= last for c, _ in calls):
            name = sql[lexed.start(first):lexed.end(last)].replace(b"`", b"``")
            edits.append((lexed.end(last), lexed.end(last), b" AS `" + name + b"`"))
    edits.sort(key=lambda e: (e[0], e[1]))
    out, pos = [], 0
    for start, end, text in edits:
        out.append(sql[pos:start])
        out.append(text)
        pos = end
    out.append(sql[pos:])
    return b"".join(out)
