"""Cross-node atomic commit (ddm.execute.xa) under faults: a bank whose accounts are sharded over two real data nodes
(even ids on n0, odd ids on n1), transfers between an even and an odd account, and a fault injected at each step of
two-phase commit through ddm's test hook ($DDM_XA_FAULT_FILE: the step and what to kill are decided before the
transfer, nothing depends on timing). Faults: kill -9 of the ddm worker, kill -9 of one data node's mariadbd (then
started again on the same datadir). After recovery, in every case: the sum of balances is unchanged, XA RECOVER is
empty on both nodes, a transfer whose COMMIT answered OK is applied, one that got an error is not, and one whose
worker died is applied exactly when its commit decision had been logged.

A private two-node sandbox (the data nodes are killed here) and ddm as a subprocess (its worker is killed)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
import yaml
from ddm_fixtures import DDM, NO_TLS, ddm_config, free_port, start_ddm, two_level_database

from ddm.tools import sandbox as sb

pytestmark = pytest.mark.integration

ACCOUNTS = 8
START = 1000


class Bank:
    def __init__(self, box: sb.Sandbox, ddm: DDM, fault_file: Path) -> None:
        self.box, self.ddm, self.fault_file = box, ddm, fault_file
        self.expected = {i: START for i in range(ACCOUNTS)}

    def node(self, name: str) -> pymysql.connections.Connection:
        p = self.box.primary(name)
        return pymysql.connect(host="127.0.0.1", port=p.port, user=self.box.node_user,
                               password=self.box.node_password, autocommit=True, connect_timeout=2, **NO_TLS)

    def client(self, database: str = "bank") -> pymysql.connections.Connection:
        deadline = time.monotonic() + 30
        while True:
            try:
                return pymysql.connect(host="127.0.0.1", port=self.ddm.port, user="ddm", password="ddm",
                                       database=database, autocommit=True, read_timeout=30, **NO_TLS)
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def balances(self) -> dict[int, int]:
        out = {}
        for name in ("n0", "n1"):
            with self.node(name) as c, c.cursor() as cur:
                cur.execute(f"SELECT id, bal FROM bank_{name[1]}.acct_0")
                out.update({int(i): int(b) for i, b in cur.fetchall()})
        return out

    def in_doubt(self) -> list:
        rows = []
        for name in ("n0", "n1"):
            try:
                with self.node(name) as c, c.cursor() as cur:
                    cur.execute("XA RECOVER")
                    rows += [(name, r) for r in cur.fetchall()]
            except pymysql.err.OperationalError:
                rows.append((name, "down"))
        return rows

    def transfer(self, src: int, dst: int, amount: int, database: str = "bank") -> str:
        """'ok', 'error <code>' (a clean error for COMMIT or a statement) or 'lost' (the connection died)."""
        c = self.client(database)
        try:
            with c.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("UPDATE acct SET bal = bal - %s WHERE id = %s", (amount, src))
                cur.execute("UPDATE acct SET bal = bal + %s WHERE id = %s", (amount, dst))
                cur.execute("COMMIT")
            return "ok"
        except pymysql.err.OperationalError as e:
            if e.args[0] in (2013, 2006, 2055):
                return "lost"
            return f"error {e.args[0]}"
        except pymysql.err.MySQLError as e:
            return f"error {e.args[0]}"
        finally:
            try:
                c.close()
            except pymysql.err.Error:
                pass

    def kill_and_restart(self, name: str) -> None:
        """Make sure node `name` runs again (the hook killed it) on the same datadir."""
        inst = self.box.primary(name)
        bins = sb.ensure_mariadb(install=False)
        for stale in (inst.pid_file, inst.socket):
            if os.path.exists(stale):
                os.unlink(stale)
        with open(inst.log, "ab") as log:
            proc = subprocess.Popen([bins["mariadbd"], f"--defaults-file={inst.cnf}"], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        inst.pid = proc.pid
        sb._RUNNING[proc.pid] = proc
        sb._save(self.box)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.node(name).close()
                return
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def settle(self) -> None:
        """Wait until recovery has resolved every in-doubt branch."""
        deadline = time.monotonic() + 40
        while self.in_doubt():
            assert time.monotonic() < deadline, f"still in doubt: {self.in_doubt()}\n{self.ddm.log()}"
            time.sleep(0.2)


@contextlib.contextmanager
def open_bank(root: str, work: Path, **server: object) -> Iterator[Bank]:
    """A private two-node sandbox under `root` with the bank's tables, and ddm-server (workdir `work`) in front of it
    with the fault hook armed; `server` adds server settings. Also used by perf/xa_fault_loop.py."""
    base = sb.find_free_base(36000 + (os.getpid() % 40) * 10, nodes=2, step=10, tries=80)
    box = sb.up(root, nodes=2, replicas=0, base_port=base, databases=())
    fault_file = work / "fault"
    old = os.environ.get("DDM_XA_FAULT_FILE")
    os.environ["DDM_XA_FAULT_FILE"] = str(fault_file)
    bank = None
    try:
        nodes = {}
        for name in ("n0", "n1"):
            p = box.primary(name)
            nodes[name] = {"host": "127.0.0.1", "port": p.port, "user": box.node_user, "password": box.node_password,
                           "pool": {"min_size": 0, "max_size": 16, "acquire_timeout": 3, "connect_timeout": 2}}
            with pymysql.connect(host="127.0.0.1", port=p.port, user=box.node_user, password=box.node_password,
                                 autocommit=True, **NO_TLS) as c, c.cursor() as cur:
                i = name[1]
                cur.execute(f"CREATE DATABASE bank_{i}")
                cur.execute(f"CREATE TABLE bank_{i}.acct_0 (id INT PRIMARY KEY, bal INT NOT NULL) ENGINE=InnoDB")
                cur.execute(f"INSERT INTO bank_{i}.acct_0 VALUES " + ", ".join(
                    f"({a}, {START})" for a in range(ACCOUNTS) if a % 2 == int(i)))
        layout = two_level_database(["n0", "n1"], "bank", "acct", "id", tables=1)
        dbs = {"bank": layout, "bank_local": {**layout, "transactions": "local"},
               "plain": {"node": "n1", "database": "bank_1"}}
        settings = {"xa_log_node": "n0", "xa_recovery_interval": 0.3, "xa_recovery_grace": 1, **server}
        bank = Bank(box, start_ddm(work, ddm_config(free_port(), nodes, dbs, **settings)), fault_file)
        yield bank
    finally:
        if bank is not None:
            bank.ddm.stop()
        if old is None:
            os.environ.pop("DDM_XA_FAULT_FILE", None)
        else:
            os.environ["DDM_XA_FAULT_FILE"] = old
        sb.down(root)


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    if not sb.mariadb_available():
        pytest.skip("MariaDB server not installed")
    with open_bank(str(tmp_path_factory.mktemp("xa_sandbox")), tmp_path_factory.mktemp("xa_ddm")) as b:
        if b.ddm.mode != "subprocess":
            pytest.skip("needs ddm-server as a subprocess (its worker is killed)")
        yield b


def _check(bank: Bank) -> None:
    bank.settle()
    got = bank.balances()
    assert sum(got.values()) == ACCOUNTS * START
    assert got == bank.expected, bank.ddm.log()


def test_transfers_commit_on_both_nodes_and_client_xa_is_refused(bank: Bank) -> None:
    assert bank.transfer(0, 1, 5) == "ok"
    bank.expected[0] -= 5
    bank.expected[1] += 5
    _check(bank)
    c = bank.client()
    try:
        with pytest.raises(pymysql.err.MySQLError) as e, c.cursor() as cur:
            cur.execute("XA START 'x'")
        assert e.value.args[0] == 1235 and "XA" in e.value.args[1]
    finally:
        c.close()
    with bank.node("n0") as c, c.cursor() as cur:  # the decision log exists (2PC ran) and forgets what it finished
        deadline = time.monotonic() + 5
        while True:
            cur.execute("SELECT COUNT(*) FROM ddm.xa_log")
            if cur.fetchone()[0] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        cur.execute("SELECT COUNT(*) FROM ddm.xa_log")
        assert cur.fetchone()[0] == 0


def test_a_deadlock_ends_the_xa_transaction_everywhere(bank: Bank) -> None:
    """InnoDB's deadlock on one node rolls that branch back; ddm rolls back the other node's branch too, and the
    client's next BEGIN (what sysbench sends after a 1213) and COMMIT work, as on one server."""
    import threading

    a, b = bank.client(), bank.client()
    errors: list[int] = []

    def run(c: pymysql.connections.Connection, first: int, second: int, other_node: int) -> None:
        try:
            with c.cursor() as cur:
                cur.execute(f"UPDATE acct SET bal = bal + 1 WHERE id = {first}")
                barrier.wait(10)
                cur.execute(f"UPDATE acct SET bal = bal - 1 WHERE id = {second}")
                cur.execute("COMMIT")
        except pymysql.err.MySQLError as e:
            errors.append(e.args[0])

    barrier = threading.Barrier(2)
    try:
        for c, other in ((a, 1), (b, 3)):
            with c.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute(f"UPDATE acct SET bal = bal + 0 WHERE id = {other}")  # a branch on n1 too
        ta = threading.Thread(target=run, args=(a, 0, 2, 1))
        tb = threading.Thread(target=run, args=(b, 2, 0, 3))
        ta.start()
        tb.start()
        ta.join(60)
        tb.join(60)
        assert errors == [1213], errors
        for c in (a, b):
            with c.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("UPDATE acct SET bal = bal + 0 WHERE id = 1")
                cur.execute("COMMIT")
    finally:
        a.close()
        b.close()
    bank.settle()
    got = bank.balances()
    # the winner committed +1 on its first account and -1 on its second, the loser nothing (on neither node)
    won_a = got[0] == bank.expected[0] + 1
    bank.expected[0] += 1 if won_a else -1
    bank.expected[2] += -1 if won_a else 1
    _check(bank)


