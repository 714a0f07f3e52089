"""ddm.execute.metadata against a fake client whose data sources answer from canned physical metadata.

LIKE/WHERE filters (which ddm sends back to a data source as a derived table) are evaluated with sqlite3 here."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import struct

import pytest

from ddm import config as config_mod
from ddm.execute import metadata, metadata_common
from ddm.sharding.plan import PlanError
from ddm.wire.backend import BackendError, Result
from ddm.wire.constants import field_type as FT
from ddm.wire.resultset import column_definition, text_row
from ddm.wire.rowcodec import ColumnDef, read_lenenc, split_text_row
from ddm.wire.session import Session
from ddm_core.lexer import lex

CONFIG = """
users: [{name: u, password: p}]
nodes:
  n0: {user: x, port: 3306}
  n1: {user: x, port: 3307}
databases:
  shop:
    datasources:
      ds0: {node: n0, database: shop_0}
      ds1: {node: n1, database: shop_1}
    tables:
      orders:
        nodes: "ds${0..1}.orders_${0..1}"
        database_strategy: {column: user_id, algorithm: mod}
        table_strategy: {column: user_id, algorithm: two_level}
        key_generator: {column: id, type: segment}
      countries: {broadcast: true}
      settings: {datasource: ds1}
  plainapp: {node: n1, database: plain_phys}
