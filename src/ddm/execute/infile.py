"""LOAD DATA LOCAL INFILE through ddm: the data node's file request goes to the client, the client's file to the node.

A client that negotiated CLIENT_LOCAL_FILES gets backend connections opened with it (a flavour bit, see
ddm.wire.backend.FLAVOUR_BITS), so a pass-through statement may be answered with a LOCAL INFILE request: 0xFB and the
file name (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_local_infile_request.html).
BackendCore forwards that packet to the client like any response and ends the response with `local_infile` set; the
node now waits for the file. The client sends the content as packets and an empty packet to end it (at once when it
refuses or cannot read the file). `InfileRelay` passes each packet on with the client's own sequence ids, which
continue the node's, and the empty one starts an ordinary forwarded response: the node's OK or ERR (or the rest of a
multi-statement) goes back as the bytes it sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ddm_core.packets import frame
from ddm_core.protocol import KIND_RESULT

if TYPE_CHECKING:
    from ddm.execute.client import ClientSession
    from ddm.wire.backend import BackendConnection

MAX_PAYLOAD = 0xFFFFFF  # a packet this long continues in the next one
HIGH_WATER = 1 << 20  # bytes waiting for the data node's socket before the client's upload is paused
LOW_WATER = HIGH_WATER // 4
RECHECK = 0.002  # seconds between looks at a congested node socket (BackendConnection has no drain callback)


class InfileRelay:
    """One LOAD DATA LOCAL in progress: the client's packets go to `conn` until the empty one."""

    def __init__(self, client: ClientSession, conn: BackendConnection,
                 then: Callable[[BackendConnection], None]) -> None:
        self.client = client
        self.conn = conn
        self.then = then  # the forward's own end-of-response callback, for the node's final answer
        self.paused = False

    def packet(self, payload: bytes) -> None:
        """One packet of the file from the client (an empty one ends it)."""
        client, conn = self.client, self.conn
        # a payload the framer joined from 16 MiB continuations started that many ids before the last one
        seq = (client.framer.last_seq - len(payload) // MAX_PAYLOAD) & 0xFF
        if conn.closed:
            # the node went away mid-file: the statement's outcome is unknown, so the honest end is closing
            client.close()
            return
        if not payload:
            self._finish(seq)
            return
        conn.transport.write(frame(payload, seq))
        if not self.paused and conn.transport.get_write_buffer_size() > HIGH_WATER:
            self.paused = True
            client.transport.pause_reading()
            client.loop.call_later(RECHECK, self._drain)
        client.command_done()  # take the next packet

    def _finish(self, seq: int) -> None:
        self._resume()
        self.client.end_infile(self.conn)
        self.conn.forward(frame(b"", seq), self.client.transport, KIND_RESULT, self.then)

    def _drain(self) -> None:
        if not self.paused:
            return
        conn = self.conn
        if conn.closed or conn.transport.get_write_buffer_size() <= LOW_WATER:
            self._resume()
        else:
            self.client.loop.call_later(RECHECK, self._drain)

    def _resume(self) -> None:
        if self.paused:
            self.paused = False
            if not self.client.transport.is_closing():
                self.client.transport.resume_reading()

    def abandon(self) -> None:
        """The client is gone mid-file: the node still waits for it, so its connection cannot be reused."""
        self.paused = False
        conn = self.conn
        if conn.pool is not None:
            conn.pool.discard(conn)
        conn.close()
