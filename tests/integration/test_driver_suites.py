"""A client driver's own test suite through ddm: PyMySQL's suite (see perf/run_driver_suite.py for which one and
why) runs once against MariaDB directly and once through ddm; ddm must add no failures beyond KNOWN_DIFFERENCES."""

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
    P + "test_connection.TestConnection::test_connection_gone_away":
        "wait_timeout applies to pooled data-node connections, not to the client's connection to ddm",
    P + "test_issues.TestOldIssues::test_issue_6": "database `mysql` is not a logical database of ddm",
}


def _failed(result: dict[str, str]) -> set[str]:
    return {k for k, v in result.items() if v in ("failed", "error") and "#" not in k}


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
    passed = sum(v == "passed" for v in direct.values())
    assert passed > 100, f"the suite barely ran against MariaDB directly: {direct}"
    assert {k for k in direct if "#" not in k} == {k for k in via if "#" not in k}
    new = _failed(via) - _failed(direct)
    unexpected = {t: via.get(t + "#message", "") for t in sorted(new - KNOWN_DIFFERENCES.keys())}
    assert not unexpected, f"ddm adds failures: {unexpected}"
    fixed = sorted(t for t in KNOWN_DIFFERENCES if t not in new)
    assert not fixed, f"known differences that no longer happen (remove them from KNOWN_DIFFERENCES): {fixed}"
