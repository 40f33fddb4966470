"""tools/bench_daemon.py's report arithmetic: per-stage summaries and the goals (issue 13)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import load_tool


@pytest.fixture(scope="module")
def bench():
    return load_tool("bench_daemon")


def test_stage_summary_takes_percentiles_per_stage_and_skips_rows_without_stages(bench):
    rows = np.array([[0.1, 1.0, 0.01, 0.5, 0.2]] * 98 + [[9.0, 9.0, 9.0, 9.0, 9.0]] * 2)
    rows = np.vstack([rows, [[math.nan] * 5]])  # a message without stages_ms
    got = bench.stage_summary(rows)
    assert got["stages_ms_p50"] == dict(zip(bench.STAGES, [0.1, 1.0, 0.01, 0.5, 0.2], strict=True))
    assert got["stages_ms_p99"]["queue"] == pytest.approx(9.0 - 0.01 * 8.0, abs=0.2)
    assert got["stages_ms_mean"]["assemble"] == pytest.approx((0.1 * 98 + 18) / 100, abs=1e-3)
    assert bench.stage_summary(np.zeros((0, 5))) == {
        "stages_ms_p50": None, "stages_ms_p99": None, "stages_ms_mean": None,
    }  # fmt: skip


def _run(fraction, delivered, p99, rate_goal=None):
    run = {"fraction_of_bare": fraction, "delivered_packets_per_s": delivered,
           "latency_ms_p99": p99, "stages_ms_p50": None, "stages_ms_p99": None}  # fmt: skip
    if rate_goal is not None:
        run["offered_rate_goal"] = rate_goal
    return run


def test_goals_of_issue_5_and_13(bench):
    bare = {"packets_per_s": 1000.0}
    runs = [_run(0.25, 250, 1.0), _run(0.5, 500, 1.9), _run(1.0, 960, 40.0)]
    got = bench.goals(runs, bare)
    assert got["sustained_packets_per_s"] == 960 and got["sustained_fraction_of_bare"] == 0.96
    assert got["sustained_goal_0.8_met"] and got["sustained_goal_0.95_met"]
    assert got["p99_ms_at_half_rate"] == 1.9 and got["p99_goal_2ms_met"]
    runs[1]["latency_ms_p99"] = 2.1
    assert not bench.goals(runs, bare)["p99_goal_2ms_met"]
    pruned = [*runs, _run(None, 3000, 1.5, 3000.0), _run(None, 5900, 30.0, 6000.0)]
    got = bench.goals(pruned, bare, pruned=True)
    assert got["p99_ms_at_3000_per_s"] == 1.5 and got["p99_goal_2ms_at_3000_met"]
    assert got["sustained_packets_per_s"] == 5900 and not got["sustained_goal_6000_met"]
    assert got["p99_ms_at_half_rate"] == 2.1  # the half-rate run, not an absolute one
