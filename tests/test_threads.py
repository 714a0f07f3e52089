"""Connection ids and KILL statement forms (ddm.process.server.next_connection_id, ddm.execute.threads)."""

import itertools
from types import SimpleNamespace

import pytest

from ddm.execute import threads
from ddm.process.server import Server


def _ids(worker_id: int, start: int = 1, live: tuple[int, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(_ids=itertools.count(start), _id_base=worker_id << 22,
                           clients=[SimpleNamespace(conn_id=i) for i in live])


def test_connection_ids_carry_the_worker_and_wrap_inside_its_range():
    srv = _ids(3)
    assert [Server.next_connection_id(srv) for _ in range(2)] == [(3 << 22) + 1, (3 << 22) + 2]
    srv = _ids(3, start=0x3FFFFE, live=((3 << 22) + 1,))
    got = [Server.next_connection_id(srv) for _ in range(3)]
    # never 0 and never the next worker's range; after the wrap an id still in use is skipped
    assert got == [(3 << 22) + 0x3FFFFE, (3 << 22) + 0x3FFFFF, (3 << 22) + 2]
    assert Server.next_connection_id(_ids(1023, start=0x3FFFFF)) == 0xFFFFFFFF


@pytest.mark.parametrize("sql,query_only,target", [
    (b"KILL 12", False, b"12"),
    (b"kill connection 12;", False, b"12"),
    (b" KILL  QUERY 4194305 ", True, b"4194305"),
    (b"KILL HARD QUERY 7", True, b"7"),
    (b"KILL SOFT CONNECTION 7", False, b"7"),
    (b"KILL CONNECTION_ID()", False, b"CONNECTION_ID()"),
    (b"KILL QUERY connection_id( )", True, b"connection_id( )"),
])
def test_kill_forms(sql, query_only, target):
    m = threads._KILL.match(sql)
    assert m is not None
    assert ((m.group(1) or b"").upper() == b"QUERY", m.group(2)) == (query_only, target)


@pytest.mark.parametrize("sql", [b"KILL USER ddm", b"KILL QUERY ID 5", b"KILL 5; SELECT 1", b"KILL -1", b"KILL"])
def test_kill_forms_ddm_does_not_answer(sql):
    assert threads._KILL.match(sql) is None


@pytest.mark.parametrize("sql,name", [
    (b"SELECT CONNECTION_ID()", b"CONNECTION_ID()"),
    (b"select connection_id();", b"connection_id()"),
    (b"SELECT CONNECTION_ID() AS cid", b"cid"),
    (b"SELECT CONNECTION_ID() `my id`", b"`my id`"),
])
def test_select_connection_id_forms(sql, name):
    m = threads._SELECT_ID.match(sql)
    assert m is not None and (m.group(2) or m.group(1)) == name
    assert threads._SELECT_ID.match(b"SELECT CONNECTION_ID() + 1") is None
