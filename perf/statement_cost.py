"""ddm CPU per statement for sysbench's statements on a sharded layout, one client at a time, optionally A/B
against another checkout's ddm in the same run.

    python perf/statement_cost.py [--rules examples/rules/sbtest-4x8.yaml] [--queries 1000] [--rounds 3]
                                  [--compare-src OTHER_CHECKOUT/src]

Starts a 4-node sandbox (`--nodes`), loads sbtest1 through ddm (sysbench prepare, `--rows`), then for each of
sysbench's oltp_read_only statements (point select, simple range, SUM range, ORDER BY range, DISTINCT range; text
protocol, random ids, ranges of 100 like sysbench) runs `--queries` statements from one PyMySQL connection and
reports ddm's CPU (utime+stime of the ddm-server processes, /proc) and read/write syscalls per statement, and the
client's wall time per statement. One client keeps the measure free of queueing: it is the proxy's own cost.

`--compare-src DIR` also runs a ddm-server whose `ddm` package is imported from DIR (a `git worktree` of another
commit, with the compiled `ddm_core` extensions copied or built there). The two servers take turns, `--rounds`
times, on the same sandbox and data; the table shows the median round of each.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymysql

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (perf/bench.py: sandbox + ddm-server helpers)

from ddm.tools import sandbox as sb  # noqa: E402

STATEMENTS = [
    ("point select", "SELECT c FROM sbtest1 WHERE id={a}"),
    ("simple range", "SELECT c FROM sbtest1 WHERE id BETWEEN {a} AND {b}"),
    ("SUM range", "SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN {a} AND {b}"),
    ("ORDER BY range", "SELECT c FROM sbtest1 WHERE id BETWEEN {a} AND {b} ORDER BY c"),
    ("DISTINCT range", "SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN {a} AND {b} ORDER BY c"),
]


class Server:
    """ddm-server from this checkout, or with PYTHONPATH pointing at another checkout's src."""

    def __init__(self, label: str, src: str | None, config: str, port: int, log: str) -> None:
        self.label = label
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = src
        module = "ddm.process.server_main"
        if src is not None and not os.path.exists(os.path.join(src, "ddm", "process", "server_main.py")):
            module = ".".join(("ddm", "server_main"))  # a checkout from before the subpackage layout
        cmd = [sys.executable, "-m", module, "--config", config, "--workers", "1"]
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while not sb.port_in_use(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{label}: ddm-server did not start; see {log}")
            time.sleep(0.1)
        time.sleep(0.5)  # workers up

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def measure(server: Server, port: int, password: str, queries: int, rows: int) -> dict[str, tuple]:
    c = pymysql.connect(host="127.0.0.1", port=port, user="ddm_native", password=password, database="sbtest",
                        autocommit=True, ssl_disabled=True)
    cur = c.cursor()
    rnd = random.Random(1)
    out = {}
    for name, template in STATEMENTS:
        def one(template: str = template) -> None:
            a = rnd.randint(1, rows - 100)
            cur.execute(template.format(a=a, b=a + 99))
            cur.fetchall()

        for _ in range(50):  # plan cache, pooled connections
            one()
        (u0, s0), io0 = bench.cpu_times(server.proc.pid), bench.io_syscalls(server.proc.pid)
        t0 = time.perf_counter()
        for _ in range(queries):
            one()
        wall = time.perf_counter() - t0
        (u1, s1), io1 = bench.cpu_times(server.proc.pid), bench.io_syscalls(server.proc.pid)
        out[name] = ((u1 - u0) * 1e6 / queries, (s1 - s0) * 1e6 / queries, (io1 - io0) / queries,
                     wall * 1e6 / queries)
    c.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", default=str(HERE.parent / "examples/rules/sbtest-4x8.yaml"))
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare-src", help="another checkout's src directory (its ddm_core extensions built)")
    ap.add_argument("--port", type=int, default=15310)
    opts = ap.parse_args()
    box_dir = tempfile.mkdtemp(prefix="ddm-stmtcost-")
    box = sb.up(box_dir, nodes=opts.nodes, base_port=opts.port, rules=opts.rules)
    try:
        password = {u["name"]: u["password"] for u in box.users}["ddm_native"]
        conn = {"host": "127.0.0.1", "port": box.listen_port, "user": "ddm_native", "password": password,
                "db": "sbtest"}
        servers = [("this", None)] + ([("compare", opts.compare_src)] if opts.compare_src else [])
        results: dict[str, list[dict]] = {label: [] for label, _ in servers}
        for r in range(opts.rounds):
            for label, src in servers:
                s = Server(label, src, box.config_path, box.listen_port, os.path.join(box_dir, f"{label}.log"))
                try:
                    if r == 0 and label == "this":
                        bench.sysbench("oltp_read_only", "prepare", conn,
                                       argparse.Namespace(tables=1, table_size=opts.rows))
                    results[label].append(measure(s, box.listen_port, password, opts.queries, opts.rows))
                finally:
                    s.stop()
        print(f"{opts.nodes} nodes, rules {os.path.relpath(opts.rules)}, {opts.rows} rows, one client, "
              f"{opts.queries} statements x {opts.rounds} rounds (median round)")
        print("| statement | server | ddm user us | ddm system us | ddm I/O syscalls | wall us |")
        print("|---|---|---:|---:|---:|---:|")
        for name, _ in STATEMENTS:
            for label, _src in servers:
                rows = [res[name] for res in results[label]]
                med = [statistics.median(v[i] for v in rows) for i in range(4)]
                print(f"| {name} | {label} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.1f} | {med[3]:.0f} |")
    finally:
        sb.down(box_dir)
        shutil.rmtree(box_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
