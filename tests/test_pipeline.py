"""ddm.pipeline without a data node: the statement verdict, the configuration, and a Pipe's ordering and failure
handling over a BackendConnection fed node responses by hand."""

from __future__ import annotations

import asyncio
import struct
from types import SimpleNamespace

import pytest

from ddm import pipeline
from ddm.backend import BackendConnection
from ddm.config import ConfigError, PipelineConfig, PoolConfig, from_dict
from ddm.constants import er as ER
from ddm.frontend import ClientConnection, ClientStatement
from ddm.pipeline import Pipe, Pipelines, _Group, pipelinable
from ddm.resultset import simple_resultset
from ddm_core.packets import err_packet, frame, parse_err


@pytest.mark.parametrize("sql", [
    b"SELECT c FROM sbtest1 WHERE id=42",
    b"select 1",
    b"/* leading comment */ SELECT a, b FROM t WHERE x IN (1, 2) ORDER BY a LIMIT 5",
    b"SELECT 'for update', 'SLEEP(1)', '@x' FROM t",  # words inside string literals do not count
    b"SELECT COUNT(*) FROM t JOIN u ON t.id = u.id GROUP BY t.k",
    b"SELECT NOW(), DATABASE()",
])
def test_pipelinable(sql: bytes) -> None:
    assert pipelinable(sql)


@pytest.mark.parametrize("sql", [
    b"SELECT * FROM t WHERE id = 1 FOR UPDATE",
    b"SELECT * FROM t WHERE id = 1 for share",
    b"SELECT * FROM t LOCK IN SHARE MODE",
    b"SELECT a INTO @x FROM t",
    b"SELECT a FROM t INTO OUTFILE '/tmp/x'",
    b"SELECT @x",
    b"SELECT @@session.sql_mode",
    b"SELECT @@version",
    b"SELECT a := 1",
    b"SELECT SLEEP(1)",
    b"SELECT sleep (1)",
    b"SELECT GET_LOCK('a', 1)", b"SELECT RELEASE_LOCK('a')", b"SELECT IS_FREE_LOCK('a')", b"SELECT IS_USED_LOCK('a')",
    b"SELECT BENCHMARK(1000, MD5('a'))",
    b"SELECT LAST_INSERT_ID()", b"SELECT FOUND_ROWS()", b"SELECT ROW_COUNT()", b"SELECT CONNECTION_ID()",
    b"SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1",
    b"SELECT NEXTVAL(s)", b"SELECT NEXT VALUE FOR s", b"SELECT LASTVAL(s)",
    b"SELECT 1; SELECT 2",
    b"SELECT 1; DELETE FROM t",
    b"SELECT /*!50000 1 FOR UPDATE */ 1",
    b"SELECT `sleep`(1)",
    b"INSERT INTO t VALUES (1)",
    b"UPDATE t SET a = 1",
    b"(SELECT 1)",
    b"SHOW TABLES",
    b"SELECT " + b"1, " * 10000 + b"1",  # too long
])
def test_not_pipelinable(sql: bytes) -> None:
    assert not pipelinable(sql)


def test_verdict_cached_per_digest() -> None:
    pipeline._verdicts.clear()
    assert pipelinable(b"SELECT c FROM t WHERE id = 1")
    assert pipelinable(b"SELECT c FROM t WHERE id = 2")
    assert list(pipeline._verdicts) == [b"SELECT c FROM t WHERE id = ?"]


# --- configuration ---------------------------------------------------------------------------------------------
def _doc(pool: dict) -> dict:
    return {"users": [{"name": "u", "password": "p"}],
            "nodes": {"n0": {"host": "127.0.0.1", "port": 3310, "user": "x", "pool": pool}},
            "databases": {"app": {"node": "n0"}}}


