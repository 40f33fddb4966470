"""numpy RuntimeWarnings (and any warning) go through the daemon's log format (issue 14.9)."""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np

from edge_daemon.logs import LOGGER_NAME, setup_logging


def test_runtime_warnings_are_log_lines():
    stream = io.StringIO()
    try:
        setup_logging("info", stream)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            np.log(np.zeros(1))  # RuntimeWarning: divide by zero
        text = stream.getvalue()
        assert "RuntimeWarning" in text and "divide by zero" in text, text
        assert "WARNING" in text.splitlines()[0].upper()
    finally:
        logging.captureWarnings(False)
        logging.getLogger("py.warnings").handlers.clear()
        logging.getLogger(LOGGER_NAME).handlers.clear()
