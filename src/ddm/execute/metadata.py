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
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ddm.config import DatabaseConfig, DataSource, TableRule
from ddm.sharding.plan import PlanError
from ddm.sharding.rewrite import apply_edits
from ddm.wire.backend import BackendError, Result
from ddm.wire.constants import er as ER
from ddm.wire.constants import field_type as FT
from ddm.wire.resultset import column_definition, text_resultset, text_row
from ddm.wire.rowcodec import UNSIGNED_FLAG, ColumnDef, split_text_row
from ddm.wire.session import synchronize
from ddm_core import lexer as L

if TYPE_CHECKING:
    from ddm.execute.client import ClientSession

_NAME_KINDS = (L.T_IDENT, L.T_QUOTED_IDENT, L.T_KEYWORD)
_IDENT_KINDS = (L.T_IDENT, L.T_QUOTED_IDENT)
_FROM_IN = (b"FROM", b"IN")
# Words after DESCRIBE/EXPLAIN that make it an EXPLAIN of a statement, not a table description.
_EXPLAIN_WORDS = {b"SELECT", b"INSERT", b"UPDATE", b"DELETE", b"REPLACE", b"WITH", b"FORMAT", b"EXTENDED",
                  b"PARTITIONS", b"ANALYZE", b"FOR", b"TABLE", b"VALUES"}
_SYSTEM_SCHEMAS = {"information_schema", "mysql", "performance_schema", "sys"}

# information_schema columns holding a schema name, and table-name columns with their schema column.
_SCHEMA_COLUMNS = ("TABLE_SCHEMA", "INDEX_SCHEMA", "CONSTRAINT_SCHEMA", "REFERENCED_TABLE_SCHEMA",
                   "UNIQUE_CONSTRAINT_SCHEMA", "EVENT_OBJECT_SCHEMA", "TRIGGER_SCHEMA", "SCHEMA_NAME",
                   "TABLE_SCHEMA_NAME")
_TABLE_COLUMNS = {"TABLE_NAME": ("TABLE_SCHEMA", "CONSTRAINT_SCHEMA", "INDEX_SCHEMA"),
                  "REFERENCED_TABLE_NAME": ("REFERENCED_TABLE_SCHEMA", "UNIQUE_CONSTRAINT_SCHEMA",
                                            "CONSTRAINT_SCHEMA"),
                  "EVENT_OBJECT_TABLE": ("EVENT_OBJECT_SCHEMA",)}
_SUMMED_STATUS = ("Rows", "Data_length", "Index_length", "Data_free")

# (node, information_schema table upper-case) -> its column names, in order
_IS_COLUMNS: dict[tuple[str, str], tuple[str, ...]] = {}


# --------------------------------------------------------------------------------------------------------------
# Small helpers


def quote_ident(name: str) -> bytes:
    return b"`" + name.encode().replace(b"`", b"``") + b"`"


def quote_str(value: str | bytes) -> bytes:
    b = value.encode() if isinstance(value, str) else value
    return b"'" + b.replace(b"\\", b"\\\\").replace(b"'", b"''").replace(b"\0", b"\\0") + b"'"


def like_match(name: str, pattern: str, escape: str = "\\") -> bool:
    """SQL LIKE (case-insensitive, as MariaDB's utf8 general collations compare); used by the unit tests' fake."""
    import re

    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == escape and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.fullmatch("".join(out), name, re.S | re.I) is not None


