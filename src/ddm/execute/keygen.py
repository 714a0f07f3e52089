"""Key generators of a worker (`key_generator:` of a table rule), with what they need from the data nodes.

A segment generator claims its blocks with autocommit statements on the default data source, and before its first
block raises the sequence past the largest id the table already holds (MAX of the generator's column over every
physical table, read in parallel from every data source), as AUTO_INCREMENT starts past existing rows. INSERTs with
explicit ids through this worker move the sequence past those ids too (`observe_insert`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ddm.config.model import TableRule
from ddm.sharding import idgen
from ddm.sharding.plan import InsertPlan
from ddm.sharding.rewrite import given_keys
from ddm.wire.rowcodec import split_text_row


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def floor_sql(column: str, tables: tuple[str, ...]) -> bytes:
    """One statement for one data source: the largest value of `column` over its physical tables (NULL if empty)."""
    parts = [f"SELECT MAX({_quote(column)}) AS m FROM {_quote(tb)}" for tb in tables]
    return f"SELECT MAX(m) FROM ({' UNION ALL '.join(parts)}) AS ddm_floor".encode()


class Generators:
    """The key generators of one worker, one per (logical database, table rule)."""

    def __init__(self, server: Any, synchronize_db: Any) -> None:
        self.server = server
        self.synchronize_db = synchronize_db
        self.by_table: dict[tuple[str, str], tuple[Any, Any]] = {}  # -> (its KeyGenerator config, generator)

    async def run_on(self, db: str, ds_name: str, sql: bytes) -> Any:
        ds = self.server.config.databases[db].datasources[ds_name]
        pool = self.server.pools.get(ds.node, 0)
        conn = await pool.acquire()
        try:
            await self.synchronize_db(conn, ds.database.encode())
            return await conn.query(sql)
        finally:
            pool.release(conn)

    async def _floor(self, db: str, rule: TableRule) -> int:
        column = rule.key_generator.column  # type: ignore[union-attr]
        results = await asyncio.gather(*(self.run_on(db, ds, floor_sql(column, tables))
                                          for ds, tables in rule.tables.items() if tables))
        top = 0
        for res in results:
            for row in res.rows:
                (v,) = split_text_row(row, 1)
                try:
                    top = max(top, int(v.split(b".")[0])) if v is not None else top
                except ValueError:  # not a number (the generator's column should be an integer column)
                    pass
        return top

    def get(self, db: str, rule: TableRule) -> Any:
        """The generator of `rule`; a new one when a reload changed the rule's key_generator (a segment
        generator's unused ids are then left unused, never handed out twice)."""
        key = (db, rule.name)
        kept = self.by_table.get(key)
        gen = kept[1] if kept is not None and kept[0] == rule.key_generator else None
        if gen is None:
            dbconf = self.server.config.databases[db]

            async def execute(sql: str) -> Any:
                return await self.run_on(db, dbconf.default_datasource, sql.encode())

            async def floor() -> int:
                return await self._floor(db, rule)

            gen = idgen.make_generator(rule.key_generator, self.server.worker_id, execute,
                                       name=f"{db}.{rule.name}", floor=floor)
            self.by_table[key] = (rule.key_generator, gen)
        return gen

    async def observe_insert(self, db: str, plan: InsertPlan, lexed: Any, params: Any) -> None:
        """After an INSERT into a table with a segment generator: ids it wrote explicitly are never generated."""
        kept = self.by_table.get((db, plan.rule.name))
        gen = kept[1] if kept is not None and kept[0] == plan.rule.key_generator else None
        if not isinstance(gen, idgen.SegmentAllocator):
            return  # no generator in this worker yet (its floor will see the rows), or snowflake ids
        try:
            keys = given_keys(plan, lexed, params)
        except Exception:  # noqa: BLE001 (values the bind refuses: it reports them, nothing is written)
            return
        if keys:
            await gen.observe(max(keys))
