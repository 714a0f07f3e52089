"""Id generators: snowflake (unique, increasing, evenly spread over id % N) and the segment allocator."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from types import MappingProxyType

import pytest

from ddm.config import KeyGenerator
from ddm.sharding.idgen import (
    DEFAULT_EPOCH_MS,
    MAX_WAIT_BACKWARDS_MS,
    SegmentAllocator,
    Snowflake,
    make_generator,
)

MODULI = (2, 3, 4, 7, 8, 10, 16, 32, 100, 1000, 1024)


class FakeClock:
    """Milliseconds that only move when the test (or the generator's sleep) moves them."""

    def __init__(self, start: int = DEFAULT_EPOCH_MS + 10_000_000) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(1, math.ceil(seconds * 1000))


def chi_square(ids: list[int], n: int) -> float:
    counts = [0] * n
    for i in ids:
        counts[i % n] += 1
    e = len(ids) / n
    return sum((c - e) ** 2 for c in counts) / e


def assert_even(ids: list[int]) -> None:
    for n in MODULI:
        df = n - 1
        stat = chi_square(ids, n)
        # chi-square(df) has mean df and sd sqrt(2 df): 6 sd is far beyond chance for a fair spread
        assert stat < df + 6 * math.sqrt(2 * df) + 10, (n, stat)


def low_rate_ids(gen: Snowflake, clock: FakeClock, count: int, rng: random.Random) -> list[int]:
    out = []
    for _ in range(count):
        clock.now += rng.randint(
            1, 40
        )  # one id every few milliseconds: the traffic that breaks plain snowflake
        out.append(gen.generate())
    return out


def test_low_rate_spreads_evenly():
    rng = random.Random(7)
    clock = FakeClock()
    gen = Snowflake(3, clock=clock, sleep=clock.sleep)
    ids = low_rate_ids(gen, clock, 60_000, rng)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert_even(ids)
    # the low 12 bits are one running counter: id % 2**k is exactly round-robin
    for n in (2, 4, 8, 16, 32, 1024):
        counts = [0] * n
        for i in ids:
            counts[i % n] += 1
        assert max(counts) - min(counts) <= 1


def test_plain_snowflake_would_fail_the_same_check():
    # the same traffic with the sequence restarting at 0 each millisecond: every id is a multiple of 4096
    rng = random.Random(7)
    ts, plain = 10_000_000, []
    for _ in range(60_000):
        ts += rng.randint(1, 40)
        plain.append((ts << 22) | (3 << 12))
    with pytest.raises(AssertionError):
        assert_even(plain)


def test_many_short_lived_generators_spread():
    # processes that each issue a few ids (restarts, CLIs) must not all start at sequence 0
    clock = FakeClock()
    ids = []
    for i in range(20_000):
        gen = Snowflake(i % 1024, clock=clock, sleep=clock.sleep)
        ids.append(gen.generate())
        clock.now += 1
    assert_even(ids)


def test_burst_within_one_millisecond_waits_and_stays_increasing():
    clock = FakeClock()
    gen = Snowflake(5, clock=clock, sleep=clock.sleep, sequence_start=100)
    ids = gen.generate_many(10_000)  # the clock only moves when the generator waits
    assert ids == sorted(ids) and len(set(ids)) == 10_000
    assert clock.slept  # it had to wait for the next millisecond
    per_ms: dict[int, int] = {}
    for i in ids:
        ts, worker, seq = Snowflake.parse(i)
        assert worker == 5
        per_ms[ts] = per_ms.get(ts, 0) + 1
    assert max(per_ms.values()) <= 4096
    assert [Snowflake.parse(i)[2] for i in ids[:3]] == [100, 101, 102]


def test_real_clock_unique_increasing():
    gen = Snowflake(1)
    ids = gen.generate_many(50_000)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    ts, worker, _ = Snowflake.parse(ids[-1])
    assert worker == 1 and abs(ts - Snowflake.parse(ids[0])[0]) < 60_000


def test_clock_small_step_back_is_waited_out():
    clock = FakeClock()
    gen = Snowflake(0, clock=clock, sleep=clock.sleep)
    a = gen.generate()
    clock.now -= MAX_WAIT_BACKWARDS_MS
    b = gen.generate()
    assert b > a and clock.slept and gen.backwards_events == 1
    assert Snowflake.parse(b)[0] >= Snowflake.parse(a)[0]


def test_clock_big_step_back_uses_logical_clock():
    clock = FakeClock()
    gen = Snowflake(9, clock=clock, sleep=clock.sleep)
    a = gen.generate()
    last_ts = Snowflake.parse(a)[0]
    clock.now -= 3_600_000  # an hour back (NTP step): no waiting
    ids = [a] + gen.generate_many(10_000)  # more than one counter cycle while the wall clock is behind
    assert not clock.slept
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    stamps = [Snowflake.parse(i)[0] for i in ids]
    assert stamps[1] == last_ts and stamps[-1] in (
        last_ts + 2,
        last_ts + 3,
    )  # advanced logically on each wrap
    clock.now += 3_600_000 + 100  # the wall clock catches up and takes over again
    c = gen.generate()
    assert c > ids[-1] and Snowflake.parse(c)[0] == clock.now


def test_worker_and_epoch_validation():
    with pytest.raises(ValueError):
        Snowflake(1024)
    with pytest.raises(ValueError):
        Snowflake(-1)
    clock = FakeClock(start=DEFAULT_EPOCH_MS - 1)
    with pytest.raises(RuntimeError):
        Snowflake(0, clock=clock).generate()


def test_async_interface():
    gen = Snowflake(2)

    async def main():
        one = await gen.next_id()
        many = await gen.next_ids(5)
        return [one, *many]

    ids = asyncio.run(main())
    assert ids == sorted(ids) and len(set(ids)) == 6


# -- segment allocator ----------------------------------------------------------------------------------------------


@dataclass
class FakeResult:
    affected_rows: int = 0
    insert_id: int = 0


class NoSuchTable(Exception):
    code = 1146


class FakeNode:
    """Just enough of a data node for the ddm_sequence statements (one shared table for many allocators)."""

    def __init__(self, table_exists: bool = True) -> None:
        self.rows: dict[str, int] = {}
        self.table_exists = table_exists
        self.log: list[str] = []
        self.fail_next = 0

    async def execute(self, sql: str) -> FakeResult:
        self.log.append(sql)
        await asyncio.sleep(0)  # a round trip: lets other tasks run in between
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("node down")
        if sql.startswith("CREATE TABLE"):
            self.table_exists = True
            return FakeResult()
        if not self.table_exists:
            raise NoSuchTable("Table 'ddm_sequence' doesn't exist")
        if sql.startswith("UPDATE"):
            name = sql.split("name = '")[1].rstrip("'")
            step = int(sql.split("next_id + ")[1].split(")")[0])
            if name not in self.rows:
                return FakeResult(0, 0)
            self.rows[name] += step
            return FakeResult(1, self.rows[name])
        if sql.startswith("INSERT IGNORE"):
            name = sql.split("VALUES ('")[1].split("'")[0]
            initial = int(sql.rsplit(", ", 1)[1].rstrip(")"))
            if name in self.rows:
                return FakeResult(0, 0)
            self.rows[name] = initial
            return FakeResult(1, 0)
        raise AssertionError(sql)


def test_segment_blocks_and_prefetch():
    node = FakeNode()

    async def main():
        seg = SegmentAllocator("orders", node.execute, step=100)
        first = [await seg.next_id() for _ in range(89)]
        assert first == list(range(1, 90)) and seg.fetches == 1
        await seg.next_id()  # the 90th id crosses 90%: the next block is fetched in the background
        await asyncio.sleep(0.01)
        assert seg.fetches == 2
        rest = await seg.next_ids(150)
        assert rest == list(range(91, 241))
        return seg

    seg = asyncio.run(main())
    assert node.rows["orders"] == 301 and seg.fetches == 3
    assert any(s.startswith("INSERT IGNORE") for s in node.log)


def test_segment_concurrent_callers_and_processes():
    node = FakeNode(table_exists=False)

    async def main():
        a = SegmentAllocator("t", node.execute, step=7)
        b = SegmentAllocator("t", node.execute, step=7)
        results = await asyncio.gather(*[(a if i % 2 else b).next_ids(i % 5 + 1) for i in range(300)])
        return [x for r in results for x in r]

    ids = asyncio.run(main())
    assert len(ids) == len(set(ids)) == sum(i % 5 + 1 for i in range(300))
    assert node.table_exists and any(s.startswith("CREATE TABLE") for s in node.log)
    # consecutive ids spread perfectly over id % N
    assert all(chi_square(ids, n) < n + 10 * math.sqrt(2 * n) for n in (2, 3, 7, 10))


def test_segment_errors_propagate_and_recover():
    node = FakeNode()

    async def main():
        seg = SegmentAllocator("x", node.execute, step=10)
        node.fail_next = 1
        with pytest.raises(ConnectionError):
            await seg.next_id()
        assert await seg.next_id() == 1
        node.fail_next = 1  # the background prefetch fails: retried when the block runs out
        got = await seg.next_ids(8)
        await asyncio.sleep(0.01)
        got += await seg.next_ids(5)
        return got

    assert asyncio.run(main()) == list(range(2, 15))


def test_segment_validation():
    node = FakeNode()
    with pytest.raises(ValueError):
        SegmentAllocator("bad'name", node.execute)
    with pytest.raises(ValueError):
        SegmentAllocator("ok", node.execute, step=0)


def test_make_generator():
    kg = KeyGenerator("id", "snowflake", MappingProxyType({"worker_id": 100, "epoch": "2020-01-01"}))
    gen = make_generator(kg, 3)
    assert isinstance(gen, Snowflake) and gen.worker_id == 103 and gen.epoch_ms == 1_577_836_800_000
    node = FakeNode()
    seg = make_generator(
        KeyGenerator("id", "segment", MappingProxyType({"step": 50})), 0, node.execute, name="db.t"
    )
    assert isinstance(seg, SegmentAllocator) and seg.name == "db.t" and seg.step == 50
    assert asyncio.run(seg.next_ids(3)) == [1, 2, 3]
    with pytest.raises(ValueError):
        make_generator(KeyGenerator("id", "segment"), 0)
    with pytest.raises(ValueError):
        make_generator(KeyGenerator("id", "uuid"), 0)
