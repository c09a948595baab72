"""Hostile input: each case ends as a ticket or in quarantine, with its bytes
kept, and the next normal message is processed as usual.

Every case goes through real parse processes (`maild.service.parsepool`,
``worker.parse_processes = 1``) with the daemon's budgets (``limits.
parse_cpu_seconds`` 2 s, ``parse_memory_mb`` 256 MB): a parse over its budget
is killed and salvaged or quarantined, never the daemon. Each case gets a
desk (database) of its own, so one case's outcome (e.g. the rate limit on
acknowledgements to mallory@) cannot hide another's. What each case costs in
CPU is measured by ``bench/hostile.py``, not asserted here.
"""

from __future__ import annotations

import base64
import resource
from collections.abc import Callable, Iterator

import pytest

from maild.service.parsepool import ParsePool
from maild.store.states import Outcome
from tests.support.desk import Desk, make_message, make_settings

H = b"From: Mallory <mallory@evil.example>\r\nTo: help@example.com\r\n"


def mid(name: str) -> bytes:
    return b"Message-ID: <%s@evil.example>\r\n" % name.encode()


def mime(name: str, ctype: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (H + mid(name) + b"Subject: " + name.encode() + b"\r\nMIME-Version: 1.0\r\n" + extra
            + b"Content-Type: " + ctype + b"\r\n\r\n" + body)  # fmt: skip


def nested_multipart(depth: int) -> bytes:
    open_ = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                     for i in range(depth))  # fmt: skip
    return mime("nest", b"multipart/mixed; boundary=b0",
                b"Intro text\r\n" + open_ + b"--b%d\r\n\r\nleaf\r\n" % depth)  # fmt: skip


def nested_rfc822(depth: int) -> bytes:
    inner = b"From: a@b.example\r\nSubject: core\r\n\r\ncore\r\n"
    for i in range(depth):
        inner = (b"From: a@b.example\r\nSubject: l%d\r\nMIME-Version: 1.0\r\n"
                 b"Content-Type: message/rfc822\r\n\r\n" % i) + inner  # fmt: skip
    return mime("rfc822", b"message/rfc822", inner)


def many_parts(n: int) -> bytes:
    body = b"--p\r\nContent-Type: text/plain\r\n\r\nthe real question\r\n"
    body += b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(n))
    return mime("parts", b"multipart/mixed; boundary=p", body + b"--p--\r\n")


def attachment(name: bytes, data: bytes, ctype: bytes = b"application/octet-stream") -> bytes:
    tag = name.decode("ascii", "replace")[-12:].replace('"', "")
    body = (b"--a\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--a\r\nContent-Type: "
            + ctype + b"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; "
            + name + b"\r\n\r\n" + base64.encodebytes(data).replace(b"\n", b"\r\n")
            + b"--a--\r\n")  # fmt: skip
    return mime(f"att-{tag}", b"multipart/mixed; boundary=a", body)


