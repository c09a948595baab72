"""Every status and kind string, defined once.

Plain `StrEnum`s so they compare equal to the strings stored in the database
and printed in JSON.
"""

from __future__ import annotations

from enum import StrEnum


class InboundStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    IGNORED = "ignored"
    SPAM = "spam"  # a spam verdict: stored, never ticketed or answered
    QUARANTINED = "quarantined"


class Source(StrEnum):
    SMTP = "smtp"
    LMTP = "lmtp"
    IMAP = "imap"
    INGEST = "ingest"
    IMPORT = "import"
    WEB = "web"  # a requester's reply, or a caller's request typed in by an agent
    API = "api"  # POST /api/v1/tickets


class TicketStatus(StrEnum):
    NEW = "new"
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    ESCALATED = "escalated"
    PENDING_USER = "pending_user"
    RESOLVED = "resolved"
    CLOSED = "closed"


FINISHED_STATUSES = frozenset({TicketStatus.RESOLVED, TicketStatus.CLOSED})


class Origin(StrEnum):
    """Where a ticket came from: only a person's mail has a requester to write to."""

    MAIL = "mail"  # a person's mail (or the CLI, console or API on a caller's behalf)
    ALERT = "alert"  # a monitoring system's alert (maild.alerts): never answered
    MAJOR = "major"  # a major incident maild opened over a burst of reports


class TicketType(StrEnum):
    INCIDENT = "incident"
    REQUEST = "request"


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class Visibility(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"


class ArticleKind(StrEnum):
    MESSAGE = "message"  # written by a person
    AUTOMATED = "automated"  # an auto-reply that refers to a ticket
    BOUNCE = "bounce"  # a delivery report about mail we sent
    NOTIFICATION = "notification"  # mail maild generated (ack, update)
    NOTE = "note"  # internal note


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class Outcome(StrEnum):
    """What the pipeline decided for one inbound message."""

    NEW_TICKET = "new_ticket"
    APPENDED = "appended"
    IGNORED = "ignored"
    SPAM = "spam"
    QUARANTINED = "quarantined"


class Fate(StrEnum):
    """What became of an inbound message, as `maild inbound list` shows it."""

    PENDING = "pending"  # waiting for (or in) the worker
    TICKET = "ticket"  # opened a ticket
    REPLY = "reply"  # recorded on a ticket (a reply, an auto-reply, a bounce)
    IGNORED = "ignored"  # set aside by a rule, which is named with the reason
    SPAM = "spam"  # a spam verdict
    QUARANTINED = "quarantined"  # could not be handled: the error, the bytes kept
