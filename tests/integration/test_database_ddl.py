"""CREATE / DROP DATABASE (SCHEMA) through ddm are refused with an error that says how to add or remove a logical
database, in every kind of session and for text and prepared statements, and nothing reaches a data node.

Before, `CREATE DATABASE newdb` on a pass-through session answered OK (the node made `newdb`) and `USE newdb` then
answered 1049 Unknown database: ddm's logical databases are its configuration, not the node's databases.
"""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import (
    DDM,
    NO_TLS,
    Node,
    RawClient,
    ServerError,
    ddm_config,
    free_port,
    query_all,
    start_ddm,
    two_level_database,
)

pytestmark = pytest.mark.integration

STATEMENTS = [
    "CREATE DATABASE ddl_newdb",
    "CREATE DATABASE IF NOT EXISTS ddl_newdb",
    "create schema ddl_newdb",
    "CREATE OR REPLACE DATABASE ddl_newdb",
    "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `ddl_newdb` /*!40100 DEFAULT CHARACTER SET utf8mb4 */",
    "/* a comment */ CREATE DATABASE ddl_newdb",
    "CREATE DATABASE ddlpt",  # a configured logical database
    "DROP DATABASE ddlpt",
    "DROP SCHEMA IF EXISTS ddlsh",
    "DROP DATABASE IF EXISTS ddl_pt_phys",  # a physical database: not dropped either
    "drop database `ddl_sh_0`",
]
SESSIONS = [None, "ddlpt", "ddlsh"]  # no database, pass-through, sharded


@pytest.fixture(scope="module")
def ddm_ddl(node0: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DDM]:
    with pymysql.connect(host="127.0.0.1", port=node0.port, user=node0.user, password=node0.password) as c:
        query_all(c, "DROP DATABASE IF EXISTS ddl_newdb")
        for db in ("ddl_pt_phys", "ddl_sh_0", "ddl_sh_1"):
            query_all(c, f"CREATE DATABASE IF NOT EXISTS {db}")
    dbs = {"ddlpt": {"node": "n0", "database": "ddl_pt_phys"},
           "ddlsh": two_level_database(["n0", "n0"], "ddl_sh", "t", "id")}
    d = start_ddm(tmp_path_factory.mktemp("ddm-ddl"), ddm_config(free_port(), {"n0": node0.conf()}, dbs),
                  mode="thread")
    try:
        yield d
    finally:
        d.stop()


def _node_databases(node0: Node) -> set[str]:
    with pymysql.connect(host="127.0.0.1", port=node0.port, user=node0.user, password=node0.password) as c:
        return {r[0] for r in query_all(c, "SHOW DATABASES")}


def _assert_refusal(code: int, message: str, sql: str) -> None:
    assert code == 1235, (sql, code, message)
    assert "databases:" in message and "ddm reload" in message, message
    word = "CREATE" if "create" in sql.lower() else "DROP"
    assert f"'{word} " in message, message


@pytest.mark.parametrize("session_db", SESSIONS, ids=["no-db", "passthrough", "sharded"])
def test_create_drop_database_refused_as_text(ddm_ddl: DDM, node0: Node, session_db: str | None) -> None:
    with pymysql.connect(host="127.0.0.1", port=ddm_ddl.port, user="ddm", password="ddm", database=session_db,
                         autocommit=True, **NO_TLS) as c:
        for sql in STATEMENTS:
            with pytest.raises(pymysql.err.MySQLError) as exc:
                query_all(c, sql)
            _assert_refusal(exc.value.args[0], exc.value.args[1], sql)
            assert query_all(c, "SELECT 1") == [(1,)]  # the session goes on
        if session_db is not None:
            query_all(c, f"USE {session_db}")
    have = _node_databases(node0)
    assert "ddl_newdb" not in have
    assert {"ddl_pt_phys", "ddl_sh_0", "ddl_sh_1"} <= have


@pytest.mark.parametrize("session_db", SESSIONS, ids=["no-db", "passthrough", "sharded"])
def test_create_drop_database_refused_when_prepared(ddm_ddl: DDM, node0: Node, session_db: str | None) -> None:
    with RawClient(ddm_ddl.port, db=session_db) as raw:
        for sql in STATEMENTS:
            with pytest.raises(ServerError) as exc:
                raw.prepare(sql)
            _assert_refusal(exc.value.code, exc.value.message, sql)
            assert raw.query("SELECT 2") == [(b"2",)]
    have = _node_databases(node0)
    assert "ddl_newdb" not in have
    assert {"ddl_pt_phys", "ddl_sh_0", "ddl_sh_1"} <= have


def test_other_create_and_drop_statements_still_run(ddm_ddl: DDM) -> None:
    with pymysql.connect(host="127.0.0.1", port=ddm_ddl.port, user="ddm", password="ddm", database="ddlpt",
                         autocommit=True, **NO_TLS) as c:
        query_all(c, "CREATE TABLE IF NOT EXISTS database_t (id INT PRIMARY KEY)")
        query_all(c, "DROP TABLE database_t")
