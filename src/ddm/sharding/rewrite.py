"""Rewrite by span substitution: SQL literals and one-pass application of byte-span edits.

This is the hot half of the sharding engine: it runs on every query (plan-cache hit) and never touches sqlglot.
An edit is `(start, end, replacement)` over the *original* statement bytes; a list of edits is applied in one pass
after sorting. Edits must not overlap (an insertion is `start == end`); two insertions at the same offset keep their
order in the list (sort is stable).

Sharded prepared statements run as text on the shards: `format_literal` turns each bound parameter into a MySQL
literal that is spliced where its `?` was, so a shard sees exactly the statement a client could have typed.
"""

from __future__ import annotations

import datetime
import decimal
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ddm.sharding.plan import (
    EQ,
    KEY_GENERATE,
    LO,
    ROUTE_ALL,
    ROUTE_FIXED,
    ROUTE_SHARD,
    ExecutionUnits,
    InsertPlan,
    InSplit,
    KeyCond,
    MergeDesc,
    Plan,
    PlanError,
    Position,
    QueryPlan,
    Scatter,
    TokRange,
    Unit,
    UnsupportedPlan,
    install_rewriter,
)
from ddm.sharding.routing import Condition, Eq, Range, ShardKeyError
from ddm.wire.constants import er
from ddm.wire.rowcodec import CI_UPPER, fold_ci
from ddm_core.shard import PointRoute

Edit = tuple[int, int, bytes]

# Backslash escapes understood by MySQL in quoted strings (unless NO_BACKSLASH_ESCAPES, which ddm does not set on its
# backend connections). Quotes are doubled rather than backslashed so the output also survives that mode for `'`.
_ESCAPES = {0: b"\\0", 10: b"\\n", 13: b"\\r", 26: b"\\Z", 39: b"''", 92: b"\\\\"}
_NEEDS_ESCAPE = frozenset(_ESCAPES)
_TRANS = bytes(range(256))


def quote_bytes(value: bytes) -> bytes:
    """`value` as a single-quoted MySQL string literal (bytes are sent as-is: the connection charset applies)."""
    if not _NEEDS_ESCAPE.intersection(value):  # common case: nothing to escape, one concatenation
        return b"'" + value + b"'"
    out = bytearray(b"'")
    for b in value:
        esc = _ESCAPES.get(b)
        if esc is None:
            out.append(b)
        else:
            out += esc
    out.append(39)
    return bytes(out)


def format_literal(value: object) -> bytes:
    """A Python value (bound parameter or slot value) as MySQL literal SQL text.

    None -> NULL; bool/int -> decimal digits; Decimal -> its plain notation; float -> repr (shortest round-trip);
    str -> UTF-8 quoted string; bytes/bytearray/memoryview -> quoted string, or X'..' hex when `binary` semantics are
    wanted (see `format_blob`); date/datetime/time/timedelta -> quoted ISO strings MySQL parses."""
    if value is None:
        return b"NULL"
    tp = type(value)
    if tp is int:
        return str(value).encode()
    if tp is bytes:
        return quote_bytes(value)  # type: ignore[arg-type]
    if tp is str:
        return quote_bytes(value.encode())  # type: ignore[attr-defined]
    if tp is bool:
        return b"1" if value else b"0"
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot send {value} to MySQL")
        return format(value, "f").encode()
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"cannot send {value} to MySQL")
        return repr(value).encode()
    if isinstance(value, int):  # int subclasses (IntEnum, numpy-less ints)
        return str(int(value)).encode()
    if isinstance(value, (bytearray, memoryview)):
        return quote_bytes(bytes(value))
    if isinstance(value, datetime.datetime):
        return b"'" + value.isoformat(sep=" ").encode() + b"'"
    if isinstance(value, (datetime.date, datetime.time)):
        return b"'" + value.isoformat().encode() + b"'"
    if isinstance(value, datetime.timedelta):
        return b"'" + _format_timedelta(value) + b"'"
    raise TypeError(f"cannot format {tp.__name__} as a SQL literal")


def format_blob(value: bytes) -> bytes:
    """Binary data as a hex literal X'..' (safe for any bytes, independent of the connection character set)."""
    return b"X'" + value.hex().encode() + b"'"


def format_param(value: object, is_blob: bool = False) -> bytes:
    """A COM_STMT_EXECUTE parameter as literal text: blobs (binary parameter types) go as X'..' hex."""
    if is_blob and isinstance(value, (bytes, bytearray, memoryview)):
        return format_blob(bytes(value))
    return format_literal(value)


