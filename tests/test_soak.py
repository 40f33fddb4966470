"""The soak run, bounded to 60 s for CI (tools/soak.py --minutes 10 is the full one): `edge-tc
run` on the live synthetic source with a subscriber; RSS growth after the warm-up under 5 %, no
thread dies, file descriptors flat, and the counts add up (the daemon's and the subscriber's).

Part of the default suite on purpose (not behind the `slow` marker): it is the only test that
runs the daemon for a minute. Its time limit is the soak's 60 s plus start and stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOAK_MINUTES = 1.0

pytestmark = pytest.mark.timeout(240)


def test_soak_60_seconds(tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "soak.py"), "--minutes", str(SOAK_MINUTES),
         "--interval", "2", "--warmup-s", "20", "--quiet", "--out", str(out)],
        capture_output=True, text=True, timeout=200, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.is_file(), done.stdout + done.stderr
    result = json.loads(out.read_text())
    report = json.dumps(result["checks"], indent=1) + "\n" + "".join(result["log_tail"])
    assert done.returncode == 0 and result["passed"], report
    assert set(result["checks"]) == {"rss_growth", "threads_alive", "fds_flat", "counts_add_up"}
    samples = result["samples"]
    assert samples[-1]["t_s"] >= 0.9 * SOAK_MINUTES * 60 and len(samples) >= 20
    counts = result["checks"]["counts_add_up"]
    assert counts["classified"] > 1000  # about 280 packets/s of default traffic
    assert counts["subscriber_received"] >= counts["subscriber_expected"] - counts["dropped"]
    assert result["checks"]["rss_growth"]["growth"] < 0.05


def test_soak_fails_when_a_check_fails(tmp_path):
    """The checks can fail: an impossible RSS limit makes the soak exit 1 and say why."""
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "soak.py"), "--minutes", "0.25", "--interval", "1",
         "--warmup-s", "3", "--max-rss-growth", "-1", "--quiet", "--out", str(out)],
        capture_output=True, text=True, timeout=200, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert not result["passed"] and not result["checks"]["rss_growth"]["passed"]
    assert "FAIL rss_growth" in done.stdout
    assert result["checks"]["counts_add_up"]["passed"]
