"""PlanCache: LRU order, bounded size, statistics, generation keys."""

from __future__ import annotations

import pytest

from ddm.sharding.plan import UnsupportedPlan
from ddm.sharding.plan_cache import PlanCache


def _p(n: int) -> UnsupportedPlan:
    return UnsupportedPlan(1235, f"plan {n}")


def test_get_put_and_stats() -> None:
    c = PlanCache(4)
    assert c.get("db", 0, b"SELECT ?") is None
    c.put("db", 0, b"SELECT ?", _p(1))
    assert c.get("db", 0, b"SELECT ?") == _p(1)
    s = c.stats()
    assert (s.hits, s.misses, s.size, s.evictions) == (1, 1, 1, 0)
    assert s.hit_rate == 0.5


def test_lru_eviction_keeps_recently_used() -> None:
    c = PlanCache(2)
    c.put("db", 0, b"a", _p(1))
    c.put("db", 0, b"b", _p(2))
    assert c.get("db", 0, b"a") is not None  # a is now the most recently used
    c.put("db", 0, b"c", _p(3))
    assert c.get("db", 0, b"b") is None
    assert c.get("db", 0, b"a") == _p(1) and c.get("db", 0, b"c") == _p(3)
    assert c.stats().evictions == 1 and len(c) == 2


def test_key_includes_database_and_generation() -> None:
    c = PlanCache(8)
    c.put("db1", 1, b"x", _p(1))
    assert c.get("db2", 1, b"x") is None
    assert c.get("db1", 2, b"x") is None
    c.put("db1", 2, b"x", _p(2))
    assert c.drop_generations_before(2) == 1
    assert ("db1", 2, b"x") in c and len(c) == 1


def test_long_digests_and_zero_size_are_not_cached() -> None:
    c = PlanCache(8, max_digest=10)
    c.put("db", 0, b"x" * 11, _p(1))
    assert len(c) == 0 and c.stats().uncacheable == 1
    z = PlanCache(0)
    z.put("db", 0, b"x", _p(1))
    assert z.get("db", 0, b"x") is None
    with pytest.raises(ValueError):
        PlanCache(-1)


def test_clear_keeps_stats() -> None:
    c = PlanCache(8)
    c.put("db", 0, b"x", _p(1))
    c.get("db", 0, b"x")
    c.clear()
    assert len(c) == 0 and c.stats().hits == 1
