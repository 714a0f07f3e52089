"""Routing preview: where ddm would send a statement, without running it (`ddm route`).

`preview(config, database, sql)` plans and binds the statement the way the executor does for a COM_QUERY
(`ddm.sharding.planner.plan`, `Plan.bind` -> `ddm.sharding.rewrite.compile_units`) and reports, without connecting anywhere:

- `units`: one physical statement per shard (data source, its node and physical database, the rewritten SQL naming
  the physical tables);
- `sent`: what goes over the wire to each node: the executor joins the shards of one data source into one
  `(...) UNION ALL (...)` statement where it can (`ddm.execute.scatter`);
- `merge`: what ddm does with the results (ORDER BY / GROUP BY / aggregates / LIMIT merged, affected rows summed);
- `note` / `error`: statements ddm answers itself, INSERTs whose keys a generator fills at run time, refusals.

A pass-through database (no table rules) is forwarded unchanged to its one data source. Inside a transaction the
executor may run a multi-shard SELECT buffered instead of streamed; the preview shows the autocommit case.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ddm.config import Config
from ddm.execute import scatter
from ddm.sharding.plan import InsertPlan, MergeDesc, PlanError, UnsupportedPlan, database_ddl_refusal
from ddm.sharding.planner import plan as make_plan
from ddm.sharding.rewrite import keys_needed
from ddm_core.lexer import lex

LOCAL_WORDS = {b"USE": "USE: ddm switches the session's logical database itself",
               b"SET": "SET: session state, replayed by ddm on every data-node connection the session uses",
               b"KILL": "KILL: ddm's own thread ids, handled by ddm"}
TXN_WORDS = {b"BEGIN", b"START", b"COMMIT", b"ROLLBACK"}
METADATA_WORDS = {b"SHOW", b"DESC", b"DESCRIBE", b"EXPLAIN"}


@dataclass
class Step:
    datasource: str
    node: str
    database: str  # physical database on the node
    sql: str


@dataclass
class Route:
    database: str
    sql: str
    sharded: bool
    units: list[Step] = field(default_factory=list)  # one per shard
    sent: list[Step] = field(default_factory=list)  # one per statement sent to a node
    merge: str = ""
    note: str = ""
    error: tuple[int, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def preview(cfg: Config, database: str, sql: str | bytes) -> Route:
    raw = sql.encode() if isinstance(sql, str) else sql
    text = raw.decode("utf-8", "replace")
    dbconf = cfg.databases.get(database)
    if dbconf is None:
        known = ", ".join(sorted(cfg.databases)) or "none"
        return Route(database, text, False, error=(1049, f"Unknown database '{database}' (configured: {known})"))
    route = Route(database, text, bool(dbconf.tables))
    lexed = lex(raw)
    kw = lexed.first_keyword

    # the frontend's own check: the preview says what a client gets
    refused = database_ddl_refusal(raw) if kw in (b"CREATE", b"DROP") else None
    if refused is not None:
        route.error = (1235, refused)
        return route
    if kw in LOCAL_WORDS:
        route.note = LOCAL_WORDS[kw]
        return route

    if not dbconf.tables:
        ds = dbconf.datasources[dbconf.default_datasource]
        step = Step(dbconf.default_datasource, ds.node, ds.database, text)
        route.units, route.sent = [step], [step]
        route.note = "pass-through: forwarded unchanged"
        return route

    if kw in TXN_WORDS:
        route.note = "transaction control: ddm runs it on every node the transaction has reached"
        return route
    if kw in METADATA_WORDS:
        route.note = "metadata: ddm answers it from the data nodes' metadata, with logical names"
        return route
    try:
        plan = make_plan(lexed, dbconf, raw)
        if type(plan) is UnsupportedPlan:
            raise plan.error()
        if type(plan) is InsertPlan and keys_needed(plan, lexed):
            gen = plan.rule.key_generator
            column = gen.column if gen is not None else plan.column
            kind = gen.type if gen is not None else "key"
            route.note = (f"INSERT into `{plan.rule.name}`: ddm generates {column} for the rows that leave it out "
                          f"({kind} key generator) when it runs, and each row goes to the shard its key maps to")
            return route
        eu = plan.bind(lexed)
    except PlanError as exc:
        route.error = (exc.code, exc.message)
        return route
    except ValueError as exc:  # a key value the rules cannot place (ShardKeyError)
        route.error = (1105, f"cannot route the statement: {exc}")
        return route

    def step(datasource: str, unit_sql: bytes) -> Step:
        ds = dbconf.datasources[datasource]
        return Step(datasource, ds.node, ds.database, unit_sql.decode("utf-8", "replace"))

    route.units = [step(u.datasource, u.sql) for u in eu.units]
    located = lambda name: (dbconf.datasources[name].node, dbconf.datasources[name].database.encode())  # noqa: E731
    planned = scatter.plan_sources(eu, located, False)
    if planned is not None:
        route.sent = [step(s.datasource, s.sql) for s in planned[0]]
        streamed = True
    else:
        route.sent = [step(u.datasource, u.sql) for u in (scatter.union_units(eu) or eu.units)]
        streamed = False
    route.merge = _describe_merge(eu.merge, streamed, eu.is_write, eu.replicated, len(eu.units))
    return route


def _describe_merge(desc: MergeDesc | None, streamed: bool, is_write: bool, replicated: bool, nunits: int) -> str:
    if is_write:
        if nunits == 1:
            return "none: one statement, its answer goes to the client as is"
        return ("affected rows: one copy's (a broadcast table)" if replicated
                else "affected rows summed over the shards")
    if desc is None:
        return "none: one statement, its answer goes to the client as is"
    parts = []
    if desc.group_by:
        parts.append("GROUP BY")
    if desc.aggregates:
        parts.append(" ".join(sorted({f for _, f, _ in desc.aggregates})).replace("COUNT_DISTINCT",
                                                                                "COUNT(DISTINCT)"))
    if desc.distinct:
        parts.append("DISTINCT")
    if desc.having is not None:
        parts.append("HAVING")
    if desc.order_by:
        parts.append("ORDER BY")
    if desc.limit is not None:
        parts.append(f"LIMIT {desc.limit}" + (f" OFFSET {desc.offset}" if desc.offset else ""))
    what = ", ".join(parts) if parts else "rows concatenated"
    return f"by ddm over {nunits} shards: {what}" + ("; streamed" if streamed else "")


def format_route(r: Route) -> str:
    """The human-readable form `ddm route` prints."""
    lines = [f"{r.database}> {_one_line(r.sql)}"]
    if r.error is not None:
        lines.append(f"  refused: ERROR {r.error[0]}: {r.error[1]}")
        return "\n".join(lines)
    if r.note and not r.units:
        lines.append(f"  {r.note}")
        return "\n".join(lines)
    width = max(len(f"{s.node}.{s.database}") for s in r.units)
    if len(r.sent) == len(r.units):
        for s in r.sent:
            lines.append(f"  {s.node + '.' + s.database:<{width}}  {_one_line(s.sql)}")
    else:
        lines.append(f"  {len(r.units)} shards:")
        for s in r.units:
            lines.append(f"    {s.node + '.' + s.database:<{width}}  {_one_line(s.sql)}")
        lines.append(f"  sent as {len(r.sent)} statement(s), one per data source:")
        for s in r.sent:
            lines.append(f"    {s.node + '.' + s.database:<{width}}  {_one_line(s.sql)}")
    if r.note:
        lines.append(f"  ({r.note})")
    if r.merge and (len(r.units) > 1 or r.merge.startswith("affected")):
        lines.append(f"  merge: {r.merge}")
    return "\n".join(lines)


def _one_line(sql: str) -> str:
    """Display only (--json keeps the exact text): the executor ends UNION ALL branches with a newline."""
    return sql.replace("\n", " ")


def main_route(config_path: str, database: str, statements: list[str], as_json: bool = False) -> int:
    import sys

    from ddm import config as config_mod

    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        print(f"ddm route: {exc}", file=sys.stderr)
        return 2
    if database not in cfg.databases:
        print(f"ddm route: no logical database {database!r} in {config_path} "
              f"(configured: {', '.join(sorted(cfg.databases)) or 'none'})", file=sys.stderr)
        return 2
    routes = [preview(cfg, database, s) for s in statements]
    if as_json:
        print(json.dumps([r.to_json() for r in routes], indent=2))
    else:
        print("\n\n".join(format_route(r) for r in routes))
    return 1 if any(r.error for r in routes) else 0
