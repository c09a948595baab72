"""Agents work tickets by replying to their notifications, and nobody can forge it.

Real SQLite and PostgreSQL (`db_url`), the whole pipeline through `Desk`;
outgoing mail read back from the Maildir transport exactly as sent.
"""

from __future__ import annotations

import quopri
import re
from email.message import EmailMessage
from typing import Any

import pytest

from tests.support.desk import Desk, make_message, make_settings, reply_to

REQUESTER = "Bob Customer <bob@example.org>"
AGENTS = [
    {"email": "anna@example.com", "name": "Anna Agent", "tier": 1},
    {"email": "bert@example.com", "name": "Bert Second", "tier": 2},
    {"email": "sara@example.com", "name": "Sara Turva", "tier": 3, "language": "fi",
     "groups": ["security"]},
]  # fmt: skip
WATCHED = ("status", "priority", "tier", "category", "type", "first_response_at")


@pytest.fixture
def desk(db_url, tmp_path):
    d = Desk(make_settings(tmp_path, db_url, tiers={"tier1": ["tier1@example.com"]}, agents=AGENTS))
    yield d
    d.close()


class Mail:
    """What the desk sent since the last look, by recipient (To and Cc)."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.seen = 0

    def new(self) -> dict[str, list[EmailMessage]]:
        out: dict[str, list[EmailMessage]] = {}
        mails = self.desk.outgoing()
        for mail in mails[self.seen :]:
            for field in ("To", "Cc"):
                for a in getattr(mail[field], "addresses", ()) if mail[field] else ():
                    out.setdefault(a.addr_spec.lower(), []).append(mail)
        self.seen = len(mails)
        return out


def body(mail: EmailMessage) -> str:
    """The text part as a person reads it: wrapped lines joined (runs of spaces as one)."""
    return " ".join(mail.get_body(("plain",)).get_content().split())


def state(desk: Desk, number: int) -> dict[str, Any]:
    t = desk.ticket(number)
    return {k: t[k] for k in (*WATCHED, "assignee", "watchers", "links")}


def open_ticket(desk: Desk, mail: Mail, **kw: Any) -> tuple[int, EmailMessage]:
    """Bob writes in; returns the ticket and Anna's notification (personal Reply-To)."""
    p = desk.process(make_message(sender=REQUESTER, **kw))
    got = mail.new()
    (note,) = got["anna@example.com"]
    return p.ticket_id, note


def answer(desk: Desk, notification: EmailMessage, body_text: str, *,
           sender: str = "Anna Agent <anna@example.com>", to: str | None = None,
           message_id: str = "<agent-1@example.com>", prepend: bytes = b"",
           headers: dict[str, str] | None = None, raw_from: str | None = None) -> Any:  # fmt: skip
    """A reply to `notification`, delivered to the address it names (RCPT TO).
    `raw_from`: a From header written as raw UTF-8, as an SMTPUTF8 client does."""
    raw = prepend + reply_to(notification, sender=sender, body=body_text, message_id=message_id,
                             to=to, headers=headers)  # fmt: skip
    if raw_from is not None:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        lines = [b"From: " + raw_from.encode() if line.startswith(b"From:") else line
                 for line in head.split(b"\r\n")]  # fmt: skip
        raw = b"\r\n".join(lines) + sep + rest
    rcpt = (to or notification["Reply-To"].addresses[0].addr_spec).lower()
    return desk.process(raw, recipient="help@example.com", envelope_to=(rcpt,))


def no_leak(mail: EmailMessage, *secrets: str) -> None:
    """No header of a mail for the requester names an agent or an agent's reply
    address (its Reply-To is the requester's own: help+<n>.r...)."""
    for name, value in mail.items():
        text = re.sub(r"help\+\d+\.r\d*\.[a-z2-7]{26}@", "", str(value).lower())
        for secret in (*secrets, "help+"):
            assert secret not in text, f"{name}: {value}"


