"""Scatter ORDER BY ... LIMIT over 32 physical tables (4 data nodes x 8 tables, examples/rules/sbtest-4x8.yaml).

    python perf/scatter_orderby.py [--rows 100000] [--time 10] [--threads 4] [--limit 10]

Starts a 4-node sandbox and ddm-server, loads sbtest1 through ddm (sysbench prepare), then runs
`SELECT id, k, c FROM sbtest1 ORDER BY k DESC, id LIMIT n` from PyMySQL threads for --time seconds and reports QPS,
p50/p95 latency, ddm CPU per query and ddm's peak RSS; then one full-table ORDER BY without LIMIT and one plain
scan, with ddm's RSS before and its peak during each (VmHWM reset first), to show what a large merge costs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pymysql

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (perf/bench.py: sandbox + ddm-server helpers)

from ddm.tools import sandbox as sb  # noqa: E402


def rss_kb(pid: int) -> int:
    total = 0
    for p in [pid, *bench._tree(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh at the current RSS (Linux: `echo 5 > /proc/PID/clear_refs`), so a phase's peak is its own
    and not the bulk load's."""
    for p in [pid, *bench._tree(pid)]:
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--time", type=float, default=10)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--port", type=int, default=14310)
    opts = ap.parse_args()
    box_dir = tempfile.mkdtemp(prefix="ddm-scatter-")
    box = sb.up(box_dir, nodes=4, base_port=opts.port, rules=str(HERE.parent / "examples/rules/sbtest-4x8.yaml"))
    server = None
    try:
        users = {u["name"]: u["password"] for u in box.users}
        conn = {"host": "127.0.0.1", "port": box.listen_port, "user": "ddm_native",
                "password": users["ddm_native"], "db": "sbtest"}
        server = bench.DdmServer(box.config_path, 1, box.listen_port, os.path.join(box_dir, "ddm.log"))
        prep = argparse.Namespace(tables=1, table_size=opts.rows)
        bench.sysbench("oltp_read_only", "prepare", conn, prep)
        sql = f"SELECT id, k, c FROM sbtest1 ORDER BY k DESC, id LIMIT {opts.limit}"
        latencies: list[float] = []
        lock = threading.Lock()
        stop = time.monotonic() + opts.time

        def worker() -> None:
            c = pymysql.connect(host="127.0.0.1", port=box.listen_port, user="ddm_native",
                                password=users["ddm_native"], database="sbtest")
            cur = c.cursor()
            mine = []
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                cur.execute(sql)
                rows = cur.fetchall()
                mine.append(time.perf_counter() - t0)
                assert len(rows) == opts.limit
            c.close()
            with lock:
                latencies.extend(mine)

        reset_peak(server.pid)
        before = bench.cpu_seconds(server.pid)
        threads = [threading.Thread(target=worker) for _ in range(opts.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cpu = bench.cpu_seconds(server.pid) - before
        n = len(latencies)
        latencies.sort()
        print(f"{sql!r} over 32 physical tables, {opts.rows} rows, {opts.threads} client threads, {opts.time:g} s")
        print(f"  queries {n}, QPS {n / opts.time:.0f}, p50 {statistics.median(latencies) * 1e3:.2f} ms, "
              f"p95 {latencies[int(n * 0.95)] * 1e3:.2f} ms, ddm CPU {cpu * 1e6 / n:.0f} us/query, "
              f"ddm peak RSS {rss_kb(server.pid) / 1024:.0f} MiB")
        for label, big in (("full ORDER BY without LIMIT", "SELECT id, k, c, pad FROM sbtest1 ORDER BY k DESC, id"),
                           ("plain scan", "SELECT id, k, c, pad FROM sbtest1")):
            c = pymysql.connect(host="127.0.0.1", port=box.listen_port, user="ddm_native",
                                password=users["ddm_native"], database="sbtest")
            cur = c.cursor()
            reset_peak(server.pid)
            base = rss_kb(server.pid)
            before = bench.cpu_seconds(server.pid)
            t0 = time.perf_counter()
            cur.execute(big)
            got = len(cur.fetchall())
            elapsed = time.perf_counter() - t0
            cpu = bench.cpu_seconds(server.pid) - before
            print(f"  {label}: {got} rows in {elapsed:.2f} s, ddm CPU {cpu * 1e6 / got:.1f} us/row, ddm RSS "
                  f"{base / 1024:.0f} MiB before, peak {rss_kb(server.pid) / 1024:.0f} MiB during")
            c.close()
    finally:
        if server is not None:
            server.stop()
        sb.down(box_dir)
        shutil.rmtree(box_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
