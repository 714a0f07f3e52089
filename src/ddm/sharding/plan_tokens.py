"""Plan-time token view of one statement (positions the rewrite edits) and the token-kind constants."""

from __future__ import annotations

from typing import Any

from sqlglot import exp

# Token kinds (ddm_core.lexer / ddm._py.lexer module constants; the two modules share the values)
T_KEYWORD, T_IDENT, T_QUOTED_IDENT, T_NUMBER, T_STRING, T_HEX, T_PARAM = 1, 2, 3, 4, 5, 6, 7
T_OPERATOR, T_PUNCT, T_VARIABLE, T_COMMENT_EXEC, T_ERROR = 8, 9, 10, 11, 12
LITERAL_KINDS = (T_NUMBER, T_STRING, T_HEX, T_PARAM)
NAME_KINDS = (T_IDENT, T_QUOTED_IDENT, T_KEYWORD)

SYSTEM_SCHEMAS = frozenset({"information_schema", "mysql", "performance_schema", "sys"})
# Words after which an unqualified name is in table position (FROM a, b: the comma case is checked against the AST)
TABLE_LEAD = frozenset(
    b"FROM JOIN INTO UPDATE TABLE TABLES STRAIGHT_JOIN DESCRIBE DESC EXPLAIN REFERENCES LIKE TRUNCATE EXISTS ON USING ,"
    .split()
)
SELECT_MODIFIERS = frozenset(
    b"ALL DISTINCT DISTINCTROW HIGH_PRIORITY STRAIGHT_JOIN SQL_SMALL_RESULT SQL_BIG_RESULT SQL_BUFFER_RESULT "
    b"SQL_NO_CACHE SQL_CACHE SQL_CALC_FOUND_ROWS".split()
)
SELECT_CLAUSES = frozenset(
    b"FROM WHERE GROUP HAVING WINDOW ORDER LIMIT FOR LOCK INTO UNION PROCEDURE".split()
)
CMP = {exp.EQ: "=", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
FLIP = {"=": "=", "!=": "!=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}
MAX_DNF = 256  # conjunctions kept for routing; beyond that OR-heavy WHERE clauses just scatter


# ---------------------------------------------------------------------------------------------------------------
# token view


class PlanTokens:
    """Plan-time view of the lexer's tokens: kinds, upper-cased words, identifier names, paren matching."""

    def __init__(self, lexed: Any, sql: bytes) -> None:
        n = lexed.ntokens
        self.lexed = lexed
        self.sql = sql
        self.n = n
        self.kind = [lexed.kind(i) for i in range(n)]
        self.text = [sql[lexed.start(i) : lexed.end(i)] for i in range(n)]
        self.up = [t.upper() if k in NAME_KINDS else t for t, k in zip(self.text, self.kind, strict=True)]
        self.slot_of = {tok: k for k, tok in enumerate(lexed.slots)}
        self.match = [-1] * n
        self.depth = [0] * n
        stack: list[int] = []
        for i in range(n):
            self.depth[i] = len(stack)
            if self.kind[i] == T_PUNCT:
                if self.text[i] == b"(":
                    stack.append(i)
                elif self.text[i] == b")" and stack:
                    j = stack.pop()
                    self.match[i], self.match[j] = j, i
                    self.depth[i] = len(stack)
        # the statement proper: trailing `;` excluded
        end = n
        while end > 0 and self.kind[end - 1] == T_PUNCT and self.text[end - 1] == b";":
            end -= 1
        self.end = end

    def name(self, i: int) -> str | None:
        """Identifier name (lower case, backquotes removed) of token i, None when it is not a name."""
        k = self.kind[i]
        if k == T_IDENT or k == T_KEYWORD:
            return self.text[i].decode("utf-8", "replace").lower()
        if k == T_QUOTED_IDENT:
            return self.text[i][1:-1].replace(b"``", b"`").decode("utf-8", "replace").lower()
        return None

    def is_word(self, i: int, word: bytes) -> bool:
        return 0 <= i < self.n and self.kind[i] in NAME_KINDS and self.up[i] == word

    def is_punct(self, i: int, ch: bytes) -> bool:
        return 0 <= i < self.n and self.kind[i] == T_PUNCT and self.text[i] == ch

    def parse_text(self, first: int = 0, last: int | None = None) -> str:
        """Tokens first..last as text for sqlglot: slot k becomes `:sk`, original spacing kept between tokens."""
        lexed = self.lexed
        last = self.end - 1 if last is None else last
        parts: list[str] = []
        prev_end = -1
        for i in range(first, last + 1):
            start = lexed.start(i)
            if prev_end >= 0 and start > prev_end:
                parts.append(" ")
            k = self.slot_of.get(i)
            if k is not None:
                parts.append(f":s{k}")
            elif self.kind[i] == T_COMMENT_EXEC:
                parts.append(" ")  # sqlglot does not read /*! */; its content does not affect planning
            else:
                parts.append(self.text[i].decode("utf-8", "replace"))
            prev_end = lexed.end(i)
        return "".join(parts)

    def split_commas(self, first: int, last: int) -> list[tuple[int, int]]:
        """Comma-separated token ranges of first..last at the depth of `first`."""
        out: list[tuple[int, int]] = []
        depth = self.depth[first] if first <= last else 0
        start = first
        for i in range(first, last + 1):
            if self.depth[i] == depth and self.is_punct(i, b","):
                out.append((start, i - 1))
                start = i + 1
        if start <= last:
            out.append((start, last))
        return out
