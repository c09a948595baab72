"""Pure pieces of the agents' channel: reply addresses, strict From, Authentication-
Results, look-alike addresses and command parsing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from maild.config.settings import settings_from_mapping
from maild.mail.parse import parse
from maild.mail.replyaddr import find_reply_token, parse_reply_address, reply_address
from maild.mail.tokens import Signer
from maild.pipeline.agentauth import (
    authentication_results,
    parse_authentication_results,
    strict_from,
)
from maild.pipeline.commands import parse as parse_commands
from maild.pipeline.directory import AgentEntry, Directory, skeleton

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
SIGNER = Signer(b"s" * 32)
ANNA = AgentEntry(1, "anna@example.com", "Anna Agent", 1, (), "en")
BERT = AgentEntry(2, "bert@example.com", "Bert", 2, ("security",), "fi")
DIRECTORY = Directory((ANNA, BERT, AgentEntry(3, "old@example.com", "Old", 1, (), "en", False)))


# --- reply addresses -------------------------------------------------------------------


def test_reply_address_round_trip_and_tampering():
    address = reply_address(SIGNER, "help@example.com", 42, 1, date(2027, 1, 31))
    local = address.partition("@")[0]
    assert address.startswith("help+42.1.20270131.") and len(local) <= 64
    token = parse_reply_address(SIGNER, address.upper())  # MTAs may change the case
    assert token is not None and token.valid and (token.ticket, token.agent) == (42, 1)
    assert not token.expired(datetime(2027, 1, 31, 23, 59, tzinfo=UTC))
    assert token.expired(datetime(2027, 2, 1, tzinfo=UTC))
    # Another ticket, another agent, a later expiry or none: the signature no longer fits.
    mac = local.rsplit(".", 1)[1]
    for forged in (f"help+43.1.20270131.{mac}", f"help+42.2.20270131.{mac}",
                   f"help+42.1.20990131.{mac}", f"help+42.1.{mac}"):  # fmt: skip
        found = parse_reply_address(SIGNER, f"{forged}@example.com")
        assert found is not None and not found.valid, forged
    assert not parse_reply_address(Signer(b"x" * 32), address).valid
    # Not reply addresses at all: a VERP bounce address, a plain tag, no tag.
    for other in ("help+bounces.7.aaaaaaaaaaaaaaaaaaaaaaaaaa@example.com",
                  "help+sales@example.com", "help@example.com"):  # fmt: skip
        assert parse_reply_address(SIGNER, other) is None


def test_the_first_valid_reply_address_wins():
    good = reply_address(SIGNER, "help@example.com", 5, 2)
    bad = good.replace("help+5.", "help+6.")
    assert find_reply_token(SIGNER, [bad, good]).ticket == 5
    assert not find_reply_token(SIGNER, [bad]).valid
    assert find_reply_token(SIGNER, ["help@example.com"]) is None


# --- From, strictly --------------------------------------------------------------------


def msg(headers: str, body: str = "text\n") -> object:
    return parse((headers.strip() + "\nSubject: x\n\n" + body).encode())


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("From: Anna Agent <anna@example.com>", "anna@example.com"),
        ("From: anna@example.com", "anna@example.com"),
        ('From: "Agent, Anna" <ANNA@example.com>', "anna@example.com"),
        ("From: =?utf-8?q?Anna_M=C3=A4kinen?= <anna@example.com>", "anna@example.com"),
        ('From: "anna@example.com" <mallory@evil.example>', None),  # name poses as address
        ("From: =?utf-8?q?anna=40example=2Ecom?= <mallory@evil.example>", None),  # encoded
        ("From: anna@example.com, mallory@evil.example", None),  # two mailboxes
        ("From: Anna <anna@example.com> <mallory@evil.example>", None),
        ("From: anna@example.com\nFrom: mallory@evil.example", None),  # two From fields
        ("From: Anna <\u0430nna@example.com>", None),  # Cyrillic а: not plain ASCII
        ("From: Anna <anna@example.com>\nSender: mallory@evil.example", None),
        ("From: mallory@evil.example (anna@example.com)", None),
    ],
)
def test_strict_from(header, expected):
    email, why = strict_from(msg(header))
    assert email == expected
    assert bool(why) == (expected is None)


def test_lookalike_addresses_map_to_the_agent_they_imitate():
    for fake in ("\u0430nna@example.com", "anna@ex\u0430mple.com", "anna@examp1e.com",
                 "anna@xn--exmple-4nf.com", "ANNA@EXAMPLE.COM\u200b"):  # fmt: skip
        assert skeleton(fake) == skeleton("anna@example.com"), fake
        assert DIRECTORY.lookalike(fake.lower()) == ANNA, fake
    assert DIRECTORY.lookalike("anna@example.com") is None  # that is Anna herself
    assert DIRECTORY.lookalike("bob@example.org") is None
    assert DIRECTORY.by_email("old@example.com") is None  # deactivated
    assert DIRECTORY.find("anna") == ANNA and DIRECTORY.find("Bert") == BERT


# --- Authentication-Results -------------------------------------------------------------


SETTINGS = settings_from_mapping({"agent_mail": {
    "require_authentication_results": True, "trusted_authserv_ids": ["mx.example.com"]}})  # fmt: skip


def test_parse_authentication_results():
    authserv, results = parse_authentication_results(
        "mx.example.com 1; dkim=pass (2048-bit key; unprotected) header.d=example.com "
        "header.s=sel; dmarc=pass (p=reject dis=none) header.from=example.com; spf=fail"
    )
    assert authserv == "mx.example.com"
    assert [(r.method, r.result) for r in results] == [("dkim", "pass"), ("dmarc", "pass"),
                                                       ("spf", "fail")]  # fmt: skip
    assert results[0].props["header.d"] == "example.com"


OUR_HOP = "Received: from relay.example.net by mx.example.com with ESMTPS; Mon, 30 Nov 2026"
FROM = "From: Anna <anna@example.com>"


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        # our server vouches: DMARC or DKIM pass for example.com
        (
            f"Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\n"
            f"{OUR_HOP}\n{FROM}",
            True,
        ),
        (
            f"Authentication-Results: mx.example.com; dkim=pass header.d=mail.example.com\n"
            f"{OUR_HOP}\n{FROM}",
            True,
        ),  # a subdomain signs: relaxed alignment
        # below our own hop it may have come with the message: a server of ours that
        # writes there needs trusted_hops = 2 (test below)
        (
            f"{OUR_HOP}\nAuthentication-Results: mx.example.com; dkim=pass header.d=example.com\n"
            f"{FROM}",
            False,
        ),
        # DKIM for another domain does not count
        (
            f"Authentication-Results: mx.example.com; dkim=pass header.d=evil.example\n{OUR_HOP}\n"
            f"{FROM}",
            False,
        ),
        # our server says fail; a "pass" further down came from outside
        (
            f"Authentication-Results: mx.example.com; dmarc=fail header.from=example.com\n"
            f"{OUR_HOP}\nAuthentication-Results: mx.example.com; dmarc=pass\n{FROM}",
            False,
        ),
        # no header of ours; a forged one below an outside hop
        (
            f"{OUR_HOP}\nReceived: from x by relay.example.net\n"
            f"Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\n{FROM}",
            False,
        ),
        # a pass from a server we do not trust
        (
            f"Authentication-Results: mx.evil.example; dmarc=pass header.from=example.com\n"
            f"{OUR_HOP}\n{FROM}",
            False,
        ),
    ],
)
def test_authentication_results_only_from_our_own_hops(headers, ok):
    passed, why = authentication_results(msg(headers), SETTINGS, "anna@example.com")
    assert passed == ok
    assert bool(why) == (not ok)


def test_a_server_writing_below_its_own_received_header_needs_one_more_hop():
    settings = settings_from_mapping({"agent_mail": {
        "require_authentication_results": True, "trusted_authserv_ids": ["mx.example.com"],
        "trusted_hops": 2}})  # fmt: skip
    ours = (f"{OUR_HOP}\nAuthentication-Results: mx.example.com; dkim=pass header.d=example.com\n"
            f"Authentication-Results: mx.example.com; dmarc=fail\n{FROM}")  # fmt: skip
    assert authentication_results(msg(ours), settings, "anna@example.com")[0]
    forged_below = (f"{OUR_HOP}\nAuthentication-Results: mx.example.com; dmarc=fail\n"
                    f"Authentication-Results: mx.example.com; dmarc=pass\n{FROM}")  # fmt: skip
    assert not authentication_results(msg(forged_below), settings, "anna@example.com")[0]


def test_a_forged_header_below_ours_is_named_in_the_reason():
    headers = (f"Authentication-Results: mx.example.com; dmarc=none\n{OUR_HOP}\n"
               f"Authentication-Results: mx.example.com; dmarc=pass\n{FROM}")  # fmt: skip
    passed, why = authentication_results(msg(headers), SETTINGS, "anna@example.com")
    assert not passed and "came from outside and was ignored" in why


# --- commands ---------------------------------------------------------------------------


def commands(text: str):
    return parse_commands(text, DIRECTORY, now=NOW, timezone="Europe/Helsinki")


def test_leading_commands_and_the_rest():
    block = commands(
        "\n#status Pending User\n#PRIORITY p2\n\n#assign bert\n#take\n#escalate tier 3\n"
        "#category network\n#type request\n#link #12\n#meeting 2026-12-01 14:00-14:45 "
        "https://meet.example.com/abc\n#resolve Replaced the toner.\n\nHello Bob,\n#not a command\n"
    )
    assert block.errors == ()
    got = [(c.name, c.value) for c in block.commands]
    assert got[:9] == [("status", "pending_user"), ("priority", 2), ("assign", "bert@example.com"),
                       ("take", ""), ("escalate", 3), ("category", "network"),
                       ("type", "request"), ("link", 12), ("meeting", got[8][1])]  # fmt: skip
    meeting = got[8][1]
    assert meeting.start == datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 14:00 in Helsinki
    assert meeting.end - meeting.start == timedelta(minutes=45)
    assert meeting.link == "https://meet.example.com/abc"
    assert got[9] == ("resolve", "Replaced the toner.")
    assert block.body == "Hello Bob,\n#not a command"
    assert not block.internal and commands("#note call back\nsecret").internal


@pytest.mark.parametrize(
    "when",
    ["2026-12-01 14:00-14:45", "1.12.2026 14.00-14.45", "1.12.2026 klo 14.00–14.45",
     "1.12.2026 kl. 14:00-14:45", "2026-12-01T14:00-14:45"],
)  # fmt: skip
def test_meeting_times_as_finns_and_swedes_write_them(when):
    (meeting,) = commands(f"#meeting {when}").commands
    assert meeting.value.start == datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 14:00 in Helsinki
    assert meeting.value.end - meeting.value.start == timedelta(minutes=45)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("#frobnicate", "unknown command"),
        ("#meeting 31.11.2026 10.00", "not a date and time"),
        ("#priority P7", "P1, P2, P3 or P4"),
        ("#status done", "status must be one of"),
        ("#assign nobody", "no single active agent"),
        ("#assign old@example.com", "no single active agent"),  # deactivated
        ("#escalate 5", "tier must be 1, 2 or 3"),
        ("#type problem", "incident or request"),
        ("#link abc", "by its number"),
        ("#take me", "no argument"),
        ("#category Bcc:evil@example.org", "one category"),
        ("#meeting tomorrow", "YYYY-MM-DD HH:MM"),
        ("#meeting 2020-01-01 10:00", "in the past"),
        ("#meeting 2026-12-01 10:00 javascript:alert(1)", "http(s) address"),
        ("#resolve done\u2028Bcc: victim@evil.example", "control characters"),
        ("#resolve done\x0bBcc: victim@evil.example", "control characters"),
        ("#priority P2\nBcc: victim@evil.example", "header-like line"),
        ("#note\nTo: victim@evil.example\n\ntext", "header-like line"),
    ],
)
def test_bad_commands_are_refused_with_a_reason(text, error):
    block = commands(text)
    assert any(error in e for e in block.errors), block.errors


def test_a_header_like_line_after_a_blank_line_is_just_text():
    block = commands("#priority P2\n\nTo: whom it may concern, the printer is fixed.")
    assert block.errors == () and block.body.startswith("To: whom")


def test_major_incident_commands():
    block = commands("#major\n#attach 12\n#detach #13\n#major 7\n")
    assert block.errors == ()
    assert [(c.name, c.value) for c in block.commands] == [
        ("major", None), ("attach", 12), ("detach", 13), ("major", 7)]  # fmt: skip
    for bad in ("#attach", "#detach x", "#major seven"):
        assert "by its number" in commands(bad).errors[0]
