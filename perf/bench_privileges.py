"""Cost of ddm.protect.privileges on the query path, per sysbench statement (one process, no server).

    python perf/bench_privileges.py [--number 200000]

Prints, per statement: the lexing alone (which the sharded path does anyway), `Guard.check` as the frontend calls it
with the statement already lexed (a verdict cache hit: the steady state), `Guard.check` lexing itself (the
pass-through path, which did not lex before), and one uncached verdict (the first statement of each digest).
"""

from __future__ import annotations

import argparse
import timeit

from ddm.config import from_dict
from ddm.protect import privileges
from ddm_core.lexer import lex

STATEMENTS = {
    "point select": b"SELECT c FROM sbtest1 WHERE id=5021",
    "simple range": b"SELECT c FROM sbtest1 WHERE id BETWEEN 5021 AND 5120",
    "sum range": b"SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 5021 AND 5120",
    "order range": b"SELECT c FROM sbtest1 WHERE id BETWEEN 5021 AND 5120 ORDER BY c",
    "distinct range": b"SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 5021 AND 5120 ORDER BY c",
    "index update": b"UPDATE sbtest1 SET k=k+1 WHERE id=5021",
    "non-index update": b"UPDATE sbtest1 SET c='12345678901-23456789012-34567890123-45678901234' WHERE id=5021",
    "delete": b"DELETE FROM sbtest1 WHERE id=5021",
    "insert": b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (5021, 4992, '1234-5678-9012', '2233-4455')",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--number", type=int, default=200000)
    n = ap.parse_args().number
    cfg = from_dict({
        "server": {"listen": "127.0.0.1:0"},
        "users": [{"name": "app", "password": "p", "databases": ["sbtest"]}],
        "nodes": {"n0": {"host": "127.0.0.1", "port": 3306, "user": "r", "password": "r"}},
        "databases": {"sbtest": {"node": "n0"}, "other": {"node": "n0", "database": "other_0"}},
    })
    g = privileges.guard(cfg, cfg.users["app"])
    assert g is not None
    print("| statement | lex us | check (lexed, cached) us | lex + check us | uncached verdict us |")
    print("|---|---:|---:|---:|---:|")
    for name, sql in STATEMENTS.items():
        lx = lex(sql)

        def best(f, number: int = n) -> float:
            return min(timeit.repeat(f, number=number, repeat=5)) / number * 1e6

        t_lex = best(lambda sql=sql: lex(sql))
        t_cached = best(lambda sql=sql, lx=lx: g.check(sql, "sbtest", lx))
        t_both = best(lambda sql=sql: g.check(sql, "sbtest"))
        t_cold = best(lambda sql=sql, lx=lx: g._verdict(privileges.scan(sql, lx), "sbtest"), n // 20)
        print(f"| {name} | {t_lex:.2f} | {t_cached:.2f} | {t_both:.2f} | {t_cold:.1f} |")


if __name__ == "__main__":
    main()
