"""The `ddm` command: `ddm sandbox up|status|down`, `ddm route`, plus admin commands registered by ddm.process.control.

Each subcommand sets `func(args) -> int` with `set_defaults`; `main` dispatches to it. Other modules add their
subcommands through `add_subcommands(subparsers)` (see `build_parser`) so this file stays the single entry point.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ddm import __version__
from ddm.tools import sandbox as sb


def _sandbox_up(args: argparse.Namespace) -> int:
    box = sb.up(args.dir, nodes=args.nodes, replicas=args.replicas, base_port=args.port, rules=args.rules,
                listen_port=args.listen_port, workers=args.workers)
    print(f"sandbox up in {box.dir}: {len(box.nodes)} node(s), {len(box.instances) - len(box.nodes)} replica(s)")
    _print_status(sb.status(args.dir))
    print(f"\nstart ddm:  ddm-server --config {box.config_path}")
    print(f"stop:       ddm sandbox down --dir {args.dir}")
    return 0


def _print_status(st: dict[str, Any]) -> None:
    print(f"config:     {st['config']}")
    print(f"ddm listen: {st['listen']}")
    for u in st["users"]:
        print(f"client:     user {u['name']} password {u['password']} ({u['auth_plugin']})")
    print(f"node user:  {st['node_user']} password {st['node_password']}")
    print(f"{'name':<8}{'node':<6}{'role':<9}{'port':<7}{'pid':<9}{'alive':<7}socket")
    for i in st["instances"]:
        print(f"{i['name']:<8}{i['node']:<6}{i['role']:<9}{i['port']:<7}{str(i['pid'] or '-'):<9}"
              f"{'yes' if i['alive'] else 'no':<7}{i['socket']}")


def _sandbox_status(args: argparse.Namespace) -> int:
    st = sb.status(args.dir)
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        _print_status(st)
    # Non-zero when anything is down, so scripts can `ddm sandbox status || ddm sandbox up`.
    return 0 if all(i["alive"] for i in st["instances"]) else 3


def _sandbox_down(args: argparse.Namespace) -> int:
    if sb.down(args.dir):
        print(f"sandbox in {args.dir} stopped")
    else:
        print(f"no sandbox in {args.dir}")
    return 0


def _add_sandbox(subparsers: Any) -> None:
    p = subparsers.add_parser("sandbox", help="private MariaDB data nodes for tests, demos and benchmarks")
    sub = p.add_subparsers(dest="sandbox_command", required=True, metavar="{up,status,down}")

    up = sub.add_parser("up", help="start N nodes (+ replicas) and write DIR/ddm.yaml")
    up.add_argument("--dir", default=".sandbox", help="where datadirs, sockets, logs and ddm.yaml go")
    up.add_argument("--nodes", type=int, default=2, help="number of data nodes (n0..n{N-1})")
    up.add_argument("--replicas", type=int, default=0, help="GTID replicas per node")
    up.add_argument("--port", type=int, default=sb.DEFAULT_BASE_PORT,
                    help="primary of node i listens on PORT+i, replica j on PORT+10*j+i (default %(default)s)")
    up.add_argument("--listen-port", type=int, default=None,
                    help="port ddm.yaml tells ddm to listen on (default PORT-3, i.e. 3307)")
    up.add_argument("--rules", default=None, help="YAML file with a top-level `databases:` merged into ddm.yaml")
    up.add_argument("--workers", type=int, default=1, help="server.workers in ddm.yaml")
    up.set_defaults(func=_sandbox_up)

    st = sub.add_parser("status", help="show instances, ports, sockets, credentials")
    st.add_argument("--dir", default=".sandbox")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_sandbox_status)

    down = sub.add_parser("down", help="stop everything the sandbox started (idempotent)")
    down.add_argument("--dir", default=".sandbox")
    down.set_defaults(func=_sandbox_down)


def _route(args: argparse.Namespace) -> int:
    from ddm.tools import route

    return route.main_route(args.config, args.database, args.sql, as_json=args.json)


def _add_route(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "route", help="show where statements would go (nodes, physical databases and tables) without running them",
        description="Plan each SQL statement on logical database DB of the configuration FILE the way ddm-server "
                    "does and print, per shard, the data node, physical database and rewritten SQL, what is sent "
                    "to each node and how ddm merges the results. Nothing connects to a node. Exit 1 when a "
                    "statement is refused.")
    p.add_argument("--config", required=True, metavar="FILE", help="ddm configuration (e.g. .sandbox/ddm.yaml)")
    p.add_argument("--database", "-D", required=True, metavar="DB", help="logical database the statements run in")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("sql", nargs="+", metavar="SQL", help="statements (one per argument)")
    p.set_defaults(func=_route)


def _xa(args: argparse.Namespace) -> int:
    from ddm.tools import xa_admin

    if args.action in ("commit", "rollback") and not args.id:
        print(f"ddm xa {args.action}: the transaction id is required", file=sys.stderr)
        return 2
    return xa_admin.main_xa(args.action, args.config, args.id)


def _add_xa(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "xa", help="in-doubt cross-node transactions: list, recover now, force commit or rollback",
        description="ddm's XA branches in doubt on the data nodes of the configuration FILE (docs/sharding.md, "
                    "'Transactions'). list: every branch with its logged decision; recover: one recovery pass now; "
                    "commit / rollback ID: log that outcome (refused if the log holds the other) and apply it.")
    p.add_argument("action", choices=["list", "recover", "commit", "rollback"])
    p.add_argument("id", nargs="?", help="the global transaction id (ddm:...), for commit / rollback")
    p.add_argument("--config", required=True, metavar="FILE", help="ddm configuration")
    p.set_defaults(func=_xa)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddm", description="ddm: MySQL-compatible sharding proxy tools")
    parser.add_argument("--version", action="version", version=f"ddm {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_sandbox(subparsers)
    _add_route(subparsers)
    _add_xa(subparsers)
    # Admin commands (reload, status, ...) live with the server's control channel; registered when present.
    try:
        from ddm.process import control
    except ImportError:
        control = None  # type: ignore[assignment]
    if control is not None and hasattr(control, "add_subcommands"):
        control.add_subcommands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except sb.SandboxError as exc:
        print(f"ddm: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
