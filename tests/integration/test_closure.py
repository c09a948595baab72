"""Closure with the requester: a rating or a thank-you closes, "still broken" reopens,
the agent hears once either way, and the report counts it all.

Real SQLite and PostgreSQL (`db_url`) through the `Desk` harness; replies built
as mail clients build them (In-Reply-To and References to the resolved notice,
the notice quoted below).
"""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from maild.desk import report
from maild.desk.actions import ActionRefused
from tests.support import monitors as m
from tests.support.desk import Desk, make_message, make_settings, reply_to

AGENTS = [{"email": "anna@example.com", "name": "Anna Agent", "tier": 1}]
AGENT_ONCE = [("anna@example.com", "agent_update"), ("tier1@example.com", "agent_update")]


@pytest.fixture
def desk(db_url: str, tmp_path: Path) -> Iterator[Desk]:
    d = Desk(make_settings(tmp_path, db_url, tiers={"tier1": ["tier1@example.com"]},
                           agents=AGENTS, alerts=m.ALERTS))  # fmt: skip
    yield d
    d.close()


def text(mail: EmailMessage) -> str:
    return mail.get_body(("plain",)).get_content()


def resolved(desk: Desk, *, sender: str = "Bob Customer <bob@example.org>",
             subject: str = "Printer on 3rd floor not working", body: str | None = None,
             mid: str = "<orig-1@example.org>") -> tuple[int, EmailMessage]:  # fmt: skip
    """A ticket, answered and resolved by Anna; returns it and the requester's notice."""
    kw = {"body": body} if body else {}
    number = desk.process(make_message(sender=sender, subject=subject, message_id=mid,
                                       **kw)).ticket_id  # fmt: skip
    with desk.ops() as ops:
        ops.resolve(number, actor="anna@example.com", note="Replaced the toner.")
    address = sender.rpartition("<")[2].rstrip(">")
    (notice,) = [x for x in desk.outgoing()
                 if address in str(x["To"]) and f"[#{number}]" in str(x["Subject"])
                 and x["Subject"].split("]")[1].strip().startswith(("Resolved", "Ratkaistu"))]  # fmt: skip
    return number, notice


def answer(desk: Desk, notice: EmailMessage, body: str, sender: str, mid: str) -> None:
    quoted = "\n".join("> " + line for line in text(notice).splitlines())
    desk.process(reply_to(notice, sender=sender, body=f"{body}\n\nOn Monday the help desk "
                          f"wrote:\n{quoted}\n", message_id=mid))  # fmt: skip


def sent_since(desk: Desk, count: int) -> list[tuple[str, str]]:
    return [(to, row["kind"]) for row in desk.outbox()[count:] for to in row["to"]]


def test_the_resolved_notice_asks_to_confirm_and_to_rate(desk):
    _n, notice = resolved(desk)
    body = text(notice)
    assert 'A short "thanks" or "solved" closes the ticket' in body
    assert "Reply with a number from 1 (poor) to 5 (excellent)" in body


def test_rating_by_reply_in_english_closes_and_shows_in_the_report(desk):
    number, notice = resolved(desk)
    before = len(desk.outbox())
    answer(desk, notice, "5 - quick and friendly, thanks!", "Bob Customer <bob@example.org>",
           "<rate-1@example.org>")  # fmt: skip
    ticket = desk.ticket(number)
    assert ticket["status"] == "closed"
    assert ticket["satisfaction"]["score"] == 5
    assert ticket["satisfaction"]["comment"] == "quick and friendly, thanks!"
    # The agents working it (Anna and the tier-1 group) are told in one mail each;
    # the requester gets nothing more.
    assert sorted(sent_since(desk, before)) == AGENT_ONCE
    told = [x for x in desk.outgoing() if "anna@example.com" in str(x["To"])][-1]
    assert "rated the help 5/5" in text(told) and "quick and friendly" in text(told)
    with desk.sessions() as session:
        figures = report.build(session, desk.settings, desk.clock.now())
    assert figures["satisfaction"]["count"] == 1 and figures["satisfaction"]["average"] == 5
    assert figures["satisfaction"]["distribution"]["5"] == 1
    assert "Satisfaction: 1 rating(s), average 5.0 of 5" in report.render_text(figures)


