"""Quarantine: look at, release or delete messages that were set aside.

A quarantined inbound row keeps its raw bytes and the reason. ``replay``
puts it back to ``pending`` with its attempts reset, so the worker runs it
through the whole pipeline again (after a fix, or a raised limit);
``drop`` deletes it for good. DB only; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from maild.mail.limits import header_fields, split_header_block
from maild.store.models import Inbound, InboundRaw
from maild.store.states import InboundStatus

SHOW_HEADERS = 50


def show(session: Session, inbound_id: int) -> dict[str, Any] | None:
    row = session.scalar(
        select(Inbound).where(Inbound.id == inbound_id, Inbound.status == InboundStatus.QUARANTINED)
    )
    if row is None:
        return None
    head, _sep, _body = split_header_block(row.raw[: 256 * 1024])
    headers = []
    for field in header_fields(head)[:SHOW_HEADERS]:
        name, _colon, value = field.decode("utf-8", "replace").partition(":")
        headers.append((name.strip()[:100], " ".join(value.split())[:300]))
    return {
        "id": row.id,
        "source": row.source,
        "envelope_from": row.envelope_from,
        "recipient": row.recipient,
        "message_id": row.message_id,
        "size": row.size,
        "received_at": row.received_at.isoformat(),
        "attempts": row.attempts,
        "reason": row.error,
        "headers": headers,
        "raw": bytes(row.raw),
    }


def release(session: Session, ids: Iterable[int]) -> set[int]:
    """Back to pending for the worker; returns the ids that were quarantined."""
    wanted = set(ids)
    found = set(
        session.scalars(
            select(Inbound.id).where(
                Inbound.id.in_(wanted), Inbound.status == InboundStatus.QUARANTINED
            )
        )
    )
    if found:
        session.execute(
            update(Inbound)
            .where(Inbound.id.in_(found))
            .values(
                status=InboundStatus.PENDING,
                attempts=0,
                error=None,
                outcome=None,
                processed_at=None,
                claimed_at=None,
            )  # fmt: skip
        )
    return found


def drop(session: Session, ids: Iterable[int]) -> set[int]:
    """Delete quarantined rows; returns the ids deleted."""
    wanted = set(ids)
    found = set(
        session.scalars(
            select(Inbound.id).where(
                Inbound.id.in_(wanted), Inbound.status == InboundStatus.QUARANTINED
            )
        )
    )
    if found:
        session.execute(delete(InboundRaw).where(InboundRaw.inbound_id.in_(found)))
        session.execute(delete(Inbound).where(Inbound.id.in_(found)))
    return found
