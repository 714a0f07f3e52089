"""Multi-statements (CLIENT_MULTI_STATEMENTS) answered statement by statement, as the data node would.

A COM_QUERY holding several statements goes to the node whole when every statement is one the node answers as
ddm would (one round trip). When any of them is a statement ddm answers or tracks itself (USE, SET, SHOW, KILL,
LOCK / UNLOCK, CREATE TEMPORARY, DDL, SELECT DATABASE() / CONNECTION_ID() / LAST_INSERT_ID()), or the database is
sharded, the text is cut at its top-level `;` and each statement runs through the client's normal COM_QUERY
path: its SETs and USEs become session state one by one (never the whole text), its KILL kills.

Each statement's answer is written to a `Reframer` standing in for the client's transport: it renumbers the
packets' sequence ids so the answers form one response, holds back the last packet seen (the answer's
terminator), and when the statement is done sets SERVER_MORE_RESULTS_EXISTS in that terminator unless it was the
last statement. An ERR ends the chain, as on the node: later statements do not run.
"""

from __future__ import annotations

import re
from typing import Protocol

from ddm.wire.constants import server_status as SS
from ddm_core.lexer import T_IDENT, T_KEYWORD, T_PUNCT, Lexed
from ddm_core.packets import first_word

# SELECTs ddm answers itself when they are the whole statement
_LOCAL_SELECT = re.compile(rb"\bSELECT\s+(?:DATABASE|SCHEMA|CONNECTION_ID|LAST_INSERT_ID|FOUND_ROWS)\s*\(", re.I)


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_extra_info(self, name: str, default: object = None) -> object: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


# a compound statement's body (CREATE PROCEDURE / FUNCTION / TRIGGER / EVENT ... BEGIN ... END, BEGIN NOT ATOMIC
# ... END) holds `;` that do not end the statement: blocks open with BEGIN or CASE and close with END, except
# END IF / LOOP / WHILE / REPEAT (blocks not counted) and the CASE of END CASE
_BLOCK_CLOSERS_NOT_COUNTED = frozenset((b"IF", b"LOOP", b"WHILE", b"REPEAT"))
_WORDS = frozenset((T_KEYWORD, T_IDENT))


def split(lexed: Lexed) -> list[bytes]:
    """The statements of a lexed multi-statement text (cut at top-level `;`, not inside a compound statement's
    BEGIN ... END; empty statements dropped)."""
    sql = lexed.sql
    out = []
    start = 0
    first = b""  # the current statement's first word, and (for BEGIN) its second
    depth = 0
    prev = b""
    for i in range(lexed.ntokens):
        kind = lexed.kind(i)
        if kind == T_PUNCT and sql[lexed.start(i)] == 0x3B:  # ;
            prev = b";"
            if depth > 0:
                continue
            piece = sql[start:lexed.start(i)].strip()
            if piece:
                out.append(piece)
            start = lexed.end(i)
            first = b""
            continue
        if kind not in _WORDS:
            prev = b""
            continue
        word = lexed.text(i).upper()
        if not first:
            first = word
        elif first == b"BEGIN" and prev == b"BEGIN" and word == b"NOT":
            first = b"BEGIN NOT"  # BEGIN NOT ATOMIC: a compound statement, not a transaction
            depth = 1
        elif first in (b"CREATE", b"BEGIN NOT"):
            if word == b"BEGIN" or (word == b"CASE" and prev != b"END"):
                depth += 1
            elif word in _BLOCK_CLOSERS_NOT_COUNTED and prev == b"END":
                depth += 1  # undo the END just counted
            elif word == b"END" and depth > 0:
                depth -= 1
        prev = word
    piece = sql[start:].strip()
    if piece:
        out.append(piece)
    return out


def needs_split(statements: list[bytes], sharded: bool, local_words: frozenset[bytes]) -> bool:
    """Whether the text must be answered statement by statement (else the node runs it whole): on a sharded
    database, or when a statement's first word (as the COM_QUERY dispatch reads it) is one of `local_words`, the
    statements ddm answers or tracks itself, or it is a SELECT ddm answers itself."""
    if sharded:
        return True
    for s in statements:
        word = first_word(s)
        if word in local_words or (word == b"SELECT" and _LOCAL_SELECT.search(s)):
            return True
    return False


class Reframer:
    """Stands in for the client's transport while one statement of a multi-statement is answered."""

    def __init__(self, real: Transport, seq: int) -> None:
        self.real = real
        self.seq = seq  # the sequence id the next packet written to the client gets
        self._buf = bytearray()
        self._held: bytes | None = None  # the last complete packet (header included), not yet written

    # the asyncio transport surface the answer paths use
    def write(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            end = pos + 4 + length
            if end > n:
                break
            if self._held is not None:
                out.append(self._renumber(self._held))
            self._held = bytes(buf[pos:end])
            pos = end
        if pos:
            del buf[:pos]
        if out:
            self.real.write(b"".join(out))

    def close(self) -> None:
        self.real.close()

    def is_closing(self) -> bool:
        return self.real.is_closing()

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.real.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.real.pause_reading()

    def resume_reading(self) -> None:
        self.real.resume_reading()

    def _renumber(self, packet: bytes) -> bytes:
        seq = self.seq
        self.seq = (seq + 1) & 0xFF
        return packet[:3] + bytes((seq,)) + packet[4:]

    def finish(self, more: bool) -> bool:
        """The statement's answer is complete: write its terminator (with MORE_RESULTS when `more`). Returns
        False when the answer was an error (or nothing came): the chain ends there."""
        held, self._held = self._held, None
        if held is None:
            return False
        payload = held[4:]
        head = payload[:1]
        ok = head != b"\xff"
        if more and ok:
            held = held[:4] + _with_more_results(payload)
        if not self.real.is_closing():
            self.real.write(self._renumber(held))
        return ok


def _with_more_results(payload: bytes) -> bytes:
    """An OK / EOF terminator with SERVER_MORE_RESULTS_EXISTS set in its status flags."""
    if payload[:1] == b"\xfe" and len(payload) < 9:  # EOF: 0xFE, warnings(2), status(2)
        pos = 3
    elif payload[:1] in (b"\x00", b"\xfe"):  # OK (0xFE: the result-set end under CLIENT_DEPRECATE_EOF)
        pos = 1
        for _ in range(2):  # affected rows, last insert id: length-encoded
            c = payload[pos]
            pos += 1 if c < 0xFB else 3 if c == 0xFC else 4 if c == 0xFD else 9
    else:
        return payload
    if pos + 2 > len(payload):
        return payload
    status = payload[pos] | payload[pos + 1] << 8 | SS.MORE_RESULTS_EXISTS
    return payload[:pos] + bytes((status & 0xFF, status >> 8)) + payload[pos + 2:]


__all__ = ["Reframer", "needs_split", "split"]
