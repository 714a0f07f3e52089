"""sysbench through ddm vs. straight to the data node, in one run, plus ddm's CPU cost per query.

    python perf/bench.py [--time 10] [--threads 8] [--tables 4] [--table-size 10000] [--workers 1]
                         [--rules FILE] [--sandbox-dir DIR] [--workloads ...] [--ps-modes auto disable]
                         [--direct-only] [--record]

For every workload x ps-mode: run sysbench against node 0 directly (database sbtest_direct), then through ddm
(logical database sbtest; pass-through to n0 by default, sharded with --rules). QPS and p95 come from sysbench's
own report; ddm CPU is utime+stime of the ddm-server master and all its descendants, sampled from /proc before and
after the run, divided by the queries sysbench counted. See perf/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ddm.tools import sandbox as sb

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
WORKLOADS = ("oltp_point_select", "oltp_read_only", "oltp_read_write")
PS_MODES = ("auto", "disable")
DIRECT_DB = "sbtest_direct"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    qps: float
    queries: int
    p95_ms: float
    errors: int


@dataclass
class Row:
    workload: str
    ps_mode: str
    direct: Run | None
    ddm: Run | None
    cpu_us_per_query: float | None
    relay_cpu_us_per_query: float | None = None
    syscalls_per_query: float | None = None  # ddm's read+write syscalls (/proc/PID/io) per query
    relay_syscalls_per_query: float | None = None
    ratios: list[float] | None = None  # ddm/direct of each round (--rounds > 1)


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def median_row(rounds: list[Row]) -> Row:
    """One row for several rounds of the same workload: the median of each figure, and every round's ratio."""
    def run(runs: list[Run | None]) -> Run | None:
        got = [r for r in runs if r is not None]
        if not got:
            return None
        return Run(qps=statistics.median(r.qps for r in got), queries=sum(r.queries for r in got),
                   p95_ms=statistics.median(r.p95_ms for r in got), errors=sum(r.errors for r in got))

    first = rounds[0]
    return Row(first.workload, first.ps_mode, run([r.direct for r in rounds]), run([r.ddm for r in rounds]),
               _median([r.cpu_us_per_query for r in rounds]), _median([r.relay_cpu_us_per_query for r in rounds]),
               _median([r.syscalls_per_query for r in rounds]), _median([r.relay_syscalls_per_query for r in rounds]),
               ratios=[r.ddm.qps / r.direct.qps for r in rounds if r.ddm and r.direct and r.direct.qps])


# ------------------------------------------------------------------------------------------------ sysbench


def parse_sysbench(out: str) -> Run:
    """QPS, total queries, p95 latency (ms) and ignored errors from sysbench 1.0 `run` output."""
    q = re.search(r"^\s*queries:\s+(\d+)\s+\(([\d.]+) per sec\.\)", out, re.M)
    p95 = re.search(r"^\s*95th percentile:\s+([\d.]+)", out, re.M)
    err = re.search(r"^\s*ignored errors:\s+(\d+)", out, re.M)
    if not q or not p95:
        raise RuntimeError("cannot parse sysbench output:\n" + out[-3000:])
    return Run(qps=float(q.group(2)), queries=int(q.group(1)), p95_ms=float(p95.group(1)),
               errors=int(err.group(1)) if err else 0)


def sysbench(workload: str, action: str, conn: dict[str, str | int], opts: argparse.Namespace,
             extra: tuple[str, ...] = ()) -> str:
    cmd = ["sysbench", workload, "--db-driver=mysql", f"--mysql-host={conn['host']}", f"--mysql-port={conn['port']}",
           f"--mysql-user={conn['user']}", f"--mysql-password={conn['password']}", f"--mysql-db={conn['db']}",
           f"--tables={opts.tables}", f"--table-size={opts.table_size}", *extra, action]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return res.stdout


def measure(workload: str, ps_mode: str, conn: dict[str, str | int], opts: argparse.Namespace) -> Run:
    common = (f"--threads={opts.threads}", f"--db-ps-mode={ps_mode}", "--report-interval=0", "--percentile=95")
    if opts.warmup > 0:  # sysbench 1.0.20 as packaged by Debian has no --warmup-time: a discarded short run
        sysbench(workload, "run", conn, opts, (*common, f"--time={opts.warmup}"))
    return parse_sysbench(sysbench(workload, "run", conn, opts, (*common, f"--time={opts.time}")))


