"""A seeded random loop of faulted cross-node transfers (the long form of tests/integration/test_xa_faults.py).

    python perf/xa_fault_loop.py [--transfers 300] [--seed 1] [--fault-rate 0.5]

Two-node sandbox, bank accounts sharded over both nodes (even ids on n0, odd on n1), ddm-server in front. Each transfer
moves money between a random even and a random odd account (in a random order); with probability --fault-rate a
fault is armed through ddm's test hook first: a random step of two-phase commit (prepared_some, prepared_all, decided,
committed_some) and a random victim (the ddm worker, n0's mariadbd, n1's mariadbd; a killed node is restarted on its
datadir). After every transfer, once recovery has emptied XA RECOVER on both nodes: the sum of balances is unchanged,
a transfer that got OK is applied, one that got an error is not, one whose worker died is applied exactly when the
hook fired after the decision was logged. Exit status 1 on the first violation. (A killed worker is restarted by
the master with its backoff for quick deaths, up to ~30 s: worker faults dominate the run time.)
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "src", ROOT / "tests" / "integration"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from test_xa_faults import ACCOUNTS, START, open_bank  # noqa: E402

STEPS = ("prepared_some", "prepared_all", "decided", "committed_some")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transfers", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fault-rate", type=float, default=0.5)
    opts = ap.parse_args()
    rng = random.Random(opts.seed)
    root = tempfile.mkdtemp(prefix="ddm-xa-loop-")
    counts: Counter[str] = Counter()
    t0 = time.monotonic()
    try:
        with open_bank(root + "/sandbox", Path(root)) as bank:
            for n in range(opts.transfers):
                a, b = rng.randrange(0, ACCOUNTS, 2), rng.randrange(1, ACCOUNTS, 2)
                src, dst = (a, b) if rng.random() < 0.5 else (b, a)
                amount = rng.randint(1, 50)
                fault = None
                if rng.random() < opts.fault_rate:
                    fault = (rng.choice(STEPS), rng.choice(("worker", "n0", "n1")))
                    step, victim = fault
                    what = "exit" if victim == "worker" else f"kill {bank.box.primary(victim).pid}"
                    bank.fault_file.write_text(f"{step} {what}")
                outcome = bank.transfer(src, dst, amount)
                if bank.fault_file.exists():
                    bank.fault_file.unlink()  # not reached (e.g. an earlier error): no fault this time
                    fault = None
                if fault is not None and fault[1] != "worker":
                    bank.kill_and_restart(fault[1])
                if outcome == "lost":
                    applied = fault is not None and fault[1] == "worker" and fault[0] in ("decided", "committed_some")
                else:
                    applied = outcome == "ok"
                if applied:
                    bank.expected[src] -= amount
                    bank.expected[dst] += amount
                bank.settle()
                got = bank.balances()
                key = f"{fault[0]}/{fault[1]}" if fault else "no fault"
                counts[f"{key}: {outcome}"] += 1
                if (n + 1) % 10 == 0:
                    print(f"  {n + 1} transfers, {time.monotonic() - t0:.0f} s, consistent", flush=True)
                if sum(got.values()) != ACCOUNTS * START or got != bank.expected:
                    print(f"transfer {n} ({key}, {outcome}): balances {got} != expected {bank.expected}")
                    print(bank.ddm.log())
                    return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{opts.transfers} transfers, seed {opts.seed}, {time.monotonic() - t0:.0f} s: all consistent")
    for k, v in sorted(counts.items()):
        print(f"  {v:4d}  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
