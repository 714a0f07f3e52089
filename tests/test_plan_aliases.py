"""A table aliased with its own name (`FROM t_order t_order`, `AS t_order`): the table gets its physical name, the
qualifiers naming the alias stay the alias. Multi-table DELETE on one table: its targets name the table or alias."""

from __future__ import annotations

import pytest

from test_planner import CONFIG, lexer, run_case

SHOP = CONFIG.databases["shop"]


def units(query: str) -> list[list[str]]:
    got = run_case(lexer, SHOP, query, None)
    assert "error" not in got, got
    return got["units"]


@pytest.mark.parametrize(("query", "want"), [
    ("SELECT orders.* FROM orders orders WHERE orders.order_id = 1",
     "SELECT orders.* FROM orders_0 orders WHERE orders.order_id = 1"),
    ("SELECT orders.* FROM orders AS orders WHERE order_id = 1",
     "SELECT orders.* FROM orders_0 AS orders WHERE order_id = 1"),
    ("SELECT `orders`.status FROM orders `orders` WHERE `orders`.order_id = 1",
     "SELECT `orders`.status FROM orders_0 `orders` WHERE `orders`.order_id = 1"),
    ("UPDATE orders orders SET orders.status = 2 WHERE orders.order_id = 1",
     "UPDATE orders_0 orders SET orders.status = 2 WHERE orders.order_id = 1"),
    ("UPDATE orders AS orders SET status = 2 WHERE orders.order_id = 1",
     "UPDATE orders_0 AS orders SET status = 2 WHERE orders.order_id = 1"),
    ("DELETE orders FROM orders orders WHERE orders.order_id = 1",
     "DELETE orders FROM orders_0 orders WHERE orders.order_id = 1"),
    ("DELETE orders FROM orders WHERE order_id = 1", "DELETE orders_0 FROM orders_0 WHERE order_id = 1"),
    ("DELETE o FROM orders o WHERE o.order_id = 1", "DELETE o FROM orders_0 o WHERE o.order_id = 1"),
    ("DELETE shop.orders FROM shop.orders WHERE order_id = 1",
     "DELETE `shop_1`.orders_0 FROM `shop_1`.orders_0 WHERE order_id = 1"),
    ("DELETE FROM orders USING orders WHERE order_id = 1", "DELETE FROM orders_0 USING orders_0 WHERE order_id = 1"),
    ("DELETE FROM orders USING orders AS orders WHERE orders.order_id = 1",
     "DELETE FROM orders USING orders_0 AS orders WHERE orders.order_id = 1"),
    ("DELETE FROM o USING orders o WHERE o.order_id = 1", "DELETE FROM o USING orders_0 o WHERE o.order_id = 1"),
    # unchanged: an unaliased table's qualifier is the table; another alias leaves the table name a table name
    ("SELECT orders.status FROM orders WHERE orders.order_id = 1",
     "SELECT orders_0.status FROM orders_0 WHERE orders_0.order_id = 1"),
    ("SELECT o.status FROM orders o WHERE o.order_id = 1", "SELECT o.status FROM orders_0 o WHERE o.order_id = 1"),
])
def test_self_alias_keeps_qualifiers(query: str, want: str) -> None:
    assert units(query) == [["ds1", want]]


def test_self_aliased_binding_join() -> None:
    q = ("SELECT orders.order_id, order_items.qty FROM orders orders JOIN order_items AS order_items "
         "ON orders.order_id = order_items.order_id WHERE orders.order_id = 3")
    assert units(q) == [["ds1", "SELECT orders.order_id, order_items.qty FROM orders_1 orders JOIN order_items_1 AS "
                                "order_items ON orders.order_id = order_items.order_id WHERE orders.order_id = 3"]]


def test_self_aliased_scatter_every_shard() -> None:
    got = units("SELECT orders.status FROM orders orders ORDER BY orders.order_id")
    assert len(got) == 8
    for _ds, sql in got:
        assert sql.startswith("SELECT orders.status, orders.order_id AS ORDER_BY_DERIVED_0 FROM orders_"), sql
        assert sql.count("orders_") == 1 and sql.endswith(" orders ORDER BY orders.order_id"), sql


def test_multi_table_delete_of_two_tables_stays_refused() -> None:
    got = run_case(lexer, SHOP, "DELETE o FROM orders o JOIN order_items i ON o.order_id = i.order_id "
                                "WHERE o.order_id = 1", None)
    assert got["error"][0] == 1235 and "multi-table DELETE" in got["error"][1]


def test_multi_table_delete_of_one_table_routes_like_delete() -> None:
    got = units("DELETE o FROM orders o WHERE o.status = 5")
    assert len(got) == 8 and all(sql.startswith("DELETE o FROM orders_") for _, sql in got)
