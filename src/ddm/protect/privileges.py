"""Privileges: what a ddm user may name and do in a statement, checked before anything reaches a data node.

Every statement runs on a data node as the node account (which usually holds ALL PRIVILEGES), so these checks are
the only ones between a ddm user and the node's other databases. The model (docs/configuration.md, "Privileges"):

- a user may use the logical databases of its `databases:` entry. A name qualifying a table (`db.t`, `db`.`t`,
  `db.t.c`, `db.f()`), or naming a database (USE, SHOW ... FROM db, ALTER DATABASE db ...) is resolved against the
  configuration: an allowed logical database passes (a different one only where the node resolves the name to
  the same data: a pass-through database of the same node that is not renamed; else 1235); any other logical
  database, any physical database behind a logical one (`rel_0`), and the system schemas `mysql`,
  `performance_schema`, `sys` (unless `system_schemas` is granted) are refused (1044 for a database, 1142 for a
  table). A name unknown to ddm is refused where it can only be a database (`x.t` in a FROM/JOIN/INTO/UPDATE list,
  `x.t.c`, `x.f(`), and left alone where it is a table alias (`x.c` in a select list);
- `information_schema` is allowed; a query on it that names a refused database in a string is refused;
- file access (LOAD_FILE, SELECT ... INTO OUTFILE / DUMPFILE, LOAD DATA without LOCAL, DATA/INDEX DIRECTORY)
  needs `file`; statements acting on the node as a whole (GRANT, REVOKE, CREATE/ALTER/DROP/RENAME USER, SET
  PASSWORD, FLUSH, SHUTDOWN, INSTALL/UNINSTALL, SET GLOBAL, CHANGE MASTER, START/STOP SLAVE, PURGE, BINLOG,
  CREATE FUNCTION ... SONAME, CREATE SERVER ...) need `admin` (1227);
- SQL-level dynamic SQL: `PREPARE s FROM 'text'` and `EXECUTE IMMEDIATE 'text'` are checked as their text;
  from a variable or an expression (text ddm cannot see) they need `dynamic_sql` (1227).

The check works on the lexer's tokens (executable comments `/*! */` are lexed and checked in place), never with
sqlglot; its verdict is cached by (digest, session database) except where it depended on a literal. A statement
with a backslash is checked a second time with backslashes read as plain characters (sql_mode
NO_BACKSLASH_ESCAPES / ANSI_QUOTES lex strings differently), and refused if either reading is.
"""

from __future__ import annotations

from typing import NamedTuple

from ddm._py.lexer import _literal
from ddm.config import PRIVILEGES, Config, DatabaseConfig, UserConfig
from ddm.wire.constants import er as ER
from ddm_core.lexer import (
    T_COMMENT_EXEC,
    T_IDENT,
    T_KEYWORD,
    T_NUMBER,
    T_PUNCT,
    T_QUOTED_IDENT,
    T_STRING,
    T_VARIABLE,
    Lexed,
    lex,
)

SYSTEM_SCHEMAS = frozenset({"mysql", "performance_schema", "sys"})
INFORMATION_SCHEMA = "information_schema"
CACHE_SIZE = 4096
MAX_DEPTH = 4  # executable comments and PREPARE texts inside one another

_NAME_KINDS = (T_KEYWORD, T_IDENT, T_QUOTED_IDENT)
# words after which a qualified name is a table (a database's), whatever the clause
_TABLE_LEAD = frozenset((b"FROM", b"JOIN", b"STRAIGHT_JOIN", b"INTO", b"TABLE", b"TABLES", b"VIEW", b"PROCEDURE",
                         b"FUNCTION", b"TRIGGER", b"EVENT", b"CALL", b"HANDLER", b"TRUNCATE", b"SEQUENCE",
                         b"REFERENCES", b"UPDATE"))
# words that start a table list: a qualified name after a top-level comma in it is a table too
_TABLE_LIST = frozenset((b"FROM", b"JOIN", b"STRAIGHT_JOIN", b"INTO", b"TABLE", b"TABLES", b"USING"))
# words that end a table list (the clause after it holds expressions: `x.c` there is a column of alias x)
_NOT_TABLE_LIST = frozenset((b"SELECT", b"WHERE", b"SET", b"GROUP", b"ORDER", b"HAVING", b"LIMIT", b"VALUES",
                             b"VALUE", b"WINDOW", b"RETURNING", b"UNION", b"EXCEPT", b"INTERSECT", b"DUPLICATE"))
