"""Streaming scatter-gather: a SELECT over several shards whose rows reach the client while the data nodes are
still sending them.

Used for scatter SELECTs the merger handles with bounded state, a plain concatenation or a k-way ORDER BY merge
(with LIMIT/OFFSET), so ddm's memory stays bounded by the merger's per-shard buffers however large the tables are.
GROUP BY, aggregates, DISTINCT and HAVING keep the buffered path in ddm.execute.executor: their state grows with the
groups whatever the transport does.

One connection per data source, one result set per source: a source holding several physical tables gets them as
one `(...) UNION ALL (...)` statement (MariaDB >= 10.1.1 and MySQL >= 5.7.3 stream a UNION ALL without a temporary
table), with `ORDER BY <positions> LIMIT n` for a k-way merge, so the data node merges its own tables and ddm merges
one stream per source. A k-way merge needs every shard's head row at once, which a multi-statement response cannot
give (its second result only starts after the first has been read whole). A statement that may not stand in a
UNION branch as written (locking reads are fine in MariaDB, but SQL_CALC_FOUND_ROWS, INTO, query-cache and
optimizer hints, a WITH clause or a UNION of its own are not taken apart here: `UNION_UNSAFE`) is sent as a
multi-statement query for a concatenation, whose results are read in turn, and takes the buffered path for a k-way
merge.

Flow control: a source whose current shard has `STREAM_BUFFER` rows waiting in the merger, or every source while
the client's socket is full, is not read (transport.pause_reading); the data node's TCP window does the waiting.

Errors: nothing reaches the client before every source has sent its column definitions, so a statement error on
any node (unknown column, lock wait timeout, node down) is the client's whole answer. An error after rows were
sent ends the result set with that ERR packet, as a MySQL server does when a statement fails while sending rows;
it is never reported as success. The command ends only when every connection has finished its response.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from ddm.sharding.plan import Unit
from ddm.wire.backend import BackendConnection, BackendError, NodeUnavailable
from ddm.wire.constants import er as ER
from ddm.wire.rowcodec import ColumnDef, read_lenenc, text_rows_to_binary
from ddm_core.merge import Merger, MergeSpec
from ddm_core.packets import eof_packet, err_packet, frame, frame_rows, lenenc_int, ok_packet

if TYPE_CHECKING:
    from ddm.execute.client import ClientSession
    from ddm.sharding.plan import ExecutionUnits

STREAM_BUFFER = 1000  # rows waiting in the merger per shard before that shard's connection stops being read
MAX_PAYLOAD = 0xFFFFFF

PH_HEAD, PH_COLS, PH_COLS_EOF, PH_ROWS = range(4)

# Words after which a shard's statement is not put in a UNION ALL branch (see the module docstring). A match inside
# a string literal only costs the UNION form.
UNION_UNSAFE = re.compile(rb"\b(?:SQL_CALC_FOUND_ROWS|INTO|SQL_NO_CACHE|SQL_CACHE|HIGH_PRIORITY|STRAIGHT_JOIN|"
                          rb"SQL_BUFFER_RESULT|SQL_SMALL_RESULT|SQL_BIG_RESULT|PROCEDURE|WITH|UNION)\b", re.I)


class Source:
    """One data source's connection and the merger shards its response carries, in order."""

    __slots__ = ("datasource", "node", "phys", "sql", "shards", "conn", "k", "phase", "ncols", "cols", "started",
                 "done", "failed", "paused")

    def __init__(self, datasource: str, node: str, phys: bytes, sql: bytes, shards: list[int]) -> None:
        self.datasource = datasource
        self.node = node
        self.phys = phys
        self.sql = sql
        self.shards = shards
        self.conn: BackendConnection | None = None
        self.k = 0  # index in shards of the result being read
        self.phase = PH_HEAD
        self.ncols = 0
        self.cols: list[bytes] = []
        self.started = False  # the first result's column definitions are in
        self.done = False  # the connection finished its response (or was lost)
        self.failed = False  # the response ended with an ERR packet
        self.paused = False


