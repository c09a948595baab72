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