def test_rating_by_reply_in_finnish_closes_and_shows_in_the_report(desk):
    number, notice = resolved(desk, sender="Matti Meikäläinen <matti@example.fi>",
                              subject="Tulostin ei toimi",
                              body="Tulostin ei toimi, näytössä on virhe E42. Kiitos, Matti",
                              mid="<fi-1@example.fi>")  # fmt: skip
    assert "Miten onnistuimme?" in text(notice)
    answer(desk, notice, "Arvosana 4, kiitos nopeasta avusta", "Matti <matti@example.fi>",
           "<rate-fi@example.fi>")  # fmt: skip
    ticket = desk.ticket(number)
    assert ticket["status"] == "closed"
    assert ticket["satisfaction"] == {"score": 4, "comment": "kiitos nopeasta avusta",
                                      "at": ticket["satisfaction"]["at"]}  # fmt: skip
    other, notice2 = resolved(desk, mid="<orig-2@example.org>")
    answer(desk, notice2, "2", "Bob Customer <bob@example.org>", "<rate-2@example.org>")
    with desk.sessions() as session:
        figures = report.build(session, desk.settings, desk.clock.now())
    assert figures["satisfaction"]["count"] == 2 and figures["satisfaction"]["average"] == 3.0
    (week,) = figures["weeks"]
    assert week["satisfaction"]["count"] == 2 and week["resolved"] == 2
    page = report.render_html(figures)
    assert 'id="satisfaction-average">3.0<' in page and 'id="satisfaction-count">2<' in page


@pytest.mark.parametrize(
    "sender, said",
    [("Bob Customer <bob@example.org>", "Thanks, it works now!"),
     ("Bob Customer <bob@example.org>", "Solved, thank you."),
     ("Matti <matti@example.fi>", "Kiitos, toimii taas!"),
     ("Matti <matti@example.fi>", "Ratkesi, kiitos paljon."),
     ("Sven <sven@example.se>", "Tack så mycket, det fungerar nu!")],
)  # fmt: skip
def test_a_thank_you_confirms_and_closes_and_never_reopens(desk, sender, said):
    address = sender.rpartition("<")[2].rstrip(">")
    number, notice = resolved(desk, sender=sender)
    before = len(desk.outbox())
    answer(desk, notice, said, sender, "<thanks@example.org>")
    ticket = desk.ticket(number)
    assert ticket["status"] == "closed" and ticket["satisfaction"] is None
    kinds = [e["kind"] for e in ticket["events"] if not e["kind"].endswith("_queued")]
    assert kinds[-3:] == ["article_added", "confirmed", "status"]
    assert sorted(sent_since(desk, before)) == AGENT_ONCE
    assert address not in {to for to, _kind in sent_since(desk, before)}


@pytest.mark.parametrize(
    "sender, said",
    [("Bob Customer <bob@example.org>", "Still broken, the same error E42."),
     ("Matti <matti@example.fi>", "Ei vieläkään toimi."),
     ("Bob Customer <bob@example.org>", "Thanks, but it still doesn't work."),
     ("Bob Customer <bob@example.org>", "The printer now prints everything twice, and the "
                                        "scanner on the same machine stopped too. Can you look?")],
)  # fmt: skip
def test_still_broken_or_anything_substantive_reopens_and_tells_the_agent_once(desk, sender,
                                                                                said):  # fmt: skip
    number, notice = resolved(desk, sender=sender)
    before = len(desk.outbox())
    answer(desk, notice, said, sender, "<again@example.org>")
    assert desk.ticket(number)["status"] == "open"
    kinds = sent_since(desk, before)
    assert [k for to, k in kinds if to == "anna@example.com"] == ["agent_update"]


def test_a_low_rating_that_says_it_is_still_broken_reopens_and_keeps_the_rating(desk):
    number, notice = resolved(desk)
    before = len(desk.outbox())
    answer(desk, notice, "1 - still not working", "Bob Customer <bob@example.org>",
           "<low@example.org>")  # fmt: skip
    ticket = desk.ticket(number)
    assert ticket["status"] == "open" and ticket["satisfaction"]["score"] == 1
    assert [k for to, k in sent_since(desk, before) if to == "anna@example.com"] == [
        "agent_update"]  # fmt: skip