def test_config_pipelining() -> None:
    assert from_dict(_doc({})).nodes["n0"].pool.pipelining == PipelineConfig()  # on by default
    assert from_dict(_doc({"max_size": 1})).nodes["n0"].pool.pipelining is None  # ... unless nothing can be shared
    assert from_dict(_doc({"pipelining": False})).nodes["n0"].pool.pipelining is None
    assert from_dict(_doc({"pipelining": None})).nodes["n0"].pool.pipelining is None
    assert from_dict(_doc({"pipelining": True})).nodes["n0"].pool.pipelining == PipelineConfig()
    got = from_dict(_doc({"pipelining": {"connections": 2, "max_depth": 16, "max_head_wait": "2ms"}}))
    assert got.nodes["n0"].pool.pipelining == PipelineConfig(connections=2, max_depth=16, max_head_wait=0.002)


@pytest.mark.parametrize(("pool", "problem"), [
    ({"pipelining": "yes"}, "nodes.n0.pool.pipelining: must be true, false or a mapping of connections, max_depth, "
                            "max_head_wait, got 'yes'"),
    ({"pipelining": {"depth": 3}}, "nodes.n0.pool.pipelining.depth: unknown key (did you mean 'max_depth'?)"),
    ({"pipelining": {"max_depth": 0}}, "nodes.n0.pool.pipelining.max_depth: must be an integer 1-256, got 0"),
    ({"pipelining": {"connections": 4}, "max_size": 4},
     "nodes.n0.pool.pipelining.connections: must be less than max_size (4 >= 4)"),
])
def test_config_pipelining_problems(pool: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(_doc(pool))
    assert problem in info.value.problems


# --- a Pipe over a hand-fed BackendConnection -------------------------------------------------------------------
class Sink:
    def __init__(self) -> None:
        self.data = b""
        self.writes = 0
        self.paused = False

    def write(self, b: bytes) -> None:
        self.data += b
        self.writes += 1

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str) -> None:
        return None


class FakeClient:
    def __init__(self, name: str) -> None:
        self.name = name
        self.transport = Sink()
        self.phase = 2  # PH_COMMAND
        self._piped = None
        self._paused_backend = None
        self.done = 0
        self.errors: list[int] = []
        self.closed = False
        self.conn = None
        self.sticky: set = set()
        self.txn_conns: dict = {}
        self.txn_begin = None
        self.cursors = 0
        self.flavour = 0
        self.session = SimpleNamespace(autocommit=True, signature=())
        self.no_pipe = False
        self.reruns = 0

    def command_done(self) -> None:
        self.done += 1

    def run_unpiped(self) -> None:
        self.reruns += 1

    def _error(self, code: int, message: str, seq: int = 1) -> None:
        self.errors.append(code)
        self.transport.write(frame(err_packet(code, b"HY000", message.encode()), seq))

    def close(self) -> None:
        self.closed = True
        self.phase = 3


@pytest.fixture
def pipe():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = SimpleNamespace(loop=loop, config=SimpleNamespace(nodes={}))
    owner = Pipelines(server)
    conn = BackendConnection("n0", "u", "p", 0)
    conn.transport = Sink()
    conn.mode = 0
    cfg = PipelineConfig(max_depth=4, max_head_wait=10.0)
    group = _Group(("n0", b"db", 0, ()), cfg)
    p = Pipe(owner, group, conn)
    group.pipes.append(p)
    yield p
    loop.close()
    asyncio.set_event_loop(None)


def _rs(value: str) -> bytes:
    return simple_resultset(["v"], [(value,)], deprecate_eof=False)


def _err(msg: bytes) -> bytes:
    return frame(err_packet(1146, b"42S02", msg), 1)


def test_responses_in_order_across_chunks(pipe: Pipe) -> None:
    clients = [FakeClient(f"c{i}") for i in range(4)]
    for c in clients:
        assert pipe.submit(c, frame(b"\x03SELECT " + c.name.encode(), 0))
    assert pipe.conn.transport.writes == 0  # the commands of one loop iteration go out together
    pipe._flush()
    assert pipe.conn.transport.data.count(b"SELECT") == 4 and pipe.conn.transport.writes == 1
    stream = _rs("c0") + _err(b"no such table") + _rs("c2") + _rs("c3")
    pipe.conn.data_received(stream[:5])
    pipe.conn.data_received(stream[5:len(_rs("c0")) + 4])
    pipe.conn.data_received(stream[len(_rs("c0")) + 4:])
    assert clients[0].transport.data == _rs("c0")
    assert clients[1].transport.data == _err(b"no such table")
    assert clients[2].transport.data == _rs("c2")
    assert clients[3].transport.data == _rs("c3")
    assert [c.done for c in clients] == [1, 1, 1, 1]
    assert not pipe.queue and not pipe.dead and all(c._piped is None for c in clients)


