"""The planner: one lexed statement + the logical database's rules -> an immutable `ddm.sharding.plan.Plan`.

Runs on a plan-cache miss only, so it may be slow-ish (sqlglot). Two views of the statement are used together:
- the *token stream* of the lexer gives positions (token indices, stable for one digest) for everything the
  rewrite must touch: table names, the end of the select list, ORDER BY / GROUP BY / HAVING / LIMIT clauses,
  INSERT row tuples;
- the *sqlglot AST* of the same tokens (literals replaced by named placeholders `:sK`, K = slot index) gives the
  semantics: which tables, which WHERE conditions constrain a shard key, aggregates, select items.
The two are tied together by clause order (the i-th select item of the AST is the i-th comma-separated token range
of the select list); when they disagree the statement is refused rather than guessed at.

INSERT, DDL and other statements are planned from tokens alone (a bulk INSERT of 512 KiB must not go through
sqlglot). Anything that cannot be routed or merged correctly becomes an UnsupportedPlan (ER_NOT_SUPPORTED_YET)
naming the construct; constructs that are only a problem on several shards become `single_target_error` and are
refused at bind time when the values route the query to more than one shard.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlglot
from sqlglot import exp

from ddm.config import DatabaseConfig, TableRule
from ddm.sharding import rewrite  # noqa: F401  (installs Plan.bind's implementation)
from ddm.sharding.merge_plan import ScatterBuilder
from ddm.sharding.plan import (
    EQ,
    HI,
    KEY_GENERATE,
    LO,
    ROUTE_ALL,
    ROUTE_FIXED,
    ROUTE_ONE,
    ROUTE_SHARD,
    DatabasePlan,
    InsertPlan,
    InsertRow,
    InSplit,
    KeyCond,
    NeedsColumns,
    Plan,
    PlanError,
    QueryPlan,
    Scatter,
    TableRef,
    UnsupportedPlan,
)
from ddm.sharding.plan_aliases import alias_names, delete_targets, drop_alias_qualifiers, target_refs
from ddm.sharding.plan_helpers import (
    conjuncts,
    drop_noop_refs,
    enclosing_query,
    not_supported,
    plain,
    quote,
    shard_columns,
    slot_of,
)
from ddm.sharding.plan_insert_set import plan_insert_set
from ddm.sharding.plan_tokens import (
    CMP,
    FLIP,
    MAX_DNF,
    SELECT_CLAUSES,
    SYSTEM_SCHEMAS,
    T_COMMENT_EXEC,
    T_KEYWORD,
    T_QUOTED_IDENT,
    TABLE_LEAD,
    PlanTokens,
)
from ddm.sharding.routing import router_for
from ddm.wire.constants import er


def plan(lexed: Any, db: DatabaseConfig, sql: bytes | None = None,
         columns: Mapping[str, tuple[str, ...]] | None = None) -> Plan:
    """Plan one statement of logical database `db`. Never raises for bad SQL: refusals are UnsupportedPlans.
    `columns`: the column names of sharded tables in definition order, for INSERT without a column list; when given
    and a table the statement needs is missing from it, raises NeedsColumns (the caller reads them, plans again)."""
    if sql is None:
        sql = lexed.sql
    try:
        result = Planner(PlanTokens(lexed, sql), db, columns).run()
    except PlanError as e:
        return UnsupportedPlan(e.code, e.message)
    rule = getattr(result, "rule", None)
    if rule is not None:
        result = dataclasses.replace(result, router=router_for(rule))  # type: ignore[type-var]
    return result


# ---------------------------------------------------------------------------------------------------------------
# planner


class Planner:
    def __init__(self, t: PlanTokens, db: DatabaseConfig, columns: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.t = t
        self.columns = columns
        self.db = db
        self.dbname = db.name.lower()
        self.rules: dict[str, TableRule] = {name.lower(): rule for name, rule in db.tables.items()}

    # --- dispatch -------------------------------------------------------------------------------------------

    def run(self) -> Plan:
        t = self.t
        if t.end == 0:
            return self._fixed(self.db.default_datasource, ())
        first = 0
        while first < t.end and t.kind[first] == T_COMMENT_EXEC:
            first += 1
        word = t.up[first] if first < t.end else b""
        if word in (b"CREATE", b"DROP") and self._database_statement(first) is not None:
            return self._database_statement(first)  # type: ignore[return-value]
        if self.db.is_passthrough:
            return self._fixed(self.db.default_datasource, self._qualifier_refs())
        if t.lexed.statement_count > 1:
            if self._mentions_rule_tables(0, t.n - 1):
                raise not_supported("multi-statement queries on sharded or broadcast tables")
            return self._fixed(self.db.default_datasource, ())
        if word in (b"SELECT", b"WITH") or t.is_punct(first, b"("):
            return self._plan_select(first)
        if word in (b"INSERT", b"REPLACE"):
            return self._plan_insert(first)
        if word in (b"UPDATE", b"DELETE"):
            return self._plan_update_delete(first, word.decode())
        if word in (b"CREATE", b"ALTER", b"DROP", b"TRUNCATE", b"RENAME"):
            return self._plan_ddl(first, word)
        return self._plan_other(first, word)

    # --- helpers shared by statement kinds ------------------------------------------------------------------

    def _fixed(self, datasource: str, refs: Sequence[TableRef], write: bool = False) -> QueryPlan:
        names = {(datasource, ""): tuple(self._render(ref, datasource, None, None) for ref in refs)}
        refs, names = drop_noop_refs(self.t, tuple(refs), names)
        return QueryPlan("", ROUTE_FIXED, datasource, None, refs, names, is_write=write)

    def _qualifier_refs(self) -> list[TableRef]:
        """`db.x` occurrences naming this logical database, when its physical name differs (pass-through)."""
        phys = self.db.datasources[self.db.default_datasource].database.lower()
        if phys == self.dbname:
            return []
        t = self.t
        out = []
        for i in range(t.end - 2):
            if t.name(i) == self.dbname and t.is_punct(i + 1, b".") and t.name(i + 2) is not None:
                if i > 0 and t.is_punct(i - 1, b"."):
                    continue  # x.db.col: a column named like the database
                out.append(TableRef(i, i + 1, ""))  # "" = qualifier only: replaced by `physdb`.
        return out

    def _mentions_rule_tables(self, first: int, last: int, kinds: Iterable[str] = ("sharded", "broadcast")) -> bool:
        kinds = tuple(kinds)
        for i in range(first, last + 1):
            name = self.t.name(i)
            if name is not None and name in self.rules and self.rules[name].kind in kinds:
                return True
        return False

    def _table_refs(self, wanted: set[str], first: int = 0, last: int | None = None) -> list[TableRef]:
        """Occurrences of the logical tables in `wanted`: table positions and column qualifiers `t.col`,
        each with its `db.` qualifier when written (the qualifier is replaced too)."""
        t = self.t
        last = t.end - 1 if last is None else last
        out: list[TableRef] = []
        for i in range(first, last + 1):
            name = t.name(i)
            if name is None or name not in wanted or t.kind[i] == T_KEYWORD:
                continue
            qualified = i >= 2 and t.is_punct(i - 1, b".") and t.name(i - 2) is not None
            if qualified:
                owner = t.name(i - 2)
                if i >= 3 and t.is_punct(i - 3, b"."):
                    continue  # a.b.name: a column
                if owner != self.dbname:
                    continue  # alias.name (a column named like a table) or otherdb.name: the AST check decides
                out.append(TableRef(i - 2, i, name))
            elif t.is_punct(i + 1, b".") or (i > 0 and t.up[i - 1] in TABLE_LEAD):
                out.append(TableRef(i, i, name))
        return out

    def _render(self, ref: TableRef, ds: str, rule: TableRule | None, target: tuple[str, str] | None) -> bytes:
        """Replacement text of `ref` on data source `ds` when the routed rule's target is `target`."""
        t = self.t
        if ref.table == "":  # pass-through qualifier
            return quote(self.db.datasources[ds].database) + b"."
        phys = self._physical_name(ref.table, ds, rule, target)
        if phys is None:
            raise not_supported(f"table '{ref.table}' has no physical table on data source '{ds}'")
        quoted = t.kind[ref.last] == T_QUOTED_IDENT
        name = quote(phys) if quoted or not plain(phys) else phys.encode()
        if ref.first != ref.last:  # db.name
            return quote(self.db.datasources[ds].database) + b"." + name
        return name

    def _physical_name(self, table: str, ds: str, rule: TableRule | None,
                       target: tuple[str, str] | None) -> str | None:
        r = self.rules.get(table)
        if r is None:
            return table
        if r.kind == "sharded":
            if rule is None or target is None:
                return None
            if r is rule:
                return target[1]
            idx = rule.tables[ds].index(target[1])  # binding tables: same position in the data source
            tables = r.tables.get(ds, ())
            return tables[idx] if idx < len(tables) else None
        tables = r.tables.get(ds, ())
        return tables[0] if tables else None

    def _renamed(self, table: str) -> bool:
        """Whether some physical table of rule table `table` is not named like the logical table."""
        r = self.rules.get(table)
        return r is not None and any(p.lower() != table for tbs in r.tables.values() for p in tbs)

    def _names_for(self, refs: Sequence[TableRef], rule: TableRule,
                   targets: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[bytes, ...]]:
        return {tg: tuple(self._render(ref, tg[0], rule, tg) for ref in refs) for tg in targets}

    def _all_targets(self, rule: TableRule) -> list[tuple[str, str]]:
        return [(ds, tb) for ds in rule.datasources for tb in rule.tables.get(ds, ())]

    def _database_statement(self, first: int) -> DatabasePlan | None:
        t = self.t
        i = first + 1
        if not (t.is_word(i, b"DATABASE") or t.is_word(i, b"SCHEMA")):
            return None
        i += 1
        cond = False
        if t.is_word(i, b"IF"):
            cond = True
            i += 3 if t.is_word(i + 1, b"NOT") else 2
        name = t.name(i) if i < t.end else None
        if name is None:
            raise PlanError(er.PARSE_ERROR, "database name expected")
        return DatabasePlan(t.up[first].decode(), name, cond)

    # --- classification of the tables a statement touches --------------------------------------------------

    def _classify(self, tables: Sequence[exp.Table], ctes: set[str]) -> dict[str, list[exp.Table]]:
        """Group AST tables by kind: sharded, broadcast, single, default (no rule), system."""
        groups: dict[str, list[exp.Table]] = {"sharded": [], "broadcast": [], "single": [], "default": [],
                                               "system": []}
        for tb in tables:
            name = tb.name.lower()
            dbq = tb.text("db").lower()
            if tb.text("catalog"):
                raise not_supported("catalog-qualified table names")
            if dbq and dbq != self.dbname:
                if dbq in SYSTEM_SCHEMAS:
                    groups["system"].append(tb)
                    continue
                raise not_supported(f"cross-database reference to `{dbq}`.`{name}`")
            if not dbq and name in ctes:
                continue
            rule = self.rules.get(name)
            groups["default" if rule is None else rule.kind].append(tb)
        return groups

    def _unsharded_route(self, groups: dict[str, list[exp.Table]], write_table: str | None,
                         refs: Sequence[TableRef]) -> QueryPlan:
        """Route a statement without sharded tables: one data source for single/default tables, or broadcast."""
        dss = {self.rules[tb.name.lower()].datasources[0] for tb in groups["single"]}
        if groups["default"] or groups["system"]:
            dss.add(self.db.default_datasource)
        if len(dss) > 1:
            raise not_supported("a statement over tables on different data sources (" + ", ".join(sorted(dss)) + ")")
        broadcast = [self.rules[tb.name.lower()] for tb in groups["broadcast"]]
        if dss:
            ds = dss.pop()
            if write_table is not None and self.rules.get(write_table) is not None \
                    and self.rules[write_table].kind == "broadcast":
                raise not_supported("writing a broadcast table from single-table data")
            for r in broadcast:
                if ds not in r.tables:
                    raise not_supported(f"broadcast table '{r.name}' has no copy on data source '{ds}'")
            return self._fixed(ds, refs, write_table is not None)
        if not broadcast:
            return self._fixed(self.db.default_datasource, refs, write_table is not None)
        if write_table is not None:
            rule = self.rules[write_table]
            names = self._names_for(refs, rule, [(ds, rule.tables[ds][0]) for ds in rule.datasources])
            return QueryPlan("", ROUTE_ALL, "", rule, tuple(refs), names, is_write=True)
        rule = broadcast[0]
        for r in broadcast[1:]:
            if set(r.datasources) != set(rule.datasources):
                raise not_supported("broadcast tables with different data sources in one statement")
        names = self._names_for(refs, rule, [(ds, rule.tables[ds][0]) for ds in rule.datasources])
        return QueryPlan("", ROUTE_ONE, "", rule, tuple(refs), names)

    def _check_refs(self, refs: Sequence[TableRef], ast: exp.Expression, ctes: set[str], wanted: set[str],
                    skip: Sequence[exp.Table] = ()) -> None:
        """Token occurrences must agree with the AST (table positions and `t.col` qualifiers); `skip`: AST tables
        that are not table references (the target names of a multi-table DELETE)."""
        skipped = {id(tb) for tb in skip}
        for name in wanted:
            in_ast = 0
            for tb in ast.find_all(exp.Table):
                if id(tb) in skipped:
                    continue
                if tb.name.lower() == name and tb.text("db").lower() in ("", self.dbname) \
                        and not (not tb.text("db") and name in ctes):
                    in_ast += 1
            for col in ast.find_all(exp.Column):
                if col.text("table").lower() == name and col.text("db").lower() in ("", self.dbname):
                    in_ast += 1
            in_tokens = sum(1 for r in refs if r.table == name)
            if in_tokens != in_ast:
                raise not_supported(f"ambiguous use of the name '{name}' (table name also used as a column or alias)")

    # --- SELECT ----------------------------------------------------------------------------------------------

    def _parse(self, first: int, last: int | None = None) -> exp.Expression:
        text = self.t.parse_text(first, last)
        try:
            ast = sqlglot.parse_one(text, read="mysql")
        except sqlglot.errors.SqlglotError as e:
            raise PlanError(er.PARSE_ERROR, f"cannot analyse statement: {str(e).splitlines()[0][:200]}") from None
        if ast is None:
            raise PlanError(er.PARSE_ERROR, "empty statement")
        return ast

    def _plan_select(self, first: int) -> Plan:
        t = self.t
        try:
            ast = self._parse(first)
        except PlanError:
            if self._mentions_rule_tables(first, t.end - 1):
                raise
            return self._fixed(self.db.default_datasource, ())  # let the data node report the syntax error
        ctes = {c.alias_or_name.lower() for c in ast.find_all(exp.CTE)}
        tables = list(ast.find_all(exp.Table))
        groups = self._classify(tables, ctes)
        wanted = {tb.name.lower() for k in ("sharded", "broadcast", "single") for tb in groups[k]}
        refs = self._table_refs(wanted, first)
        self._check_refs(refs, ast, ctes, wanted)
        refs = drop_alias_qualifiers(t, refs, alias_names(tables, wanted, self._renamed))
        if not groups["sharded"]:
            return self._unsharded_route(groups, None, refs)
        if not isinstance(ast, exp.Select):
            raise not_supported(f"{type(ast).__name__.upper()} over sharded tables")
        if ast.args.get("into") is not None or t.is_word(first, b"WITH"):
            raise not_supported("SELECT ... INTO / WITH over sharded tables")
        rule, aliases = self._sharded_scope(ast, groups, ast.args.get("joins") or [])
        where = ast.args.get("where")
        dnf = self._dnf(where.this if where is not None else None, rule, aliases)
        in_split = self._in_split(where.this if where is not None else None, rule, aliases, dnf)
        names = self._names_for(refs, rule, self._all_targets(rule))
        try:
            scatter, scatter_error = self._scatter(ast, first), None
        except PlanError as e:
            scatter, scatter_error = None, e
        return QueryPlan("SELECT", ROUTE_SHARD, "", rule, tuple(refs), names, dnf, in_split, scatter, scatter_error)

    def _sharded_scope(self, root: exp.Expression, groups: dict[str, list[exp.Table]],
                       joins: Sequence[exp.Join], skip: Sequence[exp.Table] = ()) -> tuple[TableRule, dict[str, str]]:
        """Check the sharded tables can run shard-locally; return the routing rule and alias -> table map.
        `skip`: AST tables that only name a table or alias (multi-table DELETE targets)."""
        sharded = groups["sharded"]
        skipped = {id(tb) for tb in skip}
        scope = [tb for tb in root.find_all(exp.Table) if enclosing_query(tb) is root and id(tb) not in skipped]
        for tb in sharded:
            if enclosing_query(tb) is not root:
                raise not_supported(f"subquery on sharded table '{tb.name}'")
        if groups["single"] or groups["default"] or groups["system"]:
            other = (groups["single"] + groups["default"] + groups["system"])[0].name
            raise not_supported(f"join of sharded table '{sharded[0].name}' with unsharded table '{other}'")
        names = [tb.name.lower() for tb in sharded]
        if len(set(names)) != len(names):
            raise not_supported(f"self-join of sharded table '{names[0]}'")
        rule = self.rules[names[0]]
        aliases: dict[str, str] = {}
        for tb in scope:
            aliases[tb.alias_or_name.lower()] = tb.name.lower()
            aliases.setdefault(tb.name.lower(), tb.name.lower())
        if len(names) > 1:
            group = set(rule.binding_group)
            for other in names[1:]:
                if other not in group:
                    raise not_supported(f"join of sharded tables '{names[0]}' and '{other}' that are not bound")
            self._check_binding_join(root, joins, rule, names, aliases)
        self.scope_single = len(scope) == 1
        return rule, aliases

    def _check_binding_join(self, root: exp.Expression, joins: Sequence[exp.Join], rule: TableRule,
                            names: list[str], aliases: dict[str, str]) -> None:
        """Bound tables must be joined on their shard keys (t1.key = t2.key), or rows would pair across shards."""
        key = shard_columns(rule)
        conds: list[exp.Expression] = []
        where = root.args.get("where")
        if where is not None:
            conds += conjuncts(where.this)
        for j in joins:
            if j.side and j.side.upper() in ("RIGHT", "FULL") or j.kind and j.kind.upper() == "CROSS":
                continue
            on = j.args.get("on")
            if on is not None:
                conds += conjuncts(on)
            for u in j.args.get("using") or []:
                if u.name.lower() in key:
                    return  # USING (key) joins every table pair on the key
        linked = {names[0]}
        changed = True
        while changed:
            changed = False
            for c in conds:
                if isinstance(c, exp.EQ) and isinstance(c.this, exp.Column) and isinstance(c.expression, exp.Column):
                    a, b = c.this, c.expression
                    ta, tb = aliases.get(a.table.lower()), aliases.get(b.table.lower())
                    if a.name.lower() in key and b.name.lower() in key and ta and tb:
                        if (ta in linked) != (tb in linked):
                            linked |= {ta, tb}
                            changed = True
        missing = [n for n in names if n not in linked]
        if missing:
            raise not_supported(f"join of bound tables without equality on the sharding key ('{missing[0]}')")

    # --- WHERE -> routing conditions -------------------------------------------------------------------------

    def _key_column(self, node: exp.Expression, rule: TableRule, aliases: dict[str, str]) -> str | None:
        """The shard column `node` stands for, when it is a column of a routed table."""
        if not isinstance(node, exp.Column):
            return None
        name = node.name.lower()
        if name not in shard_columns(rule):
            return None
        qual = node.text("table").lower()
        if not qual:
            return name if getattr(self, "scope_single", False) else None
        table = aliases.get(qual)
        if table is None:
            return None
        r = self.rules.get(table)
        if r is rule or (r is not None and table in rule.binding_group and r.kind == "sharded"):
            return name
        return None

    def _dnf(self, node: exp.Expression | None, rule: TableRule,
             aliases: dict[str, str]) -> tuple[tuple[KeyCond, ...], ...] | None:
        if node is None:
            return None
        out = self._dnf_node(node, rule, aliases)
        if any(len(c) == 0 for c in out):
            return None
        return tuple(tuple(c) for c in out)

    def _dnf_node(self, node: exp.Expression, rule: TableRule, aliases: dict[str, str]) -> list[list[KeyCond]]:
        """OR of ANDs of key conditions; [[]] means "no constraint on the key" (the neutral element of AND)."""
        if isinstance(node, exp.Paren):
            return self._dnf_node(node.this, rule, aliases)
        if isinstance(node, exp.And):
            left = self._dnf_node(node.this, rule, aliases)
            right = self._dnf_node(node.expression, rule, aliases)
            if len(left) * len(right) > MAX_DNF:
                return [[]]
            return [a + b for a in left for b in right]
        if isinstance(node, exp.Or):
            left = self._dnf_node(node.this, rule, aliases)
            right = self._dnf_node(node.expression, rule, aliases)
            if any(not c for c in left) or any(not c for c in right):
                return [[]]
            out = left + right
            return out if len(out) <= MAX_DNF else [[]]
        cond = self._atom(node, rule, aliases)
        return [cond] if cond else [[]]

    def _atom(self, node: exp.Expression, rule: TableRule, aliases: dict[str, str]) -> list[KeyCond]:
        if isinstance(node, exp.In):
            col = self._key_column(node.this, rule, aliases)
            if col is None or node.args.get("query") is not None or node.args.get("unnest"):
                return []
            vals = [slot_of(e) for e in node.expressions]
            if not vals or any(v is None for v in vals):
                return []
            return [KeyCond(col, EQ, tuple(v[0] for v in vals), tuple(v[1] for v in vals))]  # type: ignore[index]
        if isinstance(node, exp.Between):
            col = self._key_column(node.this, rule, aliases)
            lo, hi = slot_of(node.args.get("low")), slot_of(node.args.get("high"))
            if col is None or lo is None or hi is None:
                return []
            return [KeyCond(col, LO, (lo[0],), (lo[1],), True), KeyCond(col, HI, (hi[0],), (hi[1],), True)]
        op = CMP.get(type(node))
        if op is None or op == "!=":
            return []
        col = self._key_column(node.this, rule, aliases)
        val = slot_of(node.expression)
        if col is None:
            col = self._key_column(node.expression, rule, aliases)
            val = slot_of(node.this)
            op = FLIP[op]
        if col is None or val is None:
            return []
        if op == "=":
            return [KeyCond(col, EQ, (val[0],), (val[1],))]
        if op in (">", ">="):
            return [KeyCond(col, LO, (val[0],), (val[1],), op == ">=")]
        return [KeyCond(col, HI, (val[0],), (val[1],), op == "<=")]

    def _in_split(self, where: exp.Expression | None, rule: TableRule, aliases: dict[str, str],
                  dnf: tuple[tuple[KeyCond, ...], ...] | None) -> InSplit | None:
        """`key IN (...)` as the only key condition of a pure-AND WHERE: split the list per target."""
        if where is None or dnf is None or len(dnf) != 1 or len(dnf[0]) != 1:
            return None
        cond = dnf[0][0]
        if cond.op != EQ or len(cond.slots) < 2 or len(set(shard_columns(rule))) != 1:
            return None
        for c in conjuncts(where):
            if isinstance(c, exp.In) and self._atom(c, rule, aliases) == [cond]:
                toks = [self.t.lexed.slots[k] for k in cond.slots]
                first = toks[0] - 1 if cond.neg[0] else toks[0]
                return InSplit(cond.column, first, toks[-1], cond.slots, cond.neg)
        return None

    # --- scatter SELECT: merge description and shard-SQL edits ----------------------------------------------

    def _clauses(self, first: int) -> dict[bytes, int]:
        """Token index of each top-level clause keyword of the SELECT starting at `first`."""
        t = self.t
        depth = t.depth[first]
        out: dict[bytes, int] = {}
        for i in range(first + 1, t.end):
            if t.depth[i] == depth and t.kind[i] == T_KEYWORD and t.up[i] in SELECT_CLAUSES:
                out.setdefault(t.up[i], i)
        return out

    def _scatter(self, ast: exp.Select, first: int) -> Scatter:
        return ScatterBuilder(self.t, ast, first, self._clauses(first)).build()

    # --- UPDATE / DELETE -------------------------------------------------------------------------------------

    def _plan_update_delete(self, first: int, statement: str) -> Plan:
        t = self.t
        try:
            ast = self._parse(first)
        except PlanError:
            if self._mentions_rule_tables(first, t.end - 1):
                raise
            return self._fixed(self.db.default_datasource, (), write=True)
        ctes = {c.alias_or_name.lower() for c in ast.find_all(exp.CTE)}
        every = list(ast.find_all(exp.Table))
        targets, span = delete_targets(t, first, ast, every)
        tables = [tb for tb in every if all(tb is not x for x in targets)]
        groups = self._classify(tables, ctes)
        wanted = {tb.name.lower() for k in ("sharded", "broadcast", "single") for tb in groups[k]}
        refs = self._table_refs(wanted, first)
        if span is not None:
            refs = [r for r in refs if not span[0] <= r.first <= span[1]]
        self._check_refs(refs, ast, ctes, wanted, targets)
        refs = drop_alias_qualifiers(t, refs, alias_names(tables, wanted, self._renamed))
        if span is not None:
            refs = sorted(refs + target_refs(t, span, tables, wanted, self.dbname), key=lambda r: r.first)
        target = ast.this if isinstance(ast.this, exp.Table) and all(ast.this is not x for x in targets) else None
        top = [tb for tb in tables if enclosing_query(tb) is ast]
        if not groups["sharded"]:
            write = target.name.lower() if target is not None else (top[0].name.lower() if top else None)
            if len(top) > 1 and any(self.rules.get(tb.name.lower()) is not None
                                    and self.rules[tb.name.lower()].kind == "broadcast" for tb in top):
                raise not_supported(f"multi-table {statement} on broadcast tables")
            return self._unsharded_route(groups, write, refs)
        if len(top) != 1 or groups["broadcast"] and len(tables) > 1 and statement == "DELETE":
            if len(top) != 1:
                raise not_supported(f"multi-table {statement} on sharded table '{groups['sharded'][0].name}'")
        rule, aliases = self._sharded_scope(ast, groups, ast.args.get("joins") or [], targets)
        if statement == "UPDATE":
            keys = shard_columns(rule)
            for assign in ast.expressions:
                col = assign.this if isinstance(assign, exp.EQ) else None
                if isinstance(col, exp.Column) and col.name.lower() in keys:
                    raise not_supported(
                        f"updating the sharding key column '{col.name}' of table '{rule.name}' is not supported")
        where = ast.args.get("where")
        dnf = self._dnf(where.this if where is not None else None, rule, aliases)
        names = self._names_for(refs, rule, self._all_targets(rule))
        clauses = self._clauses(first)
        single_err = None
        if b"ORDER" in clauses or b"LIMIT" in clauses:
            single_err = not_supported(f"{statement} with ORDER BY or LIMIT on several shards")
        in_split = self._in_split(where.this if where is not None else None, rule, aliases, dnf)
        return QueryPlan(statement, ROUTE_SHARD, "", rule, tuple(refs), names, dnf, in_split, None, single_err,
                         is_write=True)

    # --- INSERT (tokens only) --------------------------------------------------------------------------------

    def _plan_insert(self, first: int) -> Plan:
        t = self.t
        statement = t.up[first].decode()
        i = first + 1
        while i < t.end and t.up[i] in (b"LOW_PRIORITY", b"DELAYED", b"HIGH_PRIORITY", b"IGNORE"):
            i += 1
        if t.is_word(i, b"INTO"):
            i += 1
        tname_tok = i + 2 if t.is_punct(i + 1, b".") else i
        table = t.name(tname_tok) if tname_tok < t.end else None
        if table is None:
            raise PlanError(er.PARSE_ERROR, f"table name expected after {statement} INTO")
        if tname_tok != i and t.name(i) != self.dbname:
            if t.name(i) in SYSTEM_SCHEMAS:
                return self._fixed(self.db.default_datasource, (), write=True)
            raise not_supported(f"cross-database reference to `{t.name(i)}`.`{table}`")
        rule = self.rules.get(table)
        j = tname_tok + 1
        if t.is_word(j, b"PARTITION"):
            raise not_supported(f"{statement} with PARTITION on a ddm database")
        cols: list[str] | None = None
        col_close = -1
        if t.is_punct(j, b"(") and not self._starts_query(j + 1):
            col_close = t.match[j]
            if col_close < 0:
                raise PlanError(er.PARSE_ERROR, "unbalanced parentheses")
            cols = []
            for _, b in t.split_commas(j + 1, col_close - 1):
                name = t.name(b)
                if name is None:
                    raise PlanError(er.PARSE_ERROR, "column name expected")
                cols.append(name)
            j = col_close + 1
        if rule is None or rule.kind == "single":
            if self._mentions_rule_tables(j, t.end - 1, ("sharded",)):
                raise not_supported(f"{statement} ... SELECT from sharded tables into an unsharded table")
            refs = self._table_refs({table} if rule is not None else set(), first)
            bcast = {n for n in (t.name(k) for k in range(j, t.end)) if n in self.rules
                     and self.rules[n].kind == "broadcast"}
            ds = rule.datasources[0] if rule is not None else self.db.default_datasource
            for b in bcast:
                if ds not in self.rules[b].tables:
                    raise not_supported(f"broadcast table '{b}' has no copy on data source '{ds}'")
            return self._fixed(ds, refs, write=True)
        set_form = cols is None and t.is_word(j, b"SET")
        if not (t.is_word(j, b"VALUES") or t.is_word(j, b"VALUE") or set_form):
            what = t.up[j].decode() if j < t.end else "end"
            raise not_supported(f"{statement} ... {what} into {rule.kind} table '{table}' (only VALUES and SET are "
                                f"supported)")
        if self._mentions_rule_tables(j + 1, t.end - 1, ("sharded",)) and rule.kind == "broadcast":
            raise not_supported(f"{statement} into broadcast table '{table}' reading sharded tables")
        if set_form:
            return plan_insert_set(self, statement, rule, table, first, j)
        rows_first = j + 1
        rows, suffix = self._value_rows(rows_first)
        refs = self._table_refs({table}, first, rows_first - 1)
        if rule.kind == "broadcast":
            refs = self._table_refs({table}, first)
            names = self._names_for(refs, rule, [(ds, rule.tables[ds][0]) for ds in rule.datasources])
            return QueryPlan(statement, ROUTE_ALL, "", rule, tuple(refs), names, is_write=True)
        key_cols = set(shard_columns(rule))
        if len(key_cols) != 1:
            raise not_supported(f"{statement} into '{table}' whose strategies use different columns")
        (key,) = key_cols
        if cols is None:
            if self.columns is None:
                raise not_supported(f"{statement} into sharded table '{table}' without a column list")
            if table not in self.columns:
                raise NeedsColumns(table)
            cols = [c.lower() for c in self.columns[table]]
        self._check_odku(suffix, key, rule)
        gen = rule.key_generator is not None and rule.key_generator.column.lower() == key
        key_pos = cols.index(key) if key in cols else -1
        if key_pos < 0 and not gen:
            raise not_supported(f"{statement} into sharded table '{table}' must give the sharding key column '{key}'")
        out_rows = []
        for n, (open_, close) in enumerate(rows, 1):
            items = t.split_commas(open_ + 1, close - 1)
            if len(items) != len(cols):
                raise PlanError(er.WRONG_VALUE_COUNT_ON_ROW, f"Column count doesn't match value count at row {n}")
            if key_pos < 0:
                out_rows.append(InsertRow(open_, close, KEY_GENERATE, False, -1))
                continue
            a, b = items[key_pos]
            if a == b and a in t.slot_of:
                out_rows.append(InsertRow(open_, close, t.slot_of[a], False, a))
            elif b == a + 1 and t.text[a] == b"-" and b in t.slot_of:
                out_rows.append(InsertRow(open_, close, t.slot_of[b], True, a))
            elif a == b and t.up[a] in (b"NULL", b"DEFAULT") and gen:
                out_rows.append(InsertRow(open_, close, KEY_GENERATE, False, a))
            else:
                raise not_supported(f"{statement} sharding key '{key}' value that is not a literal (row {n})")
        names = self._names_for(refs, rule, self._all_targets(rule))
        suffix_refs = self._table_refs({table}, suffix, t.end - 1) if suffix < t.end else []
        if suffix_refs:  # ON DUPLICATE KEY UPDATE t.col = ...: rename there too
            refs = refs + suffix_refs
            names = self._names_for(refs, rule, self._all_targets(rule))
        # a generator on another column than the key fills that column when the statement leaves it out
        gen_other = (rule.key_generator is not None and not gen and rule.key_generator.column.lower() not in cols)
        return InsertPlan(statement, rule, key, tuple(refs), names, tuple(InsertRow(*r) if not isinstance(r, InsertRow)
                                                                           else r for r in out_rows),
                          col_close if key_pos < 0 else -1, gen_column_tok=col_close if gen_other else -1)

    def _starts_query(self, i: int) -> bool:
        t = self.t
        while t.is_punct(i, b"("):
            i += 1
        return t.is_word(i, b"SELECT") or t.is_word(i, b"WITH") or t.is_word(i, b"VALUES")

    def _value_rows(self, i: int) -> tuple[list[tuple[int, int]], int]:
        """Row tuples `( ... )` starting at token i; returns them and the first token after the last one."""
        t = self.t
        rows: list[tuple[int, int]] = []
        while True:
            if t.is_word(i, b"ROW"):
                raise not_supported("VALUES ROW(...) into a sharded table")
            if not t.is_punct(i, b"(") or t.match[i] < 0:
                raise PlanError(er.PARSE_ERROR, "row tuple expected after VALUES")
            rows.append((i, t.match[i]))
            i = t.match[i] + 1
            if not t.is_punct(i, b","):
                return rows, i
            i += 1

    def _check_odku(self, i: int, key: str, rule: TableRule) -> None:
        t = self.t
        if i >= t.end:
            return
        if t.is_word(i, b"AS"):
            raise not_supported("INSERT ... AS row alias into a sharded table")
        if not (t.is_word(i, b"ON") and t.is_word(i + 1, b"DUPLICATE")):
            raise PlanError(er.PARSE_ERROR, f"unexpected '{t.text[i].decode('utf-8', 'replace')}' after VALUES")
        first = i + 4  # ON DUPLICATE KEY UPDATE
        for a, b in t.split_commas(first, t.end - 1):
            col = a
            while col + 2 <= b and t.is_punct(col + 1, b"."):
                col += 2
            if t.name(col) == key:
                raise not_supported(
                    f"updating the sharding key column '{t.name(col)}' of table '{rule.name}' is not supported")

    # --- DDL (tokens only) -----------------------------------------------------------------------------------

    def _plan_ddl(self, first: int, word: bytes) -> Plan:
        refs = self._table_refs(set(self.rules), first)
        tables = []
        for r in refs:
            if r.table and r.table not in tables:
                tables.append(r.table)
        sharded = [n for n in tables if self.rules[n].kind == "sharded"]
        broadcast = [n for n in tables if self.rules[n].kind == "broadcast"]
        if not sharded and not broadcast:
            singles = {self.rules[n].datasources[0] for n in tables}
            if len(singles) > 1:
                raise not_supported("DDL over tables on different data sources")
            ds = singles.pop() if singles else self.db.default_datasource
            return self._fixed(ds, refs, write=True)
        if word == b"RENAME" or (word == b"ALTER" and self._has_top_word(first, b"RENAME")):
            raise not_supported(f"renaming {'sharded' if sharded else 'broadcast'} table '{(sharded or broadcast)[0]}'")
        if len(tables) > 1:
            raise not_supported(f"DDL naming several tables including '{(sharded or broadcast)[0]}'")
        (table,) = tables
        rule = self.rules[table]
        if rule.kind == "broadcast":
            names_map = self._names_for(refs, rule, [(ds, rule.tables[ds][0]) for ds in rule.datasources])
            return QueryPlan(word.decode(), ROUTE_ALL, "", rule, tuple(refs), names_map, is_write=True)
        names_map = self._names_for(refs, rule, self._all_targets(rule))
        return QueryPlan(word.decode(), ROUTE_SHARD, "", rule, tuple(refs), names_map, is_write=True)

    def _has_top_word(self, first: int, word: bytes) -> bool:
        t = self.t
        return any(t.depth[i] == 0 and t.is_word(i, word) for i in range(first, t.end))

    # --- everything else -------------------------------------------------------------------------------------

    def _plan_other(self, first: int, word: bytes) -> Plan:
        """SHOW/DESCRIBE/SET/...: sent to the default data source; DESCRIBE-like looks at a sharded table use its
        first physical table."""
        t = self.t
        refs = [r for r in self._table_refs(set(self.rules), first) if r.table]
        tables = {r.table for r in refs}
        sharded = [n for n in tables if self.rules[n].kind in ("sharded", "broadcast")]
        if not sharded:
            singles = {self.rules[n].datasources[0] for n in tables}
            if len(singles) > 1:
                raise not_supported("a statement over tables on different data sources")
            return self._fixed(singles.pop() if singles else self.db.default_datasource, refs)
        describe = word in (b"DESCRIBE", b"DESC", b"EXPLAIN") and not self._starts_query(first + 1) \
            or word == b"SHOW" and any(t.up[i] in (b"COLUMNS", b"FIELDS", b"INDEX", b"INDEXES", b"KEYS", b"CREATE")
                                       for i in range(first + 1, min(first + 4, t.end)))
        if not describe or len(tables) != 1:
            raise not_supported(f"{word.decode()} on sharded table '{sharded[0]}'")
        rule = self.rules[sharded[0]]
        targets = self._all_targets(rule) if rule.kind == "sharded" else \
            [(ds, rule.tables[ds][0]) for ds in rule.datasources]
        names = self._names_for(refs, rule, targets)
        return QueryPlan(word.decode(), ROUTE_ONE, "", rule, tuple(refs), names)
