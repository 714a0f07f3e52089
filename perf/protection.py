"""Issue 17 findings measured: a worker's RSS under never-ending pre-auth packets, the time to an error when a data
node is frozen (SIGSTOP), a worker's RSS after 200 x 1 MiB of COM_STMT_SEND_LONG_DATA on one statement.

    .venv/bin/python perf/protection.py [--freeze 20] [--read-timeout 5] [--only preauth,frozen,longdata]

Starts a 2-node sandbox in a temporary directory and ddm-server (1 worker, subprocess) in front of it: database
`psb` on n0 and `pfz` on n1. Runs on the code checked out; settings that code does not know (read_timeout,
max_long_data_size) are left out, so the same script measures older commits (`git stash` and run it again).

preauth:  6 connections each read the greeting and send a handshake response announcing 16 MiB - 1 bytes as
          continuation packets, ~63 MiB each, that never ends; worker RSS before, and with them open.
frozen:   SIGSTOP n1's mariadbd for --freeze seconds (SIGCONT in a finally); a client runs SELECT COUNT(*) on a
          table of n1 and another SELECT 1 on n0 in a loop: seconds until the first gets an answer or an error, the
          slowest SELECT 1, and whether n1 answers again after SIGCONT.
longdata: 200 x 1 MiB of long data for one parameter of one prepared statement; worker RSS before, after the
          data (a COM_PING answered after it), and the EXECUTE's answer.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "integration")]

import pymysql  # noqa: E402
from ddm_fixtures import RawClient, ddm_config, free_port, start_ddm  # noqa: E402

from ddm import config as config_mod  # noqa: E402
from ddm.tools import sandbox as sb  # noqa: E402

MIB = 1024 * 1024


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def knows(cls: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls))


def preauth(port: int, worker: int) -> None:
    before = rss_mb(worker)
    socks, refused = [], 0
    for _ in range(6):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.recv(65536)  # the greeting
        socks.append(s)
        body = b"x" * (0xFFFFFF)
        try:
            for i in range(3):
                s.sendall(b"\xff\xff\xff" + bytes([1 + i]) + body)
            s.sendall(b"\xff\xff\xff\x04" + body[:15 * MIB])
        except OSError:
            refused += 1
    time.sleep(1)
    during = rss_mb(worker)
    for s in socks:
        s.close()
    time.sleep(0.5)
    print(f"preauth: worker RSS {before:.0f} MB before, {during:.0f} MB with 6 never-ending handshake responses "
          f"open (+{during - before:.0f} MB); {refused} of 6 refused while sending; {rss_mb(worker):.0f} MB after "
          f"closing them")


def frozen(port: int, node_pid: int, freeze: float) -> None:
    def connect(db: str) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=port, user="native", password="nativepw", database=db,
                               autocommit=True, ssl_disabled=True, read_timeout=freeze * 3)

    fz, other = connect("pfz"), connect("psb")
    with fz.cursor() as cur:
        cur.execute("CREATE OR REPLACE TABLE t (id INT)")
        cur.execute("SELECT COUNT(*) FROM t")
    stop = threading.Event()
    worst = [0.0]

    def loop() -> None:
        with other.cursor() as cur:
            while not stop.is_set():
                t = time.monotonic()
                cur.execute("SELECT 1")
                cur.fetchall()
                worst[0] = max(worst[0], time.monotonic() - t)
                time.sleep(0.05)

    th = threading.Thread(target=loop)
    os.kill(node_pid, signal.SIGSTOP)
    try:
        th.start()
        start = time.monotonic()
        try:
            with fz.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM t")
                answer = f"rows {cur.fetchall()}"
        except pymysql.err.Error as exc:
            answer = f"error {exc.args[0]} {exc.args[1] if len(exc.args) > 1 else ''}"
        took = time.monotonic() - start
        time.sleep(max(0.0, freeze - (time.monotonic() - start)))
    finally:
        os.kill(node_pid, signal.SIGCONT)
        stop.set()
    th.join()
    try:
        again = connect("pfz")
        with again.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM t")
            after = f"works again ({cur.fetchall()})"
    except pymysql.err.Error as exc:
        after = f"still failing: {exc}"
    print(f"frozen: node n1 stopped {freeze:g} s: the statement on it answered after {took:.1f} s with {answer}; "
          f"slowest SELECT 1 on n0 meanwhile {worst[0] * 1000:.0f} ms; after SIGCONT: {after}")


def longdata(port: int, worker: int) -> None:
    with RawClient(port, db="psb") as raw:
        stmt, _, _ = raw.prepare("SELECT LENGTH(?)")
        raw.ok(b"\x0e")
        before = rss_mb(worker)
        chunk = b"y" * MIB
        for _ in range(200):
            raw.send_long_data(stmt, 0, chunk)
        raw.ok(b"\x0e")  # answered after the long data was taken
        during = rss_mb(worker)
        try:
            payload = (b"\x17" + (stmt).to_bytes(4, "little") + b"\x00\x01\x00\x00\x00" + b"\x00" + b"\x01"
                       + b"\xfc\x00")
            raw.command(payload)
            cols, rows, _ = raw.read_result(binary=True)
            answer = f"{len(rows)} row(s)"
        except Exception as exc:
            answer = f"error {exc}"
        print(f"longdata: worker RSS {before:.0f} MB before, {during:.0f} MB after 200 x 1 MiB of long data "
              f"(+{during - before:.0f} MB); EXECUTE: {answer}; {rss_mb(worker):.0f} MB after it")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--freeze", type=float, default=20.0)
    ap.add_argument("--read-timeout", type=float, default=5.0)
    ap.add_argument("--only", default="preauth,frozen,longdata")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="ddm-protection-")
    base = sb.find_free_base(24306, nodes=2)
    box = sb.up(root, nodes=2, replicas=0, base_port=base)
    ddm = None
    try:
        for name, db in (("n0", "psb_phys"), ("n1", "pfz_phys")):
            p = box.primary(name)
            with pymysql.connect(host="127.0.0.1", port=p.port, user=box.node_user, password=box.node_password) as c:
                c.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {db}")
                c.cursor().execute("SET GLOBAL max_allowed_packet = 1024 * 1024 * 1024")
        nodes = {}
        for name in ("n0", "n1"):
            p = box.primary(name)
            pool = {"max_size": 8, "connect_timeout": 3}
            if knows(config_mod.PoolConfig, "read_timeout"):
                pool["read_timeout"] = args.read_timeout
            nodes[name] = {"host": "127.0.0.1", "port": p.port, "user": box.node_user,
                           "password": box.node_password, "pool": pool}
        dbs = {"psb": {"node": "n0", "database": "psb_phys"}, "pfz": {"node": "n1", "database": "pfz_phys"}}
        cfg = ddm_config(free_port(), nodes, dbs)
        ddm = start_ddm(Path(root) / "ddm", cfg, mode="subprocess")
        worker = ddm.worker_pids()[0]
        print(f"ddm worker pid {worker}, config: {ddm.config_path}")
        only = args.only.split(",")
        if "preauth" in only:
            preauth(ddm.port, worker)
        if "longdata" in only:
            longdata(ddm.port, worker)
        if "frozen" in only:
            frozen(ddm.port, box.primary("n1").pid, args.freeze)
    finally:
        if ddm is not None:
            ddm.stop()
        sb.down(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
