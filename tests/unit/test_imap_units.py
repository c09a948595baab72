"""IMAP configuration, backoff, credentials and per-mailbox defaults (pure parts)."""

from __future__ import annotations

import random
import subprocess
import sys
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from maild.config.settings import ImapMailboxSettings, load_settings, settings_from_mapping
from maild.errors import ConfigError
from maild.intake.imap import LoginFailed, backoff_delay, credentials, lock_key
from maild.mail.parse import peek_return_path
from maild.pipeline.mailbox_defaults import apply_mailbox_defaults
from maild.pipeline.triage import Triage
from maild.store.states import TicketType

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "maild.example.toml"


def box(**values):
    table = {"name": "support", "host": "imap.example.com", "username": "support@example.com",
             "oauth2_token_command": "get-token"}  # fmt: skip
    table.update(values)
    return {k: v for k, v in table.items() if v is not None}


def test_mailboxes_are_a_list_of_tables(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    cfg = tmp_path / "maild.toml"
    cfg.write_text(f"""
[helpdesk]
addresses = ["help@example.com", "it@example.com"]
[imap]
poll_seconds = 30
[[imap.mailboxes]]
name = "support"
host = "outlook.office365.com"
username = "support@example.com"
oauth2_token_command = "get-token --tenant x"
[[imap.mailboxes]]
name = "it-desk"
host = "mail.example.com"
tls = "starttls"
username = "it"
password_file = "{pw}"
after = "flag"
address = "IT@example.com"
category = "hardware"
tier = 2
""")
    s = load_settings(cfg, environ={})
    assert s.imap.poll_seconds == 30.0
    first, second = s.imap.mailboxes
    assert (first.name, first.effective_port, first.tls, first.folder) == (
        "support", 993, "implicit", "INBOX")  # fmt: skip
    assert first.processed_folder == "Processed" and first.after == "move"
    assert (second.effective_port, second.after, second.tier) == (143, "flag", 2)
    assert second.password_file == pw and s.imap.mailbox("it-desk") is second


def test_mailboxes_from_the_environment(tmp_path):
    empty = tmp_path / "maild.toml"
    empty.write_text("")
    s = load_settings(None, environ={
        "MAILD_CONFIG": str(empty),
        "MAILD_IMAP__MAILBOXES": '[{name = "a", host = "h.example", username = "u", '
                                 'oauth2_token_command = "tok"}]'})  # fmt: skip
    assert s.imap.mailboxes[0].name == "a"


@pytest.mark.parametrize(
    ("imap", "key"),
    [
        ({"mailboxes": "support"}, "imap.mailboxes"),
        ({"mailboxes": ["support"]}, "imap.mailboxes[0]"),
        ({"mailboxes": [box(host=None)]}, "imap.mailboxes[0].host"),
        ({"mailboxes": [box(), box(name="b", port=70000)]}, "imap.mailboxes[1].port"),
        ({"mailboxes": [box(port="imaps")]}, "imap.mailboxes[0].port"),
        ({"mailboxes": [box(colour="blue")]}, "imap.mailboxes[0].colour"),
        ({"mailboxes": [box(tls="ssl")]}, "imap.mailboxes[0].tls"),
        ({"mailboxes": [box(tls="none")]}, "imap.mailboxes[0].tls"),
        ({"mailboxes": [box(), box()]}, "imap.mailboxes[1].name"),
        ({"mailboxes": [box(name="has space")]}, "imap.mailboxes[0].name"),
        ({"mailboxes": [box(password_file="/etc/passwd")]}, "imap.mailboxes[0].password_file"),
        ({"mailboxes": [box(oauth2_token_command="")]}, "imap.mailboxes[0].password_file"),
        ({"mailboxes": [box(oauth2_token_command=None, password_file="/nonexistent")]},
         "imap.mailboxes[0].password_file"),
        ({"mailboxes": [box(oauth2_token_command="get 'token")]},
         "imap.mailboxes[0].oauth2_token_command"),
        ({"mailboxes": [box(after="delete")]}, "imap.mailboxes[0].after"),
        ({"mailboxes": [box(processed_folder="INBOX")]}, "imap.mailboxes[0].processed_folder"),
        ({"mailboxes": [box(address="sales@example.com")]}, "imap.mailboxes[0].address"),
        ({"mailboxes": [box(tier=4)]}, "imap.mailboxes[0].tier"),
        ({"mailboxes": [box(ca_file="/nonexistent.pem")]}, "imap.mailboxes[0].ca_file"),
        ({"idle_seconds": 1800}, "imap.idle_seconds"),
        ({"batch_bytes": 1000}, "imap.batch_bytes"),
        ({"reconnect_min_seconds": 10, "reconnect_max_seconds": 5},
         "imap.reconnect_max_seconds"),
    ],
)  # fmt: skip
def test_bad_mailbox_values_name_their_key(imap, key):
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"imap": imap})
    assert info.value.key == key


