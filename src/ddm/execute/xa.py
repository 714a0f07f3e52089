"""Cross-node atomic commit: every branch of a sharded explicit transaction is an XA branch, ended by two-phase commit.

A sharded database with `transactions: xa` (the default) turns `BEGIN` / `START TRANSACTION` into a global
transaction id (`gtrid`, allocated here) and each node the transaction reaches starts its branch with
`XA START 'gtrid','node'` (a normal transaction cannot become an XA branch later, so every branch starts as one).
COMMIT then:

* one branch: `XA END; XA COMMIT ... ONE PHASE` in one round trip (what a plain COMMIT costs);
* several branches: `XA END; XA PREPARE` on every branch in parallel; any failure rolls every branch back and the
  client gets the node's error (or ER_XA_RBROLLBACK). With all prepared, the commit decision is written to the
  decision log (`ddm.execute.xalog`) and only then is `XA COMMIT` sent, in parallel. From the moment the decision is
  durable COMMIT answers OK: a branch whose XA COMMIT fails (its node died) is committed by recovery.

Recovery (`Coordinator.recover`, at start and every `server.xa_recovery_interval`): `XA RECOVER` on every node;
branches of ddm's gtrids (`ddm:<instance>:<worker>:<pid>:<seq>`) with a commit decision are committed, the others
rolled back (presumed abort) once nobody runs them: not this worker's transaction in flight, and either a worker of
this instance that no longer exists or one seen in doubt for `server.xa_recovery_grace`. With the table log the
abort is itself recorded first (an 'A' row), so a stalled coordinator's late commit decision loses the race on the
primary key instead of committing half a transaction.

Test hook: with $DDM_XA_FAULT_FILE set, the file holds `<step> exit` (kill -9 this worker), `<step> killall <pid>`
(kill -9 the master, then this worker) or `<step> kill <pid>` (kill -9 that process, e.g. a data node's mariadbd,
and wait for it to go) to run once at `step`: `prepared_some`
(after the first branch's prepare), `prepared_all`, `decided` (decision durable), `committed_some` (after the first
branch's XA COMMIT).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING

from ddm.execute.xalog import DecisionLog, LogUnavailable, make_log
from ddm.wire.backend import BackendError, NodeUnavailable
from ddm.wire.constants import er as ER
from ddm.wire.rowcodec import split_text_row

if TYPE_CHECKING:
    from ddm.execute.client import ClientSession
    from ddm.wire.backend import BackendConnection

log = logging.getLogger("ddm.execute.xa")

XA_RBROLLBACK = 1402  # ER_XA_RBROLLBACK, SQLSTATE XA100 (1614 is ER_XA_RBDEADLOCK)
# a branch the node rolled back itself (deadlock, timeout): XA END / statements in it fail with one of these
BRANCH_ROLLED_BACK = frozenset((1399, 1402, 1613, 1614))
XAER_NOTA = 1397
PREFIX = b"ddm:"
FAULT_ENV = "DDM_XA_FAULT_FILE"
STEPS = ("prepared_some", "prepared_all", "decided", "committed_some")


def fault(step: str) -> None:
    """The test hook (module docstring): a no-op unless $DDM_XA_FAULT_FILE names a file that asks for `step`."""
    path = os.environ.get(FAULT_ENV)
    if not path:
        return
    try:
        with open(path) as f:
            words = f.read().split()
    except OSError:
        return
    if len(words) < 2 or words[0] != step:
        return
    try:
        os.unlink(path)  # once
    except OSError:
        return  # another worker took it
    log.warning("xa test hook at %s: %s", step, " ".join(words[1:]))
    if words[1] == "exit":
        os.kill(os.getpid(), signal.SIGKILL)
    elif words[1] == "killall" and len(words) > 2:  # the master (its pid given), then this worker
        os.kill(int(words[2]), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    elif words[1] == "kill" and len(words) > 2:
        pid = int(words[2])
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.01)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _quote(b: bytes) -> bytes:
    return b"'" + b.replace(b"\\", b"\\\\").replace(b"'", b"\\'") + b"'"


def xid_sql(gtrid: bytes, bqual: bytes) -> bytes:
    return _quote(gtrid) + b"," + _quote(bqual)


def bqual_of(node: str) -> bytes:
    return node.encode()[:64]


def is_begin_plain(sql: bytes) -> bool:
    """BEGIN [WORK] / START TRANSACTION [READ WRITE]: what an XA branch can start as (XA START takes no
    READ ONLY / WITH CONSISTENT SNAPSHOT; those transactions stay local)."""
    words = sql.upper().replace(b";", b" ").replace(b",", b" ").split()
    return not ({b"ONLY", b"CONSISTENT", b"SNAPSHOT"} & set(words))


def client_xa_refusal() -> BackendError:
    return BackendError(ER.NOT_SUPPORTED_YET, ER.sqlstate(ER.NOT_SUPPORTED_YET),
                        b"XA statements are not supported on a sharded database: ddm runs each transaction that "
                        b"spans data nodes as an XA transaction itself (transactions: xa)")


class Coordinator:
    """One worker's XA coordinator: gtrids, the decision log, recovery."""

    def __init__(self, server) -> None:
        self.server = server
        self.seq = int(time.time() * 1000)  # monotonic across restarts of a worker: gtrids are never reused
        self.inflight: set[bytes] = set()  # gtrids between their first XA PREPARE and the end of their commit
        self._seen: dict[bytes, float] = {}  # gtrid -> when recovery first saw it in doubt
        self._log: DecisionLog | None = None
        self._log_key = None
        self._task: asyncio.Task | None = None
        self._forget: list[bytes] = []
        self._forget_task: asyncio.Task | None = None
        self._instance: str | None = None
        self.stats = {"two_phase": 0, "one_phase": 0, "aborted": 0, "recovered_commit": 0,
                      "recovered_rollback": 0}

    # --- identity -------------------------------------------------------------------------------------------
    @property
    def instance(self) -> str:
        if self._instance is None:
            s = self.server.config.server
            name = s.instance_id or f"{socket.gethostname()}-{s.listen_port}"
            self._instance = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:24]
        return self._instance

    def new_gtrid(self) -> bytes:
        self.seq += 1
        return b"%s%s:%d:%d:%d" % (PREFIX, self.instance.encode(), getattr(self.server, "worker_id", 0),
                                    os.getpid(), self.seq)

    def begin_sql(self) -> bytes:
        """The `txn_begin` of a new XA transaction: each node's branch appends its bqual."""
        return b"XA START " + _quote(self.new_gtrid())

    @property
    def log(self) -> DecisionLog:
        s = self.server.config.server
        key = (s.xa_log, s.xa_log_node, s.xa_log_database, s.xa_log_path)
        if self._log is None or key != self._log_key:
            self._log = make_log(self.server, s)
            self._log_key = key
        return self._log

    # --- branches ---------------------------------------------------------------------------------------------
    @staticmethod
    async def start_branch(conn: BackendConnection, begin: bytes, node: str) -> None:
        """Start this node's branch of the transaction whose `txn_begin` is `begin` (an XA START from begin_sql)."""
        gtrid = begin[len(b"XA START '"):-1]
        bqual = bqual_of(node)
        await conn.query(begin + b"," + _quote(bqual))
        conn.xa_xid = (gtrid, bqual)

    async def end(self, conns: dict[str, BackendConnection], commit: bool) -> None:
        """COMMIT (two-phase, or one phase for one branch) or ROLLBACK of the XA branches in `conns`; every
        connection is given back. Raises BackendError when a COMMIT did not commit (nothing did)."""
        if not commit:
            await asyncio.gather(*(self._rollback(c) for c in conns.values()))
            return
        branches = list(conns.values())
        if len(branches) == 1:
            await self._one_phase(branches[0])
            return
        await self._two_phase(branches)

    async def _one_phase(self, conn: BackendConnection) -> None:
        x = xid_sql(*conn.xa_xid)
        try:
            await conn.command(b"\x03XA END " + x + b";XA COMMIT " + x + b" ONE PHASE")
        except (BackendError, NodeUnavailable) as exc:
            await self._rollback(conn)
            raise _commit_error(exc, [conn.node_name]) from None
        self.stats["one_phase"] += 1
        _release(conn)

    async def _two_phase(self, branches: list[BackendConnection]) -> None:
        gtrid = branches[0].xa_xid[0]
        self.inflight.add(gtrid)
        # shielded: a client that disconnects does not cut a commit in half (the body takes gtrid out of inflight)
        await asyncio.shield(self._two_phase_body(gtrid, branches))

    async def _two_phase_body(self, gtrid: bytes, branches: list[BackendConnection]) -> None:
        try:
            await self._two_phase_steps(gtrid, branches)
        finally:
            self.inflight.discard(gtrid)

    async def _two_phase_steps(self, gtrid: bytes, branches: list[BackendConnection]) -> None:
        errors: list[tuple[str, BaseException]] = []

        async def prepare(c: BackendConnection) -> None:
            x = xid_sql(*c.xa_xid)
            try:
                await c.command(b"\x03XA END " + x + b";XA PREPARE " + x)
            except (BackendError, NodeUnavailable) as exc:
                errors.append((c.node_name, exc))

        hooked = bool(os.environ.get(FAULT_ENV))
        if hooked:  # the first branch alone, so that "some prepared" is a state the hook can stop in
            await prepare(branches[0])
            fault("prepared_some")
            await asyncio.gather(*(prepare(c) for c in branches[1:]))
        else:
            await asyncio.gather(*(prepare(c) for c in branches))
        if not errors:
            if hooked:
                fault("prepared_all")
            nodes = ",".join(c.node_name for c in branches).encode()
            try:
                outcome: bytes | None = await self.log.record(gtrid, b"C", nodes)
            except LogUnavailable as exc:
                if not exc.sent:
                    outcome = None
                    errors.append(("decision log", exc))
                else:  # the write may have landed: the log alone can say, ask it again (INSERT-once 'A')
                    outcome = await self._settle(gtrid)
                    if outcome is None:
                        for c in branches:  # prepared, left to recovery, which follows the log
                            _discard(c)
                        self.stats["unknown"] = self.stats.get("unknown", 0) + 1
                        raise BackendError(ER.XAER_RMFAIL, b"XAE07", b"the outcome of this transaction is unknown: "
                                           b"the decision log's node failed while the commit decision was written; "
                                           b"XA recovery commits or rolls it back everywhere as the log says "
                                           b"(ddm xa list)") from None
            except (BackendError, NodeUnavailable, OSError) as exc:
                outcome = None
                errors.append(("decision log", exc))
            if outcome == b"A":  # recovery presumed it abandoned and rolled it back first
                errors.append(("decision log", BackendError(XA_RBROLLBACK, b"XA100", b"rolled back by recovery")))
        if errors:
            await asyncio.gather(*(self._rollback(c) for c in branches))
            self.stats["aborted"] += 1
            raise _commit_error(errors[0][1], [n for n, _ in errors])
        if hooked:
            fault("decided")
        # the decision is durable: from here on the transaction is committed, whatever a node does now
        self.stats["two_phase"] += 1
        left: list[BackendConnection] = []

        async def commit(c: BackendConnection) -> None:
            try:
                await c.command(b"\x03XA COMMIT " + xid_sql(*c.xa_xid))
                c.xa_xid = None
                _release(c)
            except (BackendError, NodeUnavailable) as exc:
                log.warning("XA COMMIT of %s on data node %s failed (recovery will commit it): %s",
                            gtrid.decode(), c.node_name, exc)
                left.append(c)
                _discard(c)

        if hooked:
            await commit(branches[0])
            fault("committed_some")
            await asyncio.gather(*(commit(c) for c in branches[1:]))
        else:
            await asyncio.gather(*(commit(c) for c in branches))
        if not left:
            self._forget_later(gtrid)
        else:
            self.kick_recovery()

    async def _settle(self, gtrid: bytes) -> bytes | None:
        """After a decision write that may or may not have landed: record an abort unless the commit is there (the
        log keeps the first record of a gtrid); the outcome, None while the log cannot be reached (~2 s)."""
        for _ in range(5):
            try:
                return await self.log.record(gtrid, b"A", b"")
            except (LogUnavailable, NodeUnavailable, OSError):
                await asyncio.sleep(0.4)
        return None

    async def _rollback(self, conn: BackendConnection) -> None:
        xid = getattr(conn, "xa_xid", None)
        if xid is None:  # a branch that is not XA (a local transaction): plain ROLLBACK
            try:
                await conn.query(b"ROLLBACK")
                _release(conn)
            except (BackendError, NodeUnavailable):
                _discard(conn)
            return
        x = xid_sql(*xid)
        try:
            try:
                await conn.command(b"\x03XA END " + x)
            except BackendError:
                pass  # already ended (prepared, or rolled back by the node: ER_XA_RBROLLBACK)
            await conn.command(b"\x03XA ROLLBACK " + x)
            conn.xa_xid = None
            _release(conn)
        except (BackendError, NodeUnavailable) as exc:
            # the node ends a branch that is not prepared when its connection goes; a prepared one is recovery's
            log.info("XA ROLLBACK on data node %s: %s", conn.node_name, exc)
            _discard(conn)

    # --- decisions no longer needed -----------------------------------------------------------------------------
    def _forget_later(self, gtrid: bytes) -> None:
        self._forget.append(gtrid)
        if self._forget_task is None or self._forget_task.done():
            self._forget_task = asyncio.get_event_loop().create_task(self._flush_forget())

    async def _flush_forget(self) -> None:
        await asyncio.sleep(0.2)  # batch the deletes of many commits into one statement
        batch, self._forget = self._forget, []
        try:
            await self.log.forget(batch)
        except Exception as exc:  # recovery's garbage collection deletes them later
            log.info("decision log: could not forget %d decisions: %s", len(batch), exc)

    # --- recovery ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_event_loop().create_task(self._loop())

    def kick_recovery(self) -> None:
        if self._task is not None:
            self._wake.set()

    async def close(self) -> None:
        tasks = [t for t in (self._task, self._forget_task) if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        await self.log.close()

    async def _loop(self) -> None:
        while True:
            if self._has_xa_databases():
                try:
                    await self.recover()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("XA recovery: %s", exc)
            interval = self.server.config.server.xa_recovery_interval or None  # 0: at start (and when kicked)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), interval if interval else None)
            except asyncio.TimeoutError:
                pass

    def _has_xa_databases(self) -> bool:
        return any(not d.is_passthrough and d.transactions == "xa"
                   for d in self.server.config.databases.values())

    async def in_doubt(self) -> tuple[dict[bytes, list[tuple[str, bytes]]], bool]:
        """ddm's prepared branches on every node: gtrid -> [(node, bqual)], and whether every node answered."""
        found: dict[bytes, list[tuple[str, bytes]]] = {}
        complete = True

        async def scan(node: str) -> None:
            nonlocal complete
            try:
                rows = await self._on_node(node, b"XA RECOVER")
            except Exception as exc:
                log.info("XA RECOVER on data node %s: %s", node, exc)
                complete = False
                return
            for row in rows:
                _fmt, glen, _blen, data = split_text_row(row, 4)
                g = int(glen or 0)
                gtrid, bqual = (data or b"")[:g], (data or b"")[g:]
                if gtrid.startswith(PREFIX):
                    found.setdefault(gtrid, []).append((node, bqual))

        await asyncio.gather(*(scan(n) for n in self.server.config.nodes))
        return found, complete

    async def recover(self) -> dict[str, int]:
        """One recovery pass; counts of what it did."""
        found, complete = await self.in_doubt()
        done = {"commit": 0, "rollback": 0, "waiting": 0}
        now = time.monotonic()
        self._seen = {g: self._seen.get(g, now) for g in found}
        if found:
            decisions = await self.log.lookup(list(found))
            for gtrid, branches in found.items():
                if gtrid in self.inflight:
                    continue
                outcome = decisions.get(gtrid)
                if outcome is None:
                    if not self._abandoned(gtrid, now):
                        done["waiting"] += 1
                        continue
                    outcome = await self.log.record(gtrid, b"A", b"") if self.log.shared else b"A"
                word = b"XA COMMIT " if outcome == b"C" else b"XA ROLLBACK "
                for node, bqual in branches:
                    try:
                        await self._on_node(node, word + xid_sql(gtrid, bqual))
                    except BackendError as exc:
                        if exc.code != XAER_NOTA:  # another node name for the same server did it already
                            raise
                key = "commit" if outcome == b"C" else "rollback"
                done[key] += 1
                self.stats["recovered_" + key] += 1
                log.warning("XA recovery: %s %s on %s", key, gtrid.decode(),
                            ", ".join(n for n, _ in branches))
        if complete:
            await self.log.collect(list(found), self.server.config.server.xa_recovery_grace)
        return done

    async def resolve(self, gtrid: bytes, commit: bool) -> int:
        """Force an outcome (`ddm xa commit|rollback`): log it (unless the log holds the other one: ValueError),
        then apply it to every branch of gtrid in doubt on the nodes; how many branches it ended."""
        found, _complete = await self.in_doubt()
        branches = found.get(gtrid, [])
        wanted = b"C" if commit else b"A"
        outcome = await self.log.record(gtrid, wanted, ",".join(n for n, _ in branches).encode())
        if outcome != wanted:
            raise ValueError(f"the decision log holds {'commit' if outcome == b'C' else 'abort'} for {gtrid.decode()}")
        for node, bqual in branches:
            await self._on_node(node, (b"XA COMMIT " if commit else b"XA ROLLBACK ") + xid_sql(gtrid, bqual))
        return len(branches)

    def _abandoned(self, gtrid: bytes, now: float) -> bool:
        """Whether no live worker can still decide this prepared branch without a decision."""
        try:
            _, inst, _wid, pid, _seq = gtrid.split(b":")
            pid_n = int(pid)
        except ValueError:
            return now - self._seen[gtrid] >= self.server.config.server.xa_recovery_grace
        if inst.decode() == self.instance:
            if pid_n == os.getpid():
                return True  # not in flight here (checked before): a commit that was cut short
            if not _running(pid_n):
                return True  # its worker is gone
            if not self.log.shared:
                return False  # a live worker's, and nothing would stop it from logging a commit after our rollback
        elif not self.log.shared:
            return False  # another instance's: only its own log can say
        return now - self._seen[gtrid] >= self.server.config.server.xa_recovery_grace

    async def _on_node(self, node: str, sql: bytes) -> list[bytes]:
        pool = self.server.pools.get(node, 0)
        conn = await pool.acquire()
        try:
            res = await conn.query(sql)
        except NodeUnavailable:
            _discard(conn)
            raise
        except BaseException:
            pool.release(conn)
            raise
        pool.release(conn)
        return res.rows


def _release(conn: BackendConnection) -> None:
    conn.xa_xid = None
    conn.pool.release(conn) if conn.pool is not None else conn.close()


def _discard(conn: BackendConnection) -> None:
    """A connection whose branch is in an unknown state is closed, never pooled."""
    conn.xa_xid = None
    if conn.pool is not None:
        conn.pool.discard(conn)
    conn.close()


def _commit_error(exc: BaseException, nodes: list[str]) -> BackendError:
    return BackendError(XA_RBROLLBACK, b"XA100",
                        f"transaction rolled back: {exc} (data node(s) {', '.join(nodes)})".encode())


async def branch_lost(client: ClientSession, conn: BackendConnection) -> bool:
    """After a statement of an XA transaction failed on `conn` (its error already forwarded to the client): whether
    the node rolled the branch back (a deadlock), probed with a no-op statement."""
    if getattr(conn, "xa_xid", None) is None or conn.closed:
        return False
    try:
        await conn.query(b"DO 0")
    except BackendError as exc:
        return exc.code in BRANCH_ROLLED_BACK
    except NodeUnavailable:
        return False
    return False


def session_xa(client: ClientSession) -> bool:
    dbconf = client.session.dbconf
    return dbconf is not None and not dbconf.is_passthrough and dbconf.transactions == "xa"
