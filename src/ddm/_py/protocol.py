"""Pure-Python twin of ddm_core.protocol's response state machine: where a data node's response ends.

`response_end(stream, kind, deprecate_eof)` reads whole packets and returns (end offset, status flags, error?,
warning count, last insert id of its OK packets) for the first complete response in `stream`, or None when it is
incomplete. Tests compare it with BackendCore."""

from __future__ import annotations

import struct

from ddm._py.packets import MAX_PAYLOAD, read_lenenc

KIND_RESULT, KIND_PREPARE, KIND_FIELD_LIST, KIND_ONE, KIND_ROWS = 1, 2, 3, 4, 5
MORE_RESULTS_EXISTS = 0x0008
CURSOR_EXISTS = 0x0040


def _ok_u16(p: bytes, at: int) -> int:
    """A 2-byte field of an OK packet after affected_rows and last_insert_id: 0 status flags, 2 warnings."""
    try:
        _, pos = read_lenenc(p, 1)
        _, pos = read_lenenc(p, pos)
    except ValueError:
        return 0
    return struct.unpack_from("<H", p, pos + at)[0] if pos + at + 2 <= len(p) else 0


def _ok_status(p: bytes) -> int:
    return _ok_u16(p, 0)


def _ok_insert_id(p: bytes) -> int:
    try:
        _, pos = read_lenenc(p, 1)
        value, _ = read_lenenc(p, pos)
    except ValueError:
        return 0
    return value if value and 0 < value < 2**63 else 0


def _ok_warnings(p: bytes) -> int:
    return _ok_u16(p, 2)


def _packets(stream: bytes):
    """(payload, end offset) per logical packet; continuation packets joined."""
    pos, body = 0, b""
    while pos + 4 <= len(stream):
        length = int.from_bytes(stream[pos:pos + 3], "little")
        if pos + 4 + length > len(stream):
            return
        body += stream[pos + 4:pos + 4 + length]
        pos += 4 + length
        if length == MAX_PAYLOAD:
            continue
        yield body, pos
        body = b""


def response_end(stream: bytes, kind: int, deprecate_eof: bool) -> tuple[int, int, bool, int, int] | None:
    it = _packets(stream)

    def nxt():
        return next(it, (None, None))

    if kind == KIND_ONE:
        p, end = nxt()
        return None if p is None else (end, 0, False, 0, 0)
    if kind == KIND_FIELD_LIST:
        while True:
            p, end = nxt()
            if p is None:
                return None
            if p[:1] in (b"\xfe", b"\xff"):
                return end, 0, p[:1] == b"\xff", 0, 0
    if kind == KIND_PREPARE:
        p, end = nxt()
        if p is None:
            return None
        if p[:1] != b"\x00" or len(p) < 9:
            return end, 0, True, 0, 0
        ncols, nparams = struct.unpack_from("<HH", p, 5)
        for count in (nparams, ncols):
            if count:
                for _ in range(count + (0 if deprecate_eof else 1)):
                    p, end = nxt()
                    if p is None:
                        return None
        return end, 0, False, 0, 0
    in_rows = kind == KIND_ROWS
    iid = 0
    while True:
        if not in_rows:
            p, end = nxt()
            if p is None:
                return None
            if p[:1] == b"\x00":
                status = _ok_status(p)
                iid = _ok_insert_id(p) or iid
                if status & MORE_RESULTS_EXISTS:
                    continue
                return end, status, False, _ok_warnings(p), iid
            if p[:1] in (b"\xff", b"\xfb", b""):
                return end, 0, True, 0, iid
            ncols, _ = read_lenenc(p, 0)
            for _ in range(ncols):
                p, end = nxt()
                if p is None:
                    return None
            if not deprecate_eof and ncols:
                p, end = nxt()
                if p is None:
                    return None
                status = struct.unpack_from("<H", p, 3)[0] if len(p) >= 5 else 0
                if status & CURSOR_EXISTS:
                    return end, status, False, 0, iid
        while True:
            p, end = nxt()
            if p is None:
                return None
            if p[:1] == b"\xfe" and len(p) < MAX_PAYLOAD and (deprecate_eof or len(p) < 9):
                status = _ok_status(p) if deprecate_eof else struct.unpack_from("<H", p, 3)[0]
                if status & MORE_RESULTS_EXISTS:
                    in_rows = False
                    break
                warnings = _ok_warnings(p) if deprecate_eof else struct.unpack_from("<H", p, 1)[0]
                return end, status, False, warnings, iid
            if p[:1] == b"\xff":
                return end, 0, True, 0, iid