# words after which a statement starts (compound statements: procedure, trigger and event bodies)
_STATEMENT_LEAD = frozenset((b"BEGIN", b"THEN", b"ELSE", b"DO", b"LOOP", b"REPEAT"))
_SHOW_TABLE_FIRST = frozenset((b"COLUMNS", b"FIELDS", b"INDEX", b"INDEXES", b"KEYS"))
_ADMIN_FIRST = {  # first word -> the privilege MariaDB names in its 1227 message
    b"GRANT": "GRANT OPTION", b"REVOKE": "GRANT OPTION", b"FLUSH": "RELOAD", b"SHUTDOWN": "SHUTDOWN",
    b"RESTART": "SHUTDOWN", b"INSTALL": "SUPER", b"UNINSTALL": "SUPER", b"PURGE": "SUPER", b"BINLOG": "SUPER",
    b"CHANGE": "SUPER", b"RESET": "RELOAD", b"BACKUP": "RELOAD",
}
_SHOW_ADMIN = frozenset((b"BINLOG", b"RELAYLOG", b"ENGINE"))  # SHOW BINLOG EVENTS, SHOW ENGINE INNODB STATUS
# information_schema tables that show other sessions' statements (every ddm user is the same node account)
_PROCESS_TABLES = frozenset(("processlist", "innodb_trx", "innodb_locks", "innodb_lock_waits"))
_ADMIN_OBJECTS = frozenset((b"USER", b"ROLE", b"SERVER"))  # CREATE / ALTER / DROP / RENAME ... of these
_SLAVE_WORDS = frozenset((b"SLAVE", b"REPLICA", b"SLAVES", b"REPLICAS", b"ALL"))
_DDL_FIRST = frozenset((b"CREATE", b"ALTER", b"DROP", b"RENAME"))


class Refusal(NamedTuple):
    code: int
    message: str  # "{host}" stands for the client's host


class _Ref(NamedTuple):
    schema: str
    table: str | None  # None: the database itself (USE db, SHOW TABLES FROM db, db.*)
    use: bool = False  # USE db: ddm switches the session's database itself (no routing question)


class _Scan:
    """What one statement names and does, from its tokens."""

    __slots__ = ("refs", "admin", "file", "dynamic", "literal_dependent", "strings", "first")

    def __init__(self) -> None:
        self.refs: list[_Ref] = []
        self.admin: str | None = None  # the privilege an admin statement needs
        self.file = False
        self.dynamic = False  # PREPARE / EXECUTE IMMEDIATE of text ddm cannot see
        self.literal_dependent = False  # the verdict read a literal: not cacheable by digest
        self.strings: list[str] = []  # string literals (information_schema filters)
        self.first = b""


def _tokens(sql: bytes, lexed: Lexed | None = None, depth: int = 0) -> list[tuple[int, bytes]]:
    """(kind, text) of each token, executable comments replaced by the tokens of their content. Where the
    version number's length is ambiguous (`/*!500001rel.t */`: version 50000 or 500001?), the other reading is
    appended as a statement of its own, so that both are checked."""
    lx = lexed if lexed is not None else lex(sql)
    out: list[tuple[int, bytes]] = []
    extra: list[bytes] = []
    for i in range(lx.ntokens):
        kind = lx.kind(i)
        text = lx.text(i)
        if kind == T_COMMENT_EXEC and depth < MAX_DEPTH:
            bodies = _comment_bodies(text)
            out.extend(_tokens(bodies[0], None, depth + 1))
            extra.extend(bodies[1:])
        else:
            out.append((kind, text))
    for body in extra:
        out.append((T_PUNCT, b";"))
        out.extend(_tokens(body, None, depth + 1))
    return out


def _comment_bodies(text: bytes) -> list[bytes]:
    """The statement text inside /*! ... */, /*!50100 ... */, /*M!100100 ... */ or /*+ ... */: the readings with
    no version, a 5-digit and a 6-digit version where the digits allow them (the first is the likeliest)."""
    body = text[2:-2] if text.endswith(b"*/") else text[2:]
    body = body[2:] if body[:2] == b"M!" else body[1:]
    k = 0
    while k < len(body) and k < 6 and 0x30 <= body[k] <= 0x39:
        k += 1
    cuts = [k] + [c for c in (5, 6) if c < k] if k else [0]
    return [b" " + body[c:] + b" " for c in cuts]


