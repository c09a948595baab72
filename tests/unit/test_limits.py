"""Limits checked on raw bytes before parsing (maild.limits), VERP addresses,
and the budget of the parse processes (maild.parsepool)."""

from __future__ import annotations

import pytest

from maild.errors import PermanentError
from maild.mail.limits import ParseLimits, prescan, scan_structure
from maild.mail.parse import parse
from maild.mail.tokens import Signer
from maild.mail.verp import first_outbox_id, outbox_id_of, verp_address
from maild.service.parsepool import ParsePool
from tests.support.desk import make_message

HEAD = b"From: Bob <bob@example.org>\r\nTo: help@example.com\r\nMessage-ID: <h@example.org>\r\n"


def nested(depth: int) -> bytes:
    parts = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(depth)
    )
    return (HEAD + b"Subject: deep\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + parts
            + b"--b%d\r\nContent-Type: text/plain\r\n\r\nhi\r\n" % depth)  # fmt: skip


def many_parts(n: int) -> bytes:
    body = b"--b\r\nContent-Type: text/plain\r\n\r\nthe words\r\n" + b"".join(
        b"--b\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n" for _ in range(n)
    )
    return (HEAD + b"Subject: parts\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + body + b"--b--\r\n")  # fmt: skip


def test_ordinary_mail_passes_untouched():
    raw = make_message()
    pre = prescan(raw, ParseLimits())
    assert pre.raw is raw and pre.notes == () and not pre.salvaged


def test_boundaries_that_prefix_each_other_are_told_apart():
    st = scan_structure(nested(12), ParseLimits())  # b1 is a prefix of b10, b11
    assert st.depth == 13 and st.parts == 14 and not st.over  # 12 multiparts + the leaf


def test_deep_nesting_keeps_the_words_and_attaches_the_original():
    raw = nested(1000)
    msg = parse(raw, ParseLimits(max_mime_depth=30))
    assert any("nesting deeper than 30" in n for n in msg.notes)
    assert [a.filename for a in msg.attachments] == ["original-message.eml"]
    assert msg.attachments[0].data == raw and msg.subject == "deep"


def test_many_parts_keep_the_first_text_part():
    msg = parse(many_parts(2000), ParseLimits(max_mime_parts=100))
    assert msg.text.strip() == "the words"
    assert any("more than 100 MIME parts" in n for n in msg.notes)


def test_oversized_original_is_not_attached():
    msg = parse(many_parts(2000), ParseLimits(max_mime_parts=100, max_attachment_bytes=1024))
    assert msg.attachments == ()
    assert any("too large to attach" in n for n in msg.notes)


def test_a_long_subject_is_shortened_and_other_long_fields_dropped():
    words = b" ".join([b"=?utf-8?q?abcdefghij?="] * 20000)
    raw = HEAD + b"Subject: " + words + b"\r\nX-Junk: " + b"y" * 50000 + b"\r\n\r\nbody\r\n"
    msg = parse(raw, ParseLimits(max_header_bytes=4096))
    assert 1000 < len(msg.subject) < 4096 and msg.subject.startswith("abcdefghij")
    assert "x-junk" not in msg.headers
    assert any("Subject header shortened" in n for n in msg.notes)
    assert any("x-junk" in n for n in msg.notes)


def test_address_lists_are_cut_at_the_limit():
    cc = b", ".join(b"u%d@example.org" % i for i in range(5000))
    msg = parse(HEAD + b"Subject: a\r\nCc: " + cc + b"\r\n\r\nbody\r\n",
                ParseLimits(max_addresses_per_header=50))  # fmt: skip
    assert len(msg.cc) == 50 and msg.cc[0].email == "u0@example.org"
    assert any("4950 addresses beyond the first 50" in n for n in msg.notes)


def test_a_flood_of_header_fields_keeps_the_ones_that_matter():
    junk = b"".join(b"X-H%d: v\r\n" % i for i in range(20000))
    raw = junk + HEAD + b"Subject: still here\r\nAuto-Submitted: auto-replied\r\n\r\nbody\r\n"
    msg = parse(raw, ParseLimits(max_header_fields=100))
    assert msg.subject == "still here" and msg.sender is not None
    assert msg.header("auto-submitted") == "auto-replied"  # screening still sees it
    assert len(msg.headers) <= 100


def test_attachment_count_and_size_limits():
    from email.message import EmailMessage

    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "bob@example.org", "help@example.com", "files"
    m.set_content("see attached")
    for i in range(5):
        m.add_attachment(bytes([i]) * (100 if i else 5000), maintype="application",
                         subtype="octet-stream", filename=f"f{i}.bin")  # fmt: skip
    msg = parse(m.as_bytes(), ParseLimits(max_attachments=3, max_attachment_bytes=1000))
    assert [a.filename for a in msg.attachments] == ["f1.bin", "f2.bin", "f3.bin"]
    assert any("f0.bin" in n for n in msg.notes) and any(
        "1 attachment beyond" in n for n in msg.notes
    )


def test_verp_addresses_are_signed():
    signer = Signer(b"k" * 32)
    address = verp_address(signer, "Help@Example.com", 42)
    assert address.startswith("help+bounces.42.") and address.endswith("@example.com")
    assert outbox_id_of(signer, address) == 42
    assert outbox_id_of(signer, address.replace(".42.", ".43.")) is None
    assert outbox_id_of(Signer(b"x" * 32), address) is None
    assert first_outbox_id(signer, ["bob@example.org", address.upper()]) == 42


def _spin_on_marker() -> None:
    """Child setup: a full parse of a message whose subject says SPIN burns CPU
    until something stops it (a salvage parse does not): over any CPU budget,
    on any machine, however fast."""
    import maild.service.parsepool as pp

    real = pp.parse

    def parse(raw: bytes, *args, **kwargs):
        if b"Subject: SPIN" in raw and not kwargs.get("salvage"):
            while True:
                pass
        return real(raw, *args, **kwargs)

    pp.parse = parse


@pytest.fixture(scope="module")
def pool():
    # The wall-clock timeout is far away: only the CPU budget can stop a spin.
    p = ParsePool(2, limits=ParseLimits(max_mime_parts=100_000, max_header_bytes=1_000_000),
                  cpu_seconds=0.3, memory_mb=64, timeout=600, setup=_spin_on_marker)  # fmt: skip
    yield p
    p.close()


def test_pool_parses_in_order(pool):
    raws = [make_message(subject=f"s{i}", message_id=f"<{i}@x>") for i in range(20)]
    results = list(pool.parse_many(raws))
    assert [r.subject for r in results] == [f"s{i}" for i in range(20)]


def test_a_parse_over_its_cpu_budget_is_killed_and_salvaged(pool):
    slow = make_message(subject="SPIN", body="the words\n")
    killed = pool.killed
    first, second = pool.parse_many([slow, make_message()])
    assert not isinstance(first, PermanentError), first
    assert first.text.strip() == "the words"
    assert any("CPU or memory" in n for n in first.notes)
    assert not isinstance(second, PermanentError) and not second.notes  # its neighbour is fine
    assert pool.killed > killed


def test_a_parse_over_its_memory_budget_fails_cleanly(pool):
    from email.message import EmailMessage

    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "bob@example.org", "help@example.com", "big"
    m.set_content("the words")
    m.add_attachment(b"\xff" * (40 * 1024 * 1024), maintype="application",
                     subtype="octet-stream", filename="big.bin")  # fmt: skip
    (result,) = pool.parse_many([m.as_bytes()])
    # Salvaged (text kept, original too big to attach) or refused with the reason.
    if isinstance(result, PermanentError):
        assert "memory" in str(result)
    else:
        assert result.text.strip() == "the words" and result.notes
    (after,) = pool.parse_many([make_message()])
    assert not isinstance(after, PermanentError)
