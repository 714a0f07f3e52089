"""Column names of sharded tables in definition order (INSERT without a column list), read from the data nodes.

Read once per (logical database, table) and worker from information_schema on the first physical table of every data
source of the rule, in parallel; physical tables that disagree are refused (1235), since the same statement would
mean different columns on different shards. A definition is trusted for TTL seconds, then read again; a DDL
statement through ddm on the table forgets it at once. The executor keeps a plan built on a definition together
with it and uses the plan only while the definition read is the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ddm.config.model import TableRule
from ddm.sharding.plan import PlanError
from ddm.wire.constants import er
from ddm.wire.rowcodec import split_text_row

Query = Callable[[str, bytes], Awaitable[Any]]  # (data source, sql) -> Result


def _literal(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "''") + "'"


def columns_sql(table: str) -> bytes:
    return (f"SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            f"AND TABLE_NAME = {_literal(table)} ORDER BY ORDINAL_POSITION").encode()


TTL = 2.0  # seconds a definition is trusted: DDL through another worker (or on the nodes) is seen after this


class Known(dict):
    """The definitions of one database handed to the planner; `used`: the table whose definition the plan was
    built on (None: the plan does not depend on one), so the plan is only used while the definition is the same."""

    used: str | None = None

    def __getitem__(self, key: str) -> tuple[str, ...]:
        self.used = key
        return super().__getitem__(key)


class ColumnCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.by_db: dict[str, dict[str, tuple[float, int, tuple[str, ...]]]] = {}
        self.clock = clock

    def known(self, db: str, generation: int) -> Known:
        now = self.clock()
        return Known({t: cols for t, (at, gen, cols) in self.by_db.get(db, {}).items()
                      if gen == generation and now - at < TTL})

    def forget(self, db: str, table: str | None = None) -> None:
        if table is None:
            self.by_db.pop(db, None)
        else:
            self.by_db.get(db, {}).pop(table, None)

    async def fetch(self, db: str, generation: int, rule: TableRule, query: Query) -> tuple[str, ...]:
        firsts = [(ds, tables[0]) for ds, tables in rule.tables.items() if tables]
        results = await asyncio.gather(*(query(ds, columns_sql(tb)) for ds, tb in firsts))
        seen: set[tuple[str, ...]] = set()
        for res in results:
            names = tuple((split_text_row(r, 1)[0] or b"").decode("utf-8", "replace") for r in res.rows)
            seen.add(names)
        if len(seen) != 1 or not next(iter(seen)):
            what = "have different columns" if len(seen) > 1 else "were not found"
            raise PlanError(er.NOT_SUPPORTED_YET,
                            f"INSERT without a column list into '{rule.name}': its physical tables {what}")
        cols = seen.pop()
        self.by_db.setdefault(db, {})[rule.name.lower()] = (self.clock(), generation, cols)
        return cols
