"""The decision log of ddm's XA transactions (ddm.execute.xa): written before the first XA COMMIT, read by recovery.

One record per global transaction: gtrid -> outcome ('C' commit, 'A' abort presumed by recovery). A record is
written once; a second writer of the same gtrid gets the outcome already there (so a coordinator that stalled past
recovery's grace period finds the abort and does not commit).

* `table` (the default, `server.xa_log: table`): the table `<xa_log_database>.xa_log` on the data node
  `server.xa_log_node` (default: the first node), created when first needed. Every worker and every ddm instance
  using that node share it, so any of them can finish another's transaction. The write is an autocommit INSERT on
  the node (durable as the node's commits are: innodb_flush_log_at_trx_commit=1 for power-loss safety).
* `file` (`server.xa_log: file`, `server.xa_log_path`): an append-only file on this host, fsync'd per decision,
  shared by the workers of this instance through flock. Only this instance can recover its transactions.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from typing import Any

from ddm.wire.backend import NodeUnavailable
from ddm.wire.rowcodec import split_text_row

log = logging.getLogger("ddm.execute.xalog")


class LogUnavailable(Exception):
    """The decision log cannot be written or read now. `sent`: a statement was sent before the node was lost (a
    write may have landed)."""

    def __init__(self, message: str, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class DecisionLog:
    shared = False  # whether other ddm instances read the same log (then recovery records its aborts)

    async def record(self, gtrid: bytes, outcome: bytes, nodes: bytes) -> bytes:
        """Write gtrid's outcome unless one is there already; the outcome now logged."""
        raise NotImplementedError

    async def lookup(self, gtrids: list[bytes]) -> dict[bytes, bytes]:
        raise NotImplementedError

    async def forget(self, gtrids: list[bytes]) -> None:
        raise NotImplementedError

    async def collect(self, in_doubt: list[bytes], age: float) -> None:
        """Forget records older than `age` seconds (x 10 for aborts) whose gtrid no node holds in doubt."""

    async def entries(self) -> list[tuple[bytes, bytes, bytes]]:
        """Every record: (gtrid, outcome, nodes)."""
        raise NotImplementedError

    async def close(self) -> None:
        pass


def _lit(b: bytes) -> bytes:
    return b"'" + b.replace(b"\\", b"\\\\").replace(b"'", b"\\'") + b"'"


