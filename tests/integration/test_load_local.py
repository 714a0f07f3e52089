"""LOAD DATA LOCAL INFILE through ddm (ddm.execute.infile): the node's file request goes to the client and the client's file
to the node, with PyMySQL, a raw protocol client (16 MiB packets, a client vanishing mid-file) and the mariadb CLI;
refused with a clear error on a sharded database and for clients that did not enable local files."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import RAW_CAPS, TLS, RawClient, ddm_config, free_port, query_all, start_ddm
from pymysql.constants import CLIENT

pytestmark = pytest.mark.integration

TABLE = "pt_load"
LOAD = f"LOAD DATA LOCAL INFILE '{{}}' INTO TABLE {TABLE} FIELDS TERMINATED BY ','"
CLIENT_LOCAL_FILES = 0x80


@pytest.fixture
def table(connect) -> Iterator[None]:
    with connect() as c:
        query_all(c, f"CREATE OR REPLACE TABLE {TABLE} (a INT, b LONGTEXT)")
    yield
    with connect() as c:
        query_all(c, f"DROP TABLE IF EXISTS {TABLE}")


def _data_file(tmp_path: Path, rows: int, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{i},value-{i}\n" for i in range(rows)))
    return path


def _count(c: pymysql.connections.Connection) -> int:
    return query_all(c, f"SELECT COUNT(*) FROM {TABLE}")[0][0]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_load_file_pymysql(connect, table, tmp_path, tls):
    path = _data_file(tmp_path, 120_000)  # ~2 MB: many packets
    c = connect(local_infile=True, **(TLS if tls else {}))
    with c.cursor() as cur:
        assert cur.execute(LOAD.format(path)) == 120_000
        assert b"Records: 120000  Deleted: 0  Skipped: 0  Warnings: 0" in c._result.message
        cur.execute(f"SELECT COUNT(*), SUM(a), MAX(b) FROM {TABLE}")
        assert cur.fetchone() == (120_000, sum(range(120_000)), "value-99999")


def test_load_warnings_come_back_in_the_ok_packet(connect, table, tmp_path):
    path = tmp_path / "warn.csv"
    path.write_text("1,2\n2,3\nx,4\n5,6\n")
    c = connect(local_infile=True)
    with c.cursor() as cur:
        assert cur.execute(LOAD.format(path)) == 4
    assert c._result.warning_count == 1
    assert _count(c) == 4


def test_missing_file_client_aborts_and_connection_goes_on(connect, table):
    c = connect(local_infile=True)
    with pytest.raises(pymysql.err.OperationalError):  # the client sends the empty packet at once
        query_all(c, LOAD.format("/nonexistent/ddm-no-such-file.csv"))
    assert query_all(c, "SELECT 1") == [(1,)]
    assert _count(c) == 0


def test_load_inside_transaction_and_into_temporary_table(connect, table, tmp_path):
    path = _data_file(tmp_path, 50)
    c = connect(local_infile=True)
    query_all(c, "BEGIN")
    query_all(c, LOAD.format(path))
    assert _count(c) == 50
    query_all(c, "ROLLBACK")
    assert _count(c) == 0
    # a temporary table pins its connection: the load must land on that one
    query_all(c, f"CREATE TEMPORARY TABLE {TABLE}_tmp (a INT, b TEXT)")
    query_all(c, LOAD.format(path).replace(f"TABLE {TABLE} ", f"TABLE {TABLE}_tmp "))
    assert query_all(c, f"SELECT COUNT(*) FROM {TABLE}_tmp") == [(50,)]


def test_load_in_a_multi_statement(connect, table, tmp_path):
    path = _data_file(tmp_path, 10)
    c = connect(local_infile=True, client_flag=CLIENT.MULTI_STATEMENTS)
    with c.cursor() as cur:
        cur.execute(f"SELECT 7; {LOAD.format(path)}; SELECT COUNT(*) FROM {TABLE}")
        assert cur.fetchall() == ((7,),)
        assert cur.nextset() and cur.rowcount == 10
        assert cur.nextset() and cur.fetchall() == ((10,),)


def test_client_without_local_files_gets_the_node_error(connect, direct, table, tmp_path):
    path = _data_file(tmp_path, 3)
    with pytest.raises(pymysql.err.OperationalError) as via:
        query_all(connect(), LOAD.format(path))
    with pytest.raises(pymysql.err.OperationalError) as node:
        query_all(direct(), LOAD.format(path))
    assert via.value.args == node.value.args  # MariaDB 10.11: 4166 ER_LOAD_INFILE_CAPABILITY_DISABLED


def _raw_load(port: int) -> tuple[RawClient, bytes]:
    raw = RawClient(port, caps=RAW_CAPS | CLIENT_LOCAL_FILES)
    raw.command(b"\x03" + LOAD.format("client-file.csv").encode())
    request = raw.read_packet()
    assert request == b"\xfbclient-file.csv", request[:40]
    return raw, request


def test_16mib_packets_keep_their_sequence_ids(ddm_proc, connect, table):
    raw, _ = _raw_load(ddm_proc.port)
    with raw:
        big = b"1," + b"x" * (0xFFFFFF - 3) + b"\n"  # exactly 16 MiB - 1: sent with an empty continuation
        raw.write_packet(big)
        raw.write_packet(b"2," + b"y" * (0xFFFFFF + 10) + b"\n")  # two packets joined by ddm's framer
        raw.write_packet(b"3,z\n")
        want = raw.seq + 1
        raw.write_packet(b"")
        head = raw._recv_exact(4)
        assert head[3] == want & 0xFF  # the node's OK continues the client's ids
        ok = raw._recv_exact(int.from_bytes(head[:3], "little"))
        assert ok[:2] == b"\x00\x03", ok
        assert raw.query(f"SELECT a, LENGTH(b) FROM {TABLE} ORDER BY a") == [
            (b"1", b"%d" % (0xFFFFFF - 3)), (b"2", b"%d" % (0xFFFFFF + 10)), (b"3", b"1")]


def test_client_vanishing_mid_file_leaves_no_stuck_connection(ddm_proc, connect, direct, table):
    raw, _ = _raw_load(ddm_proc.port)
    raw.write_packet(b"1,a\n2,b\n")
    raw.close()  # no empty packet ever comes: ddm must close the node connection waiting for it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = [r for r in query_all(direct(), "SHOW PROCESSLIST") if r[7] and "LOAD DATA" in r[7]]
        if not waiting:
            break
        time.sleep(0.1)
    assert not waiting
    c = connect(local_infile=True)
    assert _count(c) == 0  # the statement was aborted, and pooled connections still work
    assert query_all(c, "SELECT 1") == [(1,)]


# ---------------------------------------------------------------------------------------------- mariadb CLI


def _cli(port: int, *args: str, sql: str) -> subprocess.CompletedProcess:
    cli = shutil.which("mariadb") or shutil.which("mysql")
    if cli is None:
        pytest.skip("the mariadb command-line client is not installed")
    return subprocess.run([cli, "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uddm", "-pddm", "--skip-ssl",
                           "--batch", *args, "sbtest", "-e", sql], capture_output=True, text=True, timeout=60)


def test_mariadb_cli_local_infile(ddm_proc, table, tmp_path):
    path = _data_file(tmp_path, 1000)
    res = _cli(ddm_proc.port, "--local-infile=1", sql=f"{LOAD.format(path)}; SELECT COUNT(*) FROM {TABLE}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "1000"
    res = _cli(ddm_proc.port, "--local-infile=0", sql=LOAD.format(path))
    assert res.returncode == 1 and "ERROR 4166" in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------------- sharded


@pytest.fixture(scope="module")
def ddm_sharded(node0, tmp_path_factory) -> Iterator[int]:
    dbs = {"shardload": {
        "datasources": {"ds0": {"node": "n0", "database": "ddmit_shl_0"},
                        "ds1": {"node": "n0", "database": "ddmit_shl_1"}},
        "default_datasource": "ds0",
        "tables": {"orders": {"nodes": "ds${0..1}.orders_${0..1}",
                              "database_strategy": {"column": "id", "algorithm": "mod"},
                              "table_strategy": {"column": "id", "algorithm": "two_level"}}}}}
    with pymysql.connect(host="127.0.0.1", port=node0.port, user=node0.user, password=node0.password) as c:
        for ds in dbs["shardload"]["datasources"].values():
            query_all(c, f"CREATE DATABASE IF NOT EXISTS {ds['database']}")
    d = start_ddm(tmp_path_factory.mktemp("ddm-shardload"), ddm_config(free_port(), {"n0": node0.conf()}, dbs),
                  mode="thread")
    try:
        yield d.port
    finally:
        d.stop()


def test_sharded_database_refuses_load_local(ddm_sharded, tmp_path):
    path = _data_file(tmp_path, 3)
    with pymysql.connect(host="127.0.0.1", port=ddm_sharded, user="ddm", password="ddm", database="shardload",
                         local_infile=True, ssl_disabled=True) as c:
        with pytest.raises(pymysql.err.NotSupportedError) as exc:
            query_all(c, f"/* bulk */ LOAD DATA LOCAL INFILE '{path}' INTO TABLE orders")
        assert exc.value.args[0] == 1235
        assert "LOAD DATA LOCAL INFILE on sharded database shardload" in exc.value.args[1]
        assert query_all(c, "SELECT 1") == [(1,)]
