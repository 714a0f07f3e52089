"""Real ddm-server under continuous PyMySQL load: 10 hot reloads and 3 version handoffs in ~20 s, zero failed
connections and zero failed queries. The workload lives in perf/reload_handoff_soak.py (same run, 60 s there)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

_PERF = Path(__file__).resolve().parents[2] / "perf" / "reload_handoff_soak.py"
_spec = importlib.util.spec_from_file_location("reload_handoff_soak", _PERF)
soak = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = soak  # dataclasses look their module up there
_spec.loader.exec_module(soak)

THREADS = 16
HANDOFFS = 3
RELOADS = 10


def test_reloads_and_handoffs_under_load_lose_nothing(sandbox, tmp_path):
    run = soak.Soak(str(sandbox.config_path), str(tmp_path / "soak"), duration=20.0, reloads=RELOADS,
                    handoffs=HANDOFFS, threads=THREADS, workers=2)
    report = run.run()
    summary = report.summary()
    assert report.failures == [], f"{report.failures[:10]}\n{summary}\n{run.logs()}"
    assert report.reloads_ok == RELOADS, (report.reload_errors, run.logs())
    assert len(report.handoffs) == HANDOFFS
    for h in report.handoffs:
        assert h["old_exit"] == 0, (h, run.logs())
        assert not set(h["old_ids"]) & set(h["new_ids"]), h  # generations never share worker ids
    # Only long-lived connections are closed by a retiring generation, each at most once per handoff, and
    # only ever at a transaction boundary (counted, retried; anything else is in report.failures).
    assert report.reconnects <= (THREADS // 2) * HANDOFFS, summary
    assert report.transactions > 200, summary
    assert report.rows_checked >= report.transactions
