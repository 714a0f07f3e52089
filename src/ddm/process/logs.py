"""Structured single-line logs (logfmt) on stderr for the master and its workers.

    ts=2024-05-01T12:00:00.123Z level=info pid=4242 worker=master logger=ddm.process.master msg="worker exited" slot=1

Every record is exactly one line (newlines in messages and tracebacks are escaped) so journald and log shippers
never split or interleave records: each process writes whole lines with one write() to the shared stderr.

`get_logger(name)` returns an adapter that takes key=value fields as keyword arguments:
`log.info("worker exited", slot=1, code=-9)`. Plain `logging.getLogger(...)` loggers (e.g. ddm.process.server) go through the
same formatter. The level is process-wide and can be changed at runtime (`set_level`, control command `log-level`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}
_NAMES = {v: k for k, v in LEVELS.items()}

# "master" in the master process, the worker id in a worker (set right after fork).
_role = "master"
_handler: logging.Handler | None = None


def parse_level(level: str | int) -> int:
    """Map "debug"/"info"/"warning"/"error"/"critical" (any case, or "warn") or a logging int to a level."""
    if isinstance(level, int):
        return level
    name = level.strip().lower()
    if name == "warn":
        name = "warning"
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})")
    return LEVELS[name]


def level_name(level: int) -> str:
    return _NAMES.get(level, str(level))


def _quote(value: object) -> str:
    s = value if isinstance(value, str) else str(value)
    if s and not any(c in s for c in ' ="\\\n\r\t') and s.isprintable():
        return s
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{s}"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [f"ts={ts}", f"level={level_name(record.levelno)}", f"pid={record.process}",
                 f"worker={_role}", f"logger={record.name}", f"msg={_quote(record.getMessage())}"]
        fields = getattr(record, "kv", None)
        if fields:
            parts.extend(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class KVLogger(logging.LoggerAdapter):
    """`log.info("msg", key=value, ...)`: keyword arguments other than logging's own become logfmt fields."""

    _own = frozenset(("exc_info", "stack_info", "stacklevel", "extra"))

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in self._own}
        if fields:
            extra = dict(kwargs.get("extra") or {})
            extra["kv"] = {**extra.get("kv", {}), **fields}
            kwargs["extra"] = extra
        return msg, kwargs


def get_logger(name: str) -> KVLogger:
    return KVLogger(logging.getLogger(name), {})


def setup_logging(level: str | int = "info", role: str | int | None = None) -> None:
    """Install the logfmt handler on the root logger (idempotent) and set the level."""
    global _handler
    if role is not None:
        set_role(role)
    root = logging.getLogger()
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(LogfmtFormatter())
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(_handler)
    root.setLevel(parse_level(level))


def set_role(role: str | int) -> None:
    """Name this process in every record: "master" or a worker id."""
    global _role
    _role = str(role)


def set_level(level: str | int) -> str:
    """Change the level at runtime; returns the normalized level name."""
    lv = parse_level(level)
    logging.getLogger().setLevel(lv)
    return level_name(lv)


def current_level() -> str:
    return level_name(logging.getLogger().level)


def flush() -> None:
    """Flush handlers before os._exit() (which skips interpreter cleanup) so no record is lost."""
    if _handler is not None:
        _handler.flush()
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


__all__ = ["get_logger", "setup_logging", "set_level", "set_role", "current_level", "parse_level", "flush",
           "LogfmtFormatter", "KVLogger"]
