"""Support tiers: who hears about a ticket (pure).

Every notification to agents goes through `recipients_for_tier` (and its
siblings for the duty manager and the security contacts): the individual
agents of the directory (`maild.pipeline.directory`), each of whom gets a personal
reply address, and the group addresses configured in ``[tiers]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from maild.config.settings import Settings, TiersSettings
from maild.mail.parse import Address
from maild.pipeline.directory import GROUP_DUTY_MANAGER, GROUP_SECURITY, AgentEntry, Directory

MAX_TIER = 3


@dataclass(frozen=True)
class Recipient:
    address: Address
    language: str
    security_group: bool  # may see the content of security tickets
    agent_id: int | None = None  # an agent of the directory: gets a personal reply address


def _group(settings: Settings, emails: tuple[str, ...], label: str) -> tuple[Recipient, ...]:
    return _group_of(settings.tiers, emails, label)


@lru_cache(maxsize=64)
def _group_of(tiers: TiersSettings, emails: tuple[str, ...], label: str) -> tuple[Recipient, ...]:
    """Built once per configuration: every new ticket asks (bench/run.py)."""
    security = {e.lower() for e in tiers.security}
    return tuple(
        Recipient(Address(name=label, email=e.lower()), tiers.language, e.lower() in security)
        for e in emails
    )


def agent_recipient(settings: Settings, agent: AgentEntry) -> Recipient:
    security = agent.email in {e.lower() for e in settings.tiers.security}
    return Recipient(agent.address, agent.language, security or GROUP_SECURITY in agent.groups,
                     agent.id)  # fmt: skip


def _agents(settings: Settings, agents: tuple[AgentEntry, ...]) -> tuple[Recipient, ...]:
    return tuple(agent_recipient(settings, a) for a in agents)


def recipients_for_tier(
    settings: Settings, tier: int, directory: Directory | None = None
) -> tuple[Recipient, ...]:
    if tier not in range(1, MAX_TIER + 1):
        raise ValueError(f"tier must be 1..{MAX_TIER}, got {tier!r}")
    emails = getattr(settings.tiers, f"tier{tier}")
    agents = _agents(settings, directory.for_tier(tier)) if directory else ()
    return merge(agents, _group(settings, emails, f"{settings.helpdesk.name} tier {tier}"))


def duty_manager(settings: Settings, directory: Directory | None = None) -> tuple[Recipient, ...]:
    agents = _agents(settings, directory.in_group(GROUP_DUTY_MANAGER)) if directory else ()
    return merge(agents, _group(settings, settings.tiers.duty_manager,
                                f"{settings.helpdesk.name} duty manager"))  # fmt: skip


def security_contacts(
    settings: Settings, directory: Directory | None = None
) -> tuple[Recipient, ...]:
    agents = _agents(settings, directory.in_group(GROUP_SECURITY)) if directory else ()
    return merge(agents, _group(settings, settings.tiers.security,
                                f"{settings.helpdesk.name} security"))  # fmt: skip


def merge(*groups: tuple[Recipient, ...]) -> tuple[Recipient, ...]:
    """One entry per address, in order; an address in the security group keeps that right."""
    out: dict[str, Recipient] = {}
    for group in groups:
        for r in group:
            seen = out.get(r.address.email)
            if seen is None:
                out[r.address.email] = r
            elif r.security_group and not seen.security_group:
                out[r.address.email] = replace(seen, security_group=True)
    return tuple(out.values())
