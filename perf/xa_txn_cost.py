"""What a sharded transaction costs with `transactions: xa` vs `local`, measured interleaved in one run.

    python perf/xa_txn_cost.py [--rounds 20] [--per-round 100]

The two-node bank of tests/integration/test_xa_faults.py: logical databases `bank` (xa) and `bank_local` (local)
over the same physical tables. One client (PyMySQL, text protocol) runs `BEGIN; UPDATE ...; COMMIT` transactions
that write one row on one node, and transactions that write one row on each of the two nodes; the modes alternate
every --per-round transactions so that load on the machine hits both alike. Prints mean / median / p95 per
transaction for each (mode, shape).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "src", ROOT / "tests" / "integration"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from test_xa_faults import open_bank  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--per-round", type=int, default=100)
    opts = ap.parse_args()
    root = tempfile.mkdtemp(prefix="ddm-xa-cost-")
    times: dict[tuple[str, str], list[float]] = {}
    try:
        with open_bank(root + "/sandbox", Path(root), xa_recovery_interval=10) as bank:
            conns = {db: bank.client(db) for db in ("bank", "bank_local")}
            shapes = {"one node": (0,), "two nodes": (0, 1)}
            for r in range(opts.rounds + 1):
                for db, c in conns.items():
                    for shape, ids in shapes.items():
                        with c.cursor() as cur:
                            for _ in range(opts.per_round):
                                t0 = time.perf_counter()
                                cur.execute("BEGIN")
                                for i in ids:
                                    cur.execute(f"UPDATE acct SET bal = bal + 0 WHERE id = {i}")
                                cur.execute("COMMIT")
                                if r:  # round 0 warms up
                                    times.setdefault((db, shape), []).append(time.perf_counter() - t0)
            for c in conns.values():
                c.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{opts.rounds} rounds x {opts.per_round} transactions per (mode, shape), interleaved")
    print("| mode  | transaction | mean ms | median ms | p95 ms |")
    print("|-------|-------------|---------|-----------|--------|")
    for (db, shape), ts in sorted(times.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ts.sort()
        mode = "xa" if db == "bank" else "local"
        print(f"| {mode:5} | {shape:11} | {1000 * statistics.mean(ts):7.3f} | {1000 * statistics.median(ts):9.3f} | "
              f"{1000 * ts[int(len(ts) * 0.95)]:6.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
