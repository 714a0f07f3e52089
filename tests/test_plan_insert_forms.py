"""INSERT / REPLACE ... SET into sharded and broadcast tables (one row, routed by the key's literal; generated keys
appended as `, key = <id>`), INSERT without a column list (the definition's columns), and the refusals that stay."""

from __future__ import annotations

import pytest

from ddm.execute.columns import ColumnCache
from ddm.sharding import planner
from ddm.sharding.plan import InsertPlan, PlanError, UnsupportedPlan
from ddm.sharding.rewrite import keys_needed
from test_planner import CONFIG, LEXERS, _params, run_case

SHOP = CONFIG.databases["shop"]


@pytest.mark.parametrize("lex", LEXERS, ids=lambda m: m.__name__)
@pytest.mark.parametrize(("query", "params", "want"), [
    ("INSERT INTO orders SET order_id = 5, status = 'x'", None,
     {"units": [["ds1", "INSERT INTO orders_2 SET order_id = 5, status = 'x'"]]}),
    ("INSERT INTO orders SET status = 'x'", None,
     {"units": [["ds0", "INSERT INTO orders_0 SET status = 'x', `order_id` = 1000"]], "generated_ids": [1000]}),
    ("INSERT INTO orders SET order_id = NULL, status = 'x'", None,
     {"units": [["ds0", "INSERT INTO orders_0 SET order_id = 1000, status = 'x'"]], "generated_ids": [1000]}),
    ("INSERT INTO orders SET orders.order_id = 0, orders.status = 'x' ON DUPLICATE KEY UPDATE orders.status = 'y'",
     None, {"units": [["ds0", "INSERT INTO orders_0 SET orders_0.order_id = 1000, orders_0.status = 'x' ON DUPLICATE "
                               "KEY UPDATE orders_0.status = 'y'"]], "generated_ids": [1000]}),
    ("REPLACE INTO order_items SET order_id = -3, qty = 2", None,
     {"units": [["ds1", "REPLACE INTO order_items_2 SET order_id = -3, qty = 2"]]}),
    ("INSERT INTO order_items SET order_id = ?, qty = ?", [6, 1],
     {"units": [["ds0", "INSERT INTO order_items_3 SET order_id = 6, qty = 1"]]}),
    ("INSERT INTO orders SET order_id = ?, status = 'p'", [None],
     {"units": [["ds0", "INSERT INTO orders_0 SET order_id = 1000, status = 'p'"]], "generated_ids": [1000]}),
    ("INSERT INTO countries SET code = 'x'", None,
     {"units": [["ds0", "INSERT INTO countries SET code = 'x'"], ["ds1", "INSERT INTO countries SET code = 'x'"]]}),
    ("INSERT INTO settings SET a = 1", None, {"units": [["ds1", "INSERT INTO settings SET a = 1"]]}),
    # refused
    ("INSERT INTO order_items SET qty = 2", None,
     {"error": [1235, "INSERT into a sharded table must give the sharding key column 'order_id'"]}),
    ("INSERT INTO orders SET order_id = 7 ON DUPLICATE KEY UPDATE order_id = 8", None,
     {"error": [1235, "updating the sharding key column 'order_id' of table 'orders' is not supported"]}),
    ("INSERT INTO orders SET order_id = 1 + 1", None,
     {"error": [1235, "INSERT sharding key 'order_id' value that is not a literal"]}),
    ("INSERT INTO orders SET order_id = 1, order_id = 2", None, {"error": [1110, "Column 'order_id' specified twice"]}),
])
def test_insert_set(lex, query: str, params: list | None, want: dict) -> None:
    assert run_case(lex, SHOP, query, _params(params)) == want


ORDER_COLS = {"orders": ("order_id", "user_id", "Status")}


def _plan_with(query: str, columns: dict | None) -> dict:
    lexed = LEXERS[0].lex(query.encode())
    p = planner.plan(lexed, SHOP, columns=columns)
    if isinstance(p, UnsupportedPlan):
        return {"error": [p.code, p.message]}
    keys = list(range(1000, 1000 + keys_needed(p, lexed))) if isinstance(p, InsertPlan) else None
    try:
        u = p.bind(lexed, None, keys)
    except PlanError as e:
        return {"error": [e.code, e.message]}
    return {"units": [[x.datasource, x.sql.decode()] for x in u.units], "generated": list(u.generated_ids)}


