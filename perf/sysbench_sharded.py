"""sysbench, unchanged, against sharded logical databases through ddm, with a data check afterwards.

    python perf/sysbench_sharded.py [--time 60] [--threads 8] [--tables 2] [--table-size 10000]
                                    [--layouts 4x8 32x32] [--auto-inc on off] [--workloads ...]
                                    [--sandbox-dir DIR] [--port 25310] [--user ddm_native] [--workers 1]
                                    [--transactions xa local] [--txn-cost 2000]

Starts a 4-node sandbox whose ddm.yaml includes both example layouts (examples/rules/sbtest-4x8.yaml: logical
database `sbtest`, 4 data sources x 8 tables; examples/rules/sbtest-32x32.yaml: `sbtest32`, 32 x 32), starts
`ddm-server` on it, and for every layout and --auto_inc setting: sysbench cleanup, prepare, then each workload for
--time seconds with sysbench's defaults otherwise (prepared statements on). Afterwards, for every logical table,
COUNT(*) and SUM(k) through ddm must equal the sum over the physical tables read directly from the nodes, and every
physical row must sit in the physical table ddm's routing gives for its id. Prints a summary table; exit status 1 if
any run failed (FATAL, a non-zero exit, no queries; with one thread, also any error sysbench ignored and
retried: 1213/1205/1020 are conflicts of concurrent transactions, reported but not failed with several threads)
or any check failed.

--transactions runs everything once per mode (`databases.<db>.transactions`, ddm restarted on the same sandbox in
between: xa = two-phase commit across nodes, local = one COMMIT per node); --txn-cost N then also times N
sequential `BEGIN; UPDATE one row; COMMIT` transactions on one node and N that update a row on each of two nodes
(one client, text protocol), mean and p95 per transaction.

tests/integration/test_sysbench_sharded.py imports this module and runs the same with short durations.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from ddm.tools import sandbox as sb  # noqa: E402

LAYOUTS = {  # name -> (rules file, logical database)
    "4x8": (ROOT / "examples/rules/sbtest-4x8.yaml", "sbtest"),
    "32x32": (ROOT / "examples/rules/sbtest-32x32.yaml", "sbtest32"),
}
WORKLOADS = ("oltp_read_write", "oltp_read_only", "oltp_point_select", "oltp_write_only", "oltp_insert",
             "oltp_delete", "select_random_ranges")


# ------------------------------------------------------------------------------------------------ environment


@dataclass
class Env:
    """A running 4-node sandbox with ddm-server in front of it."""

    dir: str
    box: sb.Sandbox
    port: int
    proc: subprocess.Popen | None = None
    log_path: str = ""
    own_sandbox: bool = True
    user: str = "ddm_native"
    password: str = "ddm"

    def log_tail(self, n: int = 3000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-n:]
        except OSError:
            return ""


def merged_rules(layouts: Iterable[str] = LAYOUTS) -> dict[str, Any]:
    dbs: dict[str, Any] = {}
    for name in layouts:
        dbs.update(sb.read_rules(str(LAYOUTS[name][0]))["databases"])
    return {"databases": dbs}


def _ddm_server_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "ddm-server"
    if exe.exists():
        return [str(exe)]
    if shutil.which("ddm-server"):
        return ["ddm-server"]
    return [sys.executable, "-m", "ddm.process.server_main"]


def _wait_greeting(port: int, timeout: float, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                head = s.recv(5)
                if len(head) == 5 and head[4] == 0x0A:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def start_env(root: str, base_port: int = 25310, workers: int = 1, user: str = "ddm_native",
              layouts: Iterable[str] = LAYOUTS, cross_node_lock_wait: str | None = None,
              transactions: str | None = None, local_copies: bool = False) -> Env:
    """Start (or reuse, when `root` holds a running sandbox) a 4-node sandbox with the layouts' rules, and
    ddm-server on its ddm.yaml (with `server.cross_node_lock_wait` set when given)."""
    own = True
    try:
        box = sb.load(root)
        if not all(sb._is_mariadbd(i.pid) for i in box.instances):
            raise sb.SandboxError("not running")
        own = False
    except (sb.SandboxError, OSError, ValueError, KeyError):
        base = sb.find_free_base(base_port, nodes=4)
        box = sb.up(root, nodes=4, base_port=base, rules=merged_rules(layouts), workers=workers)
    env = Env(dir=root, box=box, port=box.listen_port, own_sandbox=own, user=user)
    env.log_path = os.path.join(root, "sysbench-ddm-server.log")
    config = box.config_path
    if cross_node_lock_wait is not None or transactions is not None or local_copies:
        doc = yaml.safe_load(Path(config).read_text())
        if cross_node_lock_wait is not None:
            doc["server"]["cross_node_lock_wait"] = cross_node_lock_wait
        if transactions is not None:
            for spec in (doc.get("databases") or {}).values():
                if isinstance(spec, dict) and "datasources" in spec and transactions is not None:
                    spec["transactions"] = transactions
        if local_copies:  # <db>_local: the same physical tables with transactions: local (perf/xa_sysbench.py)
            dbs = doc.get("databases") or {}
            for name, spec in list(dbs.items()):
                if isinstance(spec, dict) and "datasources" in spec:
                    dbs[f"{name}_local"] = {**spec, "transactions": "local"}
            for user in doc.get("users") or []:
                if isinstance(user.get("databases"), list):
                    user["databases"] += [f"{d}_local" for d in user["databases"]]
        config = os.path.join(root, "ddm-lockwait.yaml" if transactions is None and not local_copies
                              else f"ddm-{transactions or 'xa-and-local'}.yaml")
        Path(config).write_text(yaml.safe_dump(doc, sort_keys=False))
    py = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    with open(env.log_path, "ab") as log:
        env.proc = subprocess.Popen([*_ddm_server_cmd(), "--config", config, "--workers", str(workers)],
                                    stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": py},
                                    start_new_session=True)
    if not _wait_greeting(env.port, 60, env.proc):
        stop_env(env)
        raise RuntimeError(f"ddm-server did not start on port {env.port}:\n{env.log_tail()}")
    return env


def stop_env(env: Env) -> None:
    proc = env.proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if env.own_sandbox:
        sb.down(env.dir)


# ------------------------------------------------------------------------------------------------ sysbench


@dataclass
class SbRun:
    db: str
    workload: str
    action: str
    auto_inc: bool
    rc: int
    output: str
    seconds: float
    tps: float = 0.0
    qps: float = 0.0
    queries: int = 0
    ignored_errors: int = 0
    reconnects: int = 0
    p95_ms: float = 0.0
    fatal: list[str] = field(default_factory=list)
    threads: int = 1

    @property
    def ok(self) -> bool:
        # sysbench retries and counts as "ignored" only 1213 (deadlock), 1205 (lock wait timeout) and 1020 (record
        # changed): conflicts of concurrent transactions, which one server also reports under several threads; with
        # one thread there is nobody to conflict with, so any of them is a fault.
        conflicts_ok = self.threads > 1
        return self.rc == 0 and not self.fatal and (self.ignored_errors == 0 or conflicts_ok) and (
            self.action != "run" or self.queries > 0)

    def problem(self) -> str:
        why = []
        if self.rc:
            why.append(f"exit status {self.rc}")
        if self.ignored_errors and self.threads == 1:
            why.append(f"{self.ignored_errors} ignored errors with one thread")
        if self.fatal:
            why.append("FATAL")
        if self.action == "run" and not self.queries and not self.rc:
            why.append("no queries")
        return f"{self.db} {self.workload} {self.action} auto_inc={'on' if self.auto_inc else 'off'}: " + \
            ", ".join(why) + "\n" + _interesting(self.output)


def _interesting(out: str, limit: int = 2500) -> str:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if "FATAL" in ln or "ALERT" in ln or "error" in ln.lower()]
    text = "\n".join(fatal[:12]) if fatal else "\n".join(lines[-25:])
    return text[:limit]


def parse(run: SbRun) -> SbRun:
    out = run.output
    m = re.search(r"transactions:\s+(\d+)\s+\(([\d.]+) per sec", out)
    if m:
        run.tps = float(m.group(2))
    m = re.search(r"queries:\s+(\d+)\s+\(([\d.]+) per sec", out)
    if m:
        run.queries, run.qps = int(m.group(1)), float(m.group(2))
    m = re.search(r"ignored errors:\s+(\d+)", out)
    if m:
        run.ignored_errors = int(m.group(1))
    m = re.search(r"reconnects:\s+(\d+)", out)
    if m:
        run.reconnects = int(m.group(1))
    m = re.search(r"95th percentile:\s+([\d.]+)", out)
    if m:
        run.p95_ms = float(m.group(1))
    run.fatal = [ln for ln in out.splitlines() if "FATAL" in ln or "ALERT" in ln]
    return run


def sysbench(env: Env, db: str, workload: str, action: str, *, auto_inc: bool, tables: int, table_size: int,
             threads: int, seconds: float = 0, extra: Sequence[str] = (), timeout: float | None = None) -> SbRun:
    cmd = ["sysbench", workload, "--db-driver=mysql", "--mysql-host=127.0.0.1", f"--mysql-port={env.port}",
           f"--mysql-user={env.user}", f"--mysql-password={env.password}", f"--mysql-db={db}",
           f"--tables={tables}", f"--table-size={table_size}", f"--auto_inc={'on' if auto_inc else 'off'}"]
    if action == "run":
        cmd += [f"--threads={threads}", f"--time={int(seconds)}", "--report-interval=0"]
    elif action == "prepare":
        cmd += [f"--threads={min(threads, tables)}"]
    cmd += [*extra, action]
    t0 = time.monotonic()
    limit = timeout or (seconds * 3 + 120 if action == "run" else 600)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as exc:
        rc = -1
        out = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or ""))
        out += f"\nFATAL: sysbench did not finish within {limit:.0f} s (hung?)"
    return parse(SbRun(db, workload, action, auto_inc, rc, out, time.monotonic() - t0,
                       threads=threads if action == "run" else 1))


# ------------------------------------------------------------------------------------------------ data check


def _ddm_conn(env: Env, db: str):
    import pymysql

    return pymysql.connect(host="127.0.0.1", port=env.port, user=env.user, password=env.password, database=db,
                           autocommit=True, ssl_disabled=True, read_timeout=120)


def _node_conn(env: Env, node: str):
    import pymysql

    inst = env.box.primary(node)
    return pymysql.connect(unix_socket=inst.socket, user=env.box.node_user, password=env.box.node_password,
                           autocommit=True, read_timeout=120)


def check_data(env: Env, db: str, tables: int) -> list[str]:
    """COUNT(*)/SUM(k) of each logical table through ddm vs the sum over its physical tables, and every physical
    row in the table ddm routes its id to. Returns the problems found."""
    from ddm import config as config_mod
    from ddm.sharding import routing

    cfg = config_mod.load(env.box.config_path)
    dbconf = cfg.databases[db]
    problems: list[str] = []
    names = [f"sbtest{i}" for i in range(1, tables + 1)]
    through: dict[str, tuple[int, int]] = {}
    with _ddm_conn(env, db) as c, c.cursor() as cur:
        for name in names:
            try:
                cur.execute(f"SELECT COUNT(*), SUM(k) FROM {name}")
                n, s = cur.fetchone()
                through[name] = (int(n), int(s or 0))
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                problems.append(f"{db}.{name}: COUNT(*)/SUM(k) through ddm failed: {exc}")
    physical = {name: [0, 0] for name in names}
    misplaced: dict[str, list[str]] = {name: [] for name in names}
    conns: dict[str, Any] = {}
    try:
        for ds_name, ds in dbconf.datasources.items():
            parts = []
            for name in names:
                rule = dbconf.rule(name)
                for ti, phys in enumerate(rule.tables.get(ds_name, ())):
                    parts.append(f"SELECT '{name}', {ti}, id, k FROM `{ds.database}`.`{phys}`")
            if not parts:
                continue
            conn = conns.get(ds.node) or conns.setdefault(ds.node, _node_conn(env, ds.node))
            with conn.cursor() as cur:
                cur.execute(" UNION ALL ".join(parts))
                rows = cur.fetchall()
            for name, ti, id_, k in rows:
                acc = physical[name]
                acc[0] += 1
                acc[1] += int(k)
                rule = dbconf.rule(name)
                target = routing.route(rule, {"id": routing.Eq((int(id_),))})
                want = (ds_name, rule.tables[ds_name][ti])
                if len(target) != 1 or (target[0].datasource, target[0].table) != want:
                    if len(misplaced[name]) < 5:
                        misplaced[name].append(f"id {id_} found in {want[0]}.{want[1]}, routes to {target}")
                    else:
                        misplaced[name].append("")
    finally:
        for conn in conns.values():
            conn.close()
    for name in names:
        phys = tuple(physical[name])
        if name in through and through[name] != phys:
            problems.append(f"{db}.{name}: through ddm COUNT(*)={through[name][0]} SUM(k)={through[name][1]}, "
                            f"physical tables COUNT(*)={phys[0]} SUM(k)={phys[1]}")
        if misplaced[name]:
            shown = [m for m in misplaced[name] if m]
            problems.append(f"{db}.{name}: {len(misplaced[name])} rows in the wrong physical table, e.g. "
                            + "; ".join(shown))
    return problems


# ------------------------------------------------------------------------------------------------ suite


@dataclass
class LayoutResult:
    layout: str
    db: str
    auto_inc: bool
    runs: list[SbRun] = field(default_factory=list)
    data_problems: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [r.problem() for r in self.runs if not r.ok] + self.data_problems


def run_layout(env: Env, layout: str, auto_inc: bool, *, seconds: float, threads: int, tables: int,
               table_size: int, workloads: Sequence[str] = WORKLOADS, log=print) -> LayoutResult:
    db = LAYOUTS[layout][1]
    res = LayoutResult(layout, db, auto_inc)
    kw = {"auto_inc": auto_inc, "tables": tables, "table_size": table_size, "threads": threads}
    cleanup = sysbench(env, db, "oltp_read_write", "cleanup", **kw)
    if not cleanup.ok:
        res.runs.append(cleanup)
    prep = sysbench(env, db, "oltp_read_write", "prepare", **kw)
    res.runs.append(prep)
    log(f"  {layout} auto_inc={'on' if auto_inc else 'off'} prepare: {'ok' if prep.ok else 'FAILED'} "
        f"({prep.seconds:.1f} s)")
    if not prep.ok:
        return res
    if not auto_inc and "oltp_insert" in workloads:
        # oltp_insert --auto_inc=off draws its ids from sysbench.rand.unique() over the whole INT range, which
        # meets ids that prepare wrote (1062; the same straight against MariaDB): sysbench's own oltp_insert prepare
        # makes empty tables for that reason (oltp_insert.lua). So it runs last, on tables prepared that way.
        workloads = [w for w in workloads if w != "oltp_insert"] + ["oltp_insert"]
    for w in workloads:
        if w == "oltp_insert" and not auto_inc:
            sysbench(env, db, "oltp_insert", "cleanup", **kw)
            empty = sysbench(env, db, "oltp_insert", "prepare", **kw)
            res.runs.append(empty)
            if not empty.ok:
                continue
        r = sysbench(env, db, w, "run", seconds=seconds, **kw)
        res.runs.append(r)
        log(f"  {layout} auto_inc={'on' if auto_inc else 'off'} {w}: "
            + (f"{r.tps:.1f} tps {r.qps:.1f} qps p95 {r.p95_ms} ms" if r.ok else "FAILED " + r.problem()[:300]))
    res.data_problems = check_data(env, db, tables)
    for p in res.data_problems:
        log(f"  {layout} data check: {p}")
    return res


def summary(results: Sequence[LayoutResult]) -> str:
    head = f"| {'layout':6} | {'auto_inc':8} | {'workload':22} | {'tps':>9} | {'qps':>10} | {'p95 ms':>8} | " \
           f"{'ignored errors (retried conflicts)':>6} | status |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for res in results:
        for r in res.runs:
            if r.action == "cleanup":
                continue
            name = r.workload if r.action == "run" else "prepare" if r.workload == "oltp_read_write" \
                else f"prepare ({r.workload})"
            lines.append(f"| {res.layout:6} | {'on' if res.auto_inc else 'off':8} | {name:22} | {r.tps:9.1f} | "
                         f"{r.qps:10.1f} | {r.p95_ms:8.2f} | {r.ignored_errors:6d} | "
                         f"{'ok' if r.ok else 'FAIL':6} |")
        lines.append(f"| {res.layout:6} | {'on' if res.auto_inc else 'off':8} | {'data check':22} | {'':9} | "
                     f"{'':10} | {'':8} | {len(res.data_problems):6d} | "
                     f"{'ok' if not res.data_problems else 'FAIL':6} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--time", type=float, default=60, help="seconds per workload (default 60)")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--tables", type=int, default=2)
    p.add_argument("--table-size", type=int, default=10000)
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    p.add_argument("--auto-inc", nargs="+", default=["on", "off"], choices=["on", "off"])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    p.add_argument("--sandbox-dir", help="reuse the sandbox running there (or start one there and keep it)")
    p.add_argument("--port", type=int, default=25310, help="first sandbox base port to try")
    p.add_argument("--user", default="ddm_native",
                   help="ddm user (ddm_native = ddm: mysql_native_password; ddm_sha2: caching_sha2_password)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cross-node-lock-wait", help="server.cross_node_lock_wait for this run (e.g. 0 = off, 2s)")
    p.add_argument("--transactions", nargs="+", choices=["xa", "local"],
                   help="run once per mode (databases.<db>.transactions); default: the config's (xa)")
    p.add_argument("--txn-cost", type=int, default=0, help="also time N one-node and N two-node transactions")
    return p.parse_args(argv)


def txn_cost(env: Env, db: str, n: int) -> str:
    """Mean / p95 ms of n sequential one-node and n two-node write transactions (sbtest1, ids of the 4x8 layout:
    data source = id % 4)."""
    c = _ddm_conn(env, db)
    out = []
    try:
        with c.cursor() as cur:
            for label, ids in (("one node", (4,)), ("two nodes", (4, 5))):
                times = []
                for i in range(n + 50):
                    base = 4 * 8 * (i % 100)
                    t0 = time.perf_counter()
                    cur.execute("BEGIN")
                    for x in ids:
                        cur.execute(f"UPDATE sbtest1 SET k = k + 1 WHERE id = {base + x}")
                    cur.execute("COMMIT")
                    if i >= 50:  # warm-up
                        times.append(time.perf_counter() - t0)
                times.sort()
                out.append(f"{label}: mean {1000 * sum(times) / len(times):.3f} ms, "
                           f"p95 {1000 * times[int(len(times) * 0.95)]:.3f} ms ({n} transactions)")
    finally:
        c.close()
    return "; ".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if not shutil.which("sysbench"):
        print("sysbench is not installed", file=sys.stderr)
        return 2
    root = opts.sandbox_dir or tempfile.mkdtemp(prefix="ddm-sysbench-")
    results = []
    costs = []
    modes = opts.transactions or [None]
    try:
        for mode in modes:
            env = start_env(root, opts.port, opts.workers, opts.user, opts.layouts, opts.cross_node_lock_wait, mode)
            env.own_sandbox = False  # stopped below, after every mode
            try:
                for layout in opts.layouts:
                    for ai in opts.auto_inc:
                        res = run_layout(env, layout, ai == "on", seconds=opts.time, threads=opts.threads,
                                         tables=opts.tables, table_size=opts.table_size, workloads=opts.workloads)
                        if mode is not None:
                            res.layout = f"{layout} {mode}"
                        results.append(res)
                    if opts.txn_cost and layout == "4x8":
                        costs.append(f"{mode or 'default'}: {txn_cost(env, LAYOUTS[layout][1], opts.txn_cost)}")
                        print("  txn cost", costs[-1])
            finally:
                stop_env(env)
    finally:
        if not opts.sandbox_dir:
            sb.down(root)
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"sysbench {opts.time:.0f} s per workload, {opts.threads} threads, {opts.tables} tables x "
          f"{opts.table_size} rows, user {opts.user}, ddm workers {opts.workers}")
    print(summary(results))
    for line in costs:
        print("transaction cost", line)
    problems = [p for r in results for p in r.problems()]
    if problems:
        print(f"\n{len(problems)} problems:")
        for p in problems:
            print("-", p)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
