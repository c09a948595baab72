"""Privacy duties: retention, a person's data exported (GDPR art. 15) and erased (art. 17).

`retention_sweep` removes what ``[retention]`` says is kept long enough: raw
bytes of processed and of ignored mail, sent outgoing mail, audit-event
details, and the personal data of tickets closed long ago (`anonymize`). It
works in small batches, each its own transaction, so intake never waits long.

`export` gathers everything maild holds about one address; `erase` removes
it: the contact's name and address, the tickets they opened are anonymised
(subjects, every text, attachments, raw mail, watchers, outgoing mail), their
own messages on other tickets are blanked, mail to or from them deleted, and
each ticket touched gets an audit event that names no one. Tickets stay, with
type, category, priority and times, so reports still count them.

The caller owns the transaction of `export` and `erase`; on SQLite the
connections run with ``secure_delete`` (`maild.store.db`), and `erase` is
followed by a WAL checkpoint (`maild.store.db.purge_wal`), so no bytes remain.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, delete, exists, func, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from maild.clock import Clock
from maild.config.settings import RetentionSettings
from maild.store import search, views
from maild.store.models import (
    Agent,
    Article,
    Attachment,
    AutoreplyLog,
    Blob,
    Contact,
    Event,
    Inbound,
    InboundRaw,
    Outbox,
    SearchDoc,
    SimilarDoc,
    Ticket,
    Watcher,
)
from maild.store.states import ArticleKind, InboundStatus, OutboxStatus, TicketStatus

log = logging.getLogger(__name__)

BATCH = 500
ERASED_DOMAIN = "erased.invalid"  # RFC 2606: never a real mailbox
IGNORED_STATUSES = (str(InboundStatus.IGNORED), str(InboundStatus.SPAM))
DONE_STATUSES = (str(InboundStatus.DONE),)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- retention -------------------------------------------------------------------------


def retention_sweep(
    sessions: sessionmaker[Session], retention: RetentionSettings, clock: Clock
) -> dict[str, int]:
    """Apply ``[retention]`` once; returns what was removed, by kind."""
    now = clock.now()
    done: dict[str, int] = {}

    def days(n: float) -> datetime | None:
        return now - timedelta(days=n) if n > 0 else None

    done["raw_processed"] = _drop_raw(sessions, DONE_STATUSES, days(retention.raw_days))
    done["raw_ignored"] = _drop_raw(sessions, IGNORED_STATUSES, days(retention.ignored_raw_days))
    done["outbox"] = _drop_outbox(sessions, days(retention.outbox_days))
    done["event_details"] = _drop_event_details(sessions, days(retention.event_detail_days))
    done["rate_limit_log"] = _drop_rate_log(sessions, now - timedelta(days=2))
    cutoff = days(retention.closed_ticket_months * 30.4375)
    done["tickets_anonymized"] = 0
    if cutoff is not None:
        stmt = (
            select(Ticket.id)
            .where(
                Ticket.status == TicketStatus.CLOSED,
                Ticket.closed_at < cutoff,
                Ticket.anonymized_at.is_(None),
            )  # fmt: skip
            .order_by(Ticket.id)
            .limit(50)
        )
        while True:
            with sessions.begin() as session:
                ids = list(session.scalars(stmt))
                if not ids:
                    break
                anonymize(session, ids, now, actor="retention")
            done["tickets_anonymized"] += len(ids)
        if done["tickets_anonymized"]:
            with sessions.begin() as session:
                compact_search_index(session)
    if any(done.values()):
        log.info("retention: %s", ", ".join(f"{k} {v}" for k, v in done.items() if v))
    return done


def _batches(
    sessions: sessionmaker[Session],
    pick: Callable[[int], Any],
    act: Callable[[Session, list[int]], object],
) -> int:
    """Pick ids after the last one (keyset: one pass), act on them; a transaction each."""
    total, last = 0, 0
    while True:
        with sessions.begin() as session:
            ids = list(session.scalars(pick(last).limit(BATCH)))
            if not ids:
                return total
            act(session, ids)
        total += len(ids)
        last = ids[-1]


def _drop_raw(sessions: sessionmaker[Session], statuses: tuple[str, ...],
              before: datetime | None) -> int:  # fmt: skip
    if before is None:
        return 0

    def pick(last: int) -> Any:
        return (
            select(Inbound.id)
            .where(
                Inbound.status.in_(statuses),
                Inbound.id > last,
                Inbound.received_at < before,
                exists().where(InboundRaw.inbound_id == Inbound.id),
            )  # fmt: skip
            .order_by(Inbound.id)
        )

    return _batches(sessions, pick, _delete_raw)


def _delete_raw(session: Session, inbound_ids: Iterable[int]) -> None:
    session.execute(delete(InboundRaw).where(InboundRaw.inbound_id.in_(list(inbound_ids))))


def _drop_outbox(sessions: sessionmaker[Session], before: datetime | None) -> int:
    if before is None:
        return 0

    def pick(last: int) -> Any:
        return (
            select(Outbox.id)
            .where(
                Outbox.status.in_([str(OutboxStatus.SENT), str(OutboxStatus.DEAD)]),
                Outbox.id > last,
                Outbox.created_at < before,
            )  # fmt: skip
            .order_by(Outbox.id)
        )

    return _batches(sessions, pick,
                    lambda s, ids: s.execute(delete(Outbox).where(Outbox.id.in_(ids))))  # fmt: skip


def _drop_event_details(sessions: sessionmaker[Session], before: datetime | None) -> int:
    if before is None:
        return 0

    def pick(last: int) -> Any:
        return (
            select(Event.id)
            .where(
                Event.id > last,
                Event.at < before,
                Event.detail.is_not(None),
                cast(Event.detail, Text) != "null",
            )  # fmt: skip
            .order_by(Event.id)
        )

    return _batches(sessions, pick, lambda s, ids: s.execute(
        update(Event).where(Event.id.in_(ids)).values(detail=None)))  # fmt: skip


def _drop_rate_log(sessions: sessionmaker[Session], before: datetime) -> int:
    """The automatic-mail log only serves the rate limits (an hour at most)."""

    def pick(last: int) -> Any:
        return (
            select(AutoreplyLog.id)
            .where(AutoreplyLog.id > last, AutoreplyLog.at < before)
            .order_by(AutoreplyLog.id)
        )

    return _batches(sessions, pick, lambda s, ids: s.execute(
        delete(AutoreplyLog).where(AutoreplyLog.id.in_(ids))))  # fmt: skip


# --- anonymising tickets -----------------------------------------------------------------


def anonymize(session: Session, ticket_ids: list[int], now: datetime, *, actor: str) -> None:
    """Remove the personal data of these tickets; keep what reports count."""
    if not ticket_ids:
        return
    agents = set(session.scalars(select(Agent.email)))
    article_ids = list(session.scalars(select(Article.id).where(Article.ticket_id.in_(ticket_ids))))
    _blank_articles(session, article_ids, agents)
    inbound_ids = set(session.scalars(select(Inbound.id).where(Inbound.ticket_id.in_(ticket_ids))))
    inbound_ids |= set(session.scalars(select(Article.inbound_id).where(
        Article.id.in_(article_ids), Article.inbound_id.is_not(None))))  # fmt: skip
    _scrub_inbound(session, inbound_ids)
    session.execute(delete(Outbox).where(Outbox.ticket_id.in_(ticket_ids)))
    session.execute(delete(SearchDoc).where(SearchDoc.ticket_id.in_(ticket_ids)))
    session.execute(delete(SimilarDoc).where(SimilarDoc.ticket_id.in_(ticket_ids)))
    session.execute(delete(Watcher).where(Watcher.ticket_id.in_(ticket_ids)))
    session.execute(delete(AutoreplyLog).where(AutoreplyLog.ticket_id.in_(ticket_ids)))
    for actor_email in set(session.scalars(select(Event.actor).where(
            Event.ticket_id.in_(ticket_ids)))) - agents:  # fmt: skip
        if "@" in actor_email and not actor_email.endswith("@cli"):
            session.execute(update(Event).where(Event.ticket_id.in_(ticket_ids),
                                                Event.actor == actor_email).values(actor="erased"))  # fmt: skip
    session.execute(update(Event).where(Event.ticket_id.in_(ticket_ids)).values(detail=None))
    requesters = set(session.scalars(select(Ticket.requester_id).where(Ticket.id.in_(ticket_ids))))
    session.execute(update(Ticket).where(Ticket.id.in_(ticket_ids))
                    .values(subject="", anonymized_at=now))  # fmt: skip
    for number in ticket_ids:
        session.add(Event(ticket_id=number, at=now, actor=actor, kind="anonymized",
                          old=None, new=None, detail=None))  # fmt: skip
    # A requester with nothing left under their name is removed too.
    for contact_id in requesters:
        left = session.scalar(select(
            exists().where(Ticket.requester_id == contact_id, Ticket.anonymized_at.is_(None))
            | exists().where(Watcher.contact_id == contact_id)))  # fmt: skip
        if not left:
            _erase_contact_row(session, contact_id, now)
    session.flush()


def _blank_articles(session: Session, article_ids: list[int], keep_authors: set[str]) -> None:
    if not article_ids:
        return
    session.execute(
        update(Article).where(Article.id.in_(article_ids)).values(text="", html=None, subject="")
    )
    session.execute(
        update(Article)
        .where(Article.id.in_(article_ids), Article.author_email.not_in(keep_authors or {""}))
        .values(author_email="", author_name="")
    )
    _delete_attachments(session, article_ids)


def _delete_attachments(session: Session, article_ids: list[int]) -> None:
    hashes = set(session.scalars(select(Attachment.sha256).where(
        Attachment.article_id.in_(article_ids))))  # fmt: skip
    if not hashes:
        return
    session.execute(delete(Attachment).where(Attachment.article_id.in_(article_ids)))
    still_used = set(session.scalars(select(Attachment.sha256).where(
        Attachment.sha256.in_(hashes))))  # fmt: skip
    gone = list(hashes - still_used)
    if gone:
        session.execute(delete(Blob).where(Blob.sha256.in_(gone)))


def _scrub_inbound(session: Session, inbound_ids: Iterable[int]) -> None:
    """Raw bytes deleted, envelope addresses and errors cleared (not while in hand)."""
    ids = list(inbound_ids)
    if not ids:
        return
    settled = list(session.scalars(select(Inbound.id).where(
        Inbound.id.in_(ids), Inbound.status.not_in(
            [str(InboundStatus.PENDING), str(InboundStatus.PROCESSING)]))))  # fmt: skip
    if not settled:
        return
    _delete_raw(session, settled)
    session.execute(update(Inbound).where(Inbound.id.in_(settled))
                    .values(envelope_from=None, envelope_to=[], error=None))  # fmt: skip


def _reindex(session: Session, tickets: set[int], needles: list[str], *, blanked: set[int]) -> None:
    """The search index of the tickets an erasure touched, made again from what is left."""
    if not tickets:
        return
    session.flush()
    session.execute(delete(SearchDoc).where(SearchDoc.article_id.in_(list(blanked))))
    lowered = [n.lower() for n in needles]
    for t in session.scalars(select(Ticket).where(Ticket.id.in_(list(tickets)))):
        head_of = search.head_text(t.id, t.subject, t.requester.name, t.requester.email)
        for doc in session.scalars(select(SearchDoc).where(SearchDoc.ticket_id == t.id)):
            if doc.article_id is not None:
                left = session.scalar(select(Article.text).where(Article.id == doc.article_id))
            else:
                doc.body = _redact(doc.body, needles)
                left = doc.body
            doc.head = search.analyze(head_of, doc.language, 2000)
            doc.terms = search.analyze(left or "", doc.language)
        for fix in session.scalars(select(SimilarDoc).where(SimilarDoc.ticket_id == t.id)):
            if any(n in f"{fix.resolution} {fix.terms} {fix.head}".lower() for n in lowered):
                session.delete(fix)  # indexed again when the ticket is next resolved
    session.flush()


def compact_search_index(session: Session) -> None:
    """SQLite FTS5 keeps deleted entries until its segments merge: merge them now."""
    if session.get_bind().dialect.name != "sqlite":
        return
    for fts in ("search_fts", "similar_fts"):
        session.execute(text(f"INSERT INTO {fts}({fts}) VALUES ('optimize')"))


def _erase_contact_row(session: Session, contact_id: int, now: datetime) -> None:
    session.execute(
        update(Contact)
        .where(Contact.id == contact_id)
        .values(
            email=f"erased-{contact_id}@{ERASED_DOMAIN}",
            name="",
            language=None,
            bounced_at=None,
            erased_at=now,
        )  # fmt: skip
    )


# --- export and erase ----------------------------------------------------------------------


def _contact(session: Session, email: str) -> Contact | None:
    """The person `email` names: their contact, or, for someone maild holds mail
    from but made no contact for (they only ever wrote into another's thread, or
    their mail was set aside), a stand-in that is not stored (no id)."""
    address = email.strip().lower()
    contact = session.scalar(select(Contact).where(Contact.email == address))
    if contact is not None or not address:
        return contact
    name = session.scalar(select(Article.author_name).where(Article.author_email == address)
                          .order_by(Article.id.desc()).limit(1))  # fmt: skip
    if name is None and not session.scalar(
        select(exists().where(func.lower(Inbound.envelope_from) == address))
    ):
        return None
    return Contact(email=address, name=name or "", language=None, bounce_state="ok",
                   bounced_at=None, created_at=None)  # fmt: skip


def _mentions(column: Any, email: str) -> Any:
    """A JSON or text column whose text holds the address (confirmed by the caller)."""
    return func.lower(cast(column, Text)).contains(email, autoescape=True)


def export(session: Session, email: str) -> dict[str, Any] | None:
    """Everything maild holds about `email` (art. 15), or None if it knows no such contact."""
    contact = _contact(session, email)
    if contact is None or contact.erased_at is not None:
        return None
    address = contact.email
    own = list(session.scalars(select(Ticket.id).where(Ticket.requester_id == contact.id)
                               .order_by(Ticket.id)))  # fmt: skip
    tickets = [views.show_ticket(session, n) for n in own]
    watching = [
        {"ticket": t, "subject": s, "added_at": _iso(a)}
        for t, s, a in session.execute(
            select(Watcher.ticket_id, Ticket.subject, Watcher.added_at)
            .join(Ticket, Ticket.id == Watcher.ticket_id)
            .where(Watcher.contact_id == contact.id).order_by(Watcher.ticket_id))
    ]  # fmt: skip
    elsewhere = []
    for a in session.scalars(select(Article).where(
            Article.author_email == address, Article.ticket_id.not_in(own or [0]))
            .order_by(Article.id)):  # fmt: skip
        names = list(session.scalars(select(Attachment.filename).where(
            Attachment.article_id == a.id)))  # fmt: skip
        elsewhere.append({"ticket": a.ticket_id, "id": a.id, "direction": a.direction,
                          "kind": a.kind, "created_at": _iso(a.created_at),
                          "subject": a.subject, "text": a.text, "attachments": names})  # fmt: skip
    events = [
        {"ticket": e.ticket_id, "at": _iso(e.at), "actor": e.actor, "kind": e.kind,
         "old": e.old, "new": e.new, "detail": e.detail}
        for e in session.scalars(select(Event).where(
            Event.ticket_id.not_in(own or [0]),
            or_(Event.actor == address, _mentions(Event.detail, address),
                _mentions(Event.old, address), _mentions(Event.new, address)))
            .order_by(Event.id))
    ]  # fmt: skip
    sent = [
        {"id": o.id, "ticket": o.ticket_id, "kind": o.kind, "status": o.status,
         "message_id": o.message_id, "created_at": _iso(o.created_at), "sent_at": _iso(o.sent_at)}
        for o in session.scalars(select(Outbox).where(_mentions(Outbox.rcpt_to, address))
                                 .order_by(Outbox.id))
        if address in [r.lower() for r in o.rcpt_to]
    ]  # fmt: skip
    from_them = select(Article.inbound_id).where(
        Article.author_email == address, Article.inbound_id.is_not(None))  # fmt: skip
    received = [
        {"id": r.id, "received_at": _iso(r.received_at), "status": r.status, "ticket": r.ticket_id,
         "message_id": r.message_id, "size": r.size, "raw_kept": r.kept}
        for r in session.execute(
            select(Inbound.id, Inbound.received_at, Inbound.status, Inbound.ticket_id,
                   Inbound.message_id, Inbound.size,
                   exists().where(InboundRaw.inbound_id == Inbound.id).label("kept"))
            .where(or_(func.lower(Inbound.envelope_from) == address, Inbound.id.in_(from_them)))
            .order_by(Inbound.id))
    ]  # fmt: skip
    return {
        "contact": {"email": address, "name": contact.name, "language": contact.language,
                    "bounce_state": contact.bounce_state, "bounced_at": _iso(contact.bounced_at),
                    "created_at": _iso(contact.created_at)},
        "tickets": tickets,
        "watching": watching,
        "articles_on_other_tickets": elsewhere,
        "events_on_other_tickets": events,
        "mail_sent_to_them": sent,
        "mail_received_from_them": received,
    }  # fmt: skip


def _bytes_contain(session: Session, column: Any, needle: bytes) -> Any:
    """`column` (bytes) holds `needle`, exactly (SQLite instr, PostgreSQL position)."""
    if session.get_bind().dialect.name == "sqlite":
        return func.instr(column, needle) > 0
    return column.op("~~")(b"%" + needle.replace(b"\\", b"\\\\").replace(b"%", b"\\%")
                           .replace(b"_", b"\\_") + b"%")  # fmt: skip


def _redact(value: str | None, needles: list[str]) -> str | None:
    if not value:
        return value
    for needle in needles:
        value = re.sub(re.escape(needle), "[erased]", value, flags=re.IGNORECASE)
    return value


def erase(session: Session, email: str, now: datetime, *, actor: str) -> dict[str, Any] | None:
    """Remove `email`'s personal data (art. 17); returns counts, or None if unknown.

    Beyond the contact and the tickets they opened: their own messages on
    other tickets are blanked; their address and name (when it is specific,
    two words or more) are replaced by "[erased]" wherever another article or
    subject names them; raw mail and outgoing mail that contain either are
    deleted; audit events that mention the address lose their details.
    """
    contact = _contact(session, email)
    if contact is None or contact.erased_at is not None:
        return None
    address, contact_id = contact.email, contact.id
    needles = [address] + ([contact.name.strip()] if len(contact.name.split()) >= 2 else [])
    own = list(session.scalars(select(Ticket.id).where(Ticket.requester_id == contact_id)))
    not_own = Article.ticket_id.not_in(own or [0])
    # Their own messages on other tickets, and the mail they sent us.
    theirs = list(session.scalars(select(Article.id).where(Article.author_email == address,
                                                           not_own)))  # fmt: skip
    other_tickets = set(session.scalars(select(Article.ticket_id).where(Article.id.in_(theirs))))
    other_tickets |= set(session.scalars(select(Watcher.ticket_id).where(
        Watcher.contact_id == contact_id)))  # fmt: skip
    inbound = set(session.scalars(select(Article.inbound_id).where(
        Article.id.in_(theirs), Article.inbound_id.is_not(None))))  # fmt: skip
    inbound |= set(session.scalars(select(Inbound.id).where(
        func.lower(Inbound.envelope_from) == address)))  # fmt: skip
    _blank_articles(session, theirs, set())
    # Others' words that name them: redacted.
    named = or_(*(func.lower(column).contains(n.lower(), autoescape=True) for n in needles
                  for column in (Article.text, Article.html, Article.subject,
                                 Article.author_email, Article.author_name)))  # fmt: skip
    redacted = 0
    notices: list[int] = []
    for a in session.scalars(select(Article).where(named, not_own)):
        if a.kind == ArticleKind.NOTIFICATION:  # maild's mail about them, quoting them
            notices.append(a.id)
        a.text, a.html = _redact(a.text, needles) or "", _redact(a.html, needles)
        a.subject = _redact(a.subject, needles) or ""
        if any(n.lower() in (a.author_email + " " + a.author_name).lower() for n in needles):
            a.author_email, a.author_name = "", ""
        other_tickets.add(a.ticket_id)
        redacted += 1
    _blank_articles(session, notices, set())
    session.execute(delete(Outbox).where(Outbox.article_id.in_(notices)))
    for t in session.scalars(select(Ticket).where(Ticket.id.not_in(own or [0]), or_(
            *(func.lower(Ticket.subject).contains(n.lower(), autoescape=True) for n in needles)))):  # fmt: skip
        t.subject = _redact(t.subject, needles) or ""
        other_tickets.add(t.id)
    # Raw mail and outgoing mail that hold the address or the name: deleted.
    for needle in needles:
        inbound |= set(session.scalars(select(InboundRaw.inbound_id).where(
            _bytes_contain(session, InboundRaw.raw, needle.encode("utf-8")))))  # fmt: skip
    quarantined = list(session.scalars(select(Inbound.id).where(
        Inbound.id.in_(inbound), Inbound.status == InboundStatus.QUARANTINED,
        Inbound.ticket_id.is_(None))))  # fmt: skip
    _scrub_inbound(session, inbound)
    # Why maild did what it did with a message may name them ("reply to #2 from
    # <them>, who takes no part in it"): redacted like others' words.
    for row in session.execute(select(Inbound.id, Inbound.reason).where(or_(
            *(func.lower(Inbound.reason).contains(n.lower(), autoescape=True) for n in needles)))):  # fmt: skip
        session.execute(update(Inbound).where(Inbound.id == row.id)
                        .values(reason=_redact(row.reason, needles)))  # fmt: skip
    outbox = {o.id for o in session.execute(select(Outbox.id, Outbox.rcpt_to).where(
        _mentions(Outbox.rcpt_to, address))) if address in [r.lower() for r in o.rcpt_to]}  # fmt: skip
    for needle in needles:
        outbox |= set(session.scalars(select(Outbox.id).where(
            _bytes_contain(session, Outbox.raw, needle.encode("utf-8")))))  # fmt: skip
    session.execute(delete(Outbox).where(Outbox.id.in_(outbox)))
    session.execute(delete(Watcher).where(Watcher.contact_id == contact_id))
    session.execute(delete(AutoreplyLog).where(func.lower(AutoreplyLog.address) == address))
    session.execute(update(Event).where(Event.actor == address).values(actor="erased"))
    for column in (Event.detail, Event.old, Event.new):
        for needle in needles:
            session.execute(update(Event).where(_mentions(column, needle.lower()))
                            .values({column.key: None}))  # fmt: skip
    anonymize(session, own, now, actor=actor)
    _erase_contact_row(session, contact_id, now)
    _reindex(session, other_tickets - set(own), needles, blanked=set(theirs) | set(notices))
    for number in sorted(other_tickets - set(own)):
        session.add(Event(ticket_id=number, at=now, actor=actor, kind="contact_erased",
                          old=None, new=None, detail={"contact": contact_id}))  # fmt: skip
    session.flush()
    compact_search_index(session)
    return {"contact": contact_id, "tickets_anonymized": len(own),
            "articles_blanked": len(theirs), "articles_redacted": redacted,
            "other_tickets": len(other_tickets - set(own)),
            "raw_messages_deleted": len(inbound), "quarantined_from_them": len(quarantined),
            "outgoing_deleted": len(outbox)}  # fmt: skip