def _name(kind: int, text: bytes) -> str | None:
    if kind == T_IDENT or kind == T_KEYWORD:
        return text.decode("utf-8", "replace").lower()
    if kind == T_QUOTED_IDENT:
        return text[1:-1].replace(b"``", b"`").decode("utf-8", "replace").lower()
    return None


def _string(text: bytes) -> str | None:
    try:
        value = _literal(text, T_STRING, 0, len(text))
    except Exception:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def scan(sql: bytes, lexed: Lexed | None = None) -> _Scan:
    s = _Scan()
    _scan_tokens(_tokens(sql, lexed), s, 0)
    return s


def _scan_tokens(toks: list[tuple[int, bytes]], s: _Scan, depth: int) -> None:  # noqa: C901 (one pass, one state)
    n = len(toks)

    def up(i: int) -> bytes:
        if 0 <= i < n and toks[i][0] in (T_KEYWORD, T_IDENT):
            return toks[i][1].upper()
        return b""

    def punct(i: int, ch: bytes) -> bool:
        return 0 <= i < n and toks[i][0] == T_PUNCT and toks[i][1] == ch

    def name_at(i: int) -> str | None:
        if not 0 <= i < n:
            return None
        kind, text = toks[i]
        nm = _name(kind, text)
        if nm is None and kind == T_STRING and text[:1] == b'"' and (punct(i + 1, b".") or punct(i - 1, b".")):
            s.literal_dependent = True  # ANSI_QUOTES: "db"."t" names a table
            nm = text[1:-1].replace(b'""', b'"').decode("utf-8", "replace").lower()
        return nm

    TABLE, COND, OTHER = 1, 2, 0
    state = OTHER
    # inside a function's parentheses (EXTRACT(YEAR FROM a.d), TRIM(x FROM a.s)) FROM is no table list until a
    # SELECT comes (x = ANY (SELECT .. FROM db.t)); other parentheses are subqueries or groupings
    func, selected = False, True
    stack: list[tuple[int, bool, bool]] = []
    first = b""  # first word of the current statement
    start = True  # the next token starts a statement
    show_kind = b""
    show_from = 0  # FROM / IN seen in a SHOW statement
    i = 0
    while i < n:
        kind, text = toks[i]
        word = up(i)
        if start and kind != T_PUNCT and word not in (b"NOT", b"ATOMIC"):  # BEGIN NOT ATOMIC <statement>
            if start is True:  # after `;`: a new statement (a body's statement keeps the clause state)
                state = OTHER
                show_kind, show_from = b"", 0
            start = False
            first = word
            _statement_start(toks, i, word, up, s)
            if not s.first:
                s.first = word
            if word in (b"UPDATE", b"DELETE", b"DESC", b"DESCRIBE", b"EXPLAIN"):
                state = TABLE
        if kind == T_PUNCT:
            if text == b";":
                start, state, stack, func, selected = True, OTHER, [], False, True
            elif text == b"(":
                prev = toks[i - 1] if i > 0 else (0, b"")
                inherit = state == TABLE and (prev[0] == T_PUNCT or up(i - 1) in _TABLE_LIST)
                stack.append((state, func, selected))
                state = TABLE if inherit else OTHER
                func = prev[0] in (T_IDENT, T_QUOTED_IDENT)
                selected = not func
            elif text == b")":
                state, func, selected = stack.pop() if stack else (OTHER, False, True)
            elif text == b"," and state == COND:
                state = TABLE
            i += 1
            continue
        if kind == T_STRING:
            value = _string(text)
            if value is not None:
                s.strings.append(value)
        if kind == T_IDENT and word == b"LOAD_FILE":
            s.file = True
        elif word in (b"OUTFILE", b"DUMPFILE") and up(i - 1) == b"INTO":
            s.file = True
        elif word == b"DIRECTORY" and up(i - 1) in (b"DATA", b"INDEX"):
            s.file = True
        elif word in (b"CONNECTION", b"FILE_NAME") and first in (b"CREATE", b"ALTER") and i + 1 < n and (
                toks[i + 1][0] == T_STRING or toks[i + 1][1] == b"="):
            # table options of FEDERATED / CONNECT tables: another server's (or this one's) tables, or a file
            if word == b"FILE_NAME":
                s.file = True
            else:
                s.admin = s.admin or "SUPER"
        elif (kind == T_VARIABLE and text[:9].lower() == b"@@global." and first == b"SET" and i + 1 < n
              and toks[i + 1][1] in (b"=", b":=")):  # assigned, not read
            s.admin = s.admin or "SUPER"
        elif word in (b"GLOBAL", b"PERSIST", b"PERSIST_ONLY") and first == b"SET" and not punct(i + 1, b"."):
            s.admin = s.admin or "SUPER"
        elif word in (b"GRANT", b"REVOKE") and kind == T_KEYWORD:
            s.admin = s.admin or "GRANT OPTION"
        elif word == b"SONAME":
            s.admin = s.admin or "SUPER"
        elif word in _STATEMENT_LEAD:
            start = 1  # a statement of a compound body may follow (procedures, triggers, events, BEGIN NOT ATOMIC)
        elif word == b"PREPARE" and up(i + 2) == b"FROM":
            _dynamic(toks, i + 3, s, depth)
        elif word == b"EXECUTE" and up(i + 1) == b"IMMEDIATE":
            _dynamic(toks, i + 2, s, depth)
        # clause state
        if kind == T_KEYWORD or kind == T_IDENT:
            if word in (b"SELECT", b"WITH", b"TABLE", b"VALUES"):
                selected = True
            if word in _TABLE_LIST and selected and not (word == b"INTO" and up(i + 1) in (b"OUTFILE", b"DUMPFILE")):
                state = TABLE
                if first == b"SHOW" and word == b"FROM":
                    show_from += 1
            elif word == b"IN" and first == b"SHOW":
                state = TABLE
                show_from += 1
            elif word == b"ON":
                state = COND if state == TABLE else OTHER
            elif word in _NOT_TABLE_LIST or word == b"UPDATE" and first != b"UPDATE":
                state = OTHER
            if first == b"SHOW" and not show_kind and i > 0 and up(i - 1) in (b"SHOW", b"FULL", b"EXTENDED"):
                if word not in (b"FULL", b"EXTENDED"):
                    show_kind = word
        # names
        nm = name_at(i) if kind != T_VARIABLE else None
        if nm is None:
            i += 1
            continue
        if punct(i + 1, b"."):
            after = i + 2
            if after < n and toks[after][0] == T_NUMBER and toks[after][1][:1] == b".":
                after = -1  # rel_0.1e5-like splits: treat as qualified
            table = name_at(after) if after >= 0 else None
            if punct(after, b"*") if after >= 0 else False:
                table = None
            three = punct(i + 3, b".") and name_at(i + 4) is not None
            call = punct(i + 3, b"(")
            lead = up(i - 1)
            definite = (not punct(i - 1, b".")) and (
                three or call or state == TABLE
                or (lead in _TABLE_LEAD and not (lead == b"UPDATE" and first != b"UPDATE")
                    and (selected or lead not in _TABLE_LIST))
                or (lead == b"ON" and first in (b"CREATE", b"DROP", b"GRANT", b"REVOKE"))
                or (lead == b"TO" and first in (b"RENAME", b"ALTER"))
                or (lead == b"LIKE" and first == b"CREATE"))
            s.refs.append(_Ref(nm, table if table is not None else None) if definite
                          else _Ref("?" + nm, table))  # "?": only a known database name matters
            i += 1
            continue
        if punct(i - 1, b"."):
            i += 1
            continue
        lead = up(i - 1)
        bare = False
        if lead in (b"DATABASE", b"SCHEMA") or (lead in (b"EXISTS",) and up(i - 3) in (b"DATABASE", b"SCHEMA")):
            bare = first not in (b"CREATE", b"DROP")  # CREATE / DROP DATABASE: refused by the frontend
        elif first == b"USE" and i > 0 and lead == b"USE":
            bare = True
        elif first == b"SHOW" and lead in (b"FROM", b"IN"):
            bare = show_from >= (2 if show_kind in _SHOW_TABLE_FIRST else 1)
        if bare:
            s.refs.append(_Ref(nm, None, first == b"USE"))
        i += 1


