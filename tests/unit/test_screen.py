"""Screening rules, each on its own and over the fixture corpus."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from maild.config.settings import settings_from_mapping
from maild.mail.parse import parse
from maild.pipeline.screen import Envelope, Verdict, is_auto_reply, is_bounce, is_own_loop, screen
from tests.support.desk import make_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
MANIFEST = tomllib.loads((FIXTURES / "MANIFEST.toml").read_text())
SETTINGS = settings_from_mapping({})
ENV = Envelope(mail_from="someone@example.org", recipient="help@example.com")
EXPECTED = {"new": Verdict.PERSON, "reply": Verdict.PERSON, "hostile": Verdict.PERSON,
            "auto_reply": Verdict.AUTOMATED, "list": Verdict.AUTOMATED, "bounce": Verdict.BOUNCE}  # fmt: skip


@pytest.mark.parametrize("name", sorted(n for n, s in MANIFEST.items() if s["kind"] in EXPECTED))
def test_fixture_verdicts(name):
    spec = MANIFEST[name]
    msg = parse((FIXTURES / spec["file"]).read_bytes())
    assert screen(msg, ENV, SETTINGS).verdict == EXPECTED[spec["kind"]]


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto-Submitted": "auto-replied"},
        {"Auto-Submitted": "  Auto-Generated ; reason=x"},
        {"X-Autoreply": "yes"},
        {"X-Autorespond": "true"},
        {"Precedence": "bulk"},
        {"Precedence": "JUNK"},
        {"Precedence": "auto_reply"},
        {"X-Auto-Response-Suppress": "OOF"},
    ],
)
def test_automated_headers(headers):
    assert is_auto_reply(parse(make_message(headers=headers)), ENV, SETTINGS)


@pytest.mark.parametrize(
    "subject",
    ["Out of Office: Printer", "Automatic reply: [#1] x", "Automaattinen vastaus: [#1] x",
     "Poissa toimistolta", "AW: Abwesenheitsnotiz", "Autosvar: x"],
)  # fmt: skip
def test_out_of_office_subjects(subject):
    assert is_auto_reply(parse(make_message(subject=subject)), ENV, SETTINGS)


def test_person_is_not_automated():
    msg = parse(make_message(headers={"Auto-Submitted": "no", "Precedence": "normal"},
                             subject="Re: out of toner"))  # fmt: skip
    assert is_auto_reply(msg, ENV, SETTINGS) is None


def test_bounce_signals():
    assert is_bounce(parse(make_message()), Envelope("", None), SETTINGS)
    assert is_bounce(parse(make_message(sender="MAILER-DAEMON@mx.example.org")), ENV, SETTINGS)
    assert is_bounce(parse(make_message(headers={"X-Failed-Recipients": "a@b.c"})), ENV, SETTINGS)
    assert is_bounce(parse(make_message()), ENV, SETTINGS) is None


def test_own_loop():
    assert is_own_loop(
        parse(make_message(headers={"X-Maild-Loop": "helpdesk.example.com"})), ENV, SETTINGS
    )
    ours = "<" + "0123456789abcdef" * 2 + "@helpdesk.example.com>"  # what new_message_id makes
    assert is_own_loop(parse(make_message(message_id=ours)), ENV, SETTINGS)
    # Our domain on a Message-ID of another shape is not ours (issue 14, item 9): a
    # mail client of someone whose domain it also is wrote it.
    thunderbird = "<5f0c3e7a-8b52-4c1a-9e3f-1d2c3b4a5e6f@helpdesk.example.com>"
    assert is_own_loop(parse(make_message(message_id=thunderbird)), ENV, SETTINGS) is None
    assert (
        is_own_loop(parse(make_message(headers={"X-Maild-Loop": "other.example"})), ENV, SETTINGS)
        is None
    )


# --- issue 6: each rule on its own -------------------------------------------------

from maild.pipeline import screen as sc  # noqa: E402


def _msg(**kw):
    return parse(make_message(**kw))


@pytest.mark.parametrize(
    "value",
    ["auto-replied", "Auto-Replied", "  AUTO-GENERATED  ", "auto-replied; owner-email=x@y.z",
     "auto-replied (vacation)", "(comment) auto-notified", '"auto-replied"', ""],
)  # fmt: skip
def test_auto_submitted_in_any_spelling_and_padding(value):
    assert sc.is_auto_submitted(_msg(headers={"Auto-Submitted": value}), ENV, SETTINGS)


@pytest.mark.parametrize("value", ["no", "No", "  NO  ", "no (a person wrote this)", "no; x=y"])
def test_auto_submitted_no_is_a_person(value):
    assert sc.is_auto_submitted(_msg(headers={"Auto-Submitted": value}), ENV, SETTINGS) is None


@pytest.mark.parametrize(
    "sender",
    ["noreply@example.org", "no-reply@example.org", "No_Reply@example.org",
     "donotreply@example.org", "do-not-reply@example.org", "noreply-alerts@example.org",
     "bounces+123@example.org"],
)  # fmt: skip
def test_noreply_style_senders(sender):
    assert sc.is_noreply_sender(_msg(sender=sender), ENV, SETTINGS)


@pytest.mark.parametrize("sender", ["norea@example.org", "replyall@example.org", "bob@noreply.fi"])
def test_senders_that_only_look_alike_are_people(sender):
    assert sc.is_noreply_sender(_msg(sender=sender), ENV, SETTINGS) is None


@pytest.mark.parametrize(
    "subject",
    ["Out of Office AutoReply: Printer", "Automatic Reply: [#3] x", "Auto-Reply: x",
     "RE: Automaattinen vastaus: [#1] x", "Poissa toimistolta:", "Lomavastaaja: x",
     "Automatiskt svar: x", "Automatische Antwort: x", "Réponse automatique : x",
     "Respuesta automática: x", "Bob Smith is out of the office.", "Out of office",
     "Afwezig: x", "Fuori sede: x"],
)  # fmt: skip
def test_more_out_of_office_subjects(subject):
    assert sc.has_out_of_office_subject(_msg(subject=subject), ENV, SETTINGS)


@pytest.mark.parametrize(
    "subject",
    ["Out of office message won't turn off", "Automatic reply not working in Outlook",
     "Poissa toimistolta -viesti ei toimi", "Re: printer is out of office supplies",
     "Autoreply rules for the sales team"],
)  # fmt: skip
def test_people_asking_about_out_of_office_are_people(subject):
    assert sc.has_out_of_office_subject(_msg(subject=subject), ENV, SETTINGS) is None
    assert screen(_msg(subject=subject), ENV, SETTINGS).verdict == Verdict.PERSON


def test_our_own_from_address_is_our_loop():
    msg = _msg(sender="Help Desk <help+tag@example.com>")
    assert sc.is_from_us(msg, ENV, SETTINGS)
    assert screen(msg, ENV, SETTINGS).verdict == Verdict.OWN_LOOP


def test_read_receipt_is_automated_not_a_bounce():
    raw = (FIXTURES.parent / "autoreplies" / "read_receipt_mdn.eml").read_bytes()
    msg = parse(raw)
    assert sc.is_delivery_report(msg, ENV, SETTINGS) is None
    assert screen(msg, ENV, SETTINGS).verdict == Verdict.AUTOMATED


def test_return_path_of_a_mailer_daemon_is_a_bounce():
    msg = _msg(headers={"Return-Path": "<MAILER-DAEMON@mx.example.org>"})
    assert sc.has_null_return_path(msg, ENV, SETTINGS)
    batv = Envelope("prvs=1234abcd=ndr@example.org", None)
    assert sc.has_null_return_path(_msg(), batv, SETTINGS)
    assert sc.has_null_return_path(_msg(), ENV, SETTINGS) is None


def test_mail_to_our_verp_address_is_a_bounce_unless_plainly_an_auto_reply():
    env = Envelope(None, "help@example.com", to=("help+bounces.12.abcdef@example.com",))
    assert screen(_msg(), env, SETTINGS).verdict == Verdict.BOUNCE
    ooo = _msg(headers={"Auto-Submitted": "auto-replied"}, subject="Automatic reply: x")
    assert screen(ooo, env, SETTINGS).verdict == Verdict.AUTOMATED


def test_forwarded_bounce_from_a_person_is_a_person():
    raw = (FIXTURES.parent / "bounces" / "postfix_01.txt").read_bytes()
    inner = parse(raw)
    assert screen(inner, ENV, SETTINGS).verdict == Verdict.BOUNCE
    fwd = make_message(subject="Fwd: Undelivered Mail Returned to Sender",
                       body="Why does this bounce?\n\n" + raw.decode("latin-1"))  # fmt: skip
    assert screen(parse(fwd), ENV, SETTINGS).verdict == Verdict.PERSON


def test_every_rule_is_listed_in_order():
    assert [v for v, _r in sc.SCREENS] == [Verdict.OWN_LOOP, Verdict.BOUNCE, Verdict.SPAM,
                                           Verdict.AUTOMATED, Verdict.LIST]  # fmt: skip


def test_list_mail_not_addressed_to_us_is_automated():
    msg = _msg(to="users@lists.example.org", headers={"List-Id": "<users.lists.example.org>"})
    assert screen(msg, ENV, SETTINGS).rule == "is_list_mail"