def _format_timedelta(td: datetime.timedelta) -> bytes:
    total = td.days * 86400 + td.seconds
    sign = "-" if total < 0 or (total == 0 and td.microseconds < 0) else ""
    micro = td.microseconds
    if total < 0:  # timedelta normalises to negative days + positive seconds; MySQL TIME wants sign + magnitude
        total, micro = divmod(-(total * 1_000_000 + micro), 1_000_000)
        total, micro = int(total), int(micro)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    text = f"{sign}{h:02d}:{m:02d}:{s:02d}"
    if micro:
        text += f".{micro:06d}"
    return text.encode()


def apply_edits(sql: bytes, edits: Iterable[Edit], lo: int = 0, hi: int | None = None) -> bytes:
    """Apply `(start, end, replacement)` edits to `sql[lo:hi]` in one pass.

    Edits outside [lo, hi] are ignored, so one edit list can serve several sub-ranges (INSERT row tuples). An edit
    lying inside an earlier, larger one is dropped (a parameter inside a LIMIT clause that is rewritten as a
    whole); any other overlap is a bug and raises ValueError. Insertions sort before a replacement at the same
    offset."""
    return b"".join(_edit_parts(sql, edits, lo, len(sql) if hi is None else hi))  # type: ignore[arg-type]


def _edit_parts(sql: bytes, edits: Iterable[tuple[int, int, object]], lo: int, hi: int) -> list:
    """apply_edits before the join: the pieces in order, each replacement as given (bytes, or a slot number that
    `_bind_query` fills per target)."""
    parts: list = []
    pos = lo
    last_start = -1
    for start, end, repl in sorted(edits, key=_edit_key):
        if start < lo or end > hi:
            continue
        if start < pos:
            if end <= pos and start >= last_start:
                continue
            raise ValueError(f"overlapping edits at byte {start}")
        parts.append(sql[pos:start])
        parts.append(repl)
        pos = end
        last_start = start
    parts.append(sql[pos:hi])
    return parts


def _edit_key(edit: Edit) -> tuple[int, bool, int]:
    return edit[0], edit[0] != edit[1], -edit[1]


def check_edits(edits: Sequence[Edit]) -> None:
    """Raise ValueError when edits overlap (debug aid for tests; apply_edits checks as it goes)."""
    pos = -1
    for start, end, _ in sorted(edits, key=_edit_key):
        if start < pos or end < start:
            raise ValueError(f"bad edit span ({start}, {end})")
        pos = end


# ---------------------------------------------------------------------------------------------------------------
# binding a plan to one query (the plan-cache hit path)


def _token_kinds() -> tuple[int, int]:
    try:
        from ddm_core.lexer import T_NUMBER, T_PARAM
    except ImportError:  # pure-Python installs
        from ddm._py.lexer import T_NUMBER, T_PARAM
    return int(T_PARAM), int(T_NUMBER)


T_PARAM, T_NUMBER = _token_kinds()


class _Bound:
    """This query's slot values and the edits that inline prepared-statement parameters."""

    __slots__ = ("lexed", "sql", "values", "param_edits")

    def __init__(self, lexed: Any, sql: bytes, params: Sequence[Any] | None, inline: bool = True) -> None:
        self.lexed = lexed
        self.sql = sql
        self.values: dict[int, Any] = {}
        self.param_edits: list[Edit] = []
        if params:  # slot k is a parameter when its token is `?`: it takes the next bound value
            kind, start, end, slots = lexed.kind, lexed.start, lexed.end, lexed.slots
            j = 0
            for k, tok in enumerate(slots):
                if kind(tok) == T_PARAM:
                    if j >= len(params):
                        raise PlanError(er.WRONG_ARGUMENTS, "Incorrect arguments to mysqld_stmt_execute")
                    v = params[j]
                    j += 1
                    self.values[k] = v
                    if inline:
                        self.param_edits.append((start(tok), end(tok), format_literal(v)))

    def value(self, k: int, neg: bool = False) -> Any:
        v = self.values[k] if k in self.values else self.lexed.slot_value(k)
        if neg:
            if isinstance(v, (int, decimal.Decimal, float)) and not isinstance(v, bool):
                return -v
            raise _NotRoutable
        return v

    def text(self, first: int, last: int, extra: list[Edit] | None = None) -> bytes:
        """Tokens first..last of this query, parameters inlined (and `extra` edits, e.g. the physical table
        names of one target, applied where they fall inside)."""
        lo, hi = self.lexed.start(first), self.lexed.end(last)
        if extra:
            return apply_edits(self.sql, self.param_edits + extra, lo, hi)
        if not self.param_edits:
            return self.sql[lo:hi]
        return apply_edits(self.sql, self.param_edits, lo, hi)

    def at(self, code: int) -> int:
        tok = code >> 1
        return self.lexed.end(tok) if code & 1 else self.lexed.start(tok)


