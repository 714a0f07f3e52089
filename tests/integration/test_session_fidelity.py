"""Session fidelity (issue 9 items 2-4): prepared statements, GET_LOCK() locks and TEMPORARY tables stay the
client's own. Each scenario runs the same statements through ddm and straight against the node and compares the
answers (and the rows left behind).

- A client's PREPARE is answered by the node (the tables as they are now), never from the node-statement cache.
- Node statements are closed (COM_STMT_CLOSE) once no client statement holds them: at once when replaced, after
  `pool.statement_idle_timeout` when idle (1s here), so Prepared_stmt_count returns to its baseline.
- GET_LOCK() pins the connection; it is reset before anyone else gets it (disconnect, COM_CHANGE_USER).
- CREATE TEMPORARY pins whichever command carried it (prepared, multi-statement).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest
from ddm_fixtures import *  # noqa: F403
from ddm_fixtures import (
    DDM,
    PHYS,
    Node,
    RawClient,
    ServerError,
    column_name,
    ddm_config,
    free_port,
    native_scramble,
    query_all,
    start_ddm,
)
from pymysql.constants import CLIENT

pytestmark = pytest.mark.integration

DB = "sbtest"
IDLE = 1.0  # pool.statement_idle_timeout of the ddm started here


@pytest.fixture(scope="module")
def sf_ddm(node0: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DDM]:
    conf = node0.conf()
    conf["pool"]["statement_idle_timeout"] = IDLE
    cfg = ddm_config(free_port(), {"n0": conf}, {DB: {"node": "n0", "database": PHYS[DB]}})
    d = start_ddm(tmp_path_factory.mktemp("ddm-sf"), cfg)
    try:
        yield d
    finally:
        d.stop()


class Target:
    """Where a scenario runs: through ddm, or straight to the node (same database, other names)."""

    def __init__(self, name: str, node: Node, ddm: DDM | None) -> None:
        self.name, self.node, self.ddm = name, node, ddm
        self.made: list[Any] = []

    def raw(self) -> RawClient:
        if self.ddm is not None:
            c = RawClient(self.ddm.port, "native", "nativepw", DB)
        else:
            c = RawClient(self.node.port, self.node.user, self.node.password, PHYS[DB])
        self.made.append(c)
        return c

    def text(self, **kw: Any) -> pymysql.connections.Connection:
        if self.ddm is not None:
            params = {"port": self.ddm.port, "user": "native", "password": "nativepw", "database": DB}
        else:
            params = {"port": self.node.port, "user": self.node.user, "password": self.node.password,
                      "database": PHYS[DB]}
        c = pymysql.connect(host="127.0.0.1", autocommit=True, charset="utf8mb4", ssl_disabled=True, **params, **kw)
        self.made.append(c)
        return c

    def user(self) -> tuple[str, str]:
        return ("native", "nativepw") if self.ddm is not None else (self.node.user, self.node.password)

    def close(self) -> None:
        for c in self.made:
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def targets(sf_ddm: DDM, node0: Node) -> Iterator[list[Target]]:
    ts = [Target("ddm", node0, sf_ddm), Target("direct", node0, None)]
    yield ts
    for t in ts:
        t.close()


def node_sql(node: Node, sql: str) -> list[tuple]:
    with pymysql.connect(host="127.0.0.1", port=node.port, user=node.user, password=node.password,
                         database=PHYS[DB], autocommit=True) as c:
        return query_all(c, sql)


def prepare(c: RawClient, sql: str) -> tuple[int, list[str], int]:
    """COM_STMT_PREPARE -> (statement id, column names, parameter count)."""
    c.command(b"\x16" + sql.encode())
    p = c.read_packet()
    if p[0] == 0xFF:
        raise c.error(p)
    stmt_id, ncols, nparams = struct.unpack_from("<IHH", p, 1)
    names = []
    if nparams:
        for _ in range(nparams):
            c.read_packet()
        assert c.read_packet()[0] == 0xFE
    if ncols:
        names = [column_name(c.read_packet()) for _ in range(ncols)]
        assert c.read_packet()[0] == 0xFE
    return stmt_id, names, nparams


def close_stmt(c: RawClient, stmt_id: int) -> None:
    c.write_packet(b"\x19" + struct.pack("<I", stmt_id), 0)  # no response


def attempt(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ServerError as exc:
        return ("error", exc.code)
    except pymysql.err.Error as exc:
        return ("error", exc.args[0])


def prepared_count(node: Node) -> int:
    return int(node_sql(node, "SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")[0][1])


def change_user(c: RawClient, user: str, password: str, db: str) -> None:
    """COM_CHANGE_USER (native password, scrambled with the greeting's salt), then the auth exchange."""
    scr = native_scramble(password.encode(), c.salt)
    payload = (b"\x11" + user.encode() + b"\0" + bytes([len(scr)]) + scr + db.encode() + b"\0"
               + struct.pack("<H", 45) + b"mysql_native_password\0")
    c.write_packet(payload, 0)
    c.finish_auth(password)


# --------------------------------------------------------------------------------------------- prepared statements


def test_prepare_after_drop_create_describes_the_new_columns(targets: list[Target]) -> None:
    answers = {}
    for t in targets:
        node_sql(t.node, "DROP TABLE IF EXISTS sf_cols")
        node_sql(t.node, "CREATE TABLE sf_cols (a INT, b INT)")
        node_sql(t.node, "INSERT INTO sf_cols VALUES (1, 2)")
        c = t.raw()
        out = []
        sid, cols, _ = prepare(c, "SELECT * FROM sf_cols")
        out.append((cols, c.execute(sid)))  # kept open: its node statement is held
        # DDL through the client (ddm moves its schema epoch) ...
        c.query("DROP TABLE sf_cols")
        c.query("CREATE TABLE sf_cols (x INT, y INT, z VARCHAR(8))")
        c.query("INSERT INTO sf_cols VALUES (3, 4, 'five')")
        sid2, cols2, _ = prepare(c, "SELECT * FROM sf_cols")
        out.append((cols2, c.execute(sid2)))
        close_stmt(c, sid2)
        # ... and by another application on the node, unseen by ddm: the node still answers the PREPARE
        node_sql(t.node, "DROP TABLE sf_cols")
        node_sql(t.node, "CREATE TABLE sf_cols (p INT)")
        other = t.raw()
        sid3, cols3, _ = prepare(other, "SELECT * FROM sf_cols")
        out.append((cols3, other.execute(sid3)))
        close_stmt(c, sid)
        answers[t.name] = out
    node_sql(targets[0].node, "DROP TABLE IF EXISTS sf_cols")
    assert answers["ddm"] == answers["direct"]
    assert [cols for cols, _ in answers["direct"]] == [["a", "b"], ["x", "y", "z"], ["p"]]


def _execute_long_data(c: RawClient, sql: str, ident: int, text: bytes) -> Any:
    """PREPARE an INSERT of (?, ?), send the second parameter as COM_STMT_SEND_LONG_DATA, EXECUTE, CLOSE."""
    sid, _, nparams = prepare(c, sql)
    assert nparams == 2
    if text.isdigit():  # inline first (MariaDB 10.11 stores an address for long data sent after that)
        c.execute(sid, [ident, int(text)])
        ident += 1
    c.send_long_data(sid, 1, text)
    payload = (b"\x17" + struct.pack("<IBI", sid, 0, 1) + b"\x00" + b"\x01" + b"\x08\x00\xfc\x00"
               + struct.pack("<q", ident))
    c.command(payload)
    _, _, ok = c.read_result()
    close_stmt(c, sid)
    return ok[0]


def test_long_data_across_two_clients_on_recreated_tables(targets: list[Target]) -> None:
    rows = {}
    insert = "INSERT INTO sf_ld VALUES (?, ?)"
    for t in targets:
        node_sql(t.node, "DROP TABLE IF EXISTS sf_ld")
        first = t.raw()
        first.query("CREATE TABLE sf_ld (id INT, v BIGINT)")
        assert _execute_long_data(first, insert, 1, b"12345") == 0
        first.close()
        second = t.raw()
        second.query("DROP TABLE sf_ld")
        second.query("CREATE TABLE sf_ld (id BIGINT, v VARCHAR(64))")
        assert _execute_long_data(second, insert, 2, b"the string sent") == 0
        rows[t.name] = node_sql(t.node, "SELECT id, v FROM sf_ld ORDER BY id")
    node_sql(targets[0].node, "DROP TABLE IF EXISTS sf_ld")
    # (the first client's rows went with its table; the second client's statement never got an inline value)
    assert rows["ddm"] == rows["direct"] == [(2, "the string sent")]


def test_long_data_after_another_clients_inline_execute(targets: list[Target]) -> None:
    """Same table, no DDL: the first client executes the INSERT with inline values and stays; the second sends its
    value as long data. Its statement must not be the first client's node statement."""
    rows = {}
    insert = "INSERT INTO sf_ld2 VALUES (?, ?)"
    for t in targets:
        node_sql(t.node, "DROP TABLE IF EXISTS sf_ld2")
        node_sql(t.node, "CREATE TABLE sf_ld2 (id INT, v VARCHAR(64))")
        first = t.raw()
        sid, _, _ = prepare(first, insert)
        first.execute(sid, [1, 11])
        second = t.raw()
        assert _execute_long_data(second, insert, 2, b"long data of the second client") == 0
        first.execute(sid, [3, 33])
        rows[t.name] = node_sql(t.node, "SELECT id, v FROM sf_ld2 ORDER BY id")
    node_sql(targets[0].node, "DROP TABLE IF EXISTS sf_ld2")
    assert rows["ddm"] == rows["direct"] == [(1, "11"), (2, "long data of the second client"), (3, "33")]


def test_closed_statements_are_closed_on_the_node(targets: list[Target]) -> None:
    node = targets[0].node
    node_sql(node, "DROP TABLE IF EXISTS sf_cnt")
    node_sql(node, "CREATE TABLE sf_cnt (id INT PRIMARY KEY)")
    result = {}
    for t in targets:
        node_sql(node, "DELETE FROM sf_cnt")
        base = prepared_count(node)
        c = t.raw()
        for i in range(50):
            sid, _, _ = prepare(c, "INSERT INTO sf_cnt VALUES (?)")  # the same text each time
            c.execute(sid, [i])
            close_stmt(c, sid)
            sid, _, _ = prepare(c, f"SELECT id FROM sf_cnt WHERE id = ? + {i % 25}")  # 25 texts
            assert c.execute(sid, [i - i % 25]) == [(i,)]
            close_stmt(c, sid)
        c.query("SELECT 1")  # the closes are through
        c.close()
        deadline = time.monotonic() + IDLE + 8
        after = prepared_count(node) - base
        while after > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            after = prepared_count(node) - base
        result[t.name] = after <= 0  # (other tests' idle statements may close meanwhile: below is fine)
    node_sql(node, "DROP TABLE IF EXISTS sf_cnt")
    assert result == {"ddm": True, "direct": True}


# ------------------------------------------------------------------------------------------------------ user locks


def _churn(t: Target, n: int = 4) -> None:
    """Other clients use the pool (in old code they would get the connection the lock was taken on)."""
    for _ in range(n):
        c = t.text()
        query_all(c, "SELECT 1")
        c.close()


def test_get_lock_released_when_the_client_leaves(targets: list[Target]) -> None:
    answers = {}
    for t in targets:
        holder, other = t.text(), t.text()
        out = [query_all(holder, "SELECT GET_LOCK('sf_a', 0)"), query_all(holder, "select get_lock('sf_b', 0)")]
        _churn(t)
        out.append(query_all(other, "SELECT IS_FREE_LOCK('sf_a'), IS_FREE_LOCK('sf_b')"))
        out.append(query_all(holder, "SELECT RELEASE_LOCK('sf_a')"))  # 1: this client's connection holds it
        _churn(t)
        out.append(query_all(other, "SELECT IS_FREE_LOCK('sf_a'), IS_FREE_LOCK('sf_b')"))
        holder.close()
        deadline = time.monotonic() + 5
        free = query_all(other, "SELECT IS_FREE_LOCK('sf_b')")
        while free != [(1,)] and time.monotonic() < deadline:
            time.sleep(0.1)
            free = query_all(other, "SELECT IS_FREE_LOCK('sf_b')")
        out.append(free)
        answers[t.name] = out
    assert answers["ddm"] == answers["direct"]
    assert answers["direct"][-1] == [(1,)]


def test_get_lock_released_by_release_all_locks_then_unpinned(targets: list[Target]) -> None:
    answers = {}
    for t in targets:
        holder, other = t.text(), t.text()
        out = [query_all(holder, "SELECT GET_LOCK('sf_r', 0)"), query_all(holder, "SELECT RELEASE_ALL_LOCKS()")]
        _churn(t)
        out.append(query_all(other, "SELECT IS_FREE_LOCK('sf_r'), GET_LOCK('sf_r', 0), RELEASE_ALL_LOCKS()"))
        answers[t.name] = out
    assert answers["ddm"] == answers["direct"] == [[(1,)], [(1,)], [(1, 1, 1)]]


def test_get_lock_released_on_change_user(targets: list[Target]) -> None:
    answers = {}
    for t in targets:
        c = t.raw()
        other = t.text()
        out = [c.query("SELECT GET_LOCK('sf_cu', 0)"), query_all(other, "SELECT IS_FREE_LOCK('sf_cu')")]
        user, password = t.user()
        change_user(c, user, password, DB if t.ddm is not None else PHYS[DB])
        deadline = time.monotonic() + 5
        free = query_all(other, "SELECT IS_FREE_LOCK('sf_cu')")
        while free != [(1,)] and time.monotonic() < deadline:
            time.sleep(0.1)
            free = query_all(other, "SELECT IS_FREE_LOCK('sf_cu')")
        out.append(free)
        out.append(c.query("SELECT 1"))
        answers[t.name] = out
    assert answers["ddm"] == answers["direct"] == [[(b"1",)], [(0,)], [(1,)], [(b"1",)]]


def test_prepared_get_lock_pins(targets: list[Target]) -> None:
    answers = {}
    for t in targets:
        c = t.raw()
        sid, _, _ = prepare(c, "SELECT GET_LOCK(?, 0)")
        out = [c.execute(sid, ["sf_p"])]
        _churn(t)
        out.append(c.query("SELECT RELEASE_LOCK('sf_p')"))
        answers[t.name] = out
        c.close()
    assert answers["ddm"] == answers["direct"] == [[(1,)], [(b"1",)]]


# ------------------------------------------------------------------------------------------ temporary tables


def test_prepared_create_temporary_pins(targets: list[Target]) -> None:
    answers = {}
    for t in targets:
        node_sql(t.node, "DROP TABLE IF EXISTS sf_tmp")
        c = t.raw()
        out = []
        for sql, params in (("CREATE TEMPORARY TABLE sf_tmp (id INT)", []), ("INSERT INTO sf_tmp VALUES (?)", [5]),
                            ("SELECT id FROM sf_tmp", [])):
            sid, _, _ = prepare(c, sql)
            out.append(attempt(lambda c=c, sid=sid, params=params: c.execute(sid, params)))
            _churn(t)
        other = t.raw()
        for sql in ("CREATE TEMPORARY TABLE sf_tmp (id INT)", "SELECT COUNT(*) FROM sf_tmp"):
            out.append(attempt(lambda o=other, sql=sql: o.execute(prepare(o, sql)[0])))
        out.append(attempt(lambda c=c: c.execute(prepare(c, "SELECT id FROM sf_tmp")[0])))
        answers[t.name] = out
    assert answers["ddm"] == answers["direct"] == [[], [], [(5,)], [], [(0,)], [(5,)]]


def test_multi_statement_create_temporary_pins(targets: list[Target]) -> None:
    answers = {}
    for t in targets:
        c = t.text(client_flag=CLIENT.MULTI_STATEMENTS)
        out = [attempt(lambda c=c: query_all(c, "CREATE TEMPORARY TABLE sf_mtmp (id INT); "
                                                  "INSERT INTO sf_mtmp VALUES (7)"))]
        _churn(t)
        out.append(attempt(lambda c=c: query_all(c, "SELECT id FROM sf_mtmp")))
        other = t.text()
        out.append(attempt(lambda o=other: query_all(o, "SELECT id FROM sf_mtmp")))
        answers[t.name] = out
    assert answers["ddm"] == answers["direct"]
    assert answers["direct"][1] == [(7,)] and answers["direct"][2][0] == "error"


def test_statement_id_minus_one_is_the_last_prepared(targets: list[Target]):
    """MariaDB's statement id 0xFFFFFFFF names the statement the connection prepared last (libmariadb's
    mariadb_stmt_execute_direct and bulk execute send PREPARE and EXECUTE(-1) back to back); after a failed PREPARE
    it names nothing. Found by Connector/C's execute_direct tests once ddm offered STMT_BULK_OPERATIONS."""
    answers = []
    for t in targets:
        c = t.raw()
        got = []
        c.prepare("SELECT ? + 1")
        got.append(c.execute(0xFFFFFFFF, [41]))
        c.prepare("SELECT CONCAT(?, 'x')")
        got.append(c.execute(0xFFFFFFFF, ["a"]))
        with pytest.raises(ServerError) as bad:
            c.prepare("SELEC nonsense")
        got.append(bad.value.args[0] if bad.value.args else str(bad.value))
        with pytest.raises(ServerError) as unknown:
            c.execute(0xFFFFFFFF, [1])
        got.append(unknown.value.args[0] if unknown.value.args else str(unknown.value))
        got.append(c.query("SELECT 7"))
        answers.append(got)
    assert answers[0] == answers[1]
