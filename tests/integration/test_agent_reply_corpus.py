"""Agents answer from every common mail client: the requester gets their words only.

Each fixture in tests/fixtures/agent_replies/ is a reply as a client writes it
(Gmail, Outlook desktop/web/mobile, Outlook.com, Apple Mail, iPhone, Android,
Thunderbird, mutt, Yahoo, AOL, Comcast, Sparrow; English, Finnish, Swedish,
German, French, Spanish, Dutch, Russian; text, HTML or both; above, below or
between the quoted notification). Each is sent, as that agent, to the reply
address of a real notification, through the whole pipeline; the test reads the
mail the requester receives.
"""

from __future__ import annotations

import tomllib
from email.message import EmailMessage
from pathlib import Path

import pytest

from maild.store.db import make_engine, upgrade
from tests.support.desk import Desk, make_message, make_settings

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "agent_replies"
MANIFEST = tomllib.loads((HERE / "MANIFEST.toml").read_text())
AGENTS = [{"email": "anna@example.com", "name": "Anna Agent", "tier": 1}]
# What the quoted notification carries: never for the requester (unless the agent
# answers a line of it between quotes, or the split is uncertain).
HISTORY_MARKERS = ("A new ticket needs handling", "Requester: Carol Customer",
                   "Lines at the top of your reply", "help+")  # fmt: skip


@pytest.fixture(scope="module")
def desk(tmp_path_factory):
    """One desk for the corpus (a migration per case would triple its run time);
    each case opens its own ticket two hours after the last, clear of the rate limits."""
    tmp = tmp_path_factory.mktemp("corpus")
    url = f"sqlite:///{tmp / 'maild.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    d = Desk(make_settings(tmp, url, agents=AGENTS))
    yield d
    d.close()


def body(mail: EmailMessage) -> str:
    """The text part as a person reads it: maild wraps lines at 76 columns, so
    wrapped lines are joined (runs of white space as one space)."""
    return flat(mail.get_body(("plain",)).get_content())


def flat(text: str) -> str:
    return " ".join(text.split())


def to(mail: EmailMessage) -> str:
    return mail["To"].addresses[0].addr_spec


def test_every_fixture_is_listed_and_up_to_date():
    assert sorted(MANIFEST) == sorted(p.stem for p in HERE.glob("*.eml"))
    import subprocess
    import sys

    check = subprocess.run([sys.executable, str(HERE / "_make.py"), "--check"],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_the_requester_gets_the_agents_words_and_none_of_the_history(desk, name):
    case = MANIFEST[name]
    desk.clock.advance(hours=2)
    seen = len(desk.outgoing())
    opened = desk.process(make_message(
        sender="Carol Customer <carol@example.net>", subject="VPN drops every ten minutes",
        body="My VPN connection drops every ten minutes since Monday.\n"
             "I am on the Helsinki office network.\n", message_id=f"<carol-{name}@example.net>",
    ))  # fmt: skip
    n = opened.ticket_id
    (note,) = [m for m in desk.outgoing()[seen:] if to(m) == "anna@example.com"]
    reply_address = note["Reply-To"].addresses[0].addr_spec
    raw = ((HERE / f"{name}.eml").read_bytes()
           .replace(b"@@TO@@", reply_address.encode())
           .replace(b"@@IN_REPLY_TO@@", str(note["Message-ID"]).encode())
           .replace(b"@@N@@", str(n).encode()))  # fmt: skip
    desk.process(raw, recipient="help@example.com", envelope_to=(reply_address,))

    to_carol = [m for m in desk.outgoing()[seen:] if to(m) == "carol@example.net"]
    ack, reply = to_carol  # one acknowledgement, one reply from the help desk
    text = body(reply)
    assert reply["From"] == "Help Desk <help@example.com>"
    for words in case["keep"]:
        assert flat(words) in text, f"{name}: the requester lost {words!r}:\n{text}"
    for line in case.get("questions", []):
        assert flat(line) in text, f"{name}: the answered question is missing {line!r}:\n{text}"
    if case["layout"] != "uncertain":
        markers = [*HISTORY_MARKERS, *case["drop"]]
        if case["layout"] != "interleaved":
            markers.append("drops every ten minutes since Monday")
        for marker in markers:
            assert flat(marker) not in text, f"{name}: {marker!r} reached the requester:\n{text}"

    ticket = desk.ticket(n)
    for key, value in case.get("ticket", {}).items():
        assert ticket[key] == value, f"{name}: {key} is {ticket[key]!r}, not {value!r}"
    to_anna = [m for m in desk.outgoing()[seen:] if to(m) == "anna@example.com"][1:]
    told = "could not be told apart from the quoted mail" in "".join(body(m) for m in to_anna)
    assert told == (case["layout"] == "uncertain"), f"{name}: agent told of the quote: {told}"
