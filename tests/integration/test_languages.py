"""Swedish is the third language: requesters and agents get mail in their own
language, with local times, on SQLite and PostgreSQL (issue 19).

Real intake, worker and sender; every mail lands in the outgoing Maildir and
the tests read what each person received.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support.desk import Desk, make_message, make_settings, reply_to

AGENTS = [
    {"email": "sara@example.com", "name": "Sara Sundqvist", "tier": 1, "language": "sv"},
    {"email": "anna@example.com", "name": "Anna Agent", "tier": 1},  # tiers.language: en
    {"email": "sec@example.com", "name": "Seppo Turva", "tier": 3, "groups": ["security"],
     "language": "fi"},
]  # fmt: skip
ENGLISH = re.compile(r"\b(the|your|ticket|we|please|will|has|and)\b", re.IGNORECASE)


@pytest.fixture
def desk(db_url: str, tmp_path: Path) -> Iterator[Desk]:
    settings = make_settings(
        tmp_path, db_url, agents=AGENTS,
        helpdesk={"timezone": "Europe/Helsinki", "names": {"sv": "IT-stöd", "fi": "IT-tuki"}},
    )  # fmt: skip
    d = Desk(settings)
    yield d
    d.close()


def by_recipient(mails: list[EmailMessage]) -> dict[str, list[EmailMessage]]:
    out: dict[str, list[EmailMessage]] = defaultdict(list)
    for m in mails:
        for addr in m["To"].addresses:
            out[addr.addr_spec].append(m)
    return dict(out)


def text(mail: EmailMessage) -> str:
    return mail.get_body(("plain",)).get_content()


def flat(mail: EmailMessage) -> str:
    return " ".join(text(mail).split())


def test_a_swedish_request_gets_a_swedish_acknowledgement_and_swedish_agents_swedish_notices(
    desk,
):
    p = desk.process(make_message(
        sender="Maja Lindholm <maja@example.org>", subject="Kan inte logga in",
        body="Hej!\n\nJag har glömt mitt lösenord och nu är kontot låst. Kan ni hjälpa mig?\n\n"
             "Mvh Maja\n",
    ))  # fmt: skip
    ticket = desk.ticket(p.ticket_id)
    assert ticket["language"] == "sv" and ticket["category"] == "access"
    got = by_recipient(desk.outgoing())
    (ack,) = got["maja@example.org"]
    assert ack["Content-Language"] == "sv"
    assert ack["From"].addresses[0].display_name == "IT-stöd"
    body = flat(ack)
    assert body.startswith("Hej, Tack för ditt meddelande.")  # unverified: no name (issue 14)
    # The category's questions, in Swedish; the deadline in Helsinki time, Finland-Swedish form.
    assert "Vilket system eller vilken tjänst försöker du logga in i" in body
    assert re.search(
        r"Vi svarar dig senast \w{2,3} \d{1,2}\.\d{1,2}\.2026 kl\. \d{1,2}\.\d\d", body
    )
    assert "UTC" not in body and not ENGLISH.search(body.replace("Mvh Maja", ""))
    assert body.endswith("Med vänliga hälsningar IT-stöd")
    # Sara reads Swedish, Anna English: each agent in their own language.
    (to_sara,) = got["sara@example.com"]
    (to_anna,) = got["anna@example.com"]
    assert "Ett nytt ärende väntar på behandling." in flat(to_sara)
    assert f"[#{p.ticket_id}] P3 nytt ärende: Kan inte logga in" == to_sara["Subject"]
    assert "A new ticket needs handling." in flat(to_anna)

    # The requester answers the acknowledgement later, in Swedish: no second language.
    desk.process(reply_to(ack, sender="Maja Lindholm <maja@example.org>",
                          body="Det gäller Outlook på min bärbara dator."))  # fmt: skip
    update = by_recipient(desk.outgoing()).get("sara@example.com", [])[-1]
    assert "svarade i ärendet" in flat(update)


def test_a_swedish_agents_refused_command_is_explained_in_swedish(desk):
    desk.process(make_message(sender="Maja Lindholm <maja@example.org>",
                              subject="Skrivaren fungerar inte",
                              body="Hej, skrivaren på andra våningen fungerar inte. Mvh Maja"))  # fmt: skip
    (note,) = by_recipient(desk.outgoing())["sara@example.com"]
    before = len(desk.outgoing())
    reply_address = note["Reply-To"].addresses[0].addr_spec
    raw = reply_to(note, sender="Sara Sundqvist <sara@example.com>",
                   body="#priority P9\n\nHej Maja, jag kommer förbi i eftermiddag.",
                   message_id="<sara-1@example.com>")  # fmt: skip
    desk.process(raw, recipient="help@example.com", envelope_to=(reply_address,))
    (refused,) = by_recipient(desk.outgoing()[before:])["sara@example.com"]
    body = flat(refused)
    assert "INTE verkställt" in refused["Subject"]
    assert "#priority P9: prioriteten måste vara P1, P2, P3 eller P4" in body
    assert "#resolve [meddelande till anmälaren]" in body and not ENGLISH.search(body)


def test_a_swedish_security_incident_advises_first_and_the_finnish_security_contact_reads_finnish(
    desk,
):
    p = desk.process(make_message(
        sender="Maja Lindholm <maja@example.org>", subject="Tappat jobbtelefonen",
        body="Hej, jag tappade min jobbtelefon på bussen i går kväll. Den har min e-post och "
             "kunduppgifter. Mvh Maja",
    ))  # fmt: skip
    ticket = desk.ticket(p.ticket_id)
    assert ticket["security"] and ticket["priority"] == "P1"
    got = by_recipient(desk.outgoing())
    body = flat(got["maja@example.org"][0])
    assert "informationssäkerhetsincident" in body
    assert "Gör så här tills vi kontaktar dig: - Radera ingenting." in body
    assert body.index("Radera ingenting.") < body.index("Vi kan hjälpa dig snabbare")
    seppo = flat(got["sec@example.com"][0])
    assert "Uusi P1-tukipyyntö" in seppo or "Uusi tukipyyntö" in seppo
    assert "tietosuojavaltuutetulle viimeistään" in seppo and "klo" in seppo
