"""What the pages and the API read: the queue, one ticket, the dashboard.

Plain dicts, one shape for the HTML pages and their JSON twins (as
Datasette does). The queue is an indexed query with keyset paging: a page
is found by the last row of the one before, never by OFFSET, so page 200
costs what page 1 costs. Security incidents show their content only to the
security group; everyone else gets a stub (`restricted`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select, union_all
from sqlalchemy.orm import Session

from maild.config.settings import Settings
from maild.pipeline.directory import GROUP_SECURITY, AgentEntry, Directory
from maild.store.models import (
    Agent,
    Article,
    Attachment,
    Blob,
    Contact,
    Event,
    Ticket,
    TicketLink,
    Watcher,
)
from maild.store.states import FINISHED_STATUSES, ArticleKind, TicketStatus, Visibility

VIEWS = ("mine", "tiers", "unassigned", "breaching", "waiting", "open")
OPEN_STATUSES = tuple(s.value for s in TicketStatus if s not in FINISHED_STATUSES)
STATUSES = tuple(s.value for s in TicketStatus)
RUNNING_STATUSES = tuple(s for s in OPEN_STATUSES if s != TicketStatus.PENDING_USER)
# Stands for "status IN RUNNING_STATUSES" in a view's conditions; `_by_status` turns it
# into one index lookup per status (SQLite's statistics see a column of seven values
# and would scan the whole table for four of them, though they are few among the closed).
RUNNING = Ticket.status.in_(RUNNING_STATUSES)
FILTERS = ("status", "priority", "type", "category", "tier", "assignee")
RESTRICTED_SUBJECT = "(security incident)"
REQUESTER_KINDS = (ArticleKind.MESSAGE, ArticleKind.NOTIFICATION)


class BadQuery(ValueError):
    """A query parameter that cannot be used; `field` names it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def may_see_security(settings: Settings, agent: AgentEntry) -> bool:
    """The security group: ``tiers.security`` or an agent in group "security" (as in mail)."""
    return GROUP_SECURITY in agent.groups or agent.email in {
        e.lower() for e in settings.tiers.security
    }


# The next deadline: the first response while none was given, else the resolution.
NEXT_DUE = case(
    (and_(Ticket.first_response_at.is_(None), Ticket.first_response_due.is_not(None)),
     Ticket.first_response_due),
    else_=Ticket.resolution_due,
)  # fmt: skip
WARN_AT = case(
    (Ticket.first_response_at.is_(None), Ticket.first_response_warn_at),
    else_=Ticket.resolution_warn_at,
)


@dataclass
class QueueQuery:
    view: str = "open"
    filters: dict[str, str] = field(default_factory=dict)
    cursor: str | None = None
    limit: int = 50
    numbers: list[int] | None = None  # search results, in rank order (no paging then)


