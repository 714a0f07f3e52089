"""Fixtures for integration tests: one MariaDB sandbox per test session.

`sandbox` is a `ddm.tools.sandbox.Sandbox`: 2 data nodes (n0, n1), one GTID replica of n0 (n0r1), database `sbtest` on
n0, and a generated ddm config. Useful attributes:
  sandbox.config_path                  DIR/ddm.yaml (server.listen = 127.0.0.1:sandbox.listen_port)
  sandbox.primary("n0").port / .socket, sandbox.replicas("n0")[0].port / .socket
  sandbox.node_user / sandbox.node_password   credentials ddm uses for the nodes (ALL PRIVILEGES)
  sandbox.client_user / sandbox.client_password   the ddm client account in ddm.yaml (ddm/ddm)
  sandbox.dir, sandbox.instances, sandbox.nodes
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from ddm.tools import sandbox as sb

BASE_PORT = 23306  # first range tried; later ranges (+100 each) when another run holds it


@pytest.fixture(scope="session")
def sandbox(mariadb: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[sb.Sandbox]:
    replicas = [1, 0]
    base = sb.find_free_base(BASE_PORT, nodes=2, replicas=replicas)
    root = str(tmp_path_factory.mktemp("sandbox"))
    box = sb.up(root, nodes=2, replicas=replicas, base_port=base)
    try:
        yield box
    finally:
        sb.down(root)


@pytest.fixture
def direct_conn_factory(sandbox: sb.Sandbox) -> Iterator[Callable[..., pymysql.connections.Connection]]:
    """connect(database="sbtest", **pymysql_kwargs) -> a PyMySQL connection straight to node 0's primary (TCP,
    ddm_node credentials, autocommit). Every connection it made is closed after the test."""
    made: list[pymysql.connections.Connection] = []
    n0 = sandbox.primary("n0")

    def connect(database: str | None = "sbtest", **kwargs: Any) -> pymysql.connections.Connection:
        params: dict[str, Any] = {"host": "127.0.0.1", "port": n0.port, "user": sandbox.node_user,
                                  "password": sandbox.node_password, "database": database, "autocommit": True,
                                  "charset": "utf8mb4"}
        params.update(kwargs)
        conn = pymysql.connect(**params)
        made.append(conn)
        return conn

    yield connect
    for conn in made:
        try:
            conn.close()
        except pymysql.err.Error:
            pass  # already closed by the test