def test_every_split_point(pipe: Pipe) -> None:
    stream = _rs("a") + _rs("bb") + _err(b"x")
    for cut in range(1, len(stream)):
        clients = [FakeClient(n) for n in ("a", "bb", "x")]
        for c in clients:
            assert pipe.submit(c, b"q")
        pipe.conn.data_received(stream[:cut])
        pipe.conn.data_received(stream[cut:])
        assert [c.transport.data for c in clients] == [_rs("a"), _rs("bb"), _err(b"x")], cut


def test_depth_limit_and_slow_head(pipe: Pipe) -> None:
    clients = [FakeClient(str(i)) for i in range(5)]
    assert all(pipe.submit(c, b"q") for c in clients[:4])
    assert not pipe.submit(clients[4], b"q")  # max_depth 4
    assert pipe.owner.counters["full"] == 1
    pipe.conn.data_received(b"".join(_rs(str(i)) for i in range(4)))
    object.__setattr__(pipe, "cfg", PipelineConfig(max_depth=4, max_head_wait=0.0))
    assert pipe.submit(clients[0], b"q")  # an empty queue always takes it
    assert not pipe.submit(clients[1], b"q")  # the head has run longer than max_head_wait
    assert pipe.owner.counters["slow_head"] == 1


def test_client_gone_while_queued(pipe: Pipe) -> None:
    a, b, c = FakeClient("a"), FakeClient("b"), FakeClient("c")
    for x in (a, b, c):
        pipe.submit(x, b"q")
    b.phase = 3  # b disconnected while queued
    pipe.client_gone(b)
    pipe.conn.data_received(_rs("a")[:3])
    a.phase = 3  # the head disconnects mid-response
    pipe.client_gone(a)
    pipe.conn.data_received(_rs("a")[3:] + _rs("b") + _rs("c"))
    assert a.transport.data == _rs("a")[:3] and b.transport.data == b""
    assert c.transport.data == _rs("c") and c.done == 1 and a.done == 0 and b.done == 0
    assert not pipe.dead


def test_clients_behind_a_slow_head_are_rerun_and_their_responses_dropped(pipe: Pipe) -> None:
    pipe.cfg = PipelineConfig(max_depth=4, max_head_wait=0.005)
    a, b, c = FakeClient("a"), FakeClient("b"), FakeClient("c")
    for x in (a, b):
        assert pipe.submit(x, b"q")
    assert pipe.watch is not None  # armed when the first client queued behind the head
    pipe.owner.loop.run_until_complete(asyncio.sleep(0.03))
    assert (a.reruns, b.reruns) == (0, 1) and b._piped is None and a._piped is pipe
    assert pipe.owner.counters["rescued"] == 1 and pipe.watch is None
    assert not pipe.has_room()  # the head is still slow: new statements take the normal path
    pipe.head_started = pipe.owner.loop.time()
    assert pipe.submit(c, b"q")  # behind the head and b's dropped place
    pipe.conn.data_received(_rs("a") + _rs("b") + _rs("c"))
    assert a.transport.data == _rs("a") and b.transport.data == b"" and c.transport.data == _rs("c")
    assert (a.done, b.done, c.done) == (1, 0, 1)
    assert not pipe.queue and not pipe.dead