def test_insert_without_column_list_uses_the_definition() -> None:
    assert _plan_with("INSERT INTO orders VALUES (5, 1, 'x'), (6, 2, 'y')", ORDER_COLS) == {
        "units": [["ds0", "INSERT INTO orders_3 VALUES (6, 2, 'y')"], ["ds1", "INSERT INTO orders_2 VALUES (5, 1, 'x')"]],
        "generated": []}
    assert _plan_with("REPLACE INTO orders VALUES (NULL, 1, 'x')", ORDER_COLS) == {
        "units": [["ds0", "REPLACE INTO orders_0 VALUES (1000, 1, 'x')"]], "generated": [1000]}
    got = _plan_with("INSERT INTO orders VALUES (5, 1)", ORDER_COLS)
    assert got["error"][0] == 1136
    got = _plan_with("INSERT INTO orders VALUES (5, 1, 'x') ON DUPLICATE KEY UPDATE order_id = 6", ORDER_COLS)
    assert got["error"][0] == 1235 and "sharding key" in got["error"][1]
    # without definitions: refused as before; with definitions lacking the table: asks for them
    assert _plan_with("INSERT INTO orders VALUES (5, 1, 'x')", None)["error"][0] == 1235
    with pytest.raises(planner.NeedsColumns) as info:
        planner.plan(LEXERS[0].lex(b"INSERT INTO orders VALUES (5, 1, 'x')"), SHOP, columns={})
    assert info.value.table == "orders"


def test_column_cache_ttl_generation_and_use() -> None:
    now = [100.0]
    cache = ColumnCache(clock=lambda: now[0])
    cache.by_db["shop"] = {"orders": (now[0], 3, ("a", "b"))}
    known = cache.known("shop", 3)
    assert dict(known) == {"orders": ("a", "b")} and known.used is None
    assert known["orders"] == ("a", "b") and known.used == "orders"
    assert cache.known("shop", 4) == {}  # another configuration generation
    now[0] += 5
    assert cache.known("shop", 3) == {}  # expired: read again
    cache.forget("shop", "orders")
    assert cache.by_db["shop"] == {}


def test_plans_built_on_a_definition_are_reused_while_it_holds() -> None:
    import asyncio
    from types import SimpleNamespace

    from ddm.execute.executor import ShardingContext

    now = [0.0]
    server = SimpleNamespace(config=SimpleNamespace(server=SimpleNamespace(plan_cache_size=16)), worker_id=0)
    ctx = ShardingContext(server)
    ctx.columns.clock = lambda: now[0]
    definition = [("order_id", "user_id", "status")]
    reads: list[str] = []

    async def fetch(db: str, generation: int, rule, query) -> tuple[str, ...]:
        reads.append(rule.name)
        ctx.columns.by_db.setdefault(db, {})[rule.name] = (now[0], generation, definition[0])
        return definition[0]

    ctx.columns.fetch = fetch  # type: ignore[method-assign]
    lexed = LEXERS[0].lex(b"INSERT INTO orders VALUES (5, 1, 'x')")

    async def plan() -> object:
        return await ctx.plan_async("shop", SHOP, lexed, 1)

    first = asyncio.run(plan())
    assert isinstance(first, InsertPlan) and reads == ["orders"]
    assert asyncio.run(plan()) is first and reads == ["orders"]  # within the TTL: no read, same plan
    now[0] += 10
    assert asyncio.run(plan()) is first and reads == ["orders", "orders"]  # read again, unchanged: same plan
    now[0] += 10
    definition[0] = ("order_id", "status", "user_id")
    again = asyncio.run(plan())
    assert again is not first and reads == ["orders"] * 3
    assert again.bind(lexed).units[0].sql.decode().startswith("INSERT INTO orders_")