def _statement_start(toks, i: int, word: bytes, up, s: _Scan) -> None:
    """Admin statements and server-side LOAD DATA, by the words a statement starts with."""
    nxt = up(i + 1)
    need = _ADMIN_FIRST.get(word)
    if word == b"CHANGE" and nxt not in (b"MASTER", b"REPLICATION"):
        need = None
    if word == b"RESET" and nxt not in (b"MASTER", b"SLAVE", b"REPLICA", b"QUERY", b"BINARY"):
        need = None
    if word in (b"START", b"STOP") and nxt in _SLAVE_WORDS:
        need = "SUPER"
    if word in _DDL_FIRST:
        k = i + 1
        if up(k) == b"OR" and up(k + 1) == b"REPLACE":
            k += 2
        if up(k) in _ADMIN_OBJECTS:
            need = "CREATE USER" if up(k) in (b"USER", b"ROLE") else "SUPER"
    if word == b"SHOW" and nxt in _SHOW_ADMIN:
        need = "PROCESS"
    if word == b"SET" and nxt in (b"PASSWORD", b"DEFAULT", b"ROLE", b"GLOBAL", b"PERSIST", b"PERSIST_ONLY"):
        need = "SUPER" if nxt != b"PASSWORD" else "CREATE USER"
    if need is not None and s.admin is None:
        s.admin = need
    if word == b"LOAD" and nxt in (b"DATA", b"XML"):
        k = i + 2
        while k < len(toks) and up(k) not in (b"INFILE", b""):
            if up(k) == b"LOCAL":
                return
            k += 1
        s.file = True


