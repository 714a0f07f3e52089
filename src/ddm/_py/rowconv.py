"""Pure-Python twin of ddm_core.rowconv (reference for tests; the server never imports it)."""

from __future__ import annotations

from collections.abc import Callable

from ddm._py.packets import lenenc_int, read_lenenc

COPY, INT, GENERIC = 0, 1, 2
LENENC, FIXED, TEMPORAL = 0, 1, 2


def _int_bytes(text: bytes, width: int) -> bytes:
    body = text[1:] if text[:1] in (b"-", b"+") else text
    if not body or len(body) > 20 or not body.isdigit():
        raise ValueError("bad integer in a text row")
    v = int(body)
    if text[:1] == b"-":
        v = -v
    return (v & ((1 << 64) - 1)).to_bytes(8, "little")[:width]


def text_rows_to_binary(rows: list[bytes], kinds: tuple, args: tuple,
                        generic: Callable[[int, bytes], bytes]) -> list[bytes]:
    nbitmap = (len(kinds) + 9) // 8
    out = []
    for row in rows:
        bitmap = bytearray(nbitmap)
        parts = []
        pos = 0
        for i, kind in enumerate(kinds):
            start = pos
            try:
                n, pos = read_lenenc(row, pos)
            except ValueError:
                raise ValueError("truncated text row") from None
            if n is None:
                bit = i + 2
                bitmap[bit >> 3] |= 1 << (bit & 7)
                continue
            if pos + n > len(row):
                raise ValueError("truncated text row")
            text = row[pos:pos + n]
            if kind == COPY:
                parts.append(row[start:pos + n])
            elif kind == INT:
                parts.append(_int_bytes(text, args[i]))
            else:
                f = generic(i, text)
                if args[i] == LENENC:
                    parts.append(lenenc_int(len(f)))
                elif args[i] == TEMPORAL:
                    parts.append(bytes((len(f),)))
                parts.append(f)
            pos += n
        out.append(b"\x00" + bytes(bitmap) + b"".join(parts))
    return out
