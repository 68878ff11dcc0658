"""One log line per event, `key=value` style, so a job can be followed by job_id."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    for noisy in ("imapclient", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