def copy_in(desk: Desk, mail: Mail, cc: str, *, message_id: str = "<cc-1@example.org>") -> None:
    """Bob answers his acknowledgement copying `cc`: a verified mail (it refers to
    maild's mail to him), so the people it copies become watchers (issue 14)."""
    ack = next(m for m in desk.outgoing() if m["To"].addresses[0].addr_spec == "bob@example.org")
    desk.process(reply_to(ack, sender=REQUESTER, body="Copying a colleague.",
                          message_id=message_id, headers={"Cc": cc}))  # fmt: skip
    mail.new()


# --- the happy path ---------------------------------------------------------------------


def test_agent_reply_runs_commands_and_answers_the_requester(desk):
    mail = Mail(desk)
    n, note = open_ticket(desk, mail)
    copy_in(desk, mail, "Carol <carol@example.org>")
    reply_address = note["Reply-To"].addresses[0].addr_spec
    assert reply_address.startswith(f"help+{n}.") and reply_address.endswith("@example.com")
    assert "lines at the top" in body(note).lower()
    p = answer(desk, note, "#priority P2\n#take\n#status pending_user\n\nHi Bob, which room "
               "is the printer in?\n\nBest regards,\nAnna\n\nOn Mon, 30 Nov 2026, Help Desk "
               "wrote:\n> A new ticket needs handling.\n>   Requester: Bob\n")  # fmt: skip
    assert p.outcome == "appended"
    t = desk.ticket(n)
    assert (t["priority"], t["status"]) == ("P2", "pending_user")
    assert t["first_response_at"] == desk.clock.now().isoformat()
    assert state(desk, n)["assignee"] == "anna@example.com"
    got = mail.new()
    # The requester (and the watcher in Cc) get one reply, from the help desk.
    (to_bob,) = got.pop("bob@example.org")
    assert got.pop("carol@example.org") == [to_bob]
    assert to_bob["From"] == "Help Desk <help@example.com>"
    # Bob's own reply address: a reply to it is verified as his (issue 14).
    assert to_bob["Reply-To"].addresses[0].display_name == "Help Desk"
    assert to_bob["Reply-To"].addresses[0].addr_spec.startswith(f"help+{n}.r")
    text = body(to_bob)
    assert text.startswith("Hi Bob, which room is the printer in? Anna Agent Help Desk")
    for gone in ("#priority", "Best regards", "wrote:", "Requester:", "anna@"):
        assert gone not in text
    no_leak(to_bob, "anna")
    # Anna is told what changed, at her directory address.
    (confirm,) = got.pop("anna@example.com")
    assert got == {}
    assert "#priority P2" in body(confirm) and "priority: P3 -> P2" in body(confirm)
    assert "assignee: - -> anna@example.com" in body(confirm)
    assert confirm["Reply-To"].addresses[0].addr_spec.startswith(f"help+{n}.")
    # Her own mail is kept, internal; the public reply is an outgoing article.
    kinds = [(a["direction"], a["visibility"], a["kind"]) for a in t["articles"]]
    assert ("in", "internal", "message") in kinds and ("out", "public", "notification") in kinds


def test_resolve_carries_the_text_and_counts_as_first_response(desk):
    mail = Mail(desk)
    n, note = open_ticket(desk, mail)
    answer(desk, note, "#resolve\n\nI replaced the toner; it prints again.\n\n-- \nAnna\n")
    t = desk.ticket(n)
    assert t["status"] == "resolved" and t["first_response_at"] is not None
    got = mail.new()
    (resolved,) = got.pop("bob@example.org")  # one mail, not a reply and a notice
    assert "has been resolved" in body(resolved)
    assert "I replaced the toner; it prints again." in body(resolved)
    assert "Anna" not in body(resolved)
    assert list(got) == ["anna@example.com"]


