"""Logging for the daemon: one line per event, on stderr, journald-friendly.

Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp (the journal adds its own) and
start with the syslog priority `<N>` that journald turns into the entry's level. Elsewhere they
start with an ISO timestamp.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

LOGGER_NAME = "edge_tc"

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """`<priority>logger: message`, newlines in the message flattened: one event, one line."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{record.name}: {_one_line(super().format(record))}"


class LineFormatter(logging.Formatter):
    """`2026-11-30T03:55:12 INFO logger: message` on one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return _one_line(super().format(record))


def _one_line(text: str) -> str:
    return text.replace("\n", " | ")


def setup_logging(level: str = "info", stream: TextIO | None = None) -> logging.Logger:
    """Configure the `edge_tc` logger (idempotent: replaces its handler) and return it."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level.upper())
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    journal = bool(os.environ.get("JOURNAL_STREAM"))
    handler.setFormatter(JournalFormatter() if journal else LineFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    # warnings (numpy RuntimeWarnings, deprecations) as log lines in the same format, not
    # bare stderr text outside it (journald would file them without a priority)
    # (off first: captureWarnings(True) is a no-op while an earlier call's hook is recorded,
    # even after something else, e.g. a warnings.catch_warnings block, put showwarning back)
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    py_warnings = logging.getLogger("py.warnings")
    for old in list(py_warnings.handlers):
        py_warnings.removeHandler(old)
    py_warnings.addHandler(handler)
    py_warnings.propagate = False
    return logger


def get_logger(name: str) -> logging.Logger:
    """A child of the `edge_tc` logger ("edge_tc.source", "edge_tc.engine", ...)."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


__all__ = ["LOGGER_NAME", "JournalFormatter", "LineFormatter", "get_logger", "setup_logging"]
