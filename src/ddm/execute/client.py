"""What the execution layer needs from a client session: the narrow interface below the frontend.

The executor, scatter streams, logical metadata, cross-node lock waits, the LOAD DATA relay, thread ids / KILL and
the pipelines act for one client connection: they read its session and transaction state, borrow node connections
through it, and write packets to it. They see it as a `ClientSession`; `ddm.frontend.connection.ClientConnection`
is the implementation (tests use small fakes). Nothing here imports the frontend, so the frontend can import the
execution layer without a cycle.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from ddm.config import Config
    from ddm.wire.backend import BackendConnection
    from ddm.wire.session import Session
    from ddm_core.packets import PacketFramer

# The phases of a client connection (ClientSession.phase)
PH_HANDSHAKE, PH_AUTH, PH_COMMAND, PH_CLOSED, PH_INFILE = range(5)  # PH_INFILE: the client sends a LOCAL file


class ClientSession(Protocol):
    # identity and configuration
    conn_id: int  # the thread id the client was given
    config: Config  # the configuration snapshot this client runs under
    server: Any  # ddm.process.server.Server: pools, pipelines, thread registry
    loop: asyncio.AbstractEventLoop
    phase: int  # PH_*
    # protocol state
    transport: Any  # asyncio transport to the client
    framer: PacketFramer
    busy: bool
    deprecate_eof: bool  # CLIENT_DEPRECATE_EOF: result sets end with OK, not EOF
    session_track: bool  # CLIENT_SESSION_TRACK
    flavour: int  # MariaDB capability bits shared with the nodes
    payload: bytes  # the command being answered
    # session and transaction state
    session: Session  # session variables, current database, character set
    conn: BackendConnection | None  # the pinned node connection (transaction, cursor, locks, temporary tables)
    txn_conns: dict[str, BackendConnection]  # sharded transaction: one connection per node it reached
    txn_begin: bytes | None  # sharded transaction: the BEGIN to send to each node it reaches
    sticky: set[str]  # why the pinned connection must stay (locks, temporary tables)
    cursors: int  # statements with an open cursor
    # what is in flight for this client
    fwd_conn: BackendConnection | None  # the node connection forwarding the current answer
    paused_backend: BackendConnection | None  # a node connection paused while the client's socket is full
    scatter_stream: Any  # ddm.execute.scatter.ScatterStream sending this client rows, if any
    piped: Any  # ddm.execute.pipeline.Pipe this client's SELECT is queued on, if any
    piped_command: bytes | None  # the framed command a pipe last sent for this client
    no_pipe: bool  # set while run_unpiped runs the command again

    # packets to the client
    def send_packet(self, payload: bytes, seq: int) -> None: ...
    def send_ok(self, seq: int = 1, affected: int = 0, insert_id: int = 0, info: bytes = b"") -> None: ...
    def send_error(self, code: int, message: str, seq: int = 1, sqlstate: bytes | None = None) -> None: ...
    def status_flags(self) -> int: ...
    def command_done(self) -> None: ...
    def close(self) -> None: ...

    # node connections
    def pool_for(self, node: str) -> Any: ...
    def ready_conn(self, node: str, phys: bytes | None) -> BackendConnection | None: ...
    def give_back(self, conn: BackendConnection, dirty: bool = False) -> None: ...
    def forward(self, conn: BackendConnection, packet: bytes, kind: int = ...) -> None: ...
    def keep_diagnostics(self, conn: BackendConnection | None, rerun: tuple | None = None) -> None: ...
    def check_db(self, db: str) -> tuple[int, str] | None: ...

    # commands
    def run_slow(self, coro: Coroutine[Any, Any, None]) -> None: ...
    def run_unpiped(self) -> None: ...
    def execute_payload(self, stmt: Any, bstmt: Any, payload: bytes) -> bytes: ...
    async def execute_on(self, conn: BackendConnection, stmt: Any, bstmt: Any, payload: bytes) -> None: ...
    async def node_statement(self, conn: BackendConnection, stmt: Any, sql: bytes) -> Any: ...

    # LOAD DATA LOCAL
    def end_infile(self, conn: BackendConnection) -> None: ...
    def infile_conn(self) -> BackendConnection | None: ...
