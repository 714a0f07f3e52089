"""Configuration: one YAML file loaded into an immutable, validated snapshot.

Every object here is a frozen dataclass (tuples, not lists; MappingProxyType, not dict), so a worker can swap the
whole snapshot atomically on hot reload and a transaction in flight keeps the snapshot it started with.

`load(path) -> Config` reads and validates; every mistake raises `ConfigError` listing *all* problems, each as
"key.path: reason". See docs/configuration.md for the file format.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

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
    # cross-node transactions (ddm.execute.xa): where commit decisions are logged ("table": <xa_log_database>.xa_log
    # on node xa_log_node, default the first node; "file": xa_log_path, fsync'd), how often recovery looks for
    # in-doubt branches (0 = at start only), how long a prepared branch without a decision whose worker may still
    # be alive is left alone; instance_id names this ddm in its XA ids (default hostname-port)
    xa_log: str = "table"
    xa_log_node: str | None = None
    xa_log_database: str = "ddm"
    xa_log_path: str | None = None
    xa_recovery_interval: float = 10.0
    xa_recovery_grace: float = 60.0
    instance_id: str | None = None


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
    # sharded: "xa" = explicit transactions commit atomically across nodes (ddm.execute.xa); "local" = one plain
    # COMMIT per node
    transactions: str = "xa"

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
        h = hashlib.sha256(json.dumps(canonical(self), separators=(",", ":")).encode())
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
               "login_failure_threshold", "login_failure_delay", "login_failure_max_delay", "max_long_data_size",
               "xa_log", "xa_log_node", "xa_log_database", "xa_log_path", "xa_recovery_interval", "xa_recovery_grace",
               "instance_id")
XA_LOGS = ("table", "file")
TRANSACTION_MODES = ("xa", "local")
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
SHARDED_KEYS = ("datasources", "default_datasource", "tables", "binding_tables", "transactions")
DATASOURCE_KEYS = ("node", "database")
COMPACT_DATASOURCE_KEYS = ("names", "nodes", "database")
TABLE_KEYS = ("nodes", "database_strategy", "table_strategy", "key_generator", "key_collation", "broadcast",
              "datasource", "table")
SHARDED_TABLE_KEYS = ("nodes", "database_strategy", "table_strategy")
SINGLE_TABLE_KEYS = ("datasource", "table")

# Names that end up inside "datasource.table" strings and key paths: no dots, quotes or whitespace.


# --------------------------------------------------------------------------------------------------------------
# Freezing and canonical form


def freeze(value: Any) -> Any:
    """Deep-freeze plain YAML data: lists -> tuples, dicts -> MappingProxyType, dates -> ISO strings."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def canonical(obj: Any) -> Any:
    """A JSON-able, order-preserving image of a snapshot (for digest())."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        skip = ("source", "generation") if isinstance(obj, Config) else ()
        return [type(obj).__name__] + [[f.name, canonical(getattr(obj, f.name))]
                                       for f in dataclasses.fields(obj) if f.name not in skip]
    if isinstance(obj, Mapping):
        return [[canonical(k), canonical(v)] for k, v in obj.items()]
    if isinstance(obj, (tuple, list)):
        return [canonical(v) for v in obj]
    if isinstance(obj, (frozenset, set)):
        return sorted((canonical(v) for v in obj), key=repr)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)
