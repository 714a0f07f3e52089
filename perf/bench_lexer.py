"""Microbenchmarks of lex(): ddm_core.lexer (Cython) vs ddm._py.lexer (pure Python).

Run: PYTHONPATH=src python perf/bench_lexer.py [--quick]
Prints microseconds per lex() call (best of 5 timeit repeats) and the Cython speed-up.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable

from ddm._py import lexer as py_lexer

try:
    from ddm_core import lexer as cy_lexer
except ImportError:
    cy_lexer = None

C_VALUE = b"68487932199-96439406143-93774651418-41631865787-96406072701-20604855487-25459966574-28203206787-41238978918-19503783441"
PAD_VALUE = b"22195207048-70116052123-74140395089-76317954521-98694025897"


def insert_rows(rows: int) -> bytes:
    values = b", ".join(
        b"(%d, %d, '%s', '%s')" % (5012 + i, 4993 + i, C_VALUE, PAD_VALUE) for i in range(rows)
    )
    return b"INSERT INTO sbtest1 (id, k, c, pad) VALUES " + values


STATEMENTS: dict[str, bytes] = {
    "point select": b"SELECT c FROM sbtest1 WHERE id=5012",
    "range order by": b"SELECT c FROM sbtest1 WHERE id BETWEEN 4980 AND 5079 ORDER BY c",
    "update index": b"UPDATE sbtest1 SET k=k+1 WHERE id=5012",
    "insert 1 row": insert_rows(1),
    "insert 10 rows": insert_rows(10),
    "orm select": b"SELECT `users`.`id` AS `users_id`, `users`.`name` AS `users_name`, `users`.`email` AS "
    b"`users_email` FROM `users` WHERE `users`.`id` IN (1, 2, 3, 4, 5) AND `users`.`deleted_at` IS NULL "
    b"ORDER BY `users`.`id` DESC LIMIT 10",
    "set names": b"SET NAMES utf8mb4",
}


def per_call_us(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    quick = "--quick" in sys.argv
    n_cy, n_py = (20_000, 500) if quick else (200_000, 3_000)
    print(f"{'statement':<16} {'bytes':>6} {'tokens':>6} {'cython us':>10} {'python us':>10} {'speed-up':>8}")
    for name, sql in STATEMENTS.items():
        py_us = per_call_us(lambda sql=sql: py_lexer.lex(sql), n_py)
        if cy_lexer is not None:
            cy_us = per_call_us(lambda sql=sql: cy_lexer.lex(sql), n_cy)
            ntok = cy_lexer.lex(sql).ntokens
            print(f"{name:<16} {len(sql):>6} {ntok:>6} {cy_us:>10.3f} {py_us:>10.1f} {py_us / cy_us:>7.0f}x")
        else:
            print(f"{name:<16} {len(sql):>6} {'':>6} {'(not built)':>10} {py_us:>10.1f}")
    if cy_lexer is not None:
        lx = cy_lexer.lex(STATEMENTS["point select"])
        v_us = per_call_us(lambda: lx.slot_value(0), n_cy)
        d_us = per_call_us(lambda: cy_lexer.lex(STATEMENTS["point select"]).digest, n_cy)
        print(f"slot_value(int) {v_us:.3f} us; lex()+digest attribute {d_us:.3f} us")


if __name__ == "__main__":
    main()