def test_note_keeps_everything_internal(desk):
    mail = Mail(desk)
    n, note = open_ticket(desk, mail)
    answer(desk, note, "#note\n#priority P4\n\nBob is the CEO's nephew, be gentle.\n")
    t = desk.ticket(n)
    assert t["priority"] == "P4" and t["first_response_at"] is None
    assert t["articles"][-1]["text"] != ""
    internal = [a for a in t["articles"] if a["kind"] == "note"]
    assert internal and "nephew" in internal[0]["text"] and internal[0]["visibility"] == "internal"
    got = mail.new()
    assert list(got) == ["anna@example.com"]  # only the confirmation


def test_assignment_escalation_and_link_notify_the_right_agents(desk):
    mail = Mail(desk)
    n, note = open_ticket(desk, mail)
    other, _ = open_ticket(desk, mail, subject="Printer on 4th floor too",
                           message_id="<orig-2@example.org>")  # fmt: skip
    answer(desk, note, f"#assign Bert Second\n#link {other}\n")
    got = mail.new()
    (assigned,) = got.pop("bert@example.com")
    assert "assigned this ticket to you" in body(assigned)
    assert assigned["Reply-To"].addresses[0].addr_spec.startswith(f"help+{n}.")
    assert list(got) == ["anna@example.com"]
    assert desk.ticket(other)["links"] == [n] and desk.ticket(n)["links"] == [other]
    assert "related" in {e["kind"] for e in desk.ticket(other)["events"]}
    # Bob's next reply goes to the assignee, not to tier 1.
    ack = next(m for m in desk.outgoing() if m["To"].addresses[0].addr_spec == "bob@example.org")
    desk.process(reply_to(ack, sender=REQUESTER, body="It is room 301.", message_id="<b2@x.org>"))
    got = mail.new()
    assert list(got) == ["bert@example.com"]
    assert "replied to this ticket" in body(got["bert@example.com"][0])
    assert "It is room 301." in body(got["bert@example.com"][0])
    # Bert escalates to tier 3 from his own notification: Sara (tier 3, Finnish) hears.
    answer(desk, assigned, "#escalate\n", sender="Bert Second <bert@example.com>",
           message_id="<bert-1@example.com>")  # fmt: skip
    assert desk.ticket(n)["tier"] == 2
    got = mail.new()
    assert "sara@example.com" not in got  # tier 1 -> 2 is Bert's own tier
    answer(desk, assigned, "#escalate 3\n", sender="Bert Second <bert@example.com>",
           message_id="<bert-2@example.com>")  # fmt: skip
    got = mail.new()
    (sara,) = got.pop("sara@example.com")
    assert sara["Content-Language"] == "fi"
    assert sara["Reply-To"].addresses[0].addr_spec.startswith(f"help+{n}.3.")


def test_meeting_sends_an_icalendar_invitation_from_the_help_desk(desk):
    mail = Mail(desk)
    n, note = open_ticket(desk, mail)
    answer(desk, note, "#meeting 2026-12-01 14:00 https://meet.example.com/room-42\n\n"
           "Let's look at it together.\n")  # fmt: skip
    got = mail.new()
    invite, reply = sorted(
        got.pop("bob@example.org"), key=lambda m: "Invitation" not in m["Subject"]
    )
    assert invite["Subject"].startswith(f"Invitation: [#{n}]")
    no_leak(invite, "anna")
    (calendar,) = [p for p in invite.walk() if p.get_content_type() == "text/calendar"]
    assert calendar.get_param("method") == "REQUEST"
    ics = calendar.get_content()
    assert "METHOD:REQUEST" in ics and "DTSTART:20261201T140000Z" in ics
    assert 'ORGANIZER;CN="Help Desk":mailto:help@example.com' in ics
    assert "mailto:bob@example.org" in ics and "anna@" not in ics.lower()
    assert "https://meet.example.com/room-42" in ics
    assert "Let's look at it together." in body(reply)
    assert any(e["kind"] == "meeting" for e in desk.ticket(n)["events"])


