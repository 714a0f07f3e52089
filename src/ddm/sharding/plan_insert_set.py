"""`INSERT|REPLACE INTO t SET col = value, ... [ON DUPLICATE KEY UPDATE ...]` into a sharded table, planned from
tokens as one row: the row's tokens are the assignments, the key value is the one assigned to the sharding key
(a literal; NULL / DEFAULT / 0 or no assignment when the rule generates it, then `, key = <id>` is appended)."""

from __future__ import annotations

from typing import Any

from ddm.config.model import TableRule
from ddm.sharding.plan import KEY_GENERATE, ROUTE_ALL, InsertPlan, InsertRow, Plan, PlanError, QueryPlan
from ddm.sharding.plan_helpers import not_supported, shard_columns
from ddm.sharding.plan_tokens import PlanTokens
from ddm.wire.constants import er

ER_FIELD_SPECIFIED_TWICE = 1110


def set_row(t: PlanTokens, set_tok: int, statement: str, key: str, gen: bool) -> tuple[list[str], InsertRow, int]:
    """(assigned columns, the row, first token after the assignments) of the SET clause at token `set_tok`."""
    depth = t.depth[set_tok]
    stop = set_tok + 1
    while stop < t.end and not (t.depth[stop] == depth and t.is_word(stop, b"ON")
                                and t.is_word(stop + 1, b"DUPLICATE")):
        stop += 1
    if stop == set_tok + 1:
        raise PlanError(er.PARSE_ERROR, f"assignment expected after {statement} ... SET")
    cols: list[str] = []
    key_slot, key_neg, key_tok = KEY_GENERATE, False, -1
    for a, b in t.split_commas(set_tok + 1, stop - 1):
        c = a
        while c + 2 <= b and t.is_punct(c + 1, b"."):
            c += 2  # t.col / db.t.col
        name = t.name(c)
        if name is None or c + 2 > b or t.text[c + 1] not in (b"=", b":="):
            raise PlanError(er.PARSE_ERROR, f"`column = value` expected in {statement} ... SET")
        cols.append(name)
        if name != key:
            continue
        v, w = c + 2, b
        if v == w and v in t.slot_of:
            key_slot, key_tok = t.slot_of[v], v
        elif w == v + 1 and t.text[v] == b"-" and w in t.slot_of:
            key_slot, key_neg, key_tok = t.slot_of[w], True, v
        elif v == w and t.up[v] in (b"NULL", b"DEFAULT") and gen:
            key_tok = v
        else:
            raise not_supported(f"{statement} sharding key '{key}' value that is not a literal")
    if cols.count(key) > 1:
        raise PlanError(ER_FIELD_SPECIFIED_TWICE, f"Column '{key}' specified twice")
    if key not in cols and not gen:
        raise not_supported(f"{statement} into a sharded table must give the sharding key column '{key}'")
    return cols, InsertRow(set_tok + 1, stop - 1, key_slot, key_neg, key_tok), stop


def plan_insert_set(p: Any, statement: str, rule: TableRule, table: str, first: int, set_tok: int) -> Plan:
    """The plan of INSERT ... SET into `rule`'s table; `p` is the ddm.sharding.planner.Planner (its table refs and
    physical names). Broadcast tables get the statement on every copy."""
    refs = p._table_refs({table}, first)
    if rule.kind == "broadcast":
        names = p._names_for(refs, rule, [(ds, rule.tables[ds][0]) for ds in rule.datasources])
        return QueryPlan(statement, ROUTE_ALL, "", rule, tuple(refs), names, is_write=True)
    key_cols = set(shard_columns(rule))
    if len(key_cols) != 1:
        raise not_supported(f"{statement} into '{table}' whose strategies use different columns")
    (key,) = key_cols
    gen = rule.key_generator is not None and rule.key_generator.column.lower() == key
    cols, row, suffix = set_row(p.t, set_tok, statement, key, gen)
    p._check_odku(suffix, key, rule)
    gen_other = rule.key_generator is not None and not gen and rule.key_generator.column.lower() not in cols
    names = p._names_for(refs, rule, p._all_targets(rule))
    return InsertPlan(statement, rule, key, tuple(refs), names, (row,), -1,
                      gen_column_tok=set_tok if gen_other else -1, set_form=True)
