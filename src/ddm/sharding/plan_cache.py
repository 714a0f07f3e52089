"""Plan cache: a bounded LRU of immutable plans keyed by (logical database, config generation, digest).

The generation is part of the key so a config reload never serves a plan built from old rules; old entries simply
age out. Plans are immutable, so one cache can be shared by every session of a worker (asyncio: no locking).
Very long digests (bulk INSERTs of thousands of rows, each row count its own digest) are not cached: they would
evict the hot point queries and pin megabytes of keys for plans that are rarely reused.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ddm.sharding.plan import Plan

CacheKey = tuple[str, int, bytes]


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    size: int
    maxsize: int
    evictions: int
    uncacheable: int  # put() calls refused because the digest was longer than max_digest

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class PlanCache:
    """LRU of plans. `get` counts a hit or a miss; `put` inserts (evicting the least recently used entry)."""

    __slots__ = ("maxsize", "max_digest", "_data", "hits", "misses", "evictions", "uncacheable")

    def __init__(self, maxsize: int = 4096, max_digest: int = 16384) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0")
        self.maxsize = maxsize
        self.max_digest = max_digest
        self._data: OrderedDict[CacheKey, Plan] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.uncacheable = 0

    def get(self, database: str, generation: int, digest: bytes) -> Plan | None:
        key = (database, generation, digest)
        data = self._data
        plan = data.get(key)
        if plan is None:
            self.misses += 1
            return None
        data.move_to_end(key)
        self.hits += 1
        return plan

    def put(self, database: str, generation: int, digest: bytes, plan: Plan) -> None:
        if self.maxsize == 0 or len(digest) > self.max_digest:
            self.uncacheable += 1
            return
        key = (database, generation, digest)
        data = self._data
        data[key] = plan
        data.move_to_end(key)
        while len(data) > self.maxsize:
            data.popitem(last=False)
            self.evictions += 1

    def clear(self) -> None:
        """Drop every plan (statistics are kept)."""
        self._data.clear()

    def drop_generations_before(self, generation: int) -> int:
        """Free plans of older config generations after a reload; returns how many were dropped."""
        old = [k for k in self._data if k[1] < generation]
        for k in old:
            del self._data[k]
        return len(old)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, len(self._data), self.maxsize, self.evictions, self.uncacheable)
