"""Result sets ddm answers itself (SHOW DATABASES, COM_STATISTICS, admin queries) in the text protocol.

https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset.html
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from ddm.wire.constants import field_type as FT
from ddm_core.packets import eof_packet, frame, lenenc_int, lenenc_str, ok_packet

UTF8MB4 = 45
BINARY = 63


def column_definition(name: str, type_: int = FT.VAR_STRING, *, schema: str = "", table: str = "",
                      length: int = 256, charset: int = UTF8MB4, flags: int = 0, decimals: int = 0) -> bytes:
    """Protocol::ColumnDefinition41."""
    n = name.encode()
    return (lenenc_str(b"def") + lenenc_str(schema.encode()) + lenenc_str(table.encode())
            + lenenc_str(table.encode()) + lenenc_str(n) + lenenc_str(n) + b"\x0c"
            + struct.pack("<HIBHB", charset, length, type_, flags, decimals) + b"\x00\x00")


def text_row(values: Iterable[object]) -> bytes:
    out = []
    for v in values:
        if v is None:
            out.append(b"\xfb")
        else:
            b = v if isinstance(v, bytes) else str(v).encode()
            out.append(lenenc_str(b))
    return b"".join(out)


def text_resultset(columns: Sequence[bytes], rows: Iterable[bytes], *, deprecate_eof: bool, status: int = 2,
                   seq: int = 1) -> bytes:
    """A whole framed result set (column count, definitions, rows, terminator), sequence ids from `seq`."""
    parts = [frame(lenenc_int(len(columns)), seq)]
    seq += 1
    for col in columns:
        parts.append(frame(col, seq & 0xFF))
        seq += 1
    if not deprecate_eof:
        parts.append(frame(eof_packet(0, status), seq & 0xFF))
        seq += 1
    for row in rows:
        parts.append(frame(row, seq & 0xFF))
        seq += 1
    if deprecate_eof:
        # With CLIENT_DEPRECATE_EOF the result set ends with an OK packet whose header is 0xFE.
        parts.append(frame(b"\xfe" + ok_packet(0, 0, status, 0)[1:], seq & 0xFF))
    else:
        parts.append(frame(eof_packet(0, status), seq & 0xFF))
    return b"".join(parts)


def simple_resultset(names: Sequence[str], rows: Iterable[Sequence[object]], *, deprecate_eof: bool,
                     status: int = 2) -> bytes:
    cols = [column_definition(n) for n in names]
    return text_resultset(cols, (text_row(r) for r in rows), deprecate_eof=deprecate_eof, status=status)
