"""Configuration: one YAML file loaded into an immutable, validated snapshot.

Every object here is a frozen dataclass (tuples, not lists; MappingProxyType, not dict), so a worker can swap the
whole snapshot atomically on hot reload and a transaction in flight keeps the snapshot it started with.

`load(path) -> Config` reads and validates; every mistake raises `ConfigError` listing *all* problems, each as
"key.path: reason". See docs/configuration.md for the file format.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import hashlib
import importlib
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from ddm.config.expr import ExprError, expand

DEFAULT_PORT = 3306


class ConfigError(ValueError):
    """A configuration file that cannot be used. `problems` holds one "key.path: reason" string per mistake."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid configuration {source}".rstrip()
        super().__init__(head + ":\n" + "\n".join("  " + p for p in self.problems))


@dataclass(frozen=True)
class TLSConfig:
    cert: str | None = None  # PEM certificate for client connections; None = self-signed, generated at first start
    key: str | None = None
    auto_dir: str | None = None  # where a generated certificate is kept (default: beside the config file)
    require: bool = False  # refuse clients that do not switch to TLS
    enabled: bool = True


@dataclass(frozen=True)
class ServerConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_PORT
    workers: int = 0  # 0 = one per CPU
    server_version: str | None = None  # None = ddm.SERVER_VERSION
    max_connections: int = 4096
    max_packet_size: int = 64 * 1024 * 1024  # largest client command accepted (max_allowed_packet)
    tls: TLSConfig = field(default_factory=TLSConfig)
    control_socket: str | None = None  # unix socket for `ddm reload` etc.; None = derived from the config path
    log_level: str = "info"
    drain_timeout: float = 30.0  # seconds an old worker waits for transactions to end on shutdown/handoff
    plan_cache_size: int = 4096
    watch_config: bool = False
    # seconds a statement of a transaction spanning data nodes may wait for a row lock before ddm ends it as a
    # deadlock across nodes (ddm.execute.lockwait); 0 = never (the nodes' innodb_lock_wait_timeout applies)
    cross_node_lock_wait: float = 2.0
    # before login (ddm.protect.limits): a client that has not authenticated within connect_timeout seconds is closed; its
    # packets may not exceed max_handshake_packet_size; at most max_unauthenticated such connections per worker
    # (max_unauthenticated_per_address from one address); failed logins per (user, address) beyond
    # login_failure_threshold wait login_failure_delay seconds more each for their 1045, up to login_failure_max_delay
    connect_timeout: float = 10.0
    max_handshake_packet_size: int = 64 * 1024
    max_unauthenticated: int = 1024
    max_unauthenticated_per_address: int = 256
    login_failure_threshold: int = 3
    login_failure_delay: float = 1.0
    login_failure_max_delay: float = 10.0
    # COM_STMT_SEND_LONG_DATA buffered per prepared statement (all its parameters); over it the next execute fails
    max_long_data_size: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class UserConfig:
    name: str
    password: str
    auth_plugin: str = "caching_sha2_password"  # or mysql_native_password
    databases: tuple[str, ...] = ("*",)  # logical databases this user may use; "*" = all
    # what beyond its databases' tables the user may do (ddm.protect.privileges): a subset of PRIVILEGES; () = nothing
    privileges: tuple[str, ...] = ()


@dataclass(frozen=True)
class PipelineConfig:
    """Pipelining of read-only pass-through SELECTs onto shared node connections (ddm.execute.pipeline)."""

    connections: int = 1  # shared connections per (physical database, flavour, session signature)
    max_depth: int = 8  # statements queued on one connection; beyond, the normal pooled path
    max_head_wait: float = 0.005  # seconds the oldest queued statement may run before new ones take the normal path


@dataclass(frozen=True)
class PoolConfig:
    min_size: int = 0
    max_size: int = 64
    acquire_timeout: float = 5.0  # seconds a query waits for a free connection before ER_CON_COUNT_ERROR
    connect_timeout: float = 5.0
    idle_timeout: float = 300.0  # close connections idle longer than this (down to min_size)
    max_lifetime: float = 3600.0  # recycle connections older than this when they come back
    ping_interval: float = 30.0  # COM_PING idle connections this often
    # seconds of silence from the node while a response is due (ddm.wire.nodewatch); 0 = off. Above MariaDB's default
    # innodb_lock_wait_timeout (50 s), so that an ordinary lock wait ends with the node's own 1205 first
    read_timeout: float = 60.0
    statement_idle_timeout: float = 30.0  # close node statements no client holds after this long unused
    pipelining: PipelineConfig | None = PipelineConfig()  # None = off


@dataclass(frozen=True)
class EndpointConfig:
    """One MySQL server: a data node's primary or one of its replicas."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    unix_socket: str | None = None
    weight: int = 1


@dataclass(frozen=True)
class NodeConfig:
    """A data node: a primary MySQL/MariaDB server (and its replicas) that ddm connects to."""

    name: str
    primary: EndpointConfig
    user: str
    password: str
    replicas: tuple[EndpointConfig, ...] = ()
    tls: bool = False  # TLS from ddm to this node
    pool: PoolConfig = field(default_factory=PoolConfig)


@dataclass(frozen=True)
class DataSource:
    """A physical database on a data node. Sharded tables are spread over data sources."""

    name: str
    node: str
    database: str


@dataclass(frozen=True)
class ShardStrategy:
    """How a shard-key value picks an index: `algorithm` is one of mod, hash_mod, range, interval, two_level, class.

    props holds the algorithm's own settings (e.g. {"hash": "crc32"}, {"boundaries": (100, 200)},
    {"unit": "month", "start": "2024-01-01"}, {"class": "pkg.mod:Cls"}); see docs/configuration.md.
    The loader fills defaults in: hash_mod always has "hash" and "key_collation" (the table rule's, "ci" or
    "binary"), interval "step", two_level "databases" (the data source count D of `key // D % n`); class props are
    {"class": spec, **constructor keyword arguments}.
    `column` is lower-case."""

    column: str
    algorithm: str
    props: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class KeyGenerator:
    column: str
    type: str = "snowflake"  # or "segment"
    props: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class PhysicalTable:
    datasource: str
    table: str


@dataclass(frozen=True)
class TableRule:
    """A logical table. kind: "sharded" | "broadcast" | "single".

    For sharded tables `nodes` lists physical tables grouped by data source: datasources in order, and within one
    data source its tables in order. database_strategy picks the index into `datasources`; table_strategy picks the
    index into that data source's tables. `binding_group` names the group of tables that route together."""

    name: str
    kind: str
    datasources: tuple[str, ...]  # the data sources holding this table, in shard order
    tables: Mapping[str, tuple[str, ...]]  # datasource -> its physical table names, in order
    database_strategy: ShardStrategy | None = None
    table_strategy: ShardStrategy | None = None
    key_generator: KeyGenerator | None = None
    binding_group: tuple[str, ...] = ()

    @property
    def targets(self) -> tuple[PhysicalTable, ...]:
        """Every physical table of this rule, in shard order (datasource-major)."""
        return tuple(PhysicalTable(ds, t) for ds in self.datasources for t in self.tables[ds])