class _Toks:
    """Token view of a statement: upper-case words and unquoted names by index."""

    def __init__(self, lexed: Any) -> None:
        self.x = lexed
        self.n = lexed.ntokens
        self.slot_of = {t: k for k, t in enumerate(lexed.slots)}

    def kind(self, i: int) -> int:
        return self.x.kind(i) if 0 <= i < self.n else -1

    def word(self, i: int) -> bytes:
        if not 0 <= i < self.n:
            return b""
        k = self.x.kind(i)
        if k == L.T_KEYWORD or k == L.T_IDENT:
            return self.x.text(i).upper()
        if k == L.T_PUNCT or k == L.T_OPERATOR:
            return self.x.text(i)
        return b""

    def name(self, i: int) -> str | None:
        """The identifier at token i (backquotes removed), None if token i is not a name."""
        if not 0 <= i < self.n:
            return None
        k = self.x.kind(i)
        t = self.x.text(i)
        if k == L.T_QUOTED_IDENT:
            q = t[:1]
            return t[1:-1].replace(q + q, q).decode("utf-8", "replace")
        if k in (L.T_IDENT, L.T_KEYWORD):
            return t.decode("utf-8", "replace")
        return None

    def string(self, i: int) -> bytes | None:
        if self.kind(i) != L.T_STRING:
            return None
        k = self.slot_of.get(i)
        if k is None:
            return None
        v = self.x.slot_value(k)
        return v if isinstance(v, bytes) else None

    def table_ref(self, i: int) -> tuple[str | None, str, int] | None:
        """`[db.]name` starting at token i: (db, name, index after it)."""
        first = self.name(i)
        if first is None:
            return None
        if self.word(i + 1) == b"." and self.name(i + 2) is not None:
            return first, self.name(i + 2) or "", i + 3
        return None, first, i + 1

    def rest(self, i: int) -> bytes:
        """The statement text from token i to the end (without a trailing `;`)."""
        if i >= self.n:
            return b""
        end = self.n
        while end > i and self.word(end - 1) == b";":
            end -= 1
        if end <= i:
            return b""
        return self.x.sql[self.x.start(i):self.x.end(end - 1)]


class _Db:
    """Where the logical database's tables are: the physical side of one DatabaseConfig."""

    def __init__(self, name: str, conf: DatabaseConfig) -> None:
        self.name = name
        self.conf = conf
        self.default = conf.datasources[conf.default_datasource]
        # (datasource, physical table lower-case) -> rule, for every physical table of every rule
        self.physical: dict[tuple[str, str], TableRule] = {}
        # rule name -> (datasource, physical table) of the table that stands for the logical one
        self.canonical: dict[str, tuple[str, str]] = {}
        # ddm's own tables on the default data source (segment key generator sequences): not listed
        self.internal: set[str] = set()
        for rule in conf.tables.values():
            kg = rule.key_generator
            if kg is not None and kg.type == "segment":
                self.internal.add(str(kg.props.get("table") or "ddm_sequence").lower())
            targets = rule.targets
            for t in targets:
                self.physical[(t.datasource, t.table.lower())] = rule
            if not targets:
                continue
            first = next((t for t in targets if t.datasource == conf.default_datasource), targets[0])
            self.canonical[rule.name] = (first.datasource, first.table)

    def locate(self, table: str) -> tuple[DataSource, str, TableRule | None]:
        """(data source, physical table, rule) that answers for logical table `table`."""
        rule = self.conf.rule(table)
        if rule is None or rule.name not in self.canonical:
            return self.default, table, rule
        ds, phys = self.canonical[rule.name]
        return self.conf.datasources[ds], phys, rule

    def logical_of(self, datasource: str, physical: str) -> str | None:
        """The logical name of a physical table in `datasource`: the rule name for a rule's canonical table, the
        table itself for a table without a rule on the default data source, None for a shard that is hidden."""
        rule = self.physical.get((datasource, physical.lower()))
        if rule is not None:
            canon = self.canonical.get(rule.name)
            if canon is not None and canon[0] == datasource and canon[1].lower() == physical.lower():
                return rule.name
            return None
        if datasource == self.conf.default_datasource and self.conf.rule(physical) is None:
            return physical
        return None


def _db_for(client: ClientSession, named: str | None) -> _Db:
    name = named if named is not None else client.session.db
    if named is not None and named != client.session.db:
        problem = client.check_db(named) if hasattr(client, "_check_db") else None
        if problem:
            raise PlanError(*problem)
    conf = client.config.databases.get(name) if name is not None else None
    if conf is None:
        raise PlanError(ER.BAD_DB_ERROR, f"Unknown database '{name}'")
    return _Db(name, conf)


async def _query(client: ClientSession, ds: DataSource, sql: bytes,
                 rename: Sequence[tuple[bytes, bytes]] = ()) -> Result:
    """Run one statement on a data source (its own pooled connection, in the session's state). A BackendError has
    the `rename` (physical, logical) pairs applied to its message."""
    pool = client.pool_for(ds.node)
    conn = await pool.acquire()
    try:
        await synchronize(conn, client.session, ds.database.encode())
        res = await conn.query(sql)
    except BackendError as exc:
        client.give_back(conn, dirty=True)
        msg = exc.message
        for phys, logical in rename:
            msg = msg.replace(phys, logical)
        if msg != exc.message:
            raise BackendError(exc.code, exc.sqlstate, msg) from None
        raise
    except BaseException:
        client.give_back(conn, dirty=True)
        raise
    pool.release(conn)
    return res


