"""Pure-Python twin of ddm_core.packets (reference for tests; the server never imports it)."""

from __future__ import annotations

import struct

MAX_PAYLOAD = 0xFFFFFF


class PacketTooLarge(ValueError):
    pass


class MalformedPacket(ValueError):
    pass


def read_lenenc(data: bytes, pos: int) -> tuple[int | None, int]:
    """(value, new_pos); value None for the NULL marker 0xFB. Raises MalformedPacket when truncated."""
    if pos >= len(data):
        raise MalformedPacket("truncated length-encoded integer")
    c = data[pos]
    if c < 0xFB:
        return c, pos + 1
    if c == 0xFB:
        return None, pos + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(c)
    if width is None or pos + 1 + width > len(data):
        raise MalformedPacket("truncated length-encoded integer")
    return int.from_bytes(data[pos + 1:pos + 1 + width], "little"), pos + 1 + width


def lenenc_int(value: int) -> bytes:
    if value < 0xFB:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def lenenc_str(value: bytes) -> bytes:
    return lenenc_int(len(value)) + value


def frame(payload: bytes, seq: int) -> bytes:
    out = []
    off = 0
    while True:
        chunk = payload[off:off + MAX_PAYLOAD]
        out.append(len(chunk).to_bytes(3, "little") + bytes((seq & 0xFF,)) + chunk)
        off += len(chunk)
        seq += 1
        if len(chunk) < MAX_PAYLOAD:
            return b"".join(out)


def frame_rows(payloads: list[bytes], seq: int) -> tuple[bytes, int]:
    parts = []
    for p in payloads:
        parts.append(frame(p, seq))
        seq = (seq + (1 if len(p) < MAX_PAYLOAD else len(p) // MAX_PAYLOAD + 1)) & 0xFF
    return b"".join(parts), seq


def ok_packet(affected_rows: int = 0, insert_id: int = 0, status: int = 2, warnings: int = 0, info: bytes = b"",
              session_track: bool = False) -> bytes:
    head = b"\x00" + lenenc_int(affected_rows) + lenenc_int(insert_id) + struct.pack("<HH", status, warnings)
    if session_track:
        return head + lenenc_str(info) if info else head
    return head + info


def err_packet(code: int, sqlstate: bytes, message: bytes) -> bytes:
    return b"\xff" + struct.pack("<H", code) + b"#" + sqlstate[:5] + message


def eof_packet(warnings: int = 0, status: int = 2) -> bytes:
    return b"\xfe" + struct.pack("<HH", warnings, status)


def parse_ok(payload: bytes, session_track: bool = False) -> tuple:
    affected, pos = read_lenenc(payload, 1)
    insert_id, pos = read_lenenc(payload, pos)
    if affected is None or insert_id is None:
        raise MalformedPacket("truncated OK packet")
    status = warnings = 0
    if pos + 4 <= len(payload):
        status, warnings = struct.unpack_from("<HH", payload, pos)
        pos += 4
    info = b""
    if pos < len(payload):
        if session_track:
            n, p2 = read_lenenc(payload, pos)
            if n and p2 + n <= len(payload):
                info = payload[p2:p2 + n]
        else:
            info = payload[pos:]
    return affected, insert_id, status, warnings, info


def parse_err(payload: bytes) -> tuple:
    if len(payload) < 3:
        raise MalformedPacket("truncated ERR packet")
    code = struct.unpack_from("<H", payload, 1)[0]
    if len(payload) >= 9 and payload[3:4] == b"#":
        return code, payload[4:9], payload[9:]
    return code, b"HY000", payload[3:]


class PacketFramer:
    def __init__(self) -> None:
        self._buf = b""
        self._partial = b""
        self._continuing = False
        self.last_seq = -1
        self.max_payload = 1 << 30

    def feed(self, data: bytes) -> None:
        self._buf += data

    def pending(self) -> int:
        return len(self._buf)

    def take_pending(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest

    def next_packet(self) -> bytes | None:
        while len(self._buf) >= 4:
            length = int.from_bytes(self._buf[:3], "little")
            if len(self._partial) + length > self.max_payload:
                raise PacketTooLarge(f"packet of {len(self._partial) + length} bytes exceeds the limit")
            if len(self._buf) < 4 + length:
                return None
            self.last_seq = self._buf[3]
            body, self._buf = self._buf[4:4 + length], self._buf[4 + length:]
            if length == MAX_PAYLOAD:
                self._partial += body
                self._continuing = True
                continue
            if self._continuing:
                body, self._partial, self._continuing = self._partial + body, b"", False
            return body
        return None
