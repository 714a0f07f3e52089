"""Validation of a configuration document section by section (server, users, nodes, pools, databases, sharding
rules, key generators, binding tables) into the frozen snapshot of `ddm.config.model`."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ddm.config.model import (
    AUTH_PLUGINS,
    DEFAULT_AUTH_PLUGIN,
    DEFAULT_PORT,
    LOG_LEVELS,
    NODE_KEYS,
    PASSTHROUGH_KEYS,
    PIPELINE_KEYS,
    POOL_KEYS,
    PRIVILEGES,
    REPLICA_KEYS,
    SERVER_KEYS,
    SHARDED_KEYS,
    TLS_KEYS,
    TOP_KEYS,
    TRANSACTION_MODES,
    USER_KEYS,
    XA_LOGS,
    Config,
    DatabaseConfig,
    DataSource,
    EndpointConfig,
    NodeConfig,
    PipelineConfig,
    PoolConfig,
    ServerConfig,
    TLSConfig,
    UserConfig,
)
from ddm.config.validate_rules import RuleChecks
from ddm.config.values import (
    HOST_RE,
    got,
    join_path,
    names_text,
    parse_listen,
    parse_yaml,
)


class Checker(RuleChecks):
    def config(self, data: Any, source: str) -> Config | None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.err("", f"the top level must be a mapping (server, users, nodes, databases), got {got(data)}")
            return None
        top = self.section(data, "", TOP_KEYS, required=("users", "nodes"))
        raw_databases = self.named(top.get("databases"), "databases", "database")
        self.includes(top.get("include"), raw_databases)
        server = self.server(top.get("server"))
        nodes = self.nodes(top.get("nodes"))
        databases = self.databases(raw_databases, nodes)
        if server.xa_log_node is not None and nodes and server.xa_log_node not in nodes:
            self.err("server.xa_log_node", f"unknown node {server.xa_log_node!r} (defined: {names_text(nodes)})")
        users = self.users(top.get("users"), raw_databases)  # raw names: a broken database is not "unknown"
        return Config(server=server, users=MappingProxyType(users), nodes=MappingProxyType(nodes),
                      databases=MappingProxyType(databases), source=source)

    def includes(self, raw: Any, databases: dict[str, Any]) -> None:
        """`include:` files contribute more `databases:` (rule files such as examples/rules/*.yaml)."""
        if raw is None:
            return
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list):
            self.err("include", f"must be a file name or a list of them, got {got(raw)}")
            return
        origin = dict.fromkeys(databases, "this file")
        for i, item in enumerate(items):
            path = f"include[{i}]" if isinstance(raw, list) else "include"
            name = self.file_path({"f": item}, "f", path, must_exist="file")
            if name is None or not os.path.isfile(name):
                continue
            with open(name, encoding="utf-8") as f:
                data = parse_yaml(f.read(), f"{path} ({name})", self.problems)
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
            **self.xa(m, path, d),
        )

    def xa(self, m: Mapping[str, Any], path: str, d: ServerConfig) -> dict[str, Any]:
        kind = self.string(m, "xa_log", path, d.xa_log, XA_LOGS)
        log_path = self.file_path(m, "xa_log_path", path)
        if kind == "file" and log_path is None:
            self.err(f"{path}.xa_log_path", "required with xa_log: file (the decision log's file)")
        elif kind == "file" and not os.path.isdir(os.path.dirname(os.path.abspath(log_path))):
            self.err(f"{path}.xa_log_path", f"directory of {log_path!r} does not exist")
        elif kind != "file" and log_path is not None:
            self.err(f"{path}.xa_log_path", "only with xa_log: file")
        instance = self.string(m, "instance_id", path, d.instance_id)
        if instance is not None and not (0 < len(instance) <= 24 and all(c.isalnum() or c in "-_" for c in instance)):
            self.err(f"{path}.instance_id", "1 to 24 letters, digits, '-' or '_'")
        return dict(
            xa_log=kind,
            xa_log_node=self.string(m, "xa_log_node", path, d.xa_log_node),
            xa_log_database=self.string(m, "xa_log_database", path, d.xa_log_database),
            xa_log_path=log_path,
            xa_recovery_interval=self.duration(m, "xa_recovery_interval", path, d.xa_recovery_interval,
                                               positive=False),
            xa_recovery_grace=self.duration(m, "xa_recovery_grace", path, d.xa_recovery_grace, positive=False),
            instance_id=instance,
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
            self.err("users", f"must be a list of {{name, password, ...}} mappings, got {got(raw)}")
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
            self.err(path, f"must be '*' or a non-empty list of database names, got {got(raw)}")
            return ("*",)
        out: list[str] = []
        for j, db in enumerate(items):
            p = f"{path}[{j}]" if isinstance(raw, list) else path
            if not isinstance(db, str):
                self.err(p, f"must be a database name, got {got(db)}")
            elif db != "*" and db not in databases:
                self.err(p, f"unknown database {db!r} (defined: {names_text(databases)})")
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
            self.err(path, f"must be 'all' or a list of {', '.join(PRIVILEGES)}, got {got(raw)}")
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
        if not HOST_RE.match(host) and not self._is_ip(host):
            self.err(join_path(path, "host"), f"not a host name or IP address: {host!r}")
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
            self.err(path, f"must be a list of {{host, port, unix_socket, weight}} mappings, got {got(raw)}")
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
            self.err(path, f"must be true, false or a mapping of {', '.join(PIPELINE_KEYS)}, got {got(raw)}")
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
            self.err(path, f"must be a node name, got {got(value)}")
            return None
        if value not in nodes:
            self.err(path, f"unknown node {value!r} (defined: {names_text(nodes)})")
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
                                                   f"(defined: {names_text(datasources)})")
            default = next(iter(datasources))
        tables = self.tables(m.get("tables"), f"{path}.tables", datasources, default)
        tables = self.bindings(m.get("binding_tables"), f"{path}.binding_tables", tables)
        self.check_collisions(tables, f"{path}.tables")
        return DatabaseConfig(name=name, datasources=MappingProxyType(datasources), default_datasource=default,
                              tables=MappingProxyType(tables),
                              transactions=self.string(m, "transactions", path, "xa", TRANSACTION_MODES))















