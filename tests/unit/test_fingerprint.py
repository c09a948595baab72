"""The content fingerprint intake deduplicates by (maild.intake.commit)."""

from __future__ import annotations

from maild.intake.commit import dedupe_key, fingerprint
from tests.support.desk import make_message

RAW = make_message(message_id="<fp@example.org>", date=None)


def test_trace_fields_line_endings_and_trailing_space_do_not_count():
    base, _dated = fingerprint(RAW)
    traced = b"Received: from mx (mx [192.0.2.1])\r\n\tby x; Mon, 1 Dec 2026\r\n" + RAW
    assert fingerprint(traced)[0] == base
    assert fingerprint(RAW.replace(b"\r\n", b"\n"))[0] == base
    assert fingerprint(RAW + b"\r\n\r\n")[0] == base
    folded = RAW.replace(b"Subject: Printer on 3rd floor not working",
                         b"Subject: Printer on 3rd floor\r\n not working")  # fmt: skip
    assert fingerprint(folded)[0] == base


def test_other_content_counts():
    base, _dated = fingerprint(RAW)
    assert fingerprint(RAW.replace(b"error E42", b"error E43"))[0] != base
    assert fingerprint(RAW.replace(b"Subject: Printer", b"Subject: [users] Printer"))[0] != base
    assert fingerprint(RAW.replace(b"From: Bob", b"From: Rob"))[0] != base


def test_dedupe_key_by_message_id_recipient_and_content():
    a = dedupe_key("help@example.com", "<m@x>", "sha", "fp1")
    assert a == dedupe_key("help@example.com", "<m@x>", "other-sha", "fp1")
    assert a != dedupe_key("help@example.com", "<m@x>", "sha", "fp2")
    assert a != dedupe_key("it@example.com", "<m@x>", "sha", "fp1")
    assert dedupe_key(None, None, "sha", None) == dedupe_key("x@y", None, "sha", None)
