"""Property: whatever bytes arrive, no exception escapes the worker and every
message ends done, ignored or quarantined (hypothesis: random and mutated
messages, on SQLite through the bounded parse)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.desk import Desk, make_settings

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures").glob("*/*.eml"))
SEEDS = [p.read_bytes() for p in FIXTURES] + [
    p.read_bytes() for p in sorted((FIXTURES[0].parents[1] / "bounces").glob("*.txt"))[:20]
]
HEADER_NAMES = ["From", "To", "Cc", "Subject", "Message-ID", "In-Reply-To", "References",
                "Content-Type", "Content-Transfer-Encoding", "Auto-Submitted", "Date",
                "Return-Path", "Content-Disposition", "X-Maild-Loop"]  # fmt: skip
NASTY = st.sampled_from(["\r\n", "\n", "\r", "\x00", "=?utf-8?q?=0D=0A?=", "=?x?b?////?=", "<",
                         ">", ";", "boundary=", "multipart/mixed", "message/rfc822", "\u202e",
                         "ä", "@", ",", '"', "--", "\t", " "])  # fmt: skip
TEXT = st.lists(st.one_of(NASTY, st.text(max_size=20)), max_size=12).map("".join)


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), TEXT), max_size=12))
    body = draw(TEXT)
    raw = "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n" + body
    return raw.encode("utf-8", "surrogateescape")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\r\n",
                        b"\n--",
                        b"\r\n\r\n",
                        b"=?",
                        b"\0",
                        b"Content-Type: multipart/mixed; boundary=q\r\n",
                    ]
                )
            )
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 50))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + 200]
    return bytes(data)


@pytest.fixture(scope="module")
def prop_desk(tmp_path_factory):
    from maild.store.db import make_engine, upgrade

    tmp = tmp_path_factory.mktemp("property")
    url = f"sqlite:///{tmp / 'maild.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    desk = Desk(make_settings(tmp, url))
    yield desk
    desk.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])  # fmt: skip
@given(raw=st.one_of(st.binary(max_size=2000), structured(), mutated()),
       envelope_from=st.sampled_from([None, "", "bob@example.org", "MAILER-DAEMON@x.example"]))  # fmt: skip
def test_any_bytes_end_done_ignored_or_quarantined(prop_desk, raw, envelope_from):
    stored = prop_desk.deliver(raw, envelope_from=envelope_from)
    processed, _sent = prop_desk.drain()  # raises if anything escapes
    row = prop_desk.inbound(stored.inbound_id)
    assert row.status in ("done", "ignored", "spam", "quarantined"), (row.status, row.error)
    if row.status == "quarantined":
        assert row.error
    assert all(p.outcome is not None for p in processed), [p.reason for p in processed]
