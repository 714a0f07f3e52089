"""Soak: real ddm-server under continuous PyMySQL load while it is hot-reloaded and handed off between versions.

    python perf/reload_handoff_soak.py --config SANDBOX_DIR/ddm.yaml [--duration 60] [--reloads 10] [--handoffs 3]

(`ddm sandbox up` prints the sandbox's ddm.yaml.) The script writes its own copy of the config (free port, its own
control socket, 2 workers), starts `ddm-server`, runs 16 client threads - half on long-lived connections, half
opening a new connection per transaction - each doing BEGIN; INSERT; SELECT (checks the value); UPDATE; COMMIT in
the pass-through database `sbtest` (plain TCP unless --tls: the subject is the process model), and meanwhile sends `reload` over the control socket and starts
`ddm-server --takeover` (a new master generation) at evenly spread times. It prints a summary and exits non-zero on
any failed connection or query.

A handoff retires the old workers, which close idle client connections at a transaction boundary (MySQL has no
"go away" message). A long-lived client therefore sees its connection lost on the *first* statement of its next
transaction; that statement never ran, so the client reconnects and retries: counted as `reconnects`, not as a
failure. Losing a connection anywhere else (mid-transaction, or on connect) is a failure.
tests/integration/test_reload_handoff.py runs the same thing for ~20 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import yaml

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
LOST = {2006, 2013, 2055}  # CR_SERVER_GONE_ERROR, CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED
DATABASE = "sbtest"


@dataclass
class Report:
    duration: float = 0.0
    transactions: int = 0
    queries: int = 0
    connects: int = 0
    reconnects: int = 0
    failures: list[str] = field(default_factory=list)
    reloads_ok: int = 0
    reload_errors: list[str] = field(default_factory=list)
    handoffs: list[dict] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    max_gap: float = 0.0  # longest time with no transaction completing anywhere
    rows_checked: int = 0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies) or [0.0]

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2)

        return {"duration_s": round(self.duration, 1), "transactions": self.transactions, "queries": self.queries,
                "tps": round(self.transactions / self.duration, 1) if self.duration else 0,
                "connects": self.connects, "reconnects_at_txn_boundary": self.reconnects,
                "failed": len(self.failures), "reloads_ok": self.reloads_ok, "reload_errors": self.reload_errors,
                "handoffs": self.handoffs, "txn_ms_p50": pct(0.5), "txn_ms_p99": pct(0.99),
                "txn_ms_max": pct(1.0), "max_gap_ms": round(self.max_gap * 1000, 1),
                "rows_checked": self.rows_checked}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def control(path: str, msg: dict, timeout: float = 60.0) -> dict:
    sys.path.insert(0, str(SRC))
    from ddm.process import control as ctl

    return ctl.request(path, msg, timeout=timeout)


class Soak:
    def __init__(self, base_config: str, workdir: str, duration: float, reloads: int, handoffs: int,
                 threads: int = 16, workers: int = 2, tls: bool = False) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.duration, self.n_reloads, self.n_handoffs = duration, reloads, handoffs
        self.n_threads, self.workers, self.tls = threads, workers, tls
        with open(base_config) as f:
            cfg = yaml.safe_load(f)
        self.port = free_port()
        self.ctl = str(self.workdir / "ctl.sock")
        cfg["server"].update({"listen": f"127.0.0.1:{self.port}", "workers": workers, "control_socket": self.ctl,
                              "drain_timeout": 10, "max_connections": 4000})
        self.cfg = cfg
        self.config_path = self.workdir / "soak.yaml"
        self._write()
        user = cfg["users"][0]
        self.user, self.password = user["name"], user["password"]
        self.report = Report()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.procs: list[subprocess.Popen] = []
        self.last_done = time.monotonic()
        self.committed: dict[int, int] = {}  # thread -> committed transactions
        self.run_base = (int(time.time()) % 100_000) * 10**10  # ids unique across runs on the same sandbox

    def _write(self) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.cfg))
        os.replace(tmp, self.config_path)  # atomic: a reload never reads a half-written file

    # --- server ---------------------------------------------------------------------------------------------
    def _spawn(self, *extra: str) -> subprocess.Popen:
        log = open(self.workdir / f"ddm-server-{len(self.procs)}.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", "ddm.process.server_main", "--config", str(self.config_path), *extra],
                             stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(SRC)})
        self.procs.append(p)
        return p

    def _wait_master(self, pid: int, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[-1].poll() is not None:
                raise RuntimeError(f"ddm-server exited {self.procs[-1].returncode}; see {self.workdir}")
            try:
                st = control(self.ctl, {"cmd": "status"}, timeout=5)
                if st.get("pid") == pid and st.get("state") == "running":
                    return st
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"ddm-server {pid} not ready in {timeout} s; see {self.workdir}")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.workdir.glob("*.log")))

    # --- clients --------------------------------------------------------------------------------------------
    def _connect(self) -> pymysql.connections.Connection:
        conn = pymysql.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                               database=DATABASE, autocommit=True, connect_timeout=10, read_timeout=30,
                               write_timeout=30, ssl_disabled=not self.tls)
        with self.lock:
            self.report.connects += 1
        return conn

    def _txn(self, conn: pymysql.connections.Connection, tid: int, n: int) -> None:
        key = self.run_base + tid * 10**7 + n
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            step = "insert"
            try:
                cur.execute("INSERT INTO soak_t (id, thread, n, v) VALUES (%s, %s, %s, %s)",
                            (key, tid, n, f"v{n}"))
                step = "select"
                cur.execute("SELECT v FROM soak_t WHERE id = %s", (key,))
                row = cur.fetchone()
                if row is None or row[0] != f"v{n}":
                    raise AssertionError(f"read back {row!r} for id {key}")
                step = "update"
                cur.execute("UPDATE soak_t SET v = %s WHERE id = %s", (f"w{n}", key))
                step = "commit"
                cur.execute("COMMIT")
            except pymysql.err.Error as e:
                raise MidTransaction(step, e) from e

    def _client(self, tid: int, held: bool) -> None:
        n = 0
        conn = None
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = self._connect()
                self._txn(conn, tid, n)
            except MidTransaction as e:
                self._fail(f"thread {tid} txn {n} lost during {e.step}: {e.error!r}")
                conn = self._drop(conn)
                n += 1
                continue
            except pymysql.err.OperationalError as e:
                # On BEGIN, the first statement of a transaction: the server closed the idle connection (drain).
                if held and conn is not None and e.args and e.args[0] in LOST:
                    with self.lock:
                        self.report.reconnects += 1
                    conn = self._drop(conn)
                    continue  # retry the same transaction on a new connection
                self._fail(f"thread {tid} txn {n}: {e!r}")
                conn = self._drop(conn)
                n += 1
                continue
            except Exception as e:
                self._fail(f"thread {tid} txn {n}: {e!r}")
                conn = self._drop(conn)
                n += 1
                continue
            done = time.monotonic()
            with self.lock:
                self.report.transactions += 1
                self.report.queries += 5
                self.report.latencies.append(done - t0)
                self.report.max_gap = max(self.report.max_gap, done - self.last_done)
                self.last_done = done
                self.committed[tid] = self.committed.get(tid, 0) + 1
            n += 1
            if not held:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _drop(self, conn: Any) -> None:
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
        return None

    def _fail(self, what: str) -> None:
        with self.lock:
            self.report.failures.append(what)

    # --- driver ---------------------------------------------------------------------------------------------
    def run(self) -> Report:
        first = self._spawn()
        try:
            self._wait_master(first.pid)
            conn = self._connect()
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS soak_t (id BIGINT PRIMARY KEY, thread INT, n INT, "
                            "v VARCHAR(64))")
            conn.close()
            threads = [threading.Thread(target=self._client, args=(i, i % 2 == 0), daemon=True)
                       for i in range(self.n_threads)]
            start = time.monotonic()
            self.last_done = start
            for t in threads:
                t.start()
            events = ["reload"] * self.n_reloads + ["handoff"] * self.n_handoffs
            random.Random(7).shuffle(events)
            step = self.duration / (len(events) + 1)
            for i, ev in enumerate(events, 1):
                while time.monotonic() < start + i * step:
                    time.sleep(0.05)
                if ev == "reload":
                    self._reload()
                else:
                    self._handoff()
            while time.monotonic() < start + self.duration:
                time.sleep(0.05)
            self.stop.set()
            for t in threads:
                t.join(60)
            self.report.duration = time.monotonic() - start
            self._verify()
            return self.report
        finally:
            self.stop.set()
            self._shutdown()

    def _reload(self) -> None:
        self.cfg["server"]["max_connections"] = 4001 if self.cfg["server"]["max_connections"] == 4000 else 4000
        self._write()
        reply = control(self.ctl, {"cmd": "reload"})
        if reply.get("ok"):
            self.report.reloads_ok += 1
        else:
            self.report.reload_errors.append(json.dumps(reply))

    def _handoff(self) -> None:
        old = control(self.ctl, {"cmd": "status"}, timeout=10)
        t0 = time.monotonic()
        new = self._spawn("--takeover")
        st = self._wait_master(new.pid)
        took = time.monotonic() - t0
        old_proc = next(p for p in self.procs if p.pid == old["pid"])
        try:
            code = old_proc.wait(30)
        except subprocess.TimeoutExpired:
            code = None
        self.report.handoffs.append({"old_pid": old["pid"], "new_pid": new.pid, "takeover_s": round(took, 2),
                                     "old_exit": code, "old_ids": [w["id"] for w in old["workers"]],
                                     "new_ids": [w["id"] for w in st["workers"]]})

    def _verify(self) -> None:
        conn = self._connect()
        with conn.cursor() as cur:
            for tid, count in sorted(self.committed.items()):
                cur.execute("SELECT COUNT(*), SUM(v LIKE 'w%%') FROM soak_t WHERE id BETWEEN %s AND %s",
                            (self.run_base + tid * 10**7, self.run_base + (tid + 1) * 10**7 - 1))
                rows, updated = cur.fetchone()
                # A failed transaction may or may not have committed; committed ones must all be there, updated.
                if rows < count or int(updated or 0) < count:
                    self._fail(f"thread {tid}: {count} committed, found {rows} rows ({updated} updated)")
                self.report.rows_checked += int(rows)
        conn.close()

    def _shutdown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class MidTransaction(Exception):
    def __init__(self, step: str, error: Exception) -> None:
        super().__init__(step, error)
        self.step, self.error = step, error


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="a sandbox ddm.yaml (its nodes and users are used)")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--reloads", type=int, default=10)
    ap.add_argument("--handoffs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tls", action="store_true", help="clients use TLS (PyMySQL's default when offered)")
    ap.add_argument("--workdir", default=None, help="where the config copy and server logs go (default: temp)")
    args = ap.parse_args(argv)
    import tempfile

    workdir = args.workdir or tempfile.mkdtemp(prefix="ddm-soak-")
    report = Soak(args.config, workdir, args.duration, args.reloads, args.handoffs, args.threads,
                  args.workers, args.tls).run()
    print(json.dumps(report.summary(), indent=2))
    for f in report.failures[:20]:
        print("FAILED:", f, file=sys.stderr)
    ok = not report.failures and report.reloads_ok == args.reloads and len(report.handoffs) == args.handoffs \
        and all(h["old_exit"] == 0 for h in report.handoffs)
    print(f"{'PASS' if ok else 'FAIL'} (logs in {workdir})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