def test_kill_of_the_head_isolates_it_and_of_a_queued_client_interrupts_it(pipe: Pipe) -> None:
    a, b, c = FakeClient("a"), FakeClient("b"), FakeClient("c")
    for x in (a, b, c):
        pipe.submit(x, b"q")
    pipe.prepare_kill(c, query_only=True)  # queued: answered as interrupted, its place dropped
    assert c.errors == [ER.QUERY_INTERRUPTED] and c.done == 1 and c._piped is None
    pipe.prepare_kill(a, query_only=True)  # running: the others move, the pipe takes nothing more
    assert b.reruns == 1 and b._piped is None and a._piped is pipe
    assert pipe.closing and pipe not in pipe.group.pipes and not pipe.dead
    pipe.conn.data_received(_err(b"Query execution was interrupted") + _rs("b") + _rs("c"))
    assert a.transport.data == _err(b"Query execution was interrupted") and a.done == 1
    assert b.transport.data == b"" and c.transport.data.count(b"interrupted") == 1
    assert pipe.dead  # closed once its queue emptied


def test_paused_head_is_resumed_when_its_response_ends(pipe: Pipe) -> None:
    a, b = FakeClient("a"), FakeClient("b")
    pipe.submit(a, b"q")
    pipe.submit(b, b"q")
    pipe.conn.transport.pause_reading()
    a._paused_backend = pipe.conn
    pipe.conn.data_received(_rs("a"))
    assert not pipe.conn.transport.paused and a._paused_backend is None


def test_connection_lost(pipe: Pipe) -> None:
    a, b, c = FakeClient("a"), FakeClient("b"), FakeClient("c")
    for x in (a, b, c):
        pipe.submit(x, b"q")
    pipe.conn.data_received(_rs("a") + _rs("b")[:4])  # b's response has begun
    pipe.conn.connection_lost(None)
    assert a.transport.data == _rs("a") and a.done == 1
    assert b.closed and b.errors == []  # half a result went out: closed
    assert c.errors == [ER.CONNECTION_KILLED] and c.done == 1
    code, _, msg = parse_err(c.transport.data[4:])
    assert code == ER.CONNECTION_KILLED and b"n0" in msg
    assert pipe.dead and pipe not in pipe.group.pipes and not pipe.queue


def test_connection_lost_before_any_byte(pipe: Pipe) -> None:
    a, b = FakeClient("a"), FakeClient("b")
    pipe.submit(a, b"q")
    pipe.submit(b, b"q")
    pipe.conn.connection_lost(None)
    assert a.errors == [ER.CONNECTION_KILLED] and b.errors == [ER.CONNECTION_KILLED]
    assert a.done == 1 and b.done == 1 and not a.closed


def test_unexpected_bytes_drop_the_pipe(pipe: Pipe) -> None:
    a = FakeClient("a")
    pipe.submit(a, b"q")
    pipe.conn.data_received(_rs("a") + _rs("nobody"))
    assert a.transport.data == _rs("a") and a.done == 1
    assert pipe.dead and pipe.conn.closed


def test_close_waits_for_the_queue(pipe: Pipe) -> None:
    a = FakeClient("a")
    pipe.submit(a, b"q")
    pipe.close()
    assert not pipe.conn.closed and pipe not in pipe.group.pipes
    pipe.conn.data_received(_rs("a"))
    assert a.transport.data == _rs("a") and pipe.conn.closed


def test_sweep_closes_idle_groups_and_retires_old_connections(pipe: Pipe) -> None:
    owner = pipe.owner
    owner.server.config = SimpleNamespace(nodes={"n0": SimpleNamespace(pool=PoolConfig(idle_timeout=60,
                                                                                       max_lifetime=600))})
    owner.groups[pipe.group.key] = pipe.group
    now = owner.loop.time()
    pipe.group.last_used = now
    a = FakeClient("a")
    pipe.submit(a, b"q")
    pipe.conn.created -= 601  # older than max_lifetime: retires after its statement
    owner._sweep()
    assert pipe.closing and not pipe.conn.closed and owner._sweeper is not None
    pipe.conn.data_received(_rs("a"))
    assert a.transport.data == _rs("a") and pipe.conn.closed
    pipe.group.last_used = now - 61  # unused for longer than idle_timeout: the group goes
    owner._sweep()
    assert not owner.groups and owner._sweeper is None


