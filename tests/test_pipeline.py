"""ddm.execute.pipeline without a data node: the statement verdict, the configuration, and a Pipe's ordering and failure
handling over a BackendConnection fed node responses by hand."""

from __future__ import annotations

import asyncio
import os
import struct
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddm.config import ConfigError, PipelineConfig, PoolConfig, from_dict
from ddm.execute import pipeline
from ddm.execute.pipeline import Pipe, Pipelines, _Group, pipelinable
from ddm.frontend.connection import ClientConnection, ClientStatement
from ddm.wire.backend import BackendConnection
from ddm.wire.constants import er as ER
from ddm.wire.resultset import simple_resultset
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
        self.piped = None
        self.paused_backend = None
        self.done = 0
        self.errors: list[int] = []
        self.closed = False
        self.conn = None
        self.sticky: set = set()
        self.txn_conns: dict = {}
        self.txn_begin = None
        self.cursors = 0
        self.flavour = 0
        self.session = SimpleNamespace(autocommit=True, signature=(), dbconf=None)
        self.no_pipe = False
        self.reruns = 0
        self.payload = b"\x03SELECT 1"
        self.piped_command = None
        self.diagnostics: list = []

    def command_done(self) -> None:
        self.done += 1

    def run_unpiped(self) -> None:
        self.reruns += 1

    def keep_diagnostics(self, conn, rerun=None) -> None:
        self.diagnostics.append(rerun)

    def send_error(self, code: int, message: str, seq: int = 1) -> None:
        self.errors.append(code)
        self.transport.write(frame(err_packet(code, b"HY000", message.encode()), seq))

    def close(self) -> None:
        self.closed = True
        self.phase = 3


def _new_pipe(loop: asyncio.AbstractEventLoop) -> Pipe:
    owner = Pipelines(SimpleNamespace(loop=loop, config=SimpleNamespace(nodes={})))
    conn = BackendConnection("n0", "u", "p", 0)
    conn.transport = Sink()
    conn.mode = 0
    group = _Group(("n0", b"db", 0, ()), PipelineConfig(max_depth=4, max_head_wait=10.0))
    p = Pipe(owner, group, conn)
    group.pipes.append(p)
    return p


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def pipe(loop: asyncio.AbstractEventLoop) -> Pipe:
    return _new_pipe(loop)


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
    assert not pipe.queue and not pipe.dead and all(c.piped is None for c in clients)


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
    assert (a.reruns, b.reruns) == (0, 1) and b.piped is None and a.piped is pipe
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
    assert c.errors == [ER.QUERY_INTERRUPTED] and c.done == 1 and c.piped is None
    pipe.prepare_kill(a, query_only=True)  # running: the others move, the pipe takes nothing more
    assert b.reruns == 1 and b.piped is None and a.piped is pipe
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
    a.paused_backend = pipe.conn
    pipe.conn.data_received(_rs("a"))
    assert not pipe.conn.transport.paused and a.paused_backend is None


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
    assert c.piped is pipe
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
    execute_payload = ClientConnection.execute_payload


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


# --- model-based: random interleavings of statements, node answers, rescues, kills and disconnects -------------
_OP = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 3)),
    st.tuples(st.just("flush")),
    st.tuples(st.just("deliver"), st.integers(1, 200)),
    st.tuples(st.just("rescue")),
    st.tuples(st.just("kill"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("gone"), st.integers(0, 3)),
)


def _node_answer(command: bytes) -> bytes:
    """What the data node sends for one framed COM_QUERY `SELECT <tag>`: a row, or an error for every 4th tag."""
    tag = command[4 + 8:].decode()
    if int(tag.rsplit("-", 1)[1]) % 4 == 3:
        return _err(b"no such table: " + tag.encode())
    return _rs(tag)


