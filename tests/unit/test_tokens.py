from __future__ import annotations

import stat

import pytest

from maild.errors import ConfigError
from maild.mail.tokens import Signer, load_or_create_secret


def test_sign_and_verify():
    s = Signer(b"k" * 32)
    token = s.sign("ticket", "42")
    assert len(token) == 26 and token.isalnum() and token == token.lower()
    assert s.verify(token, "ticket", "42")
    assert s.verify(token.upper(), "ticket", "42")
    assert not s.verify(token, "ticket", "43")
    assert not s.verify(token[:-1] + ("a" if token[-1] != "a" else "b"), "ticket", "42")
    assert not Signer(b"x" * 32).verify(token, "ticket", "42")


def test_secret_is_created_once_with_private_mode(tmp_path):
    path = tmp_path / "state" / "secret.key"
    first = load_or_create_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first and len(first) >= 32


def test_short_secret_is_a_config_error(tmp_path):
    path = tmp_path / "secret.key"
    path.write_text("short")
    with pytest.raises(ConfigError) as info:
        load_or_create_secret(path)
    assert info.value.key == "helpdesk.secret_file"


# --- issue 14: requesters' reply addresses, a return path per recipient ---------------------


def test_a_requester_reply_address_verifies_only_its_owner():
    from datetime import UTC, date, datetime

    from maild.mail.replyaddr import (
        find_requester_token,
        parse_reply_address,
        parse_requester_address,
        requester_address,
    )

    s = Signer(b"k" * 32)
    address = requester_address(s, "Help@Example.com", 42, "Bob@Example.org", date(2027, 3, 1))
    assert address.startswith("help+42.r20270301.") and address.endswith("@example.com")
    token = parse_requester_address(s, address.upper(), "bob@example.org")
    assert token is not None and token.valid and token.ticket == 42
    assert not token.expired(datetime(2027, 3, 1, 23, tzinfo=UTC))
    assert token.expired(datetime(2027, 3, 2, tzinfo=UTC))
    # Forwarded to Eve, it proves nothing about Eve; nor with its ticket or date changed.
    assert not parse_requester_address(s, address, "eve@evil.example").valid
    assert not parse_requester_address(s, address.replace("+42.", "+43."), "bob@example.org").valid
    assert not parse_requester_address(s, address.replace("0301", "0302"), "bob@example.org").valid
    # An agent's reply address is not a requester's, and the other way round.
    assert parse_reply_address(s, address) is None
    assert (
        parse_requester_address(s, "help+42.3.aaaaaaaaaaaaaaaaaaaaaaaaaa@example.com", "b") is None
    )
    found = find_requester_token(s, ["help@example.com", address], "bob@example.org")
    assert found is not None and found.valid


def test_each_recipient_has_a_return_path_of_its_own():
    from maild.mail.verp import Verp, first_verp, parse_verp, verp_address

    s = Signer(b"k" * 32)
    first, second = (verp_address(s, "help@example.com", 42, i) for i in (0, 1))
    assert first != second and first.startswith("help+bounces.42.0.")
    assert parse_verp(s, second) == Verp(42, 1)
    assert parse_verp(s, second.replace(".42.1.", ".42.0.")) is None  # not the other's
    assert parse_verp(s, verp_address(s, "help@example.com", 42)) == Verp(42, None)  # older form
    assert first_verp(s, ["bob@example.org", first.upper()]) == Verp(42, 0)
