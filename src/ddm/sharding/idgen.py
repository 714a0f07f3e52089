"""Distributed id generators for key columns (`key_generator: {column: id, type: snowflake|segment}`).

Snowflake
    64-bit ids: 1 zero bit | 41-bit milliseconds since `epoch_ms` | 10-bit worker id | 12-bit sequence.
    The classic generator restarts the sequence at 0 every millisecond, so at low traffic nearly every id ends in
    sequence 0 and `id % N` piles onto shard 0 (and onto multiples of gcd(N, 4096) for other N). Here the sequence
    is one running counter per generator that never restarts: it continues from the previous id (+1, mod 4096)
    whatever the millisecond, and starts at a random value. So the low 12 bits cycle through every value
    regardless of the id rate, `id % 2**k` (k <= 12) is exactly round-robin and other N spread evenly too.
    Ids stay strictly increasing: the counter never wraps within one millisecond — when it would, the generator
    moves to the next millisecond first (so a millisecond still yields up to 4096 ids).
    Clock going backwards: a step back of at most 5 ms is waited out; a larger one switches to a logical clock —
    ids keep coming from the last timestamp used (advancing it by one millisecond whenever the counter wraps)
    until the wall clock catches up, so ids remain unique and increasing without blocking the event loop.
    One generator per worker process (asyncio, single thread: no locking); workers need distinct worker ids.

SegmentAllocator
    Blocks of ids from a row in `ddm_sequence(name VARCHAR PRIMARY KEY, next_id BIGINT)` on a data node, claimed
    atomically with `UPDATE ... SET next_id = LAST_INSERT_ID(next_id + step)` (the OK packet's insert_id is the
    new next_id, so the statement alone tells us the block, no session state needed). Double-buffered: when 90% of
    the current block is used, the next one is fetched in the background. Ids are consecutive within a block, so
    they spread perfectly over `id % N`; they are unique across processes but only increasing per process.
    Existing rows: before its first block, an allocator with a `floor` (the largest id already in the table, MAX
    over every shard, as AUTO_INCREMENT would start past it) raises the row to at least floor + 1 with
    `INSERT ... ON DUPLICATE KEY UPDATE next_id = GREATEST(next_id, ...)`, atomically, so every process claims its
    blocks past the rows that existed when it started; the sequence row itself never moves back (restarts and
    reloads continue after the last block claimed). `observe(id)` does the same for an id written explicitly through
    this process: the row is raised past it and this process's own unused ids up to it are skipped.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timezone
from typing import Any, Protocol

__all__ = [
    "IdGenerator",
    "Snowflake",
    "SegmentAllocator",
    "make_generator",
    "DEFAULT_EPOCH_MS",
    "SEQUENCE_TABLE_DDL",
]

DEFAULT_EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: 2**41 ms from here lasts until 2093
WORKER_BITS = 10
SEQUENCE_BITS = 12
TIMESTAMP_BITS = 41
MAX_WORKER = (1 << WORKER_BITS) - 1
SEQUENCE_MASK = (1 << SEQUENCE_BITS) - 1
MAX_TIMESTAMP = (1 << TIMESTAMP_BITS) - 1
MAX_WAIT_BACKWARDS_MS = 5  # clock steps back up to this are waited out; larger ones use the logical clock

SEQUENCE_TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS ddm_sequence ("
    "name VARCHAR(128) NOT NULL PRIMARY KEY, next_id BIGINT NOT NULL) ENGINE=InnoDB"
)


class IdGenerator(Protocol):
    async def next_id(self) -> int: ...

    async def next_ids(self, count: int) -> list[int]: ...


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Snowflake:
    """Snowflake ids with an evenly spread low part (see the module docstring)."""

    __slots__ = (
        "worker_id",
        "epoch_ms",
        "_clock",
        "_sleep",
        "_last_ts",
        "_seq",
        "_worker_bits",
        "backwards_events",
    )

    def __init__(
        self,
        worker_id: int,
        epoch_ms: int = DEFAULT_EPOCH_MS,
        *,
        clock: Callable[[], int] | None = None,
        sleep: Callable[[float], None] | None = None,
        sequence_start: int | None = None,
    ) -> None:
        """clock() returns wall-clock milliseconds (injectable for tests); sleep(seconds) waits (same)."""
        if not isinstance(worker_id, int) or not 0 <= worker_id <= MAX_WORKER:
            raise ValueError(f"snowflake worker id must be in [0, {MAX_WORKER}], not {worker_id!r}")
        self.worker_id = worker_id
        self.epoch_ms = int(epoch_ms)
        self._clock = clock or _wall_ms
        self._sleep = sleep or time.sleep
        self._worker_bits = worker_id << SEQUENCE_BITS
        self._last_ts = -1
        # The counter's start is random so that many short-lived processes do not all begin at sequence 0.
        start = random.randrange(1 << SEQUENCE_BITS) if sequence_start is None else sequence_start
        self._seq = (start - 1) & SEQUENCE_MASK  # the last sequence issued
        self.backwards_events = 0  # how often the clock was seen going backwards (for stats/logs)

    def _now(self) -> int:
        ts = self._clock() - self.epoch_ms
        if ts < 0:
            raise RuntimeError("snowflake: the clock is before the epoch")
        return ts

    def _wait_past(self, ts: int) -> int:
        """Wait until the clock is past `ts`; returns the new timestamp."""
        now = self._now()
        while now <= ts:
            self._sleep(max(ts - now + 1, 0) / 1000.0 if now < ts else 0.0001)
            now = self._now()
        return now

    def generate(self) -> int:
        """The next id (synchronous; waits at most a few milliseconds, see the module docstring)."""
        last = self._last_ts
        now = self._now()
        if now < last:
            self.backwards_events += 1
            if last - now <= MAX_WAIT_BACKWARDS_MS:
                now = self._now()
                while now < last:
                    self._sleep((last - now) / 1000.0)
                    now = self._now()
            else:
                now = last  # logical clock: keep using the last timestamp
        seq = (self._seq + 1) & SEQUENCE_MASK
        if seq == 0 and now == last:
            # The counter wraps: a millisecond must not repeat a low part, so move to the next one. When the
            # wall clock is behind the logical one (now <= last after a big step back), advance it logically.
            wall = self._now()
            now = last + 1 if wall < last else self._wait_past(last)
        if now > MAX_TIMESTAMP:
            raise RuntimeError("snowflake: 41-bit timestamp exhausted (epoch too old)")
        self._last_ts = now
        self._seq = seq
        return (now << (WORKER_BITS + SEQUENCE_BITS)) | self._worker_bits | seq

    def generate_many(self, count: int) -> list[int]:
        gen = self.generate
        return [gen() for _ in range(count)]

    async def next_id(self) -> int:
        return self.generate()

    async def next_ids(self, count: int) -> list[int]:
        return self.generate_many(count)

    @staticmethod
    def parse(id_: int, epoch_ms: int = DEFAULT_EPOCH_MS) -> tuple[int, int, int]:
        """(unix milliseconds, worker id, sequence) of an id."""
        return (
            (id_ >> (WORKER_BITS + SEQUENCE_BITS)) + epoch_ms,
            (id_ >> SEQUENCE_BITS) & MAX_WORKER,
            id_ & SEQUENCE_MASK,
        )


Execute = Callable[[str], Awaitable[Any]]
_NAME_RE = re.compile(r"[A-Za-z0-9_.$-]{1,128}\Z")


class SegmentAllocator:
    """Ids in blocks of `step` from ddm_sequence on a data node, through an injected `execute(sql) -> result`.

    The result only needs `affected_rows` and `insert_id` (ddm.wire.backend.Result). A missing row is created
    (INSERT IGNORE, starting at `initial`); a missing table is created when `create_table` is set."""

    def __init__(
        self,
        name: str,
        execute: Execute,
        *,
        step: int = 1000,
        initial: int = 1,
        prefetch_ratio: float = 0.9,
        table: str = "ddm_sequence",
        create_table: bool = True,
        floor: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"segment: sequence name {name!r} must be 1-128 of [A-Za-z0-9_.$-]")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
            raise ValueError(f"segment: bad table name {table!r}")
        if not isinstance(step, int) or step < 1:
            raise ValueError(f"segment: step must be a positive integer, not {step!r}")
        if not 0.0 < prefetch_ratio <= 1.0:
            raise ValueError("segment: prefetch_ratio must be in (0, 1]")
        self.name = name
        self.step = step
        self.prefetch_ratio = prefetch_ratio
        self.initial = int(initial)
        self._execute = execute
        self._table = table
        self._create_table = create_table
        self._cur = 0  # next id of the current block
        self._end = 0  # end (exclusive) of the current block
        self._prefetch_at = 0  # start fetching the next block when _cur reaches this
        self._next: tuple[int, int] | None = None  # the prefetched block
        self._fetching: asyncio.Future[None] | None = None
        self._floor = floor  # the largest id the table already holds (None: nothing to look at, or done)
        self._skip_to = 0  # ids below this that a block claimed earlier still holds are not handed out (observe)
        self.fetches = 0

    # SQL (name is validated above, so quoting it as a literal is safe)
    def _update_sql(self) -> str:
        return (
            f"UPDATE {self._table} SET next_id = LAST_INSERT_ID(next_id + {self.step}) "
            f"WHERE name = '{self.name}'"
        )

    def _insert_sql(self) -> str:
        return f"INSERT IGNORE INTO {self._table} (name, next_id) VALUES ('{self.name}', {self.initial})"

    def _raise_sql(self, at_least: int) -> str:
        return (
            f"INSERT INTO {self._table} (name, next_id) VALUES ('{self.name}', {int(at_least)}) "
            f"ON DUPLICATE KEY UPDATE next_id = GREATEST(next_id, VALUES(next_id))"
        )

    async def _raise_to(self, at_least: int) -> None:
        """The sequence row's next_id becomes at least `at_least` (created when missing)."""
        for attempt in range(2):
            try:
                await self._execute(self._raise_sql(at_least))
                return
            except Exception as e:
                if self._create_table and attempt == 0 and getattr(e, "code", None) == 1146:
                    await self._execute(SEQUENCE_TABLE_DDL.replace("ddm_sequence", self._table, 1))
                    continue
                raise

    async def _fetch_block(self) -> tuple[int, int]:
        if self._floor is not None:
            await self._raise_to(max(self.initial, int(await self._floor()) + 1))
            self._floor = None  # done once per allocator: later blocks come after this one
        for attempt in range(4):  # create table, create row, claim (+1 spare)
            try:
                res = await self._execute(self._update_sql())
            except Exception as e:
                # only ER_NO_SUCH_TABLE (1146) is handled here (create the table once); the rest is re-raised
                if self._create_table and attempt == 0 and getattr(e, "code", None) == 1146:
                    await self._execute(SEQUENCE_TABLE_DDL.replace("ddm_sequence", self._table, 1))
                    continue
                raise
            if res.affected_rows:
                end = int(res.insert_id)
                self.fetches += 1
                return end - self.step, end
            await self._execute(self._insert_sql())  # no row yet: create it, then claim again
        raise RuntimeError(f"segment: cannot claim a block of sequence {self.name!r}")

    async def _prefetch(self) -> None:
        # The task itself installs the block, so a block is handed out exactly once however many callers wait.
        try:
            self._next = await self._fetch_block()
        finally:
            self._fetching = None

    def _start_prefetch(self) -> None:
        if self._fetching is None and self._next is None:
            task = asyncio.ensure_future(self._prefetch())
            # A failed background prefetch is retried at the next need; retrieving the exception here keeps
            # asyncio from logging "exception was never retrieved" (waiters still get it from their await).
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._fetching = task

    async def observe(self, written: int) -> None:
        """An id was written explicitly (not generated): never hand it out. This process skips its unused ids up to
        it (at once, before any other caller can take one, and in a block still being fetched) and the sequence row
        moves past it, so later blocks of every process start after it. (Blocks other processes already hold are
        theirs: an explicit id inside one still meets that process's generated id.)"""
        if self._end > 0 and written < self._cur:
            return  # below what this process hands out next (and every later block starts past _end)
        if self._end == 0 and self._floor is not None and self._fetching is None:
            return  # nothing claimed yet: the floor, read before the first block, sees the row
        self._skip_to = max(self._skip_to, written + 1)
        if self._cur <= written < self._end:
            self._cur = written + 1
        if self._next is not None and self._next[0] <= written:
            self._next = (written + 1, self._next[1]) if written + 1 < self._next[1] else None
        await self._raise_to(written + 1)

    async def next_id(self) -> int:
        return (await self.next_ids(1))[0]

    async def next_ids(self, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count:
            if self._cur >= self._end:
                if self._next is not None:
                    self._cur, self._end = max(self._next[0], self._skip_to), self._next[1]
                    self._next = None
                    self._prefetch_at = self._cur + int(self.step * self.prefetch_ratio)
                    continue
                self._start_prefetch()
                assert self._fetching is not None
                await asyncio.shield(self._fetching)  # a cancelled caller does not cancel the shared fetch
                continue
            take = min(count - len(out), self._end - self._cur)
            out.extend(range(self._cur, self._cur + take))
            self._cur += take
            if self._cur >= self._prefetch_at:
                self._start_prefetch()
        return out


def _epoch_ms(value: Any) -> int:
    """props.epoch: unix milliseconds, or a date / datetime / 'YYYY-MM-DD' (UTC)."""
    if value is None:
        return DEFAULT_EPOCH_MS
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return int(value.timestamp() * 1000)
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"snowflake: bad epoch {value!r}")


