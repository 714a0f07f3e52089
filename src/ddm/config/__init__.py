"""The configuration plane: one YAML file -> a frozen, validated `Config` snapshot.

`load(path)` / `load_text(text)` / `from_dict(data)` return a `Config` or raise `ConfigError` naming every problem
with its key path; `diff_nodes(old, new)` tells which data nodes a reload changes. The snapshot's types are in
`ddm.config.model`, the checks in `ddm.config.validate` (on `ddm.config.values`), `${a..b}` in `ddm.config.expr`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ddm.config.model import (
    PRIVILEGES,
    Config,
    ConfigError,
    DatabaseConfig,
    DataSource,
    EndpointConfig,
    KeyGenerator,
    NodeConfig,
    PhysicalTable,
    PipelineConfig,
    PoolConfig,
    ServerConfig,
    ShardStrategy,
    TableRule,
    TLSConfig,
    UserConfig,
)
from ddm.config.validate import Checker
from ddm.config.values import parse_listen, parse_yaml

__all__ = [
    "PRIVILEGES", "Config", "ConfigError", "DataSource", "DatabaseConfig", "EndpointConfig", "KeyGenerator",
    "NodeConfig", "PhysicalTable", "PipelineConfig", "PoolConfig", "ServerConfig", "ShardStrategy", "TLSConfig",
    "TableRule", "UserConfig", "diff_nodes", "from_dict", "load", "load_text", "parse_listen",
]


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
    data = parse_yaml(text, "", problems)
    if problems:
        raise ConfigError(problems, source)
    return from_dict(data, source)


def from_dict(data: Any, source: str = "") -> Config:
    """Validate an already parsed document (what yaml.safe_load returns) and freeze it into a Config."""
    base_dir = os.path.dirname(os.path.abspath(source)) if source else os.getcwd()
    checker = Checker(base_dir)
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
