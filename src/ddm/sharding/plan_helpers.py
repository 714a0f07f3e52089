"""Small helpers on sqlglot trees and names shared by the planner and the scatter-merge builder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlglot import exp

from ddm.config import TableRule
from ddm.sharding.plan import (
    PlanError,
    TableRef,
)
from ddm.sharding.plan_tokens import PlanTokens
from ddm.wire.constants import er

# ---------------------------------------------------------------------------------------------------------------
# small helpers


def map_having(tree: tuple, col: Any) -> tuple:
    tag = tree[0]
    if tag in ("and", "or"):
        return (tag, map_having(tree[1], col), map_having(tree[2], col))
    if tag == "not":
        return ("not", map_having(tree[1], col))
    if tag == "cmp":
        return ("cmp", tree[1], map_having(tree[2], col), map_having(tree[3], col))
    if tag == "col":
        return ("col", col(tree[1]))
    return tree


def slot_of(node: exp.Expression | None) -> tuple[int, bool] | None:
    """(slot index, negated) of `:sK` or `-:sK`."""
    neg = False
    if isinstance(node, exp.Neg):
        node, neg = node.this, True
    if isinstance(node, exp.Placeholder) and isinstance(node.this, str) and node.this.startswith("s"):
        return int(node.this[1:]), neg
    return None


def position_of(e: exp.Expression) -> tuple[int, bool] | None:
    """(slot, negated) when an ORDER BY / GROUP BY item is a column position for MySQL: a literal in parentheses
    or not, with at most one minus sign (`-(1)` is position -1, an error; `- -1` is an expression: a constant).
    Whether the literal is an integer (a position) or not (a constant) is this query's business: see
    `ddm.sharding.rewrite._position`."""
    while isinstance(e, exp.Paren):
        e = e.this
    neg = isinstance(e, exp.Neg)
    if neg:
        e = e.this
        while isinstance(e, exp.Paren):
            e = e.this
    if not isinstance(e, exp.Placeholder):
        return None
    s = slot_of(e)
    return (s[0], neg) if s is not None else None


def conjuncts(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Paren):
        return conjuncts(node.this)
    if isinstance(node, exp.And):
        return conjuncts(node.this) + conjuncts(node.expression)
    return [node]


def enclosing_query(node: exp.Expression) -> exp.Expression | None:
    """Nearest SELECT/UPDATE/DELETE/INSERT/UNION above `node` (the statement itself for top-level tables)."""
    p = node.parent
    while p is not None:
        if isinstance(p, (exp.Select, exp.Update, exp.Delete, exp.Insert, exp.Union, exp.Subquery)):
            return p
        p = p.parent
    return None


def shard_columns(rule: TableRule) -> tuple[str, ...]:
    cols = []
    for s in (rule.database_strategy, rule.table_strategy):
        if s is not None and s.column.lower() not in cols:
            cols.append(s.column.lower())
    return tuple(cols)


def is_star(e: exp.Expression) -> bool:
    return isinstance(e, exp.Star) or isinstance(e, exp.Column) and isinstance(e.this, exp.Star)


def norm(e: exp.Expression) -> str:
    """Comparable text of an expression: identifiers lower-cased, qualifiers kept."""
    return e.sql(dialect="mysql", normalize=True, identify=False).lower()


def quote(name: str) -> bytes:
    return b"`" + name.replace("`", "``").encode() + b"`"


def plain(name: str) -> bool:
    return name.replace("_", "a").replace("$", "a").isalnum() and name.isascii() and not name[:1].isdigit()


def drop_noop_refs(t: PlanTokens, refs: tuple[TableRef, ...], names: Mapping[tuple[str, str], tuple[bytes, ...]]
                    ) -> tuple[tuple[TableRef, ...], dict[tuple[str, str], tuple[bytes, ...]]]:
    """Refs whose replacement is the original text on every target are left out (no edit to make)."""
    keep = [i for i, ref in enumerate(refs)
            if any(v[i] != t.sql[t.lexed.start(ref.first):t.lexed.end(ref.last)] for v in names.values())]
    return tuple(refs[i] for i in keep), {k: tuple(v[i] for i in keep) for k, v in names.items()}


def not_supported(what: str) -> PlanError:
    return PlanError(er.NOT_SUPPORTED_YET, what)
