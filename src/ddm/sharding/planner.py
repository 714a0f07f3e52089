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

from ddm.config.model import DatabaseConfig, TableRule
from ddm.sharding import rewrite  # noqa: F401  (installs Plan.bind's implementation)
from ddm.sharding.plan import (
    EQ,
    HI,
    KEY_GENERATE,
    LIMIT_ROWS,
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
    Plan,
    PlanError,
    Position,
    QueryPlan,
    Scatter,
    TableRef,
    TokRange,
    Tpl,
    UnsupportedPlan,
    pos,
)
from ddm.sharding.routing import router_for
from ddm.wire.constants import er

# Token kinds (ddm_core.lexer / ddm._py.lexer module constants; the two modules share the values)
T_KEYWORD, T_IDENT, T_QUOTED_IDENT, T_NUMBER, T_STRING, T_HEX, T_PARAM = 1, 2, 3, 4, 5, 6, 7
T_OPERATOR, T_PUNCT, T_VARIABLE, T_COMMENT_EXEC, T_ERROR = 8, 9, 10, 11, 12
_LITERAL_KINDS = (T_NUMBER, T_STRING, T_HEX, T_PARAM)
_NAME_KINDS = (T_IDENT, T_QUOTED_IDENT, T_KEYWORD)

SYSTEM_SCHEMAS = frozenset({"information_schema", "mysql", "performance_schema", "sys"})
# Words after which an unqualified name is in table position (FROM a, b: the comma case is checked against the AST)
_TABLE_LEAD = frozenset(
    b"FROM JOIN INTO UPDATE TABLE TABLES STRAIGHT_JOIN DESCRIBE DESC EXPLAIN REFERENCES LIKE TRUNCATE EXISTS ON ,"
    .split()
)
_SELECT_MODIFIERS = frozenset(
    b"ALL DISTINCT DISTINCTROW HIGH_PRIORITY STRAIGHT_JOIN SQL_SMALL_RESULT SQL_BIG_RESULT SQL_BUFFER_RESULT "
    b"SQL_NO_CACHE SQL_CACHE SQL_CALC_FOUND_ROWS".split()
)
_SELECT_CLAUSES = frozenset(
    b"FROM WHERE GROUP HAVING WINDOW ORDER LIMIT FOR LOCK INTO UNION PROCEDURE".split()
)
_AGGREGATES: dict[type, str] = {exp.Count: "COUNT", exp.Sum: "SUM", exp.Min: "MIN", exp.Max: "MAX", exp.Avg: "AVG"}
_CMP = {exp.EQ: "=", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
_FLIP = {"=": "=", "!=": "!=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}
MAX_DNF = 256  # conjunctions kept for routing; beyond that OR-heavy WHERE clauses just scatter


def plan(lexed: Any, db: DatabaseConfig, sql: bytes | None = None) -> Plan:
    """Plan one statement of logical database `db`. Never raises for bad SQL: refusals are UnsupportedPlans."""
    if sql is None:
        sql = lexed.sql
    try:
        result = _Planner(_Tokens(lexed, sql), db).run()
    except PlanError as e:
        return UnsupportedPlan(e.code, e.message)
    rule = getattr(result, "rule", None)
    if rule is not None:
        result = dataclasses.replace(result, router=router_for(rule))  # type: ignore[type-var]
    return result


def _unsupported(what: str) -> PlanError:
    return PlanError(er.NOT_SUPPORTED_YET, what)


# ---------------------------------------------------------------------------------------------------------------
# token view


class _Tokens:
    """Plan-time view of the lexer's tokens: kinds, upper-cased words, identifier names, paren matching."""

    def __init__(self, lexed: Any, sql: bytes) -> None:
        n = lexed.ntokens
        self.lexed = lexed
        self.sql = sql
        self.n = n
        self.kind = [lexed.kind(i) for i in range(n)]
        self.text = [sql[lexed.start(i) : lexed.end(i)] for i in range(n)]
        self.up = [t.upper() if k in _NAME_KINDS else t for t, k in zip(self.text, self.kind, strict=True)]
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
        return 0 <= i < self.n and self.kind[i] in _NAME_KINDS and self.up[i] == word

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


# ---------------------------------------------------------------------------------------------------------------
# planner


class _Planner:
    def __init__(self, t: _Tokens, db: DatabaseConfig) -> None:
        self.t = t
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
                raise _unsupported("multi-statement queries on sharded or broadcast tables")
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
        refs, names = _drop_noop_refs(self.t, tuple(refs), names)
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
            elif t.is_punct(i + 1, b".") or (i > 0 and t.up[i - 1] in _TABLE_LEAD):
                out.append(TableRef(i, i, name))
        return out

    def _render(self, ref: TableRef, ds: str, rule: TableRule | None, target: tuple[str, str] | None) -> bytes:
        """Replacement text of `ref` on data source `ds` when the routed rule's target is `target`."""
        t = self.t
        if ref.table == "":  # pass-through qualifier
            return _quote(self.db.datasources[ds].database) + b"."
        phys = self._physical_name(ref.table, ds, rule, target)
        if phys is None:
            raise _unsupported(f"table '{ref.table}' has no physical table on data source '{ds}'")
        quoted = t.kind[ref.last] == T_QUOTED_IDENT
        name = _quote(phys) if quoted or not _plain(phys) else phys.encode()
        if ref.first != ref.last:  # db.name
            return _quote(self.db.datasources[ds].database) + b"." + name
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
                raise _unsupported("catalog-qualified table names")
            if dbq and dbq != self.dbname:
                if dbq in SYSTEM_SCHEMAS:
                    groups["system"].append(tb)
                    continue
                raise _unsupported(f"cross-database reference to `{dbq}`.`{name}`")
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
            raise _unsupported("a statement over tables on different data sources (" + ", ".join(sorted(dss)) + ")")
        broadcast = [self.rules[tb.name.lower()] for tb in groups["broadcast"]]
        if dss:
            ds = dss.pop()
            if write_table is not None and self.rules.get(write_table) is not None \
                    and self.rules[write_table].kind == "broadcast":
                raise _unsupported("writing a broadcast table from single-table data")
            for r in broadcast:
                if ds not in r.tables:
                    raise _unsupported(f"broadcast table '{r.name}' has no copy on data source '{ds}'")
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
                raise _unsupported("broadcast tables with different data sources in one statement")
        names = self._names_for(refs, rule, [(ds, rule.tables[ds][0]) for ds in rule.datasources])
        return QueryPlan("", ROUTE_ONE, "", rule, tuple(refs), names)

    def _check_refs(self, refs: Sequence[TableRef], ast: exp.Expression, ctes: set[str], wanted: set[str]) -> None:
        """Token occurrences must agree with the AST (table positions and `t.col` qualifiers)."""
        for name in wanted:
            in_ast = 0
            for tb in ast.find_all(exp.Table):
                if tb.name.lower() == name and tb.text("db").lower() in ("", self.dbname) \
                        and not (not tb.text("db") and name in ctes):
                    in_ast += 1
            for col in ast.find_all(exp.Column):
                if col.text("table").lower() == name and col.text("db").lower() in ("", self.dbname):
                    in_ast += 1
            in_tokens = sum(1 for r in refs if r.table == name)
            if in_tokens != in_ast:
                raise _unsupported(f"ambiguous use of the name '{name}' (table name also used as a column or alias)")

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
        if not groups["sharded"]:
            return self._unsharded_route(groups, None, refs)
        if not isinstance(ast, exp.Select):
            raise _unsupported(f"{type(ast).__name__.upper()} over sharded tables")
        if ast.args.get("into") is not None or t.is_word(first, b"WITH"):
            raise _unsupported("SELECT ... INTO / WITH over sharded tables")
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
                       joins: Sequence[exp.Join]) -> tuple[TableRule, dict[str, str]]:
        """Check the sharded tables can run shard-locally; return the routing rule and alias -> table map."""
        sharded = groups["sharded"]
        for tb in sharded:
            if _enclosing_query(tb) is not root:
                raise _unsupported(f"subquery on sharded table '{tb.name}'")
        if groups["single"] or groups["default"] or groups["system"]:
            other = (groups["single"] + groups["default"] + groups["system"])[0].name
            raise _unsupported(f"join of sharded table '{sharded[0].name}' with unsharded table '{other}'")
        names = [tb.name.lower() for tb in sharded]
        if len(set(names)) != len(names):
            raise _unsupported(f"self-join of sharded table '{names[0]}'")
        rule = self.rules[names[0]]
        aliases: dict[str, str] = {}
        for tb in root.find_all(exp.Table):
            if _enclosing_query(tb) is root:
                aliases[tb.alias_or_name.lower()] = tb.name.lower()
                aliases.setdefault(tb.name.lower(), tb.name.lower())
        if len(names) > 1:
            group = set(rule.binding_group)
            for other in names[1:]:
                if other not in group:
                    raise _unsupported(f"join of sharded tables '{names[0]}' and '{other}' that are not bound")
            self._check_binding_join(root, joins, rule, names, aliases)
        self.scope_single = sum(1 for tb in root.find_all(exp.Table) if _enclosing_query(tb) is root) == 1
        return rule, aliases

    def _check_binding_join(self, root: exp.Expression, joins: Sequence[exp.Join], rule: TableRule,
                            names: list[str], aliases: dict[str, str]) -> None:
        """Bound tables must be joined on their shard keys (t1.key = t2.key), or rows would pair across shards."""
        key = _shard_columns(rule)
        conjuncts: list[exp.Expression] = []
        where = root.args.get("where")
        if where is not None:
            conjuncts += _conjuncts(where.this)
        for j in joins:
            if j.side and j.side.upper() in ("RIGHT", "FULL") or j.kind and j.kind.upper() == "CROSS":
                continue
            on = j.args.get("on")
            if on is not None:
                conjuncts += _conjuncts(on)
            for u in j.args.get("using") or []:
                if u.name.lower() in key:
                    return  # USING (key) joins every table pair on the key
        linked = {names[0]}
        changed = True
        while changed:
            changed = False
            for c in conjuncts:
                if isinstance(c, exp.EQ) and isinstance(c.this, exp.Column) and isinstance(c.expression, exp.Column):
                    a, b = c.this, c.expression
                    ta, tb = aliases.get(a.table.lower()), aliases.get(b.table.lower())
                    if a.name.lower() in key and b.name.lower() in key and ta and tb:
                        if (ta in linked) != (tb in linked):
                            linked |= {ta, tb}
                            changed = True
        missing = [n for n in names if n not in linked]
        if missing:
            raise _unsupported(f"join of bound tables without equality on the sharding key ('{missing[0]}')")

    # --- WHERE -> routing conditions -------------------------------------------------------------------------

    def _key_column(self, node: exp.Expression, rule: TableRule, aliases: dict[str, str]) -> str | None:
        """The shard column `node` stands for, when it is a column of a routed table."""
        if not isinstance(node, exp.Column):
            return None
        name = node.name.lower()
        if name not in _shard_columns(rule):
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
            vals = [_slot(e) for e in node.expressions]
            if not vals or any(v is None for v in vals):
                return []
            return [KeyCond(col, EQ, tuple(v[0] for v in vals), tuple(v[1] for v in vals))]  # type: ignore[index]
        if isinstance(node, exp.Between):
            col = self._key_column(node.this, rule, aliases)
            lo, hi = _slot(node.args.get("low")), _slot(node.args.get("high"))
            if col is None or lo is None or hi is None:
                return []
            return [KeyCond(col, LO, (lo[0],), (lo[1],), True), KeyCond(col, HI, (hi[0],), (hi[1],), True)]
        op = _CMP.get(type(node))
        if op is None or op == "!=":
            return []
        col = self._key_column(node.this, rule, aliases)
        val = _slot(node.expression)
        if col is None:
            col = self._key_column(node.expression, rule, aliases)
            val = _slot(node.this)
            op = _FLIP[op]
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
        if cond.op != EQ or len(cond.slots) < 2 or len(set(_shard_columns(rule))) != 1:
            return None
        for c in _conjuncts(where):
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
            if t.depth[i] == depth and t.kind[i] == T_KEYWORD and t.up[i] in _SELECT_CLAUSES:
                out.setdefault(t.up[i], i)
        return out

    def _scatter(self, ast: exp.Select, first: int) -> Scatter:
        return _ScatterBuilder(self, ast, first).build()

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
        tables = list(ast.find_all(exp.Table))
        groups = self._classify(tables, ctes)
        wanted = {tb.name.lower() for k in ("sharded", "broadcast", "single") for tb in groups[k]}
        refs = self._table_refs(wanted, first)
        self._check_refs(refs, ast, ctes, wanted)
        target = ast.this if isinstance(ast.this, exp.Table) else None
        top = [tb for tb in tables if _enclosing_query(tb) is ast]
        if not groups["sharded"]:
            write = target.name.lower() if target is not None else (top[0].name.lower() if top else None)
            if len(top) > 1 and any(self.rules.get(tb.name.lower()) is not None
                                    and self.rules[tb.name.lower()].kind == "broadcast" for tb in top):
                raise _unsupported(f"multi-table {statement} on broadcast tables")
            return self._unsharded_route(groups, write, refs)
        if len(top) != 1 or groups["broadcast"] and len(tables) > 1 and statement == "DELETE":
            if len(top) != 1:
                raise _unsupported(f"multi-table {statement} on sharded table '{groups['sharded'][0].name}'")
        rule, aliases = self._sharded_scope(ast, groups, ast.args.get("joins") or [])
        if statement == "UPDATE":
            keys = _shard_columns(rule)
            for assign in ast.expressions:
                col = assign.this if isinstance(assign, exp.EQ) else None
                if isinstance(col, exp.Column) and col.name.lower() in keys:
                    raise _unsupported(
                        f"updating the sharding key column '{col.name}' of table '{rule.name}' is not supported")
        where = ast.args.get("where")
        dnf = self._dnf(where.this if where is not None else None, rule, aliases)
        names = self._names_for(refs, rule, self._all_targets(rule))
        clauses = self._clauses(first)
        single_err = None
        if b"ORDER" in clauses or b"LIMIT" in clauses:
            single_err = _unsupported(f"{statement} with ORDER BY or LIMIT on several shards")
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
            raise _unsupported(f"cross-database reference to `{t.name(i)}`.`{table}`")
        rule = self.rules.get(table)
        j = tname_tok + 1
        if t.is_word(j, b"PARTITION"):
            raise _unsupported(f"{statement} with PARTITION on a ddm database")
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
                raise _unsupported(f"{statement} ... SELECT from sharded tables into an unsharded table")
            refs = self._table_refs({table} if rule is not None else set(), first)
            bcast = {n for n in (t.name(k) for k in range(j, t.end)) if n in self.rules
                     and self.rules[n].kind == "broadcast"}
            ds = rule.datasources[0] if rule is not None else self.db.default_datasource
            for b in bcast:
                if ds not in self.rules[b].tables:
                    raise _unsupported(f"broadcast table '{b}' has no copy on data source '{ds}'")
            return self._fixed(ds, refs, write=True)
        if not (t.is_word(j, b"VALUES") or t.is_word(j, b"VALUE")):
            what = t.up[j].decode() if j < t.end else "end"
            raise _unsupported(f"{statement} ... {what} into {rule.kind} table '{table}' (only VALUES is supported)")
        if self._mentions_rule_tables(j + 1, t.end - 1, ("sharded",)) and rule.kind == "broadcast":
            raise _unsupported(f"{statement} into broadcast table '{table}' reading sharded tables")
        rows_first = j + 1
        rows, suffix = self._value_rows(rows_first)
        refs = self._table_refs({table}, first, rows_first - 1)
        if rule.kind == "broadcast":
            refs = self._table_refs({table}, first)
            names = self._names_for(refs, rule, [(ds, rule.tables[ds][0]) for ds in rule.datasources])
            return QueryPlan(statement, ROUTE_ALL, "", rule, tuple(refs), names, is_write=True)
        key_cols = set(_shard_columns(rule))
        if len(key_cols) != 1:
            raise _unsupported(f"{statement} into '{table}' whose strategies use different columns")
        (key,) = key_cols
        if cols is None:
            raise _unsupported(f"{statement} into sharded table '{table}' without a column list")
        self._check_odku(suffix, key, rule)
        gen = rule.key_generator is not None and rule.key_generator.column.lower() == key
        key_pos = cols.index(key) if key in cols else -1
        if key_pos < 0 and not gen:
            raise _unsupported(f"{statement} into sharded table '{table}' must give the sharding key column '{key}'")
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
                raise _unsupported(f"{statement} sharding key '{key}' value that is not a literal (row {n})")
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
                raise _unsupported("VALUES ROW(...) into a sharded table")
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
            raise _unsupported("INSERT ... AS row alias into a sharded table")
        if not (t.is_word(i, b"ON") and t.is_word(i + 1, b"DUPLICATE")):
            raise PlanError(er.PARSE_ERROR, f"unexpected '{t.text[i].decode('utf-8', 'replace')}' after VALUES")
        first = i + 4  # ON DUPLICATE KEY UPDATE
        for a, b in t.split_commas(first, t.end - 1):
            col = a
            while col + 2 <= b and t.is_punct(col + 1, b"."):
                col += 2
            if t.name(col) == key:
                raise _unsupported(
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
                raise _unsupported("DDL over tables on different data sources")
            ds = singles.pop() if singles else self.db.default_datasource
            return self._fixed(ds, refs, write=True)
        if word == b"RENAME" or (word == b"ALTER" and self._has_top_word(first, b"RENAME")):
            raise _unsupported(f"renaming {'sharded' if sharded else 'broadcast'} table '{(sharded or broadcast)[0]}'")
        if len(tables) > 1:
            raise _unsupported(f"DDL naming several tables including '{(sharded or broadcast)[0]}'")
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
                raise _unsupported("a statement over tables on different data sources")
            return self._fixed(singles.pop() if singles else self.db.default_datasource, refs)
        describe = word in (b"DESCRIBE", b"DESC", b"EXPLAIN") and not self._starts_query(first + 1) \
            or word == b"SHOW" and any(t.up[i] in (b"COLUMNS", b"FIELDS", b"INDEX", b"INDEXES", b"KEYS", b"CREATE")
                                       for i in range(first + 1, min(first + 4, t.end)))
        if not describe or len(tables) != 1:
            raise _unsupported(f"{word.decode()} on sharded table '{sharded[0]}'")
        rule = self.rules[sharded[0]]
        targets = self._all_targets(rule) if rule.kind == "sharded" else \
            [(ds, rule.tables[ds][0]) for ds in rule.datasources]
        names = self._names_for(refs, rule, targets)
        return QueryPlan(word.decode(), ROUTE_ONE, "", rule, tuple(refs), names)


class _ScatterBuilder:
    """Builds `Scatter` for a SELECT routed to several shards (see ddm.sharding.plan.Scatter and MergeDesc)."""

    def __init__(self, planner: _Planner, ast: exp.Select, first: int) -> None:
        self.p = planner
        self.t = planner.t
        self.ast = ast
        self.first = first
        self.clauses = planner._clauses(first)
        self.edits: list[Tpl] = []
        self.derived: list[tuple[Piece_, ...]] = []  # pieces of each derived column
        self.counters: dict[str, int] = {}

    # refs to columns: ("item", i), ("derived", j) or ("pos", slot, negated); made absolute in build()
    def build(self) -> Scatter:
        t, ast = self.t, self.ast
        if any(t.is_word(i, b"SQL_CALC_FOUND_ROWS") for i in range(self.first, self.clauses.get(b"FROM", t.end))):
            raise _unsupported("SQL_CALC_FOUND_ROWS on several shards")
        for name in (b"WINDOW", b"UNION", b"PROCEDURE", b"INTO"):
            if name in self.clauses:
                raise _unsupported(f"{name.decode()} on several shards")
        if list(ast.find_all(exp.Window)):
            raise _unsupported("window functions on several shards")
        items = self._select_items()
        self.items = items
        nitems = len(items)
        self.star = next((i for i, (_, e) in enumerate(items) if _is_star(e)), -1)
        self.last_star = max((i for i, (_, e) in enumerate(items) if _is_star(e)), default=-1)
        self.aliases = {}
        for i, (_, e) in enumerate(items):
            if isinstance(e, exp.Alias):
                self.aliases.setdefault(e.alias.lower(), i)
        self.select_end = items[-1][0][1]

        aggregates: list[tuple[tuple, str, tuple]] = []
        distinct_arg: tuple[int, int] | None = None
        for i, ((a, b), e) in enumerate(items):
            inner = e.this if isinstance(e, exp.Alias) else e
            func = _AGGREGATES.get(type(inner))
            if func is None:
                if inner.find(exp.AggFunc) is not None:
                    raise _unsupported("aggregate inside an expression on several shards")
                continue
            arg_first, arg_last = self._call_args(a, b)
            is_distinct = isinstance(inner.this, exp.Distinct)
            if is_distinct and func != "COUNT":
                raise _unsupported(f"{func}(DISTINCT ...) on several shards")
            if is_distinct:
                if distinct_arg is not None:
                    raise _unsupported("several COUNT(DISTINCT ...) on several shards")
                if len(inner.this.expressions) != 1:
                    raise _unsupported("COUNT(DISTINCT a, b) on several shards")
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
            raise _unsupported("DISTINCT ON")
        group = ast.args.get("group")
        group_refs: list[tuple] = []
        group_ranges: list[tuple[int, int]] = []
        if group is not None:
            if group.args.get("rollup") or group.args.get("cube") or group.args.get("grouping_sets"):
                raise _unsupported("GROUP BY ... WITH ROLLUP on several shards")
            gi = self.clauses[b"GROUP"]
            glast = self._clause_end(gi)
            group_ranges = self.t.split_commas(gi + 2, glast)
            if len(group_ranges) != len(group.expressions):
                raise _unsupported("GROUP BY that ddm could not analyse")
            for rng, e in zip(group_ranges, group.expressions, strict=True):
                group_refs.append(self._resolve(e, rng, "GROUP_BY_DERIVED", allow_agg=False))
        if distinct and (group is not None or aggregates):
            raise _unsupported("DISTINCT with GROUP BY or aggregates on several shards")

        order = ast.args.get("order")
        order_refs: list[tuple[tuple, bool]] = []
        if order is not None:
            oi = self.clauses[b"ORDER"]
            olast = self._clause_end(oi)
            ranges = self.t.split_commas(oi + 2, olast)
            if len(ranges) != len(order.expressions):
                raise _unsupported("ORDER BY that ddm could not analyse")
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
                raise _unsupported("LIMIT that ddm could not analyse")
            if limit_count == -2 or limit_offset == -2:
                raise _unsupported("LIMIT with a non-literal value on several shards")
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
                raise _unsupported("ORDER BY/GROUP BY on `*`")
            if idx < self.last_star:  # `a.*, x, b.*`: x is neither at a known index nor at a known one from the end
                raise _unsupported("a select item between two `*` items used by ORDER BY, GROUP BY or an aggregate, "
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
            having=_map_having(having_tree, col) if having_tree is not None else None,
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
        while i < t.end and (t.kind[i] == T_COMMENT_EXEC or t.kind[i] == T_KEYWORD and t.up[i] in _SELECT_MODIFIERS
                             or t.up[i] in _SELECT_MODIFIERS):
            i += 1
        end = min([v for k, v in self.clauses.items() if k in (b"FROM", b"INTO", b"WHERE", b"GROUP", b"HAVING",
                                                                 b"ORDER", b"LIMIT", b"FOR", b"LOCK", b"WINDOW",
                                                                 b"UNION")] or [t.end])
        ranges = t.split_commas(i, end - 1)
        exprs = self.ast.expressions
        if len(ranges) != len(exprs) or not ranges:
            raise _unsupported("a select list ddm could not analyse")
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
            raise _unsupported("an aggregate call ddm could not analyse")
        close = t.match[a + 1]
        if close > b or close == a + 2:
            raise _unsupported("an aggregate call ddm could not analyse")
        return a + 2, close - 1

    def _derive(self, prefix: str, expr: tuple) -> tuple:
        n = self.counters.get(prefix, 0)
        self.counters[prefix] = n + 1
        self.derived.append((b", ",) + tuple(expr) + (f" AS {prefix}_{n}".encode(),))
        return ("derived", len(self.derived) - 1)

    def _resolve(self, e: exp.Expression, rng: tuple[int, int], prefix: str, allow_agg: bool) -> tuple:
        """Select-list column for an ORDER BY / GROUP BY expression, deriving one when it is not there.

        A column position (`ORDER BY 2`) is ("pos", slot, negated): its number is a literal slot, known at bind."""
        position = _position(e)
        if position is not None:
            return ("pos",) + position
        if isinstance(e, exp.Literal):  # literals are slots (`:sK`) in the text sqlglot parses
            raise _unsupported("ORDER BY/GROUP BY on a literal ddm could not analyse, on several shards")
        if isinstance(e, exp.Column) and not e.text("table") and e.name.lower() in self.aliases:
            return ("item", self.aliases[e.name.lower()])
        key = _norm(e)
        for i, (_, item) in enumerate(self.items):
            inner = item.this if isinstance(item, exp.Alias) else item
            if _norm(inner) == key:
                return ("item", i)
        if isinstance(e, exp.Column):  # t.c against an unqualified c in the select list (or the reverse)
            for i, (_, item) in enumerate(self.items):
                inner = item.this if isinstance(item, exp.Alias) else item
                if isinstance(inner, exp.Column) and inner.name.lower() == e.name.lower() and \
                        (not inner.text("table") or not e.text("table")):
                    return ("item", i)
        func = _AGGREGATES.get(type(e))
        if e.find(exp.AggFunc) is not None:
            if not allow_agg or func is None or func == "AVG" or isinstance(e.this, exp.Distinct):
                raise _unsupported("ORDER BY/HAVING on an aggregate not in the select list, on several shards")
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
        op = _CMP.get(type(node))
        if op is not None:
            return ("cmp", op, self._having_operand(node.this), self._having_operand(node.expression))
        raise _unsupported(f"HAVING with {type(node).__name__.upper()} on several shards")

    def _having_operand(self, node: exp.Expression) -> tuple:
        s = _slot(node)
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
        raise _unsupported(f"HAVING operand {type(node).__name__.upper()} on several shards")

    def _of_grouped_columns(self, node: exp.Expression) -> bool:
        """Every column of `node` is a plain GROUP BY column or select-list column (what MySQL lets HAVING use)."""
        group = self.ast.args.get("group")
        known = {_norm(e) for e in (group.expressions if group is not None else []) if isinstance(e, exp.Column)}
        for _, item in self.items:
            inner = item.this if isinstance(item, exp.Alias) else item
            if isinstance(inner, exp.Column):
                known.add(_norm(inner))
        return all(_norm(c) in known for c in node.find_all(exp.Column))

    def _find_range(self, node: exp.Expression) -> tuple[int, int]:
        """Token range of a HAVING operand: the tokens of the HAVING clause whose parse equals `node`."""
        t = self.t
        hi = self.clauses[b"HAVING"]
        last = self._clause_end(hi)
        want = _norm(node)
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
                if _norm(got) == want:
                    return a, b
        raise _unsupported("a HAVING operand ddm could not locate")


Piece_ = Any  # bytes | TokRange | LimitRows (see ddm.sharding.plan.Piece)


# ---------------------------------------------------------------------------------------------------------------
# small helpers


def _map_having(tree: tuple, col: Any) -> tuple:
    tag = tree[0]
    if tag in ("and", "or"):
        return (tag, _map_having(tree[1], col), _map_having(tree[2], col))
    if tag == "not":
        return ("not", _map_having(tree[1], col))
    if tag == "cmp":
        return ("cmp", tree[1], _map_having(tree[2], col), _map_having(tree[3], col))
    if tag == "col":
        return ("col", col(tree[1]))
    return tree


def _slot(node: exp.Expression | None) -> tuple[int, bool] | None:
    """(slot index, negated) of `:sK` or `-:sK`."""
    neg = False
    if isinstance(node, exp.Neg):
        node, neg = node.this, True
    if isinstance(node, exp.Placeholder) and isinstance(node.this, str) and node.this.startswith("s"):
        return int(node.this[1:]), neg
    return None


def _position(e: exp.Expression) -> tuple[int, bool] | None:
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
    s = _slot(e)
    return (s[0], neg) if s is not None else None


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _enclosing_query(node: exp.Expression) -> exp.Expression | None:
    """Nearest SELECT/UPDATE/DELETE/INSERT/UNION above `node` (the statement itself for top-level tables)."""
    p = node.parent
    while p is not None:
        if isinstance(p, (exp.Select, exp.Update, exp.Delete, exp.Insert, exp.Union, exp.Subquery)):
            return p
        p = p.parent
    return None


def _shard_columns(rule: TableRule) -> tuple[str, ...]:
    cols = []
    for s in (rule.database_strategy, rule.table_strategy):
        if s is not None and s.column.lower() not in cols:
            cols.append(s.column.lower())
    return tuple(cols)


def _is_star(e: exp.Expression) -> bool:
    return isinstance(e, exp.Star) or isinstance(e, exp.Column) and isinstance(e.this, exp.Star)


def _norm(e: exp.Expression) -> str:
    """Comparable text of an expression: identifiers lower-cased, qualifiers kept."""
    return e.sql(dialect="mysql", normalize=True, identify=False).lower()


def _quote(name: str) -> bytes:
    return b"`" + name.replace("`", "``").encode() + b"`"


def _plain(name: str) -> bool:
    return name.replace("_", "a").replace("$", "a").isalnum() and name.isascii() and not name[:1].isdigit()


def _drop_noop_refs(t: _Tokens, refs: tuple[TableRef, ...], names: Mapping[tuple[str, str], tuple[bytes, ...]]
                    ) -> tuple[tuple[TableRef, ...], dict[tuple[str, str], tuple[bytes, ...]]]:
    """Refs whose replacement is the original text on every target are left out (no edit to make)."""
    keep = [i for i, ref in enumerate(refs)
            if any(v[i] != t.sql[t.lexed.start(ref.first):t.lexed.end(ref.last)] for v in names.values())]
    return tuple(refs[i] for i in keep), {k: tuple(v[i] for i in keep) for k, v in names.items()}
