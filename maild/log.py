"""Logging set-up shared by the command line and the daemon's child processes,
and the one function that makes untrusted text safe for a terminal or a log.

Everything maild prints or logs may carry text from mail (subjects,
Message-IDs, names, bodies, header values): an escape sequence in it would
move the cursor, retitle the window or hide lines on an operator's terminal,
and a line break would forge a log line. `escape` turns every control
character (C0 but tab and, where asked, line feed; DEL; C1), the bidi
overrides and the Unicode line and paragraph separators into a visible
``\\uXXXX``. That form is also a valid JSON string escape, so JSON output
passed through it stays JSON. Log formats built on top (issue 17: journald,
JSON lines) call `escape` on each field.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from typing import Any, TextIO

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


class EscapingFormatter(logging.Formatter):
    """Every log line escaped: the message (with its arguments) on one line,
    a traceback line by line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return escape(super().formatException(ei), multiline=True)

    def formatStack(self, stack_info: str) -> str:
        return escape(super().formatStack(stack_info), multiline=True)


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


def setup_logging(level: str) -> None:
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Libraries log every SMTP command and every job run at INFO: keep them quiet.
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("mail.log", "alembic", "apscheduler"):
        logging.getLogger(name).setLevel(quiet)
