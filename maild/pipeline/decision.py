"""The decision types: what the pipeline decided about one message.

`decide` (requesters' mail), `agentmail` (agents' replies), `notices` (who is
told) and the desk's `apply` all speak these frozen types; they live here, below
all of them, so none of those modules needs another to name them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from maild.mail.parse import Address, ParsedAttachment, ParsedMessage
from maild.pipeline.alerts import AlertEvent
from maild.pipeline.commands import Command
from maild.pipeline.sla import SlaClock
from maild.store.states import ArticleKind, Direction, Outcome, TicketStatus, Visibility

__all__ = [
    "AgentReply",
    "AlertStep",
    "ClosureReply",
    "ArticleSpec",
    "BounceSpec",
    "Decision",
    "EventSpec",
    "InboundMeta",
    "Notice",
    "TicketSpec",
]


@dataclass(frozen=True)
class InboundMeta:
    id: int
    recipient: str | None  # the served base address
    envelope_from: str | None
    notify: bool
    received_at: datetime
    mailbox: str | None = None  # the [[imap.mailboxes]] name it was read from
    envelope_to: tuple[str, ...] = ()  # as given, plus-tags kept (reply addresses)
    source: str | None = None  # smtp, lmtp, imap, ingest, import
    # A person chose to run this message through as if it were wanted (`maild
    # inbound replay`): who, and what it had been ("spam (has_spam_verdict)").
    wanted_by: str | None = None
    was: str | None = None


@dataclass(frozen=True)
class ArticleSpec:
    kind: ArticleKind
    visibility: Visibility
    author: Address
    subject: str
    text: str
    html: str | None
    message_id: str | None
    in_reply_to: str | None
    sent_at: datetime | None
    attachments: tuple[ParsedAttachment, ...] = ()
    direction: Direction = Direction.IN
    # How its sender was verified (maild.pipeline.verify: "reply-address",
    # "references", "authentication-results"; "none": not at all); None: not
    # a person's mail (ours, an agent's, a bounce).
    verified_by: str | None = None
    # `text` without the mail it quotes, when worked out beside the parse
    # (`ParsedMessage.reply_text`); None: not known (`maild.desk.apply` works it out).
    reply_text: str | None = None

    @classmethod
    def of(
        cls, msg: ParsedMessage, sender: Address, kind: ArticleKind, visibility: Visibility,
        **extra: Any,
    ) -> ArticleSpec:  # fmt: skip
        """The article a received message becomes: its text, files and ids as they came."""
        fields: dict[str, Any] = {
            "subject": msg.subject, "text": msg.text, "html": msg.html,
            "message_id": msg.message_id,
            "in_reply_to": msg.in_reply_to[0] if msg.in_reply_to else None,
            "sent_at": msg.date, "attachments": msg.attachments, "reply_text": msg.reply_text,
        }  # fmt: skip
        fields.update(extra)
        if fields["text"] != msg.text:  # (the limits' notes added): not the text it was of
            fields["reply_text"] = extra.get("reply_text")
        return cls(kind=kind, visibility=visibility, author=sender, **fields)


@dataclass(frozen=True)
class TicketSpec:
    type: str
    category: str
    impact: int
    urgency: int
    priority: int
    tier: int
    security: bool
    subject: str
    requester: Address
    language: str
    address: str
    first_response_due: datetime | None
    resolution_due: datetime | None
    status: TicketStatus = TicketStatus.NEW
    parent_id: int | None = None
    sla: SlaClock | None = None  # all SLA columns (maild.sla); the dues above mirror it
    regulator_due: datetime | None = None
    regulator_next_reminder_at: datetime | None = None
    contact_language: str | None = None  # recorded on a new contact (None: only the default)
    watchers: tuple[Address, ...] = ()  # the requester's Cc
    origin: str = "mail"  # maild.states.Origin: "alert" and "major" have no requester to tell


@dataclass(frozen=True)
class EventSpec:
    kind: str
    actor: str
    old: str | None = None
    new: str | None = None
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Notice:
    """An automatic mail to send; rendered from `template` when applied."""

    template: str
    to: tuple[Address, ...]
    kind: str  # "ack", "update", ...
    auto_submitted: str  # "auto-replied" (answers a mail) or "auto-generated"
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    context: Mapping[str, Any] = field(default_factory=dict)
    reply_to: Address | None = None  # default: the help-desk address of the ticket
    language: str | None = None  # default: the ticket's language
    visibility: Visibility = Visibility.PUBLIC  # agent notifications are internal
    agent_id: int | None = None  # to an agent: Reply-To is their personal reply address
    cc: tuple[Address, ...] = ()  # the watchers, on public updates
    calendar: bytes | None = None  # an iCalendar REQUEST sent along (#meeting)
    attachments: tuple[ParsedAttachment, ...] = ()  # files sent along


@dataclass(frozen=True)
class AgentReply:
    """An authenticated agent's reply: commands to run, text for the requester."""

    agent_id: int
    agent: Address
    commands: tuple[Command, ...]
    text: str  # for the requester, quote- and signature-stripped ("" if none)
    attachments: tuple[ParsedAttachment, ...] = ()  # relayed to the requester with the text
    # The quoted mail could not be told apart from the agent's text: the text is the
    # whole reply minus its ">" lines, and the agent's confirmation says so.
    quote_kept: bool = False


