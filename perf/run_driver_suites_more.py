"""Node's mysql2 and MariaDB Connector/C's own test suites, directly against a sandbox data node and through ddm.

    python perf/run_driver_suites_more.py --mysql2 /tmp/node-mysql2 --connector-c /tmp/mcc [--out FILE.json]

Starts a 1-node sandbox (`ddm.tools.sandbox`, a free base port) whose ddm.yaml gains the pass-through database
`test` (physical `test` on n0, the database both suites use by default), starts `ddm-server` on it, and runs each
suite twice: with its connection settings pointing at n0 (user `ddm_node`, which has ALL PRIVILEGES WITH GRANT
OPTION on the node: root-like) and then at ddm as `--ddm-user`: `ddm_all` (added to the sandbox's ddm.yaml with
`databases: "*"`, `privileges: all`: the node account's rights, as ddm allows them) or `ddm` (no privileges beyond
its databases' tables: the suites' FLUSH, CREATE USER, mysql.* reads are refused). The database `test` is dropped and created again
before each run. Prints per-suite pass/fail counts and every test whose outcome differs; `--out` writes every
outcome as JSON.

--mysql2 PATH: a checkout of sidorares/node-mysql2 with its node_modules installed (`npm ci`). Its tests are
TypeScript files of `poku` tests; a test here is one file (poku's unit), run as `node_modules/.bin/tsx FILE`
(`poku FILE` would apply poku.config.js and run the whole suite) with
MYSQL_HOST/MYSQL_PORT/MYSQL_USER/MYSQL_PASSWORD/MYSQL_DATABASE and CI=1 (without CI the suite ignores
MYSQL_PASSWORD). test/integration and test/global (the files poku runs only for a user that may SET GLOBAL) run;
test/unit needs no server and is left out. Exit status 0 = passed.

--connector-c PATH: a checkout of mariadb-corporation/mariadb-connector-c; built in PATH/build with cmake
-DWITH_UNIT_TESTS=ON when PATH/build/unittest/libmariadb holds no test programs yet. Each program is a TAP test
(MARIADB_CC_TEST=1, MYSQL_TEST_HOST/PORT/USER/PASSWD/DB), run one at a time (they share table names); a test here is one TAP line, `program::name`, "skipped"
for `# skip`, and a planned test never reported (the program crashed or timed out) counts as failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from ddm.tools import sandbox as sb

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (perf/bench.py: DdmServer, the ddm-server a benchmark starts)

DATABASE = "test"
ALL_USER = "ddm_all"


# ------------------------------------------------------------------------------------------------ mysql2


def mysql2_files(src: Path, sub: str) -> list[str]:
    return sorted(str(p.relative_to(src)) for p in (src / sub).rglob("*.test.*"))


def run_mysql2(src: Path, host: str, port: int, user: str, password: str, db: str, jobs: int,
               timeout: float) -> dict[str, str]:
    """{file: "passed" | "failed"}, plus "file#message" (the output's tail) for failures."""
    tsx = src / "node_modules" / ".bin" / "tsx"
    if not tsx.exists():
        raise SystemExit(f"{tsx} missing: run `npm ci` in {src}")
    env = {**os.environ, "MYSQL_HOST": host, "MYSQL_PORT": str(port), "MYSQL_USER": user,
           "MYSQL_PASSWORD": password, "MYSQL_DATABASE": db, "CI": "1", "NO_COLOR": "1", "FORCE_COLOR": "0"}

    def one(f: str) -> tuple[str, str, str]:
        # tsx runs node as a child: on a timeout the whole process group is killed (a surviving node would keep
        # the output pipes open and the wait would never end)
        p = subprocess.Popen([str(tsx), f], cwd=src, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, errors="replace", start_new_session=True)
        try:
            out, _ = p.communicate(timeout=timeout)
            return f, "passed" if p.returncode == 0 else "failed", out[-1500:]
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
            return f, "failed", f"timeout after {timeout} s: " + out[-1000:]

    out: dict[str, str] = {}
    # test/global changes server globals: one file at a time after the others, as poku.config.js runs them
    for sub, n in (("test/integration", jobs), ("test/global", 1)):
        with ThreadPoolExecutor(n) as ex:
            for f, status, text in ex.map(one, mysql2_files(src, sub)):
                out[f] = status
                if status != "passed":
                    out[f + "#message"] = text
    return out


# ------------------------------------------------------------------------------------------------ Connector/C

_TAP = re.compile(r"^(not ok|ok)\s+(\d+)\s*-?\s*(.*?)\s*(#\s*(skip|SKIP|todo|TODO).*)?$")
_PLAN = re.compile(r"^1\.\.(\d+)")


def connector_c_build(src: Path) -> Path:
    """The built test programs' directory. Built with DEFAULT_SSL_VERIFY_SERVER_CERT=OFF: with the default (ON),
    libmariadb 3.4 refuses every connection to a server without TLS ("SSL is required, but the server does not
    support it"), and the sandbox's nodes have no TLS."""
    tests = src / "build" / "unittest" / "libmariadb"
    cache = src / "build" / "CMakeCache.txt"
    if not (tests / "basic-t").exists() or not re.search(r"^DEFAULT_SSL_VERIFY_SERVER_CERT:\w+=OFF$", cache.read_text(), re.M):
        (src / "build").mkdir(exist_ok=True)
        subprocess.run(["cmake", "..", "-DWITH_UNIT_TESTS=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                        "-DWITH_EXTERNAL_ZLIB=ON", "-DDEFAULT_SSL_VERIFY_SERVER_CERT=OFF"], cwd=src / "build", check=True)
        subprocess.run(["make", "-j2"], cwd=src / "build", check=True)
    return tests


def connector_c_programs(tests: Path) -> list[Path]:
    return sorted(p for p in tests.iterdir() if p.is_file() and os.access(p, os.X_OK) and p.suffix == ""
                  and not p.name.startswith("CMake"))


def parse_tap(prog: str, text: str, crashed: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    plan = 0
    seen: set[int] = set()
    for line in text.splitlines():
        if m := _PLAN.match(line):
            plan = int(m.group(1))
            continue
        m = _TAP.match(line)
        if not m:
            continue
        num = int(m.group(2))
        seen.add(num)
        name = f"{prog}::{num:03d}"
        if m.group(3):
            out[name + "#name"] = m.group(3)
        if m.group(4):
            out[name] = "skipped"
        else:
            out[name] = "passed" if m.group(1) == "ok" else "failed"
    for num in range(1, plan + 1):
        if num not in seen:
            out[f"{prog}::{num:03d}"] = "failed"
            out[f"{prog}::{num:03d}#message"] = crashed or "not reported (no TAP line)"
    return out


def run_connector_c(tests: Path, host: str, port: int, user: str, password: str, db: str, jobs: int,
                    timeout: float) -> dict[str, str]:
    env = {**os.environ, "MARIADB_CC_TEST": "1", "MYSQL_TEST_HOST": host, "MYSQL_TEST_PORT": str(port),
           "MYSQL_TEST_USER": user, "MYSQL_TEST_PASSWD": password, "MYSQL_TEST_DB": db}
    for k in ("MYSQL_TEST_SOCKET", "MASTER_MYSOCK", "MYSQL_TEST_TLS", "TRAVIS_JOB_ID", "srv"):
        env.pop(k, None)

    def one(prog: Path) -> dict[str, str]:
        crashed = None
        try:
            p = subprocess.run([str(prog)], cwd=tests, env=env, capture_output=True, text=True, timeout=timeout,
                               errors="replace")
            text = p.stdout
            if p.returncode < 0:
                crashed = f"killed by signal {-p.returncode}"
        except subprocess.TimeoutExpired as e:
            text = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            crashed = f"timeout after {timeout} s"
        res = parse_tap(prog.name, text, crashed)
        # the diagnostics before each failing line: the error the test printed
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("not ok"):
                m = _TAP.match(line)
                if m:
                    key = f"{prog.name}::{int(m.group(2)):03d}"
                    diag = [x for x in lines[max(0, i - 4):i] if x.startswith("#")]
                    res[key + "#message"] = " | ".join(diag)[-400:]
        return res

    out: dict[str, str] = {}
    with ThreadPoolExecutor(jobs) as ex:
        for res in ex.map(one, connector_c_programs(tests)):
            out.update(res)
    return out


# ------------------------------------------------------------------------------------------------ report


def counts(res: dict[str, str]) -> tuple[int, int, int]:
    vals = [v for k, v in res.items() if "#" not in k]
    return (vals.count("passed"), sum(v == "failed" or v == "error" for v in vals), vals.count("skipped"))


def differences(direct: dict[str, str], via: dict[str, str]) -> list[tuple[str, str, str, str]]:
    keys = sorted({k for k in direct if "#" not in k} | {k for k in via if "#" not in k})
    return [(k, direct.get(k, "-"), via.get(k, "-"), via.get(k + "#message", "")) for k in keys
            if direct.get(k, "-") != via.get(k, "-")]


def report(name: str, direct: dict[str, str], via: dict[str, str]) -> str:
    d, v = counts(direct), counts(via)
    lines = [f"## {name}", f"direct: {d[0]} passed, {d[1]} failed, {d[2]} skipped",
             f"ddm:    {v[0]} passed, {v[1]} failed, {v[2]} skipped", "outcome differs:"]
    for k, a, b, msg in differences(direct, via):
        k = f"{k} {direct.get(k + '#name') or via.get(k + '#name') or ''}".rstrip()
        lines.append(f"  {k}: direct {a}, ddm {b}" + (f"  [{msg.strip().splitlines()[-1][:200]}]" if msg.strip()
                                                          else ""))
    return "\n".join(lines)


def recreate_db(node: sb.Instance) -> None:
    sb.run_sql(node, f"DROP DATABASE IF EXISTS `{DATABASE}`; CREATE DATABASE `{DATABASE}`;")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mysql2", type=Path, help="checkout of node-mysql2 (npm ci done)")
    p.add_argument("--connector-c", type=Path, help="checkout of mariadb-connector-c")
    p.add_argument("--port", type=int, default=14310, help="sandbox base port (the first free one from here)")
    p.add_argument("--jobs", type=int, default=2, help="test files / programs run at once")
    p.add_argument("--timeout", type=float, default=60.0, help="per test file / program")
    p.add_argument("--ddm-user", default=ALL_USER,
                   help=f"user through ddm: {ALL_USER} (privileges: all, like the node account) or ddm (none)")
    p.add_argument("--keep", metavar="DIR", help="sandbox directory, left running (default: a temporary one)")

    p.add_argument("--out", help="write every outcome as JSON")
    args = p.parse_args(argv)
    if not args.mysql2 and not args.connector_c:
        p.error("give --mysql2 PATH and/or --connector-c PATH")
    cc_tests = connector_c_build(args.connector_c.resolve()) if args.connector_c else None

    tmp = None if args.keep else tempfile.mkdtemp(prefix="ddm-drvsuites-")
    box_dir = args.keep or tmp
    base = sb.find_free_base(args.port, 1)
    box = sb.up(box_dir, nodes=1, base_port=base, rules={"databases": {DATABASE: {"node": "n0"}}})
    node = box.primary("n0")
    ddm_port = box.listen_port
    cfg_path = os.path.join(box_dir, "ddm.yaml")
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)
    # the node-account-like user: every logical database, every privilege (not checked by ddm at all)
    cfg["users"].append({"name": ALL_USER, "password": "ddm", "auth_plugin": "mysql_native_password",
                         "databases": "*", "privileges": "all"})
    with open(cfg_path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    server = bench.DdmServer(os.path.join(box_dir, "ddm.yaml"), 1, ddm_port, os.path.join(box_dir, "ddm-server.log"))
    results: dict[str, dict[str, dict[str, str]]] = {}
    try:
        targets = [("direct", node.port, sb.NODE_USER, sb.NODE_PASSWORD), ("ddm", ddm_port, args.ddm_user, "ddm")]
        for suite, path in (("mysql2", args.mysql2), ("connector-c", args.connector_c)):
            if not path:
                continue
            for label, port, user, pw in targets:
                recreate_db(node)
                t0 = time.monotonic()
                if suite == "mysql2":
                    res = run_mysql2(path.resolve(), "127.0.0.1", port, user, pw, DATABASE, args.jobs, args.timeout)
                else:
                    # one program at a time: the programs share table names (t1, ...) in the one database
                    res = run_connector_c(cc_tests, "127.0.0.1", port, user, pw, DATABASE, 1, args.timeout)
                print(f"{suite} {label}: {counts(res)} (passed, failed, skipped) in {time.monotonic() - t0:.0f} s",
                      file=sys.stderr, flush=True)
                results.setdefault(suite, {})[label] = res
            print(report(suite, results[suite]["direct"], results[suite]["ddm"]), flush=True)
    finally:
        server.stop()
        if tmp:
            sb.down(box_dir)
            shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
