"""The data model (DESIGN §2), SQLAlchemy 2 declarative.

ORM objects stay inside the modules that write the database (`intake`,
`apply`, `worker`, `sender`, `views`); the pipeline sees frozen dataclasses.
Every schema change here comes with an Alembic migration in
``maild/store/migrations/versions``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    select,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column, relationship

# BIGINT keys on PostgreSQL, INTEGER (the rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; naive UTC in the column on every backend."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime, int: BigId}


class Inbound(Base):
    """A message exactly as it arrived, committed before we acknowledged it.

    Its bytes are in `InboundRaw`, read here as ``raw``.
    """

    __tablename__ = "inbound"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))
    mailbox: Mapped[str | None] = mapped_column(String(200))
    envelope_from: Mapped[str | None] = mapped_column(String(512))
    envelope_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    recipient: Mapped[str | None] = mapped_column(String(320))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    received_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None]
    claimed_by: Mapped[int | None] = mapped_column(BigInteger)  # instance.id
    processed_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(32))
    notify: Mapped[bool] = mapped_column(Boolean, default=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"))
    # Its fate, for people: the rule that set it aside (screening, dedupe) and why.
    rule: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    # An earlier inbound row with the same Message-ID for the same address and
    # other content (a scanner's or script's reused ID): stored anyway, flagged.
    message_id_clash: Mapped[int | None] = mapped_column(BigInteger)
    # A person chose to run an ignored or spam message through again (`maild inbound replay`).
    replayed_by: Mapped[str | None] = mapped_column(String(320))
    replayed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_inbound_status_id", "status", "id"),)


class InboundRaw(Base):
    """The raw bytes of an inbound message, in a row of their own.

    SQLite writes a whole record again, overflow pages and all, on every
    UPDATE of any of its columns; an inbound row is updated when claimed and
    again when processed. With the bytes inside it, every message was written
    five times over into the WAL (and again by each checkpoint); apart, once.
    """

    __tablename__ = "inbound_raw"

    inbound_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("inbound.id"), primary_key=True, autoincrement=False
    )
    raw: Mapped[bytes] = mapped_column(LargeBinary)


# Loaded with the row (one primary-key lookup), as when the bytes were a column.
Inbound.raw = column_property(
    select(InboundRaw.raw).where(InboundRaw.inbound_id == Inbound.id).scalar_subquery()
)


class Contact(Base):
    __tablename__ = "contact"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    language: Mapped[str | None] = mapped_column(String(16))
    bounce_state: Mapped[str] = mapped_column(String(16), default="ok")
    bounced_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    erased_at: Mapped[datetime | None]  # name and address removed (maild contact erase)


class Agent(Base):
    __tablename__ = "agent"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    tier: Mapped[int] = mapped_column(Integer, default=1)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    language: Mapped[str | None] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Ticket(Base):
    """A ticket; its id is the ticket number users see as ``[#N]``."""

    __tablename__ = "ticket"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(64))
    impact: Mapped[int] = mapped_column(Integer)
    urgency: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer)
    tier: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agent.id"))
    subject: Mapped[str] = mapped_column(Text)
    security: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str] = mapped_column(String(16), default="en")
    address: Mapped[str] = mapped_column(String(320))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"))
    loop_suspected: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    first_response_due: Mapped[datetime | None]
    first_response_at: Mapped[datetime | None]
    resolution_due: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    # SLA bookkeeping (maild.sla, maild.lifecycle, maild.sweeps)
    first_response_warn_at: Mapped[datetime | None] = mapped_column(index=True)
    first_response_warned_at: Mapped[datetime | None]
    first_response_breached_at: Mapped[datetime | None]
    resolution_warn_at: Mapped[datetime | None] = mapped_column(index=True)
    resolution_warned_at: Mapped[datetime | None]
    resolution_breached_at: Mapped[datetime | None]
    sla_paused_at: Mapped[datetime | None]
    sla_paused_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_reminder_at: Mapped[datetime | None]
    # GDPR art. 33: the regulator must hear of a personal-data breach within 72 h.
    regulator_due: Mapped[datetime | None]
    regulator_next_reminder_at: Mapped[datetime | None] = mapped_column(index=True)
    regulator_reminders_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    regulator_notified_at: Mapped[datetime | None]
    # Where the ticket came from (maild.states.Origin): a person's mail, a
    # monitor's alert, or a major incident maild opened; only "mail" tickets
    # have a requester to write to.
    origin: Mapped[str] = mapped_column(String(16), default="mail", server_default="mail")
    # Major incidents (maild.majors): a parent is `major`; its children point at it.
    major: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    major_key: Mapped[str | None] = mapped_column(String(300), index=True)  # "category:email"
    major_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    # The requester's rating of the help (maild.closure): 1..5, with a comment.
    satisfaction_score: Mapped[int | None] = mapped_column(Integer)
    satisfaction_comment: Mapped[str | None] = mapped_column(Text)
    satisfaction_at: Mapped[datetime | None]
    # Texts, attachments and raw mail removed (retention, or the requester erased).
    anonymized_at: Mapped[datetime | None]

    requester: Mapped[Contact] = relationship(foreign_keys=[requester_id], lazy="joined")

    __table_args__ = (
        # New tickets of one category in the last minutes (maild.majors, every new ticket).
        Index("ix_ticket_category_created", "category", "created_at"),
        # The console's queue views (maild.web.queries): open tickets are few among many
        # closed ones, and these lead to them by assignee or tier without a scan.
        Index("ix_ticket_assignee_status", "assignee_id", "status"),
        Index("ix_ticket_tier_status", "tier", "status"),
    )


