"""JDBC through ddm: MariaDB Connector/J (Debian's libmariadb-java) runs the same JDBC probe
(tests/integration/jdbc/JdbcProbe.java: inserts with generated keys, batches, server-side prepared statements, types
and result-set metadata, errors with their codes and SQLSTATEs, transactions and savepoints, a streaming result set,
multi-results, session variables, DatabaseMetaData, a query timeout) straight against MariaDB and through ddm; the
printed lines must be the same. Skipped when Java or the driver is missing, except under CI=true."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import query_all

pytestmark = pytest.mark.integration

PROBE = Path(__file__).with_name("jdbc") / "JdbcProbe.java"
DRIVER = Path("/usr/share/java/mariadb-java-client.jar")
DIRECT_DB = "jdbc_direct"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (shutil.which("javac") and shutil.which("java") and DRIVER.exists()):
        if os.environ.get("CI") == "true":
            pytest.fail(f"java, javac or {DRIVER} missing (scripts/setup.sh installs libmariadb-java and a JDK)")
        pytest.skip(f"java, javac or {DRIVER} missing (scripts/setup.sh installs libmariadb-java and a JDK)")
    out = tmp_path_factory.mktemp("jdbc")
    subprocess.run(["javac", "-d", str(out), "-cp", str(DRIVER), str(PROBE)], check=True, timeout=180)
    return out


def _run(probe: Path, url: str, user: str, password: str) -> list[str]:
    p = subprocess.run(["java", "-cp", f"{DRIVER}:{probe}", "JdbcProbe", url, user, password],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p.stdout.splitlines()


@pytest.mark.parametrize("options,user", [
    ("allowMultiQueries=true", "native"),  # client-side prepared statements (text protocol)
    ("allowMultiQueries=true&useServerPrepStmts=true", "native"),  # COM_STMT_PREPARE / EXECUTE
    ("allowMultiQueries=true&allowPublicKeyRetrieval=true", "ddm"),  # caching_sha2_password, RSA key over plain TCP
])
def test_jdbc_probe_reads_the_same_through_ddm(probe: Path, ddm_proc, node0, options: str, user: str) -> None:
    with pymysql.connect(host="127.0.0.1", port=node0.port, user=node0.user, password=node0.password) as c:
        query_all(c, f"CREATE DATABASE IF NOT EXISTS {DIRECT_DB}")
    direct = _run(probe, f"jdbc:mariadb://127.0.0.1:{node0.port}/{DIRECT_DB}?{options}", node0.user, node0.password)
    password = {"native": "nativepw", "ddm": "ddm"}[user]
    via = _run(probe, f"jdbc:mariadb://127.0.0.1:{ddm_proc.port}/jdbc?{options}&useSsl=false", user, password)
    assert len(direct) > 25 and direct[-1] == "valid at end: true", direct
    assert via == direct
