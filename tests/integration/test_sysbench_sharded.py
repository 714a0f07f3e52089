"""sysbench, unchanged, through ddm against sharded logical databases (short version of perf/sysbench_sharded.py).

A 4-node sandbox with both example layouts (examples/rules/sbtest-4x8.yaml -> `sbtest`, sbtest-32x32.yaml ->
`sbtest32`) and ddm-server in front of it. For each layout and --auto_inc on/off: cleanup, prepare (2 tables x 2000
rows), then every workload for DDM_SYSBENCH_TIME seconds (default 3) with 4 threads and prepared statements on;
no run may report FATAL or ignored errors. Afterwards COUNT(*) and SUM(k) of every logical table through ddm must
equal the sum over its physical tables read directly from the nodes, and every row must be in the physical table
ddm routes its id to.

The sysbench user is `ddm_native` (mysql_native_password, as the sandbox's default `ddm`; not `ddm_sha2`):
sysbench's MariaDB Connector/C fails to load the caching_sha2_password client plugin when several threads connect
at once ("Plugin caching_sha2_password could not be loaded: it is already loaded"), a client-side race unrelated
to ddm.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("DDM_SYSBENCH_TIME", "3"))
# One client thread: with several, sysbench's hot rows make transactions that lock rows on two nodes in opposite
# orders; no node sees the cycle, and ddm ends it after server.cross_node_lock_wait with ER_LOCK_DEADLOCK (1213),
# which sysbench retries and counts as an ignored error, which this zero-error check would fail on (they are
# tested in test_lockwait.py). perf/sysbench_sharded.py runs 8 threads and reports them.
THREADS, TABLES, TABLE_SIZE = 1, 2, 2000


def _load_suite():
    spec = importlib.util.spec_from_file_location("sysbench_sharded", ROOT / "perf" / "sysbench_sharded.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sysbench_sharded"] = mod
    spec.loader.exec_module(mod)
    return mod


suite = _load_suite()


@pytest.fixture(scope="module")
def sysbench_env(mariadb: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not shutil.which("sysbench"):
        pytest.skip("sysbench is not installed")
    root = str(tmp_path_factory.mktemp("sysbench-sharded"))
    env = suite.start_env(root, base_port=25410 + (os.getpid() % 20) * 10)
    try:
        yield env
    finally:
        suite.stop_env(env)


def test_generated_ids_after_explicit_ids(sysbench_env) -> None:
    """Issue 13's reproduction, first in this module so the segment sequence is fresh: prepare with explicit ids
    (--auto_inc=off, ids 1..N), then oltp_insert with --auto_inc=on (id 0: ddm generates). The generator starts past
    MAX(id) of every shard: no 1062 Duplicate entry (sysbench would stop with FATAL)."""
    db = suite.LAYOUTS["4x8"][1]
    kw = {"tables": 1, "table_size": TABLE_SIZE, "threads": THREADS}
    suite.sysbench(sysbench_env, db, "oltp_read_write", "cleanup", auto_inc=False, **kw)
    prep = suite.sysbench(sysbench_env, db, "oltp_read_write", "prepare", auto_inc=False, **kw)
    assert prep.ok, prep.problem()
    run = suite.sysbench(sysbench_env, db, "oltp_insert", "run", auto_inc=True, seconds=SECONDS, **kw)
    assert run.ok, run.problem()
    assert not suite.check_data(sysbench_env, db, 1)


@pytest.mark.parametrize("auto_inc", [True, False], ids=["auto_inc_on", "auto_inc_off"])
@pytest.mark.parametrize("layout", ["4x8", "32x32"])
def test_sysbench_workloads(sysbench_env, layout: str, auto_inc: bool) -> None:
    res = suite.run_layout(sysbench_env, layout, auto_inc, seconds=SECONDS, threads=THREADS, tables=TABLES,
                           table_size=TABLE_SIZE, log=lambda line: print(line, file=sys.stderr))
    print(suite.summary([res]), file=sys.stderr)
    problems = res.problems()
    if problems and sysbench_env.proc is not None and sysbench_env.proc.poll() is not None:
        problems.append("ddm-server exited:\n" + sysbench_env.log_tail())
    assert not problems, f"{len(problems)} problems in layout {layout}:\n" + "\n\n".join(problems)