@dataclass(frozen=True)
class DatabaseConfig:
    """A logical database. Pass-through when it maps to one data source and has no table rules."""

    name: str
    datasources: Mapping[str, DataSource]  # name -> data source, in declaration order
    default_datasource: str  # where tables without a rule live (and the whole database when pass-through)
    tables: Mapping[str, TableRule] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def is_passthrough(self) -> bool:
        return not self.tables

    @property
    def renamed(self) -> bool:
        """Whether the default data source's physical database has another name than this logical one (then the
        node's metadata - SHOW TABLES, information_schema - speaks of the physical name)."""
        return self.datasources[self.default_datasource].database != self.name

    def rule(self, table: str) -> TableRule | None:
        """The rule for a logical table name, matched case-insensitively; None = lives on default_datasource."""
        return self.tables.get(table.lower())


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    users: Mapping[str, UserConfig]
    nodes: Mapping[str, NodeConfig]
    databases: Mapping[str, DatabaseConfig]
    source: str = ""  # the file it came from
    generation: int = 0  # bumped by each reload within one process

    def digest(self) -> str:
        """A stable hash of the content (not of source/generation): equal digests = nothing to reload.

        TLS certificate and key *contents* are included so that rotating the files counts as a change."""
        h = hashlib.sha256(json.dumps(_canonical(self), separators=(",", ":")).encode())
        for path in (self.server.tls.cert, self.server.tls.key):
            if path:
                try:
                    with open(path, "rb") as f:
                        h.update(hashlib.sha256(f.read()).digest())
                except OSError as e:
                    h.update(repr(e).encode())
        return h.hexdigest()

    def with_generation(self, generation: int) -> Config:
        return dataclasses.replace(self, generation=generation)



# --------------------------------------------------------------------------------------------------------------
# Public entry points


def load(path: str) -> Config:
    """Read, validate and freeze the YAML file at `path`. Raises ConfigError naming every problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError([f"(file): cannot read {path}: {e.strerror or e}"], path) from None
    return load_text(text, os.path.abspath(path))


def load_text(text: str, source: str = "") -> Config:
    """Validate YAML text; relative paths in it are taken relative to the directory of `source` (or the cwd)."""
    problems: list[str] = []
    data = _parse_yaml(text, "", problems)
    if problems:
        raise ConfigError(problems, source)
    return from_dict(data, source)


def from_dict(data: Any, source: str = "") -> Config:
    """Validate an already parsed document (what yaml.safe_load returns) and freeze it into a Config."""
    base_dir = os.path.dirname(os.path.abspath(source)) if source else os.getcwd()
    checker = _Checker(base_dir)
    config = checker.config(data, source)
    if checker.problems or config is None:
        raise ConfigError(checker.problems or ["(file): invalid configuration"], source)
    return config


def diff_nodes(old: Config | Mapping[str, NodeConfig], new: Config | Mapping[str, NodeConfig]
               ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(added, removed, changed) node names between two snapshots; hot reload rebuilds pools of changed nodes."""
    a = old.nodes if isinstance(old, Config) else old
    b = new.nodes if isinstance(new, Config) else new
    added = tuple(n for n in b if n not in a)
    removed = tuple(n for n in a if n not in b)
    changed = tuple(n for n in b if n in a and a[n] != b[n])
    return added, removed, changed


# --------------------------------------------------------------------------------------------------------------
# Vocabulary

ALGORITHMS = ("mod", "hash_mod", "range", "interval", "two_level", "class")
ALGORITHM_PROPS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "mod": (),
    "hash_mod": ("hash", "seed"),
    "range": ("boundaries",),
    "interval": ("unit", "start", "step"),
    "two_level": ("databases",),
    "class": ("class", "props"),
})
HASH_FUNCTIONS = ("crc32", "murmur3")
# How hash_mod compares string keys (a sharded table rule's `key_collation`): "ci" = utf8mb4_general_ci equality
# (case, accents and trailing spaces folded; the default), "binary" = exact bytes (VARBINARY/BLOB keys, NO PAD *_bin
# collations).
KEY_COLLATIONS = ("ci", "binary")
INTERVAL_UNITS = ("day", "month", "year")
AUTH_PLUGINS = ("mysql_native_password", "caching_sha2_password")
DEFAULT_AUTH_PLUGIN = "caching_sha2_password"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
KEY_GENERATORS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "snowflake": ("worker_id", "epoch"),
    "segment": ("name", "step", "initial", "table"),
})

TOP_KEYS = ("server", "users", "nodes", "databases", "include")
SERVER_KEYS = ("listen", "workers", "server_version", "max_connections", "max_packet_size", "tls", "control_socket",
               "log_level", "drain_timeout", "plan_cache_size", "watch_config", "cross_node_lock_wait",
               "connect_timeout", "max_handshake_packet_size", "max_unauthenticated", "max_unauthenticated_per_address",
               "login_failure_threshold", "login_failure_delay", "login_failure_max_delay", "max_long_data_size")
TLS_KEYS = ("cert", "key", "auto_dir", "require", "enabled")
USER_KEYS = ("name", "password", "auth_plugin", "databases", "privileges")
# grants beyond the user's logical databases (ddm.protect.privileges, docs/configuration.md "Privileges"); "all" = every one
PRIVILEGES = ("file", "system_schemas", "admin", "dynamic_sql")
NODE_KEYS = ("host", "port", "unix_socket", "user", "password", "tls", "replicas", "pool")
REPLICA_KEYS = ("host", "port", "unix_socket", "weight")
POOL_KEYS = ("min_size", "max_size", "acquire_timeout", "connect_timeout", "idle_timeout", "max_lifetime",
             "ping_interval", "read_timeout", "statement_idle_timeout", "pipelining")
PIPELINE_KEYS = ("connections", "max_depth", "max_head_wait")
PASSTHROUGH_KEYS = ("node", "database")
SHARDED_KEYS = ("datasources", "default_datasource", "tables", "binding_tables")
DATASOURCE_KEYS = ("node", "database")
COMPACT_DATASOURCE_KEYS = ("names", "nodes", "database")
TABLE_KEYS = ("nodes", "database_strategy", "table_strategy", "key_generator", "key_collation", "broadcast",
              "datasource", "table")
SHARDED_TABLE_KEYS = ("nodes", "database_strategy", "table_strategy")
SINGLE_TABLE_KEYS = ("datasource", "table")

# Names that end up inside "datasource.table" strings and key paths: no dots, quotes or whitespace.
_NAME = re.compile(r"[^\s.`'\"]+\Z")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*\Z")
_SIZE = re.compile(r"\s*(\d+)\s*([KMG]i?B?|B)?\s*\Z", re.IGNORECASE)
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

_ABSENT: Any = object()


# --------------------------------------------------------------------------------------------------------------
# YAML