def test_submit_refuses_clients_with_state(pipe: Pipe) -> None:
    owner = pipe.owner
    owner.nodes = {"n0": pipe.cfg}
    owner.groups[pipe.group.key] = pipe.group
    c = FakeClient("a")
    c.conn = object()
    assert not owner.submit(c, "n0", b"db", b"SELECT 1", b"q")
    c.conn = None
    c.session.autocommit = False
    assert not owner.submit(c, "n0", b"db", b"SELECT 1", b"q")
    c.session.autocommit = True
    c.sticky = {"lock"}
    assert not owner.submit(c, "n0", b"db", b"SELECT 1", b"q")
    c.sticky = set()
    assert owner.counters["refused_client"] == 3
    assert not owner.submit(c, "n0", b"db", b"SELECT @x", b"q")
    assert owner.counters["refused_statement"] == 1
    assert not owner.submit(c, "n1", b"db", b"SELECT 1", b"q")  # node without pipelining
    assert owner.submit(c, "n0", b"db", b"SELECT 1", b"q")
    assert c._piped is pipe
    c2 = FakeClient("b")
    c2.session.signature = (b"SET NAMES latin1",)  # no pipe for this signature: normal path (one gets opened)
    owner._open = lambda group, client: None
    assert not owner.submit(c2, "n0", b"db", b"SELECT 1", b"q")
    assert owner.counters["no_pipe"] == 1


# --- prepared statements on a pipe ---------------------------------------------------------------------------

def _prepare_ok(stmt_id: int, nparams: int) -> bytes:
    """A COM_STMT_PREPARE response: OK-prepare, then one definition per parameter and an EOF (no columns)."""
    out = [frame(b"\x00" + struct.pack("<IHHBH", stmt_id, 0, nparams, 0, 0), 1)]
    seq = 2
    for _ in range(nparams):
        out.append(frame(b"\x03def\x00\x00\x00\x01?\x00\x0c\x3f\x00\x00\x00\x00\x00\xfd\x80\x00\x00\x00\x00", seq))
        seq += 1
    if nparams:
        out.append(frame(b"\xfe\x00\x00\x02\x00", seq))
    return b"".join(out)


def _execute(client_stmt_id: int, value: int) -> bytes:
    """A client's COM_STMT_EXECUTE of a one-parameter statement, types sent (new-params-bound flag 1)."""
    return (b"\x17" + struct.pack("<IBI", client_stmt_id, 0, 1) + b"\x00" + b"\x01" + b"\x08\x00"
            + struct.pack("<q", value))


class ExecClient(FakeClient):
    _execute_payload = ClientConnection._execute_payload


def _owner_with(pipe: Pipe) -> Pipelines:
    owner = pipe.owner
    owner.nodes = {"n0": pipe.cfg}
    owner.groups[pipe.group.key] = pipe.group
    pipe.conn.db = b"db"
    return owner


SQL = b"SELECT c FROM sbtest1 WHERE id=?"


def test_execute_waits_for_the_pipes_own_prepare(pipe: Pipe) -> None:
    owner = _owner_with(pipe)
    stmt = ClientStatement(1, SQL, "n0", 1, 1, [])
    a, b = ExecClient("a"), ExecClient("b")
    assert owner.submit(a, "n0", b"db", b"SELECT 0", b"q")  # a text SELECT is in flight on the pipe
    assert not owner.submit_execute(b, "n0", b"db", stmt, _execute(1, 5))  # not prepared here: normal path
    assert not owner.submit_execute(b, "n0", b"db", stmt, _execute(1, 5))  # the prepare is out once only
    pipe._flush()
    sent = pipe.conn.transport.data
    assert sent.endswith(frame(b"\x16" + SQL, 0)) and sent.count(b"\x16" + SQL) == 1
    assert owner.counters["prepared"] == 1 and owner.counters["not_prepared"] == 2
    # a's result and the prepare response arrive in one chunk: a gets its bytes, the statement is kept
    pipe.conn.data_received(_rs("a") + _prepare_ok(77, 1))
    assert a.transport.data == _rs("a") and a.done == 1
    assert not pipe.queue and not pipe.dead and pipe.conn.cached_stmt(SQL).stmt_id == 77
    pipe.conn.transport.data = b""
    assert owner.submit_execute(b, "n0", b"db", stmt, _execute(1, 5))
    pipe._flush()
    assert pipe.conn.transport.data == frame(b"\x17" + struct.pack("<I", 77) + _execute(1, 5)[5:], 0)
    assert stmt.param_types == b"\x08\x00" and pipe.conn.cached_stmt(SQL).types_bound == b"\x08\x00"
    pipe.conn.data_received(_rs("b"))
    assert b.transport.data == _rs("b") and b.done == 1


