"""Immutable execution plans produced by `ddm.sharding.planner` and cached by `ddm.sharding.plan_cache`.

A plan is pure data about one statement *digest*: it names tokens by index (stable for every statement with that
digest) and literal values by slot index (`Lexed.slots`), never by byte offset or value. At execution time
`Plan.bind(lexed, sql, params)` (implemented in `ddm.sharding.rewrite.compile_units`) reads this query's spans and values and
produces the per-shard SQL and the merge description, without sqlglot.

Positions inside templates are *position codes*: `tok * 2` is the start of token `tok`, `tok * 2 + 1` its end, so an
insertion point "after the select list" is `last_tok * 2 + 1`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ddm.wire.constants import er
from ddm_core.lexer import T_COMMENT_EXEC, lex

if TYPE_CHECKING:
    from ddm.config import TableRule


class PlanError(Exception):
    """A statement ddm refuses (at plan time or, for value-dependent cases, at bind time): MySQL code + message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def sqlstate(self) -> bytes:
        return er.sqlstate(self.code)


def pos(tok: int, end: bool = False) -> int:
    """Position code of the start (or end) of token `tok`."""
    return tok * 2 + (1 if end else 0)


@dataclass(frozen=True, slots=True)
class TokRange:
    """Tokens first..last (inclusive), copied from this query's text (with prepared-statement params inlined)."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class LimitRows:
    """Template piece: the shard row count `offset + count`, formatted at bind time."""


LIMIT_ROWS = LimitRows()
Piece = bytes | TokRange | LimitRows


@dataclass(frozen=True, slots=True)
class Tpl:
    """Replace the bytes between two position codes with the concatenated pieces (start == end: insertion)."""

    start: int
    end: int
    pieces: tuple[Piece, ...]


@dataclass(frozen=True, slots=True)
class TableRef:
    """An occurrence of a logical table name: tokens first..last ([db .] name) get the physical name of a target."""

    first: int
    last: int
    table: str  # logical table name, lower case


# Condition operators on a shard key (KeyCond.op)
EQ, LO, HI = 0, 1, 2


@dataclass(frozen=True, slots=True)
class KeyCond:
    """`column = slot`, `column IN (slots)`, `column >[=] slot` (LO) or `column <[=] slot` (HI).

    neg[i] is true when the value is written `-?` (the lexer keeps the sign as an operator)."""

    column: str
    op: int
    slots: tuple[int, ...]
    neg: tuple[bool, ...]
    inclusive: bool = True


@dataclass(frozen=True, slots=True)
class InSplit:
    """`key IN (?, ?, ...)` that is ANDed with the rest of WHERE: each target gets only its own values.

    first/last are the tokens of the first and last value; slots are the value slots in order."""

    column: str
    first: int
    last: int
    slots: tuple[int, ...]
    neg: tuple[bool, ...]


# Route modes
ROUTE_FIXED = 0  # one fixed data source (single/unsharded tables; the table name is unchanged)
ROUTE_SHARD = 1  # sharded table routed by key conditions (dnf None = every physical table)
ROUTE_ALL = 2  # every copy of a broadcast table (writes, DDL)
ROUTE_ONE = 3  # one copy of a broadcast table (reads)


@dataclass(frozen=True, slots=True)
class Position:
    """An ORDER BY / GROUP BY item written as a column position (`ORDER BY 2`, `-1`, `(2)`).

    The number is literal slot `slot` (negated when written `-?`): statements that differ only in the number share
    one digest and one plan, so the column it names is only known at bind time (`ddm.sharding.rewrite._merge_desc` turns it
    into the column index `position - 1`, or refuses it the way MySQL does). The same slot may hold a string or a
    decimal in another statement of the digest (`ORDER BY 'x'`): that is a constant, not a position. The data
    nodes always get the item as written."""

    slot: int
    neg: bool = False


@dataclass(frozen=True, slots=True)
class Scatter:
    """What a SELECT needs when it runs on more than one shard: shard-SQL edits and the merge description.

    Column indexes are select-list positions; negative values count from the end of the row (needed after `*`,
    whose width is only known from the result set) and are fixed by `MergeDesc.resolve(ncolumns)`. order_by and
    group_by items may be `Position`s (then `positions` is true), resolved at bind time against `items`, the number
    of select-list items as written (a `*` counts as one)."""

    edits: tuple[Tpl, ...]
    order_by: tuple[tuple[int | Position, bool], ...]
    group_by: tuple[int | Position, ...]
    aggregates: tuple[tuple[int, str, tuple[int, ...]], ...]
    distinct: bool
    having: tuple | None  # expression tree, see ddm.sharding.rewrite.make_predicate
    limit_count: int  # slot of the LIMIT row count, -1 = no LIMIT
    limit_offset: int  # slot of the offset, -1 = none
    visible_columns: int  # -1 = unknown (select list has `*`)
    nderived: int
    positions: bool = False  # order_by / group_by hold a Position
    items: int = 0  # select-list items as written


@dataclass(frozen=True, slots=True)
class MergeDesc:
    """Merge description for `ddm_core.merge.MergeSpec` (same field names; the executor adds `binary`).

    aggregates: (column, func, arg_columns), func in COUNT, SUM, MIN, MAX, AVG (arg_columns = (sum_col, count_col)
    of the derived SUM/COUNT; the AVG column itself carries each shard's own AVG and is to be overwritten),
    COUNT_DISTINCT (arg_columns = (x_col,): shard rows come grouped by group keys + x and sorted by them, so equal x
    values of one group are adjacent after the merge-sort). Shard rows of a GROUP BY query arrive sorted ascending by
    group_by; order_by is the final order (applied after grouping). having: predicate(row values) -> bool."""

    order_by: tuple[tuple[int, bool], ...]
    group_by: tuple[int, ...]
    aggregates: tuple[tuple[int, str, tuple[int, ...]], ...]
    distinct: bool
    having: Callable[[Sequence[Any]], bool] | None
    limit: int | None
    offset: int
    visible_columns: int
    nderived: int = 0

    def resolve(self, ncolumns: int) -> MergeDesc:
        """Make every column index absolute once the shards' column count is known (select lists with `*`)."""
        if self.visible_columns >= 0 and not self._has_negative():
            return self

        def fix(c: int) -> int:
            return c + ncolumns if c < 0 else c

        return MergeDesc(
            order_by=tuple((fix(c), d) for c, d in self.order_by),
            group_by=tuple(fix(c) for c in self.group_by),
            aggregates=tuple((fix(c), f, tuple(fix(a) for a in args)) for c, f, args in self.aggregates),
            distinct=self.distinct,
            having=_shift_predicate(self.having, ncolumns) if self.having is not None else None,
            limit=self.limit,
            offset=self.offset,
            visible_columns=ncolumns - self.nderived,
            nderived=self.nderived,
        )

    def _has_negative(self) -> bool:
        cols = [c for c, _ in self.order_by] + list(self.group_by)
        for c, _, args in self.aggregates:
            cols.append(c)
            cols.extend(args)
        return any(c < 0 for c in cols)


def _shift_predicate(pred: Callable[[Sequence[Any]], bool], ncolumns: int) -> Callable[[Sequence[Any]], bool]:
    # The compiled predicate indexes rows with Python indexing, so negative columns already count from the end.
    return pred


class Unit(NamedTuple):
    """One statement for one data source (a NamedTuple: built on every query, it must be cheap)."""

    datasource: str
    sql: bytes


class ExecutionUnits(NamedTuple):
    """The result of binding a plan to one query: statements to run and how to merge their results.

    merge is None when rows pass through unchanged (one unit, or a write: the executor sums affected rows).
    generated_ids: keys generated for INSERT rows, in row order (the first one is the client's insert id).
    replicated: every unit writes the same rows to its own copy of a broadcast table (ROUTE_ALL): the client's
    affected-row count is one copy's, not the sum over the copies."""

    units: tuple[Unit, ...]
    merge: MergeDesc | None = None
    generated_ids: tuple[int, ...] = ()
    is_write: bool = False
    replicated: bool = False


class Plan:
    """Base of every plan. `bind` turns it into ExecutionUnits for one query (see ddm.sharding.rewrite.compile_units)."""

    __slots__ = ()
    kind = "?"

    def bind(self, lexed: Any, params: Sequence[Any] | None = None, keys: Sequence[int] | None = None,
             sql: bytes | None = None, inline: bool = True) -> ExecutionUnits:
        """Per-shard SQL + merge description for one query with this plan's digest (no sqlglot).

        params: prepared-statement values (inlined as literals); keys: generated shard keys for an InsertPlan
        (see `ddm.sharding.rewrite.keys_needed`); sql: the query text when `lexed` does not carry it."""
        return _compile_units()(self, lexed, sql, params, keys, inline)


@dataclass(frozen=True, slots=True)
class QueryPlan(Plan):
    """SELECT / UPDATE / DELETE / DDL / any statement sent to one or more routed targets.

    names maps a target (datasource, physical table of `rule`) to the replacement bytes for each TableRef, in
    order. rule is the routed table (None for ROUTE_FIXED). dnf: OR of ANDs of key conditions, None = no pruning.
    single_target_error: raised at bind when the statement would reach more than one target and that is not
    supported (UPDATE ... LIMIT, SELECT constructs the merger cannot handle); scatter: merge info otherwise."""

    statement: str
    mode: int
    datasource: str  # ROUTE_FIXED: the data source
    rule: TableRule | None
    tables: tuple[TableRef, ...]
    names: Mapping[tuple[str, str], tuple[bytes, ...]]
    dnf: tuple[tuple[KeyCond, ...], ...] | None = None
    in_split: InSplit | None = None
    scatter: Scatter | None = None
    single_target_error: PlanError | None = None
    is_write: bool = False
    router: Any = None  # ddm.sharding.routing.TableRouter of `rule`, filled by the planner (saves a lookup per query)
    # ddm_core.shard.PointRoute when the statement is `... WHERE key = ?` on one sharded table (derived from the
    # fields above once, when the router is set): binds a query to its one unit without the generic machinery
    point: Any = field(default=None, init=False, repr=False, compare=False)
    kind = "query"

    def __post_init__(self) -> None:
        if self.router is not None and self.mode == ROUTE_SHARD and self.dnf is not None:
            object.__setattr__(self, "point", _point_route()(self))


@dataclass(frozen=True, slots=True)
class InsertRow:
    """One VALUES tuple: tokens open..close are its parentheses; key is the slot of the shard-key value, or
    KEY_GENERATE (NULL/DEFAULT written, or column absent: generate), and key_tok the token to replace with a generated
    key (-1: append `, id` before the closing parenthesis)."""

    open: int
    close: int
    key: int
    key_neg: bool
    key_tok: int


KEY_GENERATE = -1


@dataclass(frozen=True, slots=True)
class InsertPlan(Plan):
    """INSERT/REPLACE ... VALUES into a sharded table: rows are split by target, one statement per physical table.

    column: the shard-key column (both strategies use it; other layouts are refused at plan time).
    add_column_tok: when the key column is absent from the column list, the token of the list's `)`: the rewrite
    inserts `, column` before it and `, <generated id>` before each row's `)`.
    gen_column_tok: the same for the rule's key_generator column when it is another column than the key and is
    absent from the column list: `, gen_column` and a generated id per row are appended (the key routes).
    set_form: `INSERT ... SET a = 1, ...` as one row whose tokens open..close are the assignments."""

    statement: str
    rule: TableRule
    column: str
    tables: tuple[TableRef, ...]
    names: Mapping[tuple[str, str], tuple[bytes, ...]]
    rows: tuple[InsertRow, ...]
    add_column_tok: int
    router: Any = None
    gen_column_tok: int = -1
    set_form: bool = False  # INSERT ... SET: one row, open..close = its assignments; generated values appended
    kind = "insert"
    is_write = True


@dataclass(frozen=True, slots=True)
class DatabasePlan(Plan):
    """CREATE/DROP DATABASE (SCHEMA): executed by the executor, not sent anywhere as is."""

    action: str  # "CREATE" | "DROP"
    name: str
    if_exists: bool  # IF NOT EXISTS for CREATE, IF EXISTS for DROP
    kind = "database"


@dataclass(frozen=True, slots=True)
class UnsupportedPlan(Plan):
    """A statement ddm cannot run correctly: answer with this error (never a wrong result)."""

    code: int
    message: str
    kind = "unsupported"

    def error(self) -> PlanError:
        return PlanError(self.code, self.message)


# Plan.bind is implemented by ddm.sharding.rewrite, which imports this module: it installs itself here when it is
# imported (ddm.sharding.planner imports it, so every plan the planner makes can bind). No import back: no cycle.
_COMPILE: Callable[..., ExecutionUnits] | None = None
_POINT: Callable[[QueryPlan], Any] | None = None


def install_rewriter(compile_units: Callable[..., ExecutionUnits], point_route: Callable[[QueryPlan], Any]) -> None:
    global _COMPILE, _POINT
    _COMPILE, _POINT = compile_units, point_route


def _compile_units() -> Callable[..., ExecutionUnits]:
    if _COMPILE is None:
        raise RuntimeError("Plan.bind needs ddm.sharding.rewrite (import it, or plan with ddm.sharding.planner)")
    return _COMPILE


def _point_route() -> Callable[[QueryPlan], Any]:
    if _POINT is None:
        raise RuntimeError("QueryPlan needs ddm.sharding.rewrite (import it, or plan with ddm.sharding.planner)")
    return _POINT


def unsupported(message: str, code: int = er.NOT_SUPPORTED_YET) -> UnsupportedPlan:
    return UnsupportedPlan(code, message)


def database_ddl_refusal(sql: bytes) -> str | None:
    """The error message for CREATE [OR REPLACE] / DROP {DATABASE | SCHEMA} [IF [NOT] EXISTS] name, None for any
    other statement.

    ddm's logical databases are its configuration: forwarded, CREATE DATABASE would make a database on one node that
    ddm does not know (OK, then 1049 Unknown database on USE), DROP DATABASE would remove a configured database's
    data and leave it configured. The message says how to add or remove one instead."""
    lexed = lex(sql)
    words = [lexed.text(i) for i in range(min(lexed.ntokens, 8)) if lexed.kind(i) != T_COMMENT_EXEC]
    up = [w.upper() for w in words[:4]]
    if not up or up[0] not in (b"CREATE", b"DROP"):
        return None
    i = 1
    if up[0] == b"CREATE" and up[1:3] == [b"OR", b"REPLACE"]:
        i = 3
    if len(up) <= i or up[i] not in (b"DATABASE", b"SCHEMA"):
        return None
    rest = words[i + 1:]
    while rest and rest[0].upper() in (b"IF", b"NOT", b"EXISTS"):
        rest = rest[1:]
    name = rest[0].strip(b"`").replace(b"``", b"`").decode("utf-8", "replace") if rest else "?"
    what = f"{up[0].decode()} {up[i].decode()}"
    if up[0] == b"CREATE":
        how = (f"to add logical database '{name}', create its physical database on a data node, add it to the "
               "`databases:` section of ddm's configuration file and run `ddm reload` (see docs/configuration.md)")
    else:
        how = (f"to remove logical database '{name}', delete it from the `databases:` section of ddm's configuration "
               "file, run `ddm reload`, then drop its physical databases on the data nodes")
    return (f"This version of ddm doesn't yet support '{what}' from a client: logical databases are defined in "
            f"ddm's configuration; {how}")


class NeedsColumns(Exception):  # noqa: N818 (a request, not an error)
    """The planner needs the definition-order columns of sharded table `table` (INSERT without a column list)."""

    def __init__(self, table: str) -> None:
        super().__init__(table)
        self.table = table