def plan_sources(eu: ExecutionUnits, location: Callable[[str], tuple[str, bytes]],
                 in_txn: bool) -> tuple[list[Source], int] | None:
    """(sources, merger shard count) when this SELECT can stream, else None (the buffered path runs it)."""
    desc = eu.merge
    if desc is None or eu.is_write or len(eu.units) < 2:  # only a multi-shard SELECT has a merge description
        return None
    if (desc.group_by or desc.aggregates or desc.distinct or desc.having is not None):
        return None
    groups: dict[str, list[int]] = {}
    for i, unit in enumerate(eu.units):
        groups.setdefault(unit.datasource, []).append(i)
    kway = bool(desc.order_by)
    several = any(len(idx) > 1 for idx in groups.values())
    union = several and UNION_UNSAFE.search(eu.units[0].sql) is None  # the units differ in names and values only
    if kway and several and (not union or any(c < 0 for c, _ in desc.order_by)):
        # `SELECT *` with ORDER BY: the UNION's ORDER BY positions are not known before the columns
        return None
    one_per_source = kway or union
    sources = []
    for n, (ds, idx) in enumerate(groups.items()):
        node, phys = location(ds)
        sqls = [_statement(eu.units[i].sql) for i in idx]
        if len(sqls) == 1:
            sql, shards = sqls[0], [n if one_per_source else idx[0]]
        elif union:
            sql, shards = _union(sqls, desc.order_by, desc.limit, desc.offset), [n]
        else:
            # "\n;\n": a statement ending in a `--` or `#` comment cannot swallow the separator
            sql, shards = b"\n;\n".join(sqls), idx
        sources.append(Source(ds, node, phys, sql, shards))
    if in_txn and len({s.node for s in sources}) < len(sources):
        return None  # a transaction has one connection per node: two sources of one node cannot stream at once
    return sources, (len(sources) if one_per_source else len(eu.units))


def union_units(eu: ExecutionUnits) -> tuple[Unit, ...] | None:
    """For the buffered path (GROUP BY, aggregates, DISTINCT, HAVING): the units of each data source as one
    `(...) UNION ALL (...)` unit, sorted by the node the way the merger expects each of its inputs (group columns
    when grouping, else the ORDER BY). None when every source has one unit or a statement cannot be a branch."""
    desc = eu.merge
    if desc is None or eu.is_write or len(eu.units) < 2:
        return None
    groups: dict[str, list[int]] = {}
    for i, unit in enumerate(eu.units):
        groups.setdefault(unit.datasource, []).append(i)
    if len(groups) == len(eu.units) or UNION_UNSAFE.search(eu.units[0].sql) is not None:
        return None
    order = tuple((g, False) for g in desc.group_by) if desc.group_by else desc.order_by
    if any(c < 0 for c, _ in order):
        return None  # positions counted from the end (`SELECT *` with derived columns): unknown here
    return tuple(eu.units[idx[0]] if len(idx) == 1
                 else Unit(ds, _union([_statement(eu.units[i].sql) for i in idx], order, None, 0))
                 for ds, idx in groups.items())


def _statement(sql: bytes) -> bytes:
    return sql.rstrip().rstrip(b";").rstrip()


def _union(sqls: list[bytes], order_by, limit: int | None, offset: int) -> bytes:
    # "\n)": a statement ending in a `--` comment cannot swallow the parenthesis
    body = b" UNION ALL ".join(b"(" + s + b"\n)" for s in sqls)
    order = b", ".join(b"%d%s" % (c + 1, b" DESC" if desc else b"") for c, desc in order_by)
    tail = b" LIMIT %d" % (limit + offset) if limit is not None else b""
    return body + (b" ORDER BY " + order if order else b"") + tail