def point_route(plan: QueryPlan) -> Any:
    """The PointRoute of a plan whose binding is "one table, `key = slot`, one target" (None for other shapes).

    It must give exactly the unit `_bind_query` gives whenever it gives one: same routing (`TableRouter.route` of
    one Eq value: each dimension is either placed by its shard function on this column or has a single index) and
    the same table-name substitution (the plan's names, refs in text order)."""
    dnf, router = plan.dnf, plan.router
    if plan.mode != ROUTE_SHARD or dnf is None or router is None or router.kind != "sharded":
        return None
    if len(dnf) != 1 or len(dnf[0]) != 1 or dnf[0][0].op != EQ or len(dnf[0][0].slots) != 1:
        return None
    cond = dnf[0][0]
    col = cond.column
    dbf = router.db_function if router.db_column == col else None
    if dbf is None and len(router.datasources) != 1:
        return None
    tbfs = []
    for d, row in enumerate(router.targets):
        f = router.table_functions[d] if router.table_column == col else None
        if f is None and len(row) != 1:
            return None
        tbfs.append(f)
    order = sorted(range(len(plan.tables)), key=lambda i: plan.tables[i].first)
    names = []
    for row in router.targets:
        out = []
        for tg in row:
            repl = plan.names.get((tg.datasource, tg.table))
            if repl is None or len(repl) != len(order):
                return None
            out.append(tuple(repl[i] for i in order))
        names.append(tuple(out))
    refs = tuple((plan.tables[i].first, plan.tables[i].last) for i in order)
    try:
        return PointRoute(cond.slots[0], cond.neg[0], refs, dbf, tuple(tbfs), router.datasources, tuple(names))
    except (ValueError, TypeError):  # refs that overlap or too many of them: the generic path handles it
        return None


class _NotRoutable(Exception):
    """A key value the routing cannot use (e.g. `-'abc'`): the condition does not prune."""


def compile_units(plan: Plan, lexed: Any, sql: bytes | None = None, params: Sequence[Any] | None = None,
                  keys: Sequence[int] | None = None, inline: bool = True) -> ExecutionUnits:
    """Bind `plan` to one query: per-data-source SQL (physical names, values) and the merge description.

    params: bound values of a prepared statement (inlined as literals: shards run it as text). keys: generated
    shard keys for an InsertPlan (count from `InsertPlan.keys_needed`). Raises PlanError for refused statements.
    inline=False keeps parameter markers in the SQL (params still route): the executor uses it to run a
    single-target prepared statement as a prepared statement on its shard; it is only valid for one unit without a
    merge (the executor binds again with inline=True otherwise)."""
    if sql is None:
        sql = lexed.sql
    b = _Bound(lexed, sql, params, inline)
    if type(plan) is QueryPlan:
        return _bind_query(plan, b)
    if type(plan) is InsertPlan:
        return _bind_insert(plan, b, keys)
    if type(plan) is UnsupportedPlan:
        raise plan.error()
    raise TypeError(f"{type(plan).__name__} is executed by the executor, not bound")