def _col_names(res: Result) -> list[str]:
    return [ColumnDef.parse(c).name.decode("utf-8", "replace") for c in res.columns]


def _rows(res: Result) -> list[list[bytes | None]]:
    n = len(res.columns)
    return [split_text_row(r, n) for r in res.rows]


def _renamed(col: bytes, name: str) -> bytes:
    c = ColumnDef.parse(col)
    return c.replace(name=name.encode(), org_name=name.encode()).to_payload()


def _send(client: ClientSession, columns: Sequence[bytes], rows: Sequence[Sequence[Any]]) -> None:
    client.transport.write(text_resultset(list(columns), [text_row(r) for r in rows],
                                          deprecate_eof=client.deprecate_eof, status=client.status_flags()))


async def _filter(client: ClientSession, ds: DataSource, names: Sequence[str],
                  rows: list[list[bytes | None]], cond: bytes) -> list[list[bytes | None]]:
    """The rows for which `cond` (SQL over columns `names`) holds, evaluated by MySQL on data source `ds`."""
    if not rows or not cond:
        return rows
    selects = []
    for i, row in enumerate(rows):
        items = [b"%d AS `ddm_i`" % i] if i == 0 else [b"%d" % i]
        for name, v in zip(names, row, strict=True):
            val = b"NULL" if v is None else b"_utf8mb4 X'" + v.hex().encode() + b"'"
            items.append(val + b" AS " + quote_ident(name) if i == 0 else val)
        selects.append(b"SELECT " + b", ".join(items))
    sql = b"SELECT `ddm_i` FROM (" + b" UNION ALL ".join(selects) + b") AS `ddm_t` WHERE " + cond
    res = await _query(client, ds, sql)
    keep = sorted(int(r[0]) for r in _rows(res) if r[0] is not None)
    return [rows[i] for i in keep]


def _condition(t: _Toks, i: int, like_column: str) -> tuple[bytes, bytes | None]:
    """The LIKE/WHERE clause at token i as a condition, and the LIKE pattern text (for column titles)."""
    w = t.word(i)
    if w == b"LIKE":
        return quote_ident(like_column) + b" LIKE " + t.rest(i + 1), t.string(i + 1)
    if w == b"WHERE":
        return t.rest(i + 1), None
    if i < t.n and t.word(i) != b";":
        raise PlanError(ER.PARSE_ERROR, "You have an error in your SQL syntax near "
                                        f"'{t.rest(i)[:40].decode('utf-8', 'replace')}'")
    return b"", None


def _opt_db(t: _Toks, i: int) -> tuple[str | None, int]:
    """An optional `{FROM|IN} db` at token i."""
    if t.word(i) in _FROM_IN and t.name(i + 1) is not None:
        return t.name(i + 1), i + 2
    return None, i


# --------------------------------------------------------------------------------------------------------------
# Entry point


async def answer(client: ClientSession, lexed: Any, sql: bytes,
                 run_query: Callable[[bytes], Awaitable[None]]) -> bool:
    """run_query(sql): runs a rewritten statement on the client's sharded database (the executor's, passed in so
    that this module does not import the executor, which imports it)."""
    kw = lexed.first_keyword
    if kw == b"SHOW":
        t = _Toks(lexed)
        i = 1
        full = t.word(i) == b"FULL"
        if full:
            i += 1
        w = t.word(i)
        if w == b"TABLES":
            await _show_tables(client, t, i + 1, full)
            return True
        if w in (b"COLUMNS", b"FIELDS") and t.word(i + 1) in _FROM_IN:
            await _describe(client, t, i + 2, index=False)
            return True
        if not full and w in (b"INDEX", b"INDEXES", b"KEYS") and t.word(i + 1) in _FROM_IN:
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
        t = _Toks(lexed)
        if t.kind(1) not in _NAME_KINDS or (t.kind(1) == L.T_KEYWORD and t.word(1) in _EXPLAIN_WORDS):
            return False
        if t.kind(1) == L.T_KEYWORD and t.word(1) in (b"SELECT",):
            return False
        await _describe(client, t, 1, index=False, describe=True)
        return True
    if kw == b"SELECT":
        low = sql.lower()
        if b"information_schema" not in low and b"database" not in low and b"schema" not in low:
            return False
        return await _select(client, _Toks(lexed), sql, run_query)
    return False


