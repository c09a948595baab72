"""maild.mail.trace: our Received line, foreign verdicts renamed, the client source."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from maild.config.settings import settings_from_mapping
from maild.mail.trace import client_source, received_line, untrusted_results

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
OURS = received_line(by="mx.example.com", protocol="ESMTP", now=NOW, helo="client.example.org",
                     ip="192.0.2.7")  # fmt: skip


def test_received_line_names_the_client_and_cannot_be_steered_by_helo():
    assert OURS == (b"Received: from client.example.org ([192.0.2.7]) by mx.example.com (maild) "
                    b"with ESMTP;\r\n\tTue, 01 Dec 2026 09:30:00 +0000\r\n")  # fmt: skip
    evil = received_line(by="mx", protocol="ESMTP", now=NOW, helo="x ([10.0.0.1]) by y;\r\nZ: 1",
                         ip="2001:db8::5")  # fmt: skip
    assert evil.count(b"\r\n") == 2 and b"[IPv6:2001:db8::5]" in evil
    assert client_source([evil.decode()[10:]], 1) == "2001:db8::/64"


FORGED = b"Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n"
BORDER = b"Received: from sender.example.net ([198.51.100.9]) by mx.example.com; x\r\n"


@pytest.mark.parametrize(
    ("raw", "hops", "renamed"),
    [
        # maild is the MX: a verdict anywhere in the client's header is foreign.
        (FORGED + b"Subject: x\r\n\r\nbody", 1, True),
        # A border server wrote its verdict above its Received line: trusted with 2 hops.
        (FORGED + BORDER + b"Subject: x\r\n\r\nbody", 2, False),
        # ...but one below the border's line came from outside.
        (BORDER + FORGED + b"Subject: x\r\n\r\nbody", 2, True),
        # Another authserv-id is nobody's concern here.
        (FORGED.replace(b"mx.example.com", b"mx.other.example") + b"\r\nbody", 1, False),
    ],
)
def test_foreign_verdicts_are_renamed(raw, hops, renamed):
    out = untrusted_results(raw, ["MX.example.com"], hops)
    assert (out != raw) == renamed
    if renamed:
        assert b"X-Maild-Untrusted-Authentication-Results: mx.example.com;" in out
        assert (
            out.replace(b"X-Maild-Untrusted-Authentication-Results", b"Authentication-Results")
            == raw
        )


@pytest.mark.parametrize(
    ("received", "hops", "source"),
    [
        (["from client.example.org ([192.0.2.7]) by mx (maild) with ESMTP; d"], 1, "192.0.2.7"),
        # Postfix: HELO first, then (rDNS [IP]); a HELO of "[10.1.1.1]" is not the client.
        (["from x (maild) by y; d",
          "from [10.1.1.1] (unknown [203.0.113.5]) by mx.example.com (Postfix); d"], 2,
         "203.0.113.5"),
        # Exchange: (IP) without brackets.
        (["from x by y; d", "from MAIL.example.net (198.51.100.3) by EX01; d"], 2, "198.51.100.3"),
        (["from x by y; d", "from h ([IPv6:2001:db8:1:2::9]) by mx; d"], 2, "2001:db8:1:2::/64"),
        (["by mx (maild) with IMAP; d"], 1, None),  # our IMAP line names no client
        # Behind the local MTA (LMTP): maild's client is this machine; the MTA's
        # own line names the sender's server.
        (["from localhost ([127.0.0.1]) by mx (maild) with LMTP; d",
          "from out.example.net (out.example.net [203.0.113.5]) by mx (Postfix); d"], 1,
         "203.0.113.5"),
        (["from localhost ([::1]) by mx (maild) with LMTP; d", "by mx (Postfix, from userid 0); d"],
         1, "::/64"),  # submitted on this machine: it is the source
        (["from x by y; d"], 2, None),  # fewer hops than configured: unknown
    ],
)  # fmt: skip
def test_client_source(received, hops, source):
    assert client_source(received, hops) == source


def test_authentication_results_check_is_on_wherever_a_trusted_server_is_named():
    def check(**agent_mail):
        return settings_from_mapping(
            {"agent_mail": agent_mail}
        ).agent_mail.check_authentication_results

    assert check() is False
    assert check(trusted_authserv_ids=["mx.example.com"]) is True
    assert (
        check(trusted_authserv_ids=["mx.example.com"], require_authentication_results=False)
        is False
    )
    assert settings_from_mapping({}).agent_mail.reply_token_days == 30
