"""Per-statement diagnostics that live on the node connection that ran the statement: SHOW
WARNINGS / SHOW ERRORS / LAST_INSERT_ID() / FOUND_ROWS() read the client's own last statement (its connection is
held up to DIAGNOSTICS_HOLD seconds; a pipelined SELECT is run again).

A mixin of `ddm.frontend.connection.ClientConnection`: it uses the connection's state (see its __init__).
"""

from __future__ import annotations

import re
import struct

from ddm.wire.backend import BackendConnection, BackendError
from ddm.wire.constants import er as ER
from ddm_core.packets import frame
from ddm_core.protocol import KIND_RESULT

DIAGNOSTICS_HOLD = 2.0  # seconds a connection with the last statement's warnings waits for a SHOW WARNINGS

def _release(conn: BackendConnection) -> None:
    """Back to its pool as after any statement (nothing runs on it, its session state is the client's)."""
    if conn.pool is not None:
        conn.pool.release(conn)
    else:
        conn.close()

# what reads the previous statement's diagnostics area, its LAST_INSERT_ID() or FOUND_ROWS()
DIAGNOSTICS_STATEMENT = re.compile(rb"\s*(?:SHOW\s+(?:COUNT\s*\(\s*\*\s*\)\s+)?(?:WARNINGS|ERRORS)\b|"
                          rb"SELECT\s+(?:@@(?:SESSION\.)?(?:WARNING_COUNT|ERROR_COUNT)|LAST_INSERT_ID\s*\(\s*\)|"
                          rb"FOUND_ROWS\s*\(\s*\))\s*;?\s*$)", re.I)

CALC_FOUND_ROWS = re.compile(rb"\bSQL_CALC_FOUND_ROWS\b", re.I)


class DiagnosticsMixin:
    # The attributes are ClientConnection's (its __init__; ddm.execute.client.ClientSession lists most).

    def keep_diagnostics(self, conn: BackendConnection | None, rerun: tuple | None = None) -> None:
        """The last statement left warnings, an error, an insert id or found rows on its connection: hold it (or,
        pipelined, keep the statement to run again) for a SHOW WARNINGS / SHOW ERRORS / SELECT LAST_INSERT_ID() /
        SELECT FOUND_ROWS() that may come next (`_diagnostics`)."""
        old, self.diag_conn = self.diag_conn, conn
        self.diag_rerun = rerun
        if old is not None and old is not conn:
            _release(old)
        if conn is not None and self._diag_timer is None:
            # an idle client must not keep a pooled connection from the others for long
            self._diag_timer = self.loop.call_later(DIAGNOSTICS_HOLD, self._drop_diagnostics)

    def _drop_diagnostics(self) -> None:
        if self._diag_timer is not None:
            self._diag_timer.cancel()
            self._diag_timer = None
        conn, self.diag_conn = self.diag_conn, None
        self.diag_rerun = None
        if conn is not None:
            _release(conn)

    def _diagnostics(self, payload: bytes) -> bool:
        """Before the next command: answer a diagnostics statement from the previous statement's connection (True),
        else let the held connection go (False: the command runs as usual)."""
        conn, self.diag_conn = self.diag_conn, None
        rerun, self.diag_rerun = self.diag_rerun, None
        if self._diag_timer is not None:
            self._diag_timer.cancel()
            self._diag_timer = None
        if payload[:1] == b"\x03" and DIAGNOSTICS_STATEMENT.match(payload, 1):
            if conn is not None and not conn.closed and self.conn is None:
                self.payload = payload
                self.forward(conn, frame(payload, 0))
                return True
            if rerun is not None and self.conn is None:
                self.payload = payload
                self.run_slow(self._rerun_for_diagnostics(rerun, payload))
                if conn is not None:
                    _release(conn)
                return True
        if conn is not None:
            _release(conn)
        return False

    async def _rerun_for_diagnostics(self, rerun: tuple, payload: bytes) -> None:
        """A pipelined SELECT left warnings or an error on a shared connection that has run other clients'
        statements since: run it again on a connection of the same node and database (read-only; its rows are
        dropped), then the diagnostics statement there."""
        node, phys, command = rerun
        conn = await self._conn_for(node, phys)
        try:
            if command[:1] == b"\x17":  # COM_STMT_EXECUTE of a pass-through statement
                stmt = self.stmts.get(struct.unpack_from("<I", command, 1)[0])
                if stmt is None:
                    raise BackendError(ER.UNKNOWN_STMT_HANDLER, ER.sqlstate(ER.UNKNOWN_STMT_HANDLER),
                                       b"the statement was closed")
                bstmt, _ = await conn.prepare(stmt.sql)
                command = self.execute_payload(stmt, bstmt, command)
            await conn.command(command)
        except BackendError:
            pass  # the error is what SHOW WARNINGS / SHOW ERRORS will show
        except BaseException:
            self.give_back(conn, dirty=True)
            raise
        await self.forward_and_wait(conn, frame(payload, 0), KIND_RESULT)
        self._settle(conn)
