"""The merge description of a SELECT routed to several shards: select items, ORDER BY / GROUP BY / HAVING /
LIMIT, aggregates split into per-shard parts and derived columns (`ddm.sharding.plan.Scatter`)."""

from __future__ import annotations

from typing import Any

import sqlglot
from sqlglot import exp

from ddm.sharding.plan import (
    LIMIT_ROWS,
    Position,
    Scatter,
    TokRange,
    Tpl,
    pos,
)
from ddm.sharding.plan_helpers import is_star, map_having, norm, not_supported, position_of, slot_of
from ddm.sharding.plan_tokens import (
    CMP,
    SELECT_MODIFIERS,
    T_COMMENT_EXEC,
    T_IDENT,
    T_KEYWORD,
    T_QUOTED_IDENT,
    PlanTokens,
)

AGGREGATES: dict[type, str] = {exp.Count: "COUNT", exp.Sum: "SUM", exp.Min: "MIN", exp.Max: "MAX", exp.Avg: "AVG"}


class ScatterBuilder:
    """Builds `Scatter` for a SELECT routed to several shards (see ddm.sharding.plan.Scatter and MergeDesc)."""

    def __init__(self, t: PlanTokens, ast: exp.Select, first: int, clauses: dict[bytes, int]) -> None:
        """t: the statement's tokens; clauses: token index of each top-level clause keyword of the SELECT at
        `first` (Planner._clauses)."""
        self.t = t
        self.ast = ast
        self.first = first
        self.clauses = clauses
        self.edits: list[Tpl] = []
        self.derived: list[tuple[Piece_, ...]] = []  # pieces of each derived column
        self.counters: dict[str, int] = {}

    # refs to columns: ("item", i), ("derived", j) or ("pos", slot, negated); made absolute in build()
    def build(self) -> Scatter:
        t, ast = self.t, self.ast
        if any(t.is_word(i, b"SQL_CALC_FOUND_ROWS") for i in range(self.first, self.clauses.get(b"FROM", t.end))):
            raise not_supported("SQL_CALC_FOUND_ROWS on several shards")
        for name in (b"WINDOW", b"UNION", b"PROCEDURE", b"INTO"):
            if name in self.clauses:
                raise not_supported(f"{name.decode()} on several shards")
        if list(ast.find_all(exp.Window)):
            raise not_supported("window functions on several shards")
        items = self._select_items()
        self.items = items
        nitems = len(items)
        self.star = next((i for i, (_, e) in enumerate(items) if is_star(e)), -1)
        self.last_star = max((i for i, (_, e) in enumerate(items) if is_star(e)), default=-1)
        self.aliases = {}
        for i, (_, e) in enumerate(items):
            if isinstance(e, exp.Alias):
                self.aliases.setdefault(e.alias.lower(), i)
        self.select_end = items[-1][0][1]

        aggregates: list[tuple[tuple, str, tuple]] = []
        distinct_arg: tuple[int, int] | None = None
        for i, ((a, b), e) in enumerate(items):
            inner = e.this if isinstance(e, exp.Alias) else e
            func = AGGREGATES.get(type(inner))
            if func is None:
                if inner.find(exp.AggFunc) is not None:
                    raise not_supported("aggregate inside an expression on several shards")
                continue
            arg_first, arg_last = self._call_args(a, b)
            is_distinct = isinstance(inner.this, exp.Distinct)
            if is_distinct and func != "COUNT":
                raise not_supported(f"{func}(DISTINCT ...) on several shards")
            if is_distinct:
                if distinct_arg is not None:
                    raise not_supported("several COUNT(DISTINCT ...) on several shards")
                if len(inner.this.expressions) != 1:
                    raise not_supported("COUNT(DISTINCT a, b) on several shards")
                distinct_arg = (arg_first + 1, arg_last)  # skip the DISTINCT keyword
                dref = self._derive("AGGREGATION_DISTINCT_DERIVED", (TokRange(*distinct_arg),))
                aggregates.append((("item", i), "COUNT_DISTINCT", (dref,)))
            elif func == "AVG":
                arg = TokRange(arg_first, arg_last)
                s = self._derive("AVG_DERIVED_SUM", (b"SUM(", arg, b")"))
                c = self._derive("AVG_DERIVED_COUNT", (b"COUNT(", arg, b")"))
                aggregates.append((("item", i), "AVG", (s, c)))
            else:
                aggregates.append((("item", i), func, ()))
        self.aggregates = aggregates

        distinct = isinstance(ast.args.get("distinct"), exp.Distinct)
        if distinct and ast.args["distinct"].args.get("on") is not None:
            raise not_supported("DISTINCT ON")
        group = ast.args.get("group")
        group_refs: list[tuple] = []
        group_ranges: list[tuple[int, int]] = []
        if group is not None:
            if group.args.get("rollup") or group.args.get("cube") or group.args.get("grouping_sets"):
                raise not_supported("GROUP BY ... WITH ROLLUP on several shards")
            gi = self.clauses[b"GROUP"]
            glast = self._clause_end(gi)
            group_ranges = self.t.split_commas(gi + 2, glast)
            if len(group_ranges) != len(group.expressions):
                raise not_supported("GROUP BY that ddm could not analyse")
            for rng, e in zip(group_ranges, group.expressions, strict=True):
                group_refs.append(self._resolve(e, rng, "GROUP_BY_DERIVED", allow_agg=False))
        if distinct and (group is not None or aggregates):
            raise not_supported("DISTINCT with GROUP BY or aggregates on several shards")

        order = ast.args.get("order")
        order_refs: list[tuple[tuple, bool]] = []
        if order is not None:
            oi = self.clauses[b"ORDER"]
            olast = self._clause_end(oi)
            ranges = self.t.split_commas(oi + 2, olast)
            if len(ranges) != len(order.expressions):
                raise not_supported("ORDER BY that ddm could not analyse")
            for (a, b), o in zip(ranges, order.expressions, strict=True):
                if self.t.up[b] in (b"ASC", b"DESC"):
                    b -= 1
                desc = bool(o.args.get("desc"))
                order_refs.append((self._resolve(o.this, (a, b), "ORDER_BY_DERIVED", allow_agg=True), desc))

        having = ast.args.get("having")
        having_tree = None
        if having is not None:
            having_tree = self._having(having.this)
            hi = self.clauses[b"HAVING"]
            self.edits.append(Tpl(pos(hi - 1, True), pos(self._clause_end(hi), True), (b"",)))

        # Shard-side ordering: grouped queries must arrive sorted by the group keys (plus the COUNT DISTINCT
        # argument) so the merger can stream groups; otherwise the user's ORDER BY is pushed down unchanged.
        shard_group = [TokRange(a, b) for a, b in group_ranges]
        if distinct_arg is not None:
            shard_group.append(TokRange(*distinct_arg))
            if group is None:
                at = self._group_insert_point()
                self.edits.append(Tpl(at, at, (b" GROUP BY ",) + tuple(shard_group[-1:])))
            else:
                end = pos(group_ranges[-1][1], True)
                self.edits.append(Tpl(end, end, (b", ", shard_group[-1])))
        if shard_group:
            pieces: list[Piece_] = [b"ORDER BY "]
            for n, rng in enumerate(shard_group):
                pieces += [b", "] if n else []
                pieces.append(rng)
            if order is not None:
                oi = self.clauses[b"ORDER"]
                self.edits.append(Tpl(pos(oi), pos(self._clause_end(oi), True), tuple(pieces)))
            else:
                at = self._order_insert_point()
                self.edits.append(Tpl(at, at, (b" ",) + tuple(pieces)))

        limit_count = limit_offset = -1
        if b"LIMIT" in self.clauses:
            li = self.clauses[b"LIMIT"]
            lend = self._clause_end(li)
            args = [(a, b) for a, b in self.t.split_commas(li + 1, lend)]
            toks = list(range(li + 1, lend + 1))
            if len(args) == 2 and all(a == b for a, b in args):
                limit_offset, limit_count = self.t.slot_of.get(args[0][0], -2), self.t.slot_of.get(args[1][0], -2)
            elif len(toks) == 3 and self.t.is_word(toks[1], b"OFFSET"):
                limit_count, limit_offset = self.t.slot_of.get(toks[0], -2), self.t.slot_of.get(toks[2], -2)
            elif len(toks) == 1:
                limit_count = self.t.slot_of.get(toks[0], -2)
            else:
                raise not_supported("LIMIT that ddm could not analyse")
            if limit_count == -2 or limit_offset == -2:
                raise not_supported("LIMIT with a non-literal value on several shards")
            # column positions name their columns only at bind time: groups then count as not ordered (no LIMIT)
            positional = any(r[0] == "pos" for r in group_refs) or any(r[0] == "pos" for r, _ in order_refs)
            ordered_groups = not order_refs or not positional and (
                [r for r, _ in order_refs[: len(group_refs)]] == group_refs and not any(d for _, d in order_refs))
            if having is not None or distinct_arg is not None or (group_refs and not ordered_groups):
                self.edits.append(Tpl(pos(li - 1, True), pos(lend, True), (b"",)))  # every group is needed
            else:
                self.edits.append(Tpl(pos(li + 1), pos(lend, True), (LIMIT_ROWS,)))

        # derived columns go after the last select item, in allocation order
        if self.derived:
            pieces = []
            for n, d in enumerate(self.derived):
                pieces += list(d)
                del n
            end = pos(self.select_end, True)
            self.edits.append(Tpl(end, end, tuple(pieces)))

        nd = len(self.derived)

        def col(ref: tuple) -> Any:
            if ref[0] == "pos":
                return Position(ref[1], ref[2])
            kind, idx = ref
            if kind == "derived":
                return nitems + idx if self.star < 0 else idx - nd
            if self.star < 0 or idx < self.star:
                return idx
            if idx == self.star:
                raise not_supported("ORDER BY/GROUP BY on `*`")
            if idx < self.last_star:  # `a.*, x, b.*`: x is neither at a known index nor at a known one from the end
                raise not_supported("a select item between two `*` items used by ORDER BY, GROUP BY or an aggregate, "
                                   "on several shards")
            return -(nitems - idx) - nd

        order_by = tuple((col(r), d) for r, d in order_refs)
        group_by = tuple(col(r) for r in group_refs)
        return Scatter(
            edits=tuple(self.edits),
            order_by=order_by,
            group_by=group_by,
            aggregates=tuple((col(c), f, tuple(col(a) for a in args)) for c, f, args in self.aggregates),
            distinct=distinct,
            having=map_having(having_tree, col) if having_tree is not None else None,
            limit_count=limit_count,
            limit_offset=limit_offset,
            visible_columns=nitems if self.star < 0 else -1,
            nderived=nd,
            positions=any(type(c) is Position for c, _ in order_by) or any(type(c) is Position for c in group_by),
            items=nitems,
        )

    def _select_items(self) -> list[tuple[tuple[int, int], exp.Expression]]:
        t = self.t
        i = self.first + 1
        while i < t.end and (t.kind[i] == T_COMMENT_EXEC or t.kind[i] == T_KEYWORD and t.up[i] in SELECT_MODIFIERS
                             or t.up[i] in SELECT_MODIFIERS):
            i += 1
        end = min([v for k, v in self.clauses.items() if k in (b"FROM", b"INTO", b"WHERE", b"GROUP", b"HAVING",
                                                                 b"ORDER", b"LIMIT", b"FOR", b"LOCK", b"WINDOW",
                                                                 b"UNION")] or [t.end])
        ranges = t.split_commas(i, end - 1)
        exprs = self.ast.expressions
        if len(ranges) != len(exprs) or not ranges:
            raise not_supported("a select list ddm could not analyse")
        return list(zip(ranges, exprs, strict=True))

    def _clause_end(self, kw: int) -> int:
        """Last token of the clause that starts at keyword token `kw` (before the next top-level clause)."""
        nxt = [v for v in self.clauses.values() if v > kw]
        return (min(nxt) if nxt else self.t.end) - 1

    def _order_insert_point(self) -> int:
        """Where ` ORDER BY ...` goes when the statement has none: before LIMIT/FOR/LOCK, else at the end."""
        nxt = [self.clauses[k] for k in (b"LIMIT", b"FOR", b"LOCK") if k in self.clauses]
        return pos(min(nxt) - 1, True) if nxt else pos(self.t.end - 1, True)

    def _group_insert_point(self) -> int:
        nxt = [self.clauses[k] for k in (b"HAVING", b"ORDER", b"LIMIT", b"FOR", b"LOCK") if k in self.clauses]
        return pos(min(nxt) - 1, True) if nxt else pos(self.t.end - 1, True)

    def _call_args(self, a: int, b: int) -> tuple[int, int]:
        """Tokens inside the parentheses of the aggregate call that starts select item a..b."""
        t = self.t
        if not t.is_punct(a + 1, b"(") or t.match[a + 1] < 0:
            raise not_supported("an aggregate call ddm could not analyse")
        close = t.match[a + 1]
        if close > b or close == a + 2:
            raise not_supported("an aggregate call ddm could not analyse")
        return a + 2, close - 1

    def _derive(self, prefix: str, expr: tuple) -> tuple:
        n = self.counters.get(prefix, 0)
        self.counters[prefix] = n + 1
        self.derived.append((b", ",) + tuple(expr) + (f" AS {prefix}_{n}".encode(),))
        return ("derived", len(self.derived) - 1)

    def _resolve(self, e: exp.Expression, rng: tuple[int, int], prefix: str, allow_agg: bool) -> tuple:
        """Select-list column for an ORDER BY / GROUP BY expression, deriving one when it is not there.

        A column position (`ORDER BY 2`) is ("pos", slot, negated): its number is a literal slot, known at bind."""
        position = position_of(e)
        if position is not None:
            return ("pos",) + position
        if isinstance(e, exp.Literal):  # literals are slots (`:sK`) in the text sqlglot parses
            raise not_supported("ORDER BY/GROUP BY on a literal ddm could not analyse, on several shards")
        if isinstance(e, exp.Column) and not e.text("table") and e.name.lower() in self.aliases:
            return ("item", self.aliases[e.name.lower()])
        key = norm(e)
        for i, (_, item) in enumerate(self.items):
            inner = item.this if isinstance(item, exp.Alias) else item
            if norm(inner) == key:
                return ("item", i)
        if isinstance(e, exp.Column):  # t.c against an unqualified c in the select list (or the reverse)
            for i, (_, item) in enumerate(self.items):
                inner = item.this if isinstance(item, exp.Alias) else item
                if isinstance(inner, exp.Column) and inner.name.lower() == e.name.lower() and \
                        (not inner.text("table") or not e.text("table")):
                    return ("item", i)
        func = AGGREGATES.get(type(e))
        if e.find(exp.AggFunc) is not None:
            if not allow_agg or func is None or func == "AVG" or isinstance(e.this, exp.Distinct):
                raise not_supported("ORDER BY/HAVING on an aggregate not in the select list, on several shards")
            ref = self._derive(prefix, (TokRange(*rng),))
            self.aggregates.append((ref, func, ()))
            return ref
        return self._derive(prefix, (TokRange(*rng),))

    def _having(self, node: exp.Expression) -> tuple:
        """HAVING as a small expression tree over columns and slot values (evaluated by the merger)."""
        if isinstance(node, exp.Paren):
            return self._having(node.this)
        if isinstance(node, exp.And):
            return ("and", self._having(node.this), self._having(node.expression))
        if isinstance(node, exp.Or):
            return ("or", self._having(node.this), self._having(node.expression))
        if isinstance(node, exp.Not):
            return ("not", self._having(node.this))
        op = CMP.get(type(node))
        if op is not None:
            return ("cmp", op, self._having_operand(node.this), self._having_operand(node.expression))
        raise not_supported(f"HAVING with {type(node).__name__.upper()} on several shards")

    def _having_operand(self, node: exp.Expression) -> tuple:
        s = slot_of(node)
        if s is not None:
            return ("slot", s[0], s[1])
        if isinstance(node, exp.Null):
            return ("const", None)
        if isinstance(node, exp.Boolean):
            return ("const", 1 if node.this else 0)
        if isinstance(node, (exp.Column, exp.AggFunc)):
            rng = self._find_range(node)
            return ("col", self._resolve(node, rng, "HAVING_DERIVED", allow_agg=True))
        if node.find(exp.AggFunc) is None and node.find(exp.Subquery) is None and node.find(exp.Column) is not None \
                and self._of_grouped_columns(node):
            # an expression of grouped columns (`HAVING UPPER(s) > 'a'` with GROUP BY s): the shards compute it as
            # a derived column, equal on every row of a group
            rng = self._find_range(node)
            return ("col", self._resolve(node, rng, "HAVING_DERIVED", allow_agg=False))
        raise not_supported(f"HAVING operand {type(node).__name__.upper()} on several shards")

    def _of_grouped_columns(self, node: exp.Expression) -> bool:
        """Every column of `node` is a plain GROUP BY column or select-list column (what MySQL lets HAVING use)."""
        group = self.ast.args.get("group")
        known = {norm(e) for e in (group.expressions if group is not None else []) if isinstance(e, exp.Column)}
        for _, item in self.items:
            inner = item.this if isinstance(item, exp.Alias) else item
            if isinstance(inner, exp.Column):
                known.add(norm(inner))
        return all(norm(c) in known for c in node.find_all(exp.Column))

    def _find_range(self, node: exp.Expression) -> tuple[int, int]:
        """Token range of a HAVING operand: the tokens of the HAVING clause whose parse equals `node`."""
        t = self.t
        hi = self.clauses[b"HAVING"]
        last = self._clause_end(hi)
        want = norm(node)
        for a in range(hi + 1, last + 1):
            if t.kind[a] not in (T_IDENT, T_QUOTED_IDENT, T_KEYWORD):
                continue
            for b in range(a, last + 1):
                if t.depth[b] < t.depth[a]:
                    break
                if t.depth[b] != t.depth[a]:
                    continue
                try:
                    got = sqlglot.parse_one(t.parse_text(a, b), read="mysql")
                except sqlglot.errors.SqlglotError:
                    continue
                if norm(got) == want:
                    return a, b
        raise not_supported("a HAVING operand ddm could not locate")


Piece_ = Any  # bytes | TokRange | LimitRows (see ddm.sharding.plan.Piece)
