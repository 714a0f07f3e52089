"""Validation of sharding rules: data sources, table rules and their strategies (algorithms, boundaries, dates,
user classes), key generators, binding tables and physical-table collisions (the base of `ddm.config.validate`)."""

from __future__ import annotations

import dataclasses
import datetime
import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ddm.config.model import (
    ALGORITHM_PROPS,
    ALGORITHMS,
    COMPACT_DATASOURCE_KEYS,
    DATASOURCE_KEYS,
    HASH_FUNCTIONS,
    INTERVAL_UNITS,
    KEY_COLLATIONS,
    KEY_GENERATORS,
    SHARDED_TABLE_KEYS,
    SINGLE_TABLE_KEYS,
    TABLE_KEYS,
    DataSource,
    KeyGenerator,
    NodeConfig,
    ShardStrategy,
    TableRule,
    canonical,
    freeze,
)
from ddm.config.values import (
    ABSENT,
    NAME_RE,
    Values,
    got,
    join_path,
    names_text,
)


class RuleChecks(Values):
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
                return f"{what} differs ({strategy_text(sa)} vs {strategy_text(sb)})"
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


def strategy_text(s: ShardStrategy | None) -> str:
    if s is None:
        return "none"
    props = ", ".join(f"{k}={v}" for k, v in s.props.items())
    return f"{s.algorithm}({props})" if props else s.algorithm
