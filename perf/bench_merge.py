"""Merge throughput: a 4-way ORDER BY merge of sysbench-like text rows (id, k, c, pad).

Run: PYTHONPATH=src python perf/bench_merge.py [--rows N] [--shards 4] [--python]
Prints microseconds per output row for several merge shapes (feed + take, the executor's whole merge cost).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from ddm.wire.constants import field_type as FT
from ddm.wire.rowcodec import ColumnDef, MergeSpec, lenenc_str

COLS = [ColumnDef("id", FT.LONG), ColumnDef("k", FT.LONG), ColumnDef("c", FT.STRING, charset=45),
        ColumnDef("pad", FT.STRING, charset=45)]


def make_rows(n: int, rng: random.Random) -> list[tuple[int, int, str, str]]:
    out = []
    for i in range(n):
        c = "-".join(f"{rng.randrange(10**11):011d}" for _ in range(10))
        pad = "-".join(f"{rng.randrange(10**11):011d}" for _ in range(5))
        out.append((i, rng.randrange(n), c, pad))
    return out


def text_row(r: tuple) -> bytes:
    return b"".join(lenenc_str(str(v).encode()) for v in r)


def shard_inputs(rows: list[tuple], nshards: int, key: Callable[[tuple], Any], desc: bool) -> list[list[bytes]]:
    parts: list[list[tuple]] = [[] for _ in range(nshards)]
    for r in rows:
        parts[r[0] % nshards].append(r)
    return [[text_row(r) for r in sorted(p, key=key, reverse=desc)] for p in parts]


def bench(impl: Any, spec: MergeSpec, shards: list[list[bytes]], batch: int = 100, repeat: int = 3) -> float:
    best = float("inf")
    nout = 0
    for _ in range(repeat):
        m = impl.Merger(spec, COLS, len(shards))
        t0 = time.perf_counter()
        nout = 0
        pos = [0] * len(shards)
        live = list(range(len(shards)))
        while live and not m.done:
            for s in list(live):
                rows = shards[s][pos[s]:pos[s] + batch]
                pos[s] += batch
                if rows:
                    m.feed(s, rows)
                if pos[s] >= len(shards[s]):
                    m.finish(s)
                    live.remove(s)
            nout += len(m.take())
        nout += len(m.take())
        best = min(best, time.perf_counter() - t0)
    return best / max(nout, 1) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--python", action="store_true", help="also time the pure-Python twin")
    args = ap.parse_args()
    from ddm_core import merge as cmerge
    impls = [("cython", cmerge)]
    if args.python:
        from ddm._py import merge as pymerge
        impls.append(("python", pymerge))
    rng = random.Random(1)
    rows = make_rows(args.rows, rng)
    n = args.shards
    cases = [
        ("ORDER BY k (int)", MergeSpec(order_by=((1, False),)), shard_inputs(rows, n, lambda r: r[1], False)),
        ("ORDER BY c DESC (ci string)", MergeSpec(order_by=((2, True),)),
         shard_inputs(rows, n, lambda r: r[2], True)),
        ("ORDER BY k, id (2 keys)", MergeSpec(order_by=((1, False), (0, False))),
         shard_inputs(rows, n, lambda r: (r[1], r[0]), False)),
        ("ORDER BY k, strip 2 derived cols", MergeSpec(order_by=((1, False),), visible_columns=2),
         shard_inputs(rows, n, lambda r: r[1], False)),
        ("concat (no ORDER BY)", MergeSpec(), shard_inputs(rows, n, lambda r: r[0], False)),
    ]
    for label, spec, shards in cases:
        line = f"{label:36s}"
        for name, impl in impls:
            line += f"  {name}: {bench(impl, spec, shards):6.3f} us/row"
        print(line)
    # Streaming GROUP BY k with COUNT(*): shards return (k, count) ordered by k.
    gcols = [ColumnDef("k", FT.LONG), ColumnDef("cnt", FT.LONGLONG)]
    counts: list[dict[int, int]] = [{} for _ in range(n)]
    for r in rows:
        d = counts[r[0] % n]
        d[r[1]] = d.get(r[1], 0) + 1
    gshards = [[text_row((k, c)) for k, c in sorted(d.items())] for d in counts]
    spec = MergeSpec(group_by=(0,), aggregates=((1, "count", ()),), shard_order=((0, False),))
    line = f"{'GROUP BY k COUNT(*) streaming':36s}"
    for name, impl in impls:
        m_impl = impl

        class _Shim:
            Merger = staticmethod(lambda sp, cols, ns, _i=m_impl: _i.Merger(sp, gcols, ns))
        line += f"  {name}: {bench(_Shim, spec, gshards):6.3f} us/row"
    print(line + "  (per output group)")


if __name__ == "__main__":
    main()
