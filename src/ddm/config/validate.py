"""Validation of a configuration document section by section (server, users, nodes, pools, databases, sharding
rules, key generators, binding tables) into the frozen snapshot of `ddm.config.model`."""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import importlib
import ipaddress
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ddm.config.model import (
    ALGORITHM_PROPS,
    ALGORITHMS,
    AUTH_PLUGINS,
    COMPACT_DATASOURCE_KEYS,
    DATASOURCE_KEYS,
    DEFAULT_AUTH_PLUGIN,
    DEFAULT_PORT,
    HASH_FUNCTIONS,
    INTERVAL_UNITS,
    KEY_COLLATIONS,
    KEY_GENERATORS,
    LOG_LEVELS,
    NODE_KEYS,
    PASSTHROUGH_KEYS,
    PIPELINE_KEYS,
    POOL_KEYS,
    PRIVILEGES,
    REPLICA_KEYS,
    SERVER_KEYS,
    SHARDED_KEYS,
    SHARDED_TABLE_KEYS,
    SINGLE_TABLE_KEYS,
    TABLE_KEYS,
    TLS_KEYS,
    TOP_KEYS,
    TRANSACTION_MODES,
    USER_KEYS,
    XA_LOGS,
    Config,
    DatabaseConfig,
    DataSource,
    EndpointConfig,
    KeyGenerator,
    NodeConfig,
    PipelineConfig,
    PoolConfig,
    ServerConfig,
    ShardStrategy,
    TableRule,
    TLSConfig,
    UserConfig,
    canonical,
    freeze,
)
from ddm.config.values import (
    ABSENT,
    HOST_RE,
    NAME_RE,
    Values,
    got,
    join_path,
    names_text,
    parse_listen,
    parse_yaml,
)


class Checker(Values):
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

    def datasources(self, raw: Any, path: str, dbname: str, nodes: Mapping[str, NodeConfig]) -> dict[str, DataSource]:
        if raw is None:
            return {}
        if not isinstance(raw, dict) or not raw:
            self.err(path, f"must be a non-empty mapping of data sources, got {got(raw)}")
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
                p = join_path(path, key)
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
            if not NAME_RE.match(ds):
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
                self.err(f"{path}.datasource", f"unknown data source {ds!r} (defined: {names_text(datasources)})")
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
            if not dot or not ds or not table or not NAME_RE.match(table):
                self.err(f"{path}.nodes", f"expected 'datasource.table', got {item!r}")
            elif ds not in datasources:
                if ds not in unknown:  # once per data source, not once per expanded table
                    unknown.add(ds)
                    self.err(f"{path}.nodes", f"unknown data source {ds!r} in {item!r} "
                                              f"(defined: {names_text(datasources)})")
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
            self.err(path, f"spans {len(names)} data sources ({names_text(names)}) but has no database_strategy")
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
            self.err(path, f"must be a mapping {{column, algorithm, ...}}, got {got(raw)}")
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
        return ShardStrategy(column=column.lower(), algorithm=algorithm, props=freeze(props))

    def boundaries(self, raw: Any, path: str) -> tuple[Any, ...] | None:
        if raw is None:
            self.err(path, "required key is missing (a list of increasing boundaries)")
            return None
        if not isinstance(raw, list) or not raw:
            self.err(path, f"must be a non-empty list of increasing numbers, got {got(raw)}")
            return None
        values = list(raw)
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v]
        if bad:
            self.err(path, f"boundaries must be numbers, got {', '.join(got(v) for v in bad)}")
            return None
        for i in range(1, len(values)):
            if not values[i - 1] < values[i]:
                self.err(f"{path}[{i}]", f"boundaries must be strictly increasing: {got(raw[i])} comes after "
                                         f"{got(raw[i - 1])}")
                return None
        return tuple(values)

    def date(self, m: Mapping[str, Any], key: str, path: str) -> str | None:
        v = m.get(key)
        if v is None:
            self.err(join_path(path, key), "required key is missing (a date, YYYY-MM-DD)")
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
        self.err(join_path(path, key), f"must be a date YYYY-MM-DD, got {got(v)}")
        return None

    def class_props(self, m: Mapping[str, Any], path: str) -> dict[str, Any]:
        spec = self.string(m, "class", path, None)
        if m.get("class") is None:
            self.err(f"{path}.class", "required key is missing ('package.module:ClassName')")
        ctor_props = m.get("props")
        if ctor_props is not None and (not isinstance(ctor_props, dict) or "class" in ctor_props
                                       or not all(isinstance(k, str) and k.isidentifier() for k in ctor_props)):
            self.err(f"{path}.props", f"must be a mapping of keyword arguments for the class (identifiers, not "
                                      f"'class'), got {got(ctor_props)}")
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
            obj = getattr(obj, part, ABSENT)
            if obj is ABSENT:
                self.err(path, f"module {module_name!r} has no attribute {attr!r}")
                return
        if not callable(obj) or not callable(getattr(obj, "index", None)):
            self.err(path, f"{spec!r} must be a class with an index(value, n) method")

    def key_generator(self, raw: Any, path: str) -> KeyGenerator | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.err(path, f"must be a mapping {{column, type, ...}}, got {got(raw)}")
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
        return KeyGenerator(column=column.lower(), type=kind, props=freeze(props))

    # --- cross-table checks --------------------------------------------------------------------------------------
    def bindings(self, raw: Any, path: str, tables: dict[str, TableRule]) -> dict[str, TableRule]:
        if raw is None:
            return tables
        if not isinstance(raw, list):
            self.err(path, f"must be a list of lists of table names, got {got(raw)}")
            return tables
        member_of: dict[str, int] = {}
        out = dict(tables)
        for i, group in enumerate(raw):
            p = f"{path}[{i}]"
            if isinstance(group, str):  # "orders, order_items" is accepted as shorthand
                group = [g.strip() for g in group.split(",")]
            if not isinstance(group, list) or len(group) < 2:
                self.err(p, f"must list at least two tables, got {got(group)}")
                continue
            names: list[str] = []
            for j, table in enumerate(group):
                if not isinstance(table, str):
                    self.err(f"{p}[{j}]", f"must be a table name, got {got(table)}")
                    continue
                key = table.lower()
                rule = tables.get(key)
                if rule is None:
                    self.err(f"{p}[{j}]", f"unknown table {table!r} (sharded tables: "
                                          f"{names_text(k for k, r in tables.items() if r.kind == 'sharded')})")
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
            return f"data sources differ ({names_text(a.datasources)} vs {names_text(b.datasources)})"
        for ds in a.datasources:
            if len(a.tables[ds]) != len(b.tables[ds]):
                return f"data source {ds} holds {len(a.tables[ds])} vs {len(b.tables[ds])} tables"
        for what in ("database_strategy", "table_strategy"):
            sa, sb = getattr(a, what), getattr(b, what)
            sig_a = None if sa is None else (sa.algorithm, canonical(sa.props))
            sig_b = None if sb is None else (sb.algorithm, canonical(sb.props))
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
