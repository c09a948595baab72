"""parse: table-driven over the real-world-shaped fixtures in tests/fixtures/mail."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from maild.errors import PermanentError
from maild.mail.parse import (
    NotAMessage,
    looks_like_message,
    parse,
    peek_message_id,
    safe_filename,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
MANIFEST = tomllib.loads((FIXTURES / "MANIFEST.toml").read_text())
MESSAGES = {k: v for k, v in MANIFEST.items() if v["kind"] != "garbage"}


def raw(name: str) -> bytes:
    return (FIXTURES / MANIFEST[name]["file"]).read_bytes()


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_headers_and_addresses(name):
    spec = MESSAGES[name]
    msg = parse(raw(name))
    if spec["from_addr"]:
        assert msg.sender is not None and msg.sender.email == spec["from_addr"].lower()
    assert msg.message_id == (spec["message_id"] or None)
    assert msg.in_reply_to == ((spec["in_reply_to"],) if spec["in_reply_to"] else ())
    assert list(msg.references) == spec["references"]
    # Subjects come out as one clean line: control characters never survive.
    expected = " ".join(spec["subject"].replace("\r", " ").replace("\n", " ").split())
    assert msg.subject == expected
    assert "\n" not in msg.subject and "\r" not in msg.subject


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_text_body(name):
    spec = MESSAGES[name]
    msg = parse(raw(name))
    text = msg.text.replace("\xa0", " ")
    for snippet in spec["body_contains"]:
        assert snippet.replace("\xa0", " ") in text, f"{snippet!r} missing from {name}"
    for snippet in spec["body_not_contains"]:
        assert snippet not in text, f"{snippet!r} should not be in {name}"
    assert "\ufffd" not in msg.text, f"{name}: undecodable characters in the text"
    assert "\r" not in msg.text


@pytest.mark.parametrize("name", sorted(n for n, s in MESSAGES.items() if s["attachments"]))
def test_attachments_keep_their_bytes_and_get_safe_names(name):
    spec = MESSAGES[name]
    msg = parse(raw(name))
    got = {(a.sha256, a.size) for a in msg.attachments}
    for att in spec["attachments"]:
        assert (att["sha256"], att["size"]) in got, (
            f"{name}: {att['filename']} not extracted intact"
        )
    for att in msg.attachments:
        assert "/" not in att.filename and "\\" not in att.filename
        assert not att.filename.startswith(".")
        assert all(ord(c) >= 32 for c in att.filename)
        assert not set(att.filename) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def test_rfc2231_filename_is_decoded():
    names = {a.filename for a in parse(raw("rfc2231_filename")).attachments}
    expected = {a["filename"] for a in MANIFEST["rfc2231_filename"]["attachments"]}
    assert names == expected


def test_traversal_and_bidi_names_are_neutralised():
    names = [a.filename for a in parse(raw("attachment_traversal_name")).attachments]
    assert "passwd" in names
    assert any(n.startswith("lasku") and n.endswith("fdp.exe") for n in names)


def test_html_only_message_gets_a_readable_text():
    msg = parse(raw("html_only"))
    assert msg.html and "<" in msg.html
    assert "<" not in msg.text.replace("<http", "").replace("<mailto", "")


def test_undeclared_charset_falls_back_to_windows_1252():
    msg = parse(raw("undeclared_charset_8bit"))
    for snippet in MANIFEST["undeclared_charset_8bit"]["body_contains"]:
        assert snippet in msg.text


def test_unknown_charset_still_gives_text():
    msg = parse(raw("unknown_charset"))
    assert msg.text and "\ufffd" not in msg.text


def test_language_from_content_language():
    assert parse(raw("new_outlook_html_alt")).language == "en"


def test_garbage_is_not_a_message():
    data = raw("garbage_bin")
    assert not looks_like_message(data)
    with pytest.raises(NotAMessage):
        parse(data)
    assert issubclass(NotAMessage, PermanentError)


@pytest.mark.parametrize("data", [b"", b"   \r\n", b"hello world\r\n", b"\x00\x01\x02: x\r\n\r\n"])
def test_other_non_messages(data):
    assert not looks_like_message(data)


def test_peek_message_id_reads_only_the_header():
    assert peek_message_id(raw("new_plain")) == MANIFEST["new_plain"]["message_id"]
    assert peek_message_id(raw("no_message_id")) is None
    assert peek_message_id(b"Message-ID: bare-id@x\r\n\r\n") == "<bare-id@x>"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\evil.bat", "evil.bat"),
        ("...hidden", "hidden"),
        ("a\x00b\x07c.txt", "abc.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("", "attachment.pdf"),
        (None, "attachment.pdf"),
        ("x" * 400 + ".pdf", "x" * 196 + ".pdf"),
    ],
)
def test_safe_filename(name, expected):
    assert safe_filename(name, "application/pdf") == expected
