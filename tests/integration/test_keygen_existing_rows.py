"""Generated keys (`key_generator: segment`) never collide with rows already in the table, across workers and
restarts: the issue's case was `sysbench prepare --auto_inc=off` (explicit ids 1..N) and then `oltp_insert` (id 0,
so ddm generates), failing at once with 1062 Duplicate entry.

ddm-server runs as a subprocess with 2 workers (connections spread over both); the rules are 2 data sources on the
sandbox's two nodes x 4 tables (mod + two_level on id), segment blocks of 10 ids so that many blocks are claimed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from ddm_fixtures import NO_TLS, ddm_config, free_port, start_ddm

from ddm.tools import sandbox as sb

pytestmark = pytest.mark.integration

DB = "kgx"
TABLES = 4


def rules() -> dict[str, Any]:
    return {DB: {"datasources": {"ds0": {"node": "n0", "database": "kgx_0"}, "ds1": {"node": "n1", "database": "kgx_1"}},
                 "default_datasource": "ds0",
                 "tables": {"t": {"nodes": f"ds${{0..1}}.t_${{0..{TABLES - 1}}}",
                                  "database_strategy": {"column": "id", "algorithm": "mod"},
                                  "table_strategy": {"column": "id", "algorithm": "two_level"},
                                  "key_generator": {"column": "id", "type": "segment", "step": 10}}}}}


@pytest.fixture
def env(sandbox: sb.Sandbox, tmp_path: Path) -> Iterator[dict[str, Any]]:
    nodes = {}
    for i, n in enumerate(("n0", "n1")):
        node = sandbox.primary(n)
        sb.run_sql(node, f"DROP DATABASE IF EXISTS kgx_{i}; CREATE DATABASE kgx_{i}")
        for k in range(TABLES):
            sb.run_sql(node, f"CREATE TABLE kgx_{i}.t_{k} (id BIGINT PRIMARY KEY, v INT)")
        nodes[n] = {"host": "127.0.0.1", "port": node.port, "user": sandbox.node_user,
                    "password": sandbox.node_password}
    port = free_port()
    cfg = ddm_config(port, nodes, rules(), workers=2)
    out = {"port": port, "cfg": cfg, "dir": tmp_path, "ddm": start_ddm(tmp_path / "a", cfg, mode="subprocess")}
    try:
        yield out
    finally:
        out["ddm"].stop()
        for i, n in enumerate(("n0", "n1")):
            sb.run_sql(sandbox.primary(n), f"DROP DATABASE IF EXISTS kgx_{i}")


def connect(port: int) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user="ddm", password="ddm", database=DB, autocommit=True,
                           **NO_TLS)


def generated_inserts(port: int, connections: int, per_connection: int) -> list[int]:
    """Inserts with id 0 (generated), one row per statement, over several connections (both workers)."""
    ids = []
    conns = [connect(port) for _ in range(connections)]
    try:
        for n in range(per_connection):
            for c in conns:
                with c.cursor() as cur:
                    cur.execute("INSERT INTO t (id, v) VALUES (0, %s)", (n,))
                    ids.append(cur.lastrowid)
    finally:
        for c in conns:
            c.close()
    return ids


def all_ids(port: int) -> list[int]:
    with connect(port) as c, c.cursor() as cur:
        cur.execute("SELECT id FROM t")
        return sorted(r[0] for r in cur.fetchall())


def test_generated_ids_start_past_existing_rows_and_never_repeat(env: dict[str, Any]) -> None:
    port = env["port"]
    if env["ddm"].mode != "subprocess":
        pytest.skip("needs ddm-server with 2 workers")
    # rows with explicit ids, as `sysbench prepare --auto_inc=off` writes them (through ddm)
    with connect(port) as c, c.cursor() as cur:
        for lo in range(1, 301, 50):
            cur.execute("INSERT INTO t (id, v) VALUES " + ", ".join(f"({i}, -1)" for i in range(lo, lo + 50)))
    got = generated_inserts(port, connections=4, per_connection=25)  # 100 rows, no 1062
    assert min(got) > 300 and len(set(got)) == len(got)

    # an explicit id just ahead of the sequence through ddm: later generated ids skip it
    ahead = max(got) + 25
    with connect(port) as c, c.cursor() as cur:
        cur.execute("INSERT INTO t (id, v) VALUES (%s, -2)", (ahead,))
    got += generated_inserts(port, connections=4, per_connection=15)

    # restart: the new workers continue after every block claimed before
    env["ddm"].stop()
    env["ddm"] = start_ddm(env["dir"] / "b", env["cfg"], mode="subprocess")
    got += generated_inserts(port, connections=4, per_connection=15)
    ids = all_ids(port)
    assert len(ids) == 300 + 1 + len(got) == len(set(ids))
    assert sorted(set(got)) == sorted(got) and not set(got) & (set(range(1, 301)) | {ahead})


def test_reload_changing_the_generator_never_repeats_an_id(sandbox: sb.Sandbox, env: dict[str, Any],
                                                           tmp_path: Path) -> None:
    """A reload that changes the key generator (a new step) gives the rule a new generator: it continues after every
    block the old one claimed (and after the rows)."""
    from test_reload_rules import apply

    env["ddm"].stop()
    port = free_port()
    cfg = {**env["cfg"], "server": {**env["cfg"]["server"], "listen": f"127.0.0.1:{port}", "workers": 1}}
    d = env["ddm"] = start_ddm(tmp_path / "thread", cfg, mode="thread")
    with connect(port) as c, c.cursor() as cur:
        cur.execute("INSERT INTO t (id, v) VALUES " + ", ".join(f"({i}, -1)" for i in range(1, 41)))
    got = generated_inserts(port, connections=2, per_connection=8)
    new = rules()
    new[DB]["tables"]["t"]["key_generator"]["step"] = 7
    apply(d, {**cfg, "databases": new})
    got += generated_inserts(port, connections=2, per_connection=8)
    assert min(got) > 40 and len(set(got)) == len(got) == 32
    assert all_ids(port) == sorted(list(range(1, 41)) + got)