class TableLog(DecisionLog):
    shared = True

    def __init__(self, server: Any, node: str, database: str) -> None:
        self.server = server
        self.node = node
        self.table = b"`%s`.`xa_log`" % database.replace("`", "``").encode()
        self.database = database
        self.ready = False
        self.pending: list[tuple[bytes, bytes, bytes, asyncio.Future]] = []
        self.writing = False

    async def _run(self, sql: bytes):
        pool = self.server.pools.get(self.node, 0)
        try:
            conn = await pool.acquire()
        except Exception as exc:
            raise LogUnavailable(f"decision log node {self.node}: {exc}") from exc
        try:
            if conn.signature or conn.in_transaction:  # another client's session state (autocommit=0 ...)
                await conn.command(b"\x1f")
                conn.forget_statements()
                conn.signature = ()
                conn.db = None
            if not self.ready:
                db = self.database.replace("`", "``").encode()
                await conn.query(b"CREATE DATABASE IF NOT EXISTS `%s`" % db)
                await conn.query(b"CREATE TABLE IF NOT EXISTS " + self.table +
                                 b" (gtrid VARBINARY(64) NOT NULL PRIMARY KEY, outcome CHAR(1) NOT NULL,"
                                 b" nodes VARBINARY(4096) NOT NULL,"
                                 b" created TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)) ENGINE=InnoDB")
                self.ready = True
            res = await conn.query(sql)
        except NodeUnavailable as exc:
            pool.discard(conn)
            conn.close()
            raise LogUnavailable(f"decision log node {self.node}: {exc}", sent=True) from exc
        except BaseException:
            pool.release(conn)
            raise
        pool.release(conn)
        return res

    async def record(self, gtrid: bytes, outcome: bytes, nodes: bytes) -> bytes:
        """Group commit: records that arrive while a write is under way go together in the next one (one
        multi-row INSERT IGNORE: the rows it did not insert were there already, and their outcome is read back)."""
        fut = asyncio.get_event_loop().create_future()
        self.pending.append((gtrid, outcome, nodes, fut))
        if not self.writing:
            self.writing = True
            asyncio.get_event_loop().create_task(self._write_batches())
        return await fut

    async def _write_batches(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    res = await self._run(b"INSERT IGNORE INTO " + self.table + b" (gtrid, outcome, nodes) VALUES "
                                          + b",".join(b"(" + _lit(g) + b"," + _lit(o) + b"," + _lit(n) + b")"
                                                      for g, o, n, _f in batch))
                    if res.affected_rows == len(batch):
                        outcomes = {g: o for g, o, _n, _f in batch}
                    else:  # some were there already: the log's outcome counts
                        outcomes = await self.lookup([g for g, _o, _n, _f in batch])
                except BaseException as exc:
                    for *_x, f in batch:
                        if not f.done():
                            f.set_exception(exc if isinstance(exc, Exception) else LogUnavailable(str(exc)))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for g, o, _n, f in batch:
                    if not f.done():
                        f.set_result(outcomes.get(g, o))
        finally:
            self.writing = False

    async def lookup(self, gtrids: list[bytes]) -> dict[bytes, bytes]:
        if not gtrids:
            return {}
        res = await self._run(b"SELECT gtrid, outcome FROM " + self.table + b" WHERE gtrid IN ("
                              + b",".join(_lit(g) for g in gtrids) + b")")
        return {g: o for g, o in (split_text_row(r, 2) for r in res.rows)}

    async def forget(self, gtrids: list[bytes]) -> None:
        if gtrids:
            await self._run(b"DELETE FROM " + self.table + b" WHERE gtrid IN (" + b",".join(_lit(g) for g in gtrids)
                            + b")")

    async def collect(self, in_doubt: list[bytes], age: float) -> None:
        keep = b" AND gtrid NOT IN (" + b",".join(_lit(g) for g in in_doubt) + b")" if in_doubt else b""
        await self._run(b"DELETE FROM " + self.table + b" WHERE ((outcome = 'C' AND created < NOW(3) - INTERVAL %d "
                        b"SECOND) OR created < NOW(3) - INTERVAL %d SECOND)" % (max(int(age), 60), max(int(age), 60) * 10)
                        + keep)

    async def entries(self) -> list[tuple[bytes, bytes, bytes]]:
        res = await self._run(b"SELECT gtrid, outcome, nodes FROM " + self.table + b" ORDER BY created")
        return [tuple(split_text_row(r, 3)) for r in res.rows]  # type: ignore[misc]


class FileLog(DecisionLog):
    """Lines `<outcome> <gtrid> <nodes> <unix time>`; `F <gtrid>` forgets one. Compacted past 1 MiB."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _append(self, lines: bytes, sync: bool) -> None:
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # compacted (replaced) while we waited for the lock: append to the new file
        try:
            os.write(fd, lines)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _read(self) -> dict[bytes, tuple[bytes, bytes, float]]:
        try:
            with open(self.path, "rb") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH)
                return _parse(f.read())
        except FileNotFoundError:
            return {}

    async def record(self, gtrid: bytes, outcome: bytes, nodes: bytes) -> bytes:
        loop = asyncio.get_event_loop()
        try:
            await loop.run_in_executor(None, self._append, _line(gtrid, outcome, nodes, time.time()), True)
        except OSError as exc:
            raise LogUnavailable(f"decision log {self.path}: {exc}") from exc
        # the first record of a gtrid is its outcome (an abort forced by `ddm xa rollback` before this commit)
        return (await self.lookup([gtrid])).get(gtrid, outcome)

    async def lookup(self, gtrids: list[bytes]) -> dict[bytes, bytes]:
        table = self._read()
        return {g: table[g][0] for g in gtrids if g in table}

    async def forget(self, gtrids: list[bytes]) -> None:
        if gtrids:
            self._append(b"".join(b"F " + g + b"\n" for g in gtrids), False)

    async def collect(self, in_doubt: list[bytes], age: float) -> None:
        """Once the file has grown past 1 MiB, rewrite it with the records still needed: those of branches in
        doubt and those younger than `age` (at least a minute: a decision logged after the scan began)."""
        try:
            if os.path.getsize(self.path) < 1 << 20:
                return
        except OSError:
            return
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.lseek(fd, 0, 0)
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            doubt, young = set(in_doubt), time.time() - max(age, 60)
            keep = {g: v for g, v in _parse(b"".join(chunks)).items() if g in doubt or v[2] > young}
            tmp = self.path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(b"".join(_line(g, o, n, t) for g, (o, n, t) in keep.items()))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            os.close(fd)

    async def entries(self) -> list[tuple[bytes, bytes, bytes]]:
        return [(g, o, n) for g, (o, n, _t) in self._read().items()]


def _line(gtrid: bytes, outcome: bytes, nodes: bytes, when: float) -> bytes:
    return b"%s %s %s %.3f\n" % (outcome, gtrid, nodes or b"-", when)


def _parse(data: bytes) -> dict[bytes, tuple[bytes, bytes, float]]:
    """gtrid -> (outcome, nodes, time) of the records not forgotten; the first record of a gtrid counts."""
    out: dict[bytes, tuple[bytes, bytes, float]] = {}
    for line in data.splitlines():
        parts = line.split(b" ")
        if len(parts) < 2:
            continue  # a torn last line: its fsync never completed, so nobody acted on it
        if parts[0] == b"F":
            out.pop(parts[1], None)
        elif len(parts) >= 4:
            try:
                out.setdefault(parts[1], (parts[0], parts[2], float(parts[3])))
            except ValueError:
                continue
    return out


def make_log(server: Any, s: Any) -> DecisionLog:
    """The decision log the server section `s` configures."""
    if s.xa_log == "file":
        return FileLog(s.xa_log_path)
    node = s.xa_log_node or next(iter(server.config.nodes))
    return TableLog(server, node, s.xa_log_database)