def _bind_query(plan: QueryPlan, b: _Bound) -> ExecutionUnits:
    mode = plan.mode
    if mode == ROUTE_SHARD:
        targets = _route_dnf(plan, b) if plan.dnf is not None else list(plan.names)
    elif mode == ROUTE_FIXED:
        targets = [(plan.datasource, "")]
    elif mode == ROUTE_ALL:
        targets = list(plan.names)
    else:
        t = plan.router.route_one()
        targets = [(t.datasource, t.table)]
    # In-list splitting first: a target whose share of the list is empty is not queried at all
    in_values: dict[tuple[str, str], list[int]] | None = None
    if plan.in_split is not None and len(targets) > 1:
        in_values = _split_in(plan, b, targets)
        if in_values is not None:
            targets = [tg for tg in targets if tg in in_values]
    merge = None
    common = b.param_edits
    per_target_scatter = None
    if len(targets) > 1 and (plan.single_target_error is not None or plan.scatter is not None):
        if plan.single_target_error is not None:
            raise plan.single_target_error
        sc = plan.scatter
        assert sc is not None
        if _copies_table_refs(sc, plan.tables):
            per_target_scatter = sc  # copied tokens name tables (`t.c`): each target gets its physical names
        else:
            common = common + _scatter_edits(sc, b)
        merge = _merge_desc(sc, b)
    lexed, sql, refs, names = b.lexed, b.sql, plan.tables, plan.names
    if len(targets) == 1 and in_values is None:  # the common case (point queries): no per-target loop
        tg = targets[0]
        edits = common + [(lexed.start(r.first), lexed.end(r.last), x) for r, x in zip(refs, names[tg], strict=True)]
        return ExecutionUnits((Unit(tg[0], apply_edits(sql, edits) if edits else sql),), None, (), plan.is_write,
                              mode == ROUTE_ALL)
    spans = [(lexed.start(r.first), lexed.end(r.last)) for r in refs]
    units = []
    if per_target_scatter is None and in_values is None:
        # Every target gets the same text but for its physical table names: cut it once, fill the names per target
        parts = _edit_parts(sql, common + [(s, e, k) for k, (s, e) in enumerate(spans)], 0, len(sql))
        slots = [(i, p) for i, p in enumerate(parts) if type(p) is int]
        for tg in targets:
            repl = names[tg]
            for i, k in slots:
                parts[i] = repl[k]
            units.append(Unit(tg[0], b"".join(parts)))
        return ExecutionUnits(tuple(units), merge, (), plan.is_write, mode == ROUTE_ALL)
    for tg in targets:
        repl = names[tg]
        edits = list(common)
        for (s, e), r in zip(spans, repl, strict=True):
            edits.append((s, e, r))
        if per_target_scatter is not None:
            edits += _scatter_edits(per_target_scatter, b, edits[len(common):])
        if in_values is not None:
            sp = plan.in_split
            assert sp is not None
            texts = [b.text(sp.first if i == 0 else _value_first(sp, i, lexed), lexed.slots[sp.slots[i]])
                     for i in in_values[tg]]
            edits.append((lexed.start(sp.first), lexed.end(sp.last), b", ".join(texts)))
        units.append(Unit(tg[0], apply_edits(sql, edits) if edits else sql))
    return ExecutionUnits(tuple(units), merge, (), plan.is_write, mode == ROUTE_ALL)


def _value_first(sp: InSplit, i: int, lexed: Any) -> int:
    tok = lexed.slots[sp.slots[i]]
    return tok - 1 if sp.neg[i] else tok


def _route_dnf(plan: QueryPlan, b: _Bound) -> list[tuple[str, str]]:
    """Union (in physical order) of the targets of each AND-group of key conditions."""
    router = plan.router
    dnf = plan.dnf
    assert dnf is not None
    if len(dnf) == 1 and len(dnf[0]) == 1 and dnf[0][0].op == EQ and len(dnf[0][0].slots) == 1:
        c = dnf[0][0]  # the point-query fast path: `key = ?`
        try:
            v = b.value(c.slots[0], c.neg[0])
            hit = router.route({c.column: Eq((v,))})
        except (ShardKeyError, _NotRoutable):
            return list(plan.names)
        return [(t.datasource, t.table) for t in hit] or [next(iter(plan.names))]
    found: set[tuple[str, str]] = set()
    for conj in dnf:
        try:
            conds = _conditions(conj, b)
            if conds is None:
                continue  # contradictory (`id = 1 AND id = 2`): no row can match
            hit = router.route(conds)
        except (ShardKeyError, _NotRoutable, TypeError, ValueError, ArithmeticError):
            return list(plan.names)
        found.update((t.datasource, t.table) for t in hit)
    if not found:
        # nothing can match; one shard still answers so the client gets a (empty) result with its columns
        return [next(iter(plan.names))]
    return [tg for tg in plan.names if tg in found]


def _conditions(conj: Sequence[KeyCond], b: _Bound) -> dict[str, Condition] | None:
    """AND of key conditions -> one Condition per column; None when they contradict."""
    eqs: dict[str, list[Any]] = {}
    ranges: dict[str, list[Any]] = {}
    for c in conj:
        if c.op == EQ:
            vals = [b.value(k, n) for k, n in zip(c.slots, c.neg, strict=True)]
            if c.column in eqs:
                prev = eqs[c.column]
                vals = [v for v in prev if any(_same(v, w) for w in vals)]
            eqs[c.column] = vals
        else:
            r = ranges.setdefault(c.column, [None, True, None, True])
            v = b.value(c.slots[0], c.neg[0])
            if v is None:
                return None  # `key > NULL` is never true
            if c.op == LO:
                if r[0] is None or v > r[0] or (v == r[0] and not c.inclusive):
                    r[0], r[1] = v, c.inclusive
            else:
                if r[2] is None or v < r[2] or (v == r[2] and not c.inclusive):
                    r[2], r[3] = v, c.inclusive
    out: dict[str, Condition] = {}
    for col, vals in eqs.items():
        if col in ranges:
            lo, lo_inc, hi, hi_inc = ranges.pop(col)
            vals = [v for v in vals if v is not None and _in_range(v, lo, lo_inc, hi, hi_inc)]
        vals = [v for v in vals if v is not None]
        if not vals:
            return None
        out[col] = Eq(tuple(vals))
    for col, (lo, lo_inc, hi, hi_inc) in ranges.items():
        out[col] = Range(lo, lo_inc, hi, hi_inc)
    return out