def _dynamic(toks: list[tuple[int, bytes]], i: int, s: _Scan, depth: int) -> None:
    """The text of PREPARE .. FROM / EXECUTE IMMEDIATE at toks[i]: a string literal is checked as a statement."""
    s.literal_dependent = True
    if i < len(toks) and toks[i][0] == T_STRING and (i + 1 >= len(toks) or toks[i + 1] in ((T_PUNCT, b";"),)
                                                     or _is_end(toks, i + 1)):
        text = _string(toks[i][1])
        if text is not None and depth < MAX_DEPTH:
            _scan_tokens(_tokens(text.encode("utf-8", "surrogatepass")), s, depth + 1)
            return
    s.dynamic = True


def _is_end(toks: list[tuple[int, bytes]], i: int) -> bool:
    kind, text = toks[i]
    return kind in (T_KEYWORD, T_IDENT) and text.upper() == b"USING"


class Guard:
    """One user's privileges over one configuration snapshot; `check` gives a statement's verdict."""

    def __init__(self, config: Config, user: UserConfig) -> None:
        self.config = config
        self.user = user.name
        privs = set(user.privileges)
        self.file = "file" in privs
        self.system = "system_schemas" in privs
        self.admin = "admin" in privs
        self.dynamic = "dynamic_sql" in privs
        self.every = "*" in user.databases
        self.logical: dict[str, DatabaseConfig] = {name.lower(): db for name, db in config.databases.items()}
        self.allowed = frozenset(n for n, db in self.logical.items() if self.every or db.name in user.databases)
        self.physical = frozenset(ds.database.lower() for db in config.databases.values()
                                  for ds in db.datasources.values())
        # metadata of these the user may see (information_schema filters naming them: ddm.execute.metadata may answer)
        self.allowed_physical = frozenset(ds.database.lower() for name, db in self.logical.items()
                                          if name in self.allowed for ds in db.datasources.values())
        # a user trusted like the node account: all privileges and every database
        self.trusted = self.every and privs >= set(PRIVILEGES)
        self._cache: dict[tuple[bytes, str | None], Refusal | None] = {}

    def check(self, sql: bytes, session_db: str | None, lexed: Lexed | None = None) -> Refusal | None:
        if self.trusted:
            return None
        lx = lexed if lexed is not None else lex(sql)
        key = (lx.digest, session_db)
        cache = self._cache
        if key in cache:
            verdict = cache[key]
        else:
            s = scan(sql, lx)
            verdict = self._verdict(s, session_db)
            if not s.literal_dependent:
                if len(cache) >= CACHE_SIZE:
                    cache.clear()
                cache[key] = verdict
        if verdict is None and b"\\" in sql:
            # NO_BACKSLASH_ESCAPES / ANSI_QUOTES read `\` as a plain character: check that reading too
            verdict = self._verdict(scan(sql.replace(b"\\", b" ")), session_db)
        return verdict

    def _verdict(self, s: _Scan, session_db: str | None) -> Refusal | None:
        who = f"'{self.user}'@'{{host}}'"
        if s.admin is not None and not self.admin:
            return Refusal(ER.SPECIFIC_ACCESS_DENIED,
                           f"Access denied; you need (at least one of) the {s.admin} privilege(s) for this operation")
        if s.file and not self.file:
            return Refusal(ER.SPECIFIC_ACCESS_DENIED,
                           "Access denied; you need (at least one of) the FILE privilege(s) for this operation")
        if s.dynamic and not self.dynamic:
            return Refusal(ER.SPECIFIC_ACCESS_DENIED,
                           "Access denied; you need (at least one of) the dynamic_sql privilege(s) for this "
                           "operation (ddm: PREPARE / EXECUTE IMMEDIATE of text that is not a string literal)")
        info = False
        session = session_db.lower() if session_db is not None else None
        for ref in s.refs:
            schema, table, use = ref
            weak = schema.startswith("?")
            if weak:
                schema = schema[1:]
                if schema not in self.logical and schema not in self.physical and schema not in SYSTEM_SCHEMAS:
                    continue  # `alias.column`
            if schema == INFORMATION_SCHEMA:
                info = True
                if table in _PROCESS_TABLES and not self.admin:
                    return Refusal(ER.SPECIFIC_ACCESS_DENIED, "Access denied; you need (at least one of) the "
                                                              "PROCESS privilege(s) for this operation")
                continue
            if schema in self.allowed:
                problem = None if use else self._route(schema, session)
                if problem is not None:
                    return problem
                continue
            if schema in SYSTEM_SCHEMAS and self.system:
                continue
            if use and schema not in self.logical and schema not in self.physical and schema not in SYSTEM_SCHEMAS:
                return Refusal(ER.BAD_DB_ERROR, f"Unknown database '{schema}'")  # as ddm answers a plain USE
            return self._denied(who, s.first, schema, table)
        if info:
            for value in s.strings:
                name = value.lower()
                if (name in self.allowed or name in self.allowed_physical or name == INFORMATION_SCHEMA
                        or (name in SYSTEM_SCHEMAS and self.system)):
                    continue
                if name in self.logical or name in self.physical or name in SYSTEM_SCHEMAS:
                    s.literal_dependent = True
                    return self._denied(who, s.first, value, None)
            s.literal_dependent = s.literal_dependent or bool(s.strings)
        return None

    def _denied(self, who: str, first: bytes, schema: str, table: str | None) -> Refusal:
        if table is None:
            return Refusal(ER.DBACCESS_DENIED_ERROR, f"Access denied for user {who} to database '{schema}'")
        command = _COMMAND.get(first, first.decode("ascii", "replace") or "SELECT")
        return Refusal(ER.TABLEACCESS_DENIED_ERROR,
                       f"{command} command denied to user {who} for table `{schema}`.`{table}`")

    def _route(self, schema: str, session: str | None) -> Refusal | None:
        """A qualified name of an allowed logical database: the node must resolve it to that database's data."""
        target = self.logical[schema]
        phys = target.datasources[target.default_datasource]
        if schema == session:
            if target.renamed and schema in self.physical:
                return _cannot_route(target.name, "its physical database has another name, and the node would "
                                                  "read the name as another database")
            return None
        here = self.logical.get(session) if session is not None else None
        if here is not None and not here.is_passthrough:
            return _cannot_route(target.name, f"the session's database '{here.name}' is sharded")
        if not target.is_passthrough:
            return _cannot_route(target.name, "it is sharded")
        if target.renamed:
            return _cannot_route(target.name, "its physical database has another name")
        node = (here.datasources[here.default_datasource].node if here is not None
                else _first_node(self.config))
        if phys.node != node:
            return _cannot_route(target.name, "it is on another data node")
        return None