def test_prepare_response_then_client_response_at_every_split_point(pipe: Pipe) -> None:
    owner = _owner_with(pipe)
    stream_len = len(_prepare_ok(9, 1) + _rs("c"))
    for cut in range(1, stream_len):
        sql = SQL + b" AND k > " + str(cut).encode()  # a statement this pipe has not prepared yet
        stmt = ClientStatement(1, sql, "n0", 1, 1, [])
        assert not owner.submit_execute(ExecClient("a"), "n0", b"db", stmt, _execute(1, 5))
        c = ExecClient("c")
        assert owner.submit(c, "n0", b"db", b"SELECT 0", b"q")  # queued behind the prepare
        stream = _prepare_ok(cut, 1) + _rs("c")
        pipe.conn.data_received(stream[:cut])
        pipe.conn.data_received(stream[cut:])
        assert c.transport.data == _rs("c") and c.done == 1, cut
        assert pipe.conn.cached_stmt(sql).stmt_id == cut and not pipe.queue and not pipe.dead, cut


def test_failed_prepare_leaves_executes_on_the_normal_path(pipe: Pipe) -> None:
    owner = _owner_with(pipe)
    stmt = ClientStatement(1, SQL, "n0", 1, 1, [])
    a = ExecClient("a")
    assert not owner.submit_execute(a, "n0", b"db", stmt, _execute(1, 5))
    pipe.conn.data_received(_err(b"Table 'db.sbtest1' doesn't exist"))
    assert pipe.conn.cached_stmt(SQL) is None and not pipe.dead and a.transport.data == b""
    assert not pipe.preparing and SQL in pipe.unpreparable
    assert not owner.submit_execute(a, "n0", b"db", stmt, _execute(1, 5))
    assert owner.counters["prepared"] == 1  # not sent again: every execute would pay a failing prepare


def test_connection_lost_with_a_prepare_at_the_head(pipe: Pipe) -> None:
    owner = _owner_with(pipe)
    stmt = ClientStatement(1, SQL, "n0", 1, 1, [])
    a, b = ExecClient("a"), ExecClient("b")
    assert not owner.submit_execute(a, "n0", b"db", stmt, _execute(1, 5))
    assert owner.submit(b, "n0", b"db", b"SELECT 0", b"q")
    pipe.conn.connection_lost(None)
    assert b.errors == [ER.CONNECTION_KILLED] and b.done == 1 and not b.closed
    assert a.errors == [] and pipe.dead and not pipe.queue


def test_execute_with_full_queue_does_not_touch_the_statement(pipe: Pipe) -> None:
    owner = _owner_with(pipe)
    stmt = ClientStatement(1, SQL, "n0", 1, 1, [])
    pipe.conn.remember_statement(SQL, [b"\x00" + struct.pack("<IHHBH", 3, 0, 1, 0, 0)])
    for i in range(4):
        assert owner.submit(FakeClient(str(i)), "n0", b"db", b"SELECT 0", b"q")
    assert not owner.submit_execute(ExecClient("x"), "n0", b"db", stmt, _execute(1, 5))
    assert pipe.conn.cached_stmt(SQL).types_bound is None  # the types were not recorded as sent