# --------------------------------------------------------------------------------------------------------------
# SHOW TABLES


async def _physical_tables(client: ClientSession, db: _Db, datasources: Sequence[str]
                           ) -> dict[str, list[list[bytes | None]]]:
    """SHOW FULL TABLES of each data source (in parallel): datasource -> rows (name, type)."""
    async def one(name: str) -> tuple[str, Result]:
        ds = db.conf.datasources[name]
        return name, await _query(client, ds, b"SHOW FULL TABLES FROM " + quote_ident(ds.database))

    results = await asyncio.gather(*(one(n) for n in datasources))
    return {name: _rows(res) for name, res in results}


async def logical_tables(client: ClientSession, db: _Db) -> list[tuple[str, bytes]]:
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


async def _show_tables(client: ClientSession, t: _Toks, i: int, full: bool) -> None:
    named, i = _opt_db(t, i)
    db = _db_for(client, named)
    title = f"Tables_in_{db.name}"
    cond, pattern = _condition(t, i, title)
    rows: list[list[bytes | None]] = [[name.encode(), typ] for name, typ in await logical_tables(client, db)]
    names = [title, "Table_type"]
    rows = await _filter(client, db.default, names, rows, cond)
    if pattern is not None:
        title = f"{title} ({pattern.decode('utf-8', 'replace')})"
    cols = [column_definition(title, schema="information_schema", table="TABLE_NAMES", length=256)]
    if full:
        cols.append(column_definition("Table_type", schema="information_schema", table="TABLE_NAMES", length=256))
    else:
        rows = [r[:1] for r in rows]
    _send(client, cols, rows)


# --------------------------------------------------------------------------------------------------------------
# SHOW CREATE TABLE, DESCRIBE, SHOW COLUMNS, SHOW INDEX


async def _show_create(client: ClientSession, t: _Toks, i: int) -> None:
    ref = t.table_ref(i)
    if ref is None:
        raise PlanError(ER.PARSE_ERROR, "You have an error in your SQL syntax: SHOW CREATE TABLE needs a table name")
    named, table, _ = ref
    db = _db_for(client, named)
    ds, phys, _rule = db.locate(table)
    res = await _query(client, ds, b"SHOW CREATE TABLE " + quote_ident(ds.database) + b"." + quote_ident(phys),
                       _renames(db, ds, phys, table))
    rows = _rows(res)
    old, new = quote_ident(phys), quote_ident(table)
    for row in rows:
        row[0] = table.encode()
        if len(row) > 1 and row[1] is not None and phys != table:
            row[1] = row[1].replace(old, new, 1)
    _send(client, res.columns, rows)


def _renames(db: _Db, ds: DataSource, phys: str, table: str) -> list[tuple[bytes, bytes]]:
    return [(f"{ds.database}.{phys}".encode(), f"{db.name}.{table}".encode()),
            (f"'{phys}'".encode(), f"'{table}'".encode())]


async def _describe(client: ClientSession, t: _Toks, i: int, index: bool, describe: bool = False) -> None:
    ref = t.table_ref(i)
    if ref is None:
        raise PlanError(ER.PARSE_ERROR, "You have an error in your SQL syntax: a table name is needed")
    named, table, j = ref
    start = t.x.start(i)
    end = t.x.end(j - 1)
    if not describe and named is None:
        named2, j2 = _opt_db(t, j)
        if named2 is not None:
            named = named2
            end = t.x.end(j2 - 1)
    db = _db_for(client, named)
    ds, phys, _rule = db.locate(table)
    sql = t.x.sql
    tail_end = len(sql.rstrip().rstrip(b";").rstrip())
    text = (sql[:start] + quote_ident(ds.database) + b"." + quote_ident(phys) + sql[end:tail_end])
    res = await _query(client, ds, text, _renames(db, ds, phys, table))
    rows = _rows(res)
    if index:
        names = _col_names(res)
        if "Table" in names:
            k = names.index("Table")
            for row in rows:
                row[k] = table.encode()
    _send(client, res.columns, rows)


