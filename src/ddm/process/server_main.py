"""`ddm-server`: run the proxy (master + workers), check a configuration, or take over from a running server.

    ddm-server --config FILE [--workers N] [--log-level L]   run in the foreground (systemd Type=notify)
    ddm-server --config FILE --check-config                 validate and exit 0 (OK) or 1 (problems listed)
    ddm-server --config FILE --takeover                     start and take the sockets over from the running one
    ddm-server --version
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import ddm
from ddm import config as config_mod
from ddm.process import logs


def _load(path: str) -> Any:
    return config_mod.load(path)  # looked up at call time (the module attribute is what reload uses, too)


def _summary(cfg: Any) -> str:
    srv = cfg.server
    return (f"listen {srv.listen_host}:{srv.listen_port}, workers {srv.workers or 'auto'}, {len(cfg.users)} users, "
            f"{len(cfg.nodes)} nodes, {len(cfg.databases)} databases")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddm-server", description="ddm: MySQL-compatible sharding proxy")
    p.add_argument("--config", "-c", help="YAML configuration file")
    p.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    p.add_argument("--takeover", action="store_true",
                   help="take the listening sockets over from the running ddm-server (version handoff)")
    p.add_argument("--workers", type=int, help="worker processes (overrides server.workers; 0 = CPU count)")
    p.add_argument("--log-level", help="debug, info, warning, error (overrides server.log_level)")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"ddm-server {ddm.__version__}")
        print(f"handshake server version: {ddm.SERVER_VERSION}")
        return 0
    if not args.config:
        print("ddm-server: --config FILE is required", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 0:
        print("ddm-server: --workers must be >= 0", file=sys.stderr)
        return 2
    try:
        cfg = _load(args.config)
    except config_mod.ConfigError as e:
        print(f"{args.config}: invalid configuration ({len(e.problems)} problems):", file=sys.stderr)
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{args.config}: {e.strerror or e}", file=sys.stderr)
        return 1
    if args.check_config:
        print(f"configuration OK: {args.config}: {_summary(cfg)}")
        return 0
    try:
        logs.setup_logging(args.log_level or cfg.server.log_level, role="master")
    except ValueError as e:
        print(f"ddm-server: {e}", file=sys.stderr)
        return 2
    # Imported before forking so every worker starts with the code loaded (copy-on-write) and an import error
    # fails the master at once instead of crash-looping workers.
    from ddm.process import server as _server  # noqa: F401
    from ddm.process.master import Master

    return Master(args.config, cfg, _load, workers=args.workers, takeover=args.takeover).run()


if __name__ == "__main__":
    sys.exit(main())