class Article(Base):
    """One message or note on a ticket, in either direction."""

    __tablename__ = "article"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    direction: Mapped[str] = mapped_column(String(8))
    visibility: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    author_email: Mapped[str] = mapped_column(String(320), default="")
    author_name: Mapped[str] = mapped_column(String(200), default="")
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    subject: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound.id"))
    # How the sender of a person's mail was verified (maild.pipeline.verify):
    # "reply-address", "references", "authentication-results", "none"; NULL
    # for mail that is not a person's (ours, an agent's, a bounce).
    verified_by: Mapped[str | None] = mapped_column(String(32))


class Alert(Base):
    """A monitoring alert's incident: one open per (source, host, service) (maild.alerts)."""

    __tablename__ = "alert"

    ticket_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("ticket.id"), primary_key=True, autoincrement=False
    )
    source: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255), default="")
    service: Mapped[str] = mapped_column(String(255), default="")
    fold_key: Mapped[str] = mapped_column(String(64))
    is_open: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(255), default="")
    problem_id: Mapped[str | None] = mapped_column(String(255))
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    flaps: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]
    changed_at: Mapped[datetime]  # the last change of state
    recovered_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_alert_fold_key", "fold_key"),
        Index("ix_alert_problem_id", "problem_id"),
        Index("ix_alert_host_first", "host", "first_at"),
        # One open incident per key, whatever two instances do at once.
        Index(
            "uq_alert_open_fold_key",
            "fold_key",
            unique=True,
            sqlite_where=text("is_open"),
            postgresql_where=text("is_open"),
        ),
    )


class MajorNotice(Base):
    """A requester told about a major incident (maild.majors): once per kind."""

    __tablename__ = "major_notice"

    major_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "known", "resolved"
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"))  # the child it went with
    at: Mapped[datetime]


class Blob(Base):
    """Attachment content, stored once per sha256."""

    __tablename__ = "blob"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Attachment(Base):
    __tablename__ = "attachment"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("article.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(ForeignKey("blob.sha256"), index=True)
    content_id: Mapped[str | None] = mapped_column(String(998))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)


class Watcher(Base):
    __tablename__ = "watcher"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), primary_key=True)
    added_at: Mapped[datetime]


class TicketLink(Base):
    __tablename__ = "ticket_link"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), primary_key=True)
    other_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), default="related")
    created_at: Mapped[datetime]