def make_generator(
    key_generator: Any, worker_id: int, execute: Execute | None = None, *, name: str | None = None,
    floor: Callable[[], Awaitable[int]] | None = None,
) -> Snowflake | SegmentAllocator:
    """Build the generator of a KeyGenerator config.

    snowflake props: `worker_id` (added to this process's `worker_id`, so each host can get its own range),
    `epoch` (ms or date). segment props: `name` (default: the `name` argument, e.g. "db.table", else the column),
    `step` (1000), `initial` (1), `table` (ddm_sequence); needs `execute`; `floor` (segment only): an async callable
    returning the largest id the table already holds."""
    props = key_generator.props or {}
    kind = key_generator.type
    if kind == "snowflake":
        return Snowflake(int(props.get("worker_id", 0)) + worker_id, _epoch_ms(props.get("epoch")))
    if kind == "segment":
        if execute is None:
            raise ValueError("segment key generator needs an execute callable (a data-node connection)")
        return SegmentAllocator(
            str(props.get("name") or name or key_generator.column),
            execute,
            step=int(props.get("step", 1000)),
            initial=int(props.get("initial", 1)),
            table=str(props.get("table", "ddm_sequence")),
            floor=floor,
        )
    raise ValueError(f"unknown key generator type {kind!r} (expected snowflake or segment)")
