"""Screening rules, each on its own and over the fixture corpus."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from maild.config import settings_from_mapping
from maild.parse import parse
from maild.screen import Envelope, Verdict, is_auto_reply, is_bounce, is_own_loop, screen
from maild.testing import make_message

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
        {"List-Id": "<users.lists.example.org>"},
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
    assert is_own_loop(parse(make_message(message_id="<x@helpdesk.example.com>")), ENV, SETTINGS)
    assert (
        is_own_loop(parse(make_message(headers={"X-Maild-Loop": "other.example"})), ENV, SETTINGS)
        is None
    )