# --------------------------------------------------------------------------------------------------------------
# SHOW TABLE STATUS


def _num(v: bytes | None) -> Decimal | None:
    if v is None:
        return None
    try:
        return Decimal(v.decode())
    except (InvalidOperation, UnicodeDecodeError):
        return None


async def _table_status(client: ClientSession, t: _Toks, i: int) -> None:
    named, i = _opt_db(t, i)
    db = _db_for(client, named)
    cond, _ = _condition(t, i, "Name")
    default = db.conf.default_datasource
    wanted = [default] + [d for d in db.conf.datasources if d != default and any(
        d in rule.datasources for rule in db.conf.tables.values())]

    async def one(name: str) -> tuple[str, Result]:
        ds = db.conf.datasources[name]
        return name, await _query(client, ds, b"SHOW TABLE STATUS FROM " + quote_ident(ds.database))

    results = await asyncio.gather(*(one(n) for n in wanted))
    columns = results[0][1].columns
    names = _col_names(results[0][1])
    if not columns:
        _send(client, [], [])
        return
    idx = {n: k for k, n in enumerate(names)}
    merged: dict[str, list[bytes | None]] = {}
    sums: dict[str, dict[str, Decimal]] = {}
    auto: dict[str, Decimal] = {}
    for ds_name, res in results:
        for row in _rows(res):
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
            for col in _SUMMED_STATUS:
                v = _num(row[idx[col]]) if col in idx else None
                if v is not None:
                    acc[col] = acc.get(col, Decimal(0)) + v
            v = _num(row[idx["Auto_increment"]]) if "Auto_increment" in idx else None
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
    out = await _filter(client, db.default, names, out, cond)
    _send(client, columns, out)


# --------------------------------------------------------------------------------------------------------------
# SELECT: information_schema and DATABASE()


def _database_calls(t: _Toks) -> list[tuple[int, int]]:
    """(first, last) token of every DATABASE() / SCHEMA() call."""
    out = []
    for i in range(t.n):
        if t.word(i) in (b"DATABASE", b"SCHEMA") and t.word(i + 1) == b"(" and t.word(i + 2) == b")" and (
                t.word(i - 1) != b"."):
            out.append((i, i + 2))
    return out


def _is_refs(t: _Toks) -> list[tuple[int, int, str]]:
    """(first, last token, table upper-case) of every `information_schema.X` table reference."""
    out = []
    for i in range(t.n - 2):
        if (t.kind(i) in _IDENT_KINDS and (t.name(i) or "").lower() == "information_schema"
                and t.word(i + 1) == b"." and t.kind(i + 2) in _NAME_KINDS and t.word(i + 3) != b"."
                and t.word(i - 1) != b"."):
            out.append((i, i + 2, (t.name(i + 2) or "").upper()))
    return out


async def _is_columns(client: ClientSession, ds: DataSource, table: str) -> tuple[str, ...]:
    key = (ds.node, table)
    cols = _IS_COLUMNS.get(key)
    if cols is None:
        res = await _query(client, ds, b"SELECT * FROM `information_schema`." + quote_ident(table) + b" LIMIT 0")
        cols = tuple(_col_names(res))
        _IS_COLUMNS[key] = cols
    return cols


def _case(column: bytes, mapping: Sequence[tuple[str, str]], otherwise: bytes) -> bytes:
    if not mapping:
        return otherwise
    return (b"CASE " + column + b" " + b" ".join(b"WHEN " + quote_str(a) + b" THEN " + quote_str(b)
                                                    for a, b in mapping) + b" ELSE " + otherwise + b" END")


def _in_list(values: Sequence[str]) -> bytes:
    return b"(" + b", ".join(quote_str(v) for v in values) + b")"