class ScatterStream:
    """One streaming scatter SELECT: feeds the sources' rows to the merger and the merged rows to the client."""

    def __init__(self, client: ClientSession, eu: ExecutionUnits, sources: list[Source], nshards: int,
                 binary: bool, settle: Callable[[ClientSession, BackendConnection], None]) -> None:
        self.client = client
        self.eu = eu
        self.sources = sources
        self.nshards = nshards
        self.binary = binary
        self.settle = settle
        self.merger: Merger | None = None
        self.ncols = 0
        self.out_payloads: list[bytes] = []
        self.out_defs: list[ColumnDef] = []
        self.header_sent = False
        self.ended = False  # the client got the terminator or an ERR
        self.seq = 1
        self.error: Exception | None = None
        self.client_paused = False
        self.pending = len(sources)
        self.finished: asyncio.Future = asyncio.get_running_loop().create_future()

    # --- driving ----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        for src in self.sources:
            assert src.conn is not None
            src.conn.stream(b"\x03" + src.sql, lambda _c, s=src: self._chunk(s), lambda _c, s=src: self._finish(s))
        self.client.scatter_stream = self
        try:
            await asyncio.shield(self.finished)
        finally:
            self.client.scatter_stream = None
        if self.error is not None and not self.header_sent:
            raise self.error

    def pause(self) -> None:
        """The client's socket buffer is full."""
        self.client_paused = True
        self._flow()

    def resume(self) -> None:
        self.client_paused = False
        self._pump()

    # --- connection callbacks ---------------------------------------------------------------------------------
    def _chunk(self, src: Source) -> None:
        self._take_packets(src)
        self._pump()

    def _finish(self, src: Source) -> None:
        self._take_packets(src)
        conn = src.conn
        src.done = True
        self.pending -= 1
        if not src.failed and src.k < len(src.shards):
            self._fail(NodeUnavailable(src.node, "connection lost during a statement"))
        assert conn is not None
        transport = self.client.transport
        if transport is None or transport.is_closing():
            self.client.give_back(conn, dirty=True)
        else:
            self.settle(self.client, conn)
        self._pump()
        if self.pending == 0 and not self.finished.done():
            self.finished.set_result(None)

    def _take_packets(self, src: Source) -> None:
        conn = src.conn
        assert conn is not None
        packets, marks = conn.packets, conn.marks
        conn.packets, conn.marks = [], []
        try:
            i = 0
            for m in marks:
                if m > i:
                    self._body(src, packets, i, m)
                self._mark(src, packets[m], conn.deprecate_eof)
                i = m + 1
            if i < len(packets):
                self._body(src, packets, i, len(packets))
        except (ValueError, IndexError) as exc:  # a response ddm cannot follow: say so, never guess
            src.failed = True
            self._fail(BackendError(ER.UNKNOWN_ERROR, b"HY000",
                                    f"unexpected response from data node '{src.node}': {exc}".encode()))

    def _body(self, src: Source, packets: list[bytes], i: int, j: int) -> None:
        if src.phase == PH_ROWS:
            m = self.merger
            if self.error is None and m is not None and not m.done:
                m.feed(src.shards[src.k], packets[i:j])
        elif src.phase == PH_COLS:
            src.cols.extend(packets[i:j])
        else:
            raise ValueError(f"{j - i} packet(s) outside a result set")

    def _mark(self, src: Source, p: bytes, deprecate_eof: bool) -> None:
        ph = src.phase
        if ph == PH_HEAD:
            if p[0] == 0xFF:
                src.failed = True
                self._fail(BackendError.from_payload(p))
            elif p[0] == 0x00:
                src.k += 1
                self._fail(BackendError(ER.UNKNOWN_ERROR, b"HY000",
                                        f"data node '{src.node}' answered a SELECT without a result set".encode()))
            else:
                src.ncols = read_lenenc(p, 0)[0] or 0
                src.cols = []
                src.phase = PH_COLS
        elif ph == PH_COLS:
            src.cols.append(p)
            src.phase = PH_ROWS if deprecate_eof else PH_COLS_EOF
            self._columns(src)
        elif ph == PH_COLS_EOF:
            src.phase = PH_ROWS
        elif p[0] == 0xFF:  # PH_ROWS: an error while sending rows
            src.failed = True
            self._fail(BackendError.from_payload(p))
        else:  # PH_ROWS: the result's terminator (EOF / OK)
            if self.merger is not None and src.k < len(src.shards):
                self.merger.finish(src.shards[src.k])
            src.k += 1
            src.phase = PH_HEAD

    def _columns(self, src: Source) -> None:
        if len(src.cols) != src.ncols:
            raise ValueError(f"{len(src.cols)} column definitions for {src.ncols} columns")
        if self.merger is None:
            self._make_merger(src.cols)
        elif src.ncols != self.ncols:
            raise ValueError(f"shards returned {self.ncols} and {src.ncols} columns")
        src.started = True

    def _make_merger(self, cols: list[bytes]) -> None:
        ncols = len(cols)
        desc = self.eu.merge.resolve(ncols) if self.eu.merge is not None else None
        spec = MergeSpec(order_by=desc.order_by if desc else (), group_by=(), aggregates=(), distinct=False,
                         having=None, limit=desc.limit if desc else None, offset=desc.offset if desc else 0,
                         visible_columns=desc.visible_columns if desc else None, binary=False, shard_order=None)
        self.merger = Merger(spec, cols, self.nshards, STREAM_BUFFER)
        self.ncols = ncols
        visible = desc.visible_columns if desc else ncols
        out = self.merger.output_columns[:visible]
        self.out_defs = [c if isinstance(c, ColumnDef) else ColumnDef.parse(c) for c in out]
        self.out_payloads = [c.to_payload() if isinstance(c, ColumnDef) else c for c in out]

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc

    # --- output -----------------------------------------------------------------------------------------------
    def _pump(self) -> None:
        m = self.merger
        if self.ended:
            self._flow()
            return
        if self.error is not None:
            if self.header_sent:
                exc = self.error
                payload = exc.payload if isinstance(exc, BackendError) else err_packet(
                    ER.CONNECTION_KILLED, ER.sqlstate(ER.CONNECTION_KILLED), str(exc).encode())
                self._write(frame(payload, self.seq))
                self.ended = True
            self._flow()
            return
        if not self.header_sent:
            if m is None or not all(s.started for s in self.sources):
                self._flow()
                return
            self._send_header()
        assert m is not None
        rows = m.take()
        if rows:
            self._send_rows(rows)
        if self.pending == 0:
            self._send_terminator()
            self.ended = True
        self._flow()

    def _flow(self) -> None:
        m = self.merger
        drain = self.ended or self.error is not None or (m is not None and m.done)
        for src in self.sources:
            if src.done or src.conn is None or src.conn.closed:
                continue
            if drain:
                want = True
            elif self.client_paused:
                want = False
            else:
                want = m is None or src.k >= len(src.shards) or m.wants(src.shards[src.k])
            if want == src.paused:
                src.paused = not want
                transport = src.conn.transport
                if want:
                    transport.resume_reading()
                else:
                    transport.pause_reading()

    def _write(self, data: bytes) -> None:
        transport = self.client.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _send_header(self) -> None:
        client = self.client
        parts = [frame(lenenc_int(len(self.out_payloads)), 1)]
        seq = 2
        for col in self.out_payloads:
            parts.append(frame(col, seq & 0xFF))
            seq += 1
        if not client.deprecate_eof:
            parts.append(frame(eof_packet(0, client.status_flags()), seq & 0xFF))
            seq += 1
        self.seq = seq & 0xFF
        self.header_sent = True
        self._write(b"".join(parts))

    def _send_rows(self, rows: list[bytes]) -> None:
        if self.binary:
            rows = text_rows_to_binary(rows, self.out_defs)
        # a row of 16 MiB or more travels as several packets, each taking a sequence id
        data, self.seq = frame_rows(rows, self.seq)
        self._write(data)

    def _send_terminator(self) -> None:
        client = self.client
        status = client.status_flags()
        if client.deprecate_eof:  # with CLIENT_DEPRECATE_EOF the result set ends with an OK packet headed 0xFE
            payload = b"\xfe" + ok_packet(0, 0, status, 0)[1:]
        else:
            payload = eof_packet(0, status)
        self._write(frame(payload, self.seq))