def _key_comparable(a: Any, b: Any) -> bool:
    """Whether Python compares two key values as MySQL does: two exact numbers (int/Decimal) or two floats. A
    string equals a number it converts to ('1' = 1, '1.0' = 1, '11' >= '5' for an integer key), and two different
    strings may be equal ('01' = '1' for an integer key, 'a' = 'A' under a _ci collation)."""
    return (isinstance(a, _EXACT_KEYS) and isinstance(b, _EXACT_KEYS)) or (type(a) is float and type(b) is float)


_EXACT_KEYS = (int, decimal.Decimal)


def _same(a: Any, b: Any) -> bool:
    """Whether two values of one key may be equal: only comparable values (see _key_comparable) are told apart; other
    pairs count as possibly equal, so routing keeps both (more targets, never a missed row)."""
    return not _key_comparable(a, b) or bool(a == b)


def _in_range(v: Any, lo: Any, lo_inc: bool, hi: Any, hi_inc: bool) -> bool:
    """Whether v may lie in the range (a bound not comparable with v does not exclude it, see _same)."""
    if lo is not None and _key_comparable(v, lo) and (v < lo or (v == lo and not lo_inc)):
        return False
    return not (hi is not None and _key_comparable(v, hi) and (v > hi or (v == hi and not hi_inc)))


def _split_in(plan: QueryPlan, b: _Bound, targets: Sequence[tuple[str, str]]
              ) -> dict[tuple[str, str], list[int]] | None:
    sp = plan.in_split
    assert sp is not None
    try:
        values = [b.value(k, n) for k, n in zip(sp.slots, sp.neg, strict=True)]
        groups = plan.router.group_values(sp.column, values, skip_null=True)
    except (ShardKeyError, _NotRoutable, TypeError, ValueError):
        return None
    wanted = set(targets)
    out = {(t.datasource, t.table): idx for t, idx in groups.items() if (t.datasource, t.table) in wanted}
    return out or None


def _copies_table_refs(sc: Scatter, refs: Sequence[Any]) -> bool:
    """True when a scatter template copies tokens that contain a table reference (derived `t.c AS ..._DERIVED`,
    a pushed-down `ORDER BY t.c`): those copies need the physical name of each target."""
    if not refs:
        return False
    for t in sc.edits:
        for p in t.pieces:
            if type(p) is TokRange and any(p.first <= r.first and r.last <= p.last for r in refs):
                return True
    return False


def _render(pieces: Sequence[Any], b: _Bound, rows: int, names: list[Edit] | None = None) -> bytes:
    out = []
    for p in pieces:
        if type(p) is bytes:
            out.append(p)
        elif type(p) is TokRange:
            out.append(b.text(p.first, p.last, names))
        else:
            out.append(str(rows).encode())
    return b"".join(out)


def _limit(sc: Scatter, b: _Bound) -> tuple[int | None, int]:
    if sc.limit_count < 0:
        return None, 0
    count = b.value(sc.limit_count)
    offset = b.value(sc.limit_offset) if sc.limit_offset >= 0 else 0
    if type(count) is not int or type(offset) is not int or count < 0 or offset < 0:
        raise PlanError(er.WRONG_ARGUMENTS, "Incorrect arguments to LIMIT")
    return count, offset


def _scatter_edits(sc: Scatter, b: _Bound, names: list[Edit] | None = None) -> list[Edit]:
    """Shard-SQL edits of a scatter query; `names`: one target's table-name edits, for copied tokens."""
    count, offset = _limit(sc, b)
    rows = (count or 0) + offset
    return [(b.at(t.start), b.at(t.end), _render(t.pieces, b, rows, names)) for t in sc.edits]


def _merge_desc(sc: Scatter, b: _Bound) -> MergeDesc:
    count, offset = _limit(sc, b)
    having = make_predicate(sc.having, b) if sc.having is not None else None
    order_by, group_by = (sc.order_by, sc.group_by) if not sc.positions else _resolve_positions(sc, b)
    return MergeDesc(order_by, group_by, sc.aggregates, sc.distinct, having, count, offset,
                     sc.visible_columns, sc.nderived)


# --- ORDER BY / GROUP BY column positions -------------------------------------------------------------------------

