"""Differential harness for sessions (issue 9): several clients, random interleavings of SET / USE / PREPARE /
EXECUTE / DDL / GET_LOCK / CREATE TEMPORARY / multi-statements / writes, run once through ddm and once straight
against MariaDB; every answer (rows, or the error code) and the final table contents must be the same.

ddm serves the logical databases `fz` and `fz2` from node n1 (physical names equal to the logical ones); the direct
run uses the same databases on node n0. The clients take turns in the order the program says (one statement at a
time, each waited for), so the two runs see the same interleaving and the node's answers are the oracle: a statement
that lands on another client's pooled connection, a session variable replayed or lost, a prepared statement or a
temporary table visible to the wrong client, a lock that is not the holder's, all show up as a different answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from ddm_fixtures import DDM, ddm_config, free_port, start_ddm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymysql.constants import CLIENT

pytestmark = pytest.mark.integration

DBS = ("fz", "fz2")
LOCK = "ddm_interleave_lk"
CLIENTS = 3

# (op, argument) -> SQL; every op is a statement a common driver sends as text
OPS: dict[str, Any] = {
    "set": lambda k: f"SET @v = {k}",
    "get": lambda k: "SELECT @v, @w",
    "insert": lambda k: f"INSERT INTO t (id, v) VALUES ({k}, 'c{k}')",
    "update": lambda k: f"UPDATE t SET v = CONCAT(v, '+') WHERE id <= {k}",
    "select": lambda k: "SELECT * FROM t ORDER BY id",
    "multi": lambda k: f"SET @w = {k}; SELECT @w, COUNT(*) FROM t; SELECT DATABASE()",
    "multi_insert": lambda k: f"INSERT INTO t (id, v) VALUES ({k + 100}, 'm'); SELECT COUNT(*) FROM t",
    "prepare": lambda k: "PREPARE s FROM 'SELECT COUNT(*) FROM t WHERE id > ?'",
    "execute": lambda k: "EXECUTE s USING @v",
    "deallocate": lambda k: "DEALLOCATE PREPARE s",
    "add_column": lambda k: "ALTER TABLE t ADD COLUMN x INT",
    "drop_column": lambda k: "ALTER TABLE t DROP COLUMN x",
    "get_lock": lambda k: f"SELECT GET_LOCK('{LOCK}', 0)",
    "release_lock": lambda k: f"SELECT RELEASE_LOCK('{LOCK}')",
    "release_all": lambda k: "SELECT RELEASE_ALL_LOCKS()",
    "is_free": lambda k: f"SELECT IS_FREE_LOCK('{LOCK}')",
    "tmp_create": lambda k: "CREATE TEMPORARY TABLE tmp (a INT)",
    "tmp_insert": lambda k: f"INSERT INTO tmp VALUES ({k})",
    "tmp_select": lambda k: "SELECT a FROM tmp ORDER BY a",
    "tmp_drop": lambda k: "DROP TEMPORARY TABLE tmp",
    "use_other": lambda k: "USE fz2",
    "use_back": lambda k: "USE fz",
    "database": lambda k: "SELECT DATABASE()",
    "begin": lambda k: "BEGIN",
    "commit": lambda k: "COMMIT",
    "rollback": lambda k: "ROLLBACK",
}

program = st.lists(st.tuples(st.integers(0, CLIENTS - 1), st.sampled_from(sorted(OPS)), st.integers(1, 9)),
                   min_size=4, max_size=30)


def _reset(conn: pymysql.connections.Connection) -> None:
    with conn.cursor() as cur:
        for db in DBS:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
            cur.execute(f"DROP TABLE IF EXISTS {db}.t")
            cur.execute(f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(64))")


def _answer(cur: pymysql.cursors.Cursor, sql: str) -> list[Any]:
    """Every result of the statement (several for a multi-statement), or the error code that ended it."""
    out: list[Any] = []
    try:
        cur.execute(sql)
        while True:
            out.append(("rows", [tuple(r) for r in cur.fetchall()]) if cur.description else ("ok", cur.rowcount))
            if not cur.nextset():
                break
    except pymysql.err.MySQLError as exc:
        out.append(("error", exc.args[0]))
        while True:  # drain what the driver left (nothing after an error, but be safe)
            try:
                if not cur.nextset():
                    break
            except pymysql.err.MySQLError:
                break
    return out


class Side:
    def __init__(self, port: int, user: str, password: str, admin: pymysql.connections.Connection) -> None:
        self.port, self.user, self.password, self.admin = port, user, password, admin

    def run(self, prog: list[tuple[int, str, int]]) -> tuple[list[Any], list[Any]]:
        _reset(self.admin)
        clients = [pymysql.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                   database="fz", autocommit=True, charset="utf8mb4", ssl_disabled=True,
                                   client_flag=CLIENT.MULTI_STATEMENTS) for _ in range(CLIENTS)]
        try:
            answers = []
            for who, op, k in prog:
                with clients[who].cursor() as cur:
                    answers.append((who, op, _answer(cur, OPS[op](k))))
        finally:
            for c in clients:
                c.close()
        with self.admin.cursor() as cur:
            final = []
            for db in DBS:
                cur.execute(f"SELECT * FROM {db}.t ORDER BY id")
                final.append([tuple(r) for r in cur.fetchall()])
                cur.execute(f"SHOW COLUMNS FROM {db}.t")
                final.append([r[0] for r in cur.fetchall()])
        return answers, final


@pytest.fixture(scope="module")
def sides(sandbox: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Side, Side]]:
    n0, n1 = sandbox.primary("n0"), sandbox.primary("n1")
    admins = [pymysql.connect(host="127.0.0.1", port=n.port, user=sandbox.node_user, password=sandbox.node_password,
                              autocommit=True, ssl_disabled=True) for n in (n0, n1)]
    for a in admins:
        _reset(a)
    node = {"host": "127.0.0.1", "port": n1.port, "user": sandbox.node_user, "password": sandbox.node_password,
            "pool": {"min_size": 0, "max_size": 32, "acquire_timeout": 5, "connect_timeout": 3}}
    cfg = ddm_config(free_port(), {"n1": node}, {db: {"node": "n1", "database": db} for db in DBS})
    d: DDM = start_ddm(tmp_path_factory.mktemp("ddm-interleave"), cfg)
    try:
        yield (Side(d.port, "native", "nativepw", admins[1]),
               Side(n0.port, sandbox.node_user, sandbox.node_password, admins[0]))
    finally:
        d.stop()
        for a in admins:
            a.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(prog=program)
def test_interleaved_sessions_answer_as_the_node_does(sides: tuple[Side, Side], prog: list[tuple[int, str, int]]):
    through_ddm, direct = sides
    ddm_answers, ddm_final = through_ddm.run(prog)
    node_answers, node_final = direct.run(prog)
    for step, (got, want) in enumerate(zip(ddm_answers, node_answers, strict=True)):
        assert got == want, f"step {step} of {prog}: through ddm {got}, directly {want}"
    assert ddm_final == node_final


def test_sql_prepared_statement_stays_its_clients(sides: tuple[Side, Side]):
    """Found by the harness: `PREPARE s FROM ...` (SQL level) left `s` on a pooled node connection, and another
    client's `DEALLOCATE PREPARE s` / `EXECUTE s` found it there (OK where the node answers 1243)."""
    prog = [(0, "prepare", 1), (1, "deallocate", 1), (1, "execute", 1), (0, "set", 2), (0, "execute", 1),
            (2, "prepare", 1), (0, "deallocate", 1), (0, "deallocate", 1), (2, "execute", 1), (1, "execute", 1)]
    through_ddm, direct = sides
    assert through_ddm.run(prog) == direct.run(prog)
    for _ in range(5):  # and after the clients left, on whichever pooled connections the next clients get
        assert through_ddm.run([(0, "execute", 1), (1, "deallocate", 1), (2, "tmp_create", 1)]) == \
            direct.run([(0, "execute", 1), (1, "deallocate", 1), (2, "tmp_create", 1)])
