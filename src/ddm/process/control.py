"""The control socket: `ddm reload`, `ddm status`, `ddm log-level`, `ddm upgrade` talk to the running master.

A unix stream socket, one JSON object per line each way:

    {"cmd": "reload"}                        -> {"ok": true, "generation": n, "workers": k}
                                                or {"ok": false, "problems": ["key.path: reason", ...]}
    {"cmd": "status"}                        -> {"ok": true, "pid": ..., "generation": ..., "workers": [...], ...}
    {"cmd": "log-level", "level": "debug"}   -> {"ok": true, "level": "debug"}
    {"cmd": "upgrade"}                       -> {"ok": true, "pid": <new master>}   (spawns `ddm-server --takeover`)

Path: `server.control_socket`, or derived from the config file path: /etc/ddm/ddm.yaml -> /etc/ddm/ddm.sock. The CLI
reads only `server.control_socket` from the file (not a full load), so `ddm reload` still finds the server when the
edited file is invalid, and then prints the master's list of problems.

`add_subcommands(subparsers)` registers the subcommands on the `ddm` CLI; each sets `func(args) -> int` (exit code).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

DEFAULT_TIMEOUT = 120.0  # a reload waits for every worker's acknowledgement


def derive_control_path(config_path: str) -> str:
    return os.path.splitext(os.path.abspath(config_path))[0] + ".sock"


def control_path(config_path: str, configured: str | None = None) -> str:
    if configured:
        return os.path.abspath(configured)
    return derive_control_path(config_path)


def path_from_file(config_path: str) -> str:
    """The control socket for a config file, reading only server.control_socket (tolerates an invalid file)."""
    configured = None
    try:
        import yaml

        with open(config_path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        server = data.get("server") if isinstance(data, dict) else None
        if isinstance(server, dict) and isinstance(server.get("control_socket"), str):
            configured = server["control_socket"]
    except Exception:
        # Unreadable (e.g. mode 0600 for the service user) or broken YAML: use the derived path; the master
        # reports the file's real problems.
        pass
    return control_path(config_path, configured)


class ControlError(RuntimeError):
    pass


def request(path: str, msg: dict, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Send one command, return the master's reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError as e:
            raise ControlError(f"cannot reach ddm-server at {path}: {e.strerror or e}") from e
        s.sendall(json.dumps(msg).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            try:
                chunk = s.recv(65536)
            except TimeoutError as e:
                raise ControlError(f"no answer from ddm-server at {path} within {timeout:g} s") from e
            if not chunk:
                raise ControlError(f"ddm-server at {path} closed the connection")
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


# --- CLI -------------------------------------------------------------------------------------------------------
def _socket_for(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    if args.config:
        return path_from_file(args.config)
    for candidate in ("/etc/ddm/ddm.yaml", "ddm.yaml"):
        if os.path.exists(candidate):
            return path_from_file(candidate)
    raise ControlError("give --config FILE or --socket PATH")


def _call(args: argparse.Namespace, msg: dict) -> dict:
    return request(_socket_for(args), msg, timeout=args.timeout)


def cmd_reload(args: argparse.Namespace) -> int:
    reply = _call(args, {"cmd": "reload"})
    if reply.get("ok"):
        print(f"reloaded: generation {reply.get('generation')} on {reply.get('workers')} workers")
        for w in reply.get("warnings", []):
            print(f"warning: {w}", file=sys.stderr)
        return 0
    print("reload rejected, the running configuration stays:", file=sys.stderr)
    for p in reply.get("problems", [reply.get("error", "unknown error")]):
        print(f"  {p}", file=sys.stderr)
    return 1


def cmd_status(args: argparse.Namespace) -> int:
    reply = _call(args, {"cmd": "status"})
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
        return 0 if reply.get("ok") else 1
    print(f"ddm-server {reply.get('version')} master pid {reply.get('pid')} state {reply.get('state')} "
          f"generation {reply.get('generation')} log-level {reply.get('log_level')}")
    print(f"config {reply.get('config')}  listening on {', '.join(reply.get('listen', []))}")
    for w in reply.get("workers", []):
        st = w.get("stats") or {}
        print(f"  worker {w['id']:>4} pid {w['pid']} up {w['uptime']:.0f}s restarts {w['restarts']} "
              f"connections {st.get('connections', '?')} questions {st.get('questions', '?')}")
    return 0 if reply.get("ok") else 1


def cmd_log_level(args: argparse.Namespace) -> int:
    reply = _call(args, {"cmd": "log-level", "level": args.level})
    if reply.get("ok"):
        print(f"log level: {reply['level']}")
        return 0
    print(f"error: {reply.get('error')}", file=sys.stderr)
    return 1


def cmd_upgrade(args: argparse.Namespace) -> int:
    path = _socket_for(args)
    before = request(path, {"cmd": "status"}, timeout=args.timeout)
    reply = request(path, {"cmd": "upgrade"}, timeout=args.timeout)
    if not reply.get("ok"):
        print(f"upgrade failed: {reply.get('error')}", file=sys.stderr)
        return 1
    new_pid = reply["pid"]
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:  # the new master owns the control socket once it took over
        try:
            st = request(path, {"cmd": "status"}, timeout=5)
            if st.get("pid") == new_pid:
                print(f"upgraded: master {before.get('pid')} ({before.get('version')}) -> {new_pid} "
                      f"({st.get('version')})")
                return 0
        except ControlError:
            pass
        time.sleep(0.2)
    print(f"new master {new_pid} did not take over within {args.timeout:g} s", file=sys.stderr)
    return 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="the server's configuration file (locates the control socket)")
    p.add_argument("--socket", help="control socket path (instead of --config)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the answer")


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ControlError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return run


def add_subcommands(subparsers: Any) -> None:
    """Register reload, status, log-level and upgrade on an argparse subparsers object (`ddm` CLI)."""
    p = subparsers.add_parser("reload", help="validate the config file and apply it to the running server")
    _common(p)
    p.set_defaults(func=_guard(cmd_reload))
    p = subparsers.add_parser("status", help="show the running server's master, workers and config generation")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the raw JSON status")
    p.set_defaults(func=_guard(cmd_status))
    p = subparsers.add_parser("log-level", help="change the running server's log level")
    p.add_argument("level", choices=["debug", "info", "warning", "error", "critical"])
    _common(p)
    p.set_defaults(func=_guard(cmd_log_level))
    p = subparsers.add_parser("upgrade", help="start the installed ddm-server version and hand the sockets over")
    _common(p)
    p.set_defaults(func=_guard(cmd_upgrade))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ddm")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
