"""Transactions on a sharded database spanning several data nodes: a statement that reaches several nodes runs on
each node's transaction connection (the nodes in parallel, the data sources of one node in turn), sees the
transaction's own writes, stays invisible to other clients until COMMIT, and ROLLBACK undoes it on every node.

Two ddm data nodes are the same MariaDB (node0) under two names, so the transaction holds two node connections."""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import (
    DDM,
    NO_TLS,
    Node,
    create_two_level_tables,
    ddm_config,
    free_port,
    start_ddm,
    two_level_database,
)

pytestmark = pytest.mark.integration

N = 64


@pytest.fixture(scope="module")
def tddm(node0: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DDM]:
    nodes = {"na": node0.conf(), "nb": node0.conf()}
    dbs = {"txs": two_level_database(["na", "nb", "na", "nb"], "txs", "acct", "id")}
    create_two_level_tables(node0, 4, "txs", "acct", "id INT PRIMARY KEY, bal INT NOT NULL")
    d = start_ddm(tmp_path_factory.mktemp("tddm"), ddm_config(free_port(), nodes, dbs), mode="thread")
    try:
        c = _connect(d)
        with c.cursor() as cur:
            cur.execute("INSERT INTO acct (id, bal) VALUES " + ", ".join(f"({i}, 100)" for i in range(N)))
        c.close()
        yield d
    finally:
        d.stop()


def _connect(d: DDM) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=d.port, user="ddm", password="ddm", database="txs",
                           autocommit=True, read_timeout=30, **NO_TLS)


def _total(c: pymysql.connections.Connection) -> tuple:
    with c.cursor() as cur:
        cur.execute("SELECT COUNT(*), SUM(bal) FROM acct")
        return tuple(int(v) for v in cur.fetchone())


def test_scatter_inside_a_transaction_sees_its_writes_and_rolls_back_everywhere(tddm: DDM) -> None:
    a, b = _connect(tddm), _connect(tddm)
    try:
        assert _total(a) == (N, N * 100)
        with a.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("UPDATE acct SET bal = bal + 1 WHERE id < 40")  # every data source, both nodes
            assert cur.rowcount == 40
            cur.execute("SELECT id, bal FROM acct WHERE id BETWEEN 30 AND 45 ORDER BY id")  # streamed merge
            assert cur.fetchall() == tuple((i, 101 if i < 40 else 100) for i in range(30, 46))
            assert _total(a) == (N, N * 100 + 40)  # buffered merge (aggregates), same transaction
        assert _total(b) == (N, N * 100)  # another client sees nothing yet
        with a.cursor() as cur:
            cur.execute("ROLLBACK")
        assert _total(a) == (N, N * 100) and _total(b) == (N, N * 100)
    finally:
        a.close()
        b.close()


def test_commit_reaches_every_node(tddm: DDM) -> None:
    a, b = _connect(tddm), _connect(tddm)
    try:
        with a.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT SUM(bal) FROM acct")  # opens the transaction on every node
            cur.execute("UPDATE acct SET bal = bal - 5 WHERE id IN (0, 1, 2, 3, 4, 5, 6, 7)")
            assert cur.rowcount == 8
            cur.execute("COMMIT")
        assert _total(b) == (N, N * 100 - 40)
        with a.cursor() as cur:
            cur.execute("UPDATE acct SET bal = bal + 5 WHERE id < 8")  # back to the start (autocommit)
        assert _total(b) == (N, N * 100)
    finally:
        a.close()
        b.close()
