"""Metadata statements on a sharded logical database, answered with logical names.

`answer(client, lexed, sql)` is called by the executor before planning a COM_QUERY on a sharded database. It
returns False for statements it does not handle; otherwise it computes the answer from the data sources and writes
a text result set to the client. Covered:

- SHOW [FULL] TABLES [{FROM|IN} db] [LIKE 'p' | WHERE expr]: the table rules of the logical database (listed when
  their first physical table exists) plus the tables without a rule found on the default data source; physical
  shards are never listed. The column is `Tables_in_<logical db>`.
- SHOW CREATE TABLE t: the DDL of the rule's first physical table, with the physical name replaced by `t`.
- DESCRIBE/DESC/EXPLAIN t [col], SHOW [FULL] {COLUMNS|FIELDS} {FROM|IN} t [{FROM|IN} db] [LIKE|WHERE]: run against
  the first physical table.
- SHOW {INDEX|INDEXES|KEYS} {FROM|IN} t [{FROM|IN} db] [WHERE]: same, with the `Table` column set to `t`.
- SHOW TABLE STATUS [{FROM|IN} db] [LIKE|WHERE]: one row per logical table, the other columns from the rule's
  first physical table; for a sharded table Rows, Data_length, Index_length and Data_free are summed over all its
  physical tables (on every data source), Auto_increment is the largest; a broadcast table shows one copy's figures.
- SELECT ... FROM information_schema.X ...: every `information_schema.X` that has schema/table-name columns
  (TABLES, COLUMNS, STATISTICS, KEY_COLUMN_USAGE, TABLE_CONSTRAINTS, SCHEMATA, ...) is replaced by a derived table
  that shows every logical table of the current logical database exactly once, under the logical database and
  table names, read from the node that holds the rule's first physical table (the canonical one):
  * the main part runs on the default data source's node: the default physical database is renamed to the logical
    database, a rule's canonical table there to the rule name, the other physical tables (shards, copies, ddm's
    own tables) and the logical databases' other physical databases on that node are hidden - except canonical
    tables in them (several data sources on one node), which are renamed too;
  * canonical tables on other nodes are read there with the same mapping and appended to the derived table as
    literal rows (`UNION ALL SELECT ...`, typed so that the columns keep their types);
  * in TABLES, TABLE_ROWS, DATA_LENGTH, INDEX_LENGTH and DATA_FREE of a sharded table are the totals over all its
    physical tables; AUTO_INCREMENT, AVG_ROW_LENGTH, CREATE_TIME etc. stay the canonical (first physical) table's.
    A broadcast or single table shows its canonical table's figures.
  WHERE/ORDER BY/COUNT(*) in the statement therefore see logical names (`WHERE TABLE_NAME = 'sbtest1'` works).
  DATABASE()/SCHEMA() are replaced by the logical name. Other logical databases show the tables of their default
  data source only, and only when it is on the current database's default node.
- SELECT DATABASE() (and other SELECTs without FROM that call DATABASE()/SCHEMA()): the logical name. A SELECT
  with DATABASE()/SCHEMA() next to real tables is handed back to the executor with the logical name in place of
  the calls.

LIKE and WHERE on the SHOW forms ddm builds itself are evaluated by MySQL: the rows are sent back to the default
data source as a derived table and filtered there, so the full expression syntax works.

Limitations: prepared (COM_STMT_PREPARE) metadata statements are not handled here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ddm.config import DataSource
from ddm.execute.metadata_common import (
    EXPLAIN_WORDS,
    FROM_IN,
    NAME_KINDS,
    SUMMED_STATUS,
    Db,
    Toks,
    col_names,
    condition,
    db_for,
    filter_rows,
    opt_db,
    query_on,
    quote_ident,
    rows_of,
    send_rows,
    to_decimal,
)
from ddm.execute.metadata_select import answer_select
from ddm.sharding.plan import PlanError
from ddm.wire.backend import Result
from ddm.wire.constants import er as ER
from ddm.wire.resultset import column_definition
from ddm_core import lexer as L

if TYPE_CHECKING:
    from ddm.execute.client import ClientSession
# --------------------------------------------------------------------------------------------------------------
# Entry point


async def answer(client: ClientSession, lexed: Any, sql: bytes,
                 run_query: Callable[[bytes], Awaitable[None]]) -> bool:
    """run_query(sql): runs a rewritten statement on the client's sharded database (the executor's, passed in so
    that this module does not import the executor, which imports it)."""
    kw = lexed.first_keyword
    if kw == b"SHOW":
        t = Toks(lexed)
        i = 1
        full = t.word(i) == b"FULL"
        if full:
            i += 1
        w = t.word(i)
        if w == b"TABLES":
            await _show_tables(client, t, i + 1, full)
            return True
        if w in (b"COLUMNS", b"FIELDS") and t.word(i + 1) in FROM_IN:
            await _describe(client, t, i + 2, index=False)
            return True
        if not full and w in (b"INDEX", b"INDEXES", b"KEYS") and t.word(i + 1) in FROM_IN:
            await _describe(client, t, i + 2, index=True)
            return True
        if not full and w == b"CREATE" and t.word(i + 1) == b"TABLE":
            await _show_create(client, t, i + 2)
            return True
        if not full and w == b"TABLE" and t.word(i + 1) == b"STATUS":
            await _table_status(client, t, i + 2)
            return True
        return False
    if kw in (b"DESC", b"DESCRIBE", b"EXPLAIN"):
        t = Toks(lexed)
        if t.kind(1) not in NAME_KINDS or (t.kind(1) == L.T_KEYWORD and t.word(1) in EXPLAIN_WORDS):
            return False
        if t.kind(1) == L.T_KEYWORD and t.word(1) in (b"SELECT",):
            return False
        await _describe(client, t, 1, index=False, describe=True)
        return True
    if kw == b"SELECT":
        low = sql.lower()
        if b"information_schema" not in low and b"database" not in low and b"schema" not in low:
            return False
        return await answer_select(client, Toks(lexed), sql, run_query)
    return False


# --------------------------------------------------------------------------------------------------------------
# SHOW TABLES


async def _physical_tables(client: ClientSession, db: Db, datasources: Sequence[str]
                           ) -> dict[str, list[list[bytes | None]]]:
    """SHOW FULL TABLES of each data source (in parallel): datasource -> rows (name, type)."""
    async def one(name: str) -> tuple[str, Result]:
        ds = db.conf.datasources[name]
        return name, await query_on(client, ds, b"SHOW FULL TABLES FROM " + quote_ident(ds.database))

    results = await asyncio.gather(*(one(n) for n in datasources))
    return {name: rows_of(res) for name, res in results}


async def logical_tables(client: ClientSession, db: Db) -> list[tuple[str, bytes]]:
    """(logical name, table type) of every table of the logical database, sorted by name."""
    default = db.conf.default_datasource
    wanted = [default] + sorted({ds for ds, _ in db.canonical.values()} - {default})
    found = await _physical_tables(client, db, wanted)
    exists = {(ds, (r[0] or b"").decode("utf-8", "replace").lower()): r[1] or b"BASE TABLE"
              for ds, rows in found.items() for r in rows}
    out: dict[str, bytes] = {}
    for row in found[default]:
        name = (row[0] or b"").decode("utf-8", "replace")
        if db.logical_of(default, name) == name and name.lower() not in db.internal:
            out[name] = row[1] or b"BASE TABLE"
    for rule_name, (ds, phys) in db.canonical.items():
        typ = exists.get((ds, phys.lower()))
        if typ is not None:
            out[rule_name] = typ
    return sorted(out.items())


async def _show_tables(client: ClientSession, t: Toks, i: int, full: bool) -> None:
    named, i = opt_db(t, i)
    db = db_for(client, named)
    title = f"Tables_in_{db.name}"
    cond, pattern = condition(t, i, title)
    rows: list[list[bytes | None]] = [[name.encode(), typ] for name, typ in await logical_tables(client, db)]
    names = [title, "Table_type"]
    rows = await filter_rows(client, db.default, names, rows, cond)
    if pattern is not None:
        title = f"{title} ({pattern.decode('utf-8', 'replace')})"
    cols = [column_definition(title, schema="information_schema", table="TABLE_NAMES", length=256)]
    if full:
        cols.append(column_definition("Table_type", schema="information_schema", table="TABLE_NAMES", length=256))
    else:
        rows = [r[:1] for r in rows]
    send_rows(client, cols, rows)


# --------------------------------------------------------------------------------------------------------------
# SHOW CREATE TABLE, DESCRIBE, SHOW COLUMNS, SHOW INDEX


async def _show_create(client: ClientSession, t: Toks, i: int) -> None:
    ref = t.table_ref(i)
    if ref is None:
        raise PlanError(ER.PARSE_ERROR, "You have an error in your SQL syntax: SHOW CREATE TABLE needs a table name")
    named, table, _ = ref
    db = db_for(client, named)
    ds, phys, _rule = db.locate(table)
    res = await query_on(client, ds, b"SHOW CREATE TABLE " + quote_ident(ds.database) + b"." + quote_ident(phys),
                       _renames(db, ds, phys, table))
    rows = rows_of(res)
    old, new = quote_ident(phys), quote_ident(table)
    for row in rows:
        row[0] = table.encode()
        if len(row) > 1 and row[1] is not None and phys != table:
            row[1] = row[1].replace(old, new, 1)
    send_rows(client, res.columns, rows)


def _renames(db: Db, ds: DataSource, phys: str, table: str) -> list[tuple[bytes, bytes]]:
    return [(f"{ds.database}.{phys}".encode(), f"{db.name}.{table}".encode()),
            (f"'{phys}'".encode(), f"'{table}'".encode())]


async def _describe(client: ClientSession, t: Toks, i: int, index: bool, describe: bool = False) -> None:
    ref = t.table_ref(i)
    if ref is None:
        raise PlanError(ER.PARSE_ERROR, "You have an error in your SQL syntax: a table name is needed")
    named, table, j = ref
    start = t.x.start(i)
    end = t.x.end(j - 1)
    if not describe and named is None:
        named2, j2 = opt_db(t, j)
        if named2 is not None:
            named = named2
            end = t.x.end(j2 - 1)
    db = db_for(client, named)
    ds, phys, _rule = db.locate(table)
    sql = t.x.sql
    tail_end = len(sql.rstrip().rstrip(b";").rstrip())
    text = (sql[:start] + quote_ident(ds.database) + b"." + quote_ident(phys) + sql[end:tail_end])
    res = await query_on(client, ds, text, _renames(db, ds, phys, table))
    rows = rows_of(res)
    if index:
        names = col_names(res)
        if "Table" in names:
            k = names.index("Table")
            for row in rows:
                row[k] = table.encode()
    send_rows(client, res.columns, rows)


# --------------------------------------------------------------------------------------------------------------
# SHOW TABLE STATUS


async def _table_status(client: ClientSession, t: Toks, i: int) -> None:
    named, i = opt_db(t, i)
    db = db_for(client, named)
    cond, _ = condition(t, i, "Name")
    default = db.conf.default_datasource
    wanted = [default] + [d for d in db.conf.datasources if d != default and any(
        d in rule.datasources for rule in db.conf.tables.values())]

    async def one(name: str) -> tuple[str, Result]:
        ds = db.conf.datasources[name]
        return name, await query_on(client, ds, b"SHOW TABLE STATUS FROM " + quote_ident(ds.database))

    results = await asyncio.gather(*(one(n) for n in wanted))
    columns = results[0][1].columns
    names = col_names(results[0][1])
    if not columns:
        send_rows(client, [], [])
        return
    idx = {n: k for k, n in enumerate(names)}
    merged: dict[str, list[bytes | None]] = {}
    sums: dict[str, dict[str, Decimal]] = {}
    auto: dict[str, Decimal] = {}
    for ds_name, res in results:
        for row in rows_of(res):
            phys = (row[idx["Name"]] or b"").decode("utf-8", "replace")
            rule = db.physical.get((ds_name, phys.lower()))
            if rule is not None:
                logical = rule.name
            elif ds_name == default and db.conf.rule(phys) is None and phys.lower() not in db.internal:
                logical = phys
            else:
                continue
            canonical = db.logical_of(ds_name, phys) is not None
            if rule is not None and rule.kind == "broadcast" and not canonical:
                continue  # the copies hold the same rows: the logical table's figures are one copy's
            if logical not in merged or canonical:
                base = list(row)
                base[idx["Name"]] = logical.encode()
                merged[logical] = base
            acc = sums.setdefault(logical, {})
            for col in SUMMED_STATUS:
                v = to_decimal(row[idx[col]]) if col in idx else None
                if v is not None:
                    acc[col] = acc.get(col, Decimal(0)) + v
            v = to_decimal(row[idx["Auto_increment"]]) if "Auto_increment" in idx else None
            if v is not None and v > auto.get(logical, Decimal(-1)):
                auto[logical] = v
    out = []
    for logical in sorted(merged):
        row = merged[logical]
        for col, v in sums.get(logical, {}).items():
            row[idx[col]] = str(v).encode()
        if logical in auto:
            row[idx["Auto_increment"]] = str(auto[logical]).encode()
        out.append(row)
    out = await filter_rows(client, db.default, names, out, cond)
    send_rows(client, columns, out)
