"""Segment ids never meet existing rows: the sequence starts past MAX(id) of the table (the `floor`), explicit ids
written through the process are skipped, and restarts / several processes never repeat an id."""

from __future__ import annotations

import asyncio

from ddm.execute.keygen import floor_sql
from ddm.sharding.idgen import SegmentAllocator
from test_idgen import FakeNode, FakeResult


class Node(FakeNode):
    """FakeNode + the `INSERT ... ON DUPLICATE KEY UPDATE next_id = GREATEST(...)` that raises a sequence."""

    async def execute(self, sql: str) -> FakeResult:
        if sql.startswith("INSERT INTO") and "GREATEST" in sql:
            self.log.append(sql)
            await asyncio.sleep(0)
            if not self.table_exists:
                return await super().execute("UPDATE no table")  # raises NoSuchTable
            name = sql.split("VALUES ('")[1].split("'")[0]
            value = int(sql.split("', ")[1].split(")")[0])
            self.rows[name] = max(self.rows.get(name, value), value)
            return FakeResult(1, 0)
        return await super().execute(sql)


def floor_of(value: int, calls: list[int] | None = None):
    async def floor() -> int:
        if calls is not None:
            calls.append(value)
        await asyncio.sleep(0)
        return value
    return floor


def test_first_block_starts_past_existing_rows() -> None:
    node = Node(table_exists=False)
    calls: list[int] = []

    async def main() -> list[int]:
        seg = SegmentAllocator("db.t", node.execute, step=100, floor=floor_of(20000, calls))
        return await seg.next_ids(250)

    ids = asyncio.run(main())
    assert ids == list(range(20001, 20251))
    assert calls == [20000]  # the MAX is read once per allocator, not per block


def test_floor_never_moves_the_sequence_back() -> None:
    node = Node()
    node.rows["db.t"] = 5001  # blocks up to 5000 were claimed before (an earlier run)

    async def main() -> list[int]:
        seg = SegmentAllocator("db.t", node.execute, step=10, floor=floor_of(12))
        return await seg.next_ids(3)

    assert asyncio.run(main()) == [5001, 5002, 5003]


def test_restarts_and_processes_never_repeat_an_id() -> None:
    node = Node()
    seen: list[int] = []

    async def main() -> None:
        for _restart in range(3):  # each "process" (a new allocator) reads the floor and claims its own blocks
            procs = [SegmentAllocator("db.t", node.execute, step=7, floor=floor_of(max(seen, default=40)))
                     for _ in range(3)]
            got = await asyncio.gather(*[procs[i % 3].next_ids(i % 4 + 1) for i in range(60)])
            seen.extend(x for r in got for x in r)

    asyncio.run(main())
    assert len(seen) == len(set(seen)) and min(seen) == 41


def test_explicit_ids_are_skipped() -> None:
    node = Node()

    async def main() -> tuple[list[int], list[int], list[int]]:
        seg = SegmentAllocator("db.t", node.execute, step=100, prefetch_ratio=0.5, floor=floor_of(0))
        first = await seg.next_ids(5)  # 1..5
        await seg.observe(3)  # below what is handed out next: nothing to do
        await seg.observe(50)  # inside the current block: 6..50 are skipped
        second = await seg.next_ids(3)
        await seg.observe(120)  # beyond this block: the sequence moves past it, later blocks start after it
        third = await seg.next_ids(60)
        return first, second, third

    first, second, third = asyncio.run(main())
    assert first == [1, 2, 3, 4, 5] and second == [51, 52, 53]
    assert 120 not in third and len(set(third)) == 60 and all(x > 53 for x in third)
    assert sum(1 for s in node.log if "GREATEST" in s) == 3  # the floor, then the two observed ids at or past _cur


def test_floor_sql_reads_every_physical_table() -> None:
    assert floor_sql("id", ("t_0", "t`1")) == (b"SELECT MAX(m) FROM (SELECT MAX(`id`) AS m FROM `t_0` UNION ALL "
                                               b"SELECT MAX(`id`) AS m FROM `t``1`) AS ddm_floor")


def test_explicit_id_is_skipped_before_the_round_trip() -> None:
    """Another caller of the same process that asks for ids while observe() waits on the node does not get the
    explicit id (the local skip happens before the round trip), nor does a block that was being fetched."""
    node = Node()

    async def main() -> list[int]:
        seg = SegmentAllocator("db.t", node.execute, step=100, floor=floor_of(0))
        got = await seg.next_ids(5)
        pending = asyncio.ensure_future(seg.observe(50))
        await asyncio.sleep(0)  # observe runs up to its round trip
        got += await seg.next_ids(100)  # crosses into the next block, fetched concurrently
        await pending
        pending = asyncio.ensure_future(seg.observe(max(got) + 30))
        await asyncio.sleep(0)
        got += await seg.next_ids(200)
        await pending
        return got

    got = asyncio.run(main())
    assert 50 not in got and len(set(got)) == len(got) == 305
    assert sorted(got) == got
