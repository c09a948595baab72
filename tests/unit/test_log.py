"""Log lines: one per event, the journald priority when journald reads them, JSON on
request; every control character shown, never sent (maild.log.escape, issue 14 item 7)."""

from __future__ import annotations

import io
import json
import logging
import os
import sys

import pytest

from maild.log import (
    EscapingWriter,
    JsonFormatter,
    TextFormatter,
    escape,
    journal_priority,
    stderr_is_journal,
)


@pytest.mark.parametrize(
    ("text", "one_line", "multiline"),
    [
        ("plain text, ümlauts, 日本語 😀", "plain text, ümlauts, 日本語 😀", None),
        ("\x1b[31mred", "\\u001b[31mred", None),
        ("a\r\nb", "a\\u000d\\u000ab", "a\\u000d\nb"),
        ("tab\there", "tab\\u0009here", "tab\there"),
        ("\x07bell\x00nul\x7fdel", "\\u0007bell\\u0000nul\\u007fdel", None),
        ("\x9b31mC1 CSI", "\\u009b31mC1 CSI", None),
        ("evil\u202egnp.exe", "evil\\u202egnp.exe", None),
        ("line\u2028sep\u2029para", "line\\u2028sep\\u2029para", None),
        ("zero\u200dwidth joiner kept", "zero\u200dwidth joiner kept", None),
    ],
)
def test_escape(text, one_line, multiline):
    assert escape(text) == one_line
    assert escape(text, multiline=True) == (multiline if multiline is not None else one_line)


def test_escaped_json_is_still_json():
    data = {"subject": "\x9b\u202e\x7f", "text": "a\x1bb"}
    out = io.StringIO()
    writer = EscapingWriter(out)
    writer.write(json.dumps(data, ensure_ascii=False))
    assert json.loads(out.getvalue()) == data
    assert not any(c in out.getvalue() for c in "\x9b\u202e\x7f\x1b")


def test_log_lines_and_tracebacks_are_escaped():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(journal=True))
    log = logging.getLogger("test.escape")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("inbound %s: %s", "<\x1b]0;x\x07@evil>", "two\nlines")
        try:
            raise ValueError("bad \x1b[2J value\nforged line")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    first, second = text.splitlines()  # one line per event, the traceback folded in
    assert first == "<4>WARNING test.escape: inbound <\\u001b]0;x\\u0007@evil>: two\\u000alines"
    assert second.startswith("<3>ERROR test.escape: failed\\u000aTraceback")
    assert "forged line" in second


def record(level: int, msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("maild.worker", level, __file__, 1, msg, args, exc_info)


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.DEBUG, "<7>"),
        (logging.INFO, "<6>"),
        (logging.WARNING, "<4>"),
        (logging.ERROR, "<3>"),
        (logging.CRITICAL, "<2>"),
    ],  # fmt: skip
)
def test_journal_lines_start_with_the_syslog_priority(level, prefix):
    line = TextFormatter(journal=True).format(record(level, "ticket #%d", 42))
    assert line.startswith(prefix + logging.getLevelName(level) + " maild.worker: ticket #42")
    assert journal_priority(level) == int(prefix[1])


def test_without_journald_no_prefix_but_a_time():
    line = TextFormatter(journal=False).format(record(logging.WARNING, "x"))
    assert not line.startswith("<") and " WARNING maild.worker: x" in line


def test_one_line_per_event_even_with_a_traceback_and_hostile_text():
    rec = record(
        logging.ERROR, "subject %r from %s", "a\nb", "evil\r\nFAKE: line\x1b[31m", exc=True
    )
    for fmt in (TextFormatter(journal=True), TextFormatter(journal=False)):
        line = fmt.format(rec)
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
        assert "Traceback" in line and "ValueError" in line
        assert "\\u001b" in line
    out = JsonFormatter(journal=False).format(rec)
    assert "\n" not in out
    data = json.loads(out)
    assert data["level"] == "ERROR" and data["logger"] == "maild.worker"
    assert "evil\r\nFAKE: line\x1b[31m" in data["message"]
    assert "ValueError: bad\nthing" in data["exception"]
    odd = JsonFormatter(journal=True).format(record(logging.WARNING, "del \x7f nel \x85 ls \u2028"))
    assert (
        odd.startswith("<4>{") and json.loads(odd[3:])["message"] == "del \x7f nel \x85 ls \u2028"
    )
    assert odd.isprintable()


def test_journal_stream_must_name_our_stderr(tmp_path):
    with open(tmp_path / "err", "w") as fh, open(tmp_path / "other", "w") as other:
        st = os.fstat(fh.fileno())
        assert stderr_is_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        # Inherited from a parent whose stderr went to the journal, ours does not.
        assert not stderr_is_journal(other, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stderr_is_journal(fh, {})
        assert not stderr_is_journal(fh, {"JOURNAL_STREAM": "garbage"})