_NOT_A_POSITION = -1


def _resolve_positions(sc: Scatter, b: _Bound) -> tuple[tuple[tuple[int, bool], ...], tuple[int, ...]]:
    """The plan's ORDER BY / GROUP BY with every `Position` made a column index for this query's numbers.

    ORDER BY is checked before GROUP BY, as MySQL does. An ORDER BY item that is a constant for MySQL
    (`ORDER BY 'x'`, `1.5`: the digest of `ORDER BY 2`) ties every row: it is left out of the merge order (the data
    nodes sort by it as written, i.e. not at all). A GROUP BY constant puts every row in one group, which the
    merger cannot do: refused."""
    order_by: list[tuple[int, bool]] = []
    for c, desc in sc.order_by:
        if type(c) is Position:
            i = _position(c, sc, b, "ORDER BY")
            if i != _NOT_A_POSITION:
                order_by.append((i, desc))
        else:
            order_by.append((c, desc))
    group_by: list[int] = []
    for c in sc.group_by:
        if type(c) is Position:
            i = _position(c, sc, b, "GROUP BY")
            if i == _NOT_A_POSITION:
                raise PlanError(er.NOT_SUPPORTED_YET, "GROUP BY a constant on several shards")
            group_by.append(i)
        else:
            group_by.append(c)
    return tuple(order_by), tuple(group_by)


def _position(p: Position, sc: Scatter, b: _Bound, clause: str) -> int:
    """Column index of the position in slot `p.slot` for this query, or _NOT_A_POSITION for a constant.

    MySQL takes an integer literal as a position (a DECIMAL literal, string, hex or float is a constant): it reads
    the number as a 32-bit unsigned value (`ORDER BY 4294967298` is column 2, `18446744073709551615` is -1) and
    names that 32-bit value, signed, in the ER_BAD_FIELD_ERROR of a position outside 1..number of columns.
    A prepared-statement marker (`ORDER BY ?`) is no position for MySQL (it orders by a constant) but is one for
    MariaDB, and the text the data nodes run has the value inlined: refused on several shards."""
    lexed = b.lexed
    kind = lexed.kind(lexed.slots[p.slot])
    if kind == T_PARAM:
        raise PlanError(er.NOT_SUPPORTED_YET, f"{clause} ? (a parameter marker as the item) on several shards")
    v = b.value(p.slot)
    if kind != T_NUMBER or type(v) is not int:
        return _NOT_A_POSITION
    if p.neg:
        v = -v
    if not -(1 << 63) <= v < 1 << 64:  # beyond BIGINT (UNSIGNED): a DECIMAL literal
        return _NOT_A_POSITION
    n = v & 0xFFFFFFFF
    if n == 0 or n > sc.items:
        if n != 0 and sc.visible_columns < 0:  # `*` stands for at least one column: beyond that it depends
            raise PlanError(er.NOT_SUPPORTED_YET,
                            f"{clause} column position past the items of a select list with `*`, on several shards")
        shown = n - (1 << 32) if n >= 1 << 31 else n
        raise PlanError(er.BAD_FIELD_ERROR, f"Unknown column '{shown}' in '{clause}'")
    return n - 1


# --- HAVING -----------------------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
}


def make_predicate(tree: tuple, b: Any) -> Callable[[Sequence[Any]], bool]:
    """Compile a HAVING tree (see planner) with this query's values into `pred(row) -> bool`.

    SQL three-valued logic: NULL operands make a comparison unknown, and only a true result keeps the row.
    Row values may be bytes (text protocol) or numbers: mixed comparisons are made numerically."""
    fn = _compile(tree, b)
    return lambda row: fn(row) is True


def _compile(tree: tuple, b: Any) -> Callable[[Sequence[Any]], Any]:
    tag = tree[0]
    if tag == "and":
        x, y = _compile(tree[1], b), _compile(tree[2], b)

        def and_(row: Sequence[Any]) -> Any:
            p, q = x(row), y(row)
            if p is False or q is False:
                return False
            return None if p is None or q is None else True

        return and_
    if tag == "or":
        x, y = _compile(tree[1], b), _compile(tree[2], b)

        def or_(row: Sequence[Any]) -> Any:
            p, q = x(row), y(row)
            if p is True or q is True:
                return True
            return None if p is None or q is None else False

        return or_
    if tag == "not":
        x = _compile(tree[1], b)
        return lambda row: None if (v := x(row)) is None else not v
    if tag == "cmp":
        op = _OPS[tree[1]]
        lhs, rhs = _operand(tree[2], b), _operand(tree[3], b)

        def cmp(row: Sequence[Any]) -> Any:
            p, q = lhs(row), rhs(row)
            if p is None or q is None:
                return None
            p, q = _comparable(p, q)
            return op(p, q)

        return cmp
    raise ValueError(f"bad HAVING node {tag}")


