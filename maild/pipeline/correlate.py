"""Correlation (DESIGN §4): which ticket does a message belong to?

In order: our signed reply address; ``In-Reply-To``/``References`` against
every Message-ID we stored or sent; a ``[#N]`` subject tag, only when the
sender already takes part in that ticket (anti-hijack); otherwise none, and a
new ticket opens. Never on subject text alone.

Pure: the worker looks up the `Facts` that `lookup_keys()` asks for and hands
them in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from maild.mail.parse import ParsedMessage
from maild.mail.replyaddr import ReplyToken, RequesterToken
from maild.pipeline.directory import EMPTY, Directory

_TAG_RE = re.compile(r"\[#(\d{1,12})\]")


@dataclass(frozen=True)
class TicketFacts:
    id: int
    status: str
    requester: str  # e-mail address
    subject: str
    language: str
    participants: frozenset[str]  # requester, watchers and agents on the ticket
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    priority: int = 3
    tier: int = 1
    security: bool = False
    assignee: int | None = None  # agent id
    watchers: frozenset[str] = frozenset()
    bounced: frozenset[str] = frozenset()  # participants marked undeliverable


@dataclass(frozen=True)
class AlertFacts:
    """A monitoring incident (`maild.alerts`) an alert may fold into."""

    ticket_id: int
    fold_key: str
    is_open: bool  # the alert has not recovered
    state: str  # the last state the monitor reported
    status: str  # the ticket's status
    priority: int
    occurrences: int
    flaps: int
    last_at: datetime
    recovered_at: datetime | None = None
    finished_at: datetime | None = None  # the ticket's resolved_at (or closed_at)
    problem_id: str | None = None


@dataclass(frozen=True)
class BouncedOutbox:
    """The outgoing mail a genuine VERP address names (`maild.mail.verp`)."""

    id: int
    ticket_id: int | None
    recipients: tuple[str, ...]
    # The one recipient the VERP address was made for: the only address this
    # bounce may speak of (None: the address names no recipient of this mail).
    recipient: str | None = None


@dataclass(frozen=True)
class Facts:
    """What the database knows that bears on one message."""

    known_ids: Mapping[str, int] = field(default_factory=dict)  # Message-ID -> ticket
    tickets: Mapping[int, TicketFacts] = field(default_factory=dict)
    already_stored_on: int | None = None  # this very Message-ID is an article there
    own_message_on: int | None = None  # its Message-ID is an article there (either way)
    token_ticket: int | None = None  # ticket named by a valid signed reply address
    sender_language: str | None = None  # the language recorded for the sender's contact
    bounced_outbox: BouncedOutbox | None = None  # the mail a VERP bounce is about
    reply_token: ReplyToken | None = None  # a reply address the message came to (checked)
    directory: Directory = EMPTY  # the agents
    # A requester's reply address the message came to, checked against its From.
    requester_token: RequesterToken | None = None
    # Message-IDs of our own mail among those it refers to -> who we sent each to.
    sent_to: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Monitoring incidents by fold key, and by the monitor's problem id (alert mail only).
    alerts: Mapping[str, AlertFacts] = field(default_factory=dict)
    alert_problems: Mapping[str, AlertFacts] = field(default_factory=dict)


@dataclass(frozen=True)
class LookupKeys:
    message_ids: tuple[str, ...]
    subject_ticket: int | None
    own_message_id: str | None


@dataclass(frozen=True)
class Correlation:
    ticket_id: int | None
    how: str  # "reply-address" | "references" | "subject-tag" | "" (new)
    note: str = ""


def subject_tag(subject: str) -> int | None:
    match = _TAG_RE.search(subject)
    return int(match.group(1)) if match else None


def lookup_keys(msg: ParsedMessage) -> LookupKeys:
    return LookupKeys(
        message_ids=msg.thread_ids(),
        subject_ticket=subject_tag(msg.subject),
        own_message_id=msg.message_id,
    )


def correlate(msg: ParsedMessage, facts: Facts) -> Correlation:
    if facts.token_ticket is not None:
        return Correlation(facts.token_ticket, "reply-address")
    if facts.bounced_outbox is not None and facts.bounced_outbox.ticket_id is not None:
        return Correlation(facts.bounced_outbox.ticket_id, "verp")
    for mid in msg.thread_ids():
        ticket = facts.known_ids.get(mid)
        if ticket is not None:
            return Correlation(ticket, "references", f"refers to {mid}")
    tagged = subject_tag(msg.subject)
    if tagged is not None:
        ticket_facts = facts.tickets.get(tagged)
        sender = msg.sender.email if msg.sender else ""
        participant = ticket_facts is not None and (
            sender in ticket_facts.participants or facts.directory.by_email(sender) is not None
        )
        if ticket_facts is not None and participant:
            return Correlation(tagged, "subject-tag")
        return Correlation(None, "", f"subject tag [#{tagged}] from a non-participant ignored")
    return Correlation(None, "")