# (step, what is killed, expected outcome of the transfer: applied?) - the first branch is n0's (the even account's
# UPDATE runs first), the decision log lives on n0
CASES = [
    ("prepared_some", "worker", False),
    ("prepared_all", "worker", False),
    ("decided", "worker", True),
    ("committed_some", "worker", True),
    ("prepared_some", "n1", False),  # n1's prepare fails: clean error (ER_XA_RBROLLBACK 1402)
    ("prepared_all", "n1", True),  # n1 prepared before it died: decision logged, COMMIT OK, recovery commits it
    ("decided", "n1", True),
    ("committed_some", "n1", True),
    ("prepared_all", "n0", False),  # the decision log's node: no decision, error, presumed abort
    ("committed_some", "n0", True),  # n0 was committed just before it died
]


@pytest.mark.parametrize("step,victim,applied", CASES, ids=[f"{s}-{v}" for s, v, _ in CASES])
def test_fault_at_each_step(bank: Bank, step: str, victim: str, applied: bool) -> None:
    n = CASES.index((step, victim, applied))
    src, dst, amount = (2 * n) % ACCOUNTS, (2 * n + 3) % ACCOUNTS, 10 + n
    if victim == "worker":
        bank.fault_file.write_text(f"{step} exit")
    else:
        bank.fault_file.write_text(f"{step} kill {bank.box.primary(victim).pid}")
    outcome = bank.transfer(src, dst, amount)
    assert not bank.fault_file.exists(), "the hook did not fire"
    if victim != "worker":
        bank.kill_and_restart(victim)
        # 1399: the decision log's node died while the decision was written, so the outcome is the log's (here: none,
        # the write never reached it, so recovery rolls back); the client is told it is unknown
        expected = ("ok",) if applied else ("error 1402", "error 1399") if victim == "n0" else ("error 1402",)
        assert outcome in expected, outcome
    else:
        assert outcome == "lost"
    if applied:
        bank.expected[src] -= amount
        bank.expected[dst] += amount
    _check(bank)
    # and ddm goes on: a transfer after the fault commits on both nodes
    assert bank.transfer(dst, src, 1) == "ok"
    bank.expected[dst] -= 1
    bank.expected[src] += 1
    _check(bank)