def _operand(node: tuple, b: Any) -> Callable[[Sequence[Any]], Any]:
    if node[0] == "col":
        idx = node[1]
        return lambda row: row[idx]
    if node[0] == "slot":
        v = b.value(node[1], node[2])
        return lambda row: v
    v = node[1]
    return lambda row: v


def _comparable(p: Any, q: Any) -> tuple[Any, Any]:
    """MySQL comparison rules for HAVING operands. Decoded column values are numbers (numeric columns) or str
    (strings, temporal text); slot values are numbers or bytes (string literals).
    - number vs number: numerically;
    - number vs string: the string is converted like MySQL does (its leading numeric prefix, else 0) and both
      compare as doubles (`HAVING MIN(name) > 0` is false for 'abc');
    - string vs string: as strings under a case-insensitive PAD SPACE collation (utf8mb4_general_ci-like weights:
      the predicate does not know the column's collation; ci is the default of MySQL and MariaDB)."""
    pn, qn = _is_number(p), _is_number(q)
    if pn and qn:
        return p, q
    if pn or qn:
        return (float(p) if pn else _str_to_double(p)), (float(q) if qn else _str_to_double(q))
    return _weight(p), _weight(q)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, decimal.Decimal))


_NUM_PREFIX = re.compile(rb"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _str_to_double(v: Any) -> float:
    """A string as a number the way MySQL converts it for a comparison: the longest numeric prefix, else 0."""
    raw = v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape")
    m = _NUM_PREFIX.match(raw)
    if m is None:
        return 0.0
    try:
        return float(m.group(0))
    except (ValueError, OverflowError):
        return 0.0


def _weight(v: Any) -> bytes:
    raw = v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape")
    return fold_ci(raw, CI_UPPER)


# --- INSERT -----------------------------------------------------------------------------------------------------


def keys_needed(plan: InsertPlan, lexed: Any, params: Sequence[Any] | None = None) -> int:
    """How many shard keys the executor must generate (awaiting the id generator) before binding."""
    if plan.rule.key_generator is None:
        return 0
    if plan.gen_column_tok >= 0:
        return len(plan.rows)  # one id per row for the generator's own column; the key is given
    b = _Bound(lexed, lexed.sql, params)
    return sum(1 for r in plan.rows if r.key == KEY_GENERATE or _auto_value(b.value(r.key)))


def given_keys(plan: InsertPlan, lexed: Any, params: Sequence[Any] | None = None) -> list[int]:
    """The integer key values an INSERT writes explicitly into its generator's column (not generated)."""
    if plan.rule.key_generator is None or plan.gen_column_tok >= 0:
        return []
    b = _Bound(lexed, lexed.sql, params)
    vals = (b.value(r.key, r.key_neg) for r in plan.rows if r.key != KEY_GENERATE)
    return [int(v) for v in vals if type(v) in (int, decimal.Decimal) and not _auto_value(v)]


def _auto_value(v: Any) -> bool:
    """NULL or 0 in a generated key column asks for a new id, as for AUTO_INCREMENT (without the
    NO_AUTO_VALUE_ON_ZERO sql_mode): routing by 0 would place the row where its real id does not belong."""
    return v is None or (type(v) in (int, decimal.Decimal) and v == 0) or v in (b"0", "0")


def _bind_insert(plan: InsertPlan, b: _Bound, keys: Sequence[int] | None) -> ExecutionUnits:
    lexed, sql = b.lexed, b.sql
    router = plan.router
    col = plan.column
    generated: list[int] = []
    key_iter = iter(keys or ())
    row_keys: list[Any] = []
    gen_edits: list[Edit] = []
    other = plan.gen_column_tok >= 0
    for n, r in enumerate(plan.rows, 1):
        v = None if r.key == KEY_GENERATE else b.value(r.key, r.key_neg)
        if other:  # the generator fills its own column; the key routes as given
            g = next(key_iter, None)
            if g is None:
                raise PlanError(er.UNKNOWN_ERROR, "not enough generated keys for INSERT")
            generated.append(g)
            gen_edits.append(_appended(plan, lexed, r, plan.rule.key_generator.column, g))
            if v is None:
                raise PlanError(er.NOT_SUPPORTED_YET,
                                f"NULL sharding key '{col}' for table '{plan.rule.name}' (row {n})")
        elif v is None or (plan.rule.key_generator is not None and _auto_value(v)):
            if plan.rule.key_generator is None:
                raise PlanError(er.NOT_SUPPORTED_YET,
                                f"NULL sharding key '{col}' for table '{plan.rule.name}' (row {n})")
            v = next(key_iter, None)
            if v is None:
                raise PlanError(er.UNKNOWN_ERROR, "not enough generated keys for INSERT")
            generated.append(v)
            lit = str(v).encode()
            if r.key_tok >= 0:
                gen_edits.append((lexed.start(r.key_tok), lexed.end(r.key_tok), lit))
            else:
                gen_edits.append(_appended(plan, lexed, r, col, v))
        row_keys.append(v)
    # group rows by target, in physical order
    by_target: dict[tuple[str, str], list[int]] = {}
    for i, v in enumerate(row_keys):
        try:
            hit = router.route({col: Eq((v,))})
        except ShardKeyError as e:
            raise PlanError(er.NOT_SUPPORTED_YET, f"cannot place sharding key {col}={v!r}: {e}") from None
        if len(hit) != 1:
            raise PlanError(er.NOT_SUPPORTED_YET, f"sharding key {col}={v!r} does not name one table")
        by_target.setdefault((hit[0].datasource, hit[0].table), []).append(i)
    rows = plan.rows
    row_lo = lexed.start(rows[0].open)
    row_hi = lexed.end(rows[-1].close)
    head_edits: list[Edit] = [e for e in b.param_edits if e[1] <= row_lo]
    tail_edits: list[Edit] = [e for e in b.param_edits if e[0] >= row_hi]
    if plan.add_column_tok >= 0 and not plan.set_form:
        at = lexed.start(plan.add_column_tok)
        head_edits.append((at, at, b", " + _quote_ident(col)))
    if plan.gen_column_tok >= 0 and not plan.set_form:
        at = lexed.start(plan.gen_column_tok)
        head_edits.append((at, at, b", " + _quote_ident(plan.rule.key_generator.column)))
    row_texts = _row_texts(plan, b, gen_edits) if len(by_target) > 1 or gen_edits or b.param_edits else None
    spans = [(lexed.start(r.first), lexed.end(r.last)) for r in plan.tables]
    units = []
    for tg in (t for t in plan.names if t in by_target):
        repl = plan.names[tg]
        table_edits = [(s, e, r) for (s, e), r in zip(spans, repl, strict=True)]
        if plan.set_form:  # one row whose assignments may name the table (`t.col = 1`): every edit, one pass
            units.append(Unit(tg[0], apply_edits(sql, gen_edits + b.param_edits + table_edits)))
            continue
        head = apply_edits(sql, head_edits + [e for e in table_edits if e[1] <= row_lo], 0, row_lo)
        if row_texts is None:  # one target, nothing to change inside the rows: keep them as one slice
            body = sql[row_lo:row_hi]
        else:
            body = b", ".join(row_texts[i] for i in by_target[tg])
        tail = apply_edits(sql, tail_edits + [e for e in table_edits if e[0] >= row_hi], row_hi, len(sql))
        units.append(Unit(tg[0], head + body + tail))
    return ExecutionUnits(tuple(units), None, tuple(generated), True)


def _appended(plan: InsertPlan, lexed: Any, r: Any, column: str, value: int) -> Edit:
    """The edit adding a generated value to a row: `, v` before a VALUES tuple's `)`, or `, col = v` after the last
    assignment of INSERT ... SET."""
    if plan.set_form:
        at = lexed.end(r.close)
        return (at, at, b", " + _quote_ident(column) + b" = " + str(value).encode())
    at = lexed.start(r.close)
    return (at, at, b", " + str(value).encode())


def _row_texts(plan: InsertPlan, b: _Bound, gen_edits: list[Edit]) -> list[bytes]:
    """Text of each row tuple with its own edits (edits are bucketed in one pass: rows are in text order)."""
    lexed, sql = b.lexed, b.sql
    edits = sorted(gen_edits + b.param_edits, key=_edit_key)  # a generated key wins over its NULL parameter
    out = []
    j = 0
    for r in plan.rows:
        lo, hi = lexed.start(r.open), lexed.end(r.close)
        while j < len(edits) and edits[j][0] < lo:
            j += 1
        k = j
        while k < len(edits) and edits[k][0] <= hi and edits[k][1] <= hi:
            k += 1
        out.append(apply_edits(sql, edits[j:k], lo, hi) if k > j else sql[lo:hi])
        j = k
    return out


def _quote_ident(name: str) -> bytes:
    return b"`" + name.replace("`", "``").encode() + b"`"


install_rewriter(compile_units, point_route)  # Plan.bind / QueryPlan.point call into this module
