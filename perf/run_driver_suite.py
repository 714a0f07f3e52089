"""Run a MySQL client driver's own test suite against a server and print the outcome of every test as JSON.

    python perf/run_driver_suite.py --port 3307 --user ddm --password ddm --db drv1 --db2 drv2 [--out FILE]
    python perf/run_driver_suite.py --driver mysqlclient --port 3307 --user ddm --password ddm --db drv1

Run it once against MariaDB directly and once through ddm, then compare the failure sets (tests/integration/
test_driver_suites.py does exactly that).

--driver pymysql (the default) is PyMySQL. Its current sdists ship only tests/test_auth.py (MySQL 8 accounts
that MariaDB has no plugins for); its real suite (pymysql/tests: basic, connection, cursor, SSCursor, DictCursor,
nextset, issues, load_local, the MySQLdb DB-API 2.0 and capabilities suites) was last shipped in the PyMySQL 0.9.3
sdist, so that is what this runs, with the 0.9.3 driver itself. It needs `unittest2`, which is replaced by a shim
over `unittest`.

--driver mysqlclient is the C driver `MySQLdb`: the tests/ of the mysqlclient 2.3.2 sdist (capabilities, DB-API 2.0,
nonstandard, times, _mysql, connection, cursor, errors; not test_sqlalchemy.py, which tests SQLAlchemy) run against
the mysqlclient installed in this Python (a test dependency: scripts/setup.sh builds it against libmariadb-dev). It
needs one database; its configdb.py reads the option file named by $TESTDB, group [MySQLdb-tests].

The sdist is fetched once with `pip download` into --cache (default ~/.cache/ddm-driver-suites).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

PACKAGE = "PyMySQL"
VERSION = "0.9.3"
MYSQLCLIENT_PACKAGE = "mysqlclient"
MYSQLCLIENT_VERSION = "2.3.2"
MYSQLCLIENT_TESTS = ["test_MySQLdb_capabilities.py", "test_MySQLdb_dbapi20.py", "test_MySQLdb_nonstandard.py",
                     "test_MySQLdb_times.py", "test__mysql.py", "test_connection.py", "test_cursor.py",
                     "test_errors.py"]
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ddm-driver-suites"


class SuiteUnavailable(RuntimeError):
    """The suite cannot be obtained (no network, no such sdist)."""


def _sdist(cache: Path, package: str, version: str, pattern: str) -> Path:
    """The sdist tarball in `cache` matching `pattern` (a glob), downloaded on first use."""
    sdists = list(cache.glob(pattern))
    if not sdists:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                              "--disable-pip-version-check", "-q", "-d", str(cache), f"{package}=={version}"],
                             capture_output=True, text=True, timeout=120)
        sdists = list(cache.glob(pattern))
        if res.returncode != 0 or not sdists:
            raise SuiteUnavailable(f"pip download {package}=={version} failed: {res.stderr.strip()[-500:]}")
    return sdists[0]


def fetch(cache: Path) -> Path:
    """The extracted sdist directory (downloaded on first use)."""
    cache.mkdir(parents=True, exist_ok=True)
    src = cache / f"{PACKAGE}-{VERSION}"
    if (src / "pymysql" / "tests" / "base.py").exists():
        return src
    sdist = _sdist(cache, PACKAGE, VERSION, f"[Pp]y[Mm]y[Ss][Qq][Ll]-{VERSION}.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(cache, filter="data")
    if not (src / "pymysql" / "tests" / "base.py").exists():
        raise SuiteUnavailable(f"{sdist.name} holds no pymysql/tests")
    return src


def fetch_mysqlclient(cache: Path) -> Path:
    """The extracted mysqlclient sdist directory (downloaded on first use)."""
    cache.mkdir(parents=True, exist_ok=True)
    src = cache / f"{MYSQLCLIENT_PACKAGE}-{MYSQLCLIENT_VERSION}"
    if (src / "tests" / "configdb.py").exists():
        return src
    sdist = _sdist(cache, MYSQLCLIENT_PACKAGE, MYSQLCLIENT_VERSION, f"mysqlclient-{MYSQLCLIENT_VERSION}.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(cache, filter="data")
    if not (src / "tests" / "configdb.py").exists():
        raise SuiteUnavailable(f"{sdist.name} holds no tests/configdb.py")
    return src


def run(src: Path, host: str, port: int, user: str, password: str, db: str, db2: str,
        timeout: float = 170.0, extra: list[str] | None = None) -> dict[str, str]:
    """Run the suite; {test id: "passed" | "failed" | "error" | "skipped"}."""
    with tempfile.TemporaryDirectory(prefix="drvsuite-") as tmp:
        work = Path(tmp) / "suite"
        # a private copy: databases.json lives inside the package and concurrent runs must not share it
        subprocess.run(["cp", "-r", str(src), str(work)], check=True)
        (Path(tmp) / "unittest2.py").write_text("from unittest import *  # noqa: F403\n"
                                                "from unittest import main, skipIf, skipUnless, SkipTest\n")
        # LOAD DATA LOCAL inputs the sdist lacks: the sizes and warnings test_load_local expects
        data = work / "pymysql" / "tests" / "data"
        data.mkdir(exist_ok=True)
        (data / "load_local_data.txt").write_text("1,2\n" * 22749)
        (data / "load_local_warn_data.txt").write_text("1,2\n2,3\nx,4\n5,6\n")
        common = {"host": host, "port": port, "user": user, "passwd": password}
        dbs = [{**common, "db": db, "use_unicode": True, "local_infile": True}, {**common, "db": db2}]
        (work / "pymysql" / "tests" / "databases.json").write_text(json.dumps(dbs))
        junit = Path(tmp) / "junit.xml"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work), tmp]), "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("PYTEST_ADDOPTS", None)
        cmd = [sys.executable, "-m", "pytest", "pymysql/tests", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
               "-W", "ignore", f"--junitxml={junit}", "-o", "junit_family=xunit2", *(extra or [])]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        if not junit.exists():
            raise RuntimeError(f"the suite did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return parse_junit(junit)


def run_mysqlclient(src: Path, host: str, port: int, user: str, password: str, db: str,
                    timeout: float = 170.0, extra: list[str] | None = None) -> dict[str, str]:
    """Run mysqlclient's suite with the installed MySQLdb; {test id: "passed" | "failed" | "error" | "skipped"}."""
    with tempfile.TemporaryDirectory(prefix="drvsuite-") as tmp:
        work = Path(tmp) / "tests"
        subprocess.run(["cp", "-r", str(src / "tests"), str(work)], check=True)
        # configdb.py joins $TESTDB to its own directory: an absolute path is used as it is
        cnf = Path(tmp) / "ddm-tests.cnf"
        cnf.write_text(f"[MySQLdb-tests]\nhost = {host}\nport = {port}\nuser = {user}\npassword = {password}\n"
                       f"database = {db}\ndefault-character-set = utf8mb4\n")
        junit = Path(tmp) / "junit.xml"
        env = {**os.environ, "TESTDB": str(cnf), "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("PYTEST_ADDOPTS", None)
        cmd = [sys.executable, "-m", "pytest", *MYSQLCLIENT_TESTS, "-q", "-p", "no:cacheprovider", "-p",
               "no:randomly", "-W", "ignore", f"--junitxml={junit}", "-o", "junit_family=xunit2", *(extra or [])]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        if not junit.exists():
            raise RuntimeError(f"the suite did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return parse_junit(junit)


def parse_junit(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = {"failure": "failed"}.get(child.tag, child.tag)
                out[name + "#message"] = (child.get("message") or "")[:300]
        out[name] = status
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--driver", choices=("pymysql", "mysqlclient"), default="pymysql")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--db", required=True)
    p.add_argument("--db2", help="the second database (pymysql only, which requires it)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.driver == "pymysql" and not args.db2:
        p.error("--driver pymysql needs --db2")
    try:
        src = (fetch if args.driver == "pymysql" else fetch_mysqlclient)(args.cache)
    except SuiteUnavailable as e:
        print(f"suite unavailable: {e}", file=sys.stderr)
        return 2
    if args.driver == "pymysql":
        result = run(src, args.host, args.port, args.user, args.password, args.db, args.db2)
    else:
        result = run_mysqlclient(src, args.host, args.port, args.user, args.password, args.db)
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    bad = sorted(k for k, v in result.items() if v in ("failed", "error") and "#" not in k)
    print(f"{sum(v == 'passed' for v in result.values())} passed, {len(bad)} failed/error", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
