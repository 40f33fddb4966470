"""`edge-tc run` and `edge-tc check-config` (stub)."""

from __future__ import annotations

import argparse


def add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `edge-tc run` and `edge-tc check-config` (filled in by the daemon issue)."""
