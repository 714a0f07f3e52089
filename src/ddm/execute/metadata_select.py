"""SELECTs naming information_schema or DATABASE() on a sharded database: information_schema tables replaced by
derived tables that show logical names (see ddm.execute.metadata for the whole contract)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ddm.config import DataSource
from ddm.execute.metadata_common import (
    IDENT_KINDS,
    IS_COLUMNS,
    NAME_KINDS,
    SCHEMA_COLUMNS,
    SYSTEM_SCHEMAS,
    TABLE_COLUMNS,
    Db,
    Toks,
    col_names,
    db_for,
    query_on,
    quote_ident,
    quote_str,
    rows_of,
    send_rows,
    to_decimal,
)
from ddm.sharding.rewrite import apply_edits
from ddm.wire.backend import Result
from ddm.wire.constants import field_type as FT
from ddm.wire.resultset import column_definition
from ddm.wire.rowcodec import UNSIGNED_FLAG, ColumnDef
from ddm_core import lexer as L

if TYPE_CHECKING:
    from ddm.execute.client import ClientSession

# --------------------------------------------------------------------------------------------------------------
# SELECT: information_schema and DATABASE()


def _database_calls(t: Toks) -> list[tuple[int, int]]:
    """(first, last) token of every DATABASE() / SCHEMA() call."""
    out = []
    for i in range(t.n):
        if t.word(i) in (b"DATABASE", b"SCHEMA") and t.word(i + 1) == b"(" and t.word(i + 2) == b")" and (
                t.word(i - 1) != b"."):
            out.append((i, i + 2))
    return out


def _is_refs(t: Toks) -> list[tuple[int, int, str]]:
    """(first, last token, table upper-case) of every `information_schema.X` table reference."""
    out = []
    for i in range(t.n - 2):
        if (t.kind(i) in IDENT_KINDS and (t.name(i) or "").lower() == "information_schema"
                and t.word(i + 1) == b"." and t.kind(i + 2) in NAME_KINDS and t.word(i + 3) != b"."
                and t.word(i - 1) != b"."):
            out.append((i, i + 2, (t.name(i + 2) or "").upper()))
    return out


async def _is_columns(client: ClientSession, ds: DataSource, table: str) -> tuple[str, ...]:
    key = (ds.node, table)
    cols = IS_COLUMNS.get(key)
    if cols is None:
        res = await query_on(client, ds, b"SELECT * FROM `information_schema`." + quote_ident(table) + b" LIMIT 0")
        cols = tuple(col_names(res))
        IS_COLUMNS[key] = cols
    return cols


def _case(column: bytes, mapping: Sequence[tuple[str, str]], otherwise: bytes) -> bytes:
    if not mapping:
        return otherwise
    return (b"CASE " + column + b" " + b" ".join(b"WHEN " + quote_str(a) + b" THEN " + quote_str(b)
                                                    for a, b in mapping) + b" ELSE " + otherwise + b" END")


def _in_list(values: Sequence[str]) -> bytes:
    return b"(" + b", ".join(quote_str(v) for v in values) + b")"


def _canonical_by_node(db: Db) -> dict[str, dict[str, dict[str, str]]]:
    """node -> physical database -> physical table -> logical name, for the table that stands for every table
    rule (the rule's first physical table, see Db.canonical)."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for rule_name, (ds_name, phys) in db.canonical.items():
        ds = db.conf.datasources[ds_name]
        out.setdefault(ds.node, {}).setdefault(ds.database, {})[phys] = rule_name
    return out


def _derived(db: Db, columns: Sequence[str], table: str, canon: Mapping[str, Mapping[str, str]],
             schema_map: Sequence[tuple[str, str]], hidden_schemas: Sequence[str], only_phys: bool,
             sums: Mapping[str, Mapping[str, int]], main: bool = True,
             available: Collection[str] | None = None) -> tuple[bytes, bytes] | None:
    """(select list, ` WHERE ...`) of the SELECT over information_schema.`table` of one node that maps physical
    names to logical ones (None: nothing to map in that table, or nothing to show from this node).

    `canon` are the canonical tables of the logical database on this node (physical database -> physical table
    -> logical name). On the main node (`main`, the default data source's) every row shows except the hidden ones:
    other shards, ddm's own tables, other physical databases of logical databases (`hidden_schemas`) except the
    canonical tables in them; `schema_map` renames whole physical databases. On another node only the canonical
    tables' rows are selected. `sums` (rule name -> column -> value) replace TABLES' size columns of a sharded
    table with the totals over its physical tables. `available` (None = all) are the columns that node has;
    the others are selected as NULL."""
    present = {c.upper(): c for c in columns}
    schema_cols = [present[c] for c in SCHEMA_COLUMNS if c in present]
    if not schema_cols:
        return None
    table_cols = {present[c]: next((present[s] for s in pair if s in present), None)
                  for c, pair in TABLE_COLUMNS.items() if c in present}
    main_table = next((present[c] for c in ("TABLE_NAME", "EVENT_OBJECT_TABLE") if c in present), None)
    main_schema = (table_cols.get(main_table) if main_table else None) or schema_cols[0]
    owner: dict[str, str] = {}  # schema column -> the table-name column it qualifies
    for tc, sc in table_cols.items():
        if sc is not None:
            owner.setdefault(sc, tc)
    phys = db.default.database
    here = {pdb: tabs for pdb, tabs in canon.items() if tabs}
    # canonical tables outside the default physical database (on the main node that one is renamed whole)
    others = sorted((pdb, tabs) for pdb, tabs in here.items() if not (main and pdb == phys))
    if not main and (main_table is None or not others):
        return None

    def in_canon(sc: str, tc: str) -> list[bytes]:
        return [quote_ident(sc) + b" = " + quote_str(pdb) + b" AND " + quote_ident(tc) + b" IN "
                + _in_list(sorted(tabs)) for pdb, tabs in others]

    hidden = sorted({t for rule in db.conf.tables.values() for t in rule.tables.get(db.conf.default_datasource, ())
                     if db.logical_of(db.conf.default_datasource, t) is None} | db.internal) if main else []
    summed = {c for c in _SUMMED_IS if c in present} if table.upper() == "TABLES" and main_table else set()
    items = []
    for c in columns:
        qc = quote_ident(c)
        if available is not None and c not in available:
            expr = b"NULL"
        elif c in schema_cols:
            tc = owner.get(c) or main_table
            whens = [b"WHEN " + w + b" THEN " + quote_str(db.name) for w in (in_canon(c, tc) if tc else [])]
            if whens:
                whens += [b"WHEN " + qc + b" = " + quote_str(a) + b" THEN " + quote_str(b) for a, b in schema_map]
                expr = b"CASE " + b" ".join(whens) + b" ELSE " + qc + b" END"
            else:
                expr = _case(qc, schema_map, qc)
        elif table_cols.get(c) is not None and here:
            sc = quote_ident(table_cols[c] or "")
            expr = b"CASE " + sc + b" " + b" ".join(
                b"WHEN " + quote_str(pdb) + b" THEN " + _case(qc, sorted(tabs.items()), qc)
                for pdb, tabs in sorted(here.items())) + b" ELSE " + qc + b" END"
        elif c.upper() in summed and main_table is not None:
            pairs = [(pdb, [(t, sums[r][c.upper()]) for t, r in sorted(tabs.items())
                            if c.upper() in sums.get(r, {})]) for pdb, tabs in sorted(here.items())]
            pairs = [(pdb, ts) for pdb, ts in pairs if ts]
            if pairs:
                tq = quote_ident(main_table)
                expr = (b"CAST(CASE " + quote_ident(main_schema) + b" " + b" ".join(
                    b"WHEN " + quote_str(pdb) + b" THEN CASE " + tq + b" " + b" ".join(
                        b"WHEN " + quote_str(t) + b" THEN %d" % v for t, v in ts) + b" ELSE " + qc + b" END"
                    for pdb, ts in pairs) + b" ELSE " + qc + b" END AS UNSIGNED)")
            else:
                expr = qc
        else:
            expr = qc
        items.append(expr + b" AS " + qc)
    s0 = quote_ident(main_schema)
    canon_rows = in_canon(main_schema, main_table) if main_table else []
    where = []
    if not main:
        where.append(b"(" + b" OR ".join(canon_rows) + b")" if len(canon_rows) > 1 else canon_rows[0])
    elif only_phys:
        mine = s0 + b" = " + quote_str(phys)
        where.append(b"(" + b" OR ".join([mine] + [b"(" + r + b")" for r in canon_rows]) + b")"
                     if canon_rows else mine)
    elif hidden_schemas:
        cond = s0 + b" NOT IN " + _in_list(hidden_schemas)
        where.append(b"(" + b" OR ".join([cond] + [b"(" + r + b")" for r in canon_rows]) + b")"
                     if canon_rows else cond)
    if main_table is not None and hidden:
        where.append(b"NOT (" + s0 + b" = " + quote_str(phys) + b" AND " + quote_ident(main_table) + b" IN "
                     + _in_list(hidden) + b")")
    return b", ".join(items), (b" WHERE " + b" AND ".join(where) if where else b"")


# information_schema.TABLES columns that are totals over a sharded table's physical tables
_SUMMED_IS = ("TABLE_ROWS", "DATA_LENGTH", "INDEX_LENGTH", "DATA_FREE")


async def _table_sums(client: ClientSession, db: Db) -> dict[str, dict[str, int]]:
    """rule name -> {TABLES column: total over its physical tables}, for every sharded rule with more than one
    physical table (read from information_schema.TABLES of every node that holds some, in parallel)."""
    rules = {r.name for r in db.conf.tables.values() if r.kind == "sharded" and len(r.targets) > 1}
    if not rules:
        return {}
    by_node: dict[str, dict[str, str]] = {}  # node -> physical database -> data source
    for name in sorted(rules):
        for ds_name in db.conf.tables[name].datasources:
            ds = db.conf.datasources[ds_name]
            by_node.setdefault(ds.node, {})[ds.database] = ds_name

    async def one(dbs: dict[str, str]) -> tuple[dict[str, str], Result]:
        ds = db.conf.datasources[next(iter(dbs.values()))]
        sql = (b"SELECT `TABLE_SCHEMA`, `TABLE_NAME`, " + b", ".join(quote_ident(c) for c in _SUMMED_IS)
               + b" FROM `information_schema`.`TABLES` WHERE `TABLE_SCHEMA` IN " + _in_list(sorted(dbs)))
        return dbs, await query_on(client, ds, sql)

    out: dict[str, dict[str, int]] = {}
    for dbs, res in await asyncio.gather(*(one(dbs) for _, dbs in sorted(by_node.items()))):
        for row in rows_of(res):
            ds_name = dbs.get((row[0] or b"").decode("utf-8", "replace"))
            rule = db.physical.get((ds_name or "", (row[1] or b"").decode("utf-8", "replace").lower()))
            if rule is None or rule.name not in rules:
                continue
            acc = out.setdefault(rule.name, {})
            for col, v in zip(_SUMMED_IS, row[2:], strict=False):
                n = to_decimal(v)
                if n is not None:
                    acc[col] = acc.get(col, 0) + int(n)
    return out


# charset number (as a result's column definitions carry it) -> the introducer's character set name
_CHARSET_NAMES = {63: "binary", 8: "latin1", 47: "latin1", 48: "latin1", 31: "latin1", 11: "ascii", 65: "ascii",
                  33: "utf8mb3", 83: "utf8mb3", 45: "utf8mb4", 46: "utf8mb4", 224: "utf8mb4", 255: "utf8mb4"}
_INTEGER = {FT.TINY, FT.SHORT, FT.LONG, FT.LONGLONG, FT.INT24, FT.YEAR}
_NUMBER = re.compile(rb"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_TEMPORAL = {FT.TIMESTAMP: b"DATETIME", FT.DATETIME: b"DATETIME", FT.DATE: b"DATE", FT.NEWDATE: b"DATE",
             FT.TIME: b"TIME"}


async def _charset_name(client: ClientSession, ds: DataSource, number: int) -> str:
    name = _CHARSET_NAMES.get(number)
    if name is None:
        res = await query_on(client, ds, b"SELECT `CHARACTER_SET_NAME` FROM `information_schema`.`COLLATIONS` "
                                       b"WHERE `ID` = %d" % number)
        rows = rows_of(res)
        name = (rows[0][0] or b"utf8mb4").decode() if rows else "utf8mb4"
        _CHARSET_NAMES[number] = name
    return name


async def _literal_selects(client: ClientSession, ds: DataSource, res: Result) -> list[bytes]:
    """The rows of `res` as `SELECT <literal>, ...` texts whose values keep the columns' types in a UNION
    (a bare NULL or number next to a BIGINT UNSIGNED column would turn it into a DECIMAL)."""
    cols = [ColumnDef.parse(c) for c in res.columns]
    # per column: (True, CAST target) for numbers and dates, (False, character set) for strings
    kinds: list[tuple[bool, bytes]] = []
    for c in cols:
        if c.type in _INTEGER:
            kinds.append((True, b"UNSIGNED" if c.flags & UNSIGNED_FLAG else b"SIGNED"))
        elif c.type in (FT.DECIMAL, FT.NEWDECIMAL):
            kinds.append((True, b"DECIMAL(65,%d)" % min(c.decimals, 30)))
        elif c.type in (FT.FLOAT, FT.DOUBLE):
            kinds.append((True, b"DOUBLE"))
        elif c.type in _TEMPORAL:
            t = _TEMPORAL[c.type]
            kinds.append((True, t + (b"(%d)" % c.decimals if t != b"DATE" and 0 < c.decimals <= 6 else b"")))
        else:
            kinds.append((False, (await _charset_name(client, ds, c.charset)).encode()))
    out = []
    for row in rows_of(res):
        vals = []
        for v, c, (cast, what) in zip(row, cols, kinds, strict=True):
            if v is None:
                vals.append(b"CAST(NULL AS " + what + b")" if cast else b"NULL")
            elif cast:
                ok = c.type in _TEMPORAL or _NUMBER.fullmatch(v) is not None
                vals.append(b"CAST(" + (quote_str(v) if ok else b"NULL") + b" AS " + what + b")")
            elif what == b"binary":
                vals.append(b"X'" + v.hex().encode() + b"'")
            else:
                vals.append(b"_" + what + b" X'" + v.hex().encode() + b"'")
        out.append(b"SELECT " + b", ".join(vals))
    return out


async def _elsewhere(client: ClientSession, db: Db, columns: Sequence[str], table: str,
                     canon: Mapping[str, Mapping[str, Mapping[str, str]]], main_node: str,
                     sums: Mapping[str, Mapping[str, int]]) -> list[bytes]:
    """information_schema.`table` rows of the canonical tables that live on other nodes than the main one, read
    there (in parallel) and returned as literal SELECTs to be appended to the main node's derived table."""
    async def one(node: str) -> list[bytes]:
        ds = next(d for d in db.conf.datasources.values() if d.node == node)
        available = await _is_columns(client, ds, table)
        view = _derived(db, columns, table, canon[node], (), (), False, sums, main=False, available=available)
        if view is None:
            return []
        items, where = view
        res = await query_on(client, ds, b"SELECT " + items + b" FROM `information_schema`." + quote_ident(table)
                           + where)
        return await _literal_selects(client, ds, res)

    parts = await asyncio.gather(*(one(node) for node in sorted(canon) if node != main_node))
    return [sel for part in parts for sel in part]


def _schemas_on(databases: Any, db: Db, node: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Physical databases on `node`: (physical, logical) for the default data source of every logical database
    there (the current one first), and the other physical databases of logical databases (hidden)."""
    mapping: dict[str, str] = {db.default.database: db.name}
    for name, conf in databases.items():
        d = conf.datasources[conf.default_datasource]
        if d.node == node:
            mapping.setdefault(d.database, name)
    hidden = {d.database for conf in databases.values() for d in conf.datasources.values()
              if d.node == node and d.database not in mapping}
    return sorted(mapping.items()), sorted(hidden)


async def answer_select(client: ClientSession, t: Toks, sql: bytes,
                  run_query: Callable[[bytes], Awaitable[None]]) -> bool:
    calls = _database_calls(t)
    refs = _is_refs(t)
    if not calls and not refs:
        return False
    db = db_for(client, None)
    edits: list[tuple[int, int, bytes]] = []
    lit = quote_str(db.name)
    has_from = any(t.word(i) == b"FROM" for i in range(t.n))
    if not refs and t.x.digest in (b"SELECT DATABASE()", b"SELECT SCHEMA()"):
        title = sql[t.x.start(1):t.x.end(3)].decode("utf-8", "replace")
        send_rows(client, [column_definition(title, length=256)], [[db.name]])
        return True
    for a, b in calls:
        repl = lit
        prev, nxt = t.word(a - 1), t.word(b + 1)
        if prev in (b"SELECT", b",") and nxt in (b",", b"FROM", b"", b";") and not (
                t.kind(b + 1) in IDENT_KINDS or nxt == b"AS"):
            repl = lit + b" AS " + quote_ident(sql[t.x.start(a):t.x.end(b)].decode("utf-8", "replace"))
        edits.append((t.x.start(a), t.x.end(b), repl))
    if not refs and has_from:
        # DATABASE() next to real tables: the executor runs the statement with the logical name in its place (on
        # a data source DATABASE() would be that shard's physical database)
        await run_query(apply_edits(sql, edits))
        return True
    ds = db.default
    if refs:
        schema_map, hidden_schemas = _schemas_on(client.config.databases, db, ds.node)
        literals = {(t.string(i) or b"").decode("utf-8", "replace") for i in range(t.n) if t.kind(i) == L.T_STRING}
        others = set(client.config.databases) | SYSTEM_SCHEMAS
        only_phys = (db.name in literals or bool(calls)) and not (literals & (others - {db.name}))
        canon = _canonical_by_node(db)
        sums = await _table_sums(client, db) if any(table == "TABLES" for _, _, table in refs) else {}
        for a, b, table in refs:
            columns = await _is_columns(client, ds, table)
            view = _derived(db, columns, table, canon.get(ds.node, {}), schema_map, hidden_schemas, only_phys,
                            sums)
            if view is None:
                continue
            items, where = view
            rest = await _elsewhere(client, db, columns, table, canon, ds.node, sums)
            derived = (b"(SELECT " + items + b" FROM `information_schema`." + quote_ident(table) + where
                       + b"".join(b" UNION ALL " + sel for sel in rest) + b")")
            k = b + 1
            alias = t.word(k) == b"AS" or (t.kind(k) in IDENT_KINDS and t.word(k) not in (
                b"WHERE", b"JOIN", b"LEFT", b"RIGHT", b"INNER", b"CROSS", b"NATURAL", b"STRAIGHT_JOIN", b"GROUP",
                b"ORDER", b"LIMIT", b"HAVING", b"UNION", b"ON", b"USING", b"WINDOW", b"FOR", b"LOCK", b"INTO"))
            repl = derived if alias else derived + b" AS " + quote_ident(t.name(b) or table)
            edits.append((t.x.start(a), t.x.end(b), repl))
    text = apply_edits(sql, edits) if edits else sql
    text = text.rstrip().rstrip(b";")
    res = await query_on(client, ds, text)
    if not res.columns:
        from ddm_core.packets import ok_packet

        client.send_packet(ok_packet(res.affected_rows, res.insert_id, client.status_flags(), res.warnings, res.info,
                               client.session_track), 1)
        return True
    send_rows(client, res.columns, rows_of(res))
    return True
