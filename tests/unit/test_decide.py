"""The pure pipeline: correlate and decide, with facts handed in as plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from maild.config.settings import settings_from_mapping
from maild.mail.parse import parse
from maild.pipeline.correlate import Facts, TicketFacts, correlate, subject_tag
from maild.pipeline.decide import decide
from maild.pipeline.decision import InboundMeta
from maild.store.states import ArticleKind, Outcome, TicketStatus, Visibility
from tests.support.desk import make_message

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
SETTINGS = settings_from_mapping({"helpdesk": {"addresses": ["help@example.com"]}})
META = InboundMeta(id=1, recipient="help@example.com", envelope_from="bob@example.org",
                   notify=True, received_at=NOW)  # fmt: skip


def ticket(status: str = TicketStatus.OPEN, *, requester: str = "bob@example.org",
           watchers: tuple[str, ...] = (), finished: datetime | None = None) -> TicketFacts:  # fmt: skip
    return TicketFacts(
        id=7, status=status, requester=requester, subject="Printer", language="en",
        participants=frozenset({requester, *watchers}), watchers=frozenset(watchers),
        resolved_at=finished, closed_at=finished,
    )  # fmt: skip


def test_new_message_opens_ticket_with_ack_and_due_time():
    msg = parse(make_message())
    d = decide(msg, META, Facts(), SETTINGS, NOW)
    assert d.outcome == Outcome.NEW_TICKET
    assert d.new_ticket.requester.email == "bob@example.org"
    assert d.new_ticket.requester.name == "Bob Customer"
    # A printer fault of one user: P3, so 2 h to first response and 24 h to resolution.
    assert (d.new_ticket.category, d.new_ticket.priority) == ("hardware", 3)
    assert d.new_ticket.first_response_due == NOW + timedelta(hours=2)
    assert d.new_ticket.resolution_due == NOW + timedelta(hours=24)
    assert d.new_ticket.status == TicketStatus.OPEN
    (ack,) = d.notices  # no tier groups configured: the requester only
    assert ack.template == "ack" and ack.auto_submitted == "auto-replied"
    assert ack.in_reply_to == "<orig-1@example.org>"
    assert [a.email for a in ack.to] == ["bob@example.org"]
    # Nothing verifies Bob here (no mail server of ours vouches for him): his ack
    # repeats the subject only, never the body (issue 14, item 3).
    assert ack.context["summary"] == "" and d.article.verified_by == "none"


def test_no_notify_records_without_ack():
    msg = parse(make_message())
    d = decide(msg, META.__class__(**{**META.__dict__, "notify": False}), Facts(), SETTINGS, NOW)
    assert d.outcome == Outcome.NEW_TICKET and d.notices == ()
    assert d.new_ticket.status == TicketStatus.NEW


def test_reply_by_references_appends_without_ack():
    msg = parse(make_message(message_id="<r1@example.org>", in_reply_to="<ack@helpdesk.example.com>",
                             references="<orig-1@example.org> <ack@helpdesk.example.com>"))  # fmt: skip
    facts = Facts(known_ids={"<ack@helpdesk.example.com>": 7}, tickets={7: ticket()})
    d = decide(msg, META, facts, SETTINGS, NOW)
    assert d.outcome == Outcome.APPENDED and d.ticket_id == 7
    assert d.notices == ()
    assert d.article.visibility == Visibility.PUBLIC


def test_in_reply_to_wins_over_older_references():
    msg = parse(make_message(in_reply_to="<b@x>", references="<a@x> <b@x>"))
    facts = Facts(known_ids={"<a@x>": 1, "<b@x>": 2}, tickets={1: ticket(), 2: ticket()})
    assert correlate(msg, facts).ticket_id == 2


def test_subject_tag_threads_only_for_participants():
    msg = parse(make_message(subject="Re: [#7] Printer", message_id="<x1@example.org>"))
    facts = Facts(tickets={7: ticket()})
    assert correlate(msg, facts).ticket_id == 7
    stranger = parse(make_message(sender="mallory@evil.example", subject="Re: [#7] Printer"))
    c = correlate(stranger, facts)
    assert c.ticket_id is None and "non-participant" in c.note
    d = decide(stranger, META, facts, SETTINGS, NOW)
    assert d.outcome == Outcome.NEW_TICKET


def test_watcher_may_use_subject_tag():
    msg = parse(make_message(sender="carol@example.org", subject="[#7] more info"))
    assert (
        correlate(msg, Facts(tickets={7: ticket(watchers=("carol@example.org",))})).ticket_id == 7
    )


def test_subject_text_alone_never_threads():
    msg = parse(make_message(subject="Printer"))
    assert correlate(msg, Facts(tickets={7: ticket()})).ticket_id is None


@pytest.mark.parametrize(
    "text,expected", [("[#12] x", 12), ("Re: AW: [#3]", 3), ("#12", None), ("[# 1]", None)]
)
def test_subject_tag_parsing(text, expected):
    assert subject_tag(text) == expected


# Our acknowledgement <ack@...> on ticket 7 went to Bob: his reply to it is verified.
SENT_TO_BOB = {"<ack@helpdesk.example.com>": frozenset({"bob@example.org"})}


def test_requester_reply_reopens_within_window():
    msg = parse(make_message(in_reply_to="<ack@helpdesk.example.com>"))
    facts = Facts(known_ids={"<ack@helpdesk.example.com>": 7}, sent_to=SENT_TO_BOB,
                  tickets={7: ticket(TicketStatus.RESOLVED, finished=NOW - timedelta(days=2))})  # fmt: skip
    d = decide(msg, META, facts, SETTINGS, NOW)
    assert d.outcome == Outcome.APPENDED and d.status == TicketStatus.OPEN
    assert any(e.kind == "status" and e.new == TicketStatus.OPEN for e in d.events)


def test_requester_reply_after_window_opens_linked_ticket():
    msg = parse(make_message(in_reply_to="<ack@helpdesk.example.com>"))
    facts = Facts(known_ids={"<ack@helpdesk.example.com>": 7}, sent_to=SENT_TO_BOB,
                  tickets={7: ticket(TicketStatus.CLOSED, finished=NOW - timedelta(days=30))})  # fmt: skip
    d = decide(msg, META, facts, SETTINGS, NOW)
    assert d.outcome == Outcome.NEW_TICKET and d.new_ticket.parent_id == 7
    assert d.notices[0].context["parent_id"] == 7


def test_stranger_reply_to_closed_ticket_does_not_reopen():
    msg = parse(make_message(sender="carol@example.org", in_reply_to="<ack@helpdesk.example.com>"))
    facts = Facts(known_ids={"<ack@helpdesk.example.com>": 7},
                  tickets={7: ticket(TicketStatus.CLOSED, finished=NOW - timedelta(days=1))})  # fmt: skip
    d = decide(msg, META, facts, SETTINGS, NOW)
    assert d.outcome == Outcome.APPENDED and d.status is None


def test_pending_user_returns_to_open_on_requester_reply():
    msg = parse(make_message(in_reply_to="<ack@helpdesk.example.com>"))
    facts = Facts(known_ids={"<ack@helpdesk.example.com>": 7}, sent_to=SENT_TO_BOB,
                  tickets={7: ticket(TicketStatus.PENDING_USER)})  # fmt: skip
    assert decide(msg, META, facts, SETTINGS, NOW).status == TicketStatus.OPEN


def test_same_message_id_already_on_a_ticket_is_ignored():
    d = decide(parse(make_message()), META, Facts(already_stored_on=7), SETTINGS, NOW)
    assert d.outcome == Outcome.IGNORED and "#7" in d.reason


def test_mail_from_our_own_address_is_ignored():
    msg = parse(make_message(sender="Help Desk <Help@Example.com>"))
    assert decide(msg, META, Facts(), SETTINGS, NOW).outcome == Outcome.IGNORED


def test_our_own_message_id_coming_back_is_ignored():
    msg = parse(make_message(message_id="<" + "abc0" * 8 + "@helpdesk.example.com>"))
    d = decide(msg, META, Facts(), SETTINGS, NOW)
    assert d.outcome == Outcome.IGNORED and "own mail" in d.reason


def test_auto_reply_to_a_ticket_is_recorded_without_ack_or_reopen():
    msg = parse(make_message(subject="Automatic reply: [#7] Printer", in_reply_to="<ack@helpdesk.example.com>",
                             headers={"Auto-Submitted": "auto-replied"}))  # fmt: skip
    facts = Facts(known_ids={"<ack@helpdesk.example.com>": 7},
                  tickets={7: ticket(TicketStatus.RESOLVED, finished=NOW)})  # fmt: skip
    d = decide(msg, META, facts, SETTINGS, NOW)
    assert d.outcome == Outcome.APPENDED and d.article.kind == ArticleKind.AUTOMATED
    assert d.article.visibility == Visibility.INTERNAL
    assert d.status is None and d.notices == ()


def test_auto_reply_to_nothing_is_ignored():
    msg = parse(make_message(headers={"Auto-Submitted": "auto-generated"}))
    d = decide(msg, META, Facts(), SETTINGS, NOW)
    assert d.outcome == Outcome.IGNORED and "Auto-Submitted" in d.reason


def test_missing_from_falls_back_to_envelope_sender():
    raw = b"To: help@example.com\r\nSubject: no from\r\nMessage-ID: <nf@x>\r\n\r\nbody\r\n"
    d = decide(parse(raw), META, Facts(), SETTINGS, NOW)
    assert d.outcome == Outcome.NEW_TICKET and d.new_ticket.requester.email == "bob@example.org"


def test_no_sender_at_all_is_quarantined():
    raw = b"To: help@example.com\r\nSubject: nobody\r\nMessage-ID: <nf@x>\r\n\r\nbody\r\n"
    meta = InboundMeta(id=1, recipient=None, envelope_from=None, notify=True, received_at=NOW)
    d = decide(parse(raw), meta, Facts(), SETTINGS, NOW)
    assert d.outcome == Outcome.QUARANTINED and "sender" in d.reason


def test_ack_goes_to_the_from_never_to_reply_to_or_cc():
    msg = parse(make_message(headers={"Reply-To": "Victim <victim@example.net>",
                                      "Cc": ", ".join(f"v{i}@example.net" for i in range(20))}))  # fmt: skip
    d = decide(msg, META, Facts(), SETTINGS, NOW)
    (ack,) = d.notices
    assert [a.email for a in ack.to] == ["bob@example.org"] and ack.cc == ()
    assert d.new_ticket.requester.email == "bob@example.org"
    # Unverified: the people it copies are not made watchers, only named to agents.
    assert d.new_ticket.watchers == () and ack.context["copied"] == 20
    (skipped,) = [e for e in d.events if e.kind == "watchers_not_added"]
    assert len(skipped.detail["addresses"]) == 20


# --- issue 14: what an unverified claim of a participant may do --------------------------


def test_a_claim_of_the_requester_without_proof_adds_text_and_nothing_else():
    msg = parse(make_message(subject="Re: [#7] Printer", headers={
        "Cc": "Eve <eve@evil.example>", "Reply-To": "spy@evil.example"}))  # fmt: skip
    for status in (TicketStatus.OPEN, TicketStatus.PENDING_USER, TicketStatus.RESOLVED):
        facts = Facts(tickets={7: ticket(status, watchers=("carol@example.org",),
                                         finished=NOW - timedelta(days=1))})  # fmt: skip
        d = decide(msg, META, facts, SETTINGS, NOW)
        assert d.outcome == Outcome.APPENDED and d.ticket_id == 7, status
        assert d.status is None and d.watchers_add == () and d.watchers_remove == ()
        assert d.article.verified_by == "none"
        for notice in d.notices:  # the agents hear of it; nobody it names does
            assert notice.visibility == Visibility.INTERNAL, notice
        (added,) = d.events
        assert added.detail["ignored"] == {"cc": ["eve@evil.example"],
                                           "reply_to": ["spy@evil.example"]}  # fmt: skip


def test_verified_by_reply_address_references_or_a_trusted_signature():
    from maild.mail.replyaddr import RequesterToken

    msg = parse(make_message(subject="Re: [#7] Printer", headers={"Cc": "Dave <dave@example.org>"}))
    base = {"tickets": {7: ticket(watchers=("carol@example.org",))}}
    token = RequesterToken("help+7.r.x@example.com", 7, None, valid=True)
    for facts in (
        Facts(**base, requester_token=token),
        Facts(**base, known_ids={"<ack@helpdesk.example.com>": 7}, sent_to=SENT_TO_BOB),
    ):
        reply = msg if facts.requester_token else parse(make_message(
            subject="Re: x", in_reply_to="<ack@helpdesk.example.com>",
            headers={"Cc": "Dave <dave@example.org>"}))  # fmt: skip
        d = decide(reply, META, facts, SETTINGS, NOW)
        assert [a.email for a in d.watchers_add] == ["dave@example.org"]
        assert d.watchers_remove == ("carol@example.org",)
        (told,) = [n for n in d.notices if n.template == "watcher_removed"]
        assert [a.email for a in told.to] == ["carol@example.org"]
    # A reference to a mail maild sent to someone else verifies nothing either.
    elsewhere = Facts(
        **base,
        known_ids={"<ack@helpdesk.example.com>": 7},
        sent_to={"<ack@helpdesk.example.com>": frozenset({"carol@example.org"})},
    )
    reply = parse(make_message(subject="Re: x", in_reply_to="<ack@helpdesk.example.com>",
                               headers={"Cc": "Dave <dave@example.org>"}))  # fmt: skip
    d = decide(reply, META, elsewhere, SETTINGS, NOW)
    assert d.watchers_add == () and d.article.verified_by == "none"
    # A token issued to someone else's address, or for another ticket, verifies nothing.
    for other in (RequesterToken("a", 7, None, valid=False), RequesterToken("a", 8, None, True)):
        d = decide(msg, META, Facts(**base, requester_token=other), SETTINGS, NOW)
        assert d.watchers_add == () and d.article.verified_by == "none"
    # Our own mail server's DMARC pass for the From domain.
    signed = settings_from_mapping({"helpdesk": {"addresses": ["help@example.com"]},
                                    "agent_mail": {"trusted_authserv_ids": ["mx.example.com"],
                                                   "trusted_hops": 2}})  # fmt: skip
    raw = (
        b"Authentication-Results: mx.example.com; dmarc=pass header.from=example.org\r\n"
        + make_message(subject="Re: [#7] Printer", headers={"Cc": "dave@example.org"})
    )
    d = decide(parse(raw), META, Facts(**base), signed, NOW)
    assert d.article.verified_by == "authentication-results" and d.watchers_add
    forged = raw.replace(b"example.org\r\n", b"evil.example\r\n", 1)
    assert decide(parse(forged), META, Facts(**base), signed, NOW).watchers_add == ()


def test_reopen_notice_goes_to_the_stored_requester_never_reply_to():
    msg = parse(make_message(in_reply_to="<ack@helpdesk.example.com>",
                             headers={"Reply-To": "spy@evil.example"}))  # fmt: skip
    facts = Facts(known_ids={"<ack@helpdesk.example.com>": 7}, sent_to=SENT_TO_BOB,
                  tickets={7: ticket(TicketStatus.RESOLVED, finished=NOW - timedelta(days=1))})  # fmt: skip
    d = decide(msg, META, facts, SETTINGS, NOW)
    assert d.status == TicketStatus.OPEN
    told = {a.email for n in d.notices for a in (*n.to, *n.cc)}
    assert "bob@example.org" in told and "spy@evil.example" not in told


def test_a_participant_marked_undeliverable_who_writes_in_is_deliverable_again():
    msg = parse(make_message(in_reply_to="<ack@helpdesk.example.com>"))
    marked = TicketFacts(id=7, status=TicketStatus.OPEN, requester="bob@example.org",
                         subject="Printer", language="en",
                         participants=frozenset({"bob@example.org"}),
                         bounced=frozenset({"bob@example.org"}))  # fmt: skip
    facts = Facts(known_ids={"<ack@helpdesk.example.com>": 7}, tickets={7: marked})
    assert decide(msg, META, facts, SETTINGS, NOW).deliverable_again == "bob@example.org"
    assert (
        decide(
            msg,
            META,
            Facts(known_ids={"<ack@helpdesk.example.com>": 7}, tickets={7: ticket()}),
            SETTINGS,
            NOW,
        ).deliverable_again
        is None
    )