def test_a_subject_tag_alone_records_thanks_but_closes_nothing(db_url, tmp_path):
    """A "Thanks!" that only carries [#N] in its subject: even with our mail server
    vouching for its From (DKIM), it is recorded and closes nothing; without that
    it is not even recorded as thanks (unverified: its text only, issue 14)."""
    desk = Desk(make_settings(tmp_path, db_url, tiers={"tier1": ["tier1@example.com"]},
                              agents=AGENTS, agent_mail={
                                  "trusted_authserv_ids": ["mx.example.com"]}))  # fmt: skip
    try:
        number, _notice = resolved(desk)
        desk.process(make_message(sender="Bob Customer <bob@example.org>",
                                  subject=f"Re: [#{number}] Resolved", body="Thanks!",
                                  message_id="<tag-0@example.org>"))  # fmt: skip
        ticket = desk.ticket(number)
        assert ticket["status"] == "resolved"
        assert "confirmed" not in [e["kind"] for e in ticket["events"]]
        vouched = (b"Authentication-Results: mx.example.com; dkim=pass header.d=example.org\r\n"
                   b"Received: from mail.example.org by mx.example.com with ESMTPS\r\n")  # fmt: skip
        desk.process(vouched + make_message(sender="Bob Customer <bob@example.org>",
                                            subject=f"Re: [#{number}] Resolved", body="Thanks!",
                                            message_id="<tag@example.org>"))  # fmt: skip
        ticket = desk.ticket(number)
        assert ticket["status"] == "resolved"  # neither reopened nor closed
        assert "confirmed" in [e["kind"] for e in ticket["events"]]
    finally:
        desk.close()


def test_the_desk_actions_behind_the_requesters_buttons(desk):
    number, _notice = resolved(desk)
    open_one = desk.process(make_message(message_id="<open@example.org>")).ticket_id
    with desk.ops() as ops:
        with pytest.raises(ActionRefused, match="once it is resolved"):
            ops.rate(open_one, 5, actor="bob@example.org")
        with pytest.raises(ActionRefused, match="1, 2, 3, 4 or 5"):
            ops.rate(number, 6, actor="bob@example.org")
        ops.rate(number, 3, actor="bob@example.org", comment="took a while")
    assert desk.ticket(number)["status"] == "closed"
    assert desk.ticket(number)["satisfaction"]["score"] == 3
    with desk.ops() as ops:
        ops.not_solved(number, actor="bob@example.org", text="It jammed again.")
    assert desk.ticket(number)["status"] == "open"
    with desk.ops() as ops:
        ops.resolve(number, actor="anna@example.com")
        ops.confirm_solved(number, actor="bob@example.org")
    assert desk.ticket(number)["status"] == "closed"
    alert = desk.process(m.nagios_host("db01", "DOWN"), client=m.MONITOR_IP).ticket_id
    with desk.ops() as ops:
        ops.resolve(alert, actor="anna@example.com")
        with pytest.raises(ActionRefused, match="no requester"):
            ops.rate(alert, 5, actor="nagios@mon.example.com")


def test_the_report_counts_reopens_and_time_to_resolve_per_week(desk):
    quick, notice = resolved(desk)  # resolved at once
    desk.clock.advance(days=7)
    slow = desk.process(make_message(message_id="<slow@example.org>")).ticket_id
    desk.clock.advance(hours=30)
    with desk.ops() as ops:
        ops.resolve(slow, actor="anna@example.com")
    desk.clock.advance(hours=1)
    slow_notice = [x for x in desk.outgoing() if f"[#{slow}] Resolved" in str(x["Subject"])][0]
    answer(desk, slow_notice, "Still broken.", "Bob Customer <bob@example.org>", "<sb@example.org>")
    desk.clock.advance(hours=2)
    with desk.ops() as ops:
        ops.resolve(slow, actor="anna@example.com")
    with desk.sessions() as session:
        figures = report.build(session, desk.settings, desk.clock.now())
    assert figures["reopen"] == {"resolved": 2, "reopened": 1, "rate_pct": 50.0}
    ttr = figures["time_to_resolve"]
    assert ttr["measured"] == 2 and ttr["target_h"] == 24.0 and ttr["within_target"] == 1
    assert [w["resolved"] for w in figures["weeks"]] == [1, 1]
    assert [w["reopened"] for w in figures["weeks"]] == [0, 1]
    assert figures["weeks"][1]["time_to_resolve"]["median_h"] == pytest.approx(33.0)
    text_report = report.render_text(figures)
    assert "Reopen rate: 1 of 2 resolved ticket(s) reopened (50%)" in text_report
    assert "against the 24 h promise" in text_report
