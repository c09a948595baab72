"""Logging set-up shared by the command line and the daemon's child processes."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(level: str) -> None:
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)
    # Libraries log every SMTP command and every job run at INFO: keep them quiet.
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("mail.log", "alembic", "apscheduler"):
        logging.getLogger(name).setLevel(quiet)
