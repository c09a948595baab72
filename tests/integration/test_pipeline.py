"""Worker, apply and sender on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from sqlalchemy import func, select

from maild.store.models import Article, Attachment, Blob, Event, Inbound, Outbox, Ticket
from maild.store.states import Outcome
from tests.support.desk import make_message, reply_to

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
MANIFEST = tomllib.loads((FIXTURES / "MANIFEST.toml").read_text())
REPLIES = sorted(n for n, s in MANIFEST.items() if s["kind"] == "reply" and s["references"])


def fixture(name: str) -> bytes:
    return (FIXTURES / MANIFEST[name]["file"]).read_bytes()


def test_new_ticket_records_what_the_policy_asks(desk):
    p = desk.process(fixture("new_outlook_html_alt"))
    assert p.outcome == Outcome.NEW_TICKET
    t = desk.ticket(p.ticket_id)
    spec = MANIFEST["new_outlook_html_alt"]
    assert t["requester"] == {"email": spec["from_addr"], "name": spec["from_name"],
                              "bounce_state": "ok"}  # fmt: skip
    assert t["subject"] == spec["subject"]
    assert t["status"] == "open" and t["type"] == "incident" and t["priority"] == "P3"
    assert t["created_at"] and t["first_response_due"]
    first = t["articles"][0]
    assert first["direction"] == "in" and first["message_id"] == spec["message_id"]
    assert first["date"] is not None  # the Date header, kept beside the received time
    for snippet in spec["body_contains"]:
        assert snippet in first["text"]
    # The audit log: created, acknowledged (open), the acknowledgement queued.
    (ack,) = desk.outgoing()
    assert [(e["kind"], e["old"], e["new"]) for e in t["events"]] == [
        ("created", None, "new"),
        ("status", "new", "open"),
        ("ack_queued", None, ack["Message-ID"]),
    ]
    row = desk.inbound(1)
    assert row.status == "done" and row.ticket_id == p.ticket_id
    assert row.raw == fixture("new_outlook_html_alt")


@pytest.mark.parametrize("name", REPLIES)
def test_real_client_replies_thread_onto_their_ticket(desk, name):
    spec = MANIFEST[name]
    original = make_message(sender=spec["from_addr"], message_id=spec["references"][0],
                            subject="Original request")  # fmt: skip
    first = desk.process(original)
    reply = desk.process(fixture(name))
    assert reply.outcome == Outcome.APPENDED, reply.reason
    assert reply.ticket_id == first.ticket_id
    assert len(desk.outgoing()) == 1  # the ack of the original only


def test_reply_to_our_ack_threads_and_sends_no_second_ack(desk):
    first = desk.process(make_message())
    (ack,) = desk.outgoing()
    second = desk.process(reply_to(ack, sender="Bob Customer <bob@example.org>", body="Thanks"))
    assert second.outcome == Outcome.APPENDED and second.ticket_id == first.ticket_id
    assert len(desk.outgoing()) == 1
    arts = desk.ticket(first.ticket_id)["articles"]
    assert [a["direction"] for a in arts] == ["in", "out", "in"]


def test_a_reply_naming_only_mail_maild_sent_threads(desk):
    """Some clients keep only In-Reply-To (or trim References): the Message-ID
    of maild's own acknowledgement is enough to find the ticket."""
    first = desk.process(make_message())
    (ack,) = desk.outgoing()
    reply = make_message(sender="Bob Customer <bob@example.org>", subject="Re: printer",
                         body="Still broken.", message_id="<only-irt@example.org>",
                         in_reply_to=str(ack["Message-ID"]))  # fmt: skip
    p = desk.process(reply)
    assert p.outcome == Outcome.APPENDED and p.ticket_id == first.ticket_id


def test_subject_tag_from_stranger_opens_a_new_ticket(desk):
    first = desk.process(make_message())
    hijack = desk.process(make_message(sender="mallory@evil.example", subject="Re: [#1] give me access",
                                       message_id="<m1@evil.example>"))  # fmt: skip
    assert hijack.outcome == Outcome.NEW_TICKET and hijack.ticket_id != first.ticket_id
    tag_only = desk.process(
        make_message(subject="Re: [#1] any news?", message_id="<b2@example.org>")
    )
    assert tag_only.outcome == Outcome.APPENDED and tag_only.ticket_id == first.ticket_id


def test_reply_processed_in_the_same_batch_as_its_original(desk):
    desk.deliver(make_message(message_id="<a@example.org>"))
    desk.deliver(make_message(message_id="<b@example.org>", in_reply_to="<a@example.org>",
                              references="<a@example.org>", subject="Re: Printer"))  # fmt: skip
    processed, sent = desk.drain()
    assert [p.outcome for p in processed] == [Outcome.NEW_TICKET, Outcome.APPENDED]
    assert processed[0].ticket_id == processed[1].ticket_id
    assert sent.sent == 1


def test_attachments_are_stored_once_per_content(desk):
    a = desk.process(fixture("rfc2231_filename"))
    b = desk.process(fixture("rfc2231_filename").replace(b"Message-ID: <", b"Message-ID: <copy-"))
    assert a.outcome == b.outcome == Outcome.NEW_TICKET
    with desk.sessions() as s:
        n_att = s.scalar(select(func.count()).select_from(Attachment))
        n_blob = s.scalar(select(func.count()).select_from(Blob))
    n = len(MANIFEST["rfc2231_filename"]["attachments"])
    assert n_att == 2 * n and n_blob == n
    shown = desk.ticket(a.ticket_id)["articles"][0]["attachments"]
    assert {x["sha256"] for x in shown} == {
        x["sha256"] for x in MANIFEST["rfc2231_filename"]["attachments"]
    }


