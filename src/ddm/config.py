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

from ddm.expr import ExprError, expand

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


@dataclass(frozen=True)
class UserConfig:
    name: str
    password: str
    auth_plugin: str = "mysql_native_password"  # or caching_sha2_password
    databases: tuple[str, ...] = ("*",)  # logical databases this user may use; "*" = all


@dataclass(frozen=True)
class PoolConfig:
    min_size: int = 0
    max_size: int = 64
    acquire_timeout: float = 5.0  # seconds a query waits for a free connection before ER_CON_COUNT_ERROR
    connect_timeout: float = 5.0
    idle_timeout: float = 300.0  # close connections idle longer than this (down to min_size)
    max_lifetime: float = 3600.0  # recycle connections older than this when they come back
    ping_interval: float = 30.0  # COM_PING idle connections this often


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
    {"unit": "month", "start": "2024-01-01"}, {"class": "pkg.mod:Cls"}); see docs/configuration.md."""

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