"""

# (node, physical db) -> {table: (type, rows)}
PHYSICAL = {
    ("n0", "shop_0"): {"orders_0": 10, "orders_1": 11, "countries": 5, "plain": 3, "ddm_sequence": 1},
    ("n1", "shop_1"): {"orders_0": 12, "orders_1": 13, "countries": 5, "settings": 2},
    ("n1", "plain_phys"): {"t1": 1},
}
STATUS_COLS = ["Name", "Engine", "Rows", "Data_length", "Index_length", "Data_free", "Auto_increment", "Comment"]


def res(names, rows) -> Result:
    return Result(columns=[column_definition(n) for n in names], rows=[text_row(r) for r in rows])


def sqlite_filter(sql: str) -> Result:
    sql = re.sub(r"_utf8mb4 X'([0-9a-f]*)'", lambda m: "'" + bytes.fromhex(m.group(1)).decode().replace("'", "''")
                 + "'", sql)
    with sqlite3.connect(":memory:") as db:
        got = db.execute(sql).fetchall()
    return res(["ddm_i"], got)


class FakeConn:
    def __init__(self, node: str, log: list) -> None:
        self.node_name = node
        self.signature = ()
        self.db = None
        self.log = log
        self.pool = None

    async def command(self, payload: bytes):
        assert payload[:1] == b"\x02"
        self.db = payload[1:]
        return []

    async def query(self, sql: bytes) -> Result:
        text = sql.decode()
        self.log.append((self.node_name, self.db.decode(), text))
        return respond(self.node_name, self.db.decode(), text)


def respond(node: str, db: str, sql: str) -> Result:
    m = re.fullmatch(r"SHOW FULL TABLES FROM `(\w+)`", sql)
    if m:
        tables = PHYSICAL[(node, m.group(1))]
        return res([f"Tables_in_{m.group(1)}", "Table_type"], [(t, "BASE TABLE") for t in sorted(tables)])
    m = re.fullmatch(r"SHOW TABLE STATUS FROM `(\w+)`", sql)
    if m:
        tables = PHYSICAL[(node, m.group(1))]
        return res(STATUS_COLS, [(t, "InnoDB", n, n * 100, 50, 0, n + 1, "") for t, n in sorted(tables.items())])
    m = re.fullmatch(r"SHOW CREATE TABLE `(\w+)`\.`(\w+)`", sql)
    if m:
        if m.group(2) not in PHYSICAL[(node, m.group(1))]:
            raise BackendError(1146, b"42S02", f"Table '{m.group(1)}.{m.group(2)}' doesn't exist".encode())
        return res(["Table", "Create Table"],
                   [(m.group(2), f"CREATE TABLE `{m.group(2)}` (\n  `id` int NOT NULL,\n  PRIMARY KEY (`id`)\n)")])
    m = re.match(r"(?i)(DESCRIBE|DESC|EXPLAIN|SHOW (FULL )?(COLUMNS|FIELDS) (FROM|IN)) `(\w+)`\.`(\w+)`", sql)
    if m:
        return res(["Field", "Type"], [("id", "int"), ("user_id", "int")])
    m = re.match(r"(?i)SHOW (INDEX|KEYS|INDEXES) (FROM|IN) `(\w+)`\.`(\w+)`", sql)
    if m:
        return res(["Table", "Non_unique", "Key_name"], [(m.group(4), 0, "PRIMARY")])
    if sql.startswith("SELECT `ddm_i` FROM"):
        return sqlite_filter(sql)
    m = re.fullmatch(r"SELECT `TABLE_SCHEMA`, `TABLE_NAME`, `TABLE_ROWS`, `DATA_LENGTH`, `INDEX_LENGTH`, `DATA_FREE` "
                     r"FROM `information_schema`.`TABLES` WHERE `TABLE_SCHEMA` IN \('(\w+)'\)", sql)
    if m:  # the size columns of the physical tables, for the totals of sharded tables
        tables = PHYSICAL[(node, m.group(1))]
        return res(["TABLE_SCHEMA", "TABLE_NAME", "TABLE_ROWS", "DATA_LENGTH", "INDEX_LENGTH", "DATA_FREE"],
                   [(m.group(1), t, n, n * 100, 50, 0) for t, n in sorted(tables.items())])
    if node == "n1" and sql.startswith("SELECT ") and "FROM `information_schema`.`TABLES` WHERE `TABLE_SCHEMA` = " \
            "'shop_1' AND `TABLE_NAME` IN ('settings')" in sql:
        # the canonical table of `settings` lives on n1 only: its row, already mapped to logical names
        assert "WHEN 'settings' THEN 'settings'" in sql
        return Result(columns=[column_definition("TABLE_CATALOG"), column_definition("TABLE_SCHEMA"),
                               column_definition("TABLE_NAME"),
                               column_definition("TABLE_ROWS", FT.LONGLONG, charset=63, flags=32),
                               column_definition("CREATE_TIME", FT.DATETIME, charset=63)],
                      rows=[text_row(["def", "shop", "settings", 2, None])])
    if sql.startswith("SELECT * FROM `information_schema`.`TABLES` LIMIT 0"):
        return res(["TABLE_CATALOG", "TABLE_SCHEMA", "TABLE_NAME", "TABLE_ROWS", "CREATE_TIME"], [])
    if sql.startswith("SELECT * FROM `information_schema`.`TABLES` LIMIT 0"):
        return res(["TABLE_CATALOG", "TABLE_SCHEMA", "TABLE_NAME", "TABLE_ROWS"], [])
    if sql.startswith("SELECT * FROM `information_schema`.`ENGINES` LIMIT 0"):
        return res(["ENGINE", "SUPPORT"], [])
    if "information_schema" in sql:
        return res(["TABLE_NAME"], [("orders",)])
    raise AssertionError(f"unexpected query on {node}/{db}: {sql}")


class FakePool:
    def __init__(self, node: str, log: list) -> None:
        self.node = node
        self.log = log
        self.out = 0

    async def acquire(self):
        self.out += 1
        conn = FakeConn(self.node, self.log)
        conn.pool = self
        return conn

    def release(self, conn) -> None:
        self.out -= 1


class FakeTransport:
    def __init__(self) -> None:
        self.data = b""

    def write(self, b: bytes) -> None:
        self.data += b


class FakeClient:
    def __init__(self, db: str = "shop") -> None:
        self.config = config_mod.load_text(CONFIG)
        self.session = Session()
        self.session.bind_database(self.config, db)
        self.transport = FakeTransport()
        self.deprecate_eof = False
        self.session_track = False
        self.log: list = []
        self.pools = {n: FakePool(n, self.log) for n in self.config.nodes}

    def pool_for(self, node):
        return self.pools[node]

    def status_flags(self) -> int:
        return 2

    def give_back(self, conn, dirty=False) -> None:
        conn.pool.release(conn)

    def check_db(self, db):
        return None if db in self.config.databases else (1049, f"Unknown database '{db}'")

    def send_packet(self, payload: bytes, seq: int) -> None:
        self.transport.data += struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def parse_resultset(data: bytes) -> tuple[list[str], list[list[str | None]]]:
    packets = []
    pos = 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 3], "little")
        packets.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    ncols, _ = read_lenenc(packets[0], 0)
    cols = [ColumnDef.parse(p).name.decode() for p in packets[1:1 + ncols]]
    assert packets[1 + ncols][:1] == b"\xfe"
    rows = []
    for p in packets[2 + ncols:]:
        if p[:1] == b"\xfe" and len(p) < 9:
            break
        rows.append([None if f is None else f.decode() for f in split_text_row(p, ncols)])
    return cols, rows


def run(sql: str, db: str = "shop") -> tuple[bool, FakeClient]:
    client = FakeClient(db)

    async def run_query(rewritten: bytes) -> None:  # what the executor would run (DATABASE() next to tables)
        client.rerun.append(rewritten)

    client.rerun = []
    done = asyncio.run(metadata.answer(client, lex(sql.encode()), sql.encode(), run_query))
    assert all(p.out == 0 for p in client.pools.values()), "a connection was not given back"
    return done, client


def answer(sql: str, db: str = "shop"):
    done, client = run(sql, db)
    assert done
    return parse_resultset(client.transport.data)


# ------------------------------------------------------------------------------------------------ SHOW TABLES


def test_show_tables_lists_logical_tables_only():
    cols, rows = answer("SHOW TABLES")
    assert cols == ["Tables_in_shop"]
    assert rows == [["countries"], ["orders"], ["plain"], ["settings"]]  # no shards, no ddm_sequence


def test_show_full_tables_from_db_like_where():
    cols, rows = answer("show full tables from shop")
    assert cols == ["Tables_in_shop", "Table_type"]
    assert ["orders", "BASE TABLE"] in rows
    cols, rows = answer("SHOW TABLES LIKE 'o%'")
    assert cols == ["Tables_in_shop (o%)"] and rows == [["orders"]]
    cols, rows = answer("SHOW FULL TABLES WHERE `Tables_in_shop` IN ('plain', 'settings');")
    assert rows == [["plain", "BASE TABLE"], ["settings", "BASE TABLE"]]
    _, rows = answer("SHOW TABLES LIKE 'nothing%'")
    assert rows == []


def test_show_tables_of_pass_through_database_and_unknown():
    cols, rows = answer("SHOW TABLES IN plainapp")
    assert cols == ["Tables_in_plainapp"] and rows == [["t1"]]
    with pytest.raises(PlanError):
        run("SHOW TABLES FROM nope")


# ------------------------------------------------------------------------------------------------ per table


def test_show_create_table_uses_first_shard_with_logical_name():
    done, client = run("SHOW CREATE TABLE orders")
    cols, rows = parse_resultset(client.transport.data)
    assert cols == ["Table", "Create Table"]
    assert rows[0][0] == "orders"
    assert rows[0][1].startswith("CREATE TABLE `orders` (")
    assert client.log[-1] == ("n0", "shop_0", "SHOW CREATE TABLE `shop_0`.`orders_0`")


def test_show_create_single_table_elsewhere_and_missing_table():
    done, client = run("SHOW CREATE TABLE shop.settings")
    assert client.log[-1] == ("n1", "shop_1", "SHOW CREATE TABLE `shop_1`.`settings`")
    with pytest.raises(BackendError) as exc:
        run("SHOW CREATE TABLE nope")
    assert b"shop.nope" in exc.value.message and b"shop_0" not in exc.value.message


@pytest.mark.parametrize("sql,sent", [
    ("DESCRIBE orders", "DESCRIBE `shop_0`.`orders_0`"),
    ("desc `orders` user_id", "desc `shop_0`.`orders_0` user_id"),
    ("EXPLAIN orders", "EXPLAIN `shop_0`.`orders_0`"),
    ("SHOW COLUMNS FROM orders FROM shop LIKE 'u%'", "SHOW COLUMNS FROM `shop_0`.`orders_0` LIKE 'u%'"),
    ("SHOW FULL FIELDS IN shop.orders", "SHOW FULL FIELDS IN `shop_0`.`orders_0`"),
])
def test_describe_forms(sql, sent):
    done, client = run(sql)
    assert done
    assert client.log[-1][2] == sent
    cols, rows = parse_resultset(client.transport.data)
    assert cols == ["Field", "Type"]


def test_show_index_table_column_is_logical():
    done, client = run("SHOW INDEX FROM orders WHERE Key_name = 'PRIMARY'")
    assert client.log[-1][2] == "SHOW INDEX FROM `shop_0`.`orders_0` WHERE Key_name = 'PRIMARY'"
    cols, rows = parse_resultset(client.transport.data)
    assert rows == [["orders", "0", "PRIMARY"]]
    _, rows = answer("SHOW KEYS IN countries")
    assert rows[0][0] == "countries"


def test_explain_select_is_not_metadata():
    assert run("EXPLAIN SELECT * FROM orders")[0] is False
    assert run("DESCRIBE SELECT 1")[0] is False


# ------------------------------------------------------------------------------------------------ TABLE STATUS


def test_show_table_status_sums_shards():
    cols, rows = answer("SHOW TABLE STATUS")
    assert cols == STATUS_COLS
    by = {r[0]: r for r in rows}
    assert sorted(by) == ["countries", "orders", "plain", "settings"]
    assert by["orders"][2] == str(10 + 11 + 12 + 13)
    assert by["orders"][3] == str(100 * (10 + 11 + 12 + 13))
    assert by["orders"][4] == str(50 * 4)
    assert by["orders"][6] == "14"  # the largest Auto_increment
    assert by["countries"][2] == "5"  # a broadcast table's copies hold the same rows: one copy's figures
    _, rows = answer("SHOW TABLE STATUS LIKE 'ord%'")
    assert [r[0] for r in rows] == ["orders"]
    _, rows = answer("SHOW TABLE STATUS WHERE Engine = 'InnoDB' AND Name NOT IN ('plain', 'settings')")
    assert [r[0] for r in rows] == ["countries", "orders"]


# ------------------------------------------------------------------------------------------------ SELECT


def test_select_database():
    cols, rows = answer("SELECT DATABASE()")
    assert cols == ["DATABASE()"] and rows == [["shop"]]
    cols, rows = answer("select schema()")
    assert cols == ["schema()"] and rows == [["shop"]]


def test_select_not_metadata():
    assert run("SELECT * FROM orders WHERE id = 1")[0] is False
    assert run("SELECT database_name FROM orders")[0] is False


def test_database_next_to_tables_is_run_with_the_logical_name():
    """Found by the corpus differential run: `SELECT DATABASE(), COUNT(*) FROM users` answered the physical
    database of a shard (usr10_0) instead of the logical one; now the executor runs it with the name inlined."""
    done, client = run("SELECT DATABASE(), COUNT(*) FROM orders WHERE note <> schema()")
    assert done
    assert client.rerun == [b"SELECT 'shop' AS `DATABASE()`, COUNT(*) FROM orders WHERE note <> 'shop'"]


def test_information_schema_is_rewritten_to_a_mapping_derived_table():
    done, client = run("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                       "AND TABLE_NAME = 'orders'")
    assert done
    node, db, sql = client.log[-1]
    assert (node, db) == ("n0", "shop_0")
    assert "FROM (SELECT `TABLE_CATALOG` AS `TABLE_CATALOG`, CASE `TABLE_SCHEMA` WHEN 'shop_0' THEN 'shop'" in sql
    assert "WHEN 'orders_0' THEN 'orders'" in sql
    assert "`TABLE_NAME` IN ('ddm_sequence', 'orders_1')" in sql  # other shards and ddm's tables hidden
    assert "WHERE `TABLE_SCHEMA` = 'shop_0'" in sql  # the query is about this database: pruned to it
    assert sql.endswith(") AS `TABLES` WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = 'orders'")
    cols, rows = parse_resultset(client.transport.data)
    assert rows == [["orders"]]


def test_information_schema_reads_canonical_tables_on_other_nodes_and_sums_shards():
    done, client = run("SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")
    assert done
    sent = {(node, sql[:41]) for node, _, sql in client.log}
    assert ("n1", "SELECT `TABLE_CATALOG` AS `TABLE_CATALOG`") in sent  # settings is read where it lives
    node, db, sql = client.log[-1]
    assert (node, db) == ("n0", "shop_0")
    # orders: TABLE_ROWS is the total over orders_0/1 on shop_0 and shop_1 (10 + 11 + 12 + 13), kept unsigned
    assert "CAST(CASE `TABLE_SCHEMA` WHEN 'shop_0' THEN CASE `TABLE_NAME` WHEN 'orders_0' THEN 46 " in sql
    # settings' row from n1, as a typed literal row of the derived table
    assert (" UNION ALL SELECT _utf8mb4 X'646566', _utf8mb4 X'73686f70', _utf8mb4 X'73657474696e6773', "
            "CAST('2' AS UNSIGNED), CAST(NULL AS DATETIME)) AS `TABLES` WHERE TABLE_SCHEMA = 'shop'") in sql


def test_information_schema_alias_kept_and_tables_without_names_untouched():
    done, client = run("SELECT t.TABLE_NAME FROM information_schema.tables AS t, information_schema.ENGINES e")
    sql = client.log[-1][2]
    assert ") AS t," in sql
    assert "information_schema.ENGINES e" in sql
    assert "WHERE `TABLE_SCHEMA` = 'shop_0'" not in sql  # not only about this database: not pruned


def test_like_match_helper():
    assert metadata_common.like_match("orders", "o%")
    assert metadata_common.like_match("o_x", "o\\_x") and not metadata_common.like_match("oax", "o\\_x")
