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

# Character sets MariaDB refuses as a client character set (is_supported_parser_charset: a minimum character length
# above one byte); the handshake answers 1231 for them.
NOT_CLIENT_CHARSETS = frozenset(("ucs2", "utf16", "utf16le", "utf32"))

# What MariaDB does with a collation id it does not know: the session keeps the server's global defaults.
GLOBAL_NAMES = (b"SET character_set_client = @@global.character_set_client, "
                b"character_set_connection = @@global.character_set_connection, "
                b"collation_connection = @@global.collation_connection, "
                b"character_set_results = @@global.character_set_results")
DEFAULTS_QUERY = (b"SELECT @@global.character_set_client, @@global.collation_connection, "
                  b"@@global.character_set_results")
COLLATIONS_QUERY = b"SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS"


@dataclass
class CharsetTable:
    """The collations a data node knows (information_schema.COLLATIONS, read once by the worker), and whether its
    global defaults are what ddm's node connections get anyway (utf8mb4_general_ci, the id ddm's own handshake
    sends): then a client announcing an id the node does not know needs no statement."""

    collations: dict[int, tuple[str, str]]
    defaults_are_ddms: bool = True

    @classmethod
    def from_rows(cls, rows: list[tuple[bytes | None, ...]], defaults: tuple[bytes | None, ...] | None
                  ) -> CharsetTable:
        table = {int(r[0]): (r[1].decode(), r[2].decode()) for r in rows
                 if r[0] is not None and r[1] is not None and r[2] is not None}
        ddms = defaults is None or tuple(d.lower() if d else d for d in defaults) == (
            b"utf8mb4", b"utf8mb4_general_ci", b"utf8mb4")
        return cls(table, ddms)


STATIC_TABLE = CharsetTable(COLLATIONS)  # until a node has been asked (or when none answers)


def set_names_for(collation_id: int, table: CharsetTable | None = None) -> bytes | None:
    """The statement that gives a data-node connection the client's character set (None: the node connection has
    it already). Raises CharsetRefused for a character set MariaDB refuses for a client."""
    if collation_id == DEFAULT_COLLATION:
        return None
    if table is None:
        if collation_id == 255:
            return None
        table = STATIC_TABLE
    cs = table.collations.get(collation_id)
    if cs is None:
        # an id the node does not know: it would keep its global defaults (MySQL 8's 255 on MariaDB < 11.4 ...)
        return None if table.defaults_are_ddms or table is STATIC_TABLE else GLOBAL_NAMES
    if cs[0].lower() in NOT_CLIENT_CHARSETS:
        raise CharsetRefused(cs[0])
    if cs[0] == "binary":
        return b"SET NAMES binary"
    return f"SET NAMES {cs[0]} COLLATE {cs[1]}".encode()


class CharsetRefused(Exception):
    """A client character set MariaDB refuses (1231, as the node answers)."""

    def __init__(self, charset: str) -> None:
        super().__init__(f"Variable 'character_set_client' can't be set to the value of '{charset}'")
        self.charset = charset


# CLIENT_SESSION_TRACK: the session-state changes an OK packet carries, for the statements ddm answers itself (the
# node's own OK packets are forwarded as they are). MariaDB's defaults: session_track_schema on, the system variables
# autocommit, character_set_client, character_set_connection, character_set_results, time_zone.
SESSION_STATE_CHANGED = 0x4000
TRACK_SYSTEM_VARIABLES, TRACK_SCHEMA = 0, 1


def _lenenc_str(b: bytes) -> bytes:
    n = len(b)
    if n < 0xFB:
        return bytes([n]) + b
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little") + b
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little") + b
    return b"\xfe" + n.to_bytes(8, "little") + b


def track_schema(name: bytes) -> bytes:
    """The session-state entry of a USE."""
    return bytes([TRACK_SCHEMA]) + _lenenc_str(_lenenc_str(name))


def track_variables(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """The session-state entries of tracked system variables set to these values, in MariaDB's order."""
    return b"".join(bytes([TRACK_SYSTEM_VARIABLES]) + _lenenc_str(_lenenc_str(n) + _lenenc_str(v)) for n, v in pairs)


def names_tracked(charset: bytes) -> bytes:
    """What MariaDB reports after SET NAMES <charset> (utf8 is utf8mb3 there)."""
    cs = charset.lower()
    if cs == b"utf8":
        cs = b"utf8mb3"
    return track_variables([(b"character_set_connection", cs), (b"character_set_client", cs),
                            (b"character_set_results", cs)])


def ok_with_state(status: int, state: bytes, affected: int = 0, insert_id: int = 0, warnings: int = 0) -> bytes:
    """An OK packet (CLIENT_SESSION_TRACK) carrying session-state changes."""
    return (b"\x00" + _lenenc_int(affected) + _lenenc_int(insert_id)
            + (status | SESSION_STATE_CHANGED).to_bytes(2, "little") + warnings.to_bytes(2, "little")
            + b"\x00" + _lenenc_str(state))


def _lenenc_int(n: int) -> bytes:
    if n < 0xFB:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


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
    wait_timeout: float = 28800.0  # ddm.frontend.idle closes the client after this long without a command
    default_wait_timeout: float = 28800.0  # (interactive_timeout for CLIENT_INTERACTIVE clients)

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
        self.wait_timeout = self.default_wait_timeout


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
