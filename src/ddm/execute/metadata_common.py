"""What the metadata answers share: the token view of a metadata statement, the logical database it names, queries
on its data sources, result sets with logical names, LIKE matching (ddm.execute.metadata, metadata_select)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ddm.config import DatabaseConfig, DataSource, TableRule
from ddm.sharding.plan import PlanError
from ddm.wire.backend import BackendError, Result
from ddm.wire.constants import er as ER
from ddm.wire.resultset import text_resultset, text_row
from ddm.wire.rowcodec import ColumnDef, split_text_row
from ddm.wire.session import synchronize
from ddm_core import lexer as L

if TYPE_CHECKING:
    from ddm.execute.client import ClientSession

NAME_KINDS = (L.T_IDENT, L.T_QUOTED_IDENT, L.T_KEYWORD)
IDENT_KINDS = (L.T_IDENT, L.T_QUOTED_IDENT)
FROM_IN = (b"FROM", b"IN")
# Words after DESCRIBE/EXPLAIN that make it an EXPLAIN of a statement, not a table description.
EXPLAIN_WORDS = {b"SELECT", b"INSERT", b"UPDATE", b"DELETE", b"REPLACE", b"WITH", b"FORMAT", b"EXTENDED",
                  b"PARTITIONS", b"ANALYZE", b"FOR", b"TABLE", b"VALUES"}
SYSTEM_SCHEMAS = {"information_schema", "mysql", "performance_schema", "sys"}

# information_schema columns holding a schema name, and table-name columns with their schema column.
SCHEMA_COLUMNS = ("TABLE_SCHEMA", "INDEX_SCHEMA", "CONSTRAINT_SCHEMA", "REFERENCED_TABLE_SCHEMA",
                   "UNIQUE_CONSTRAINT_SCHEMA", "EVENT_OBJECT_SCHEMA", "TRIGGER_SCHEMA", "SCHEMA_NAME",
                   "TABLE_SCHEMA_NAME")
TABLE_COLUMNS = {"TABLE_NAME": ("TABLE_SCHEMA", "CONSTRAINT_SCHEMA", "INDEX_SCHEMA"),
                  "REFERENCED_TABLE_NAME": ("REFERENCED_TABLE_SCHEMA", "UNIQUE_CONSTRAINT_SCHEMA",
                                            "CONSTRAINT_SCHEMA"),
                  "EVENT_OBJECT_TABLE": ("EVENT_OBJECT_SCHEMA",)}
SUMMED_STATUS = ("Rows", "Data_length", "Index_length", "Data_free")

# (node, information_schema table upper-case) -> its column names, in order
IS_COLUMNS: dict[tuple[str, str], tuple[str, ...]] = {}


# --------------------------------------------------------------------------------------------------------------
# Small helpers


def quote_ident(name: str) -> bytes:
    return b"`" + name.encode().replace(b"`", b"``") + b"`"


def quote_str(value: str | bytes) -> bytes:
    b = value.encode() if isinstance(value, str) else value
    return b"'" + b.replace(b"\\", b"\\\\").replace(b"'", b"''").replace(b"\0", b"\\0") + b"'"


def like_match(name: str, pattern: str, escape: str = "\\") -> bool:
    """SQL LIKE (case-insensitive, as MariaDB's utf8 general collations compare); used by the unit tests' fake."""

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


class Toks:
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


class Db:
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


def db_for(client: ClientSession, named: str | None) -> Db:
    name = named if named is not None else client.session.db
    if named is not None and named != client.session.db:
        problem = client.check_db(named) if hasattr(client, "_check_db") else None
        if problem:
            raise PlanError(*problem)
    conf = client.config.databases.get(name) if name is not None else None
    if conf is None:
        raise PlanError(ER.BAD_DB_ERROR, f"Unknown database '{name}'")
    return Db(name, conf)


async def query_on(client: ClientSession, ds: DataSource, sql: bytes,
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


def col_names(res: Result) -> list[str]:
    return [ColumnDef.parse(c).name.decode("utf-8", "replace") for c in res.columns]


def rows_of(res: Result) -> list[list[bytes | None]]:
    n = len(res.columns)
    return [split_text_row(r, n) for r in res.rows]


def _renamed(col: bytes, name: str) -> bytes:
    c = ColumnDef.parse(col)
    return c.replace(name=name.encode(), org_name=name.encode()).to_payload()


def send_rows(client: ClientSession, columns: Sequence[bytes], rows: Sequence[Sequence[Any]]) -> None:
    client.transport.write(text_resultset(list(columns), [text_row(r) for r in rows],
                                          deprecate_eof=client.deprecate_eof, status=client.status_flags()))


async def filter_rows(client: ClientSession, ds: DataSource, names: Sequence[str],
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
    res = await query_on(client, ds, sql)
    keep = sorted(int(r[0]) for r in rows_of(res) if r[0] is not None)
    return [rows[i] for i in keep]


def condition(t: Toks, i: int, like_column: str) -> tuple[bytes, bytes | None]:
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


def opt_db(t: Toks, i: int) -> tuple[str | None, int]:
    """An optional `{FROM|IN} db` at token i."""
    if t.word(i) in FROM_IN and t.name(i + 1) is not None:
        return t.name(i + 1), i + 2
    return None, i


def to_decimal(v: bytes | None) -> Decimal | None:
    if v is None:
        return None
    try:
        return Decimal(v.decode())
    except (InvalidOperation, UnicodeDecodeError):
        return None
