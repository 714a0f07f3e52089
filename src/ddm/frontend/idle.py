"""wait_timeout: a client that sends no command for its session's wait_timeout is closed, as MariaDB closes it
(no error packet; the node's own connections are ddm's and never idle for the client).

The session's value starts at MariaDB's default (28800 s; interactive_timeout's 28800 for a client with
CLIENT_INTERACTIVE) and follows the client's successful `SET [SESSION] wait_timeout = ...` (read back from the node
that ran the SET, `ddm.frontend.local`). Nothing is paid per command: one timer per worker looks at the clients
once a second and closes one whose command counter has not moved for its wait_timeout while it was idle (logged
in, no command running), so a client is closed between wait_timeout and wait_timeout + 1 s after its last command.
"""

from __future__ import annotations

import logging
import re
import time

from ddm.execute.client import PH_COMMAND

log = logging.getLogger("ddm.frontend.connection")

DEFAULT_WAIT_TIMEOUT = 28800.0  # MariaDB's default wait_timeout and interactive_timeout
TICK = 1.0

# a SET that may change the session's wait_timeout (its value is then read back from the node)
SETS_WAIT_TIMEOUT = re.compile(rb"wait_timeout", re.I).search


class IdleWatch:
    """One per worker: closes the clients idle past their wait_timeout."""

    def __init__(self, server) -> None:
        self.server = server
        self._timer = None

    def start(self) -> None:
        if self._timer is None:
            self._timer = self.server.loop.call_later(TICK, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        now = time.monotonic()
        for c in list(self.server.clients):
            if c.phase != PH_COMMAND or c.busy:
                c.idle_mark = -1
                continue
            if c.idle_mark != c.queries:
                c.idle_mark, c.idle_since = c.queries, now
                continue
            if now - c.idle_since >= c.session.wait_timeout - TICK / 2:
                log.info("closed the connection %d of '%s' from %s: idle for its wait_timeout (%g s)", c.conn_id,
                         c.session.user, c.peer, c.session.wait_timeout)
                c.close()
        if self.server.clients:
            self.start()