# --- all or nothing ---------------------------------------------------------------------


REFUSED = (
    ("#priority P1\n#escalate 1", "already at tier 1"),  # refused while running
    ("#priority P1\n#frobnicate", "unknown command #frobnicate"),  # refused when read
    ("#priority P1\n#category nonsense", "unknown category"),
)


def test_a_refused_command_changes_nothing_and_lists_the_valid_ones(desk):
    mail = Mail(desk)
    for i, (commands, why) in enumerate(REFUSED):
        n, note = open_ticket(desk, mail, message_id=f"<orig-{i}@example.org>")
        before = state(desk, n)
        answer(desk, note, f"{commands}\n\nHi Bob, on it.\n", message_id=f"<a-{i}@example.com>")
        assert state(desk, n) == before, commands
        got = mail.new()
        (refused,) = got.pop("anna@example.com")
        assert got == {}, commands  # the requester got nothing
        assert "NOT applied" in refused["Subject"] and why in body(refused), commands
        assert "#status open|in_progress" in body(refused) and "#meeting YYYY-MM-DD" in body(
            refused
        )
        mine = [a for a in desk.ticket(n)["articles"] if a["message_id"] == f"<a-{i}@example.com>"]
        assert mine[0]["visibility"] == "internal"


def test_a_reply_to_a_resolved_ticket_is_refused_until_reopened(desk):
    mail = Mail(desk)
    n, note = open_ticket(desk, mail)
    answer(desk, note, "#resolve Done.", message_id="<a1@example.com>")
    mail.new()
    answer(desk, note, "One more thing, Bob.", message_id="<a2@example.com>")
    assert desk.ticket(n)["status"] == "resolved"
    got = mail.new()
    assert list(got) == ["anna@example.com"] and "reopen it first" in body(
        got["anna@example.com"][0]
    )
    answer(desk, note, "#reopen\n\nOne more thing, Bob.", message_id="<a3@example.com>")
    assert desk.ticket(n)["status"] == "in_progress"
    # One mail to Bob: the agent's words (the reopening rides on them).
    (reply,) = mail.new()["bob@example.org"]
    assert "One more thing, Bob." in body(reply)


def test_an_agent_reopen_without_text_does_not_blame_the_requester(desk):
    mail = Mail(desk)
    n, note = open_ticket(desk, mail)
    answer(desk, note, "#resolve Done.", message_id="<b1@example.com>")
    mail.new()
    answer(desk, note, "#reopen", message_id="<b2@example.com>")
    assert desk.ticket(n)["status"] == "open"
    (told,) = mail.new()["bob@example.org"]
    assert "reopened your ticket" in body(told)
    assert "because of your reply" not in body(told)


# --- forgeries: each changes nothing and tells the agent at the directory address -------------


def assert_forgery_refused(desk: Desk, mail: Mail, n: int, before: dict[str, Any],
                           told: set[str], why: str) -> None:  # fmt: skip
    assert state(desk, n) == before
    got = mail.new()
    assert set(got) == told, got
    for address in told:
        (notice,) = got[address]
        assert notice["To"].addresses[0].addr_spec == address  # the directory address
        assert "NOT accepted" in notice["Subject"] and why in body(notice), body(notice)
    t = desk.ticket(n)
    assert t["articles"][-1]["kind"] != "note" or t["articles"][-1]["visibility"] == "internal"
    notes = [a for a in t["articles"] if a["kind"] == "note"]
    assert notes and notes[-1]["visibility"] == "internal"
    assert t["events"][-len(told) - 1]["kind"] == "agent_mail_refused"