_COMMAND = {b"WITH": "SELECT", b"SHOW": "SELECT", b"DESC": "SELECT", b"DESCRIBE": "SELECT", b"EXPLAIN": "SELECT",
            b"HANDLER": "SELECT", b"TABLE": "SELECT", b"VALUES": "SELECT", b"REPLACE": "INSERT", b"LOAD": "INSERT",
            b"TRUNCATE": "DROP", b"RENAME": "ALTER", b"CALL": "EXECUTE", b"": "SELECT"}


def _cannot_route(name: str, why: str) -> Refusal:
    return Refusal(ER.NOT_SUPPORTED_YET, f"This version of ddm doesn't yet support 'naming logical database "
                                         f"{name} from this session' ({why}; USE {name} first)")


def _first_node(config: Config) -> str | None:
    for db in config.databases.values():
        return db.datasources[db.default_datasource].node
    return None


_GUARDS: dict[tuple[int, str], Guard] = {}


def guard(config: Config, user: UserConfig | None) -> Guard | None:
    """The user's Guard for this configuration snapshot (shared by its connections); None = nothing to check."""
    if user is None:
        return None
    key = (id(config), user.name)
    g = _GUARDS.get(key)
    if g is None or g.config is not config:
        if len(_GUARDS) > 256:
            _GUARDS.clear()
        g = _GUARDS[key] = Guard(config, user)
    return None if g.trusted else g
