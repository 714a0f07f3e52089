"""Table aliases in the token refs of a statement: which `name.` qualifiers are aliases, and the target list of a
multi-table DELETE (`DELETE t FROM t_order t WHERE ...`).

A qualifier names an alias when a table of the statement is aliased with that name (`FROM t_order t_order`, `FROM
t_order AS t_order`): MySQL then resolves `t_order.col` to the alias, so the qualifier must stay as written while
the table in FROM becomes its physical name. A table that has an alias cannot be named by its own name in that
scope, so a qualifier equal to an alias never means the physical table. When the same name is an alias in one place
and an unaliased table in another (scopes the token view cannot tell apart), the statement is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from sqlglot import exp

from ddm.sharding.plan import TableRef
from ddm.sharding.plan_helpers import not_supported
from ddm.sharding.plan_tokens import T_KEYWORD, PlanTokens


def alias_names(tables: Sequence[exp.Table], wanted: Collection[str], renamed: Callable[[str], bool]) -> set[str]:
    """Names in `wanted` that some table of the statement carries as its alias (qualifiers naming them stay);
    `renamed(name)`: whether the table's physical names differ from its logical name (else nothing to decide)."""
    aliased = {tb.alias.lower() for tb in tables if tb.alias}
    out = {n for n in aliased & set(wanted) if renamed(n)}
    for tb in tables:
        if not tb.alias and tb.name.lower() in out:
            raise not_supported(f"ambiguous use of the name '{tb.name.lower()}' (alias of one table and unaliased "
                                f"table elsewhere in the statement)")
    return out


def drop_alias_qualifiers(t: PlanTokens, refs: Sequence[TableRef], aliases: Collection[str]) -> list[TableRef]:
    """Refs without the `alias.` qualifiers (an unqualified name followed by a dot whose name is an alias)."""
    return [r for r in refs if not (r.table in aliases and r.first == r.last and t.is_punct(r.last + 1, b"."))]


def delete_targets(t: PlanTokens, first: int, ast: exp.Expression, tables: Sequence[exp.Table]
                   ) -> tuple[list[exp.Table], tuple[int, int] | None]:
    """The target tables of `DELETE targets FROM ...` / `DELETE FROM targets USING ...` (AST nodes that name a
    table or alias, not table references) and their token range; ([], None) for a single-table DELETE."""
    if not isinstance(ast, exp.Delete):
        return [], None
    if ast.args.get("using"):
        targets = [ast.this, *(ast.args.get("tables") or [])]
    elif ast.args.get("tables"):
        targets = list(ast.args["tables"])
    else:
        return [], None
    depth = t.depth[first]
    i = first + 1
    while i < t.end and t.up[i] in (b"LOW_PRIORITY", b"QUICK", b"IGNORE"):
        i += 1
    start = i
    if t.is_word(i, b"FROM"):  # DELETE FROM targets USING refs
        start = i + 1
        stop = b"USING"
    else:
        stop = b"FROM"
    end = start
    while end < t.end and not (t.depth[end] == depth and t.kind[end] == T_KEYWORD and t.up[end] == stop):
        end += 1
    if end >= t.end:
        raise not_supported("multi-table DELETE whose target list cannot be located")
    return targets, (start, end - 1)


def target_refs(t: PlanTokens, span: tuple[int, int], body: Sequence[exp.Table], wanted: Collection[str],
                dbname: str) -> list[TableRef]:
    """Refs of the DELETE target names that name an unaliased table of the statement (they get its physical name);
    targets naming an alias stay as written."""
    aliases = {tb.alias.lower() for tb in body if tb.alias}
    plain = {tb.name.lower() for tb in body if not tb.alias}
    out = []
    for a, b in t.split_commas(span[0], span[1]):
        if t.is_punct(b, b"*") and b - 2 >= a and t.is_punct(b - 1, b"."):
            b -= 2  # t.*
        name = t.name(b)
        if name is None or name not in wanted or name in aliases or name not in plain:
            continue
        if b - 2 >= a and t.is_punct(b - 1, b"."):
            if t.name(b - 2) != dbname:
                continue
            out.append(TableRef(b - 2, b, name))
        else:
            out.append(TableRef(b, b, name))
    return out
