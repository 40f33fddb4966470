"""`edge-tc bench engines`: every available backend and precision side by side (stub)."""

from __future__ import annotations

import argparse


def add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `edge-tc bench ...` (filled in by the engines issue)."""