@dataclass(frozen=True)
class ClosureReply:
    """A requester's rating or thank-you after "resolved" (`maild.closure`).

    Run by `TicketOps.requester_closure` after the reply is stored: the rating
    is kept, and when `close` (the reply threads by our own Message-IDs or
    reply address, not a mere subject tag) a resolved ticket closes at once.
    `tell`: the agents hear of it in this mail (not when the reply reopens the
    ticket, which tells them itself).
    """

    kind: str  # "rating" | "thanks"
    actor: str  # the requester's address
    score: int | None = None
    comment: str = ""
    close: bool = True
    tell: bool = True


@dataclass(frozen=True)
class BounceSpec:
    """What a delivery report says about mail we sent (`maild.mail.bounce`)."""

    kind: str  # "hard" | "soft" | "unknown"
    addresses: tuple[str, ...]  # our recipients it reports as failed
    outbox_id: int | None  # the mail it is about, when its VERP address told us
    status: str | None = None
    diagnostic: str | None = None


@dataclass(frozen=True)
class AlertStep:
    """What one alert of a monitor's mail does (`maild.alertmail`; run by `maild.alerting`).

    `action`: "open" a new incident (`new_ticket`, `article`, `events`,
    `notices`; `retire`: an earlier incident of the key whose alert row is
    closed first), "repeat" (counted; `article` when the state changed,
    `raise_to` when it worsened), "recover" (resolve, or only annotate with
    ``alerts.recovery = "annotate"``), "reopen" (flapping: a problem soon
    after the recovery), "annotate" (acknowledged, downtime, flapping notice),
    or "ignore" (`reason`).
    """

    action: str
    event: AlertEvent
    priority: int  # from the severity table
    ticket_id: int | None = None
    new_ticket: TicketSpec | None = None
    article: ArticleSpec | None = None
    events: tuple[EventSpec, ...] = ()
    notices: tuple[Notice, ...] = ()
    retire: int | None = None
    raise_to: int | None = None
    resolve: bool = False
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str = ""
    rule: str = ""  # the rule that set the message aside (screening, dedupe), for people
    ticket_id: int | None = None  # existing ticket the message goes to
    new_ticket: TicketSpec | None = None
    article: ArticleSpec | None = None
    status: TicketStatus | None = None  # new status for an existing ticket
    events: tuple[EventSpec, ...] = ()
    notices: tuple[Notice, ...] = ()
    how: str = ""  # how the ticket was found
    bounce: BounceSpec | None = None  # a delivery report: who failed, for good or not
    agent_reply: AgentReply | None = None  # run by maild.agentreply after apply
    watchers_add: tuple[Address, ...] = ()
    watchers_remove: tuple[str, ...] = ()
    # The client network the message came from (maild.mail.trace.client_source):
    # its notices count against the per-source limit on automatic mail.
    source: str | None = None
    # A participant marked undeliverable wrote in: they are deliverable again.
    deliverable_again: str | None = None
    # An archive being imported: when the message happened (its Date). The ticket,
    # article and events carry it; the inbound row and any mail sent carry now.
    occurred_at: datetime | None = None
    first_response: bool = False  # the old desk's own reply: the ticket's first response
    alerts: tuple[AlertStep, ...] = ()  # a monitor's mail: one step per alert (maild.alerting)
    closure: ClosureReply | None = None  # a rating or thank-you (TicketOps.requester_closure)
