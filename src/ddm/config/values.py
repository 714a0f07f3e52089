"""Reading and checking configuration values: YAML with duplicate-key detection, durations, sizes, secrets,
paths, `${...}` expansion; `Values` collects every problem with its key path (the base of `ddm.config.validate`)."""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from ddm.config.expr import ExprError, expand

NAME_RE = re.compile(r"[^\s.`'\"]+\Z")
HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*\Z")
_SIZE = re.compile(r"\s*(\d+)\s*([KMG]i?B?|B)?\s*\Z", re.IGNORECASE)
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

ABSENT: Any = object()


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


def parse_yaml(text: str, label: str, problems: list[str]) -> Any:
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
# Validation


def join_path(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def got(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return repr(value)


def names_text(names: Iterable[str], limit: int = 8) -> str:
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
        raise ValueError(f"must be 'host:port', '[ipv6]:port' or a port number, got {got(value)}")
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
        if not HOST_RE.match(host):
            raise ValueError(f"cannot parse {text!r}: {host!r} is not a host name or address")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"cannot parse {text!r}: port must be an integer 0-65535, got {port_text!r}")
    return host, int(port_text)


class Values:
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
            self.err(path, f"must be a mapping, got {got(raw)}")
            return {}
        allowed = tuple(allowed)
        for key in raw:
            if not isinstance(key, str):
                self.err(path, f"keys must be strings, got {key!r}")
            elif key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
                self.err(join_path(path, key), f"unknown key ({hint})")
        for key in required:
            if raw.get(key) is None:
                self.err(join_path(path, key), "required key is missing")
        return {k: v for k, v in raw.items() if isinstance(k, str) and k in allowed}

    def named(self, raw: Any, path: str, what: str) -> dict[str, Any]:
        """A mapping of user-chosen names (nodes, databases, tables) to their definitions."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.err(path, f"must be a mapping of {what} names to definitions, got {got(raw)}")
            return {}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if not isinstance(key, str) or not NAME_RE.match(key):
                self.err(join_path(path, key), f"invalid {what} name {key!r} (no dots, quotes or spaces)")
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
            self.err(join_path(path, key), f"must be an integer{_range_text(lo, hi)}, got {got(m.get(key))}")
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
            self.err(join_path(path, key), f"must be a duration {need} (seconds, or e.g. '500ms', '30s', '5m', '1h'), "
                                       f"got {got(v)}")
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
            self.err(join_path(path, key), f"must be a size in bytes {lo}-{hi} (or e.g. '16M'), got {got(v)}")
            return default
        return n

    def string(self, m: Mapping[str, Any], key: str, path: str, default: Any,
               choices: tuple[str, ...] | None = None) -> Any:
        v = m.get(key)
        if v is None:
            return default
        if not isinstance(v, str) or not v.strip():
            self.err(join_path(path, key), f"must be a non-empty string, got {got(v)}")
            return default
        if choices is not None and v not in choices:
            close = difflib.get_close_matches(v, choices, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.err(join_path(path, key), f"unknown value {v!r} ({hint}expected one of {', '.join(choices)})")
            return default
        return v

    def boolean(self, m: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        v = m.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.err(join_path(path, key), f"must be true or false, got {got(v)}")
            return default
        return v

    def secret(self, m: Mapping[str, Any], key: str, path: str) -> str:
        """A password: a string; `${env:NAME}` references are replaced by the environment variable's value."""
        v = m.get(key)
        if v is None:
            return ""
        if not isinstance(v, str):
            self.err(join_path(path, key), f"must be a string (quote it in YAML), got {type(v).__name__}")
            return ""

        def sub(match: re.Match[str]) -> str:
            value = os.environ.get(match.group(1))
            if value is None:
                self.err(join_path(path, key), f"environment variable {match.group(1)} is not set")
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
            self.err(join_path(path, key), f"file not found: {resolved}")
        elif must_exist == "dir" and not os.path.isdir(resolved):
            self.err(join_path(path, key), f"directory not found: {resolved}")
        return resolved

    def expand(self, value: Any, path: str) -> tuple[str, ...]:
        if not isinstance(value, str) or not value.strip():
            self.err(path, f"must be a non-empty string, got {got(value)}")
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