def test_tls_none_is_allowed_on_loopback_only():
    for host in ("127.0.0.1", "localhost", "::1"):
        settings_from_mapping({"imap": {"mailboxes": [box(host=host, tls="none")]}})


def test_cli_names_the_mailbox_key_and_exits_78(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[imap.mailboxes]]\nname = "support"\nhost = "h"\nusername = "u"\n'
                   'oauth2_token_command = "t"\nport = 99999\n')  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), "check-config"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 78
    assert proc.stderr.strip() == (
        "maild: configuration error: imap.mailboxes[0].port: not a port number: 99999"
    )


def test_example_documents_every_mailbox_key_with_its_default():
    """The commented [[imap.mailboxes]] block, uncommented, is valid and shows the defaults."""
    text = EXAMPLE.read_text()
    start = text.index("\n# [[imap.mailboxes]]\n") + 1
    block = []
    for line in text[start:].splitlines():
        if not line.startswith("# "):
            break
        block.append(line[2:].split("  #", 1)[0])
    table = tomllib.loads("\n".join(block))["imap"]["mailboxes"][0]
    for f in fields(ImapMailboxSettings):
        assert f.name in table, f"imap.mailboxes.{f.name} is not documented in the example"
        if f.default is not MISSING and f.default is not None:
            assert table[f.name] == f.default, f"imap.mailboxes.{f.name}: example != default"
    assert set(table) == {f.name for f in fields(ImapMailboxSettings)}


# --- backoff, credentials, lock keys ---------------------------------------------


def test_backoff_doubles_with_jitter_up_to_the_cap():
    rand = random.Random(7)
    for failures, step in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (9, 60.0), (50, 60.0)]:
        delays = [backoff_delay(failures, 1.0, 60.0, rand) for _ in range(200)]
        assert step / 2 <= min(delays) and max(delays) <= step
        assert max(delays) - min(delays) > step / 4  # spread out, not in lock-step


def test_password_file_is_read_fresh_and_stripped(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret with spaces \n")
    mailbox = ImapMailboxSettings(name="a", host="h", username="u", password_file=pw)
    assert credentials(mailbox).secret == "s3cret with spaces "
    pw.write_text("rotated\r\n")
    assert credentials(mailbox).secret == "rotated"
    pw.unlink()
    with pytest.raises(LoginFailed, match="cannot read password_file"):
        credentials(mailbox)


def test_token_command_gives_an_xoauth2_token(tmp_path):
    ok = ImapMailboxSettings(name="a", host="h", username="u",
                             oauth2_token_command=f"{sys.executable} -c \"print('tok-123')\"")  # fmt: skip
    assert credentials(ok).mechanism == "xoauth2" and credentials(ok).secret == "tok-123"
    missing = ImapMailboxSettings(name="a", host="h", username="u",
                                  oauth2_token_command=str(tmp_path / "no-such-command"))  # fmt: skip
    with pytest.raises(LoginFailed, match="oauth2_token_command failed"):
        credentials(missing)


def test_lock_key_is_stable_and_fits_a_bigint():
    assert lock_key("support") == lock_key("support") != lock_key("sales")
    assert -(2**63) <= lock_key("support") < 2**63


def test_return_path_is_the_envelope_sender():
    assert peek_return_path(b"Return-Path: <>\r\nFrom: x@y\r\n\r\nbody") == ""
    assert peek_return_path(b"Return-Path: <Bob@Example.org>\r\n\r\n") == "bob@example.org"
    assert peek_return_path(b"From: x@y\r\n\r\n") is None


# --- per-mailbox ticket defaults ---------------------------------------------------


def triage(category="other", tier=1, security=False):
    return Triage(type=TicketType.INCIDENT, category=category, impact=3, urgency=2, priority=3,
                  tier=tier, security=security)  # fmt: skip


@pytest.fixture
def settings():
    return settings_from_mapping({"imap": {"mailboxes": [
        box(name="hw", category="hardware", tier=2), box(name="plain")]}})  # fmt: skip


def test_mailbox_defaults_fill_in_what_triage_left_open(settings):
    assert apply_mailbox_defaults(triage(), "hw", settings) == triage("hardware", 2)
    # A category triage found stays; the tier only rises.
    assert apply_mailbox_defaults(triage("network", 3), "hw", settings) == triage("network", 3)
    # Security tickets are never touched; other intake paths and plain mailboxes neither.
    assert apply_mailbox_defaults(triage("security", 3, True), "hw", settings).category == (
        "security"
    )
    assert apply_mailbox_defaults(triage(), None, settings) == triage()
    assert apply_mailbox_defaults(triage(), "plain", settings) == triage()
    assert apply_mailbox_defaults(triage(), "gone-from-config", settings) == triage()


def test_mailbox_category_fills_the_configured_catch_all():
    settings = settings_from_mapping({"triage": {"default_category": "general"},
                                      "imap": {"mailboxes": [box(category="hardware")]}})  # fmt: skip
    assert apply_mailbox_defaults(triage("general"), "support", settings).category == "hardware"
    assert apply_mailbox_defaults(triage("other"), "support", settings).category == "other"
