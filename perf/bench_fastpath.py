"""Micro benchmark of the sharded single-shard fast path: sysbench's point select on examples/rules/sbtest-4x8.yaml.

    PYTHONPATH=src python perf/bench_fastpath.py [--queries 1000] [--repeat 9]

Per query (best of --repeat runs over --queries distinct ids): the lexer, the plan-cache lookup, the point route
(text and COM_STMT_EXECUTE), the generic `QueryPlan.bind` it replaces, and `executor.fast_units` /
`executor.fast_execute` end to end with a stub client (no I/O: the connection, statement id swap and forwarding
are stubs, so this is ddm's per-query Python work on top of what pass-through statements cost).
"""

from __future__ import annotations

import argparse
import struct
import sys
import timeit
from pathlib import Path
from types import SimpleNamespace as NS

from ddm.config import load_text
from ddm.execute import executor
from ddm.sharding import planner
from ddm.sharding.plan_cache import PlanCache
from ddm.wire.params import decode_params
from ddm_core.lexer import lex

RULES = Path(__file__).resolve().parents[1] / "examples" / "rules" / "sbtest-4x8.yaml"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=9)
    opts = p.parse_args(argv)
    nodes = "".join(f"  n{i}: {{host: 127.0.0.1, port: {3310 + i}, user: u, password: p}}\n" for i in range(4))
    cfg = load_text("users: [{name: u, password: p}]\nnodes:\n" + nodes + RULES.read_text())
    db = cfg.databases["sbtest"]
    plans = PlanCache(4096)
    ids = [i * 7919 % 10000 + 1 for i in range(opts.queries)]
    sqls = [b"SELECT c FROM sbtest1 WHERE id=%d" % i for i in ids]
    first = lex(sqls[0])
    plans.put("sbtest", 1, first.digest, planner.plan(first, db))
    plan = plans.get("sbtest", 1, first.digest)
    lexeds = [lex(s) for s in sqls]

    stmt_lexed = lex(b"SELECT c FROM sbtest1 WHERE id=?")
    stmt_plan = planner.plan(stmt_lexed, db)
    payloads = [b"\x17" + struct.pack("<IBI", 1, 0, 1) + b"\x00\x01\x03\x00" + struct.pack("<i", i) for i in ids]
    bstmt = type("Prepared", (), {"stmt_id": 7, "types_bound": b"\x03\x00"})()  # hashable, as the real one
    conn = NS(cached_stmt=lambda sql: bstmt)
    stmt = NS(plan=stmt_plan, lexed=stmt_lexed, long_data=[], nparams=1, param_types=b"\x03\x00", last_payload=b"",
              held={bstmt: conn})  # the node statement this client statement holds (ClientStatement.held)
    client = NS(server=NS(sharding=NS(plans=plans), pipelines=NS(nodes={})), session=NS(db="sbtest", dbconf=db),
                config=NS(generation=1), txn_conns={}, txn_begin=None, conn=None,
                ready_conn=lambda node, phys: conn, execute_payload=lambda s, b, payload: payload,
                forward=lambda c, packet: None)
    point = plan.point

    def each(fn):
        return lambda: [fn(x) for x in range(opts.queries)]

    cases = [
        ("loop overhead", each(lambda i: None)),
        ("lex", each(lambda i: lex(sqls[i]))),
        ("plan cache get", each(lambda i: plans.get("sbtest", 1, lexeds[i].digest))),
        ("point route (text)", each(lambda i: point.route_query(lexeds[i]))),
        ("generic bind (text)", each(lambda i: plan.bind(lexeds[i]))),
        ("fast_units total", each(lambda i: executor.fast_units(client, sqls[i]))),
        ("point route (execute)", each(lambda i: stmt_plan.point.route_execute(stmt_lexed, payloads[i], 1, None))),
        ("generic decode+bind (execute)", each(lambda i: stmt_plan.bind(
            stmt_lexed, decode_params(payloads[i], 1, None)[0], None, None, inline=False))),
        ("fast_execute total", each(lambda i: executor.fast_execute(client, stmt, payloads[i]))),
    ]
    print(f"per query, best of {opts.repeat} x {opts.queries} queries")
    for name, fn in cases:
        best = min(timeit.repeat(fn, number=5, repeat=opts.repeat)) / 5 / opts.queries
        print(f"{name:32s} {best * 1e6:6.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
