"""Statements ddm answers or tracks itself: USE, SELECT DATABASE(), SET (session state), SHOW
(databases, variables ...), KILL, CREATE/DROP DATABASE (refused), LOAD DATA LOCAL.

A mixin of `ddm.frontend.connection.ClientConnection`: it uses the connection's state (see its __init__).
"""

from __future__ import annotations

import re

from ddm.execute import threads
from ddm.frontend import idle
from ddm.frontend.diagnostics import DIAGNOSTICS_STATEMENT
from ddm.sharding.plan import database_ddl_refusal
from ddm.wire.constants import er as ER
from ddm.wire.constants import field_type as FT
from ddm.wire.constants import server_status as SS
from ddm.wire.resultset import column_definition, simple_resultset, text_resultset, text_row
from ddm.wire.rowcodec import split_text_row
from ddm.wire.session import COLLATIONS, names_tracked, ok_with_state, track_schema, track_variables
from ddm_core.lexer import lex
from ddm_core.packets import ok_packet

METADATA_WORDS = frozenset((b"SHOW", b"DESC", b"DESCRIBE", b"EXPLAIN", b"SELECT"))

METADATA_SHOW = frozenset((b"TABLES", b"COLUMNS", b"FIELDS", b"INDEX", b"INDEXES", b"KEYS", b"CREATE", b"TABLE"))

def metadata_statement(kw: bytes, sql: bytes) -> bool:
    """Whether ddm.execute.metadata may have to answer this statement on a database whose physical name differs (SHOW
    WARNINGS, VARIABLES etc. keep the direct path)."""
    if kw == b"SELECT":
        low = sql.lower()
        return b"information_schema" in low or b"database" in low or b"schema" in low
    if kw == b"SHOW":
        words = sql.upper().split(None, 3)
        word = words[2] if len(words) > 2 and words[1] == b"FULL" else words[1] if len(words) > 1 else b""
        return word.rstrip(b";") in METADATA_SHOW
    return True

SET_STATEMENT = re.compile(rb"^\s*SET\s+STATEMENT\s", re.I)

def sets_global(sql: bytes) -> bool:
    """Whether a SET assigns a global variable (`SET GLOBAL x = ..`, `SET @@global.x = ..`, in any of its
    comma-separated assignments); reading one (`SET @x = @@global.max_connections`) is a session statement."""
    lexed = lex(sql)
    depth = 0
    target = True  # the next token names what is assigned
    for i in range(1, lexed.ntokens):
        text = lexed.text(i)
        if target:
            word = text.upper()
            if word == b"GLOBAL" or word.startswith(b"@@GLOBAL."):
                return True
            target = word in (b"SESSION", b"LOCAL")  # SET SESSION x = ..: x is the target
            continue
        if text == b"(":
            depth += 1
        elif text == b")":
            depth -= 1
        elif text == b"," and depth == 0:
            target = True
    return False

_SET_NAMES = re.compile(rb"^\s*SET\s+NAMES\s+'?(\w+)'?(\s+COLLATE\s+'?(\w+)'?)?\s*;?\s*$", re.I)

_SET_AUTOCOMMIT = re.compile(rb"^\s*SET\s+(?:@@(?:SESSION\.)?|SESSION\s+)?AUTOCOMMIT\s*=\s*(\w+)\s*;?\s*$", re.I)

_KNOWN_CHARSETS = {cs.encode() for cs, _ in COLLATIONS.values()} | {b"utf8"}

_KNOWN_COLLATIONS = {co.encode() for _, co in COLLATIONS.values()}

def is_load_local(sql: bytes) -> bool:
    """LOAD {DATA | XML} [LOW_PRIORITY | CONCURRENT] LOCAL INFILE ... (comments skipped by the lexer)."""
    lexed = lex(sql)
    words = [lexed.text(i).upper() for i in range(min(lexed.ntokens, 4))]
    return words[:1] == [b"LOAD"] and words[1:2] in ([b"DATA"], [b"XML"]) and b"LOCAL" in words[2:4]

def _local_set(sql: bytes) -> tuple[str, object] | None:
    m = _SET_NAMES.match(sql)
    if m is not None:
        if m.group(1).lower() in _KNOWN_CHARSETS and (m.group(3) is None or m.group(3).lower() in _KNOWN_COLLATIONS):
            return "names", m.group(1).lower()
        return None
    m = _SET_AUTOCOMMIT.match(sql)
    if m is not None:
        v = m.group(1).upper()
        if v in (b"1", b"ON", b"TRUE"):
            return "autocommit", True
        if v in (b"0", b"OFF", b"FALSE"):
            return "autocommit", False
    return None



