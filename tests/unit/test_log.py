"""maild.log.escape: every control character shown, never sent (issue 14, item 7)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from maild.log import EscapingFormatter, EscapingWriter, escape


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
    handler.setFormatter(EscapingFormatter("%(levelname)s %(message)s"))
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
    first, *rest = text.splitlines()
    assert first == "WARNING inbound <\\u001b]0;x\\u0007@evil>: two\\u000alines"
    assert rest[0] == "ERROR failed" and rest[1].startswith("Traceback")
