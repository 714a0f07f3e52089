"""`ddm xa`: in-doubt cross-node transactions (ddm.execute.xa) of a configuration's data nodes.

    ddm xa list --config FILE                 branches in doubt on every node, with the decision logged for each
    ddm xa recover --config FILE              one recovery pass now (what every worker does periodically)
    ddm xa commit|rollback --config FILE ID   force an outcome: logged first (refused if the log holds the other
                                              one), then applied to every branch of ID on the nodes
"""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

from ddm import config as config_mod
from ddm.execute.pool import PoolSet
from ddm.execute.xa import Coordinator


def _coordinator(path: str) -> Coordinator:
    cfg = config_mod.load(path)
    server = SimpleNamespace(config=cfg, pools=PoolSet(dict(cfg.nodes)), worker_id=-1)
    return Coordinator(server)


async def _run(action: str, path: str, gtrid: str | None) -> int:
    coord = _coordinator(path)
    try:
        if action == "list":
            found, complete = await coord.in_doubt()
            decisions = await coord.log.lookup(list(found)) if found else {}
            for g, branches in sorted(found.items()):
                d = {b"C": "commit", b"A": "abort"}.get(decisions.get(g, b""), "none (presumed abort)")
                print(f"{g.decode()}  decision: {d}  branches: {', '.join(n for n, _ in branches)}")
            if not found:
                print("no ddm XA branches in doubt")
            if not complete:
                print("(some nodes did not answer XA RECOVER)")
            return 0 if complete else 3
        if action == "recover":
            done = await coord.recover()
            print(", ".join(f"{k}: {v}" for k, v in done.items()))
            return 0
        assert gtrid is not None
        try:
            n = await coord.resolve(gtrid.encode(), action == "commit")
        except ValueError as exc:
            print(f"ddm xa: {exc}")
            return 1
        print(f"{action}: {gtrid} on {n} branch(es)")
        return 0
    finally:
        await coord.server.pools.close()


def main_xa(action: str, path: str, gtrid: str | None = None) -> int:
    os.environ.pop("DDM_XA_FAULT_FILE", None)
    return asyncio.run(_run(action, path, gtrid))