FORGERIES = {
    # From: Anna, but to the plain help-desk address (threading by References only)
    "forged_from_without_token": dict(to="help@example.com", why="not sent to your personal"),
    # Anna's reply address, From: Bert (a real agent)
    "token_with_another_agents_from": dict(sender="Bert Second <bert@example.com>",
                                           why="issued to anna@example.com", told={"bert", "anna"}),
    # Anna's address for this ticket, with the number of another ticket
    "token_for_another_ticket": dict(other_ticket=True, why="not issued by maild"),
    # Anna's address, 91 days later (reply_token_days = 90)
    "expired_token": dict(days=91, why="expired on"),
    # Anna's address, From: аnna@example.com with a Cyrillic а, raw UTF-8 (SMTPUTF8)
    "lookalike_homoglyph": dict(sender="Anna Agent <anna@example.com>", why="only looks like",
                                raw_from="Anna Agent <\u0430nna@example.com>"),
    # the same, as a client that wrongly encodes the address
    "lookalike_homoglyph_encoded": dict(sender="Anna Agent <\u0430nna@example.com>",
                                        why="only looks like"),
    # the same as an IDN domain
    "lookalike_idn": dict(sender="Anna Agent <anna@xn--exmple-4nf.com>", why="only looks like"),
    # display-name trick
    "display_name_trick": dict(sender='"anna@example.com" <mallory@evil.example>',
                               why="not from an agent"),
    # two addresses in From
    "two_from_addresses": dict(sender="anna@example.com, mallory@evil.example",
                               why="more than one address"),
}  # fmt: skip


def test_forgeries_change_nothing(desk):
    """Each case on a ticket of its own; the expired address last (the clock moves)."""
    mail = Mail(desk)
    for case in sorted(FORGERIES, key=lambda c: (c == "expired_token", c)):
        spec = FORGERIES[case]
        n, note = open_ticket(desk, mail, message_id=f"<orig-{case}@example.org>")
        before = state(desk, n)
        token = note["Reply-To"].addresses[0].addr_spec
        to = spec.get("to")
        if spec.get("other_ticket"):
            other, _ = open_ticket(desk, mail, message_id=f"<other-{case}@example.org>")
            to = token.replace(f"help+{n}.", f"help+{other}.")
        if spec.get("days"):
            desk.clock.advance(days=spec["days"])
            before = state(desk, n)
        answer(desk, note, "#close\n#priority P1\n\nBob, all done.\n", to=to,
               sender=spec.get("sender", "Anna Agent <anna@example.com>"),
               raw_from=spec.get("raw_from"), message_id=f"<{case}@example.com>")  # fmt: skip
        told = {f"{who}@example.com" for who in spec.get("told", {"anna"})}
        try:
            assert_forgery_refused(desk, mail, n, before, told, spec["why"])
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from exc


def test_fake_authentication_results_with_our_authserv_id(db_url, tmp_path):
    settings = make_settings(tmp_path, db_url, agents=AGENTS, agent_mail={
        "require_authentication_results": True, "trusted_authserv_ids": ["mx.example.com"]})  # fmt: skip
    desk = Desk(settings)
    try:
        mail = Mail(desk)
        n, note = open_ticket(desk, mail)
        before = state(desk, n)
        hop = b"Received: from relay.evil.example by mx.example.com with ESMTPS\r\n"
        forged = b"Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\r\n"
        ours = b"Authentication-Results: mx.example.com; dmarc=fail header.from=example.com\r\n"
        # The sender wrote a "pass" of its own; our server said "fail" above it.
        answer(desk, note, "#close\n", prepend=ours + hop + forged, message_id="<f1@example.com>")
        assert_forgery_refused(desk, mail, n, before, {"anna@example.com"},
                               "came from outside and was ignored")  # fmt: skip
        # No header of our server at all: the sender's own "pass" is not enough.
        answer(desk, note, "#close\n", prepend=hop + forged, message_id="<f2@example.com>")
        assert_forgery_refused(desk, mail, n, before, {"anna@example.com"}, "came from outside")
        # The genuine article: our server vouches for example.com.
        good = b"Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n"
        answer(desk, note, "#close\n", prepend=good + hop, message_id="<f3@example.com>")
        assert desk.ticket(n)["status"] == "closed"
    finally:
        desk.close()