class _YAMLLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that reports duplicate mapping keys (PyYAML silently keeps the last one)."""

    duplicates: list[str]


def _construct_mapping(loader: _YAMLLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:  # before merging: keys pulled in by `<<` may legitimately be overridden
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                m = key_node.start_mark
                loader.duplicates.append(f"line {m.line + 1}, column {m.column + 1}: duplicate key {key!r} "
                                         f"(first at line {seen[key] + 1})")
            else:
                seen[key] = key_node.start_mark.line
        except TypeError:
            pass  # unhashable key: construct_mapping reports it with its position
    return loader.construct_mapping(node, deep=True)


_YAMLLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, label: str, problems: list[str]) -> Any:
    """Parse YAML text; syntax errors and duplicate keys go to `problems` with line and column."""
    prefix = f"{label} " if label else ""
    loader = _YAMLLoader(text)
    loader.duplicates = []
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
        reason = e.problem or e.context or "syntax error"
        if e.context and e.problem and e.context_mark is not None:
            reason += f" ({e.context} at line {e.context_mark.line + 1}, column {e.context_mark.column + 1})"
        lines = text.splitlines()
        if mark is not None and mark.line < len(lines) and lines[mark.line][mark.column : mark.column + 1] == "\t":
            reason += "; YAML does not allow tabs for indentation"
        problems.append(f"{prefix}yaml {where}: {reason}")
        return None
    except yaml.YAMLError as e:
        problems.append(f"{prefix}yaml: {e}")
        return None
    finally:
        loader.dispose()
    problems.extend(f"{prefix}yaml {d}" for d in loader.duplicates)
    return data


# --------------------------------------------------------------------------------------------------------------
# Freezing and canonical form


def _freeze(value: Any) -> Any:
    """Deep-freeze plain YAML data: lists -> tuples, dicts -> MappingProxyType, dates -> ISO strings."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def _canonical(obj: Any) -> Any:
    """A JSON-able, order-preserving image of a snapshot (for digest())."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        skip = ("source", "generation") if isinstance(obj, Config) else ()
        return [type(obj).__name__] + [[f.name, _canonical(getattr(obj, f.name))]
                                       for f in dataclasses.fields(obj) if f.name not in skip]
    if isinstance(obj, Mapping):
        return [[_canonical(k), _canonical(v)] for k, v in obj.items()]
    if isinstance(obj, (tuple, list)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (frozenset, set)):
        return sorted((_canonical(v) for v in obj), key=repr)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


# --------------------------------------------------------------------------------------------------------------
# Validation


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _got(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return repr(value)


def _names(names: Iterable[str], limit: int = 8) -> str:
    items = list(names)
    if not items:
        return "none"
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" {lo}-{hi}"
    if lo is not None:
        return f" >= {lo}"
    return ""


def parse_listen(value: Any, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Parse `server.listen`: "host:port", "[v6]:port" or a bare port (which keeps `default_host`).

    Raises ValueError with the reason."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"must be 'host:port', '[ipv6]:port' or a port number, got {_got(value)}")
    text = str(value).strip()
    host, port_text = default_host, text
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise ValueError(f"cannot parse {text!r}: expected '[ipv6]:port'")
        host, port_text = text[1:close], text[close + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"cannot parse {text!r}: {host!r} is not an IPv6 address") from None
    elif not text.isdigit():
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"cannot parse {text!r}: expected 'host:port' or a port number")
        if ":" in host:
            raise ValueError(f"cannot parse {text!r}: IPv6 addresses need brackets, e.g. '[::1]:3307'")
        if not _HOST.match(host):
            raise ValueError(f"cannot parse {text!r}: {host!r} is not a host name or address")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"cannot parse {text!r}: port must be an integer 0-65535, got {port_text!r}")
    return host, int(port_text)


class _Checker:
    """Walks the raw document, building frozen config objects and collecting every problem on the way.

    Invalid values are reported and replaced by their default so that checking goes on and later mistakes are
    reported too; whenever `problems` is non-empty the caller raises instead of returning the result."""

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        self.problems: list[str] = []

    def err(self, path: str, reason: str) -> None:
        self.problems.append(f"{path or '(file)'}: {reason}")

    # --- generic shapes ------------------------------------------------------------------------------------------
    def section(self, raw: Any, path: str, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
        """A mapping of known keys; None counts as empty. Reports unknown keys (with a suggestion) and missing
        required keys; returns {} when `raw` is not a mapping at all."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.err(path, f"must be a mapping, got {_got(raw)}")
            return {}
        allowed = tuple(allowed)
        for key in raw:
            if not isinstance(key, str):
                self.err(path, f"keys must be strings, got {key!r}")
            elif key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
                self.err(_join(path, key), f"unknown key ({hint})")
        for key in required:
            if raw.get(key) is None:
                self.err(_join(path, key), "required key is missing")
        return {k: v for k, v in raw.items() if isinstance(k, str) and k in allowed}

    def named(self, raw: Any, path: str, what: str) -> dict[str, Any]:
        """A mapping of user-chosen names (nodes, databases, tables) to their definitions."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.err(path, f"must be a mapping of {what} names to definitions, got {_got(raw)}")
            return {}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if not isinstance(key, str) or not _NAME.match(key):
                self.err(_join(path, key), f"invalid {what} name {key!r} (no dots, quotes or spaces)")
            else:
                out[key] = value
        return out

    def integer(self, m: Mapping[str, Any], key: str, path: str, default: Any,
                lo: int | None = None, hi: int | None = None) -> Any:
        v = m.get(key)
        if v is None:
            return default
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
            self.err(_join(path, key), f"must be an integer{_range_text(lo, hi)}, got {_got(m.get(key))}")
            return default
        return v

    def duration(self, m: Mapping[str, Any], key: str, path: str, default: float, positive: bool = True) -> float:
        """Seconds: a number, or a string with a unit (500ms, 30s, 5m, 1h)."""
        v = m.get(key)
        if v is None:
            return default
        seconds: float | None = None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            seconds = float(v)
        elif isinstance(v, str):
            match = _DURATION.match(v)
            if match:
                seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        if seconds is None or seconds < 0 or (positive and seconds == 0) or seconds != seconds:
            need = "> 0" if positive else ">= 0"
            self.err(_join(path, key), f"must be a duration {need} (seconds, or e.g. '500ms', '30s', '5m', '1h'), "
                                       f"got {_got(v)}")
            return default
        return seconds

    def size(self, m: Mapping[str, Any], key: str, path: str, default: int, lo: int, hi: int) -> int:
        """Bytes: an integer, or a string with a binary unit (16K, 64M, 1G)."""
        v = m.get(key)
        if v is None:
            return default
        n: int | None = None
        if isinstance(v, int) and not isinstance(v, bool):
            n = v
        elif isinstance(v, str):
            match = _SIZE.match(v)
            if match:
                n = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "")[:1].lower()]
        if n is None or not lo <= n <= hi:
            self.err(_join(path, key), f"must be a size in bytes {lo}-{hi} (or e.g. '16M'), got {_got(v)}")
            return default
        return n

    def string(self, m: Mapping[str, Any], key: str, path: str, default: Any,
               choices: tuple[str, ...] | None = None) -> Any:
        v = m.get(key)
        if v is None:
            return default
        if not isinstance(v, str) or not v.strip():
            self.err(_join(path, key), f"must be a non-empty string, got {_got(v)}")
            return default
        if choices is not None and v not in choices:
            close = difflib.get_close_matches(v, choices, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.err(_join(path, key), f"unknown value {v!r} ({hint}expected one of {', '.join(choices)})")
            return default
        return v

    def boolean(self, m: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        v = m.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.err(_join(path, key), f"must be true or false, got {_got(v)}")
            return default
        return v

    def secret(self, m: Mapping[str, Any], key: str, path: str) -> str:
        """A password: a string; `${env:NAME}` references are replaced by the environment variable's value."""
        v = m.get(key)
        if v is None:
            return ""
        if not isinstance(v, str):
            self.err(_join(path, key), f"must be a string (quote it in YAML), got {type(v).__name__}")
            return ""

        def sub(match: re.Match[str]) -> str:
            value = os.environ.get(match.group(1))
            if value is None:
                self.err(_join(path, key), f"environment variable {match.group(1)} is not set")
                return ""
            return value

        return _ENV.sub(sub, v)

    def file_path(self, m: Mapping[str, Any], key: str, path: str, must_exist: str = "") -> str | None:
        """A path, resolved against the config file's directory. must_exist: "" | "file" | "dir"."""
        v = self.string(m, key, path, None)
        if v is None:
            return None
        resolved = os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(v)))
        if must_exist == "file" and not os.path.isfile(resolved):
            self.err(_join(path, key), f"file not found: {resolved}")
        elif must_exist == "dir" and not os.path.isdir(resolved):
            self.err(_join(path, key), f"directory not found: {resolved}")
        return resolved

    def expand(self, value: Any, path: str) -> tuple[str, ...]:
        if not isinstance(value, str) or not value.strip():
            self.err(path, f"must be a non-empty string, got {_got(value)}")
            return ()
        try:
            return tuple(x.strip() for x in expand(value))
        except ExprError as e:
            self.err(path, str(e))
            return ()

    def expand_list(self, value: Any, path: str) -> tuple[str, ...]:
        """A string expression or a list of them, expanded and concatenated."""
        if isinstance(value, list):
            out: list[str] = []
            for i, item in enumerate(value):
                out.extend(self.expand(item, f"{path}[{i}]"))
            if not value:
                self.err(path, "must not be empty")
            return tuple(out)
        return self.expand(value, path)

    # --- document ------------------------------------------------------------------------------------------------
    def config(self, data: Any, source: str) -> Config | None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.err("", f"the top level must be a mapping (server, users, nodes, databases), got {_got(data)}")
            return None
        top = self.section(data, "", TOP_KEYS, required=("users", "nodes"))
        raw_databases = self.named(top.get("databases"), "databases", "database")
        self.includes(top.get("include"), raw_databases)
        server = self.server(top.get("server"))
        nodes = self.nodes(top.get("nodes"))
        databases = self.databases(raw_databases, nodes)
        users = self.users(top.get("users"), raw_databases)  # raw names: a broken database is not "unknown"
        return Config(server=server, users=MappingProxyType(users), nodes=MappingProxyType(nodes),
                      databases=MappingProxyType(databases), source=source)

    def includes(self, raw: Any, databases: dict[str, Any]) -> None:
        """`include:` files contribute more `databases:` (rule files such as examples/rules/*.yaml)."""
        if raw is None:
            return
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list):
            self.err("include", f"must be a file name or a list of them, got {_got(raw)}")
            return
        origin = dict.fromkeys(databases, "this file")
        for i, item in enumerate(items):
            path = f"include[{i}]" if isinstance(raw, list) else "include"
            name = self.file_path({"f": item}, "f", path, must_exist="file")
            if name is None or not os.path.isfile(name):
                continue
            with open(name, encoding="utf-8") as f:
                data = _parse_yaml(f.read(), f"{path} ({name})", self.problems)
            if data is None:
                continue
            inc = self.section(data, f"{path} ({name})", ("databases",), required=("databases",))
            for db, definition in self.named(inc.get("databases"), "databases", "database").items():
                if db in origin:
                    self.err(f"{path}.databases.{db}", f"database {db!r} is already defined in {origin[db]}")
                else:
                    origin[db] = name
                    databases[db] = definition

    # --- server --------------------------------------------------------------------------------------------------
    def server(self, raw: Any) -> ServerConfig:
        path = "server"
        m = self.section(raw, path, SERVER_KEYS)
        d = ServerConfig()
        host, port = d.listen_host, d.listen_port
        if m.get("listen") is not None:
            try:
                host, port = parse_listen(m["listen"], d.listen_host)
            except ValueError as e:
                self.err(f"{path}.listen", str(e))
        return ServerConfig(
            listen_host=host,
            listen_port=port,
            workers=self.integer(m, "workers", path, d.workers, lo=0, hi=1024),
            server_version=self.string(m, "server_version", path, d.server_version),
            max_connections=self.integer(m, "max_connections", path, d.max_connections, lo=1),
            max_packet_size=self.size(m, "max_packet_size", path, d.max_packet_size, 1024, 1 << 30),
            tls=self.tls(m.get("tls"), f"{path}.tls"),
            control_socket=self.file_path(m, "control_socket", path),
            log_level=self.string(m, "log_level", path, d.log_level, LOG_LEVELS),
            drain_timeout=self.duration(m, "drain_timeout", path, d.drain_timeout, positive=False),
            plan_cache_size=self.integer(m, "plan_cache_size", path, d.plan_cache_size, lo=0),
            watch_config=self.boolean(m, "watch_config", path, d.watch_config),
            cross_node_lock_wait=self.duration(m, "cross_node_lock_wait", path, d.cross_node_lock_wait,
                                               positive=False),
            connect_timeout=self.duration(m, "connect_timeout", path, d.connect_timeout),
            max_handshake_packet_size=self.size(m, "max_handshake_packet_size", path, d.max_handshake_packet_size,
                                                1024, 16 * 1024 * 1024 - 1),
            max_unauthenticated=self.integer(m, "max_unauthenticated", path, d.max_unauthenticated, lo=1),
            max_unauthenticated_per_address=self.integer(m, "max_unauthenticated_per_address", path,
                                                         d.max_unauthenticated_per_address, lo=1),
            login_failure_threshold=self.integer(m, "login_failure_threshold", path, d.login_failure_threshold, lo=0),
            login_failure_delay=self.duration(m, "login_failure_delay", path, d.login_failure_delay, positive=False),
            login_failure_max_delay=self.duration(m, "login_failure_max_delay", path, d.login_failure_max_delay,
                                                  positive=False),
            max_long_data_size=self.size(m, "max_long_data_size", path, d.max_long_data_size, 1024, 1 << 30),
        )

    def tls(self, raw: Any, path: str) -> TLSConfig:
        if isinstance(raw, bool):  # `tls: false` is short for `tls: {enabled: false}`
            return TLSConfig(enabled=raw)
        m = self.section(raw, path, TLS_KEYS)
        cert = self.file_path(m, "cert", path, must_exist="file")
        key = self.file_path(m, "key", path, must_exist="file")
        if (cert is None) != (key is None):
            given, other = ("cert", "key") if cert else ("key", "cert")
            self.err(path, f"cert and key must be given together ({given} is set, {other} is not)")
        enabled = self.boolean(m, "enabled", path, True)
        require = self.boolean(m, "require", path, False)
        if require and not enabled:
            self.err(f"{path}.require", "cannot require TLS when tls.enabled is false")
        return TLSConfig(cert=cert, key=key, auto_dir=self.file_path(m, "auto_dir", path), require=require,
                         enabled=enabled)

    # --- users ---------------------------------------------------------------------------------------------------
    def users(self, raw: Any, databases: Mapping[str, Any]) -> dict[str, UserConfig]:
        if raw is None:
            return {}  # reported as a missing required key
        if not isinstance(raw, list):
            self.err("users", f"must be a list of {{name, password, ...}} mappings, got {_got(raw)}")
            return {}
        if not raw:
            self.err("users", "at least one user is required")
        users: dict[str, UserConfig] = {}
        first: dict[str, int] = {}
        for i, item in enumerate(raw):
            path = f"users[{i}]"
            m = self.section(item, path, USER_KEYS, required=("name",))
            name = self.string(m, "name", path, None)
            user = UserConfig(
                name=name or "",
                password=self.secret(m, "password", path),
                auth_plugin=self.string(m, "auth_plugin", path, DEFAULT_AUTH_PLUGIN, AUTH_PLUGINS),
                databases=self.user_databases(m.get("databases"), f"{path}.databases", databases),
                privileges=self.user_privileges(m.get("privileges"), f"{path}.privileges"),
            )
            if name is None:
                continue
            if name in first:
                self.err(f"{path}.name", f"duplicate user name {name!r} (also users[{first[name]}])")
                continue
            first[name] = i
            users[name] = user
        return users

    def user_databases(self, raw: Any, path: str, databases: Mapping[str, Any]) -> tuple[str, ...]:
        if raw is None:
            return ("*",)
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items:
            self.err(path, f"must be '*' or a non-empty list of database names, got {_got(raw)}")
            return ("*",)
        out: list[str] = []
        for j, db in enumerate(items):
            p = f"{path}[{j}]" if isinstance(raw, list) else path
            if not isinstance(db, str):
                self.err(p, f"must be a database name, got {_got(db)}")
            elif db != "*" and db not in databases:
                self.err(p, f"unknown database {db!r} (defined: {_names(databases)})")
            elif db not in out:
                out.append(db)
        return tuple(out)

    def user_privileges(self, raw: Any, path: str) -> tuple[str, ...]:
        if raw is None:
            return ()
        if raw == "all":
            return PRIVILEGES
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list):
            self.err(path, f"must be 'all' or a list of {', '.join(PRIVILEGES)}, got {_got(raw)}")
            return ()
        out: list[str] = []
        for j, priv in enumerate(items):
            p = f"{path}[{j}]" if isinstance(raw, list) else path
            if priv == "all":
                out.extend(x for x in PRIVILEGES if x not in out)
            elif not isinstance(priv, str) or priv not in PRIVILEGES:
                close = difflib.get_close_matches(priv, PRIVILEGES, n=1, cutoff=0.6) if isinstance(priv, str) else []
                hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(PRIVILEGES)} or 'all'"
                self.err(p, f"unknown privilege {priv!r}; {hint}")
            elif priv not in out:
                out.append(priv)
        return tuple(x for x in PRIVILEGES if x in out)

    # --- nodes ---------------------------------------------------------------------------------------------------
    def nodes(self, raw: Any) -> dict[str, NodeConfig]:
        named = self.named(raw, "nodes", "node")
        if raw is not None and isinstance(raw, dict) and not raw:
            self.err("nodes", "at least one data node is required")
        nodes: dict[str, NodeConfig] = {}
        for name, definition in named.items():
            path = f"nodes.{name}"
            m = self.section(definition, path, NODE_KEYS, required=("user",))
            primary = EndpointConfig(
                host=self.host(m, path),
                port=self.integer(m, "port", path, DEFAULT_PORT, lo=1, hi=65535),
                unix_socket=self.file_path(m, "unix_socket", path),
            )
            replicas = self.replicas(m.get("replicas"), f"{path}.replicas", primary)
            nodes[name] = NodeConfig(
                name=name,
                primary=primary,
                user=self.string(m, "user", path, ""),
                password=self.secret(m, "password", path),
                replicas=replicas,
                tls=self.boolean(m, "tls", path, False),
                pool=self.pool(m.get("pool"), f"{path}.pool"),
            )
        return nodes

    def host(self, m: Mapping[str, Any], path: str) -> str:
        host = self.string(m, "host", path, "127.0.0.1")
        if not _HOST.match(host) and not self._is_ip(host):
            self.err(_join(path, "host"), f"not a host name or IP address: {host!r}")
        return host

    @staticmethod
    def _is_ip(text: str) -> bool:
        try:
            ipaddress.ip_address(text)
            return True
        except ValueError:
            return False

    def replicas(self, raw: Any, path: str, primary: EndpointConfig) -> tuple[EndpointConfig, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.err(path, f"must be a list of {{host, port, unix_socket, weight}} mappings, got {_got(raw)}")
            return ()
        out: list[EndpointConfig] = []
        for i, item in enumerate(raw):
            p = f"{path}[{i}]"
            m = self.section(item, p, REPLICA_KEYS)
            if m and m.get("host") is None and m.get("unix_socket") is None:
                self.err(p, "needs host or unix_socket")
                continue
            ep = EndpointConfig(
                host=self.host(m, p),
                port=self.integer(m, "port", p, DEFAULT_PORT, lo=1, hi=65535),
                unix_socket=self.file_path(m, "unix_socket", p),
                weight=self.integer(m, "weight", p, 1, lo=0),
            )
            same = [e for e in (primary, *out) if (e.host, e.port, e.unix_socket) == (ep.host, ep.port, ep.unix_socket)]
            if same:
                self.err(p, "same server as the primary" if same[0] is primary else "listed twice")
            out.append(ep)
        return tuple(out)

    def pool(self, raw: Any, path: str) -> PoolConfig:
        m = self.section(raw, path, POOL_KEYS)
        d = PoolConfig()
        pool = PoolConfig(
            min_size=self.integer(m, "min_size", path, d.min_size, lo=0),
            max_size=self.integer(m, "max_size", path, d.max_size, lo=1),
            acquire_timeout=self.duration(m, "acquire_timeout", path, d.acquire_timeout),
            connect_timeout=self.duration(m, "connect_timeout", path, d.connect_timeout),
            idle_timeout=self.duration(m, "idle_timeout", path, d.idle_timeout),
            max_lifetime=self.duration(m, "max_lifetime", path, d.max_lifetime),
            ping_interval=self.duration(m, "ping_interval", path, d.ping_interval),
            read_timeout=self.duration(m, "read_timeout", path, d.read_timeout, positive=False),
            statement_idle_timeout=self.duration(m, "statement_idle_timeout", path, d.statement_idle_timeout),
            pipelining=self.pipelining(m.get("pipelining", True), f"{path}.pipelining"),
        )
        if "pipelining" not in m and pool.pipelining is not None and pool.pipelining.connections >= pool.max_size:
            # on by default, unless the pool is too small to lend a shared connection
            pool = dataclasses.replace(pool, pipelining=None)
        if pool.min_size > pool.max_size:
            self.err(f"{path}.min_size", f"must not exceed max_size ({pool.min_size} > {pool.max_size})")
        if pool.pipelining is not None and pool.pipelining.connections >= pool.max_size:
            self.err(f"{path}.pipelining.connections",
                     f"must be less than max_size ({pool.pipelining.connections} >= {pool.max_size})")
        return pool

    def pipelining(self, raw: Any, path: str) -> PipelineConfig | None:
        """`pipelining: true` (defaults), false/null (off), or a mapping of PIPELINE_KEYS."""
        if raw is None or raw is False:
            return None
        if raw is True:
            return PipelineConfig()
        if not isinstance(raw, dict):
            self.err(path, f"must be true, false or a mapping of {', '.join(PIPELINE_KEYS)}, got {_got(raw)}")
            return None
        m = self.section(raw, path, PIPELINE_KEYS)
        d = PipelineConfig()
        return PipelineConfig(
            connections=self.integer(m, "connections", path, d.connections, lo=1, hi=64),
            max_depth=self.integer(m, "max_depth", path, d.max_depth, lo=1, hi=256),
            max_head_wait=self.duration(m, "max_head_wait", path, d.max_head_wait),
        )

    # --- databases -----------------------------------------------------------------------------------------------
    def databases(self, named: dict[str, Any], nodes: Mapping[str, NodeConfig]) -> dict[str, DatabaseConfig]:
        out: dict[str, DatabaseConfig] = {}
        for name, definition in named.items():
            db = self.database(name, definition, f"databases.{name}", nodes)
            if db is not None:
                out[name] = db
        return out

    def node_ref(self, value: Any, path: str, nodes: Mapping[str, NodeConfig]) -> str | None:
        if not isinstance(value, str) or not value:
            self.err(path, f"must be a node name, got {_got(value)}")
            return None
        if value not in nodes:
            self.err(path, f"unknown node {value!r} (defined: {_names(nodes)})")
            return None
        return value

    def database(self, name: str, raw: Any, path: str, nodes: Mapping[str, NodeConfig]) -> DatabaseConfig | None:
        if isinstance(raw, dict) and "node" in raw:
            m = self.section(raw, path, PASSTHROUGH_KEYS + SHARDED_KEYS)
            for k in SHARDED_KEYS:
                if k in m:
                    self.err(f"{path}.{k}", "not allowed with 'node' (pass-through form); use datasources instead")
            node = self.node_ref(m["node"], f"{path}.node", nodes)
            database = self.string(m, "database", path, name)
            if node is None:
                return None
            ds = DataSource(name=node, node=node, database=database)
            return DatabaseConfig(name=name, datasources=MappingProxyType({node: ds}), default_datasource=node)
        m = self.section(raw, path, SHARDED_KEYS + PASSTHROUGH_KEYS, required=("datasources",))
        for k in ("database",):
            if k in m:
                self.err(f"{path}.{k}", "only valid with 'node' (pass-through form); data sources name their "
                                        "physical databases")
        datasources = self.datasources(m.get("datasources"), f"{path}.datasources", name, nodes)
        if not datasources:
            return None
        default = self.string(m, "default_datasource", path, next(iter(datasources)))
        if default not in datasources:
            self.err(f"{path}.default_datasource", f"unknown data source {default!r} "
                                                   f"(defined: {_names(datasources)})")
            default = next(iter(datasources))
        tables = self.tables(m.get("tables"), f"{path}.tables", datasources, default)
        tables = self.bindings(m.get("binding_tables"), f"{path}.binding_tables", tables)
        self.check_collisions(tables, f"{path}.tables")
        return DatabaseConfig(name=name, datasources=MappingProxyType(datasources), default_datasource=default,
                              tables=MappingProxyType(tables))

    def datasources(self, raw: Any, path: str, dbname: str, nodes: Mapping[str, NodeConfig]) -> dict[str, DataSource]:
        if raw is None:
            return {}
        if not isinstance(raw, dict) or not raw:
            self.err(path, f"must be a non-empty mapping of data sources, got {_got(raw)}")
            return {}
        # (name, node, database, path) in declaration order; duplicates and references checked below
        found: list[tuple[str, str | None, str, str]] = []
        if isinstance(raw.get("names"), (str, list)):  # compact form
            m = self.section(raw, path, COMPACT_DATASOURCE_KEYS, required=("names", "nodes"))
            names = self.expand_list(m["names"], f"{path}.names")
            node_list = self.expand_list(m["nodes"], f"{path}.nodes") if m.get("nodes") is not None else ()
            dbs = self.expand(m.get("database", dbname), f"{path}.database")
            if dbs and names and len(dbs) not in (1, len(names)):
                self.err(f"{path}.database", f"expands to {len(dbs)} names but there are {len(names)} data sources "
                                             "(need 1 or the same number)")
                dbs = ()
            for i, ds in enumerate(names):
                node = node_list[i % len(node_list)] if node_list else None
                if node is not None and node not in nodes:
                    node = self.node_ref(node, f"{path}.nodes", nodes)
                found.append((ds, node, dbs[i % len(dbs)] if dbs else dbname, path))
        else:
            for key, value in raw.items():
                p = _join(path, key)
                names = self.expand(key, p) if isinstance(key, str) else ()
                if not isinstance(key, str):
                    self.err(p, "data source names must be strings")
                m = self.section(value, p, DATASOURCE_KEYS, required=("node",))
                node_list = self.expand(m["node"], f"{p}.node") if m.get("node") is not None else ()
                dbs = self.expand(m.get("database", dbname), f"{p}.database")
                for what, values in (("node", node_list), ("database", dbs)):
                    if values and names and len(values) not in (1, len(names)):
                        self.err(f"{p}.{what}", f"expands to {len(values)} values but the key expands to "
                                                f"{len(names)} data sources (need 1 or the same number)")
                        node_list = () if what == "node" else node_list
                        dbs = () if what == "database" else dbs
                for i, ds in enumerate(names):
                    node = node_list[i % len(node_list)] if node_list else None
                    if node is not None and node not in nodes:
                        node = self.node_ref(node, f"{p}.node", nodes)
                    found.append((ds, node, dbs[i % len(dbs)] if dbs else dbname, p))
        out: dict[str, DataSource] = {}
        placed: dict[tuple[str, str], str] = {}
        for ds, node, database, p in found:
            if not _NAME.match(ds):
                self.err(p, f"invalid data source name {ds!r} (no dots, quotes or spaces)")
            elif ds in out:
                self.err(p, f"data source {ds!r} is defined twice")
            else:
                if node is not None:
                    # Two data sources on one physical database would make their shards the same tables.
                    other = placed.get((node, database))
                    if other is not None:
                        self.err(p, f"data source {ds!r} uses the same physical database as {other!r} "
                                    f"({node}/{database})")
                    placed[(node, database)] = ds
                # A bad node was reported already; keeping the name avoids "unknown data source" noise later
                # (the snapshot is never returned when there are problems).
                out[ds] = DataSource(name=ds, node=node or "", database=database)
        return out

    # --- tables --------------------------------------------------------------------------------------------------
    def tables(self, raw: Any, path: str, datasources: Mapping[str, DataSource], default: str
               ) -> dict[str, TableRule]:
        named = self.named(raw, path, "table")
        out: dict[str, TableRule] = {}
        spelled: dict[str, str] = {}
        for name, definition in named.items():
            p = f"{path}.{name}"
            key = name.lower()  # MySQL clients may write the logical name in any case
            if key in spelled:
                self.err(p, f"table {name!r} is defined twice (also as {spelled[key]!r}; names are case-insensitive)")
                continue
            spelled[key] = name
            rule = self.table(name, definition, p, datasources, default)
            if rule is not None:
                out[key] = rule
        return out

    def table(self, name: str, raw: Any, path: str, datasources: Mapping[str, DataSource], default: str
              ) -> TableRule | None:
        m = self.section(raw, path, TABLE_KEYS)
        keygen = self.key_generator(m.get("key_generator"), f"{path}.key_generator")
        broadcast = self.boolean(m, "broadcast", path, False)
        sharded_keys = [k for k in SHARDED_TABLE_KEYS if m.get(k) is not None]
        single_keys = [k for k in SINGLE_TABLE_KEYS if m.get(k) is not None]
        if m.get("key_collation") is not None and (broadcast or not sharded_keys):
            self.err(f"{path}.key_collation", "only for sharded tables (it says how hash_mod compares string shard "
                                              "keys)")
        if broadcast:
            for k in sharded_keys + single_keys:
                self.err(f"{path}.{k}", "not allowed for a broadcast table (it has a copy in every data source)")
            names = tuple(datasources)
            return TableRule(name=name.lower(), kind="broadcast", datasources=names,
                             tables=MappingProxyType({ds: (name,) for ds in names}), key_generator=keygen)
        if sharded_keys and single_keys:
            for k in single_keys:
                self.err(f"{path}.{k}", "only for single tables; a sharded table lists its physical tables in "
                                        "'nodes'")
            return None
        if not sharded_keys:
            ds = self.string(m, "datasource", path, default)
            if ds not in datasources:
                self.err(f"{path}.datasource", f"unknown data source {ds!r} (defined: {_names(datasources)})")
                return None
            physical = self.string(m, "table", path, name)
            return TableRule(name=name.lower(), kind="single", datasources=(ds,),
                             tables=MappingProxyType({ds: (physical,)}), key_generator=keygen)
        return self.sharded(name, m, path, datasources, keygen)

    def sharded(self, name: str, m: Mapping[str, Any], path: str, datasources: Mapping[str, DataSource],
                keygen: KeyGenerator | None) -> TableRule | None:
        if m.get("nodes") is None:
            items = tuple(f"{ds}.{name}" for ds in datasources)  # default: one table per data source
        else:
            items = self.expand_list(m["nodes"], f"{path}.nodes")
        layout: dict[str, list[str]] = {}
        seen: set[tuple[str, str]] = set()
        unknown: set[str] = set()
        for item in items:
            ds, dot, table = item.partition(".")
            if not dot or not ds or not table or not _NAME.match(table):
                self.err(f"{path}.nodes", f"expected 'datasource.table', got {item!r}")
            elif ds not in datasources:
                if ds not in unknown:  # once per data source, not once per expanded table
                    unknown.add(ds)
                    self.err(f"{path}.nodes", f"unknown data source {ds!r} in {item!r} "
                                              f"(defined: {_names(datasources)})")
            elif (ds, table.lower()) in seen:
                self.err(f"{path}.nodes", f"{item!r} is listed twice")
            else:
                seen.add((ds, table.lower()))
                layout.setdefault(ds, []).append(table)
        if not layout and not items and m.get("nodes") is not None:
            self.err(f"{path}.nodes", "lists no physical tables")
        names = tuple(layout)
        counts = [len(layout[ds]) for ds in names] or [0]
        collation = self.string(m, "key_collation", path, "ci", KEY_COLLATIONS)
        db_strategy = self.strategy(m.get("database_strategy"), f"{path}.database_strategy", "database",
                                    [(f"the table spans {len(names)} data sources", len(names))], len(names),
                                    collation)
        table_strategy = self.strategy(m.get("table_strategy"), f"{path}.table_strategy", "table",
                                       [(f"data source {ds} holds {len(layout[ds])} tables", len(layout[ds]))
                                        for ds in names], len(names), collation)
        algorithms = [s.algorithm for s in (db_strategy, table_strategy) if s is not None]
        if m.get("key_collation") is not None and "hash_mod" not in algorithms:
            uses = f"uses {' and '.join(algorithms)}" if algorithms else "has no strategy"
            self.err(f"{path}.key_collation", f"has no effect: only hash_mod hashes string keys, this table {uses}")
        if not layout:
            return None
        if len(names) > 1 and m.get("database_strategy") is None:
            self.err(path, f"spans {len(names)} data sources ({_names(names)}) but has no database_strategy")
        if max(counts) > 1 and m.get("table_strategy") is None:
            busiest = names[counts.index(max(counts))]
            self.err(path, f"data source {busiest} holds {max(counts)} tables but there is no table_strategy")
        if table_strategy is not None and table_strategy.algorithm == "two_level" and len(names) > 1:
            if db_strategy is not None and (db_strategy.algorithm != "mod"
                                            or db_strategy.column != table_strategy.column):
                self.err(f"{path}.table_strategy", "two_level expects database_strategy mod on the same column "
                                                   f"({table_strategy.column})")
        return TableRule(name=name.lower(), kind="sharded", datasources=names,
                         tables=MappingProxyType({ds: tuple(t) for ds, t in layout.items()}),
                         database_strategy=db_strategy, table_strategy=table_strategy, key_generator=keygen)

    def strategy(self, raw: Any, path: str, role: str, targets: list[tuple[str, int]], n_datasources: int,
                 key_collation: str = "ci") -> ShardStrategy | None:
        """A sharding strategy. `targets` = (description, count) of every place it indexes into: the rule's data
        sources for a database strategy, each data source's tables for a table strategy. `key_collation` (the
        rule's) goes into hash_mod props."""
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.err(path, f"must be a mapping {{column, algorithm, ...}}, got {_got(raw)}")
            return None
        given = raw.get("algorithm")
        if isinstance(given, str) and given not in ALGORITHMS:
            self.err(f"{path}.algorithm", f"unknown algorithm {given!r} (expected one of {', '.join(ALGORITHMS)})")
            self.section(raw, path, ("column", "algorithm") + tuple(k for v in ALGORITHM_PROPS.values() for k in v))
            return None
        algorithm = self.string(raw, "algorithm", path, None)
        allowed = ("column", "algorithm") + (ALGORITHM_PROPS[algorithm] if algorithm else ())
        m = self.section(raw, path, allowed, required=("column", "algorithm"))
        column = self.string(m, "column", path, None)
        if algorithm is None or column is None:
            return None
        props: dict[str, Any] = {}
        counts = {count for _, count in targets}
        if algorithm == "hash_mod":
            props["hash"] = self.string(m, "hash", path, "crc32", HASH_FUNCTIONS)
            if m.get("seed") is not None:
                props["seed"] = self.integer(m, "seed", path, 0, lo=0, hi=0xFFFFFFFF)
            props["key_collation"] = key_collation
        elif algorithm == "range":
            boundaries = self.boundaries(m.get("boundaries"), f"{path}.boundaries")
            if boundaries is not None:
                props["boundaries"] = boundaries
                for what, count in targets:
                    if count != len(boundaries) + 1:
                        self.err(f"{path}.boundaries", f"{len(boundaries)} boundaries make {len(boundaries) + 1} "
                                                       f"shards, but {what} (need one more than boundaries)")
                        break
        elif algorithm == "interval":
            props["unit"] = self.string(m, "unit", path, None, INTERVAL_UNITS)
            if m.get("unit") is None:
                self.err(f"{path}.unit", f"required key is missing (one of {', '.join(INTERVAL_UNITS)})")
            props["start"] = self.date(m, "start", path)
            props["step"] = self.integer(m, "step", path, 1, lo=1)
        elif algorithm == "two_level":
            if role != "table":
                self.err(f"{path}.algorithm", "two_level is only valid as a table_strategy (key / data sources % "
                                              "tables); use mod for the database_strategy")
            elif len(counts) > 1:
                self.err(path, "two_level needs the same number of tables in every data source, got "
                               + ", ".join(f"{what}" for what, _ in targets))
            # The shard function only sees its own n (tables), so the divisor D travels in props.
            props["databases"] = self.integer(m, "databases", path, n_datasources, lo=1)
        elif algorithm == "class":
            props.update(self.class_props(m, path))
        return ShardStrategy(column=column.lower(), algorithm=algorithm, props=_freeze(props))

    def boundaries(self, raw: Any, path: str) -> tuple[Any, ...] | None:
        if raw is None:
            self.err(path, "required key is missing (a list of increasing boundaries)")
            return None
        if not isinstance(raw, list) or not raw:
            self.err(path, f"must be a non-empty list of increasing numbers, got {_got(raw)}")
            return None
        values = list(raw)
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v]
        if bad:
            self.err(path, f"boundaries must be numbers, got {', '.join(_got(v) for v in bad)}")
            return None
        for i in range(1, len(values)):
            if not values[i - 1] < values[i]:
                self.err(f"{path}[{i}]", f"boundaries must be strictly increasing: {_got(raw[i])} comes after "
                                         f"{_got(raw[i - 1])}")
                return None
        return tuple(values)

    def date(self, m: Mapping[str, Any], key: str, path: str) -> str | None:
        v = m.get(key)
        if v is None:
            self.err(_join(path, key), "required key is missing (a date, YYYY-MM-DD)")
            return None
        if isinstance(v, datetime.datetime):
            v = v.date()
        if isinstance(v, datetime.date):
            return v.isoformat()
        if isinstance(v, str):
            try:
                return datetime.date.fromisoformat(v.strip()).isoformat()
            except ValueError:
                pass
        self.err(_join(path, key), f"must be a date YYYY-MM-DD, got {_got(v)}")
        return None

    def class_props(self, m: Mapping[str, Any], path: str) -> dict[str, Any]:
        spec = self.string(m, "class", path, None)
        if m.get("class") is None:
            self.err(f"{path}.class", "required key is missing ('package.module:ClassName')")
        ctor_props = m.get("props")
        if ctor_props is not None and (not isinstance(ctor_props, dict) or "class" in ctor_props
                                       or not all(isinstance(k, str) and k.isidentifier() for k in ctor_props)):
            self.err(f"{path}.props", f"must be a mapping of keyword arguments for the class (identifiers, not "
                                      f"'class'), got {_got(ctor_props)}")
            ctor_props = None
        if spec is not None:
            self.check_class(spec, f"{path}.class")
        # Flattened: the shard function passes every prop except "class" to the constructor.
        return {"class": spec, **(ctor_props or {})}

    def check_class(self, spec: str, path: str) -> None:
        module_name, colon, attr = spec.partition(":")
        if not colon or not module_name or not attr:
            self.err(path, f"must be 'package.module:ClassName', got {spec!r}")
            return
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # any import-time failure of user code is a config problem
            self.err(path, f"cannot import {module_name!r}: {type(e).__name__}: {e}")
            return
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part, _ABSENT)
            if obj is _ABSENT:
                self.err(path, f"module {module_name!r} has no attribute {attr!r}")
                return
        if not callable(obj) or not callable(getattr(obj, "index", None)):
            self.err(path, f"{spec!r} must be a class with an index(value, n) method")

    def key_generator(self, raw: Any, path: str) -> KeyGenerator | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.err(path, f"must be a mapping {{column, type, ...}}, got {_got(raw)}")
            return None
        kind = self.string(raw, "type", path, None, tuple(KEY_GENERATORS))
        if raw.get("type") is None:
            kind = "snowflake"
        allowed = ("column", "type") + (KEY_GENERATORS[kind] if kind else
                                        tuple(k for v in KEY_GENERATORS.values() for k in v))
        m = self.section(raw, path, allowed, required=("column",))
        column = self.string(m, "column", path, None)
        props: dict[str, Any] = {}
        if kind == "snowflake":
            if m.get("worker_id") is not None:
                props["worker_id"] = self.integer(m, "worker_id", path, 0, lo=0, hi=1023)
            epoch = m.get("epoch")
            if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
                props["epoch"] = epoch  # unix milliseconds
            elif epoch is not None:
                props["epoch"] = self.date(m, "epoch", path)
        elif kind == "segment":
            # Blocks of `step` ids are reserved in a sequence table on the default data source's node.
            for key in ("name", "table"):
                if m.get(key) is not None:
                    props[key] = self.string(m, key, path, None)
            props["step"] = self.integer(m, "step", path, 1000, lo=1)
            props["initial"] = self.integer(m, "initial", path, 1, lo=0)
        if column is None or kind is None:
            return None
        return KeyGenerator(column=column.lower(), type=kind, props=_freeze(props))

    # --- cross-table checks --------------------------------------------------------------------------------------
    def bindings(self, raw: Any, path: str, tables: dict[str, TableRule]) -> dict[str, TableRule]:
        if raw is None:
            return tables
        if not isinstance(raw, list):
            self.err(path, f"must be a list of lists of table names, got {_got(raw)}")
            return tables
        member_of: dict[str, int] = {}
        out = dict(tables)
        for i, group in enumerate(raw):
            p = f"{path}[{i}]"
            if isinstance(group, str):  # "orders, order_items" is accepted as shorthand
                group = [g.strip() for g in group.split(",")]
            if not isinstance(group, list) or len(group) < 2:
                self.err(p, f"must list at least two tables, got {_got(group)}")
                continue
            names: list[str] = []
            for j, table in enumerate(group):
                if not isinstance(table, str):
                    self.err(f"{p}[{j}]", f"must be a table name, got {_got(table)}")
                    continue
                key = table.lower()
                rule = tables.get(key)
                if rule is None:
                    self.err(f"{p}[{j}]", f"unknown table {table!r} (sharded tables: "
                                          f"{_names(k for k, r in tables.items() if r.kind == 'sharded')})")
                elif rule.kind != "sharded":
                    self.err(f"{p}[{j}]", f"{table!r} is a {rule.kind} table; only sharded tables can be bound")
                elif key in member_of:
                    self.err(f"{p}[{j}]", f"{table!r} is already in binding group {member_of[key]}")
                else:
                    member_of[key] = i
                    names.append(key)
            if len(names) != len(group):
                continue
            first = tables[names[0]]
            for j, key in enumerate(names[1:], start=1):
                reason = self.binding_mismatch(first, tables[key])
                if reason:
                    self.err(f"{p}[{j}]", f"{group[j]!r} cannot be bound to {group[0]!r}: {reason}")
            for key in names:
                out[key] = dataclasses.replace(out[key], binding_group=tuple(names))
        return out

    @staticmethod
    def binding_mismatch(a: TableRule, b: TableRule) -> str:
        """Why two sharded tables cannot route together ("" if they can): same layout and same algorithms."""
        if a.datasources != b.datasources:
            return f"data sources differ ({_names(a.datasources)} vs {_names(b.datasources)})"
        for ds in a.datasources:
            if len(a.tables[ds]) != len(b.tables[ds]):
                return f"data source {ds} holds {len(a.tables[ds])} vs {len(b.tables[ds])} tables"
        for what in ("database_strategy", "table_strategy"):
            sa, sb = getattr(a, what), getattr(b, what)
            sig_a = None if sa is None else (sa.algorithm, _canonical(sa.props))
            sig_b = None if sb is None else (sb.algorithm, _canonical(sb.props))
            if sig_a != sig_b:
                return f"{what} differs ({_strategy_text(sa)} vs {_strategy_text(sb)})"
        return ""

    def check_collisions(self, tables: Mapping[str, TableRule], path: str) -> None:
        """Two logical tables must never share a physical table."""
        owner: dict[tuple[str, str], str] = {}
        for key, rule in tables.items():
            for target in rule.targets:
                slot = (target.datasource, target.table.lower())
                other = owner.setdefault(slot, key)
                if other != key:
                    self.err(f"{path}.{key}", f"physical table {target.datasource}.{target.table} is also used by "
                                              f"table {other!r}")
                    break


def _strategy_text(s: ShardStrategy | None) -> str:
    if s is None:
        return "none"
    props = ", ".join(f"{k}={v}" for k, v in s.props.items())
    return f"{s.algorithm}({props})" if props else s.algorithm
