"""Logging set-up shared by the command line and the daemon's child processes.

Two formats (``[log] format``): "text", one line per event (a traceback
folded into it), and "json", one JSON object per line. Under journald (when
``JOURNAL_STREAM`` names the device and inode of our stderr, as systemd sets
it) every line starts with its syslog priority, ``<3>`` .. ``<7>``, so
``journalctl -p warning`` finds the warnings; the journal adds the time.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")

# sd-daemon(3): the kernel's priorities, which journald reads from "<N>".
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def journal_priority(levelno: int) -> int:
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return _PRIORITY[logging.DEBUG]


def stderr_is_journal(stream: TextIO | None = None, environ: dict[str, str] | None = None) -> bool:
    """True when ``JOURNAL_STREAM`` (``DEVICE:INODE``) is this stream's file."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


def one_line(text: str) -> str:
    """Control characters (line breaks included) as visible escapes: one event, one line."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


class TextFormatter(logging.Formatter):
    """``[<N>]`` [time] LEVEL logger: message, with a traceback folded into the line."""

    def __init__(self, *, journal: bool) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        super().__init__(fmt if journal else "%(asctime)s " + fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = one_line(super().format(record))
        if self.journal:
            return f"<{journal_priority(record.levelno)}>{line}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception)."""

    def __init__(self, *, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(data, ensure_ascii=False, default=str)
        # json.dumps escapes C0 controls; escape the rest (DEL, C1, separators) too.
        if not line.isprintable():
            line = "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in line)
        if self.journal:
            return f"<{journal_priority(record.levelno)}>{line}"
        return line


def make_formatter(fmt: str = "text", *, journal: bool | None = None) -> logging.Formatter:
    journal = stderr_is_journal() if journal is None else journal
    if fmt == "json":
        return JsonFormatter(journal=journal)
    return TextFormatter(journal=journal)


def setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Libraries log every SMTP command and every job run at INFO: keep them quiet.
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("mail.log", "alembic", "apscheduler"):
        logging.getLogger(name).setLevel(quiet)
