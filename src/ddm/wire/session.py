"""Per-client session state that must follow the client onto whichever pooled connection runs its statements.

A session's *signature* is the tuple of session statements it has issued (the handshake's character set as an
implicit SET NAMES, then every successful SET, in order, de-duplicated). A backend connection remembers the
signature it last replayed; when a statement lands on a connection with another signature, the connection is
reset (COM_RESET_CONNECTION) and the statements are replayed. Clients that issue no SET share connections freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ddm.config import Config, DatabaseConfig
from ddm.wire.backend import BackendConnection

# Collation ids a client may announce in its handshake -> the SET NAMES that reproduces it on a data node.
# 255 (utf8mb4_0900_ai_ci) is MySQL 8's default; MariaDB does not know it, so it maps to utf8mb4_general_ci.
COLLATIONS: dict[int, tuple[str, str]] = {
    8: ("latin1", "latin1_swedish_ci"),
    28: ("gbk", "gbk_chinese_ci"),
    33: ("utf8mb3", "utf8mb3_general_ci"),
    45: ("utf8mb4", "utf8mb4_general_ci"),
    46: ("utf8mb4", "utf8mb4_bin"),
    47: ("latin1", "latin1_bin"),
    63: ("binary", "binary"),
    83: ("utf8mb3", "utf8mb3_bin"),
    192: ("utf8mb3", "utf8mb3_unicode_ci"),
    224: ("utf8mb4", "utf8mb4_unicode_ci"),
    255: ("utf8mb4", "utf8mb4_general_ci"),
}
DEFAULT_COLLATION = 45
MAX_SESSION_STATEMENTS = 256


def set_names_for(collation_id: int) -> bytes | None:
    """The statement that gives a data-node connection the client's character set (None for the default)."""
    if collation_id in (DEFAULT_COLLATION, 255):
        return None
    cs = COLLATIONS.get(collation_id)
    if cs is None:
        return None
    if cs[0] == "binary":
        return b"SET NAMES binary"
    return f"SET NAMES {cs[0]} COLLATE {cs[1]}".encode()


@dataclass
class Session:
    user: str = ""
    db: str | None = None  # current logical database
    dbconf: DatabaseConfig | None = None
    signature: tuple[bytes, ...] = ()
    multi_statements: bool = False
    autocommit: bool = True
    last_insert_id: int = 0  # the last statement's OK insert id, or the first id ddm generated: SELECT LAST_INSERT_ID()
    # sql_mode has NO_BACKSLASH_ESCAPES (as the node reported after the client's last SET): the status flag goes into
    # every reply ddm builds itself, or a client would escape quotes with backslashes the node takes literally
    no_backslash_escapes: bool = False
    prepared: dict = field(default_factory=dict)

    def bind_database(self, config: Config, name: str | None) -> None:
        self.db = name
        self.dbconf = config.databases.get(name) if name is not None else None

    def record(self, statement: bytes) -> None:
        """Remember a session statement (SET ...) that succeeded, to replay it on other connections."""
        sig = tuple(s for s in self.signature if s != statement) + (statement,)
        if len(sig) > MAX_SESSION_STATEMENTS:
            sig = sig[-MAX_SESSION_STATEMENTS:]
        self.signature = sig

    def reset(self) -> None:
        self.signature = ()
        self.prepared.clear()
        self.autocommit = True
        self.no_backslash_escapes = False


def in_sync(conn: BackendConnection, session: Session, physical_db: bytes | None) -> bool:
    """Whether `conn` can run the session's next statement as it is (the fast path)."""
    return (conn.signature is session.signature or conn.signature == session.signature) and (
        physical_db is None or conn.db == physical_db)


async def synchronize(conn: BackendConnection, session: Session, physical_db: bytes | None) -> None:
    """Bring `conn` to the session's state: reset and replay its statements, select its database."""
    if not (conn.signature is session.signature or conn.signature == session.signature):
        if conn.signature:
            await conn.command(b"\x1f")  # COM_RESET_CONNECTION: also drops its prepared statements
            conn.forget_statements()
            conn.signature = ()
            conn.db = None
        for stmt in session.signature:
            await conn.query(stmt)
        conn.signature = session.signature
    if physical_db is not None and conn.db != physical_db:
        await conn.command(b"\x02" + physical_db)
        conn.db = physical_db