@pytest.mark.parametrize("step,applied", [("prepared_all", False), ("decided", True)])
def test_master_and_worker_killed(bank: Bank, step: str, applied: bool) -> None:
    """kill -9 of the whole ddm (master, then the worker) at a step; a new ddm on the same config recovers at start."""
    assert bank.ddm.proc is not None
    bank.fault_file.write_text(f"{step} killall {bank.ddm.proc.pid}")
    assert bank.transfer(3, 6, 40) == "lost"
    bank.ddm.proc.wait(10)
    cfg = yaml.safe_load(bank.ddm.config_path.read_text())
    bank.ddm = start_ddm(bank.ddm.workdir, cfg)
    if applied:
        bank.expected[3] -= 40
        bank.expected[6] += 40
    _check(bank)


def test_local_mode_commits_per_node_and_pass_through_keeps_client_xa(bank: Bank) -> None:
    bank.fault_file.write_text("prepared_some exit")  # never reached: no two-phase commit in local mode
    try:
        assert bank.transfer(1, 2, 3, database="bank_local") == "ok"
        assert bank.fault_file.exists()
    finally:
        bank.fault_file.unlink()
    bank.expected[1] -= 3
    bank.expected[2] += 3
    _check(bank)
    c = bank.client("plain")
    try:
        with c.cursor() as cur:
            for sql in ("XA START 'mine'", "UPDATE acct_0 SET bal = bal WHERE id = 1", "XA END 'mine'",
                        "XA PREPARE 'mine'", "XA ROLLBACK 'mine'"):
                cur.execute(sql)
    finally:
        c.close()


