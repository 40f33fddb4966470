"""The arm64 CI stage (tools/ci_arm64.sh, run by .ci/run): valid, shellcheck-clean, and where it
cannot run it exits 77 with the reason on its last line, which .ci/run reports as a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "tools" / "ci_arm64.sh"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_stage_and_ci_entry_pass_shellcheck():
    done = subprocess.run(
        ["shellcheck", "-x", str(STAGE), str(ROOT / ".ci" / "run")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout


def test_without_its_tools_the_stage_skips_with_the_reason(tmp_path):
    # no debootstrap (nor sbin) on PATH; as a user, the first missing thing is root
    env = {**os.environ, "PATH": "/usr/bin:/bin", "EDGE_TC_CI_CACHE": str(tmp_path)}
    done = subprocess.run(["bash", str(STAGE)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 77, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    if os.geteuid() == 0:
        assert last == "ci_arm64: SKIP: debootstrap missing (apt-get install debootstrap)"
    else:
        assert last.startswith("ci_arm64: SKIP: needs root")
    assert not any(tmp_path.iterdir())  # skipped before building anything


def test_ci_entry_treats_77_as_a_skip_and_other_failures_as_failures():
    text = (ROOT / ".ci" / "run").read_text()
    assert 'tools/ci_arm64.sh --cache "${EDGE_TC_CI_CACHE:-$HOME/.cache/edge-tc-ci}"' in text
    assert "if [[ $status == 77 ]]" in text and 'exit "$status"' in text