def _encode_cursor(parts: list[Any]) -> str:
    text = "|".join("" if p is None else str(p) for p in parts)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> list[str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadQuery("cursor", "not a cursor from this queue") from None
    return text.split("|")


def _where(q: QueueQuery, agent: AgentEntry, directory: Directory) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    view = q.view
    if view not in VIEWS:
        raise BadQuery("view", f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    status = q.filters.get("status")
    if status:
        if status not in STATUSES:
            raise BadQuery("status", f"unknown status {status!r}")
        conds.append(Ticket.status == status)
    elif view == "breaching":  # the running clocks: open, not waiting for the requester
        conds.append(RUNNING)
    elif view != "waiting" and not q.numbers:
        conds.append(Ticket.status.in_(OPEN_STATUSES))
    if view == "mine":
        conds.append(Ticket.assignee_id == agent.id)
    elif view == "tiers":
        conds.append(Ticket.tier == agent.tier)
    elif view == "unassigned":
        conds.append(Ticket.assignee_id.is_(None))
    elif view == "breaching":
        if status:
            conds.append(Ticket.status != TicketStatus.PENDING_USER)
        conds.append(NEXT_DUE.is_not(None))
    elif view == "waiting":
        conds.append(Ticket.status == TicketStatus.PENDING_USER)
    if value := q.filters.get("priority"):
        p = value.upper().removeprefix("P")
        if p not in ("1", "2", "3", "4"):
            raise BadQuery("priority", "priority must be P1..P4")
        conds.append(Ticket.priority == int(p))
    if value := q.filters.get("type"):
        if value not in ("incident", "request"):
            raise BadQuery("type", "type must be incident or request")
        conds.append(Ticket.type == value)
    if value := q.filters.get("category"):
        conds.append(Ticket.category == value[:64])
    if value := q.filters.get("tier"):
        if value not in ("1", "2", "3"):
            raise BadQuery("tier", "tier must be 1, 2 or 3")
        conds.append(Ticket.tier == int(value))
    if value := q.filters.get("assignee"):
        if value == "none":
            conds.append(Ticket.assignee_id.is_(None))
        else:
            who = directory.find(value)
            if who is None:
                raise BadQuery("assignee", f"no single active agent is called {value!r}")
            conds.append(Ticket.assignee_id == who.id)
    if q.numbers is not None:
        conds.append(Ticket.id.in_(q.numbers or [0]))
    return conds


def queue(
    session: Session, settings: Settings, directory: Directory, agent: AgentEntry,
    q: QueueQuery, now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """One page of a queue view: rows, the total, and the cursor of the next page."""
    conds = _where(q, agent, directory)
    total = _count(session, conds)
    # The page's numbers first, from the ticket table alone (an index on status,
    # assignee or tier; SQLite would otherwise start from the join), then its rows.
    breaching = q.view == "breaching"
    after: list[ColumnElement[bool]] = []  # the cursor: rows after the last one shown
    if q.cursor and q.numbers is None:
        parts = _decode_cursor(q.cursor)
        try:
            if breaching:
                value, last = datetime.fromisoformat(parts[0]), int(parts[1])
                after.append(or_(value < NEXT_DUE, and_(value == NEXT_DUE, Ticket.id > last)))
            else:
                after.append(Ticket.id < int(parts[0]))
        except (ValueError, IndexError):
            raise BadQuery("cursor", "not a cursor from this queue") from None
    if breaching:
        sub = union_all(*(select(Ticket.id, NEXT_DUE.label("due")).where(*part, *after)
                          for part in _by_status(conds))).subquery()  # fmt: skip
        page = select(sub.c.id).order_by(sub.c.due, sub.c.id)
    elif q.numbers is None:
        page = select(Ticket.id).where(*conds, *after).order_by(Ticket.id.desc())
    else:
        page = select(Ticket.id).where(*conds)
    numbers = list(session.scalars(page.limit(q.limit + 1 if q.numbers is None
                                              else len(q.numbers))))  # fmt: skip
    more = q.numbers is None and len(numbers) > q.limit
    numbers = numbers[: q.limit] if q.numbers is None else numbers
    found = {
        r.id: r
        for r in session.execute(
            select(Ticket.id, Ticket.subject, Ticket.status, Ticket.priority, Ticket.type,
                   Ticket.category, Ticket.tier, Ticket.security, Ticket.assignee_id,
                   Ticket.updated_at, Contact.email, Contact.name, NEXT_DUE.label("next_due"),
                   WARN_AT.label("warn_at"), Ticket.sla_paused_at)
            .join(Contact, Contact.id == Ticket.requester_id)
            .where(Ticket.id.in_(numbers or [0]))
        )
    }  # fmt: skip
    order = q.numbers if q.numbers is not None else numbers
    rows = [found[n] for n in order if n in found]
    secure = may_see_security(settings, agent)
    out = []
    for r in rows:
        assignee = directory.by_id(r.assignee_id)
        restricted = r.security and not secure
        out.append({
            "number": r.id,
            "subject": RESTRICTED_SUBJECT if restricted else r.subject,
            "status": r.status,
            "priority": f"P{r.priority}",
            "type": r.type,
            "category": r.category,
            "tier": r.tier,
            "security": r.security,
            "restricted": restricted,
            "requester": {"email": "" if restricted else r.email,
                          "name": "" if restricted else r.name},
            "assignee": assignee.email if assignee else None,
            "next_due": r.next_due,
            "deadline": deadline_state(r.next_due, r.warn_at, r.sla_paused_at, r.status, now),
            "updated_at": r.updated_at,
        })  # fmt: skip
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = _encode_cursor(
            [last.next_due.isoformat() if last.next_due else "", last.id] if breaching
            else [last.id]
        )  # fmt: skip
    return {"view": q.view, "filters": q.filters, "tickets": out, "count": total,
            "next": next_cursor}  # fmt: skip


def deadline_state(
    due: datetime | None, warn_at: datetime | None, paused: datetime | None, status: str,
    now: datetime,
) -> str:  # fmt: skip
    """ "" | "paused" | "ok" | "warning" | "breached" for the next deadline."""
    if due is None or status in FINISHED_STATUSES:
        return ""
    if paused is not None:
        return "paused"
    if due <= now:
        return "breached"
    if warn_at is not None and warn_at <= now:
        return "warning"
    return "ok"


def _by_status(conds: list[ColumnElement[bool]]) -> list[list[ColumnElement[bool]]]:
    if not any(c is RUNNING for c in conds):
        return [conds]
    rest = [c for c in conds if c is not RUNNING]
    return [[Ticket.status == status, *rest] for status in RUNNING_STATUSES]


def _count(session: Session, conds: list[ColumnElement[bool]]) -> int:
    return sum(session.scalar(select(func.count()).select_from(Ticket).where(*part)) or 0
               for part in _by_status(conds))  # fmt: skip


def view_counts(
    session: Session, settings: Settings, directory: Directory, agent: AgentEntry
) -> dict[str, int]:
    """How many tickets each view holds (the navigation shows them)."""
    out = {}
    for view in VIEWS:
        out[view] = _count(session, _where(QueueQuery(view=view), agent, directory))
    return out


# --- one ticket --------------------------------------------------------------------------


def ticket(
    session: Session, settings: Settings, directory: Directory, number: int,
    *, agent: AgentEntry | None, now: datetime,
) -> dict[str, Any] | None:  # fmt: skip
    """The ticket as an agent (`agent`) or its requester (`agent` None) may see it."""
    row = session.execute(
        select(Ticket, Contact).join(Contact, Contact.id == Ticket.requester_id)
        .where(Ticket.id == number)
    ).first()  # fmt: skip
    if row is None:
        return None
    t, requester = row
    restricted = agent is not None and t.security and not may_see_security(settings, agent)
    assignee = session.get(Agent, t.assignee_id) if t.assignee_id else None
    data: dict[str, Any] = {
        "number": t.id,
        "subject": RESTRICTED_SUBJECT if restricted else t.subject,
        "status": t.status,
        "type": t.type,
        "category": t.category,
        "priority": f"P{t.priority}",
        "impact": t.impact,
        "urgency": t.urgency,
        "tier": t.tier,
        "security": t.security,
        "restricted": restricted,
        "language": t.language,
        "requester": {"email": "" if restricted else requester.email,
                      "name": "" if restricted else requester.name,
                      "bounce_state": requester.bounce_state},
        "assignee": ({"email": assignee.email, "name": assignee.name} if assignee else None),
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "version": t.updated_at.isoformat(),
        # the requester's rating of the help (maild.closure, or their page), 1..5
        "rating": ({"score": t.satisfaction_score, "comment": t.satisfaction_comment or "",
                    "at": t.satisfaction_at} if t.satisfaction_score is not None else None),
        "sla": {
            "first_response_due": t.first_response_due,
            "first_response_at": t.first_response_at,
            "first_response_breached": t.first_response_breached_at is not None,
            "resolution_due": t.resolution_due,
            "resolution_breached": t.resolution_breached_at is not None,
            "resolved_at": t.resolved_at,
            "closed_at": t.closed_at,
            "paused_since": t.sla_paused_at,
            "state": deadline_state(
                t.first_response_due if t.first_response_at is None and t.first_response_due
                else t.resolution_due,
                t.first_response_warn_at if t.first_response_at is None
                else t.resolution_warn_at, t.sla_paused_at, t.status, now),
            "regulator_due": t.regulator_due,
            "regulator_notified_at": t.regulator_notified_at,
        },
        "articles": [],
        "events": [],
        "watchers": [],
        "links": [],
    }  # fmt: skip
    if restricted:
        return data
    public_only = agent is None
    articles = select(Article).where(Article.ticket_id == number).order_by(Article.id)
    if public_only:  # the requester: what was written to or by them, never internal
        articles = articles.where(Article.visibility == Visibility.PUBLIC,
                                  Article.kind.in_(REQUESTER_KINDS))  # fmt: skip
    rows = list(session.scalars(articles))
    files: dict[int, list[dict[str, Any]]] = {}
    if rows:
        for att in session.scalars(
            select(Attachment).where(Attachment.article_id.in_([a.id for a in rows]))
            .order_by(Attachment.id)
        ):  # fmt: skip
            files.setdefault(att.article_id, []).append({
                "id": att.id, "filename": att.filename, "content_type": att.content_type,
                "size": att.size, "inline": att.inline})  # fmt: skip
    data["articles"] = [
        {"id": a.id, "direction": a.direction, "visibility": a.visibility, "kind": a.kind,
         "from": {"email": a.author_email, "name": a.author_name}, "subject": a.subject,
         "text": a.text, "created_at": a.created_at, "sent_at": a.sent_at,
         "attachments": files.get(a.id, []),
         # maild.pipeline.verify could not tie the sender to the From (agents see it)
         "unverified": a.verified_by == "none" and not public_only}
        for a in rows
    ]  # fmt: skip
    if public_only:
        return data
    data["events"] = [
        {"at": e.at, "actor": e.actor, "kind": e.kind, "old": e.old, "new": e.new}
        for e in session.scalars(select(Event).where(Event.ticket_id == number)
                                 .order_by(Event.id))
    ]  # fmt: skip
    data["watchers"] = [
        {"email": email, "name": name}
        for email, name in session.execute(
            select(Contact.email, Contact.name).join(Watcher, Watcher.contact_id == Contact.id)
            .where(Watcher.ticket_id == number).order_by(Contact.email))
    ]  # fmt: skip
    links = []
    for a, b, kind in session.execute(
        select(TicketLink.ticket_id, TicketLink.other_id, TicketLink.kind).where(
            or_(TicketLink.ticket_id == number, TicketLink.other_id == number))
    ):  # fmt: skip
        other = b if a == number else a
        if kind == "merged":
            kind = "merged into" if a == number else "merged from"
        links.append({"number": other, "kind": kind})
    data["links"] = sorted(links, key=lambda x: x["number"])
    return data


def attachment(
    session: Session, settings: Settings, number: int, attachment_id: int,
    *, agent: AgentEntry | None,
) -> tuple[Attachment, bytes] | None:  # fmt: skip
    """An attachment of ticket `number` that the viewer may read, with its bytes; else None
    (a security incident's files for anyone outside the security group, internal files
    for a requester, another ticket's files: all the same None, shown as 404)."""
    row = session.execute(
        select(Attachment, Article.visibility, Ticket.security, Blob.data)
        .join(Article, Article.id == Attachment.article_id)
        .join(Ticket, Ticket.id == Article.ticket_id)
        .join(Blob, Blob.sha256 == Attachment.sha256)
        .where(Attachment.id == attachment_id, Article.ticket_id == number)
    ).first()  # fmt: skip
    if row is None:
        return None
    att, visibility, security, data = row
    if agent is None and visibility != Visibility.PUBLIC:
        return None
    if agent is not None and security and not may_see_security(settings, agent):
        return None
    return att, data


def breached_tickets(
    session: Session, *, since: datetime | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Tickets that missed a target, most recent breach first (the dashboard's list)."""
    when = func.coalesce(Ticket.resolution_breached_at, Ticket.first_response_breached_at)
    recent = () if since is None else (Ticket.created_at >= since,)
    rows = session.execute(
        select(Ticket.id, Ticket.subject, Ticket.security, Ticket.priority, Ticket.tier,
               Ticket.category, Ticket.status, Ticket.first_response_breached_at,
               Ticket.resolution_breached_at)
        .where(or_(Ticket.first_response_breached_at.is_not(None),
                   Ticket.resolution_breached_at.is_not(None)), *recent)
        .order_by(when.desc(), Ticket.id.desc()).limit(limit)
    ).all()  # fmt: skip
    return [
        {"number": r.id, "subject": RESTRICTED_SUBJECT if r.security else r.subject,
         "priority": f"P{r.priority}", "tier": r.tier, "category": r.category,
         "status": r.status,
         "breached": [k for k, v in (("first response", r.first_response_breached_at),
                                     ("resolution", r.resolution_breached_at)) if v]}
        for r in rows
    ]  # fmt: skip
