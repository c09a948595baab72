"""Who is asking: mailed sign-in links, console sessions, API tokens, requester links.

Every secret handed out (a sign-in link, a session cookie, an API token) is
32 random bytes; the database keeps only its SHA-256, so a copy of the
database signs nobody in. The functions here take an open session and the
time; the caller owns the transaction (one per request).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from maild.config.settings import WebSettings
from maild.mail.tokens import Signer
from maild.mail.weblink import check_requester_token
from maild.pipeline.directory import Directory
from maild.store.models import (
    Agent,
    ApiToken,
    Contact,
    RequesterLinkRevocation,
    Ticket,
    WebLogin,
    WebSession,
)

TOKEN_PREFIX = "maild_"
# last_seen_at is written at most this often per session (a page view is a read).
TOUCH_EVERY = timedelta(seconds=60)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# --- sign-in by a mailed link ---------------------------------------------------------


@dataclass(frozen=True)
class LoginRequest:
    """What `request_login` decided: `token` is set only for an active agent."""

    limited: bool
    token: str | None = None
    agent_id: int | None = None


def request_login(
    session: Session, web: WebSettings, directory: Directory, email: str, client: str,
    browser: str, now: datetime,
) -> LoginRequest:  # fmt: skip
    """Record a sign-in request; make a link token for an active agent.

    The caller answers alike whether or not the address is an agent's. Over
    the per-address or per-client hourly limit nothing is recorded or sent.
    """
    hour_ago = now - timedelta(hours=1)
    by_address = session.scalar(select(func.count()).select_from(WebLogin).where(
        WebLogin.email == email, WebLogin.created_at > hour_ago))  # fmt: skip
    by_client = session.scalar(select(func.count()).select_from(WebLogin).where(
        WebLogin.client == client, WebLogin.created_at > hour_ago))  # fmt: skip
    if (by_address or 0) >= web.login_per_address_per_hour or (
        by_client or 0
    ) >= web.login_per_client_per_hour:
        return LoginRequest(limited=True)
    agent = directory.by_email(email)
    token = new_secret() if agent is not None else None
    session.add(WebLogin(
        email=email, client=client[:64], agent_id=agent.id if agent else None,
        token_hash=digest(token) if token else None, browser_hash=digest(browser),
        created_at=now, expires_at=now + timedelta(minutes=web.login_link_minutes),
    ))  # fmt: skip
    return LoginRequest(False, token, agent.id if agent else None)


def pending_login(session: Session, token: str, now: datetime) -> WebLogin | None:
    """The unused, unexpired request behind a link token (nothing is consumed)."""
    row = session.scalar(select(WebLogin).where(WebLogin.token_hash == digest(token)))
    if row is None or row.used_at is not None or row.expires_at <= now:
        return None
    return row


def consume_login(session: Session, token: str, browser: str, now: datetime) -> int | None:
    """Use a link token once, from the browser that asked: the agent's id, or None."""
    row = pending_login(session, token, now)
    if row is None or row.agent_id is None:
        return None
    if not secrets.compare_digest(row.browser_hash, digest(browser)):
        return None
    used = session.execute(
        update(WebLogin)
        .where(WebLogin.id == row.id, WebLogin.used_at.is_(None))
        .values(used_at=now)
    ).rowcount
    return row.agent_id if used == 1 else None


# --- console sessions ----------------------------------------------------------------------


@dataclass(frozen=True)
class SessionInfo:
    id: int
    agent_id: int
    csrf: str


def start_session(
    session: Session, web: WebSettings, agent_id: int, client: str, user_agent: str,
    now: datetime,
) -> tuple[str, SessionInfo]:  # fmt: skip
    """A new session: (the cookie's secret, the session)."""
    secret = new_secret()
    row = WebSession(
        token_hash=digest(secret), agent_id=agent_id, csrf=secrets.token_urlsafe(24),
        client=client[:64], user_agent=user_agent[:200], created_at=now, last_seen_at=now,
        expires_at=now + timedelta(hours=web.session_max_hours),
    )  # fmt: skip
    session.add(row)
    session.flush()
    return secret, SessionInfo(row.id, agent_id, row.csrf)


def find_session(
    session: Session, web: WebSettings, secret: str, now: datetime
) -> tuple[SessionInfo | None, bool]:
    """(the live session behind a cookie, whether last_seen_at needs a write)."""
    row = session.execute(
        select(WebSession.id, WebSession.agent_id, WebSession.csrf, WebSession.last_seen_at,
               WebSession.expires_at, WebSession.revoked_at)
        .where(WebSession.token_hash == digest(secret))
    ).first()  # fmt: skip
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None, False
    if row.last_seen_at + timedelta(minutes=web.session_idle_minutes) <= now:
        return None, False
    return SessionInfo(row.id, row.agent_id, row.csrf), now - row.last_seen_at >= TOUCH_EVERY


def touch_session(session: Session, session_id: int, now: datetime) -> None:
    session.execute(update(WebSession).where(WebSession.id == session_id)
                    .values(last_seen_at=now))  # fmt: skip


