"""Cross-node atomic commit (ddm.execute.xa) under faults: a bank whose accounts are sharded over two real data nodes
(even ids on n0, odd ids on n1), transfers between an even and an odd account, and a fault injected at each step of
two-phase commit through ddm's test hook ($DDM_XA_FAULT_FILE: the step and what to kill are decided before the
transfer, nothing depends on timing). Faults: kill -9 of the ddm worker, kill -9 of one data node's mariadbd (then
started again on the same datadir). After recovery, in every case: the sum of balances is unchanged, XA RECOVER is
empty on both nodes, a transfer whose COMMIT answered OK is applied, one that got an error is not, and one whose
worker died is applied exactly when its commit decision had been logged.

A private two-node sandbox (the data nodes are killed here) and ddm as a subprocess (its worker is killed)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
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

    def client(self) -> pymysql.connections.Connection:
        deadline = time.monotonic() + 30
        while True:
            try:
                return pymysql.connect(host="127.0.0.1", port=self.ddm.port, user="ddm", password="ddm",
                                       database="bank", autocommit=True, read_timeout=30, **NO_TLS)
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

    def transfer(self, src: int, dst: int, amount: int) -> str:
        """'ok', 'error' (a clean error for COMMIT or a statement) or 'lost' (the connection died)."""
        c = self.client()
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


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    if not sb.mariadb_available():
        pytest.skip("MariaDB server not installed")
    root = str(tmp_path_factory.mktemp("xa_sandbox"))
    base = sb.find_free_base(36000 + (os.getpid() % 40) * 10, nodes=2, step=10, tries=80)
    box = sb.up(root, nodes=2, replicas=0, base_port=base, databases=())
    work = tmp_path_factory.mktemp("xa_ddm")
    fault_file = work / "fault"
    old = os.environ.get("DDM_XA_FAULT_FILE")
    os.environ["DDM_XA_FAULT_FILE"] = str(fault_file)
    d = None
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
        dbs = {"bank": two_level_database(["n0", "n1"], "bank", "acct", "id", tables=1)}
        cfg = ddm_config(free_port(), nodes, dbs, xa_log_node="n0", xa_recovery_interval=0.3, xa_recovery_grace=1)
        d = start_ddm(work, cfg)
        if d.mode != "subprocess":
            pytest.skip("needs ddm-server as a subprocess (its worker is killed)")
        yield Bank(box, d, fault_file)
    finally:
        if d is not None:
            d.stop()
        if old is None:
            os.environ.pop("DDM_XA_FAULT_FILE", None)
        else:
            os.environ["DDM_XA_FAULT_FILE"] = old
        sb.down(root)


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


# (step, what is killed, expected outcome of the transfer: applied?) - the first branch is n0's (the even account's
# UPDATE runs first), the decision log lives on n0
CASES = [
    ("prepared_some", "worker", False),
    ("prepared_all", "worker", False),
    ("decided", "worker", True),
    ("committed_some", "worker", True),
    ("prepared_some", "n1", False),  # n1's prepare fails: clean error
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
        assert outcome == ("ok" if applied else "error 1614"), outcome
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
