"""Outgoing mail: header safety, loop markers, templates in both languages."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from maild.errors import PermanentError
from maild.mail.compose import Outgoing, clean_header_text, compose, new_message_id
from maild.mail.htmltext import html_to_text
from maild.mail.parse import Address
from maild.mail.render import Renderer

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def outgoing(**kw) -> Outgoing:
    base = dict(
        sender=Address("Help Desk", "help@example.com"),
        to=(Address("Bob Customer", "bob@example.org"),),
        subject="[#1] Printer",
        text="Hello Bob\n",
        html="<p>Hello Bob</p>",
        message_id=new_message_id("helpdesk.example.com"),
        date=NOW,
        auto_submitted="auto-replied",
        loop_domain="helpdesk.example.com",
        in_reply_to="<orig-1@example.org>",
        references=("<orig-1@example.org>",),
    )
    base.update(kw)
    return Outgoing(**base)


def headers_of(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line[:1] not in (" ", "\t")]


def test_every_mail_carries_loop_and_auto_headers():
    raw = compose(outgoing())
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["X-Maild-Loop"] == "helpdesk.example.com"
    assert msg["Message-ID"].endswith("@helpdesk.example.com>")
    assert msg["In-Reply-To"] == "<orig-1@example.org>"
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Hello Bob\n"
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


@pytest.mark.parametrize(
    "subject",
    [
        "Invoice\r\nBcc: victim@example.net",
        "Invoice\nBcc: victim@example.net",
        "Invoice\rBcc: victim@example.net",
        "Invoice\x00\x0bBcc: victim@example.net",
        "Invoice\u2028Bcc: victim@example.net",
        "Lasku ääkköset\r\nBcc: victim@example.net",
        "x" * 5000,
    ],
)
def test_subject_can_never_add_a_header(subject):
    raw = compose(outgoing(subject=subject))
    names = headers_of(raw)
    assert "Bcc" not in names
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert msg["Bcc"] is None


def test_display_name_can_never_add_a_header():
    raw = compose(outgoing(to=(Address("Bob\r\nBcc: victim@example.net", "bob@example.org"),)))
    assert "Bcc" not in headers_of(raw)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["To"].addresses[0].addr_spec == "bob@example.org"


def test_bad_addresses_and_ids_are_refused():
    with pytest.raises(PermanentError):
        compose(outgoing(to=(Address("", "bob@example.org\r\nBcc: x@y.z"),)))
    with pytest.raises(PermanentError):
        compose(outgoing(message_id="<a b@c>"))
    # A bad In-Reply-To from a requester's mail is dropped, not copied.
    raw = compose(outgoing(in_reply_to="<x@y>\r\nBcc: v@w", references=("<ok@y>", "<bad\n@y>")))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["In-Reply-To"] is None and msg["References"] == "<ok@y>"


def test_non_ascii_subject_is_encoded():
    raw = compose(outgoing(subject="[#1] Tulostin ei toimi – näyttää virheen"))
    assert raw.isascii()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "[#1] Tulostin ei toimi – näyttää virheen"


def test_clean_header_text():
    assert clean_header_text("a\r\nb\tc\u202ed") == "a b c d"


def test_html_to_text():
    html = (
        "<html><head><style>p{color:red}</style><script>alert(1)</script></head>"
        "<body><p>Hello&nbsp;there &amp; welcome</p><ul><li>one</li><li>two</li></ul>"
        "<p>See <a href='https://example.org/x'>this</a><br>thanks</p></body></html>"
    )
    text = html_to_text(html)
    assert "color" not in text and "alert" not in text
    assert "Hello there & welcome" in text
    assert "- one\n- two" in text
    assert "this <https://example.org/x>" in text
    assert "\nthanks" in text


def test_templates_render_in_english_and_finnish_and_escape_html():
    renderer = Renderer()
    context = {
        "helpdesk": {"name": "Help Desk", "address": "help@example.com"},
        "ticket": {
            "number": 42,
            "subject": "<script>x</script>",
            "priority": 3,
            "type": "incident",
            "category": "hardware",
        },  # fmt: skip
        "requester": {"name": "Bob <b>", "email": "bob@example.org"},
        "summary": "it is <broken>",
        "first_response_due": NOW,
        "parent_id": None,
    }
    en = renderer.render("ack", "en", context)
    assert en.subject == "[#42] <script>x</script>"
    assert "ticket #42" in en.text and "Mon 30 Nov 2026, 09:00 UTC" in en.text
    assert "<script>" not in en.html and "&lt;script&gt;" in en.html
    assert "&lt;broken&gt;" in en.html
    fi = renderer.render("ack", "fi", context)
    assert "tukipyynnöksi #42" in fi.text
    # A language without templates falls back to English.
    assert renderer.render("ack", "tlh", context).text == en.text


def test_template_override_directory(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "ack.subject.j2").write_text("Got it: #{{ ticket.number }}")
    renderer = Renderer(tmp_path)
    context = {"helpdesk": {"name": "H", "address": "h@x.y"}, "ticket": {"number": 5, "subject": "s",
               "priority": 3, "type": "request", "category": "other"}, "requester": {"name": "", "email": "a@b.c"}, "summary": "",
               "first_response_due": NOW, "parent_id": None}  # fmt: skip
    out = renderer.render("ack", "en", context)
    assert out.subject == "Got it: #5"
    assert "ticket #5" in out.text  # not overridden: the built-in one


def test_broken_override_template_is_a_config_error(tmp_path):
    from maild.errors import ConfigError

    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "ack.txt.j2").write_text("{% if %}")
    with pytest.raises(ConfigError) as info:
        Renderer(tmp_path)
    assert info.value.key == "templates.directory"


# --- issue 6: CR/LF inside encoded-words, and a property test ---------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@pytest.mark.parametrize(
    "subject",
    ["=?utf-8?q?Invoice=0D=0ABcc:_victim@example.net?=",
     "=?utf-8?b?SW52b2ljZQ0KQmNjOiB2aWN0aW1AZXhhbXBsZS5uZXQ=?=",
     "Re: =?iso-8859-1?q?a=0Ab?= =?utf-8?q?=0D=0ABcc:_v@x.y?="],
)  # fmt: skip
def test_encoded_word_cr_lf_never_reaches_a_reader(subject):
    raw = compose(outgoing(subject=subject))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    decoded = str(msg["Subject"])
    assert "\r" not in decoded and "\n" not in decoded and msg["Bcc"] is None
    assert "Bcc" not in headers_of(raw)


_NASTY = st.sampled_from(
    ["\r\n", "\n", "\r", "\x00", "\u2028", "=?utf-8?q?=0D=0ABcc:_x@y.z?=",
     "=?utf-8?b?DQpCY2M6IHhAeS56?=", "\r\nBcc: x@y.z", "ä", "\u202e", ":", "<", ">"]
)  # fmt: skip
HEADER_TEXT = st.lists(st.one_of(st.text(max_size=10), _NASTY), max_size=15).map("".join)


@settings(max_examples=300, deadline=None)
@given(subject=HEADER_TEXT, name=HEADER_TEXT)
def test_no_subject_or_name_adds_or_splits_a_header(subject, name):
    raw = compose(outgoing(subject=subject, to=(Address(name, "bob@example.org"),),
                           sender=Address(name, "help@example.com")))  # fmt: skip
    names = headers_of(raw)
    assert len(names) == len(set(names))  # each header once
    assert set(names) <= {"From", "To", "Subject", "Date", "Message-ID", "Reply-To",
                          "In-Reply-To", "References", "Auto-Submitted",
                          "X-Auto-Response-Suppress", "Precedence", "X-Maild-Loop",
                          "Content-Type", "MIME-Version", "Content-Transfer-Encoding"}  # fmt: skip
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for field in ("Subject", "To", "From"):
        assert "\n" not in str(msg[field]) and "\r" not in str(msg[field])
    assert msg["To"].addresses[0].addr_spec == "bob@example.org"
