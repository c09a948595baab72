"""Support tiers: who hears about a ticket (pure).

Every notification to a group goes through `recipients_for_tier` (and its
siblings for the duty manager and the security contacts), so a later agent
directory can add individual agents in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from maild.config import Settings
from maild.parse import Address

MAX_TIER = 3


@dataclass(frozen=True)
class Recipient:
    address: Address
    language: str
    security_group: bool  # may see the content of security tickets


def _group(settings: Settings, emails: tuple[str, ...], label: str) -> tuple[Recipient, ...]:
    security = {e.lower() for e in settings.tiers.security}
    return tuple(
        Recipient(
            Address(name=label, email=e.lower()), settings.tiers.language, e.lower() in security
        )  # fmt: skip
        for e in emails
    )


def recipients_for_tier(settings: Settings, tier: int) -> tuple[Recipient, ...]:
    if tier not in range(1, MAX_TIER + 1):
        raise ValueError(f"tier must be 1..{MAX_TIER}, got {tier!r}")
    emails = getattr(settings.tiers, f"tier{tier}")
    return _group(settings, emails, f"{settings.helpdesk.name} tier {tier}")


def duty_manager(settings: Settings) -> tuple[Recipient, ...]:
    return _group(settings, settings.tiers.duty_manager, f"{settings.helpdesk.name} duty manager")


def security_contacts(settings: Settings) -> tuple[Recipient, ...]:
    return _group(settings, settings.tiers.security, f"{settings.helpdesk.name} security")


def merge(*groups: tuple[Recipient, ...]) -> tuple[Recipient, ...]:
    """One entry per address, in order; an address in the security group keeps that right."""
    out: dict[str, Recipient] = {}
    for group in groups:
        for r in group:
            seen = out.get(r.address.email)
            if seen is None or (r.security_group and not seen.security_group):
                out[r.address.email] = r if seen is None else Recipient(
                    seen.address, seen.language, True)  # fmt: skip
    return tuple(out.values())