SMUGGLED = (
    # a bare CR (quoted-printable =0D) turned into a line break inside the value
    "#priority P1\rBcc: victim@evil.example\r\n\r\nBob, done.\r\n",
    # Unicode line separators and a vertical tab inside the value
    "#resolve fixed\u2028Bcc: victim@evil.example\n\nBob, done.\n",
    "#assign anna\x0bCc: victim@evil.example\n\nBob, done.\n",
    "#status resolved\x85To: victim@evil.example\n\nBob, done.\n",
)


def test_command_values_carrying_line_breaks_or_headers(desk):
    mail = Mail(desk)
    for i, smuggled in enumerate(SMUGGLED):
        n, note = open_ticket(desk, mail, message_id=f"<orig-{i}@example.org>")
        before = state(desk, n)
        msg = EmailMessage()
        msg["From"] = "Anna Agent <anna@example.com>"
        msg["To"] = str(note["Reply-To"])
        msg["Subject"] = f"Re: {note['Subject']}"
        msg["Message-ID"] = f"<smuggle-{i}@example.com>"
        msg["In-Reply-To"] = note["Message-ID"]
        msg["Content-Type"] = 'text/plain; charset="utf-8"'
        msg["Content-Transfer-Encoding"] = "quoted-printable"
        msg.set_payload(quopri.encodestring(smuggled.encode("utf-8")))
        rcpt = note["Reply-To"].addresses[0].addr_spec
        desk.process(msg.as_bytes(), recipient="help@example.com", envelope_to=(rcpt,))
        assert state(desk, n) == before, smuggled
        got = mail.new()
        assert set(got) == {"anna@example.com"}, smuggled
        (refused,) = got["anna@example.com"]
        assert "NOT applied" in refused["Subject"], smuggled
    assert not any("victim" in str(v) for m in desk.outgoing() for _k, v in m.items())


def test_automated_mail_to_a_reply_address_never_runs_commands(desk):
    mail = Mail(desk)
    n, note = open_ticket(desk, mail)
    before = state(desk, n)
    answer(desk, note, "#close\nI am out of the office until Monday.",
           headers={"Auto-Submitted": "auto-replied"})  # fmt: skip
    assert state(desk, n) == before and mail.new() == {}
    assert desk.ticket(n)["articles"][-1]["kind"] == "automated"


# --- requesters and watchers --------------------------------------------------------------


def test_a_requesters_hash_lines_are_just_text(desk):
    mail = Mail(desk)
    n, _note = open_ticket(desk, mail)
    ack = next(m for m in desk.outgoing() if m["To"].addresses[0].addr_spec == "bob@example.org")
    desk.process(reply_to(ack, sender=REQUESTER, body="#close\n#priority P1\nPlease hurry.",
                          message_id="<b1@example.org>"))  # fmt: skip
    t = desk.ticket(n)
    assert (t["status"], t["priority"]) == ("open", "P3")
    (last,) = [a for a in t["articles"] if a["message_id"] == "<b1@example.org>"]
    assert last["text"].startswith("#close\n#priority P1") and last["visibility"] == "public"


def test_subject_tag_from_a_stranger_opens_a_new_ticket_and_from_an_agent_does_not(desk):
    mail = Mail(desk)
    n, _note = open_ticket(desk, mail)
    stranger = desk.process(make_message(sender="Eve <eve@evil.example>", subject=f"[#{n}] #close",
                                         body="#close\n", message_id="<e1@evil.example>"))  # fmt: skip
    assert stranger.ticket_id != n and desk.ticket(n)["status"] == "open"
    # An agent writing with the tag only (no reply address) lands on the ticket, as a note.
    agent = desk.process(make_message(sender="Anna Agent <anna@example.com>",
                                      subject=f"Re: [#{n}] x", body="#close\n",
                                      message_id="<a9@example.com>"))  # fmt: skip
    assert agent.ticket_id == n and desk.ticket(n)["status"] == "open"