def _canonical_by_node(db: _Db) -> dict[str, dict[str, dict[str, str]]]:
    """node -> physical database -> physical table -> logical name, for the table that stands for every table
    rule (the rule's first physical table, see _Db.canonical)."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for rule_name, (ds_name, phys) in db.canonical.items():
        ds = db.conf.datasources[ds_name]
        out.setdefault(ds.node, {}).setdefault(ds.database, {})[phys] = rule_name
    return out


def _derived(db: _Db, columns: Sequence[str], table: str, canon: Mapping[str, Mapping[str, str]],
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
    schema_cols = [present[c] for c in _SCHEMA_COLUMNS if c in present]
    if not schema_cols:
        return None
    table_cols = {present[c]: next((present[s] for s in pair if s in present), None)
                  for c, pair in _TABLE_COLUMNS.items() if c in present}
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


async def _table_sums(client: ClientSession, db: _Db) -> dict[str, dict[str, int]]:
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
        return dbs, await _query(client, ds, sql)

    out: dict[str, dict[str, int]] = {}
    for dbs, res in await asyncio.gather(*(one(dbs) for _, dbs in sorted(by_node.items()))):
        for row in _rows(res):
            ds_name = dbs.get((row[0] or b"").decode("utf-8", "replace"))
            rule = db.physical.get((ds_name or "", (row[1] or b"").decode("utf-8", "replace").lower()))
            if rule is None or rule.name not in rules:
                continue
            acc = out.setdefault(rule.name, {})
            for col, v in zip(_SUMMED_IS, row[2:], strict=False):
                n = _num(v)
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
        res = await _query(client, ds, b"SELECT `CHARACTER_SET_NAME` FROM `information_schema`.`COLLATIONS` "
                                       b"WHERE `ID` = %d" % number)
        rows = _rows(res)
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
    for row in _rows(res):
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


async def _elsewhere(client: ClientSession, db: _Db, columns: Sequence[str], table: str,
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
        res = await _query(client, ds, b"SELECT " + items + b" FROM `information_schema`." + quote_ident(table)
                           + where)
        return await _literal_selects(client, ds, res)

    parts = await asyncio.gather(*(one(node) for node in sorted(canon) if node != main_node))
    return [sel for part in parts for sel in part]


def _schemas_on(databases: Any, db: _Db, node: str) -> tuple[list[tuple[str, str]], list[str]]:
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


async def _select(client: ClientSession, t: _Toks, sql: bytes,
                  run_query: Callable[[bytes], Awaitable[None]]) -> bool:
    calls = _database_calls(t)
    refs = _is_refs(t)
    if not calls and not refs:
        return False
    db = _db_for(client, None)
    edits: list[tuple[int, int, bytes]] = []
    lit = quote_str(db.name)
    has_from = any(t.word(i) == b"FROM" for i in range(t.n))
    if not refs and t.x.digest in (b"SELECT DATABASE()", b"SELECT SCHEMA()"):
        title = sql[t.x.start(1):t.x.end(3)].decode("utf-8", "replace")
        _send(client, [column_definition(title, length=256)], [[db.name]])
        return True
    for a, b in calls:
        repl = lit
        prev, nxt = t.word(a - 1), t.word(b + 1)
        if prev in (b"SELECT", b",") and nxt in (b",", b"FROM", b"", b";") and not (
                t.kind(b + 1) in _IDENT_KINDS or nxt == b"AS"):
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
        others = set(client.config.databases) | _SYSTEM_SCHEMAS
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
            alias = t.word(k) == b"AS" or (t.kind(k) in _IDENT_KINDS and t.word(k) not in (
                b"WHERE", b"JOIN", b"LEFT", b"RIGHT", b"INNER", b"CROSS", b"NATURAL", b"STRAIGHT_JOIN", b"GROUP",
                b"ORDER", b"LIMIT", b"HAVING", b"UNION", b"ON", b"USING", b"WINDOW", b"FOR", b"LOCK", b"INTO"))
            repl = derived if alias else derived + b" AS " + quote_ident(t.name(b) or table)
            edits.append((t.x.start(a), t.x.end(b), repl))
    text = apply_edits(sql, edits) if edits else sql
    text = text.rstrip().rstrip(b";")
    res = await _query(client, ds, text)
    if not res.columns:
        from ddm_core.packets import ok_packet

        client.send_packet(ok_packet(res.affected_rows, res.insert_id, client.status_flags(), res.warnings, res.info,
                               client.session_track), 1)
        return True
    _send(client, res.columns, _rows(res))
    return True