class Event(Base):
    """The audit log: who changed what, when."""

    __tablename__ = "event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(32))
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Outbox(Base):
    """A rendered outgoing message; `raw` is what every (re)send transmits."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    article_id: Mapped[int | None] = mapped_column(ForeignKey("article.id"))
    kind: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    mail_from: Mapped[str] = mapped_column(String(320))
    rcpt_to: Mapped[list[str]] = mapped_column(JSON)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    claimed_by: Mapped[int | None] = mapped_column(BigInteger)  # instance.id
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    # A dead row's ticket got its event and its assignee was told (desk.sweeps).
    dead_noticed_at: Mapped[datetime | None]
    # Recipients already delivered to (one transaction, one VERP address each).
    rcpt_sent: Mapped[list[str] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_outbox_status_next", "status", "next_attempt_at"),
        Index("ix_outbox_status_id", "status", "id"),  # the sender's claim, in id order
    )


class AutoreplyLog(Base):
    """Automatic mails sent per address, for rate limits and loop breaking."""

    __tablename__ = "autoreply_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    # The client network of the mail that triggered it (maild.mail.trace.client_source).
    source: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_autoreply_log_address_at", "address", "at"),
        Index("ix_autoreply_log_ticket_at", "ticket_id", "at"),
        Index("ix_autoreply_log_at", "at"),
        Index("ix_autoreply_log_source_at", "source", "at"),
    )


class HeldNotice(Base):
    """Automatic mail a rate limit held back; sent later as one digest per address."""

    __tablename__ = "held_notice"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(320))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"))
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(300))
    held_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_held_notice_pending", "sent_at", "address"),)


class ImapCheckpoint(Base):
    __tablename__ = "imap_checkpoint"

    mailbox: Mapped[str] = mapped_column(String(200), primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class Instance(Base):
    """A running ``maild serve``; its rows are released when it is gone (maild.cluster)."""

    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


class SearchDoc(Base):
    """One searchable text of a ticket (maild.store.search): an article, an
    agent's public reply, a resolution note.

    `head` and `terms` hold the analysed words (stemmed, stopwords gone) of the
    ticket's number, subject and requester, and of the text; the full-text
    index is built on them: an FTS5 table on SQLite, a GIN index on a
    generated ``tsvector`` column on PostgreSQL (both made by migration 0007,
    not described here). `body` keeps the original text where no article
    holds it (a reply's own words, a resolution note), for snippets.
    """

    __tablename__ = "search_doc"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id", ondelete="CASCADE"), index=True)
    article_id: Mapped[int | None] = mapped_column(ForeignKey("article.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    visibility: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(16))
    head: Mapped[str] = mapped_column(Text)
    terms: Mapped[str] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class SimilarDoc(Base):
    """A resolved or closed ticket as a past fix (maild.store.search.similar_resolved):
    its problem (subject and the requester's words) and its resolution, analysed
    like `SearchDoc`, with an index of its own. Gone again when the ticket reopens."""

    __tablename__ = "similar_doc"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id", ondelete="CASCADE"), unique=True)
    language: Mapped[str] = mapped_column(String(16))
    head: Mapped[str] = mapped_column(Text)
    terms: Mapped[str] = mapped_column(Text)
    resolution: Mapped[str] = mapped_column(Text, default="")
    resolved_at: Mapped[datetime]


class Suggestion(Base):
    """A past fix suggested for a ticket, and whether an agent found it helpful
    (``#helpful N``)."""

    __tablename__ = "suggestion"

    ticket_id: Mapped[int] = mapped_column(
        ForeignKey("ticket.id", ondelete="CASCADE"), primary_key=True
    )
    suggested_id: Mapped[int] = mapped_column(
        ForeignKey("ticket.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)  # 1.. in the agents' mail; 0: not suggested
    score: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime]
    helpful_at: Mapped[datetime | None]
    helpful_by: Mapped[str | None] = mapped_column(String(320))


# --- the workspace (maild.web) -------------------------------------------------------
# Secrets are never stored: a table keeps the SHA-256 of each random token
# (256 bits of entropy, so a fast hash is enough) and compares hashes.


class WebLogin(Base):
    """A sign-in request: one row per form post, known address or not (rate limits)."""

    __tablename__ = "web_login"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320))
    client: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agent.id"))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    browser_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_web_login_email_created", "email", "created_at"),
        Index("ix_web_login_client_created", "client", "created_at"),
    )


class WebSession(Base):
    """An agent signed in to the console; the cookie holds the token, this its hash."""

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ApiToken(Base):
    """A bearer token for /api/v1, acting with its agent's rights."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class RequesterLinkRevocation(Base):
    """Requester links of a ticket issued before `revoked_at` no longer open it."""

    __tablename__ = "requester_link_revocation"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), primary_key=True)
    revoked_at: Mapped[datetime]
