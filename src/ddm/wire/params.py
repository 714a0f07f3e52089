"""Decode the parameter values of a COM_STMT_EXECUTE (binary protocol) into Python values for routing.

https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_execute.html
Layout after the command byte: stmt_id<4> flags<1> iteration_count<4>, then for n > 0 parameters:
NULL bitmap<(n+7)/8>, new_params_bound_flag<1>, [type<1> unsigned-flag<1>] * n when bound, then the values.
"""

from __future__ import annotations

import datetime
import struct
from decimal import Decimal

from ddm.wire.constants import field_type as FT

_INT = {FT.TINY: (1, "<b", "<B"), FT.SHORT: (2, "<h", "<H"), FT.YEAR: (2, "<h", "<H"), FT.LONG: (4, "<i", "<I"),
        FT.INT24: (4, "<i", "<I"), FT.LONGLONG: (8, "<q", "<Q")}
_STRINGS = {FT.VARCHAR, FT.VAR_STRING, FT.STRING, FT.TINY_BLOB, FT.MEDIUM_BLOB, FT.LONG_BLOB, FT.BLOB,
            FT.JSON, FT.ENUM, FT.SET, FT.GEOMETRY, FT.BIT}


class ParamError(ValueError):
    """A malformed COM_STMT_EXECUTE parameter block."""


def _lenenc(p: bytes, pos: int) -> tuple[int, int]:
    c = p[pos]
    if c < 0xFB:
        return c, pos + 1
    if c == 0xFC:
        return struct.unpack_from("<H", p, pos + 1)[0], pos + 3
    if c == 0xFD:
        return int.from_bytes(p[pos + 1:pos + 4], "little"), pos + 4
    if c == 0xFE:
        return struct.unpack_from("<Q", p, pos + 1)[0], pos + 9
    raise ParamError("bad length prefix")


def decode_params(payload: bytes, n: int, types: bytes | None,
                  long_data: dict[int, bytes] | None = None) -> tuple[list[object], list[bool]]:
    """(values, is_blob) of an execute payload (command byte included). `types` are the last bound types
    (2 bytes per parameter), used when the packet does not carry them. Long-data parameters take their
    accumulated COM_STMT_SEND_LONG_DATA bytes."""
    if n == 0:
        return [], []
    try:
        pos = 10
        nb = (n + 7) // 8
        bitmap = payload[pos:pos + nb]
        pos += nb
        bound = payload[pos]
        pos += 1
        if bound:
            types = payload[pos:pos + 2 * n]
            pos += 2 * n
        if types is None or len(types) < 2 * n:
            raise ParamError("parameter types were never sent")
        values: list[object] = []
        blobs: list[bool] = []
        for i in range(n):
            t, flag = types[2 * i], types[2 * i + 1]
            blobs.append(t in _STRINGS and t != FT.BIT and t != FT.JSON and (t in (FT.TINY_BLOB, FT.MEDIUM_BLOB,
                                                                                    FT.LONG_BLOB, FT.BLOB)))
            if bitmap[i >> 3] & (1 << (i & 7)):
                values.append(None)
                continue
            if long_data and i in long_data:
                values.append(long_data[i])
                continue
            if t in _INT:
                size, signed, unsigned = _INT[t]
                values.append(struct.unpack_from(unsigned if flag & 0x80 else signed, payload, pos)[0])
                pos += size
            elif t == FT.DOUBLE:
                values.append(struct.unpack_from("<d", payload, pos)[0])
                pos += 8
            elif t == FT.FLOAT:
                values.append(struct.unpack_from("<f", payload, pos)[0])
                pos += 4
            elif t in (FT.DECIMAL, FT.NEWDECIMAL):
                ln, pos = _lenenc(payload, pos)
                values.append(Decimal(payload[pos:pos + ln].decode()))
                pos += ln
            elif t in (FT.DATE, FT.DATETIME, FT.TIMESTAMP):
                ln = payload[pos]
                f = payload[pos + 1:pos + 1 + ln]
                pos += 1 + ln
                values.append(_datetime(t, f))
            elif t == FT.TIME:
                ln = payload[pos]
                f = payload[pos + 1:pos + 1 + ln]
                pos += 1 + ln
                values.append(_time(f))
            elif t == FT.NULL:
                values.append(None)
            else:  # strings, blobs, JSON, anything length-encoded
                ln, pos = _lenenc(payload, pos)
                if pos + ln > len(payload):
                    raise ParamError("parameter value runs past the packet")
                values.append(payload[pos:pos + ln])
                pos += ln
        return values, blobs
    except (IndexError, struct.error, ValueError, ArithmeticError) as exc:
        if isinstance(exc, ParamError):
            raise
        raise ParamError(f"malformed parameter block: {exc}") from None


def _datetime(t: int, f: bytes) -> object:
    if not f:
        return "0000-00-00" if t == FT.DATE else "0000-00-00 00:00:00"
    y, mo, d = struct.unpack_from("<HBB", f, 0)
    if t == FT.DATE or len(f) == 4:
        return datetime.date(y, mo, d) if y and mo and d else f"{y:04d}-{mo:02d}-{d:02d}"
    h, mi, s = f[4], f[5], f[6]
    us = struct.unpack_from("<I", f, 7)[0] if len(f) >= 11 else 0
    if not (y and mo and d):
        return f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
    return datetime.datetime(y, mo, d, h, mi, s, us)


def _time(f: bytes) -> datetime.timedelta:
    if not f:
        return datetime.timedelta(0)
    neg, days, h, mi, s = struct.unpack_from("<BIBBB", f, 0)
    us = struct.unpack_from("<I", f, 8)[0] if len(f) >= 12 else 0
    td = datetime.timedelta(days=days, hours=h, minutes=mi, seconds=s, microseconds=us)
    return -td if neg else td
