"""Metadata statements on a sharded logical database show logical names (ddm.metadata), end to end.

A private 2-node sandbox holds logical database `metashop`: data sources ds0 (n0.metashop_0, the default) and ds1
(n1.metashop_1); `orders` sharded over ds0/ds1 x orders_0..3, broadcast `countries`, single `settings` on ds1 and
`plain` (no rule) on ds0. ddm runs in a thread of this process; until the executor calls `metadata.answer` itself,
this module routes COM_QUERY through it with a monkeypatch of `ddm.executor.run_query`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from ddm_fixtures import NO_TLS, ddm_config, free_port, start_ddm

from ddm import executor, metadata
from ddm import sandbox as sb

pytestmark = pytest.mark.integration

DB = "metashop"
RULES = {"databases": {DB: {
    "datasources": {"ds0": {"node": "n0", "database": "metashop_0"}, "ds1": {"node": "n1", "database": "metashop_1"}},
    "default_datasource": "ds0",
    "tables": {
        "orders": {"nodes": "ds${0..1}.orders_${0..3}",
                   "database_strategy": {"column": "user_id", "algorithm": "mod"},
                   "table_strategy": {"column": "user_id", "algorithm": "two_level"}},
        "countries": {"broadcast": True},
        "settings": {"datasource": "ds1"},
    }}}}


def _patch_executor() -> Any:
    """Route sharded COM_QUERYs through metadata.answer first (unless the executor already does)."""
    original = executor.run_query
    if "metadata" in inspect.getsource(original):
        return None

    async def run_query(client, sql, lexed=None):
        from ddm_core.lexer import lex

        if lexed is None:
            lexed = lex(sql)
        if await metadata.answer(client, lexed, sql):
            return
        await original(client, sql, lexed)

    executor.run_query = run_query
    return original


@pytest.fixture(scope="module")
def ddm_meta(mariadb: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = str(tmp_path_factory.mktemp("meta-sandbox"))
    base = sb.find_free_base(26410 + (os.getpid() % 20) * 10, nodes=2)
    box = sb.up(root, nodes=2, base_port=base, rules=RULES, databases=())
    original = _patch_executor()
    d = None
    try:
        nodes = {n: {"host": "127.0.0.1", "port": box.primary(n).port, "unix_socket": box.primary(n).socket,
                     "user": box.node_user, "password": box.node_password} for n in box.nodes}
        d = start_ddm(tmp_path_factory.mktemp("meta-ddm"), ddm_config(free_port(), nodes, RULES["databases"]),
                      mode="thread")
        with _connect(d.port) as c, c.cursor() as cur:
            cur.execute("CREATE TABLE orders (id BIGINT NOT NULL PRIMARY KEY, user_id INT NOT NULL, "
                        "note VARCHAR(20), KEY k_user (user_id))")
            cur.execute("CREATE TABLE countries (code CHAR(2) PRIMARY KEY, name VARCHAR(40))")
            cur.execute("CREATE TABLE settings (name VARCHAR(20) PRIMARY KEY, value VARCHAR(20))")
            cur.execute("CREATE TABLE plain (id INT PRIMARY KEY)")
            for i in range(1, 41):
                cur.execute("INSERT INTO orders (id, user_id, note) VALUES (%s, %s, %s)", (i, i, f"n{i}"))
            cur.execute("INSERT INTO countries VALUES ('de', 'Germany'), ('fr', 'France')")
        d.extra["box"] = box
        yield d
    finally:
        if d is not None:
            d.stop()
        if original is not None:
            executor.run_query = original
        sb.down(root)


def _connect(port: int) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="ddm", password="ddm", database=DB, autocommit=True,
                           charset="utf8mb4", connect_timeout=10, read_timeout=60, **NO_TLS)


@pytest.fixture
def cur(ddm_meta) -> Iterator[Any]:
    with _connect(ddm_meta.port) as c, c.cursor() as cursor:
        yield cursor


def rows(cur, sql: str) -> list[tuple]:
    cur.execute(sql)
    return list(cur.fetchall())


def titles(cur) -> list[str]:
    return [d[0] for d in cur.description]


def test_show_tables(cur):
    assert rows(cur, "SHOW TABLES") == [("countries",), ("orders",), ("plain",), ("settings",)]
    assert titles(cur) == [f"Tables_in_{DB}"]
    assert rows(cur, "SHOW FULL TABLES LIKE 'o%'") == [("orders", "BASE TABLE")]
    assert rows(cur, f"SHOW TABLES FROM {DB} WHERE `Tables_in_{DB}` LIKE '%s'") == [("countries",), ("orders",), ("settings",)]


def test_show_create_table(cur):
    (name, ddl), = rows(cur, "SHOW CREATE TABLE orders")
    assert name == "orders"
    assert ddl.startswith("CREATE TABLE `orders` (") and "orders_" not in ddl and "KEY `k_user`" in ddl
    (name, ddl), = rows(cur, f"SHOW CREATE TABLE {DB}.settings")
    assert ddl.startswith("CREATE TABLE `settings` (")
    with pytest.raises(pymysql.err.ProgrammingError) as exc:
        rows(cur, "SHOW CREATE TABLE nope")
    assert exc.value.args[0] == 1146 and f"{DB}.nope" in exc.value.args[1]


def test_describe_and_show_columns(cur):
    assert [r[0] for r in rows(cur, "DESCRIBE orders")] == ["id", "user_id", "note"]
    assert [r[0] for r in rows(cur, "DESC orders user_id")] == ["user_id"]
    got = rows(cur, f"SHOW FULL COLUMNS FROM orders FROM {DB} LIKE 'n%'")
    assert [r[0] for r in got] == ["note"] and titles(cur)[2] == "Collation"


def test_show_index(cur):
    got = rows(cur, "SHOW INDEX FROM orders")
    assert {r[0] for r in got} == {"orders"}
    assert {r[2] for r in got} == {"PRIMARY", "k_user"}
    assert {r[0] for r in rows(cur, "SHOW KEYS IN settings")} == {"settings"}


def test_show_table_status(cur):
    got = rows(cur, "SHOW TABLE STATUS")
    assert [r[0] for r in got] == ["countries", "orders", "plain", "settings"]
    assert [r[0] for r in rows(cur, "SHOW TABLE STATUS LIKE 'ord%'")] == ["orders"]


def test_information_schema_tables_and_columns(cur):
    got = rows(cur, f"SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{DB}' "
                    "ORDER BY TABLE_NAME")
    names = [r[1] for r in got]
    assert {r[0] for r in got} == {DB}
    assert "orders" in names and "countries" in names and "plain" in names
    assert not [n for n in names if n.startswith("orders_")]
    got = rows(cur, "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                    "AND TABLE_NAME = 'orders' ORDER BY ORDINAL_POSITION")
    assert got == [("id",), ("user_id",), ("note",)]
    (n,), = rows(cur, "SELECT COUNT(*) FROM information_schema.STATISTICS s WHERE s.TABLE_SCHEMA = DATABASE() "
                      "AND s.TABLE_NAME = 'orders'")
    assert n == 2
    schemas = {r[0] for r in rows(cur, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")}
    assert DB in schemas and "metashop_0" not in schemas


def test_select_database(cur):
    assert rows(cur, "SELECT DATABASE()") == [(DB,)]
    assert rows(cur, "select database(), 1 + 1") == [(DB, 2)]


def test_data_statements_still_work(cur):
    assert rows(cur, "SELECT COUNT(*), SUM(user_id) FROM orders") == [(40, 820)]
