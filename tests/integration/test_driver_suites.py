"""A client driver's own test suite through ddm: PyMySQL's suite and mysqlclient's (the C driver MySQLdb; see
perf/run_driver_suite.py for which ones and why) run once against MariaDB directly and once through ddm; ddm must
add no failures beyond KNOWN_DIFFERENCES (PyMySQL) and MYSQLCLIENT_KNOWN_DIFFERENCES."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import query_all

pytestmark = pytest.mark.integration

_RUNNER = Path(__file__).resolve().parents[2] / "perf" / "run_driver_suite.py"
_spec = importlib.util.spec_from_file_location("run_driver_suite", _RUNNER)
suite = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = suite
_spec.loader.exec_module(suite)

P = "pymysql.tests."
# Failures through ddm only, each understood (and reported); a fixed one must be removed from here.
KNOWN_DIFFERENCES = {
    P + "test_issues.TestOldIssues::test_issue_6": "database `mysql` is not a logical database of ddm",
    P + "test_connection.TestAuthentication::test_plugin":
        "reads mysql.user: a system schema, refused (1142) to a user without the system_schemas privilege",
}
# The same for mysqlclient's suite, test ids "module::test" or "module.Class::test" (none known: the four `test_literal_set_escaping[...-
# NO_BACKSLASH_ESCAPES-...]` cases it found were a ddm bug, the status flag missing from replies ddm builds itself).
MYSQLCLIENT_KNOWN_DIFFERENCES: dict[str, str] = {}


def _failed(result: dict[str, str]) -> set[str]:
    return {k for k, v in result.items() if v in ("failed", "error") and "#" not in k}


def _compare(direct: dict[str, str], via: dict[str, str], known: dict[str, str], minimum: int) -> None:
    passed = sum(v == "passed" for v in direct.values())
    assert passed > minimum, f"the suite barely ran against MariaDB directly: {direct}"
    assert {k for k in direct if "#" not in k} == {k for k in via if "#" not in k}
    new = _failed(via) - _failed(direct)
    unexpected = {t: via.get(t + "#message", "") for t in sorted(new - known.keys())}
    assert not unexpected, f"ddm adds failures: {unexpected}"
    fixed = sorted(t for t in known if t not in new)
    assert not fixed, f"known differences that no longer happen (remove them from the known differences): {fixed}"


def test_pymysql_suite_through_ddm_adds_no_failures(ddm_proc, node0):
    try:
        src = suite.fetch(suite.DEFAULT_CACHE)
    except suite.SuiteUnavailable as exc:
        pytest.skip(f"PyMySQL's test suite cannot be obtained: {exc}")
    with pymysql.connect(host="127.0.0.1", port=node0.port, user=node0.user, password=node0.password) as c:
        for db in ("drvd1", "drvd2"):
            query_all(c, f"CREATE DATABASE IF NOT EXISTS {db}")
    direct = suite.run(src, "127.0.0.1", node0.port, node0.user, node0.password, "drvd1", "drvd2")
    via = suite.run(src, "127.0.0.1", ddm_proc.port, "ddm", "ddm", "drv1", "drv2")
    _compare(direct, via, KNOWN_DIFFERENCES, 100)


def test_mysqlclient_suite_through_ddm_adds_no_failures(ddm_proc, node0):
    if importlib.util.find_spec("MySQLdb") is None:
        pytest.skip("mysqlclient is not installed (scripts/setup.sh builds it; needs libmariadb-dev, pkg-config)")
    try:
        src = suite.fetch_mysqlclient(suite.DEFAULT_CACHE)
    except suite.SuiteUnavailable as exc:
        pytest.skip(f"mysqlclient's test suite cannot be obtained: {exc}")
    with pymysql.connect(host="127.0.0.1", port=node0.port, user=node0.user, password=node0.password) as c:
        query_all(c, "CREATE DATABASE IF NOT EXISTS drvmc")
    direct = suite.run_mysqlclient(src, "127.0.0.1", node0.port, node0.user, node0.password, "drvmc")
    # drv2: the PyMySQL suite's second database, where it creates nothing that this suite's tables could meet
    via = suite.run_mysqlclient(src, "127.0.0.1", ddm_proc.port, "ddm", "ddm", "drv2")
    _compare(direct, via, MYSQLCLIENT_KNOWN_DIFFERENCES, 150)
