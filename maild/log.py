"""Logging set-up shared by the command line and the daemon's child processes.

Two formats (``[log] format``): "text", one line per event (a traceback
folded into it), and "json", one JSON object per line. Under journald (when
``JOURNAL_STREAM`` names the device and inode of our stderr, as systemd sets
it) every line starts with its syslog priority, ``<3>`` .. ``<7>``, so
``journalctl -p warning`` finds the warnings; the journal adds the time.

Everything maild prints or logs may carry text from mail (subjects,
Message-IDs, names, bodies, header values): an escape sequence in it would
move the cursor, retitle the window or hide lines on an operator's terminal,
and a line break would forge a log line. `escape` turns every control
character (C0 but tab and, where asked, line feed; DEL; C1), the bidi
overrides and the Unicode line and paragraph separators into a visible
``\\uXXXX``. That form is also a valid JSON string escape, so JSON output
passed through it stays JSON. The text format escapes each whole line with it;
the command line's stdout and stderr go through `EscapingWriter`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
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


# C0 controls except TAB and LF, DEL, C1 controls, the bidi embeddings,
# overrides and isolates, LRM/RLM/ALM, and the line and paragraph separators.
_UNSAFE_CHARS = (
    "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
)
_UNSAFE_MULTILINE = re.compile(f"[{_UNSAFE_CHARS}]")
_UNSAFE_ONE_LINE = re.compile(f"[{_UNSAFE_CHARS}\t\n]")


def _visible(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape(text: str, *, multiline: bool = False) -> str:
    """`text` with control characters shown as ``\\uXXXX``.

    One line by default (tab and line feed escaped too: a field can never
    start a line of its own); `multiline` keeps tabs and line feeds.
    """
    pattern = _UNSAFE_MULTILINE if multiline else _UNSAFE_ONE_LINE
    if pattern.search(text) is None:  # the usual case: no copy
        return text
    return pattern.sub(_visible, text)


class EscapingWriter(io.TextIOBase):
    """A text stream that escapes what is written to it (tabs and line feeds
    pass): the command line's stdout and stderr. ``buffer`` is the raw byte
    stream underneath, for output that is bytes on purpose (``--raw``)."""

    def __init__(self, inner: TextIO) -> None:
        super().__init__()
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(escape(text, multiline=True))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def buffer(self) -> Any:
        return self.inner.buffer

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.inner.encoding


def escape_output() -> None:
    """Route the process's stdout and stderr through `EscapingWriter` (once)."""
    if not isinstance(sys.stdout, EscapingWriter):
        sys.stdout = EscapingWriter(sys.stdout)
    if not isinstance(sys.stderr, EscapingWriter):
        sys.stderr = EscapingWriter(sys.stderr)


class TextFormatter(logging.Formatter):
    """``[<N>]`` [time] LEVEL logger: message, with a traceback folded into the line."""

    def __init__(self, *, journal: bool) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        super().__init__(fmt if journal else "%(asctime)s " + fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = escape(super().format(record))
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
