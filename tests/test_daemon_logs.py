"""Daemon logs: one line per event; journald gets priorities and no timestamps."""

from __future__ import annotations

import io
import re

from edge_daemon.logs import get_logger, setup_logging


def test_plain_lines_have_a_timestamp_and_stay_on_one_line(monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    setup_logging("info", out)
    log = get_logger("test")
    log.info("first\nsecond")
    log.debug("hidden")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert re.match(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d INFO edge_tc\.test: first \| second$", lines[0]
    )


def test_journald_lines_carry_the_priority_and_no_timestamp(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    out = io.StringIO()
    setup_logging("debug", out)
    log = get_logger("test")
    log.error("bad")
    log.warning("careful")
    log.info("fine")
    log.debug("detail")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        "<3>edge_tc.test: bad",
        "<4>edge_tc.test: careful",
        "<6>edge_tc.test: fine",
        "<7>edge_tc.test: detail",
    ]
    assert len(lines) == 5 and lines[4].startswith("<3>edge_tc.test: failed | Traceback")
    assert "ValueError: boom" in lines[4]


def test_setup_is_idempotent(monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    setup_logging("info", out)
    setup_logging("info", out)
    get_logger("x").info("once")
    assert len(out.getvalue().splitlines()) == 1
