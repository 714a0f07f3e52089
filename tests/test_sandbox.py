"""The MariaDB sandbox: range expansion and data source placement (unit), and a real 1 node + 1 replica sandbox
driven through the `ddm sandbox` CLI (integration)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator

import pymysql
import pytest
import yaml

from ddm.tools import cli
from ddm.tools import sandbox as sb


def test_expand_ranges_lists_and_padding() -> None:
    assert sb.expand("ds${0..2}") == ["ds0", "ds1", "ds2"]
    assert sb.expand("ds${0..1}.t_${0..1}") == ["ds0.t_0", "ds0.t_1", "ds1.t_0", "ds1.t_1"]
    assert sb.expand("db_${00..02}") == ["db_00", "db_01", "db_02"]
    assert sb.expand("x${a, b}") == ["xa", "xb"]
    assert sb.expand("plain") == ["plain"]


def test_datasource_locations_all_forms() -> None:
    assert sb.datasource_locations("app", {"node": "n1"}) == [("n1", "app")]
    compact = {"datasources": {"names": "ds_${0..3}", "nodes": ["n0", "n1"], "database": "sb_${0..3}"}}
    assert sb.datasource_locations("sbtest", compact) == [("n0", "sb_0"), ("n1", "sb_1"), ("n0", "sb_2"),
                                                          ("n1", "sb_3")]
    explicit = {"datasources": {"ds0": {"node": "n0", "database": "a"}, "ds${1..2}": {"node": "n${1..2}"}}}
    assert sb.datasource_locations("x", explicit) == [("n0", "a"), ("n1", "x"), ("n2", "x")]


def test_layout_ports_and_free_base() -> None:
    assert sb._layout(3310, 2, [1, 0]) == [("n0", 0, 3310), ("n1", 0, 3311), ("n0", 1, 3320)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert sb.port_in_use(busy)
        assert sb.find_free_base(busy, nodes=1, step=7) != busy


def test_default_client_user_is_native_and_sha2_user_kept(tmp_path: os.PathLike[str]) -> None:
    from ddm import config as config_mod

    inst = sb.Instance(name="n0", node="n0", role="primary", port=3310, server_id=1, home=str(tmp_path),
                       socket=os.path.join(str(tmp_path), "s.sock"))
    box = sb.Sandbox(dir=str(tmp_path), instances=[inst])
    assert (box.client_user, box.client_password) == ("ddm", "ddm")
    cfg = config_mod.from_dict(sb.build_config(box, None))
    # `ddm` (what README and the demo use) is native: libmariadb's clients (sysbench) race on loading the
    # caching_sha2_password plugin when threads connect at once; ddm_sha2 keeps caching_sha2 for those who want it
    assert {n: u.auth_plugin for n, u in cfg.users.items()} == {
        "ddm": "mysql_native_password", "ddm_sha2": "caching_sha2_password", "ddm_native": "mysql_native_password"}
    assert all(u.password == "ddm" for u in cfg.users.values())


@pytest.fixture
def box_dir(mariadb: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = str(tmp_path_factory.mktemp("sb1"))
    yield d
    sb.down(d)


@pytest.mark.integration
def test_sandbox_replication_status_and_down(box_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = sb.find_free_base(25306, nodes=1, replicas=1)
    assert cli.main(["sandbox", "up", "--dir", box_dir, "--nodes", "1", "--replicas", "1",
                     "--port", str(base)]) == 0
    capsys.readouterr()

    assert cli.main(["sandbox", "status", "--dir", box_dir, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    by_name = {i["name"]: i for i in st["instances"]}
    assert set(by_name) == {"n0", "n0r1"} and all(i["alive"] for i in by_name.values())
    assert by_name["n0"]["port"] == base and by_name["n0r1"]["role"] == "replica"
    assert st["listen"] == f"127.0.0.1:{base - 3}"
    # the default client user (first) is mysql_native_password; ddm_sha2 is the caching_sha2_password one
    assert [(u["name"], u["auth_plugin"]) for u in st["users"]] == [
        ("ddm", "mysql_native_password"), ("ddm_sha2", "caching_sha2_password"),
        ("ddm_native", "mysql_native_password")]

    cfg = yaml.safe_load(open(st["config"]))
    assert cfg["nodes"]["n0"]["port"] == base
    assert cfg["nodes"]["n0"]["replicas"][0]["port"] == by_name["n0r1"]["port"]
    assert cfg["databases"]["sbtest"] == {"node": "n0", "database": "sbtest"}

    def connect(port: int) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=port, user=st["node_user"], password=st["node_password"],
                               database="sbtest", autocommit=True)

    primary, replica = connect(by_name["n0"]["port"]), connect(by_name["n0r1"]["port"])
    try:
        with primary.cursor() as cur:
            cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
            cur.execute("INSERT INTO t VALUES (1, 'through-gtid')")
            cur.execute("SELECT @@gtid_binlog_pos")
            (pos,) = cur.fetchone()
        with replica.cursor() as cur:
            cur.execute("SELECT MASTER_GTID_WAIT(%s, 20)", (pos,))
            assert cur.fetchone() == (0,)
            cur.execute("SELECT v FROM t WHERE id = 1")
            assert cur.fetchone() == ("through-gtid",)
            cur.execute("SELECT @@read_only, @@gtid_strict_mode, @@binlog_format")
            assert cur.fetchone() == (1, 1, "ROW")
    finally:
        primary.close()
        replica.close()

    # A second `up` on a running sandbox refuses, naming the way out.
    with pytest.raises(sb.SandboxError, match="already running"):
        sb.up(box_dir, nodes=1, base_port=base)

    pids = [i["pid"] for i in st["instances"]]
    assert cli.main(["sandbox", "down", "--dir", box_dir]) == 0
    assert cli.main(["sandbox", "down", "--dir", box_dir]) == 0  # idempotent
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}/cmdline") for p in pids):
        time.sleep(0.05)
    assert not any(sb._is_mariadbd(p) for p in pids)
    assert cli.main(["sandbox", "status", "--dir", box_dir]) == 3  # everything down


@pytest.mark.integration
def test_port_in_use_is_named(mariadb: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(sb.SandboxError, match=f"port {port} is already in use"):
            sb.up(str(tmp_path), nodes=1, base_port=port)
