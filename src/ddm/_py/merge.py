"""Pure-Python twin of `ddm_core.merge` (same API, same comparison keys); used by tests, never by the server.

See `ddm_core/merge.pyx` for the full description of the merge semantics.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Sequence

from ddm.wire.rowcodec import (
    K_BYTES,
    K_CI,
    K_DEC,
    K_DT,
    K_FLT,
    K_INT,
    K_NULL,
    K_PADBIN,
    K_TIME,
    ColumnDef,
    MergeSpec,
    add_values,
    avg_value,
    binary_wire,
    column_kind,
    decode_value,
    encode_value,
    fold_ci,
    join_binary_row,
    join_text_row,
    output_columns,
    split_binary_row,
    split_text_row,
)

__all__ = ["ColumnDef", "MergeSpec", "Merger", "output_columns", "field_key"]

_INV = bytes(255 - i for i in range(256))
_FIX_INT = {1: "b", 2: "h", 4: "i", 8: "q"}


def _digits_key(s: bytes) -> bytes:
    """Order-preserving encoding of a decimal number written in digits ("-12.50"); exact for any length.

    zero -> 02; positive -> 03, number of integer digits, the significant digits, 00;
    negative -> 01 then the positive form's bytes inverted (so larger magnitudes sort first).
    """
    neg = s[:1] == b"-"
    if s[:1] in (b"-", b"+"):
        s = s[1:]
    ip, _, fp = s.partition(b".")
    ip = ip.lstrip(b"0")
    fp = fp.rstrip(b"0")
    if not ip and not fp:
        return b"\x02"
    body = bytes((len(ip),)) + ip + fp + b"\x00"
    return b"\x01" + body.translate(_INV) if neg else b"\x03" + body


def _double_key(v: float) -> bytes:
    if v == 0:
        v = 0.0  # -0.0 = 0.0
    u = int.from_bytes(struct.pack(">d", v), "big")
    u = u ^ 0xFFFFFFFFFFFFFFFF if u >> 63 else u | 1 << 63
    return u.to_bytes(8, "big")


def _bytes_key(s: bytes) -> bytes:
    # 00 inside the value -> 00 FF; terminator 00 00: prefix-free, so keys of several columns concatenate.
    return s.replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def _time_text_us(s: bytes) -> int:
    neg = s[:1] == b"-"
    if neg:
        s = s[1:]
    main, _, frac = s.partition(b".")
    parts = main.split(b":")
    h = int(parts[0] or 0)
    m = int(parts[1]) if len(parts) > 1 else 0
    sec = int(parts[2]) if len(parts) > 2 else 0
    us = int((frac[:6] + b"000000")[:6]) if frac else 0
    v = ((h * 60 + m) * 60 + sec) * 1000000 + us
    return -v if neg else v


def field_key(f: bytes | None, kind: int, ciflags: int, wire: int, unsigned: bool, binary: bool) -> bytes:
    """The comparison key of one column value: NULL -> 00 (first in ASC), otherwise 01 + encoded value."""
    if f is None or kind == K_NULL:
        return b"\x00"
    if kind == K_INT:
        if binary:
            fmt = _FIX_INT[wire]
            v = struct.unpack("<" + (fmt.upper() if unsigned else fmt), f)[0]
            return b"\x01" + _digits_key(str(v).encode())
        return b"\x01" + _digits_key(f)
    if kind == K_DEC:
        return b"\x01" + _digits_key(f)
    if kind == K_FLT:
        if binary:
            v = struct.unpack("<f" if wire == 4 else "<d", f)[0]
        else:
            v = float(f)
        return b"\x01" + _double_key(v)
    if kind == K_BYTES:
        return b"\x01" + _bytes_key(f)
    if kind == K_PADBIN:
        return b"\x01" + _bytes_key(f.rstrip(b" "))
    if kind == K_CI:
        return b"\x01" + _bytes_key(fold_ci(f, ciflags))
    if kind == K_TIME:
        if binary:
            if len(f) >= 8:
                neg, days, h, m, s = struct.unpack_from("<BIBBB", f)
                us = struct.unpack_from("<I", f, 8)[0] if len(f) >= 12 else 0
                v = (((days * 24 + h) * 60 + m) * 60 + s) * 1000000 + us
                v = -v if neg else v
            else:
                v = 0
        else:
            v = _time_text_us(f)
        return b"\x01" + (v + (1 << 63)).to_bytes(8, "big")
    if kind == K_DT:
        if binary:
            g = bytes(f) + bytes(11 - len(f))
            return b"\x01" + bytes((g[1], g[0], g[2], g[3], g[4], g[5], g[6], g[10], g[9], g[8], g[7]))
        return b"\x01" + _bytes_key(f)
    raise AssertionError(kind)


class _Cols:
    """Per-column key metadata."""

    def __init__(self, cols: Sequence[ColumnDef], binary: bool) -> None:
        self.cols = list(cols)
        self.kinds = [column_kind(c) for c in cols]
        self.wires = [binary_wire(c) for c in cols]
        self.unsigned = [bool(c.flags & 32) or c.type == 13 for c in cols]  # YEAR is unsigned
        self.binary = binary

    def key(self, fields: Sequence[bytes | None], plan: Sequence[tuple[int, bool]]) -> bytes:
        parts = []
        for col, desc in plan:
            kind, fl = self.kinds[col]
            k = field_key(fields[col], kind, fl, self.wires[col], self.unsigned[col], self.binary)
            parts.append(k.translate(_INV) if desc else k)
        return b"".join(parts)


class Merger:
    """See ddm_core.merge.Merger."""

    def __init__(self, spec: MergeSpec, columns: Sequence[ColumnDef | bytes], nshards: int,
                 max_buffer: int = 1000) -> None:
        cols = [c if isinstance(c, ColumnDef) else ColumnDef.parse(c) for c in columns]
        self.spec = spec
        self.columns = cols
        self.output_columns = output_columns(spec, cols)
        self.nshards = nshards
        self.max_buffer = max_buffer
        ncols = len(cols)
        self._ncols = ncols
        self._vis = ncols if spec.visible_columns is None else spec.visible_columns
        self._in = _Cols(cols, spec.binary)
        self._out = _Cols(self.output_columns, spec.binary)
        self._binary = spec.binary
        grouped = bool(spec.group_by or spec.aggregates)
        shard_order = spec.shard_order if spec.shard_order is not None else (() if grouped else spec.order_by)
        ob = spec.order_by
        ng = len(spec.group_by)
        self._grouped = grouped
        self._stream_group = False
        if grouped:
            # Streaming GROUP BY when every shard sorted its rows by all group keys first: merged rows of one
            # group are then adjacent. Otherwise hash aggregation over all rows.
            self._stream_group = ng > 0 and len(shard_order) >= ng and {c for c, _ in shard_order[:ng]} == set(
                spec.group_by)
            self._merge_plan = tuple(shard_order[:ng]) if self._stream_group else ()
            k = min(len(ob), ng)
            self._final_sort = bool(ob) and not (self._stream_group and tuple(ob[:k]) == tuple(shard_order[:k]))
        elif ob and tuple(shard_order[:len(ob)]) == tuple(ob):
            self._merge_plan = tuple(ob)
            self._final_sort = False
        else:
            self._merge_plan = ()
            self._final_sort = bool(ob)
        self._group_plan = tuple((c, False) for c in spec.group_by)
        self._distinct_plan = tuple((c, False) for c in range(self._vis))
        self._bufs: list[list[bytes]] = [[] for _ in range(nshards)]
        self._keys: list[list[bytes]] = [[] for _ in range(nshards)]
        self._pos = [0] * nshards
        self._finished = [False] * nshards
        self._heap: list[tuple[bytes, int]] = []
        self._waiting = set(range(nshards)) if self._merge_plan else set()
        self._output: list[bytes] = []
        self._skip = spec.offset
        self._left = spec.limit
        self._done = spec.limit == 0
        self._flushed = False
        self._cur_key: bytes | None = None
        self._cur: list | None = None
        self._groups: dict[bytes, list] = {}
        self._seen: set[bytes] = set()
        self._sorted: list[tuple[bytes, int, list[bytes | None]]] = []

    # ------------------------------------------------------------------------------------------ public API

    @property
    def done(self) -> bool:
        return self._done

    def wants(self, shard: int) -> bool:
        return (not self._done and not self._finished[shard]
                and len(self._bufs[shard]) - self._pos[shard] < self.max_buffer)

    def feed(self, shard: int, rows: list[bytes]) -> None:
        if self._done:
            return
        if self._finished[shard]:
            raise ValueError(f"shard {shard} already finished")
        if not rows:
            return
        self._bufs[shard].extend(rows)
        if self._merge_plan:
            self._keys[shard].extend(self._in.key(self._split(r), self._merge_plan) for r in rows)
            if shard in self._waiting:
                self._waiting.discard(shard)
                heapq.heappush(self._heap, (self._keys[shard][self._pos[shard]], shard))

    def finish(self, shard: int) -> None:
        self._finished[shard] = True
        if shard in self._waiting:
            self._waiting.discard(shard)

    def take(self) -> list[bytes]:
        if not self._done:
            if self._merge_plan:
                self._run_merge()
            else:
                for s in range(self.nshards):
                    buf = self._bufs[s]
                    for i in range(self._pos[s], len(buf)):
                        if self._done:
                            break
                        self._push(buf[i])
                    self._bufs[s] = []
                    self._pos[s] = 0
            if not self._done and not self._flushed and all(self._finished) and not self._waiting:
                self._flush()
        out = self._output
        self._output = []
        return out

    # ------------------------------------------------------------------------------------------ internals

    def _split(self, row: bytes) -> list[bytes | None]:
        if self._binary:
            return split_binary_row(row, self._in.wires)
        return split_text_row(row, self._ncols)

    def _run_merge(self) -> None:
        heap = self._heap
        while heap and not self._waiting and not self._done:
            _, s = heap[0]
            p = self._pos[s]
            row = self._bufs[s][p]
            p += 1
            self._pos[s] = p
            if p < len(self._bufs[s]):
                heapq.heapreplace(heap, (self._keys[s][p], s))
            else:
                heapq.heappop(heap)
                self._bufs[s] = []
                self._keys[s] = []
                self._pos[s] = 0
                if not self._finished[s]:
                    self._waiting.add(s)
            self._push(row)

    def _push(self, row: bytes) -> None:
        fields = self._split(row)
        if not self._grouped:
            self._post(fields, row)
            return
        gkey = self._in.key(fields, self._group_plan)
        if self._stream_group:
            if self._cur is not None and gkey != self._cur_key:
                self._post(self._finish_group(self._cur), None)
            if self._cur is None or gkey != self._cur_key:
                self._cur_key = gkey
                self._cur = self._new_group(fields)
            self._accumulate(self._cur, fields)
        else:
            g = self._groups.get(gkey)
            if g is None:
                g = self._groups[gkey] = self._new_group(fields)
            self._accumulate(g, fields)

    def _new_group(self, fields: list[bytes | None]) -> list:
        accs: list[object] = []
        for _, func, _ in self.spec.aggregates:
            if func == "count":
                accs.append(0)
            elif func == "count_distinct":
                accs.append(set())
            elif func == "avg":
                accs.append([None, 0])
            else:
                accs.append(None)
        return [fields, accs]

    def _accumulate(self, g: list, fields: list[bytes | None]) -> None:
        accs = g[1]
        cols = self.columns
        b = self._binary
        for i, (col, func, args) in enumerate(self.spec.aggregates):
            if func == "count":
                v = decode_value(fields[col], cols[col], b)
                if v is not None:
                    accs[i] += int(v)  # type: ignore[call-overload]
            elif func == "sum":
                accs[i] = add_values(accs[i], decode_value(fields[col], cols[col], b))
            elif func in ("min", "max"):
                f = fields[col]
                if f is None:
                    continue
                k = self._in.key(fields, ((col, False),))
                cur = accs[i]
                if cur is None or (k < cur[0] if func == "min" else k > cur[0]):
                    accs[i] = (k, f)
            elif func == "avg":
                a = accs[i]
                a[0] = add_values(a[0], decode_value(fields[args[0]], cols[args[0]], b))
                cnt = decode_value(fields[args[1]], cols[args[1]], b)
                a[1] += int(cnt) if cnt is not None else 0  # type: ignore[call-overload]
            else:  # count_distinct: the distinct non-NULL values (collation-equal values count once)
                if fields[args[0]] is not None:
                    accs[i].add(self._in.key(fields, ((args[0], False),)))

    def _finish_group(self, g: list) -> list[bytes | None]:
        fields = list(g[0])
        accs = g[1]
        out = self.output_columns
        b = self._binary
        for i, (col, func, _) in enumerate(self.spec.aggregates):
            a = accs[i]
            if func in ("count", "sum"):
                fields[col] = encode_value(a, out[col], b)
            elif func in ("min", "max"):
                fields[col] = None if a is None else a[1]
            elif func == "avg":
                fields[col] = encode_value(avg_value(a[0], a[1], out[col]), out[col], b)
            else:
                fields[col] = encode_value(len(a), out[col], b)
        return fields

    def _post(self, fields: list[bytes | None], row: bytes | None) -> None:
        spec = self.spec
        if spec.having is not None:
            vals = tuple(decode_value(f, c, self._binary) for f, c in zip(fields, self.output_columns, strict=True))
            if not spec.having(vals):
                return
        if spec.distinct:
            dk = self._out.key(fields, self._distinct_plan)
            if dk in self._seen:
                return
            self._seen.add(dk)
        if self._final_sort:
            self._sorted.append((self._out.key(fields, spec.order_by), len(self._sorted), fields))
            return
        self._emit(fields, row)

    def _emit(self, fields: list[bytes | None], row: bytes | None) -> None:
        if self._skip:
            self._skip -= 1
            return
        if row is None or self._vis < self._ncols:
            vf = fields[:self._vis]
            row = join_binary_row(vf, self._out.wires) if self._binary else join_text_row(vf)
        self._output.append(row)
        if self._left is not None:
            self._left -= 1
            if self._left <= 0:
                self._done = True
                self._release()

    def _flush(self) -> None:
        self._flushed = True
        if self._grouped:
            if self._stream_group:
                if self._cur is not None:
                    self._post(self._finish_group(self._cur), None)
                    self._cur = None
            else:
                if not self.spec.group_by and not self._groups:
                    # Aggregates without GROUP BY: exactly one row even over no rows (COUNT 0, SUM NULL).
                    self._groups[b""] = self._new_group([None] * self._ncols)
                for g in self._groups.values():
                    self._post(self._finish_group(g), None)
                    if self._done:
                        break
                self._groups = {}
        if self._final_sort and not self._done:
            self._sorted.sort(key=lambda t: (t[0], t[1]))
            for _, _, fields in self._sorted:
                self._emit(fields, None)
                if self._done:
                    break
        self._sorted = []
        self._done = True
        self._release()

    def _release(self) -> None:
        self._bufs = [[] for _ in range(self.nshards)]
        self._keys = [[] for _ in range(self.nshards)]
        self._pos = [0] * self.nshards
        self._heap = []
        self._groups = {}
        self._seen = set()
        self._sorted = []

