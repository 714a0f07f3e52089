"""A configuration swap reaches open sessions: their logical database's rules are looked up in the new snapshot
from the next statement outside a transaction (ddm.frontend.connection._dispatch), so rows go where the new rules say and
plans of the old rules are not cached under the new generation.

ddm runs in a thread of this process (Server.apply_config is called on its loop, as a worker does on reload).
"""

from __future__ import annotations

import threading
from typing import Any

import pymysql
import pytest
from ddm_fixtures import NO_TLS, ddm_config, free_port, start_ddm

from ddm import config as config_mod
from ddm.tools import sandbox as sb

pytestmark = pytest.mark.integration


def rules(tables: int) -> dict[str, Any]:
    return {"rl": {"datasources": {"ds0": {"node": "n0", "database": "rl_phys"}}, "default_datasource": "ds0",
                   "tables": {"t": {"nodes": f"ds0.t_${{0..{tables - 1}}}",
                                    "table_strategy": {"column": "id", "algorithm": "mod"}}}}}


def apply(d: Any, cfg: dict) -> None:
    snapshot = config_mod.from_dict(cfg).with_generation(d._server.config.generation + 1)  # as the master does
    done = threading.Event()
    d._loop.call_soon_threadsafe(lambda: (d._server.apply_config(snapshot), done.set()))
    assert done.wait(10)


def test_open_sessions_route_by_the_new_rules_after_a_reload(sandbox, tmp_path):
    n0 = sandbox.primary("n0")
    sb.run_sql(n0, "CREATE DATABASE IF NOT EXISTS rl_phys")
    for i in range(4):
        sb.run_sql(n0, f"CREATE OR REPLACE TABLE rl_phys.t_{i} (id INT PRIMARY KEY, v INT)")
    nodes = {"n0": {"host": "127.0.0.1", "port": n0.port, "user": sandbox.node_user,
                    "password": sandbox.node_password}}
    port = free_port()
    cfg = ddm_config(port, nodes, rules(2))
    d = start_ddm(tmp_path, cfg, mode="thread")
    try:
        c = pymysql.connect(host="127.0.0.1", port=port, user="ddm", password="ddm", database="rl", autocommit=True,
                            **NO_TLS)
        with c.cursor() as cur:
            cur.execute("INSERT INTO t (id, v) VALUES (6, 1)")  # 6 % 2 -> t_0
            cur.execute("SELECT v FROM t WHERE id = 7")  # cached plan of the 2-table rules
            apply(d, ddm_config(port, nodes, rules(4)))
            cur.execute("INSERT INTO t (id, v) VALUES (10, 2)")  # 10 % 4 -> t_2 (the old rules: t_0)
            cur.execute("SELECT v FROM t WHERE id = 10")
            assert cur.fetchall() == ((2,),)
        c.close()
        assert sb.run_sql(n0, "SELECT id FROM rl_phys.t_0 ORDER BY id").split() == ["6"]
        assert sb.run_sql(n0, "SELECT id FROM rl_phys.t_2").split() == ["10"]
    finally:
        d.stop()
