"""Spam verdict headers and list/group mail: each rule on its own, and the fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from maild.config.settings import settings_from_mapping
from maild.mail.parse import parse
from maild.pipeline import screen as sc
from maild.pipeline.screen import Envelope, Verdict, screen
from tests.support.desk import make_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SETTINGS = settings_from_mapping({})
ENV = Envelope(mail_from="someone@example.org", recipient="help@example.com")


def _msg(**kw):
    return parse(make_message(**kw))


@pytest.mark.parametrize(
    "headers",
    [{"X-Spam-Flag": "YES"}, {"X-Spam-Flag": "yes"}, {"X-Spam": "Yes"}, {"X-Spam": "True"},
     {"X-Spam-Status": "Yes, score=7.9 required=5.0 tests=URIBL_BLOCKED"},
     {"X-Spamd-Result": "default: True [16.20 / 15.00]; BAYES_SPAM(5.10)"},
     {"X-Rspamd-Action": "add header"}, {"X-Spam-Action": "reject"},
     {"X-Spam-Action": "rewrite subject"}, {"X-Rspamd-Score": "12.31"},
     {"X-Spam-Score": "5.0"}],
)  # fmt: skip
def test_spam_verdicts(headers):
    msg = _msg(headers=headers)
    assert sc.has_spam_verdict(msg, ENV, SETTINGS)
    assert screen(msg, ENV, SETTINGS).verdict == Verdict.SPAM


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Spam-Flag": "NO"}, {"X-Spam": "No"},
     {"X-Spam-Status": "No, score=-0.9 required=5.0 tests=BAYES_00"},
     {"X-Spamd-Result": "default: False [3.40 / 15.00]"}, {"X-Rspamd-Action": "no action"},
     {"X-Spam-Action": "greylist"}, {"X-Rspamd-Score": "4.99"}, {"X-Spam-Level": "****"},
     # A yes/no verdict outranks a bare score.
     {"X-Spam-Status": "No, score=5.5 required=6.0", "X-Spam-Score": "5.5"}],
)  # fmt: skip
def test_not_spam(headers):
    assert sc.has_spam_verdict(_msg(headers=headers), ENV, SETTINGS) is None


def test_any_yes_wins_over_a_forged_no_above_it():
    raw = make_message(headers={"X-Spam-Flag": "NO"}).replace(
        b"X-Spam-Flag: NO", b"X-Spam-Flag: NO\r\nX-Spam-Flag: YES")  # fmt: skip
    assert sc.has_spam_verdict(parse(raw), ENV, SETTINGS)


def test_spam_settings():
    off = settings_from_mapping({"screening": {"spam_headers": False}})
    assert sc.has_spam_verdict(_msg(headers={"X-Spam-Flag": "YES"}), ENV, off) is None
    no_scores = settings_from_mapping({"screening": {"spam_threshold": 0}})
    assert sc.has_spam_verdict(_msg(headers={"X-Rspamd-Score": "50"}), ENV, no_scores) is None
    high = settings_from_mapping({"screening": {"spam_threshold": 15}})
    assert sc.has_spam_verdict(_msg(headers={"X-Rspamd-Score": "12.3"}), ENV, high) is None


@pytest.mark.parametrize(
    ("name", "verdict"),
    [("spamassassin_yes.eml", Verdict.SPAM), ("rspamd_add_header.eml", Verdict.SPAM),
     ("rspamd_score_only.eml", Verdict.SPAM), ("spamassassin_no.eml", Verdict.PERSON)],
)  # fmt: skip
def test_spam_fixtures(name, verdict):
    assert screen(parse((FIXTURES / "spam" / name).read_bytes()), ENV, SETTINGS).verdict == verdict


def test_a_spam_bounce_is_still_a_bounce():
    msg = _msg(sender="MAILER-DAEMON@mx.example.org", headers={"X-Spam-Flag": "YES"})
    assert screen(msg, ENV, SETTINGS).verdict == Verdict.BOUNCE


# --- lists and groups -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "verdict", "rule"),
    [("lists/google_groups.eml", Verdict.LIST, "is_group_mail"),
     ("lists/group_bcc.eml", Verdict.LIST, "is_group_mail"),
     ("mail/list_mail.eml", Verdict.AUTOMATED, "is_list_mail")],
)  # fmt: skip
def test_list_fixtures(name, verdict, rule):
    result = screen(parse((FIXTURES / name).read_bytes()), ENV, SETTINGS)
    assert (result.verdict, result.rule) == (verdict, rule)


@pytest.mark.parametrize(
    ("to", "headers"),
    [("help@example.com", {"List-Id": "<users.lists.example.org>"}),
     ("Someone <someone@example.org>, help+it@example.com", {"Precedence": "list"}),
     ("someone@example.org", {"List-Post": "<mailto:help@example.com>"}),
     ("someone@example.org", {"List-Id": "Help desk group <help.example.com>"})],
)  # fmt: skip
def test_list_mail_addressed_to_us_is_a_person_without_acknowledgement(to, headers):
    result = screen(_msg(to=to, headers=headers), ENV, SETTINGS)
    assert (result.verdict, result.rule) == (Verdict.LIST, "is_group_mail")


def test_list_mail_we_only_subscribe_to_is_ignored():
    msg = _msg(to="users@lists.example.org", headers={"List-Id": "<users.lists.example.org>"})
    assert screen(msg, ENV, SETTINGS).rule == "is_list_mail"
    # Delivered to us by the envelope only: that is what a subscription looks like.
    env = Envelope("users-bounces@lists.example.org", "help@example.com", ("help@example.com",))
    assert screen(msg, env, SETTINGS).verdict == Verdict.AUTOMATED


def test_a_group_address_is_acknowledged_like_direct_mail():
    groups = settings_from_mapping({"screening": {"group_addresses": ["help@example.com"]}})
    msg = parse((FIXTURES / "lists" / "google_groups.eml").read_bytes())
    assert screen(msg, ENV, groups).verdict == Verdict.PERSON


def test_an_auto_reply_through_a_group_is_still_automated():
    msg = _msg(headers={"List-Id": "<help.example.com>", "Auto-Submitted": "auto-replied"})
    assert screen(msg, ENV, SETTINGS).verdict == Verdict.AUTOMATED


def test_group_addresses_must_be_served():
    from maild.errors import ConfigError

    with pytest.raises(ConfigError, match="screening.group_addresses"):
        settings_from_mapping({"screening": {"group_addresses": ["other@example.com"]}})
