"""sysbench with `transactions: xa` vs `local` on the 4x8 layout, interleaved in one run of one ddm.

    python perf/xa_sysbench.py [--slices 3] [--time 20] [--threads 8] [--workloads oltp_read_write oltp_write_only]

One 4-node sandbox and one ddm-server whose config has `sbtest` (xa, the default) and `sbtest_local`
(`transactions: local`) over the same physical tables. After one prepare, each workload runs --slices times per mode,
alternating xa / local every --time seconds, so that the load other processes put on the machine falls on both modes
alike. Prints tps and p95 per slice and the mean over the slices; the data check of perf/sysbench_sharded.py at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sysbench_sharded as S  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=3)
    ap.add_argument("--time", type=float, default=20)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--tables", type=int, default=2)
    ap.add_argument("--table-size", type=int, default=10000)
    ap.add_argument("--workloads", nargs="+", default=["oltp_read_write", "oltp_write_only"])
    opts = ap.parse_args()
    root = tempfile.mkdtemp(prefix="ddm-xa-sysbench-")
    env = S.start_env(root, layouts=["4x8"], local_copies=True)
    kw = {"auto_inc": False, "tables": opts.tables, "table_size": opts.table_size, "threads": opts.threads}
    rows: dict[tuple[str, str], list[S.SbRun]] = {}
    bad = []
    try:
        prep = S.sysbench(env, "sbtest", "oltp_read_write", "prepare", **kw)
        if not prep.ok:
            print(prep.problem())
            return 1
        for w in opts.workloads:
            for i in range(opts.slices):
                for mode, db in (("xa", "sbtest"), ("local", "sbtest_local")):
                    r = S.sysbench(env, db, w, "run", seconds=opts.time, **kw)
                    rows.setdefault((w, mode), []).append(r)
                    print(f"  {w} {mode} slice {i + 1}: "
                          + (f"{r.tps:.1f} tps p95 {r.p95_ms} ms, {r.ignored_errors} retried" if r.ok
                             else "FAILED " + r.problem()[:300]), flush=True)
                    if not r.ok:
                        bad.append(r.problem())
        bad += S.check_data(env, "sbtest", opts.tables)
    finally:
        S.stop_env(env)
    print(f"\nsysbench 4x8, {opts.threads} threads, {opts.tables} tables x {opts.table_size} rows, "
          f"{opts.slices} x {opts.time:.0f} s per (workload, mode), interleaved")
    print("| workload | mode | tps per slice | mean tps | p95 ms per slice | retried conflicts |")
    print("|---|---|---|---:|---|---:|")
    for (w, mode), runs in rows.items():
        print(f"| {w} | {mode} | {' / '.join(f'{r.tps:.1f}' for r in runs)} | "
              f"{statistics.mean(r.tps for r in runs):.1f} | {' / '.join(f'{r.p95_ms:.1f}' for r in runs)} | "
              f"{sum(r.ignored_errors for r in runs)} |")
    for b in bad:
        print("PROBLEM:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
