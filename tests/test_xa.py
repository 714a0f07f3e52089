"""ddm.execute.xa / ddm.execute.xalog without data nodes: configuration, xids, the file decision log."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from ddm.config import from_dict
from ddm.execute import xa
from ddm.execute.xalog import FileLog
from test_config import base, problems_of, sharded_db

TABLES = {"t": {"nodes": "ds${0..3}.t", "database_strategy": {"column": "id", "algorithm": "mod"}}}


def test_config_defaults_and_choices(tmp_path: Path) -> None:
    cfg = from_dict(sharded_db(TABLES))
    assert cfg.databases["sb"].transactions == "xa"
    assert (cfg.server.xa_log, cfg.server.xa_log_node, cfg.server.xa_log_database) == ("table", None, "ddm")
    cfg = from_dict(sharded_db(TABLES, transactions="local"))
    assert cfg.databases["sb"].transactions == "local"
    doc = sharded_db(TABLES)
    doc["server"].update(xa_log="file", xa_log_path=str(tmp_path / "xa.log"), xa_recovery_interval="500ms",
                         instance_id="east-1")
    s = from_dict(doc).server
    assert (s.xa_log, s.xa_log_path, s.xa_recovery_interval, s.instance_id) == (
        "file", str(tmp_path / "xa.log"), 0.5, "east-1")


def test_config_errors(tmp_path: Path) -> None:
    assert any("transactions" in p for p in problems_of(sharded_db(TABLES, transactions="2pc")))
    doc = base()
    doc["server"]["xa_log"] = "file"
    assert any("xa_log_path" in p and "required" in p for p in problems_of(doc))
    doc = base()
    doc["server"].update(xa_log="file", xa_log_path="/nonexistent-dir/xa.log")
    assert any("xa_log_path" in p for p in problems_of(doc))
    doc = base()
    doc["server"]["xa_log_node"] = "n9"
    assert any("xa_log_node" in p and "unknown node" in p for p in problems_of(doc))
    doc = base()
    doc["server"]["instance_id"] = "a b"
    assert any("instance_id" in p for p in problems_of(doc))


def test_gtrids_name_instance_worker_pid_and_grow() -> None:
    cfg = from_dict(base())
    c = xa.Coordinator(SimpleNamespace(config=cfg, worker_id=3))
    a, b = c.new_gtrid(), c.new_gtrid()
    parts = a.split(b":")
    assert parts[0] == b"ddm" and parts[1] == b"%s" % c.instance.encode() and parts[2] == b"3"
    assert int(b.split(b":")[4]) == int(parts[4]) + 1 and len(a) <= 64
    assert c.begin_sql() .startswith(b"XA START 'ddm:")
    assert xa.xid_sql(b"g'x", b"n0") == b"'g\\'x','n0'"


def test_plain_begins_become_xa() -> None:
    assert xa.is_begin_plain(b"BEGIN") and xa.is_begin_plain(b"START TRANSACTION READ WRITE")
    assert not xa.is_begin_plain(b"START TRANSACTION READ ONLY")
    assert not xa.is_begin_plain(b"START TRANSACTION WITH CONSISTENT SNAPSHOT")


def test_file_log_records_once_forgets_and_compacts(tmp_path: Path) -> None:
    path = tmp_path / "xa.log"
    log = FileLog(str(path))

    async def go() -> None:
        assert await log.record(b"ddm:i:0:1:1", b"C", b"n0,n1") == b"C"
        assert await log.record(b"ddm:i:0:1:2", b"C", b"n0,n1") == b"C"
        assert await log.lookup([b"ddm:i:0:1:1", b"ddm:i:0:1:3"]) == {b"ddm:i:0:1:1": b"C"}
        await log.forget([b"ddm:i:0:1:1"])
        assert await log.lookup([b"ddm:i:0:1:1", b"ddm:i:0:1:2"]) == {b"ddm:i:0:1:2": b"C"}
        with open(path, "ab") as f:
            f.write(b"C ddm:i:0:1:9 n0")  # a torn last line: ignored
        assert await log.lookup([b"ddm:i:0:1:9"]) == {}
        old = b"C ddm:i:0:1:7 n0 1000.0\n"  # an old decision nobody holds in doubt: dropped by compaction
        path.write_bytes(path.read_bytes() + b"\n" + old + b"F x\n" * 300000)  # > 1 MiB: compacted
        await log.collect([b"ddm:i:0:1:2"], 60)
        assert path.stat().st_size < 100
        assert await log.entries() == [(b"ddm:i:0:1:2", b"C", b"n0,n1")]

    asyncio.run(go())


def test_presumed_abort_only_for_branches_nobody_runs(tmp_path: Path) -> None:
    import os
    import subprocess

    doc = base()
    doc["server"].update(xa_recovery_grace=30, instance_id="here")
    cfg = from_dict(doc)
    c = xa.Coordinator(SimpleNamespace(config=cfg, worker_id=0))
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = os.getppid()
    now = 1000.0
    own = b"ddm:here:0:%d:1" % os.getpid()
    gone = b"ddm:here:1:%d:1" % dead.pid
    other_worker = b"ddm:here:1:%d:1" % live
    elsewhere = b"ddm:there:0:1:1"
    c._seen = {g: now for g in (own, gone, other_worker, elsewhere)}
    assert c._abandoned(own, now)  # not in flight here (recover() skips those first)
    assert c._abandoned(gone, now)  # its worker no longer exists
    assert not c._abandoned(other_worker, now) and not c._abandoned(elsewhere, now)  # within the grace period
    assert c._abandoned(other_worker, now + 31) and c._abandoned(elsewhere, now + 31)  # table log: the abort races
    doc["server"].update(xa_log="file", xa_log_path=str(tmp_path / "log"))
    c.server.config = from_dict(doc)
    assert not c._abandoned(other_worker, now + 31) and not c._abandoned(elsewhere, now + 31)  # file log: never