class LocalStatementsMixin:
    # The attributes are ClientConnection's (its __init__; ddm.execute.client.ClientSession lists most).

    def _stmt_use(self, sql: bytes) -> bool:
        parts = sql.split(None, 1)
        if len(parts) < 2:
            return False
        name = parts[1].strip().rstrip(b";").strip().strip(b"`").decode("utf-8", "replace")
        self._use(name)
        self.command_done()
        return True

    def _use(self, name: str) -> None:
        problem = self.check_db(name)
        if problem:
            self.send_error(*problem)
            return
        self.session.bind_database(self.config, name)
        self._target_key = None
        if self.session_track:  # SESSION_TRACK_SCHEMA, as the node reports a USE
            self.send_packet(ok_with_state(self.status_flags(), track_schema(name.encode())), 1)
        else:
            self.send_ok()

    def _select_database(self, sql: bytes) -> bool:
        norm = sql.upper().replace(b" ", b"").replace(b"\n", b"").rstrip(b";")
        if norm == b"SELECTLAST_INSERT_ID()" and self.conn is None and not self.txn_conns:
            # the connection that ran the client's last INSERT went back to the pool (or, held for this, was asked
            # already by _diagnostics): the value is the one its OK packet carried (sharded: the id ddm made)
            col = column_definition("LAST_INSERT_ID()", FT.LONGLONG, length=21, charset=63, flags=0x1 | 0x20 | 0x80)
            self.transport.write(text_resultset([col], [text_row((self.session.last_insert_id,))],
                                                deprecate_eof=self.deprecate_eof, status=self.status_flags()))
            self.command_done()
            return True
        if norm.startswith(b"SELECTCONNECTION_ID()"):
            return threads.select_connection_id(self, sql)  # ddm's id, the one in its greeting
        if norm not in (b"SELECTDATABASE()", b"SELECTSCHEMA()"):
            return False
        # the logical name: forwarding would show the data node's physical database
        name = "DATABASE()" if b"DATABASE" in norm else "SCHEMA()"
        self.transport.write(simple_resultset([name], [(self.session.db,)], deprecate_eof=self.deprecate_eof,
                                              status=self.status_flags()))
        self.command_done()
        return True

    def _stmt_set(self, sql: bytes) -> bool:
        if SET_STATEMENT.match(sql):
            # SET STATEMENT var = value [, ...] FOR <statement> (MariaDB): settings for that one statement, which
            # runs and answers as it would alone; nothing of it belongs in the session
            dbconf = self.session.dbconf
            if dbconf is not None and dbconf.tables:
                self.send_error(ER.NOT_SUPPORTED_YET, "This version of ddm doesn't yet support 'SET STATEMENT ... FOR' "
                                                  "on a sharded database")
                self.command_done()
                return True
            return False  # the normal path forwards it, and its answer, as any statement
        if sets_global(sql):
            # replayed as session state, it would be set again on every connection ddm opens, on one node only
            self.send_error(ER.NOT_SUPPORTED_YET, "This version of ddm doesn't yet support 'SET GLOBAL' from a client "
                                              "(change the data nodes' global settings on the nodes)")
            self.command_done()
            return True
        local = _local_set(sql) if self.conn is None and not self.txn_conns and self.txn_begin is None else None
        if local is not None:
            # SET NAMES / SET autocommit need no round trip: they are replayed where statements run, and a
            # client can set them even while the node of its database is down.
            kind, value = local
            if kind == "autocommit":
                self.session.autocommit = value
            self.session.record(sql.strip().rstrip(b";"))
            if self.session_track:  # the tracked system variables, as the node reports them
                state = (names_tracked(value) if kind == "names"
                         else track_variables([(b"autocommit", b"ON" if value else b"OFF")]))
                self.send_packet(ok_with_state(self.status_flags(), state), 1)
            else:
                self.send_ok()
            self.command_done()
            return True
        self.run_slow(self._run_set(sql))
        return True

    async def _run_set(self, sql: bytes) -> None:
        node, phys = self._target()
        conn = await self._conn_for(node, phys)
        try:
            res = await conn.query(sql)
        except BaseException:
            if conn is not self.conn:
                conn.pool.release(conn) if conn.pool else conn.close()
            raise
        self.session.record(sql.strip().rstrip(b";"))
        self.session.no_backslash_escapes = bool(res.status & SS.NO_BACKSLASH_ESCAPES)
        conn.signature = self.session.signature
        if idle.SETS_WAIT_TIMEOUT(sql) is not None:
            # the value the node took (expressions, DEFAULT, clamping), for ddm.frontend.idle
            rows = (await conn.query(b"SELECT @@session.wait_timeout")).rows
            if rows:
                value = split_text_row(rows[0], 1)[0]
                if value is not None:
                    self.session.wait_timeout = float(value)
        low = sql.lower().replace(b" ", b"")
        if b"autocommit=" in low:
            self.session.autocommit = not (b"autocommit=0" in low or b"autocommit=off" in low
                                           or b"autocommit=false" in low)
        if self.session_track and res.ok is not None:
            self.send_packet(res.ok, 1)  # the node's OK, with its session-state changes
        else:
            self.send_packet(ok_packet(res.affected_rows, res.insert_id, res.status, res.warnings, res.info,
                                       self.session_track), 1)
        if conn is not self.conn:
            if conn.in_transaction:
                self.conn = conn
            else:
                conn.pool.release(conn)

    def _stmt_show(self, sql: bytes) -> bool:
        words = sql.upper().split()
        if (len(words) > 1 and words[1].rstrip(b";") in (b"WARNINGS", b"ERRORS", b"COUNT(*)") and self.conn is None
                and not self.txn_conns and self.txn_begin is None and DIAGNOSTICS_STATEMENT.match(sql)):
            # `_diagnostics` found no connection holding the previous statement's warnings or error: it had none
            # (any pooled connection would show another client's)
            if words[1] == b"COUNT(*)":
                name = "@@session.warning_count" if words[2].startswith(b"WARNINGS") else "@@session.error_count"
                col = column_definition(name, FT.LONG, length=10, charset=63, flags=0x81)  # NOT NULL, BINARY
                self.transport.write(text_resultset([col], [text_row((0,))], deprecate_eof=self.deprecate_eof,
                                                    status=self.status_flags()))
            else:
                self.transport.write(simple_resultset(["Level", "Code", "Message"], [],
                                                      deprecate_eof=self.deprecate_eof, status=self.status_flags()))
            self.command_done()
            return True
        if [w.rstrip(b";") for w in words[1:3]] in ([b"PROCESSLIST"], [b"FULL", b"PROCESSLIST"]):
            threads.show_processlist(self, sql, full=words[1] == b"FULL")  # ddm's thread ids, not the node's
            return True
        if words[:2] in ([b"SHOW", b"DATABASES"], [b"SHOW", b"SCHEMAS"]):
            allowed = self.user.databases if self.user else ()
            names = [n for n in self.config.databases if "*" in allowed or n in allowed]
            rows = [(n,) for n in sorted(names)]
            if len(words) >= 4 and words[2] == b"LIKE":
                import fnmatch

                pat = words[3].strip(b"'\"").decode().lower().replace("%", "*").replace("_", "?")
                rows = [r for r in rows if fnmatch.fnmatch(r[0].lower(), pat)]
            self.transport.write(simple_resultset(["Database"], rows, deprecate_eof=self.deprecate_eof,
                                                  status=self.status_flags()))
            self.command_done()
            return True
        return False

    def _stmt_kill(self, sql: bytes) -> bool:
        threads.kill_statement(self, sql)  # ddm's thread ids: never passed to a node as written
        return True

    def _stmt_database_ddl(self, sql: bytes) -> bool:
        """CREATE / DROP DATABASE (SCHEMA) from a client: refused, in every session (see database_ddl_refusal)."""
        message = database_ddl_refusal(sql)
        if message is None:
            return False
        self.send_error(ER.NOT_SUPPORTED_YET, message)
        self.command_done()
        return True

    def _stmt_load(self, sql: bytes) -> bool:
        dbconf = self.session.dbconf
        if dbconf is None or not dbconf.tables or not is_load_local(sql):
            return False  # pass-through: the node's file request is relayed (ddm.execute.infile)
        self.send_error(ER.NOT_SUPPORTED_YET, "This version of ddm doesn't yet support 'LOAD DATA LOCAL INFILE on "
                                          f"sharded database {self.session.db}'")
        self.command_done()
        return True


# the first words of statements ddm answers itself, and the method that answers each
LOCAL_STATEMENTS = {
    b"USE": LocalStatementsMixin._stmt_use,
    b"SET": LocalStatementsMixin._stmt_set,
    b"SHOW": LocalStatementsMixin._stmt_show,
    b"KILL": LocalStatementsMixin._stmt_kill,
    b"LOAD": LocalStatementsMixin._stmt_load,
    b"CREATE": LocalStatementsMixin._stmt_database_ddl,
    b"DROP": LocalStatementsMixin._stmt_database_ddl,
}