def test_garbage_is_quarantined_with_its_bytes(desk):
    p = desk.process(fixture("garbage_bin"))
    assert p.outcome == Outcome.QUARANTINED
    row = desk.inbound(p.inbound_id)
    assert row.status == "quarantined" and "not an email message" in row.error
    assert row.raw == fixture("garbage_bin")


def test_auto_reply_and_bounce_create_no_ticket_and_no_mail(desk):
    for name in ("out_of_office_en", "out_of_office_fi_poissa", "bounce_dsn_postfix", "list_mail"):
        p = desk.process(fixture(name))
        assert p.outcome == Outcome.IGNORED, name
    assert desk.tickets() == [] and desk.outgoing() == []


def test_undeclared_charset_body_reads_correctly(desk):
    p = desk.process(fixture("undeclared_charset_8bit"))
    text = desk.ticket(p.ticket_id)["articles"][0]["text"]
    for snippet in MANIFEST["undeclared_charset_8bit"]["body_contains"]:
        assert snippet in text


def test_failing_message_is_retried_then_quarantined_and_others_go_on(desk, monkeypatch):
    calls = {"n": 0}
    original = desk.applier.apply

    def flaky(session, inbound_id, decision, now, **kw):
        # A bug that strikes after the ticket, article, events and outbox rows
        # were written: all of it must be rolled back.
        result = original(session, inbound_id, decision, now, **kw)
        if decision.article and decision.article.message_id == "<poison@example.org>":
            calls["n"] += 1
            raise RuntimeError("simulated bug")
        return result

    monkeypatch.setattr(desk.applier, "apply", flaky)
    desk.deliver(make_message(message_id="<poison@example.org>"))
    desk.deliver(make_message(message_id="<fine@example.org>", sender="carol@example.org"))
    desk.drain()
    assert desk.settings.worker.max_attempts == 3  # the README's promise is the default
    assert calls["n"] >= 3  # a failed batch is retried message by message, uncounted
    with desk.sessions() as s:
        rows = {r.message_id: r for r in s.scalars(select(Inbound))}
    assert rows["<poison@example.org>"].attempts == 3
    assert rows["<poison@example.org>"].status == "quarantined"
    assert "simulated bug" in rows["<poison@example.org>"].error
    assert rows["<fine@example.org>"].status == "done"
    # Nothing half-written for the poison message: one ticket, carol's, and
    # every article, event and outgoing mail is hers.
    (ticket,) = desk.tickets()
    assert ticket["requester"]["email"] == "carol@example.org"
    with desk.sessions() as s:
        (ticket_id,) = s.scalars(select(Ticket.id)).all()
        assert s.scalars(select(Article.message_id).where(Article.direction == "in")).all() == [
            "<fine@example.org>"
        ]
        assert set(s.scalars(select(Event.ticket_id))) == {ticket_id}
        assert set(s.scalars(select(Outbox.ticket_id))) == {ticket_id}


def test_messages_in_hand_when_the_worker_died_are_taken_up_again(desk):
    """A message claimed (``processing``) when the daemon died is not lost: the
    next start returns it to ``pending``. One that was in hand alone each time
    is charged an attempt, so a message that kills the worker is quarantined
    after 3 deaths instead of taking the daemon down for ever."""
    ok = desk.deliver(make_message(message_id="<in-hand@example.org>"))
    (row,) = desk.worker._claim(10)  # in hand ...
    assert desk.inbound(ok.inbound_id).status == "processing"
    assert desk.worker.recover(all_rows=True) == 1  # ... when the worker died; next start
    assert desk.inbound(ok.inbound_id).status == "pending"
    processed, _ = desk.drain()
    assert [p.outcome for p in processed] == [Outcome.NEW_TICKET]
    assert len(desk.outgoing()) == 1  # acknowledged once

    killer = desk.deliver(make_message(message_id="<kills-the-worker@example.org>",
                                       sender="carol@example.org"))  # fmt: skip
    for death in (1, 2, 3):
        (row,) = desk.worker._claim(10)
        assert row.id == killer.inbound_id
        desk.worker.recover(all_rows=True)
        row = desk.inbound(killer.inbound_id)
        assert (row.status, row.attempts) == ("pending", death)
    processed, _ = desk.drain()
    row = desk.inbound(killer.inbound_id)
    assert (row.status, row.attempts) == ("quarantined", 3)
    assert "the worker stopped while handling it" in row.error
    assert len(desk.tickets()) == 1


def test_reopen_within_window_and_linked_ticket_after(desk):
    first = desk.process(make_message())
    (ack,) = desk.outgoing()
    from sqlalchemy import update

    from maild.store.models import Ticket

    def finish(days_ago: float) -> None:
        when = desk.clock.now()
        with desk.sessions.begin() as s:
            s.execute(update(Ticket).where(Ticket.id == first.ticket_id)
                      .values(status="resolved", resolved_at=when))  # fmt: skip
        desk.clock.advance(days=days_ago)

    finish(2)
    r1 = desk.process(reply_to(ack, sender="bob@example.org", body="still broken",
                               message_id="<r1@example.org>"))  # fmt: skip
    assert r1.ticket_id == first.ticket_id and desk.ticket(first.ticket_id)["status"] == "open"
    finish(30)
    r2 = desk.process(reply_to(ack, sender="bob@example.org", body="broken again",
                               message_id="<r2@example.org>"))  # fmt: skip
    assert r2.outcome == Outcome.NEW_TICKET and r2.ticket_id != first.ticket_id
    assert desk.ticket(r2.ticket_id)["parent"] == first.ticket_id
    assert "was already closed" in desk.outgoing()[-1].get_body(("plain",)).get_content()