@settings(max_examples=int(os.environ.get("DDM_PIPE_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_OP, max_size=60))
def test_random_interleavings_keep_every_answer_with_its_client(loop: asyncio.AbstractEventLoop,
                                                                ops: list[tuple]) -> None:
    """Each statement ends exactly one way - answered on the pipe (its own bytes, in order), run again elsewhere
    (rescue, or a KILL of the head), interrupted while queued, or dropped with its disconnected client - and no
    client ever receives bytes of another's statement."""
    pipe = _new_pipe(loop)
    clients = [FakeClient(f"c{i}") for i in range(4)]
    stmts: list[dict] = []  # {client, tag, state: queued | rerun | interrupted | gone}
    inflight: dict[int, dict] = {}
    gone: set[int] = set()
    written = 0  # bytes of commands the node has read
    pending = b""  # bytes the node has sent that ddm has not read yet
    n = 0

    def node_reads() -> None:
        nonlocal written, pending
        data = pipe.conn.transport.data
        while written + 4 <= len(data):
            length = int.from_bytes(data[written:written + 3], "little")
            if data[written + 4] == 0x03:  # COM_QUERY; a retired pipe's COM_QUIT gets no answer
                pending += _node_answer(data[written:written + 4 + length])
            written += 4 + length

    for op in ops:
        if op[0] == "submit":
            i = op[1]
            if i in gone or i in inflight or pipe.closing:
                continue
            n += 1
            tag = f"c{i}-{n}"
            if pipe.submit(clients[i], frame(b"\x03SELECT " + tag.encode(), 0)):
                inflight[i] = {"client": i, "tag": tag, "state": "queued"}
                stmts.append(inflight[i])
        elif op[0] == "flush":
            pipe._flush()
            node_reads()
        elif op[0] == "deliver":
            chunk, pending = pending[:op[1]], pending[op[1]:]
            if chunk:
                pipe.conn.data_received(chunk)
        elif op[0] == "rescue":
            behind = [c for c in list(pipe.queue)[1:] if isinstance(c, FakeClient) and c.phase != 3]
            reruns = [c.reruns for c in behind]
            pipe.rescue()
            assert [c.reruns for c in behind] == [r + 1 for r in reruns]
            for c in behind:
                inflight.pop(clients.index(c))["state"] = "rerun"
        elif op[0] == "kill":
            i, query_only = op[1], op[2]
            if i not in inflight or clients[i].piped is not pipe:
                continue
            if pipe.queue[0] is clients[i]:
                behind = [c for c in list(pipe.queue)[1:] if isinstance(c, FakeClient) and c.phase != 3]
                pipe.prepare_kill(clients[i], query_only)
                assert pipe.closing and pipe.queue[0] is clients[i]
                for c in behind:
                    inflight.pop(clients.index(c))["state"] = "rerun"
            else:
                pipe.prepare_kill(clients[i], query_only)
                assert clients[i].piped is None
                if query_only:
                    inflight.pop(i)["state"] = "interrupted"
                else:  # KILL CONNECTION: ddm.execute.threads closes the client next
                    clients[i].phase = 3
                    gone.add(i)
                    inflight.pop(i)["state"] = "gone"
        elif op[0] == "gone":
            i = op[1]
            if i in gone:
                continue
            clients[i].phase = 3
            gone.add(i)
            if clients[i].piped is not None:
                clients[i].piped.client_gone(clients[i])
            if i in inflight:
                inflight.pop(i)["state"] = "gone"
        # answered statements leave `inflight` when their client's command is done
        for i, s in list(inflight.items()):
            if clients[i].piped is None and s["state"] == "queued":
                inflight.pop(i)

    pipe._flush()
    node_reads()
    if pending:
        pipe.conn.data_received(pending)
    assert not pipe.queue
    assert pipe.dead == pipe.closing  # a KILL of the head retires the pipe once it is through; nothing else ends it
    for i, c in enumerate(clients):
        mine = [s for s in stmts if s["client"] == i]
        want = b""
        for s in mine:
            if s["state"] == "gone":  # part of its answer may have gone out before the client went
                want += _node_answer(frame(b"\x03SELECT " + s["tag"].encode(), 0))
                break
            if s["state"] == "queued":  # answered on the pipe
                want += _node_answer(frame(b"\x03SELECT " + s["tag"].encode(), 0))
            elif s["state"] == "interrupted":
                want += frame(err_packet(ER.QUERY_INTERRUPTED, b"HY000", b"Query execution was interrupted"), 1)
        if i in gone:
            assert want.startswith(c.transport.data), (i, c.transport.data, want)
        else:
            assert c.transport.data == want, (i, c.transport.data, want)
            done = sum(1 for s in mine if s["state"] in ("queued", "interrupted"))
            assert c.done == done and c.reruns == sum(1 for s in mine if s["state"] == "rerun")
