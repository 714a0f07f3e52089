"""Config loading and validation: the example rule files load, every class of mistake names its key path, and the
snapshot is immutable."""

from __future__ import annotations

import copy
import dataclasses
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml

from ddm.config import (
    ConfigError,
    diff_nodes,
    from_dict,
    load,
    load_text,
    parse_listen,
)

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "examples" / "rules"
EXAMPLES = ("sbtest-4x8.yaml", "sbtest-32x32.yaml", "orders.yaml")


def base() -> dict[str, Any]:
    """A minimal valid document with data nodes n0..n3."""
    return {
        "server": {"listen": "127.0.0.1:3307"},
        "users": [{"name": "ddm", "password": "ddm"}],
        "nodes": {f"n{i}": {"host": "127.0.0.1", "port": 3310 + i, "user": "ddm_node", "password": "x"}
                  for i in range(4)},
        "databases": {"app": {"node": "n0"}},
    }


def with_examples() -> dict[str, Any]:
    doc = base()
    for name in EXAMPLES:
        doc["databases"].update(yaml.safe_load((RULES / name).read_text())["databases"])
    return doc


def problems_of(doc: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_dict(doc)
    return info.value.problems


def sharded_db(tables: dict[str, Any], **extra: Any) -> dict[str, Any]:
    doc = base()
    doc["databases"]["sb"] = {"datasources": {"ds${0..3}": {"node": "n${0..3}", "database": "sb"}},
                              "tables": tables, **extra}
    return doc


# --- valid configurations ----------------------------------------------------------------------------------------

def test_minimal_config_and_defaults() -> None:
    cfg = from_dict(base())
    assert cfg.server.listen_host == "127.0.0.1" and cfg.server.listen_port == 3307
    assert cfg.server.workers == 0  # 0 = CPU count is kept as 0
    assert cfg.server.tls.enabled and cfg.server.tls.cert is None
    user = cfg.users["ddm"]
    assert user.auth_plugin == "caching_sha2_password" and user.databases == ("*",)
    n0 = cfg.nodes["n0"]
    assert (n0.primary.host, n0.primary.port, n0.user, n0.password) == ("127.0.0.1", 3310, "ddm_node", "x")
    assert n0.pool.max_size == 64 and n0.replicas == ()


def test_passthrough_database_is_one_datasource_named_after_the_node() -> None:
    doc = base()
    doc["databases"]["legacy"] = {"node": "n1", "database": "legacy_v2"}
    cfg = from_dict(doc)
    app, legacy = cfg.databases["app"], cfg.databases["legacy"]
    assert app.is_passthrough and dict(app.datasources) == {"n0": app.datasources["n0"]}
    assert app.datasources["n0"].database == "app"  # default: the logical name
    assert legacy.default_datasource == "n1" and legacy.datasources["n1"].database == "legacy_v2"


def test_all_examples_load_merged_into_a_base_config() -> None:
    cfg = from_dict(with_examples())
    assert list(cfg.databases) == ["app", "sbtest", "sbtest32", "shop"]

    sb = cfg.databases["sbtest"]
    assert list(sb.datasources) == ["ds0", "ds1", "ds2", "ds3"]
    assert [(d.node, d.database) for d in sb.datasources.values()] == [(f"n{i}", "sbtest") for i in range(4)]
    assert set(sb.tables) == {f"sbtest{i}" for i in range(1, 17)}
    r = sb.tables["sbtest3"]
    assert r.kind == "sharded" and r.datasources == ("ds0", "ds1", "ds2", "ds3")
    assert r.tables["ds2"] == tuple(f"sbtest3_{i}" for i in range(8))
    assert (r.database_strategy.algorithm, r.database_strategy.column) == ("mod", "id")
    assert r.table_strategy.algorithm == "two_level" and r.table_strategy.props["databases"] == 4
    assert r.key_generator.type == "segment" and r.key_generator.column == "id"

    s32 = cfg.databases["sbtest32"]
    assert len(s32.datasources) == 32
    assert [s32.datasources[f"sbtest_{i}"].node for i in range(8)] == ["n0", "n1", "n2", "n3"] * 2
    assert s32.datasources["sbtest_17"].database == "sbtest_17"
    r = s32.tables["sbtest1"]
    assert len(r.targets) == 1024 and r.tables["sbtest_31"][-1] == "sbtest1_31"
    assert r.table_strategy.props["databases"] == 32


def test_orders_example_table_kinds() -> None:
    shop = from_dict(with_examples()).databases["shop"]
    t = shop.tables
    assert t["orders"].binding_group == ("orders", "order_items") == t["order_items"].binding_group
    assert t["users"].binding_group == ()
    assert t["countries"].kind == "broadcast" and t["countries"].datasources == tuple(shop.datasources)
    assert all(t["countries"].tables[ds] == ("countries",) for ds in shop.datasources)
    assert t["settings"].kind == "single" and dict(t["settings"].tables) == {"ds1": ("settings",)}
    assert t["coupons"].database_strategy.props["boundaries"] == (1000000, 2000000, 3000000)
    assert t["sessions"].database_strategy.props["hash"] == "murmur3"
    audit = t["audit_log"]
    assert audit.datasources == ("ds2",) and len(audit.tables["ds2"]) == 24
    assert audit.tables["ds2"][0] == "audit_log_202401" and audit.tables["ds2"][-1] == "audit_log_202512"
    assert dict(audit.table_strategy.props) == {"unit": "month", "start": "2024-01-01", "step": 1}


def test_examples_load_through_include(tmp_path: Path) -> None:
    doc = base()
    doc["include"] = [str(RULES / name) for name in EXAMPLES]
    main = tmp_path / "ddm.yaml"
    main.write_text(yaml.safe_dump(doc))
    cfg = load(str(main))
    assert cfg.source == str(main) and set(cfg.databases) == {"app", "sbtest", "sbtest32", "shop"}
    assert cfg.digest() == from_dict(with_examples()).digest()


def test_include_duplicate_database(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("databases:\n  app: {node: n1}\n")
    doc = base()
    doc["include"] = "rules.yaml"
    main = tmp_path / "ddm.yaml"
    main.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as info:
        load(str(main))
    assert info.value.problems == ["include.databases.app: database 'app' is already defined in this file"]


def test_table_lookup_is_case_insensitive() -> None:
    doc = sharded_db({"Orders": {"nodes": "ds${0..3}.Orders_${0..1}",
                                 "database_strategy": {"column": "User_ID", "algorithm": "mod"},
                                 "table_strategy": {"column": "USER_ID", "algorithm": "two_level"}}})
    db = from_dict(doc).databases["sb"]
    assert list(db.tables) == ["orders"]
    rule = db.rule("ORDERS")
    assert rule is db.rule("orders") and rule.name == "orders"
    assert rule.tables["ds0"] == ("Orders_0", "Orders_1")  # physical names keep their spelling
    assert rule.database_strategy.column == "user_id" and rule.table_strategy.column == "user_id"
    assert db.rule("missing") is None


def test_explicit_node_list_groups_by_datasource_in_order() -> None:
    doc = sharded_db({"t": {"nodes": ["ds1.t_0", "ds0.t_0", "ds1.t_1", "ds0.t_${1..2}"],
                            "database_strategy": {"column": "id", "algorithm": "mod"},
                            "table_strategy": {"column": "id", "algorithm": "mod"}}})
    rule = from_dict(doc).databases["sb"].tables["t"]
    assert rule.datasources == ("ds1", "ds0")
    assert dict(rule.tables) == {"ds1": ("t_0", "t_1"), "ds0": ("t_0", "t_1", "t_2")}


def test_default_nodes_and_single_default() -> None:
    doc = sharded_db({"t": {"database_strategy": {"column": "id", "algorithm": "hash_mod"}}, "s": {}},
                     default_datasource="ds2")
    db = from_dict(doc).databases["sb"]
    assert db.default_datasource == "ds2"
    assert db.tables["t"].targets[1].datasource == "ds1" and db.tables["t"].tables["ds1"] == ("t",)
    assert db.tables["t"].database_strategy.props["hash"] == "crc32"
    assert db.tables["t"].database_strategy.props["key_collation"] == "ci"  # string keys compare like general_ci
    assert db.tables["s"].kind == "single" and db.tables["s"].datasources == ("ds2",)


def test_key_collation_reaches_every_hash_mod_strategy() -> None:
    h = {"column": "k", "algorithm": "hash_mod"}
    doc = sharded_db({
        "b": {"nodes": "ds${0..3}.b_${0..1}", "database_strategy": {**h, "hash": "murmur3"}, "table_strategy": h,
              "key_collation": "binary"},
        "m": {"nodes": "ds${0..3}.m_${0..1}", "database_strategy": h, "table_strategy": {**MOD, "column": "k"}},
    })
    t = from_dict(doc).databases["sb"].tables
    assert dict(t["b"].database_strategy.props) == {"hash": "murmur3", "key_collation": "binary"}
    assert dict(t["b"].table_strategy.props) == {"hash": "crc32", "key_collation": "binary"}
    assert dict(t["m"].database_strategy.props) == {"hash": "crc32", "key_collation": "ci"}
    assert dict(t["m"].table_strategy.props) == {}  # integer algorithms do not carry it


def test_compact_datasources_round_robin() -> None:
    doc = base()
    doc["databases"]["big"] = {"datasources": {"names": "p${0..5}", "nodes": ["n0", "n1"],
                                               "database": "big_${0..5}"}}
    db = from_dict(doc).databases["big"]
    assert [(d.name, d.node, d.database) for d in db.datasources.values()] == [
        (f"p{i}", f"n{i % 2}", f"big_{i}") for i in range(6)]
    assert db.default_datasource == "p0" and db.is_passthrough


def test_class_strategy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_sharding.py").write_text(textwrap.dedent("""
        class ByTenant:
            def __init__(self, salt=0):
                self.salt = salt
            def index(self, value, n):
                return (value + self.salt) % n
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = sharded_db({"t": {"database_strategy": {"column": "tenant", "algorithm": "class",
                                                  "class": "my_sharding:ByTenant", "props": {"salt": 3}}}})
    rule = from_dict(doc).databases["sb"].tables["t"]
    assert dict(rule.database_strategy.props) == {"class": "my_sharding:ByTenant", "salt": 3}


def test_listen_forms() -> None:
    assert parse_listen("0.0.0.0:3307") == ("0.0.0.0", 3307)
    assert parse_listen("[::1]:3307") == ("::1", 3307)
    assert parse_listen(4000) == ("127.0.0.1", 4000)
    assert parse_listen("4000") == ("127.0.0.1", 4000)
    assert parse_listen("db.example.com:0") == ("db.example.com", 0)


def test_tls_files_resolved_against_config_dir(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    doc = base()
    doc["server"]["tls"] = {"cert": "c.pem", "key": "k.pem", "require": True}
    main = tmp_path / "ddm.yaml"
    main.write_text(yaml.safe_dump(doc))
    cfg = load(str(main))
    assert cfg.server.tls.cert == str(tmp_path / "c.pem") and cfg.server.tls.require
    before = cfg.digest()
    (tmp_path / "c.pem").write_text("rotated")
    assert cfg.digest() != before  # certificate rotation counts as a change


def test_env_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDM_TEST_PW", "s3cret")
    monkeypatch.delenv("DDM_TEST_MISSING", raising=False)
    doc = base()
    doc["users"][0]["password"] = "${env:DDM_TEST_PW}"
    doc["nodes"]["n0"]["password"] = "pre-${env:DDM_TEST_PW}"
    cfg = from_dict(doc)
    assert cfg.users["ddm"].password == "s3cret" and cfg.nodes["n0"].password == "pre-s3cret"
    doc["nodes"]["n1"]["password"] = "${env:DDM_TEST_MISSING}"
    assert problems_of(doc) == ["nodes.n1.password: environment variable DDM_TEST_MISSING is not set"]


def test_durations_and_sizes() -> None:
    doc = base()
    doc["server"].update(max_packet_size="16M", drain_timeout="2m")
    doc["nodes"]["n0"]["pool"] = {"acquire_timeout": "500ms", "idle_timeout": 60, "max_lifetime": "1h"}
    cfg = from_dict(doc)
    assert cfg.server.max_packet_size == 16 << 20 and cfg.server.drain_timeout == 120.0
    pool = cfg.nodes["n0"].pool
    assert (pool.acquire_timeout, pool.idle_timeout, pool.max_lifetime) == (0.5, 60.0, 3600.0)
    assert cfg.server.cross_node_lock_wait == 2.0  # the default
    doc["server"]["cross_node_lock_wait"] = "500ms"
    assert from_dict(doc).server.cross_node_lock_wait == 0.5
    doc["server"]["cross_node_lock_wait"] = 0  # off: the nodes' innodb_lock_wait_timeout applies
    assert from_dict(doc).server.cross_node_lock_wait == 0.0
    doc["server"]["cross_node_lock_wait"] = "soon"
    assert any(p.startswith("server.cross_node_lock_wait") for p in problems_of(doc))


# --- mistakes: each names its key path ---------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def apply(doc: dict[str, Any]) -> None:
        keys = path.split(".")
        target: Any = doc
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        if isinstance(target, list):
            target[int(keys[-1])] = value
        else:
            target[keys[-1]] = value
    return apply


def _del(path: str) -> Mutation:
    def apply(doc: dict[str, Any]) -> None:
        *head, last = path.split(".")
        target: Any = doc
        for k in head:
            target = target[k]
        del target[last]
    return apply


def _sb(tables: dict[str, Any], **extra: Any) -> Mutation:
    def apply(doc: dict[str, Any]) -> None:
        doc["databases"]["sb"] = sharded_db(tables, **extra)["databases"]["sb"]
    return apply


MOD = {"column": "id", "algorithm": "mod"}
TWO = {"column": "id", "algorithm": "two_level"}
HASH = {"column": "id", "algorithm": "hash_mod"}

MISTAKES: list[tuple[str, Mutation, str]] = [
    ("port type", _set("nodes.n1.port", "abc"), "nodes.n1.port: must be an integer 1-65535, got 'abc'"),
    ("port range", _set("nodes.n1.port", 70000), "nodes.n1.port: must be an integer 1-65535, got 70000"),
    ("port bool", _set("nodes.n1.port", True), "nodes.n1.port: must be an integer 1-65535, got True"),
    ("unknown key", _set("server.listn", "x"), "server.listn: unknown key (did you mean 'listen'?)"),
    ("unknown top key", _set("nodez", {}), "nodez: unknown key (did you mean 'nodes'?)"),
    ("missing users", _del("users"), "users: required key is missing"),
    ("missing nodes", _del("nodes"), "nodes: required key is missing"),
    ("empty users", _set("users", []), "users: at least one user is required"),
    ("missing node user", _del("nodes.n2.user"), "nodes.n2.user: required key is missing"),
    ("unknown node", _set("databases.app.node", "n9"), "databases.app.node: unknown node 'n9' (defined: n0, n1, n2, n3)"),
    ("node wrong type", _set("nodes.n0", ["x"]), "nodes.n0: must be a mapping, got a list"),
    ("listen ipv6", _set("server.listen", "::1:3307"),
     "server.listen: cannot parse '::1:3307': IPv6 addresses need brackets, e.g. '[::1]:3307'"),
    ("listen port", _set("server.listen", "host:99999"),
     "server.listen: cannot parse 'host:99999': port must be an integer 0-65535, got '99999'"),
    ("listen junk", _set("server.listen", "localhost"),
     "server.listen: cannot parse 'localhost': expected 'host:port' or a port number"),
    ("listen bad v6", _set("server.listen", "[zz]:1"), "server.listen: cannot parse '[zz]:1': 'zz' is not an IPv6 address"),
    ("workers", _set("server.workers", -1), "server.workers: must be an integer 0-1024, got -1"),
    ("read_timeout", _set("nodes.n0.pool", {"read_timeout": "-2"}),
     "nodes.n0.pool.read_timeout: must be a duration >= 0 (seconds, or e.g. '500ms', '30s', '5m', '1h'), got '-2'"),
    ("connect_timeout", _set("server.connect_timeout", 0),
     "server.connect_timeout: must be a duration > 0 (seconds, or e.g. '500ms', '30s', '5m', '1h'), got 0"),
    ("handshake packet", _set("server.max_handshake_packet_size", "100"),
     "server.max_handshake_packet_size: must be a size in bytes 1024-16777215 (or e.g. '16M'), got '100'"),
    ("unauthenticated", _set("server.max_unauthenticated_per_address", 0),
     "server.max_unauthenticated_per_address: must be an integer >= 1, got 0"),
    ("long data", _set("server.max_long_data_size", "2G"),
     "server.max_long_data_size: must be a size in bytes 1024-1073741824 (or e.g. '16M'), got '2G'"),
    ("login delay", _set("server.login_failure_delay", "-1s"),
     "server.login_failure_delay: must be a duration >= 0 (seconds, or e.g. '500ms', '30s', '5m', '1h'), got '-1s'"),
    ("log level", _set("server.log_level", "verbose"),
     "server.log_level: unknown value 'verbose' (expected one of debug, info, warning, error, critical)"),
    ("bool", _set("server.watch_config", "yes please"), "server.watch_config: must be true or false, got 'yes please'"),
    ("tls half", _set("server.tls", {"key": __file__}),
     "server.tls: cert and key must be given together (key is set, cert is not)"),
    ("tls missing file", _set("server.tls", {"cert": "/nonexistent/c.pem", "key": __file__}),
     "server.tls.cert: file not found: /nonexistent/c.pem"),
    ("tls require disabled", _set("server.tls", {"enabled": False, "require": True}),
     "server.tls.require: cannot require TLS when tls.enabled is false"),
    ("duplicate user", _set("users", [{"name": "a"}, {"name": "b"}, {"name": "a"}]),
     "users[2].name: duplicate user name 'a' (also users[0])"),
    ("auth plugin", _set("users.0.auth_plugin", "sha256_password"),
     "users[0].auth_plugin: unknown value 'sha256_password' (did you mean 'caching_sha2_password'? expected one of "
     "mysql_native_password, caching_sha2_password)"),
    ("user database", _set("users.0.databases", ["app", "nope"]),
     "users[0].databases[1]: unknown database 'nope' (defined: app)"),
    ("numeric password", _set("users.0.password", 1234), "users[0].password: must be a string (quote it in YAML), got int"),
    ("pool sizes", _set("nodes.n0.pool", {"min_size": 9, "max_size": 4}),
     "nodes.n0.pool.min_size: must not exceed max_size (9 > 4)"),
    ("pool duration", _set("nodes.n0.pool", {"idle_timeout": "soon"}),
     "nodes.n0.pool.idle_timeout: must be a duration > 0 (seconds, or e.g. '500ms', '30s', '5m', '1h'), got 'soon'"),
    ("statement idle timeout", _set("nodes.n0.pool", {"statement_idle_timeout": 0}),
     "nodes.n0.pool.statement_idle_timeout: must be a duration > 0 (seconds, or e.g. '500ms', '30s', '5m', '1h'), "
     "got 0"),
    ("replica same as primary", _set("nodes.n0.replicas", [{"host": "127.0.0.1", "port": 3310}]),
     "nodes.n0.replicas[0]: same server as the primary"),
    ("algorithm", _sb({"sbtest1": {"nodes": "ds${0..3}.t", "database_strategy": {"column": "id", "algorithm": "modd"}}}),
     "databases.sb.tables.sbtest1.database_strategy.algorithm: unknown algorithm 'modd' (expected one of mod, "
     "hash_mod, range, interval, two_level, class)"),
    ("strategy column", _sb({"t": {"database_strategy": {"algorithm": "mod"}}}),
     "databases.sb.tables.t.database_strategy.column: required key is missing"),
    ("prop of other algorithm", _sb({"t": {"database_strategy": {**MOD, "hash": "crc32"}}}),
     "databases.sb.tables.t.database_strategy.hash: unknown key (expected one of column, algorithm)"),
    ("hash name", _sb({"t": {"database_strategy": {"column": "id", "algorithm": "hash_mod", "hash": "md5"}}}),
     "databases.sb.tables.t.database_strategy.hash: unknown value 'md5' (expected one of crc32, murmur3)"),
    ("range not increasing", _sb({"t": {"database_strategy": {"column": "id", "algorithm": "range",
                                                              "boundaries": [10, 30, 20]}}}),
     "databases.sb.tables.t.database_strategy.boundaries[2]: boundaries must be strictly increasing: 20 comes "
     "after 30"),
    ("range count", _sb({"t": {"database_strategy": {"column": "id", "algorithm": "range", "boundaries": [10, 20]}}}),
     "databases.sb.tables.t.database_strategy.boundaries: 2 boundaries make 3 shards, but the table spans 4 data "
     "sources (need one more than boundaries)"),
    ("range table count", _sb({"t": {"nodes": "ds0.t_${0..1}", "table_strategy": {
        "column": "id", "algorithm": "range", "boundaries": [10, 20, 30]}}}),
     "databases.sb.tables.t.table_strategy.boundaries: 3 boundaries make 4 shards, but data source ds0 holds 2 "
     "tables (need one more than boundaries)"),
    ("range types", _sb({"t": {"database_strategy": {"column": "id", "algorithm": "range",
                                                     "boundaries": [1, "x", 3]}}}),
     "databases.sb.tables.t.database_strategy.boundaries: boundaries must be numbers, got 'x'"),
    ("interval start", _sb({"t": {"nodes": "ds0.t_${0..11}", "table_strategy": {
        "column": "d", "algorithm": "interval", "unit": "month", "start": "2024-13-01"}}}),
     "databases.sb.tables.t.table_strategy.start: must be a date YYYY-MM-DD, got '2024-13-01'"),
    ("interval unit", _sb({"t": {"nodes": "ds0.t_${0..11}", "table_strategy": {
        "column": "d", "algorithm": "interval", "start": "2024-01-01"}}}),
     "databases.sb.tables.t.table_strategy.unit: required key is missing (one of day, month, year)"),
    ("class import", _sb({"t": {"database_strategy": {"column": "id", "algorithm": "class",
                                                      "class": "no_such_pkg.mod:Cls"}}}),
     "databases.sb.tables.t.database_strategy.class: cannot import 'no_such_pkg.mod': ModuleNotFoundError: No "
     "module named 'no_such_pkg'"),
    ("class attr", _sb({"t": {"database_strategy": {"column": "id", "algorithm": "class", "class": "os:NoSuch"}}}),
     "databases.sb.tables.t.database_strategy.class: module 'os' has no attribute 'NoSuch'"),
    ("class no index", _sb({"t": {"database_strategy": {"column": "id", "algorithm": "class", "class": "os:getcwd"}}}),
     "databases.sb.tables.t.database_strategy.class: 'os:getcwd' must be a class with an index(value, n) method"),
    ("class spec", _sb({"t": {"database_strategy": {"column": "id", "algorithm": "class", "class": "os.path"}}}),
     "databases.sb.tables.t.database_strategy.class: must be 'package.module:ClassName', got 'os.path'"),
    ("two_level as database strategy", _sb({"t": {"database_strategy": TWO}}),
     "databases.sb.tables.t.database_strategy.algorithm: two_level is only valid as a table_strategy (key / data "
     "sources % tables); use mod for the database_strategy"),
    ("two_level uneven", _sb({"t": {"nodes": ["ds0.t_${0..3}", "ds1.t_${0..2}"], "database_strategy": MOD,
                                    "table_strategy": TWO}}),
     "databases.sb.tables.t.table_strategy: two_level needs the same number of tables in every data source, got "
     "data source ds0 holds 4 tables, data source ds1 holds 3 tables"),
    ("two_level with hash db strategy", _sb({"t": {"nodes": "ds${0..3}.t_${0..1}", "table_strategy": TWO,
                                                   "database_strategy": {"column": "id", "algorithm": "hash_mod"}}}),
     "databases.sb.tables.t.table_strategy: two_level expects database_strategy mod on the same column (id)"),
    ("missing database strategy", _sb({"t": {"nodes": "ds${0..1}.t"}}),
     "databases.sb.tables.t: spans 2 data sources (ds0, ds1) but has no database_strategy"),
    ("missing table strategy", _sb({"t": {"nodes": "ds0.t_${0..7}"}}),
     "databases.sb.tables.t: data source ds0 holds 8 tables but there is no table_strategy"),
    ("unknown datasource in nodes", _sb({"t": {"nodes": "ds${3..4}.t", "database_strategy": MOD}}),
     "databases.sb.tables.t.nodes: unknown data source 'ds4' in 'ds4.t' (defined: ds0, ds1, ds2, ds3)"),
    ("node without dot", _sb({"t": {"nodes": "t_0"}}),
     "databases.sb.tables.t.nodes: expected 'datasource.table', got 't_0'"),
    ("bad expression", _sb({"t": {"nodes": "ds0.t_${0..}"}}),
     "databases.sb.tables.t.nodes: cannot expand ${0..} in 'ds0.t_${0..}': expected ${a..b} or ${[x, y]}"),
    ("duplicate physical", _sb({"t": {"nodes": ["ds0.t_0", "ds0.t_0"]}}),
     "databases.sb.tables.t.nodes: 'ds0.t_0' is listed twice"),
    ("tables collide", _sb({"a": {"nodes": "ds0.x"}, "b": {"datasource": "ds0", "table": "X"}}),
     "databases.sb.tables.b: physical table ds0.X is also used by table 'a'"),
    ("case-duplicate table", _sb({"t": {}, "T": {}}),
     "databases.sb.tables.T: table 'T' is defined twice (also as 't'; names are case-insensitive)"),
    ("broadcast with nodes", _sb({"c": {"broadcast": True, "nodes": "ds0.c"}}),
     "databases.sb.tables.c.nodes: not allowed for a broadcast table (it has a copy in every data source)"),
    ("single unknown datasource", _sb({"s": {"datasource": "ds7"}}),
     "databases.sb.tables.s.datasource: unknown data source 'ds7' (defined: ds0, ds1, ds2, ds3)"),
    ("single and sharded", _sb({"s": {"datasource": "ds1", "nodes": "ds1.s"}}),
     "databases.sb.tables.s.datasource: only for single tables; a sharded table lists its physical tables in "
     "'nodes'"),
    ("default datasource", _sb({}, default_datasource="ds9"),
     "databases.sb.default_datasource: unknown data source 'ds9' (defined: ds0, ds1, ds2, ds3)"),
    ("key generator type", _sb({"t": {"key_generator": {"column": "id", "type": "uuid"}}}),
     "databases.sb.tables.t.key_generator.type: unknown value 'uuid' (expected one of snowflake, segment)"),
    ("key generator worker", _sb({"t": {"key_generator": {"column": "id", "worker_id": 5000}}}),
     "databases.sb.tables.t.key_generator.worker_id: must be an integer 0-1023, got 5000"),
    ("binding layout", _sb({"a": {"nodes": "ds${0..3}.a_${0..1}", "database_strategy": MOD, "table_strategy": TWO},
                            "b": {"nodes": "ds${0..3}.b_${0..3}", "database_strategy": MOD, "table_strategy": TWO}},
                           binding_tables=[["a", "b"]]),
     "databases.sb.binding_tables[0][1]: 'b' cannot be bound to 'a': data source ds0 holds 2 vs 4 tables"),
    ("binding strategy", _sb({"a": {"nodes": "ds${0..3}.a", "database_strategy": MOD},
                              "b": {"nodes": "ds${0..3}.b", "database_strategy": {"column": "id",
                                                                                  "algorithm": "hash_mod"}}},
                             binding_tables=[["a", "b"]]),
     "databases.sb.binding_tables[0][1]: 'b' cannot be bound to 'a': database_strategy differs (mod vs "
     "hash_mod(hash=crc32, key_collation=ci))"),
    ("binding key collation", _sb({"a": {"nodes": "ds${0..3}.a", "database_strategy": HASH},
                                   "b": {"nodes": "ds${0..3}.b", "database_strategy": HASH,
                                         "key_collation": "binary"}},
                                  binding_tables=[["a", "b"]]),
     "databases.sb.binding_tables[0][1]: 'b' cannot be bound to 'a': database_strategy differs "
     "(hash_mod(hash=crc32, key_collation=ci) vs hash_mod(hash=crc32, key_collation=binary))"),
    ("key collation value", _sb({"t": {"database_strategy": HASH, "key_collation": "utf8mb4_bin"}}),
     "databases.sb.tables.t.key_collation: unknown value 'utf8mb4_bin' (expected one of ci, binary)"),
    ("key collation type", _sb({"t": {"database_strategy": HASH, "key_collation": True}}),
     "databases.sb.tables.t.key_collation: must be a non-empty string, got True"),
    ("key collation without hash_mod", _sb({"t": {"nodes": "ds${0..3}.t_${0..1}", "database_strategy": MOD,
                                                  "table_strategy": TWO, "key_collation": "binary"}}),
     "databases.sb.tables.t.key_collation: has no effect: only hash_mod hashes string keys, this table uses mod "
     "and two_level"),
    ("key collation without strategy", _sb({"t": {"nodes": "ds1.t", "key_collation": "ci"}}),
     "databases.sb.tables.t.key_collation: has no effect: only hash_mod hashes string keys, this table has no "
     "strategy"),
    ("key collation broadcast", _sb({"c": {"broadcast": True, "key_collation": "ci"}}),
     "databases.sb.tables.c.key_collation: only for sharded tables (it says how hash_mod compares string shard "
     "keys)"),
    ("key collation single", _sb({"s": {"datasource": "ds1", "key_collation": "binary"}}),
     "databases.sb.tables.s.key_collation: only for sharded tables (it says how hash_mod compares string shard "
     "keys)"),
    ("binding datasources", _sb({"a": {"nodes": "ds${0..3}.a", "database_strategy": MOD},
                                 "b": {"nodes": "ds${0..1}.b", "database_strategy": MOD}},
                                binding_tables=[["a", "b"]]),
     "databases.sb.binding_tables[0][1]: 'b' cannot be bound to 'a': data sources differ (ds0, ds1, ds2, ds3 vs "
     "ds0, ds1)"),
    ("binding broadcast", _sb({"a": {"nodes": "ds${0..3}.a", "database_strategy": MOD}, "c": {"broadcast": True}},
                              binding_tables=[["a", "c"]]),
     "databases.sb.binding_tables[0][1]: 'c' is a broadcast table; only sharded tables can be bound"),
    ("binding unknown", _sb({"a": {"nodes": "ds${0..3}.a", "database_strategy": MOD}},
                            binding_tables=[["a", "zz"]]),
     "databases.sb.binding_tables[0][1]: unknown table 'zz' (sharded tables: a)"),
    ("datasource count mismatch", _sb({}, datasources={"ds${0..3}": {"node": "n${0..1}"}}),
     "databases.sb.datasources.ds${0..3}.node: expands to 2 values but the key expands to 4 data sources (need 1 "
     "or the same number)"),
    ("datasource unknown node", _sb({}, datasources={"ds${0..1}": {"node": "n${3..4}"}}),
     "databases.sb.datasources.ds${0..1}.node: unknown node 'n4' (defined: n0, n1, n2, n3)"),
    ("same physical database", _sb({}, datasources={"ds${0..1}": {"node": "n0", "database": "sb"}}),
     "databases.sb.datasources.ds${0..1}: data source 'ds1' uses the same physical database as 'ds0' (n0/sb)"),
    ("shared physical database", _sb({}, datasources={"names": "ds${0..4}", "nodes": ["n0", "n1", "n2", "n3"],
                                                      "database": "sb"}),
     "databases.sb.datasources: data source 'ds4' uses the same physical database as 'ds0' (n0/sb)"),
    ("passthrough plus sharded keys", _set("databases.app", {"node": "n0", "tables": {}}),
     "databases.app.tables: not allowed with 'node' (pass-through form); use datasources instead"),
    ("sharded without datasources", _set("databases.app", {"tables": {}}),
     "databases.app.datasources: required key is missing"),
]


@pytest.mark.parametrize(("mutate", "expected"), [(m, e) for _, m, e in MISTAKES], ids=[n for n, _, _ in MISTAKES])
def test_mistake_is_reported_with_its_key_path(mutate: Mutation, expected: str) -> None:
    doc = copy.deepcopy(base())
    mutate(doc)
    problems = problems_of(doc)
    assert expected in problems, "\n".join(problems)


def test_all_problems_are_collected_at_once() -> None:
    doc = base()
    doc["server"]["listn"] = 1
    doc["nodes"]["n1"]["port"] = "abc"
    doc["databases"]["app"]["node"] = "n9"
    doc["users"].append({"name": "ddm"})
    problems = problems_of(doc)
    assert problems == [
        "server.listn: unknown key (did you mean 'listen'?)",
        "nodes.n1.port: must be an integer 1-65535, got 'abc'",
        "databases.app.node: unknown node 'n9' (defined: n0, n1, n2, n3)",
        "users[1].name: duplicate user name 'ddm' (also users[0])",
    ]
    with pytest.raises(ConfigError) as info:
        from_dict(doc, "/etc/ddm.yaml")
    text = str(info.value)
    assert text.startswith("invalid configuration /etc/ddm.yaml:\n") and "  nodes.n1.port:" in text


def test_cascading_noise_is_suppressed() -> None:
    # A bad node reference in a data source must not also make every table "use an unknown data source".
    doc = sharded_db({"t": {"nodes": "ds${0..3}.t_${0..1}", "database_strategy": MOD, "table_strategy": TWO}})
    doc["databases"]["sb"]["datasources"] = {"ds${0..3}": {"node": "n${1..4}"}}
    assert problems_of(doc) == ["databases.sb.datasources.ds${0..3}.node: unknown node 'n4' (defined: n0, n1, n2, n3)"]


# --- YAML-level mistakes -----------------------------------------------------------------------------------------

def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("server:\n  listen: [1\nusers: []\n", "x.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("yaml line 3, column ") and "line 2, column 11" in problem


def test_yaml_tab_indentation() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("server:\n\tlisten: 1\n")
    assert info.value.problems[0].startswith("yaml line 2, column 1: ")
    assert info.value.problems[0].endswith("YAML does not allow tabs for indentation")


def test_yaml_duplicate_keys_are_reported() -> None:
    text = "users: [{name: a}]\nnodes:\n  n0: {user: u}\n  n0: {user: v}\n"
    with pytest.raises(ConfigError) as info:
        load_text(text)
    assert info.value.problems == ["yaml line 4, column 3: duplicate key 'n0' (first at line 3)"]


def test_yaml_merge_keys_may_be_overridden() -> None:
    text = textwrap.dedent("""
        users: [{name: a}]
        nodes:
          n0: &node {user: u, port: 3310}
          n1: {<<: *node, port: 3311}
    """)
    cfg = load_text(text)
    assert cfg.nodes["n1"].primary.port == 3311 and cfg.nodes["n1"].user == "u"


def test_top_level_not_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("- a\n- b\n")
    assert info.value.problems == [
        "(file): the top level must be a mapping (server, users, nodes, databases), got a list"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path / "missing.yaml"))
    assert "cannot read" in info.value.problems[0]


# --- immutability, digest, diff ----------------------------------------------------------------------------------

def _walk(obj: Any, path: str = "config") -> list[str]:
    """Paths of every mutable container reachable from a snapshot."""
    bad: list[str] = []
    if isinstance(obj, (list, dict, set, bytearray)):
        bad.append(f"{path}: {type(obj).__name__}")
    elif dataclasses.is_dataclass(obj):
        assert type(obj).__dataclass_params__.frozen, f"{path}: {type(obj).__name__} is not frozen"  # type: ignore[attr-defined]
        for f in dataclasses.fields(obj):
            bad += _walk(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, MappingProxyType):
        for k, v in obj.items():
            bad += _walk(v, f"{path}[{k!r}]")
    elif isinstance(obj, (tuple, frozenset)):
        for i, v in enumerate(obj):
            bad += _walk(v, f"{path}[{i}]")
    return bad


def _class_doc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (tmp_path / "frz_shard.py").write_text("class C:\n    def __init__(self, **kw): pass\n"
                                           "    def index(self, v, n): return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = with_examples()
    doc["databases"]["sb"] = sharded_db({"t": {"database_strategy": {
        "column": "id", "algorithm": "class", "class": "frz_shard:C",
        "props": {"weights": [1, 2], "nested": {"a": [3]}}}}})["databases"]["sb"]
    doc["nodes"]["n0"]["replicas"] = [{"host": "10.0.0.2", "port": 3306}]
    return doc


def test_snapshot_is_deeply_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = from_dict(_class_doc(tmp_path, monkeypatch))
    assert _walk(cfg) == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.listen_port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.nodes["n0"].pool.max_size = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.nodes["n9"] = cfg.nodes["n0"]  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.databases["shop"].tables["orders"].tables["ds0"] = ()  # type: ignore[index]
    props = cfg.databases["sb"].tables["t"].database_strategy.props
    assert props["weights"] == (1, 2) and props["nested"]["a"] == (3,)
    with pytest.raises(TypeError):
        props["nested"]["a"] = 1  # type: ignore[index]


def test_digest_is_stable_and_content_sensitive() -> None:
    a, b = from_dict(with_examples()), from_dict(with_examples())
    assert a.digest() == b.digest() and len(a.digest()) == 64
    assert a.with_generation(7).digest() == a.digest()
    assert dataclasses.replace(a, source="/elsewhere").digest() == a.digest()
    doc = with_examples()
    doc["databases"]["shop"]["tables"]["coupons"]["database_strategy"]["boundaries"] = [1, 2, 3]
    assert from_dict(doc).digest() != a.digest()
    doc = with_examples()
    doc["nodes"]["n3"]["pool"] = {"max_size": 8}
    assert from_dict(doc).digest() != a.digest()


def test_diff_nodes() -> None:
    old = from_dict(base())
    doc = base()
    del doc["nodes"]["n1"]
    doc["nodes"]["n2"]["port"] = 4000
    doc["nodes"]["n7"] = {"user": "u"}
    new = from_dict(doc)
    assert diff_nodes(old, new) == (("n7",), ("n1",), ("n2",))
    assert diff_nodes(old.nodes, old.nodes) == ((), (), ())