def end_session(session: Session, session_id: int, now: datetime) -> None:
    session.execute(update(WebSession).where(WebSession.id == session_id,
                                             WebSession.revoked_at.is_(None))
                    .values(revoked_at=now))  # fmt: skip


def list_sessions(session: Session, now: datetime, *, all_: bool = False) -> list[dict[str, Any]]:
    stmt = (select(WebSession, Agent.email).join(Agent, Agent.id == WebSession.agent_id)
            .order_by(WebSession.id))  # fmt: skip
    if not all_:
        stmt = stmt.where(WebSession.revoked_at.is_(None), WebSession.expires_at > now)
    return [
        {"id": s.id, "agent": email, "client": s.client, "user_agent": s.user_agent,
         "created_at": s.created_at.isoformat(), "last_seen_at": s.last_seen_at.isoformat(),
         "expires_at": s.expires_at.isoformat(),
         "revoked_at": s.revoked_at.isoformat() if s.revoked_at else None}
        for s, email in session.execute(stmt)
    ]  # fmt: skip


def revoke_sessions(
    session: Session, now: datetime, *, ids: list[int] | None = None, agent_id: int | None = None
) -> int:
    stmt = update(WebSession).where(WebSession.revoked_at.is_(None))
    if ids is not None:
        stmt = stmt.where(WebSession.id.in_(ids))
    if agent_id is not None:
        stmt = stmt.where(WebSession.agent_id == agent_id)
    return int(session.execute(stmt.values(revoked_at=now)).rowcount or 0)


# --- API tokens -------------------------------------------------------------------------------


def create_api_token(
    session: Session, agent_id: int, name: str, now: datetime
) -> tuple[str, ApiToken]:
    """A new token: (the secret, shown once; its row)."""
    prefix = secrets.token_hex(4)
    secret = f"{TOKEN_PREFIX}{prefix}_{new_secret()}"
    row = ApiToken(agent_id=agent_id, name=name[:200], token_hash=digest(secret), prefix=prefix,
                   created_at=now)  # fmt: skip
    session.add(row)
    session.flush()
    return secret, row


def find_api_token(session: Session, secret: str) -> tuple[int, int] | None:
    """(token id, agent id) of a live token."""
    row = session.execute(
        select(ApiToken.id, ApiToken.agent_id, ApiToken.revoked_at)
        .where(ApiToken.token_hash == digest(secret))
    ).first()  # fmt: skip
    if row is None or row.revoked_at is not None:
        return None
    return row.id, row.agent_id


def token_used(session: Session, token_id: int, at: datetime) -> None:
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=at))


def purge(session: Session, now: datetime) -> None:
    """Forget sign-in requests older than a day (the limits count one hour, a link
    lives minutes) and sessions ended more than 30 days ago."""
    session.execute(delete(WebLogin).where(WebLogin.created_at < now - timedelta(days=1)))
    old = now - timedelta(days=30)
    session.execute(delete(WebSession).where(
        (WebSession.expires_at < old) | (WebSession.revoked_at < old)))  # fmt: skip


def list_api_tokens(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(select(ApiToken, Agent.email).join(Agent, Agent.id == ApiToken.agent_id)
                           .order_by(ApiToken.id))  # fmt: skip
    return [
        {"id": t.id, "agent": email, "name": t.name, "prefix": f"{TOKEN_PREFIX}{t.prefix}_",
         "created_at": t.created_at.isoformat(),
         "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
         "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None}
        for t, email in rows
    ]  # fmt: skip


def revoke_api_token(session: Session, token_id: int, now: datetime) -> bool:
    stmt = (update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now))  # fmt: skip
    return bool(session.execute(stmt).rowcount)


# --- requesters' links --------------------------------------------------------------------------


def requester_ticket(
    session: Session, web: WebSettings, signer: Signer, number: int, token: str, now: datetime
) -> Ticket | None:
    """The ticket a requester's link opens, or None (tampered, foreign, expired, revoked)."""
    row = session.execute(
        select(Ticket, Contact.email).join(Contact, Contact.id == Ticket.requester_id)
        .where(Ticket.id == number)
    ).first()  # fmt: skip
    if row is None:
        return None
    ticket, email = row
    issued = check_requester_token(signer, number, email, token)
    if issued is None or issued > now + timedelta(minutes=5):
        return None
    if issued + timedelta(days=web.requester_link_days) <= now:
        return None
    revoked = session.scalar(select(RequesterLinkRevocation.revoked_at)
                             .where(RequesterLinkRevocation.ticket_id == number))  # fmt: skip
    if revoked is not None and issued <= revoked:
        return None
    return ticket


def revoke_requester_links(session: Session, number: int, now: datetime) -> bool:
    if session.get(Ticket, number) is None:
        return False
    row = session.get(RequesterLinkRevocation, number)
    if row is None:
        session.add(RequesterLinkRevocation(ticket_id=number, revoked_at=now))
    else:
        row.revoked_at = now
    return True
