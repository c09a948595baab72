"""Who is told what (pure): `Notice`s for the requester and for agent groups.

Requester notices go to the requester in the ticket's language and thread
onto the requester's original message. Group notices are one per address
(each in the group's language), internal articles on the ticket, and for a
security ticket carry no subject and no message body unless the address
belongs to the security group (``tiers.security``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maild.config import Settings
from maild.parse import Address
from maild.states import Visibility
from maild.tiers import (
    MAX_TIER,
    Recipient,
    duty_manager,
    recipients_for_tier,
    security_contacts,
)

__all__ = [
    "ROLE_DUTY_MANAGER", "ROLE_HIERARCHICAL", "ROLE_SECURITY", "ROLE_TIER", "Audience", "Thread",
    "audience", "duty_manager", "duty_manager_audience", "new_ticket_audience",
    "recipients_for_tier", "regulator_audience", "security_contacts", "tier_audience",
    "to_groups", "to_requester",
]  # fmt: skip

if TYPE_CHECKING:
    from maild.decide import Notice

# Why an agent receives a mail; the templates say it in words.
ROLE_TIER = "tier"  # the tier that works the ticket
ROLE_HIERARCHICAL = "hierarchical"  # informed at once: tier 3 / duty manager on a P1
ROLE_SECURITY = "security"  # security contact
ROLE_DUTY_MANAGER = "duty_manager"


@dataclass(frozen=True)
class Thread:
    """Where a requester notice threads: the requester's own message."""

    in_reply_to: str | None = None
    references: tuple[str, ...] = ()


Audience = tuple[tuple[Recipient, str], ...]


def audience(*groups: tuple[tuple[Recipient, ...], str]) -> Audience:
    """One entry per address, first role wins; security-group membership is kept."""
    out: dict[str, tuple[Recipient, str]] = {}
    for recipients, role in groups:
        for r in recipients:
            seen = out.get(r.address.email)
            if seen is None:
                out[r.address.email] = (r, role)
            elif r.security_group and not seen[0].security_group:
                out[r.address.email] = (Recipient(seen[0].address, seen[0].language, True), seen[1])
    return tuple(out.values())


def new_ticket_audience(
    settings: Settings, *, priority: int, tier: int, security: bool
) -> Audience:
    """The tier that works a new ticket; on a P1 also tier 3 and the duty manager
    at once (hierarchical escalation); on a security ticket the security contacts."""
    groups: list[tuple[tuple[Recipient, ...], str]] = [
        (recipients_for_tier(settings, tier), ROLE_TIER)
    ]
    if security:
        groups.append((security_contacts(settings), ROLE_SECURITY))
    if priority == 1:
        groups.append((recipients_for_tier(settings, MAX_TIER), ROLE_HIERARCHICAL))
        groups.append((duty_manager(settings), ROLE_HIERARCHICAL))
    return audience(*groups)


def tier_audience(settings: Settings, tier: int, *, security: bool) -> Audience:
    """The group working a ticket at `tier` (plus the security contacts on a security ticket)."""
    groups = [(recipients_for_tier(settings, tier), ROLE_TIER)]
    if security:
        groups.append((security_contacts(settings), ROLE_SECURITY))
    return audience(*groups)


def regulator_audience(settings: Settings) -> Audience:
    return audience((security_contacts(settings), ROLE_SECURITY),
                    (duty_manager(settings), ROLE_DUTY_MANAGER))  # fmt: skip


def duty_manager_audience(settings: Settings, *, security: bool) -> Audience:
    groups = [(duty_manager(settings), ROLE_DUTY_MANAGER)]
    if security:
        groups.append((security_contacts(settings), ROLE_SECURITY))
    return audience(*groups)


def to_groups(
    template: str,
    kind: str,
    recipients: Iterable[tuple[Recipient, str]],
    *,
    security: bool,
    context: Mapping[str, Any] | None = None,
) -> tuple[Notice, ...]:
    from maild.decide import Notice  # decide uses this module: import at call time

    out = []
    for recipient, role in recipients:
        restricted = security and not recipient.security_group
        out.append(
            Notice(
                template=template,
                to=(recipient.address,),
                kind=kind,
                auto_submitted="auto-generated",
                context={**(context or {}), "role": role, "restricted": restricted},
                language=recipient.language,
                visibility=Visibility.INTERNAL,
            )
        )
    return tuple(out)


def to_requester(
    template: str,
    kind: str,
    requester: Address,
    *,
    thread: Thread | None = None,
    context: Mapping[str, Any] | None = None,
    auto_submitted: str = "auto-generated",
) -> Notice:
    from maild.decide import Notice

    thread = thread or Thread()
    return Notice(
        template=template,
        to=(requester,),
        kind=kind,
        auto_submitted=auto_submitted,
        in_reply_to=thread.in_reply_to,
        references=thread.references[-20:],
        context=dict(context or {}),
    )
