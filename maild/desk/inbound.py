"""Every inbound message's fate, for people: list, show, replay.

Each row ends as a *ticket* (it opened one), a *reply* (recorded on a ticket:
a reply, an auto-reply, a bounce), *ignored* (with the rule that set it aside
and why), *spam* (a spam filter's verdict), or *quarantined* (the error; the
bytes are kept). ``maild inbound list`` shows them; ``maild inbound replay``
runs an ignored or spam message through the pipeline again as if it were
wanted: its screening verdict no longer counts (our own mail coming back
still does), and the ticket records who chose it. DB only; the caller owns
the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from maild.mail.compose import clean_header_text
from maild.mail.limits import header_fields, split_header_block
from maild.store.models import Inbound, InboundRaw
from maild.store.states import Fate, InboundStatus, Outcome

SHOW_HEADERS = 50
HEAD_BYTES = 16 * 1024
REPLAYABLE = (InboundStatus.IGNORED, InboundStatus.SPAM)

_FATE_WHERE = {
    Fate.PENDING: Inbound.status.in_([InboundStatus.PENDING, InboundStatus.PROCESSING]),
    Fate.TICKET: and_(Inbound.status == InboundStatus.DONE, Inbound.outcome == Outcome.NEW_TICKET),
    Fate.REPLY: and_(Inbound.status == InboundStatus.DONE, Inbound.outcome == Outcome.APPENDED),
    Fate.IGNORED: Inbound.status == InboundStatus.IGNORED,
    Fate.SPAM: Inbound.status == InboundStatus.SPAM,
    Fate.QUARANTINED: Inbound.status == InboundStatus.QUARANTINED,
}


def fate_of(status: str, outcome: str | None) -> Fate:
    if status in (InboundStatus.PENDING, InboundStatus.PROCESSING):
        return Fate.PENDING
    if status == InboundStatus.DONE:
        return Fate.TICKET if outcome == Outcome.NEW_TICKET else Fate.REPLY
    return Fate(status)


def _decoded(value: str) -> str:
    try:
        text = str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        text = value
    return clean_header_text(text, 300)


def headers_of(raw: bytes, limit: int = SHOW_HEADERS) -> list[tuple[str, str]]:
    """(name, value) of the first header fields, one line each, encoded-words decoded."""
    head, _sep, _body = split_header_block(raw[:HEAD_BYTES])
    out = []
    for field in header_fields(head)[:limit]:
        name, _colon, value = field.decode("utf-8", "replace").partition(":")
        out.append((name.strip()[:100], _decoded(" ".join(value.split()))))
    return out


def _head(raw: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in headers_of(raw, limit=200):
        key = name.lower()
        if key in ("from", "subject") and key not in found:
            found[key] = value
    return found


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _row(r: Any, head: bytes) -> dict[str, Any]:
    seen = _head(bytes(head or b""))
    return {
        "id": r.id,
        "fate": str(fate_of(r.status, r.outcome)),
        "received_at": _iso(r.received_at),
        "source": r.source,
        "mailbox": r.mailbox,
        "envelope_from": r.envelope_from,
        "recipient": r.recipient,
        "message_id": r.message_id,
        "from": seen.get("from", ""),
        "subject": seen.get("subject", ""),
        "status": r.status,
        "outcome": r.outcome,
        "rule": r.rule,
        "reason": r.error if r.status == InboundStatus.QUARANTINED else r.reason,
        "ticket": r.ticket_id,
        "attempts": r.attempts,
        "size": r.size,
        "processed_at": _iso(r.processed_at),
        "message_id_clash": r.message_id_clash,
        "replayed_by": r.replayed_by,
        "replayed_at": _iso(r.replayed_at),
    }


_COLUMNS = (Inbound.id, Inbound.status, Inbound.outcome, Inbound.received_at, Inbound.source,
            Inbound.mailbox, Inbound.envelope_from, Inbound.recipient, Inbound.message_id,
            Inbound.rule, Inbound.reason, Inbound.error, Inbound.ticket_id, Inbound.attempts,
            Inbound.size, Inbound.processed_at, Inbound.message_id_clash, Inbound.replayed_by,
            Inbound.replayed_at)  # fmt: skip


def list_inbound(
    session: Session,
    *,
    fates: Iterable[str] = (),
    since: datetime | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """The newest messages first; `fates` ("ticket", "ignored", ...) filter, `since` too.

    From and Subject are read from the first 16 KB of each message's bytes.
    """
    stmt = (
        select(*_COLUMNS, func.substr(InboundRaw.raw, 1, HEAD_BYTES).label("head"))
        # Outer: retention ([retention]) may have removed the bytes; the row stays.
        .outerjoin(InboundRaw, InboundRaw.inbound_id == Inbound.id)
        .order_by(Inbound.id.desc())
        .limit(limit)
    )
    wanted = [_FATE_WHERE[Fate(f)] for f in fates]
    if wanted:
        stmt = stmt.where(or_(*wanted))
    if since is not None:
        stmt = stmt.where(Inbound.received_at >= since)
    return [_row(r, r.head) for r in session.execute(stmt)]


def show(session: Session, inbound_id: int) -> dict[str, Any] | None:
    """One message: its fate, its first header fields and its raw bytes."""
    row = session.execute(
        select(*_COLUMNS, InboundRaw.raw)
        .outerjoin(InboundRaw, InboundRaw.inbound_id == Inbound.id)
        .where(Inbound.id == inbound_id)
    ).first()
    if row is None:
        return None
    raw = bytes(row.raw or b"")  # empty once retention removed the bytes
    data = _row(row, raw[:HEAD_BYTES])
    data["headers"] = headers_of(raw)
    data["raw"] = raw
    return data


@dataclass(frozen=True)
class Replay:
    inbound_id: int
    queued: bool
    why: str = ""  # when not queued: why not


def replay(session: Session, ids: Iterable[int], actor: str, now: datetime) -> list[Replay]:
    """Queue ignored or spam messages again, as wanted by `actor`; say why not for others."""
    wanted = list(dict.fromkeys(ids))
    rows = {
        r.id: r
        for r in session.execute(
            select(
                Inbound.id,
                Inbound.status,
                Inbound.ticket_id,
                exists().where(InboundRaw.inbound_id == Inbound.id).label("kept"),
            ).where(Inbound.id.in_(wanted))
        )
    }
    out: list[Replay] = []
    queue: list[int] = []
    for inbound_id in wanted:
        r = rows.get(inbound_id)
        if r is None:
            out.append(Replay(inbound_id, False, "no such inbound message"))
        elif r.status in REPLAYABLE and not r.kept:
            out.append(Replay(inbound_id, False, "its bytes are gone (retention)"))
        elif r.status in REPLAYABLE:
            queue.append(inbound_id)
            out.append(Replay(inbound_id, True))
        elif r.status == InboundStatus.QUARANTINED:
            out.append(Replay(inbound_id, False, "quarantined: use maild quarantine replay"))
        elif r.status == InboundStatus.DONE:
            out.append(Replay(inbound_id, False, f"already on ticket #{r.ticket_id}"))
        else:
            out.append(Replay(inbound_id, False, f"still {r.status}"))
    if queue:
        session.execute(
            update(Inbound)
            .where(Inbound.id.in_(queue), Inbound.status.in_(list(REPLAYABLE)))
            .values(
                status=InboundStatus.PENDING,
                attempts=0,
                error=None,
                processed_at=None,
                claimed_at=None,
                claimed_by=None,
                replayed_by=actor[:320],
                replayed_at=now,
            )  # fmt: skip
        )
    return out