def test_ddl_inside_an_xa_transaction_is_refused_and_nothing_commits(bank: Bank) -> None:
    c = bank.client()
    try:
        with c.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("UPDATE acct SET bal = bal - 7 WHERE id = 0")
            with pytest.raises(pymysql.err.MySQLError) as e:
                cur.execute("CREATE TABLE acct_extra (id INT)")
            assert e.value.args[0] == 1399
            cur.execute("ROLLBACK")
    finally:
        c.close()
    _check(bank)


def test_file_decision_log(bank: Bank, tmp_path: Path) -> None:
    """The same faults with `xa_log: file`: ddm restarted on a config that logs decisions to an fsync'd file."""
    cfg = yaml.safe_load(bank.ddm.config_path.read_text())
    cfg["server"].update(xa_log="file", xa_log_path=str(tmp_path / "xa-decisions.log"))
    cfg["server"].pop("xa_log_node")
    bank.ddm.stop()
    bank.ddm = start_ddm(tmp_path / "ddm", cfg)
    for step, applied in (("prepared_all", False), ("decided", True), ("committed_some", True)):
        bank.fault_file.write_text(f"{step} exit")
        assert bank.transfer(4, 7, 20) == "lost"
        if applied:
            bank.expected[4] -= 20
            bank.expected[7] += 20
        _check(bank)
    bank.fault_file.write_text(f"committed_some kill {bank.box.primary('n1').pid}")
    assert bank.transfer(6, 1, 30) == "ok"
    bank.kill_and_restart("n1")
    bank.expected[6] -= 30
    bank.expected[1] += 30
    _check(bank)
    assert b"C ddm:" in (tmp_path / "xa-decisions.log").read_bytes()


def test_admin_lists_and_forces_in_doubt_branches(bank: Bank, capsys: pytest.CaptureFixture[str]) -> None:
    """`ddm xa list` / `ddm xa commit ID` with ddm stopped: branches prepared by hand on both nodes (as a ddm whose
    decision log was lost would leave them) are listed, then committed on both nodes."""
    from ddm.tools import cli

    bank.ddm.stop()
    gtrid = "ddm:elsewhere:0:1:1"
    held = []
    for name, (acct, delta) in (("n0", (0, -9)), ("n1", (1, 9))):
        c = bank.node(name)
        with c.cursor() as cur:
            cur.execute(f"XA START '{gtrid}','{name}'")
            cur.execute(f"UPDATE bank_{name[1]}.acct_0 SET bal = bal + {delta} WHERE id = {acct}")
            cur.execute(f"XA END '{gtrid}','{name}'")
            cur.execute(f"XA PREPARE '{gtrid}','{name}'")
        held.append(c)
    for c in held:
        c.close()  # MariaDB keeps a prepared branch after its connection goes
    cfg = str(bank.ddm.config_path)
    assert cli.main(["xa", "list", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert gtrid in out and "presumed abort" in out and "n0" in out and "n1" in out
    assert cli.main(["xa", "commit", gtrid, "--config", cfg]) == 0
    assert "2 branch" in capsys.readouterr().out
    assert cli.main(["xa", "rollback", gtrid, "--config", cfg]) == 1  # the log holds the commit now
    bank.expected[0] -= 9
    bank.expected[1] += 9
    _check(bank)
