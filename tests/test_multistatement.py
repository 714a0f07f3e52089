"""ddm.frontend.multistatement: cutting a multi-statement text, and the reframing of each statement's answer."""

from __future__ import annotations

import struct

from ddm.frontend.connection import SPLIT_WORDS
from ddm.frontend.multistatement import Reframer, needs_split, split
from ddm_core.lexer import lex
from ddm_core.packets import frame, ok_packet


class Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


def packets(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 3], "little")
        out.append((data[pos + 3], data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return out


def test_split_at_top_level_semicolons_only():
    sql = b"set @a = ';'; select 'x;y' /* ; */, `a;b` from t;; -- c;\n select 2 ;"
    assert split(lex(sql)) == [b"set @a = ';'", b"select 'x;y' /* ; */, `a;b` from t", b"-- c;\n select 2"]


def test_needs_split():
    assert needs_split([b"select 1", b"select 2"], True, SPLIT_WORDS)
    assert not needs_split([b"select 1", b"insert into t values (1)"], False, SPLIT_WORDS)
    assert not needs_split([b"select 7", b"LOAD DATA LOCAL INFILE 'f' INTO TABLE t"], False, SPLIT_WORDS)
    for first in (b"SET @a = 1", b"use x", b"SHOW DATABASES", b"KILL 3", b"lock tables t write",
                  b"create temporary table x (a int)", b"select database()", b"SELECT CONNECTION_ID() + 0",
                  b"/* a comment */ SET @a = 1", b"drop database x", b"alter table t add c int"):
        assert needs_split([b"select 1", first], False, SPLIT_WORDS), first


def test_reframer_renumbers_and_flags_more_results():
    sink = Sink()
    r = Reframer(sink, 1)
    ok = ok_packet(1, 0, 0x0002, 0, b"", False)
    data = frame(ok, 1)
    r.write(data[:2])  # arrives in pieces
    r.write(data[2:])
    assert sink.data == b""  # the terminator is held until the statement is done
    assert r.finish(more=True)
    (seq, payload), = packets(sink.data)
    assert seq == 1 and payload[3] & 0x08 and payload[3] & 0x02
    # a result set (text, with EOF packets) continues the numbering; the last statement keeps its flags
    r2 = Reframer(sink, r.seq)
    body = [b"\x01", b"coldef", b"\xfe\x00\x00\x02\x00", b"\x011", b"\xfe\x00\x00\x02\x00"]
    r2.write(b"".join(frame(p, i + 1) for i, p in enumerate(body)))
    assert r2.finish(more=False)
    got = packets(sink.data)[1:]
    assert [s for s, _ in got] == [2, 3, 4, 5, 6]
    assert struct.unpack_from("<H", got[-1][1], 3)[0] == 0x0002


def test_reframer_eof_and_deprecate_eof_terminators():
    sink = Sink()
    r = Reframer(sink, 5)
    r.write(frame(b"\xfe\x00\x00\x02\x00", 9))
    assert r.finish(more=True)
    assert struct.unpack_from("<H", packets(sink.data)[0][1], 3)[0] == 0x000A
    sink2 = Sink()
    r = Reframer(sink2, 1)
    r.write(frame(b"\xfe" + b"\xfc\x00\x01" + b"\x00" + b"\x02\x00\x00\x00", 3))  # OK-style end, 2-byte lenenc
    assert r.finish(more=True)
    assert struct.unpack_from("<H", packets(sink2.data)[0][1], 5)[0] == 0x000A


def test_reframer_error_ends_the_chain():
    sink = Sink()
    r = Reframer(sink, 3)
    r.write(frame(b"\xff\x7a\x04#42S02no such table", 1))
    assert not r.finish(more=True)
    (seq, payload), = packets(sink.data)
    assert seq == 3 and payload.endswith(b"no such table")
    assert not Reframer(sink, 1).finish(more=True)  # nothing came at all
