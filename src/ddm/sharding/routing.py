"""Routing: which physical tables (data source, table) a statement on a logical table must touch.

The planner reduces a WHERE clause (or INSERT rows) to conditions on shard columns: `Eq(values)` for `col = v` and
`col IN (...)` (several values = union), `Range(lo, lo_inclusive, hi, hi_inclusive)` for comparisons / BETWEEN.
Conditions are keyed by lower-case column name; a missing condition means "any value".

`TableRouter(rule)` is the hot API: it builds the shard functions once (per config snapshot) and precomputes every
`Target`, so routing one Eq value is two C calls and a tuple lookup. The module-level `route()` etc. wrap a router
cached per TableRule object.

Semantics worth knowing:
* Results are deterministic: data source order, then table order within a data source, without duplicates.
* NULL in an Eq is skipped by `route()` (`col = NULL` / `col IN (NULL)` match no row), so `route()` can return ()
  when no row can match (also for an empty IN list or an empty range); the caller decides what to run then.
  A value that cannot be placed (wrong type, outside the configured intervals) raises ShardKeyError.
* When the database and table strategies use the same column, Eq values are placed pairwise (value -> exactly one
  table); a small integer Range over a mod/two_level column is enumerated exactly the same way. Different columns
  combine as a cartesian product (that is exactly what AND of the two conditions means).
* Broadcast tables: `route()` returns every copy (writes), `route_one()` one copy (reads). Single tables: their
  one target.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from ddm.config import DatabaseConfig, ShardStrategy, TableRule
from ddm_core.shard import ShardFunction, ShardKeyError, make_shard_function

__all__ = [
    "Eq",
    "Range",
    "Condition",
    "Target",
    "TableRouter",
    "ShardKeyError",
    "route",
    "route_one",
    "route_all",
    "group_values_by_target",
    "router_for",
    "build_routers",
]


@dataclass(frozen=True, slots=True)
class Eq:
    """`col = v` (one value) or `col IN (v1, v2, ...)`."""

    values: tuple

    def __post_init__(self) -> None:
        if type(self.values) is not tuple:
            object.__setattr__(self, "values", tuple(self.values))


@dataclass(frozen=True, slots=True)
class Range:
    """`lo <(=) col <(=) hi`; None for an unbounded side."""

    lo: Any = None
    lo_inclusive: bool = True
    hi: Any = None
    hi_inclusive: bool = True


Condition = Eq | Range


class Target(NamedTuple):
    datasource: str
    table: str


# Enumerate a Range over integer keys (same-column mod/two_level) when it holds at most this many integers per
# physical table: above that, the cartesian product of the two prunings is as good.
_ENUM_FACTOR = 2
_INT_ALGOS = ("mod", "two_level")


def _int_bounds(r: Range) -> tuple[int, int] | None:
    """The smallest and largest integers inside a closed-on-both-sides numeric Range, else None."""
    if r.lo is None or r.hi is None:
        return None
    try:
        lo, hi = _num(r.lo), _num(r.hi)
    except (InvalidOperation, ValueError, TypeError, OverflowError):
        return None
    a = math.ceil(lo) if r.lo_inclusive else math.floor(lo) + 1
    b = math.floor(hi) if r.hi_inclusive else math.ceil(hi) - 1
    return a, b


def _num(v: Any) -> int | Decimal | float:
    if isinstance(v, (int, Decimal, float)) and not isinstance(v, bool):
        if isinstance(v, (Decimal, float)) and not math.isfinite(v):
            raise ValueError(v)
        return v
    if isinstance(v, (bytes, bytearray)):
        v = bytes(v).decode("ascii")
    if isinstance(v, str):
        if "_" in v:  # Decimal() accepts "1_000", MySQL does not
            raise ValueError(v)
        d = Decimal(v.strip())
        if not d.is_finite() or (d and d.adjusted() > 64):
            raise ValueError(v)
        return d
    raise TypeError(v)


class TableRouter:
    """Routes conditions on one logical table. Build once per config snapshot; immutable and shareable."""

    __slots__ = (
        "name",
        "kind",
        "datasources",
        "targets",
        "all_targets",
        "db_column",
        "table_column",
        "db_function",
        "table_functions",
        "_same_column",
        "_enumerable",
        "_all_ds",
        "_all_tb",
        "__weakref__",
    )

    def __init__(self, rule: TableRule) -> None:
        self.name = rule.name
        self.kind = rule.kind
        self.datasources: tuple[str, ...] = tuple(rule.datasources)
        if not self.datasources:
            raise ValueError(f"table {rule.name}: no data sources")
        for ds in self.datasources:
            if not rule.tables.get(ds):
                raise ValueError(f"table {rule.name}: data source {ds} has no physical tables")
        # targets[d][t]: every Target object is built here once, routing only looks them up.
        self.targets: tuple[tuple[Target, ...], ...] = tuple(
            tuple(Target(ds, t) for t in rule.tables[ds]) for ds in self.datasources
        )
        self.all_targets: tuple[Target, ...] = tuple(t for row in self.targets for t in row)
        self._all_ds = tuple(range(len(self.datasources)))
        self._all_tb = tuple(tuple(range(len(row))) for row in self.targets)
        self.db_column: str | None = None
        self.table_column: str | None = None
        self.db_function: ShardFunction | None = None
        self.table_functions: tuple[ShardFunction | None, ...] = (None,) * len(self.datasources)
        if self.kind == "sharded":
            self._build_sharded(rule)
        elif self.kind == "single" and len(self.all_targets) != 1:
            raise ValueError(f"table {rule.name}: a single table must have exactly one physical table")
        elif self.kind not in ("single", "broadcast"):
            raise ValueError(f"table {rule.name}: unknown kind {self.kind!r}")
        self._same_column = self.db_column is not None and self.db_column == self.table_column
        self._enumerable = (
            self._same_column
            and rule.database_strategy is not None
            and rule.table_strategy is not None
            and rule.database_strategy.algorithm in _INT_ALGOS
            and rule.table_strategy.algorithm in _INT_ALGOS
        )

    def _build_sharded(self, rule: TableRule) -> None:
        nds = len(self.datasources)
        dbs: ShardStrategy | None = rule.database_strategy
        if dbs is not None:
            self.db_column = dbs.column.lower()
            self.db_function = make_shard_function(dbs, nds, datasources=nds)
        elif nds > 1:
            # without one, a row's data source would be undefined (reads could scan all, INSERT could not place)
            raise ValueError(f"table {rule.name}: several data sources need a database strategy")
        ts: ShardStrategy | None = rule.table_strategy
        if ts is not None:
            self.table_column = ts.column.lower()
            # data sources with the same table count share one function
            by_count: dict[int, ShardFunction] = {}
            fns = []
            for row in self.targets:
                fn = by_count.get(len(row))
                if fn is None:
                    fn = by_count[len(row)] = make_shard_function(ts, len(row), datasources=nds)
                fns.append(fn)
            self.table_functions = tuple(fns)
        elif any(len(row) > 1 for row in self.targets):
            raise ValueError(f"table {rule.name}: several tables per data source need a table strategy")

    # -- routing ----------------------------------------------------------------------------------------------

    def route(self, conditions: Mapping[str, Condition]) -> tuple[Target, ...]:
        """Every physical table a statement with these conditions must touch (see the module docstring)."""
        if self.kind != "sharded":
            return self.all_targets
        dc = conditions.get(self.db_column) if self.db_column is not None else None
        if self._same_column:
            if dc is None:
                return self.all_targets
            if type(dc) is Eq:
                values = dc.values
                if len(values) == 1 and values[0] is not None:  # the hot path: one key, one table
                    v = values[0]
                    d = self.db_function.index(v)  # type: ignore[union-attr]
                    return (self.targets[d][self.table_functions[d].index(v)],)  # type: ignore[union-attr]
                return self._pairs(values)
            if self._enumerable:
                b = _int_bounds(dc)
                if b is not None and b[1] - b[0] + 1 <= _ENUM_FACTOR * len(self.all_targets):
                    return self._pairs(range(b[0], b[1] + 1))
            return self._product(self._ds_indexes(dc), dc)
        tc = conditions.get(self.table_column) if self.table_column is not None else None
        return self._product(self._ds_indexes(dc), tc)

    def _pairs(self, values: Iterable[Any]) -> tuple[Target, ...]:
        # Same column for both strategies: each value picks exactly one (data source, table).
        dbf = self.db_function
        tbf = self.table_functions
        seen: set[tuple[int, int]] = set()
        for v in values:
            if v is None:
                continue
            d = dbf.index(v) if dbf is not None else 0
            f = tbf[d]
            seen.add((d, f.index(v) if f is not None else 0))
        return tuple(self.targets[d][t] for d, t in sorted(seen))

    def _ds_indexes(self, cond: Condition | None) -> Sequence[int]:
        if self.db_function is None or cond is None:
            return self._all_ds
        return self._indexes(self.db_function, cond, self._all_ds)

    def _tb_indexes(self, d: int, cond: Condition | None) -> Sequence[int]:
        f = self.table_functions[d]
        if f is None or cond is None:
            return self._all_tb[d]
        return self._indexes(f, cond, self._all_tb[d])

    @staticmethod
    def _indexes(fn: ShardFunction, cond: Condition, every: Sequence[int]) -> Sequence[int]:
        if type(cond) is Eq:
            vals = cond.values
            if len(vals) == 1 and vals[0] is not None:
                return (fn.index(vals[0]),)
            return sorted({fn.index(v) for v in vals if v is not None})
        if type(cond) is Range:
            r = fn.indexes_for_range(cond.lo, cond.lo_inclusive, cond.hi, cond.hi_inclusive)
            return every if r is None else r
        raise TypeError(f"not a routing condition: {cond!r}")

    def _product(self, ds: Sequence[int], tc: Condition | None) -> tuple[Target, ...]:
        out: list[Target] = []
        for d in ds:
            row = self.targets[d]
            out.extend(row[t] for t in self._tb_indexes(d, tc))
        return tuple(out)

    def route_one(self, hint: int | str | None = None) -> Target:
        """One copy of a broadcast table for a read: the data source named by a str hint, the hint-th one (mod the
        count) for an int hint (e.g. a connection id, to spread reads), else the first. Single: its table;
        sharded: the first physical table (metadata queries)."""
        if self.kind == "broadcast":
            if isinstance(hint, str):
                try:
                    return self.targets[self.datasources.index(hint)][0]
                except ValueError:
                    pass
            elif isinstance(hint, int):
                return self.targets[hint % len(self.targets)][0]
        return self.all_targets[0]

    def route_all(self) -> tuple[Target, ...]:
        return self.all_targets

    # -- splitting IN lists and multi-row INSERTs -------------------------------------------------------------

    def group_values(
        self,
        column: str,
        values: Sequence[Any],
        conditions: Mapping[str, Condition] | None = None,
        *,
        skip_null: bool = False,
    ) -> dict[Target, list[int]]:
        """Which positions of `values` (values of `column`) go to which physical table, in target order.

        A strategy on another column is narrowed by `conditions` (else that dimension is every index, so a
        position can appear under several targets — fine for splitting an IN list, wrong for INSERT rows: use
        group_rows for those). NULL raises ShardKeyError unless skip_null (IN lists: NULL matches nothing)."""
        column = column.lower()
        n = len(values)
        if self.kind != "sharded":
            return {t: list(range(n)) for t in self.all_targets}
        conds = conditions or {}
        by_db = self.db_column == column and self.db_function is not None
        by_tb = self.table_column == column
        other_ds = None if by_db else self._ds_indexes(conds.get(self.db_column) if self.db_column else None)
        tcond = None if by_tb or self.table_column is None else conds.get(self.table_column)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, v in enumerate(values):
            if v is None:
                if skip_null:
                    continue
                raise ShardKeyError(f"a NULL shard key ({column}) cannot be placed")
            for d in (self.db_function.index(v),) if by_db else other_ds:  # type: ignore[union-attr]
                f = self.table_functions[d]
                for t in (f.index(v),) if by_tb and f is not None else self._tb_indexes(d, tcond):
                    g = groups.get((d, t))
                    if g is None:
                        groups[(d, t)] = [i]
                    else:
                        g.append(i)
        return {self.targets[d][t]: groups[(d, t)] for d, t in sorted(groups)}

    def group_rows(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[Target, list[int]]:
        """Which rows of a multi-row INSERT go to which physical table (each row to exactly one for a sharded
        table, to every copy for a broadcast table). `columns` names the row positions; a shard column that is
        missing or NULL raises ShardKeyError (fill generated keys in first)."""
        n = len(rows)
        if self.kind != "sharded":
            return {t: list(range(n)) for t in self.all_targets}
        names = [c.lower() for c in columns]

        def pos(col: str | None) -> int | None:
            if col is None:
                return None
            try:
                return names.index(col)
            except ValueError:
                raise ShardKeyError(
                    f"INSERT into sharded table {self.name} must give shard column {col}"
                ) from None

        dp = pos(self.db_column) if self.db_function is not None else None
        tp = pos(self.table_column)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, row in enumerate(rows):
            if dp is not None:
                v = row[dp]
                if v is None:
                    raise ShardKeyError(f"a NULL shard key ({self.db_column}) cannot be placed")
                d = self.db_function.index(v)  # type: ignore[union-attr]
            else:
                d = 0
            f = self.table_functions[d]
            if tp is not None and f is not None:
                v = row[tp]
                if v is None:
                    raise ShardKeyError(f"a NULL shard key ({self.table_column}) cannot be placed")
                t = f.index(v)
            else:
                t = 0
            g = groups.get((d, t))
            if g is None:
                groups[(d, t)] = [i]
            else:
                g.append(i)
        return {self.targets[d][t]: groups[(d, t)] for d, t in sorted(groups)}


# -- module-level API over a per-rule cache ----------------------------------------------------------------------

# id(rule) -> (weak reference to the rule, router). TableRule holds mappings, so it is not hashable; the weak
# reference guards against id reuse and the finalizer drops the entry when a config snapshot is released.
_routers: dict[int, tuple[weakref.ref, TableRouter]] = {}


def router_for(rule: TableRule) -> TableRouter:
    """The cached TableRouter of a rule object (built on first use)."""
    key = id(rule)
    hit = _routers.get(key)
    if hit is not None and hit[0]() is rule:
        return hit[1]
    router = TableRouter(rule)
    _routers[key] = (weakref.ref(rule), router)
    weakref.finalize(rule, _routers.pop, key, None)
    return router


def build_routers(database: DatabaseConfig) -> dict[str, TableRouter]:
    """Routers for every table rule of a logical database (lower-case logical table name -> router)."""
    return {name.lower(): TableRouter(rule) for name, rule in database.tables.items()}


def route(rule: TableRule, conditions: Mapping[str, Condition]) -> tuple[Target, ...]:
    return router_for(rule).route(conditions)


def route_one(rule: TableRule, hint: int | str | None = None) -> Target:
    return router_for(rule).route_one(hint)


def route_all(rule: TableRule) -> tuple[Target, ...]:
    return router_for(rule).route_all()


def group_values_by_target(
    rule: TableRule,
    column: str,
    values: Sequence[Any],
    conditions: Mapping[str, Condition] | None = None,
    *,
    skip_null: bool = False,
) -> dict[Target, list[int]]:
    return router_for(rule).group_values(column, values, conditions, skip_null=skip_null)