CASES: dict[str, Callable[[], bytes]] = {
    "nesting_1000_deep": lambda: nested_multipart(1000),
    "rfc822_20000_deep": lambda: nested_rfc822(20000),
    "parts_50000": lambda: many_parts(50000),
    "subject_400k_encoded_words": lambda: (
        H
        + mid("subj")
        + b"Subject: "
        + b" ".join([b"=?utf-8?q?=C3=A4bcdefghij?="] * 16000)
        + b"\r\n\r\nbody\r\n"
    ),
    "addresses_20000": lambda: (
        H.replace(
            b"To: help@example.com",
            b"To: help@example.com, " + b", ".join(b"u%d@example.org" % i for i in range(20000)),
        )
        + mid("addr")
        + b"Subject: a\r\n\r\nx\r\n"
    ),
    "header_lines_100000": lambda: (
        H
        + mid("hdr")
        + b"Subject: h\r\n"
        + b"".join(b"X-Spam-%d: v\r\n" % i for i in range(100000))
        + b"\r\nbody\r\n"
    ),
    "one_header_1mb": lambda: (
        H + mid("onehdr") + b"Subject: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\nbody\r\n"
    ),
    "folded_header_100000_lines": lambda: (
        H + mid("fold") + b"Subject: x\r\nX-Fold: a\r\n" + b" b\r\n" * 100000 + b"\r\nbody\r\n"
    ),
    "broken_base64": lambda: mime(
        "b64",
        b"text/plain; charset=utf-8",
        b"SGVsbG8gd29y!!!==bGQ\r\n%%%\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
    ),
    "unknown_charset": lambda: mime("cs", b"text/plain; charset=x-no-such-charset", b"caf\xe9\r\n"),
    "charset_utf7_and_bad_qp": lambda: mime(
        "u7",
        b"text/plain; charset=utf-7",
        b"+AOQ-=ZZ=\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
    ),
    "encoded_word_crlf_injection": lambda: (
        H + mid("ewcrlf") + b"Subject: =?utf-8?q?Hi=0D=0ABcc:_victim@example.net?=\r\n\r\nbody\r\n"
    ),
    "traversal_filenames": lambda: attachment(b'filename="../../../etc/passwd"', b"root:x:0:0"),
    "windows_device_and_bidi_name": lambda: attachment(
        b"filename*=utf-8''CON%E2%80%AE.txt", b"data"
    ),
    "nul_in_headers_and_body": lambda: H + mid("nul") + b"Subject: a\x00b\r\n\r\nbo\x00dy\r\n",
    "missing_boundary": lambda: mime("nob", b"multipart/mixed", b"--x\r\n\r\nhi\r\n"),
    "boundary_never_closed": lambda: mime(
        "open",
        b'multipart/mixed; boundary="z"',
        b"--z\r\nContent-Type: text/plain\r\n\r\nhi" + b"\r\nline" * 1000,
    ),
    "bare_cr_line_endings": lambda: (
        (H + mid("cr") + b"Subject: cr\r\n\r\n").replace(b"\r\n", b"\r") + b"body\r" * 10
    ),
    "bare_lf_line_endings": lambda: (H + mid("lf") + b"Subject: lf\r\n\r\nbody\r\n").replace(
        b"\r\n", b"\n"
    ),
    "invalid_utf8_headers": lambda: (
        H + mid("utf8") + b"Subject: \xff\xfe\xc3\x28 broken\r\n\r\nx\r\n"
    ),
    "date_garbage": lambda: (
        H + mid("date") + b"Subject: d\r\nDate: 99 Foo 99999 99:99:99 +9999\r\n\r\nx\r\n"
    ),
    "message_id_garbage": lambda: (
        H + b"Message-ID: <<<>>> " + b"<" * 5000 + b"\r\nSubject: m\r\n\r\nx\r\n"
    ),
    "references_10000_ids": lambda: (
        H
        + mid("refs")
        + b"Subject: r\r\nReferences: "
        + b" ".join(b"<r%d@x>" % i for i in range(10000))
        + b"\r\n\r\nx\r\n"
    ),
    "zip_bomb_like_archive": lambda: attachment(
        b'filename="bomb.zip"', b"PK\x03\x04" + b"\0" * 200_000, b"application/zip"
    ),
    "attachments_450": lambda: mime(
        "atts",
        b"multipart/mixed; boundary=a",
        b"".join(
            b"--a\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
            b"filename=f%d.bin\r\n\r\nx\r\n" % i
            for i in range(450)
        )
        + b"--a--\r\n",
    ),
    "long_line_no_newline": lambda: H + mid("long") + b"Subject: l\r\n\r\n" + b"a" * 3_000_000,
    "empty_headers_only": lambda: b"From: a@b.example\r\n",
    "binary_garbage": lambda: bytes(range(256)) * 100,
    "tnef_garbage": lambda: attachment(
        b'filename="winmail.dat"', b"\x78\x9f\x3e\x22" + b"\xff" * 500, b"application/ms-tnef"
    ),
    "html_bomb": lambda: mime("html", b"text/html", b"<div>" * 200000 + b"hi"),
}


@pytest.fixture(scope="module")
def parse_pool(tmp_path_factory) -> Iterator[ParsePool]:
    """The daemon's parse processes with the daemon's budgets (shared: they hold no state)."""
    settings = make_settings(tmp_path_factory.mktemp("pool"), "sqlite://",
                             worker={"parse_processes": 1})  # fmt: skip
    assert settings.limits.parse_cpu_seconds == 2.0 and settings.limits.parse_memory_mb == 256
    pool = ParsePool.from_settings(settings)
    pool.start()
    yield pool
    pool.close()


@pytest.fixture
def hostile_desk(sqlite_url, tmp_path, parse_pool) -> Iterator[Desk]:
    desk = Desk(make_settings(tmp_path, sqlite_url, worker={"parse_processes": 1}),
                parser=parse_pool)  # fmt: skip
    yield desk
    desk.close()


def test_there_are_enough_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_message_is_contained(name, hostile_desk):
    desk = hostile_desk
    raw = CASES[name]()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    p = desk.process(raw)
    assert p.outcome in (Outcome.NEW_TICKET, Outcome.QUARANTINED, Outcome.APPENDED,
                         Outcome.IGNORED, Outcome.SPAM), p  # fmt: skip
    row = desk.inbound(p.inbound_id)
    assert row.status in ("done", "quarantined", "ignored", "spam") and row.raw == raw
    if row.status == "quarantined":
        assert row.error
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 256, f"{name}: the daemon's process grew {grown_mb:.0f} MB"
    # The next normal message goes through as usual.
    nxt = desk.process(make_message(message_id=f"<after-{name}@example.org>",
                                    sender="carol@example.org"))  # fmt: skip
    assert nxt.outcome == Outcome.NEW_TICKET


def test_outgoing_ack_of_an_injection_subject_has_no_extra_header(hostile_desk):
    desk = hostile_desk
    p = desk.process(
        H + mid("inj2") + b"Subject: =?utf-8?q?Hi=0D=0ABcc:_victim@example.net?=\r\n\r\nx\r\n"
    )
    assert p.outcome == Outcome.NEW_TICKET
    (ack,) = desk.outgoing()  # the acknowledgement of this very message
    assert ack["In-Reply-To"] == "<inj2@evil.example>"
    assert ack["Bcc"] is None and "victim" not in str(ack["To"])
    assert "\n" not in str(ack["Subject"]) and "\r" not in str(ack["Subject"])
    assert "victim@example.net" in str(ack["Subject"])  # kept as text, in the one Subject
