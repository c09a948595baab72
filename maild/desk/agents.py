"""The agent directory in the database: sync it with ``[[agents]]``, load it.

The configuration is the source of truth; the ``agent`` table mirrors it
(`sync`: at start, on SIGHUP and before a CLI action) so that tickets can
refer to their assignee and reply addresses can name an agent by a short
number. An agent removed from the configuration is deactivated, never
deleted: old tickets still name them, and their reply addresses stop working.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from maild.config.settings import AgentSettings, Settings
from maild.desk.apply import Applier
from maild.pipeline.directory import AgentEntry, Directory
from maild.store.db import insert_ignore
from maild.store.models import Agent

log = logging.getLogger(__name__)


def load(session: Session, default_language: str = "en") -> Directory:
    rows = session.execute(
        select(Agent.id, Agent.email, Agent.name, Agent.tier, Agent.groups, Agent.language,
               Agent.active).order_by(Agent.id)
    ).all()  # fmt: skip
    return Directory(tuple(
        AgentEntry(id=row.id, email=row.email, name=row.name or "", tier=row.tier,
                   groups=tuple(row.groups or ()), language=row.language or default_language,
                   active=bool(row.active))
        for row in rows
    ))  # fmt: skip


def sync(
    session: Session, agents: Sequence[AgentSettings], default_language: str = "en"
) -> Directory:
    """Make the ``agent`` table say what the configuration says; return the directory."""
    conn = session.connection()
    wanted = {a.email: a for a in agents}
    insert_ignore(session, Agent, [
        {"email": a.email, "name": a.name, "tier": a.tier, "groups": list(a.groups),
         "language": a.language or None, "active": True}
        for a in agents
    ])  # fmt: skip
    current = {row.email: row for row in conn.execute(
        select(Agent.id, Agent.email, Agent.name, Agent.tier, Agent.groups, Agent.language,
               Agent.active))}  # fmt: skip
    changed = 0
    for email, row in current.items():
        a = wanted.get(email)
        values: dict[str, Any]
        if a is None:
            values = {"active": False}
        else:
            values = {"name": a.name, "tier": a.tier, "groups": list(a.groups),
                      "language": a.language or None, "active": True}  # fmt: skip
        if any(_differs(getattr(row, k), v) for k, v in values.items()):
            conn.execute(update(Agent).where(Agent.id == row.id).values(**values))
            changed += 1
    if changed:
        log.info("agent directory: %d agent(s) updated, %d active", changed, len(wanted))
    return load(session, default_language)


def _differs(stored: Any, wanted: Any) -> bool:
    if isinstance(wanted, list):
        return list(stored or []) != wanted
    return bool(stored != wanted)


def install(
    sessions: sessionmaker[Session], applier: Applier, agents: Iterable[AgentSettings] | None = None
) -> Directory:
    """Sync the directory (from `agents`, default the applier's settings) and hand it
    to the applier, which every stage reads it from."""
    settings: Settings = applier.settings
    chosen = tuple(settings.agents if agents is None else agents)
    with sessions.begin() as session:
        directory = sync(session, chosen, settings.tiers.language)
    applier.directory = directory
    return directory


def rows(directory: Directory) -> list[dict[str, Any]]:
    """The directory as ``maild agents list --json`` prints it."""
    return [
        {"id": a.id, "email": a.email, "name": a.name, "tier": a.tier, "groups": list(a.groups),
         "language": a.language, "active": a.active}
        for a in directory.agents
    ]  # fmt: skip
