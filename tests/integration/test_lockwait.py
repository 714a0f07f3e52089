"""Deadlocks across data nodes (ddm.execute.lockwait): two transactions lock a row on each of two MariaDB servers in
opposite orders. Neither server sees a deadlock; ddm ends the wait after `server.cross_node_lock_wait` with
ER_LOCK_DEADLOCK (1213) for the waiter, rolled back on both nodes, and the other transaction goes on and commits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from ddm_fixtures import NO_TLS, ddm_config, free_port, start_ddm

from ddm.tools import sandbox as sb

pytestmark = pytest.mark.integration

DB = "xdl"


class Env:
    def __init__(self, box: sb.Sandbox, tmp: Any) -> None:
        nodes = {}
        for node in ("n0", "n1"):
            p = box.primary(node)
            nodes[node] = {"host": "127.0.0.1", "port": p.port, "user": box.node_user, "password": box.node_password}
            with pymysql.connect(host="127.0.0.1", port=p.port, user=box.node_user, password=box.node_password,
                                 autocommit=True) as c, c.cursor() as cur:
                i = int(node[1])
                cur.execute(f"DROP DATABASE IF EXISTS xdl_{i}")
                cur.execute(f"CREATE DATABASE xdl_{i}")
                cur.execute(f"CREATE TABLE xdl_{i}.acct (id INT PRIMARY KEY, bal INT NOT NULL) ENGINE=InnoDB")
                cur.execute(f"INSERT INTO xdl_{i}.acct VALUES ({i}, 100), ({i + 2}, 100)")
        rules = {DB: {"datasources": {"ds${0..1}": {"node": "n${0..1}", "database": "xdl_${0..1}"}},
                      "tables": {"acct": {"nodes": "ds${0..1}.acct",
                                          "database_strategy": {"column": "id", "algorithm": "mod"}}}}}
        self.ddm = start_ddm(tmp, ddm_config(free_port(), nodes, rules, log_level="warning",
                                             cross_node_lock_wait="500ms"), mode="thread")

    def connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.ddm.port, user="ddm", password="ddm", database=DB,
                               autocommit=True, read_timeout=60, **NO_TLS)


@pytest.fixture(scope="module")
def env(sandbox: sb.Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = Env(sandbox, tmp_path_factory.mktemp("lockwait"))
    try:
        yield e
    finally:
        e.ddm.stop()


def _balances(c: pymysql.connections.Connection) -> dict[int, int]:
    with c.cursor() as cur:
        cur.execute("SELECT id, bal FROM acct ORDER BY id")
        return dict(cur.fetchall())


def _each_holds_a_node(a: Any, b: Any, new_balance: str) -> tuple[Any, Any]:
    """Transactions on a and b: a updates (locks) row 0 on n0, b row 1 on n1. Their cursors."""
    ca, cb = a.cursor(), b.cursor()
    ca.execute("BEGIN")
    cb.execute("BEGIN")
    ca.execute(f"UPDATE acct SET bal = {new_balance} WHERE id = 0")
    cb.execute(f"UPDATE acct SET bal = {new_balance} WHERE id = 1")
    return ca, cb


def test_opposite_lock_order_on_two_nodes_ends_in_a_deadlock_error_not_a_long_wait(env: Env) -> None:
    a, b, check = env.connect(), env.connect(), env.connect()
    start = _balances(check)
    outcome: dict[str, Any] = {}
    try:
        ca, cb = _each_holds_a_node(a, b, "bal - 1")
        t0 = time.monotonic()

        def a_second() -> None:
            try:
                ca.execute("UPDATE acct SET bal = bal + 1 WHERE id = 1")  # waits for b on n1
                outcome["a"] = "ok"
            except pymysql.err.MySQLError as exc:
                outcome["a"] = exc.args[0]

        t = threading.Thread(target=a_second)
        t.start()
        time.sleep(0.2)
        try:
            cb.execute("UPDATE acct SET bal = bal + 1 WHERE id = 0")  # waits for a on n0: a deadlock across nodes
            outcome["b"] = "ok"
        except pymysql.err.MySQLError as exc:
            outcome["b"] = exc.args[0]
        t.join(30)
        elapsed = time.monotonic() - t0
        assert elapsed < 10, (elapsed, outcome)  # not innodb_lock_wait_timeout's 50 s
        assert 1213 in outcome.values(), outcome
        for name, cur in (("a", ca), ("b", cb)):
            cur.execute("COMMIT" if outcome[name] == "ok" else "ROLLBACK")
        end = _balances(check)
        # each transaction moved 1 from one row to the other; the one that lost was rolled back on both nodes
        assert sum(end.values()) == sum(start.values())
        winners = [n for n, v in outcome.items() if v == "ok"]
        if winners == ["a"]:
            assert (end[0], end[1]) == (start[0] - 1, start[1] + 1)
        elif winners == ["b"]:
            assert (end[0], end[1]) == (start[0] + 1, start[1] - 1)
        else:
            assert end == start
    finally:
        for c in (a, b, check):
            c.close()


def test_a_single_node_transaction_is_left_to_innodb(env: Env) -> None:
    """Only transactions spanning nodes are watched: a one-node wait longer than cross_node_lock_wait goes on."""
    a, b = env.connect(), env.connect()
    try:
        ca, cb = a.cursor(), b.cursor()
        ca.execute("BEGIN")
        ca.execute("UPDATE acct SET bal = bal WHERE id = 2")  # row 2 on n0
        cb.execute("BEGIN")
        done = threading.Event()

        def waiter() -> None:
            cb.execute("UPDATE acct SET bal = bal WHERE id = 2")  # one node only: waits
            done.set()

        t = threading.Thread(target=waiter)
        t.start()
        assert not done.wait(1.5)  # still waiting after three times cross_node_lock_wait
        ca.execute("COMMIT")
        assert done.wait(10)
        t.join(10)
        cb.execute("COMMIT")
    finally:
        a.close()
        b.close()


def test_a_locking_scatter_select_in_a_deadlock_across_nodes(env: Env) -> None:
    """SELECT ... FOR UPDATE over both nodes (a scatter, ORDER BY merged) in two transactions that each already
    hold a row on a different node: each waits on the other's node. ddm ends it as a deadlock within
    cross_node_lock_wait instead of InnoDB's 50 s lock wait timeout."""
    a, b = env.connect(), env.connect()
    outcome: dict[str, Any] = {}
    try:
        ca, cb = _each_holds_a_node(a, b, "bal")
        t0 = time.monotonic()

        def lock_all(name: str, cur: Any) -> None:
            try:
                cur.execute("SELECT id, bal FROM acct ORDER BY id FOR UPDATE")
                outcome[name] = len(cur.fetchall())
            except pymysql.err.MySQLError as exc:
                outcome[name] = exc.args[0]

        t = threading.Thread(target=lock_all, args=("a", ca))
        t.start()
        time.sleep(0.2)
        lock_all("b", cb)
        t.join(30)
        elapsed = time.monotonic() - t0
        assert elapsed < 10, (elapsed, outcome)
        assert 1213 in outcome.values(), outcome
        assert set(outcome.values()) <= {1213, 4}, outcome  # the winner locked and read all four rows
        for cur in (ca, cb):
            cur.execute("ROLLBACK")
    finally:
        a.close()
        b.close()