def test_watchers_come_and_go_by_the_requesters_cc(desk):
    mail = Mail(desk)
    ours = ("help@example.com, help+sales@example.com, tier1@example.com, "
            "Anna <anna@example.com>, x@helpdesk.example.com")  # fmt: skip
    # A first mail's Cc is the sender's word only (issue 14): Carol is not a watcher yet.
    n, note = open_ticket(desk, mail, headers={"Cc": f"Carol <carol@example.org>, {ours}"})
    assert not [e for e in desk.ticket(n)["events"] if e["kind"] == "watcher_added"]
    # Bob's reply to his acknowledgement is verified: the people it copies watch.
    copy_in(desk, mail, f"Carol <carol@example.org>, {ours}")
    events = desk.ticket(n)["events"]
    assert [e["new"] for e in events if e["kind"] == "watcher_added"] == ["carol@example.org"]
    # Carol gets the public reply (Cc) and may answer: appended, the agents hear of it.
    answer(desk, note, "We are on it.", message_id="<a1@example.com>")
    got = mail.new()
    (to_bob,) = got.pop("bob@example.org")
    assert to_bob["Cc"] == "Carol <carol@example.org>"
    for address in ("help@example.com", "tier1@example.com", "x@helpdesk.example.com"):
        assert address not in str(to_bob["To"]) + str(to_bob["Cc"])
    desk.process(reply_to(to_bob, sender="Carol <carol@example.org>", body="Me too, room 302.",
                          message_id="<c1@example.org>"))  # fmt: skip
    t = desk.ticket(n)
    (carols,) = [a for a in t["articles"] if a["message_id"] == "<c1@example.org>"]
    assert carols["from"]["email"] == "carol@example.org" and carols["visibility"] == "public"
    got = mail.new()
    assert "Me too, room 302." in body(got.pop("anna@example.com")[0])
    assert "bob@example.org" not in got and "carol@example.org" not in got
    # Bob replies to all, dropping Carol and adding Dave: the watchers follow his Cc.
    desk.process(make_message(sender=REQUESTER, subject=f"Re: [#{n}] Printer", body="Update.",
                              message_id="<b3@example.org>", in_reply_to=to_bob["Message-ID"],
                              headers={"Cc": "Dave <dave@example.org>, help@example.com"}))  # fmt: skip
    events = desk.ticket(n)["events"]
    assert [e["old"] for e in events if e["kind"] == "watcher_removed"] == ["carol@example.org"]
    assert [e["new"] for e in events if e["kind"] == "watcher_added"][-1] == "dave@example.org"
    (told,) = mail.new()["carol@example.org"]  # Carol hears she no longer follows it
    assert "no longer receive updates" in told["Subject"]
    answer(desk, note, "Fixed.", message_id="<a2@example.com>")
    got = mail.new()
    assert set(got) == {"bob@example.org", "dave@example.org"}


def test_the_reply_text_never_carries_the_agents_or_reply_address(desk):
    mail = Mail(desk)
    n, note = open_ticket(desk, mail)
    token = note["Reply-To"].addresses[0].addr_spec
    answer(desk, note, f"Write to ANNA@example.com or {token} if it breaks again.\n")
    (to_bob,) = mail.new()["bob@example.org"]
    text = body(to_bob)
    assert "anna@example.com" not in text.lower() and "help+" not in text
    assert "Write to help@example.com or help@example.com" in text
    no_leak(to_bob, "anna")
    raw = to_bob.as_bytes()  # (the body is quoted-printable: checked decoded above too)
    raw = re.sub(rb"help\+\d+\.r\d*\.[a-z2-7]{26}@", b"", raw)  # Bob's own reply address
    assert b"anna@" not in raw.lower() and b"help+" not in raw