# ------------------------------------------------------------------------------------------------ ddm-server


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree(root: int) -> Iterator[int]:
    kids, todo = _children(), [root]
    while todo:
        pid = todo.pop()
        yield pid
        todo += kids.get(pid, [])


def cpu_times(root: int) -> tuple[float, float]:
    """(utime, stime) of root and every live descendant, plus what root has reaped from exited children."""
    user = system = 0
    for pid in _tree(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # exited between listing and reading
        # fields[0] is the state (stat field 3): utime/stime are stat fields 14/15, cutime/cstime 16/17
        user += int(fields[11])
        system += int(fields[12])
        if pid == root:
            user += int(fields[13])
            system += int(fields[14])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(root: int) -> float:
    return sum(cpu_times(root))


def io_syscalls(root: int) -> int:
    """read- and write-type syscalls (syscr + syscw of /proc/PID/io) of root and its live descendants: libuv reads
    and writes sockets with read/write/writev, so this counts the socket I/O calls (epoll_wait is not included)."""
    total = 0
    for pid in _tree(root):
        try:
            with open(f"/proc/{pid}/io") as f:
                for line in f:
                    if line.startswith(("syscr:", "syscw:")):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


class DdmServer:
    """ddm-server started for this run; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, config: str, workers: int, port: int, log_path: str) -> None:
        exe = shutil.which("ddm-server", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                 os.environ.get("PATH", "")]))
        cmd = [exe] if exe else [sys.executable, "-m", "ddm.process.server_main"]
        cmd += ["--config", config, "--workers", str(workers)]
        if sb.port_in_use(port):
            raise RuntimeError(f"port {port} (ddm listen) is already in use: stop the other ddm-server first")
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ddm-server exited with {self.proc.returncode}; {log_path}:\n"
                                   + Path(log_path).read_text(errors="replace")[-3000:])
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"ddm-server did not listen on {port} within 30 s; see {log_path}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# ------------------------------------------------------------------------------------------------ report


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def markdown(rows: list[Row]) -> str:
    relay = any(r.relay_cpu_us_per_query is not None for r in rows)
    lines = ["| workload | ps-mode | direct QPS | ddm QPS | ddm/direct | direct p95 ms | ddm p95 ms | ddm CPU us/query |"
             " ddm I/O syscalls/query |"
             + (" bare relay CPU us/query | relay I/O syscalls/query |" if relay else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if relay else "")]
    for r in rows:
        if r.ratios:  # several rounds: the median of the rounds' ratios, and their range
            ratio = f"{statistics.median(r.ratios):.2f} ({min(r.ratios):.2f}-{max(r.ratios):.2f})"
        else:
            ratio = _f(r.ddm.qps / r.direct.qps if r.ddm and r.direct and r.direct.qps else None, ".2f")
        lines.append(f"| {r.workload} | {r.ps_mode} | {_f(r.direct and r.direct.qps, '.0f')} | "
                     f"{_f(r.ddm and r.ddm.qps, '.0f')} | {ratio} | "
                     f"{_f(r.direct and r.direct.p95_ms, '.2f')} | {_f(r.ddm and r.ddm.p95_ms, '.2f')} | "
                     f"{_f(r.cpu_us_per_query, '.1f')} | {_f(r.syscalls_per_query, '.2f')} |"
                     + (f" {_f(r.relay_cpu_us_per_query, '.1f')} | {_f(r.relay_syscalls_per_query, '.2f')} |"
                        if relay else ""))
    errors = sum((r.ddm.errors if r.ddm else 0) + (r.direct.errors if r.direct else 0) for r in rows)
    if errors:
        lines.append(f"\n{errors} errors ignored and retried by sysbench (deadlocks, lock wait timeouts).")
    return "\n".join(lines)


def environment(opts: argparse.Namespace, node_version: str) -> str:
    return (f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}; MariaDB {node_version}; sysbench {opts.threads} threads, "
            f"{opts.tables} tables x {opts.table_size} rows, {opts.time} s per run; ddm workers {opts.workers}"
            f"{'; rules ' + opts.rules if opts.rules else ''}"
            f"; pool.pipelining {pipelining_label(opts.pipelining)}")


def pipelining_label(connections: int | None) -> str:
    if connections is None:
        return "as configured (default: on, 1 connection)"
    return f"connections {connections}" if connections else "off"


def record(table: str, env: str, argv: list[str]) -> None:
    head = "" if RESULTS.exists() else "# Benchmark results\n\nAppended by `perf/bench.py --record`.\n"
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    cmd = " ".join(shlex.quote(a) for a in ["python", "perf/bench.py", *argv])
    with open(RESULTS, "a") as f:
        f.write(f"{head}\n## {when}\n\n`{cmd}`\n\n{env}\n\n{table}\n")


# ------------------------------------------------------------------------------------------------ main


def pipelining_config(path: str, connections: int) -> str:
    """A copy of the ddm.yaml at `path` (next to it) with pool.pipelining on every node (0: off)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    for node in (doc.get("nodes") or {}).values():
        node["pool"] = {**(node.get("pool") or {}),
                        "pipelining": {"connections": connections} if connections else False}
    out = os.path.join(os.path.dirname(os.path.abspath(path)), "ddm-pipelining.yaml")
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--time", type=int, default=10, help="seconds per sysbench run (default %(default)s)")
    p.add_argument("--warmup", type=int, default=0, help="seconds of discarded run before each measured run")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--tables", type=int, default=4)
    p.add_argument("--table-size", type=int, default=10000)
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--ps-modes", nargs="+", default=list(PS_MODES), choices=PS_MODES)
    p.add_argument("--workers", type=int, default=1, help="ddm-server --workers")
    p.add_argument("--rules", help="rules YAML (top-level databases:) for a sharded sbtest")
    p.add_argument("--nodes", type=int, default=2, help="data nodes when the benchmark starts its own sandbox")
    p.add_argument("--port", type=int, default=13310, help="sandbox base port when starting one")
    p.add_argument("--sandbox-dir", help="reuse the sandbox running there (or start one there and keep it)")
    p.add_argument("--user", default="ddm", help="ddm client user from ddm.yaml (default %(default)s)")
    p.add_argument("--direct-only", action="store_true", help="only the direct runs (tests the harness)")
    p.add_argument("--relay", action="store_true", help="also measure a bare uvloop byte relay (perf/relay.py)")
    p.add_argument("--pipelining", type=int, default=None, metavar="CONNECTIONS",
                   help="run ddm with pool.pipelining set on every node to CONNECTIONS shared connections (0: off), "
                        "from a copy of the sandbox's ddm.yaml; default: the sandbox's config (pipelining on)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat direct/ddm(/relay) this many times per workload, alternating, and report medians "
                        "(direct QPS on this VM moves 30-50%% between runs)")
    p.add_argument("--record", action="store_true", help=f"append the table to {RESULTS.relative_to(HERE.parent)}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return bench(argv, parse_args(argv))
    except (sb.SandboxError, RuntimeError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


def bench(argv: list[str], opts: argparse.Namespace) -> int:
    for tool in ("sysbench", "mariadb"):
        if not shutil.which(tool):
            print(f"bench: {tool} not found (bash scripts/setup.sh installs it)", file=sys.stderr)
            return 1

    own_dir = opts.sandbox_dir is None
    box_dir = opts.sandbox_dir or tempfile.mkdtemp(prefix="ddm-bench-")
    started = False
    try:
        st = sb.status(box_dir) if os.path.exists(sb.state_path(os.path.abspath(box_dir))) else None
    except sb.SandboxError:
        st = None
    if st and all(i["alive"] for i in st["instances"]):
        box = sb.load(box_dir)
        if opts.rules:
            print("bench: --rules ignored: reusing the running sandbox and its ddm.yaml", file=sys.stderr)
        print(f"reusing sandbox in {box.dir}", file=sys.stderr)
    else:
        print(f"starting a {opts.nodes}-node sandbox in {box_dir}", file=sys.stderr)
        try:
            box = sb.up(box_dir, nodes=opts.nodes, base_port=opts.port, rules=opts.rules, workers=opts.workers,
                        databases=("sbtest", DIRECT_DB))
        except sb.SandboxError:
            if own_dir:
                shutil.rmtree(box_dir, ignore_errors=True)
            raise
        started = True

    n0 = box.primary("n0")
    direct = {"host": "127.0.0.1", "port": n0.port, "user": box.node_user, "password": box.node_password,
              "db": DIRECT_DB}
    users = {u["name"]: u["password"] for u in box.users}
    if opts.user not in users:
        print(f"bench: user {opts.user!r} is not in {box.config_path}", file=sys.stderr)
        return 1
    via = {"host": "127.0.0.1", "port": box.listen_port, "user": opts.user, "password": users[opts.user],
           "db": "sbtest"}
    sb.run_sql(n0, f"CREATE DATABASE IF NOT EXISTS {DIRECT_DB}")
    env = environment(opts, sb.run_sql(n0, "SELECT VERSION()").strip())

    server: DdmServer | None = None
    relay: subprocess.Popen | None = None
    rows: list[Row] = []
    try:
        if opts.relay:
            opts.relay_port = relay_port = box.listen_port + 100
            relay = subprocess.Popen([sys.executable, str(Path(__file__).with_name("relay.py")), str(relay_port),
                                      "127.0.0.1", str(n0.port)], stdin=subprocess.DEVNULL)
            time.sleep(1.0)
        print(f"preparing {opts.tables} x {opts.table_size} rows directly on n0.{DIRECT_DB}", file=sys.stderr)
        sysbench("oltp_read_write", "cleanup", direct, opts)
        sysbench("oltp_read_write", "prepare", direct, opts)
        if not opts.direct_only:
            config_path = (box.config_path if opts.pipelining is None
                           else pipelining_config(box.config_path, opts.pipelining))
            server = DdmServer(config_path, opts.workers, box.listen_port,
                               os.path.join(box.dir, "bench-ddm-server.log"))
            print("preparing the same through ddm (sbtest)", file=sys.stderr)
            sysbench("oltp_read_write", "cleanup", via, opts)
            sysbench("oltp_read_write", "prepare", via, opts)
        for workload in opts.workloads:
            for ps_mode in opts.ps_modes:
                rounds = [one_round(workload, ps_mode, direct, via, server, relay, opts) for _ in range(opts.rounds)]
                rows.append(rounds[0] if len(rounds) == 1 else median_row(rounds))
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(10)
        if server is not None:
            server.stop()
        if started and own_dir:
            sb.down(box_dir)
            shutil.rmtree(box_dir, ignore_errors=True)

    table = markdown(rows)
    print(f"\n{env}\n\n{table}")
    if opts.record:
        record(table, env, argv)
        print(f"\nappended to {RESULTS}", file=sys.stderr)
    return 0


def one_round(workload: str, ps_mode: str, direct: dict, via: dict, server: DdmServer | None,
              relay: subprocess.Popen | None, opts: argparse.Namespace) -> Row:
    """sysbench straight to the node, then through ddm, then (--relay) through the bare relay."""
    print(f"{workload} ps-mode={ps_mode}: direct ...", file=sys.stderr)
    d = measure(workload, ps_mode, direct, opts)
    v, cpu, sys_q = None, None, None
    if server is not None:
        print(f"{workload} ps-mode={ps_mode}: ddm ...", file=sys.stderr)
        (u0, s0), io_before = cpu_times(server.pid), io_syscalls(server.pid)
        v = measure(workload, ps_mode, via, opts)
        if v.queries:
            u1, s1 = cpu_times(server.pid)
            cpu = (u1 + s1 - u0 - s0) * 1e6 / v.queries
            sys_q = (io_syscalls(server.pid) - io_before) / v.queries
            print(f"  ddm user {(u1 - u0) * 1e6 / v.queries:.1f} us + system {(s1 - s0) * 1e6 / v.queries:.1f}"
                  " us per query", file=sys.stderr)
    relay_cpu, relay_sys = None, None
    if relay is not None:
        print(f"{workload} ps-mode={ps_mode}: bare relay ...", file=sys.stderr)
        (u0, s0), io_before = cpu_times(relay.pid), io_syscalls(relay.pid)
        r = measure(workload, ps_mode, dict(direct, port=opts.relay_port), opts)
        if r.queries:
            u1, s1 = cpu_times(relay.pid)
            relay_cpu = (u1 + s1 - u0 - s0) * 1e6 / r.queries
            print(f"  relay user {(u1 - u0) * 1e6 / r.queries:.1f} us + system "
                  f"{(s1 - s0) * 1e6 / r.queries:.1f} us per query", file=sys.stderr)
            relay_sys = (io_syscalls(relay.pid) - io_before) / r.queries
    return Row(workload, ps_mode, d, v, cpu, relay_cpu, sys_q, relay_sys)


if __name__ == "__main__":
    sys.exit(main())
