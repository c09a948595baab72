"""Who is told what (pure): `Notice`s for the requester and for agent groups.

Requester notices go to the requester in the ticket's language and thread
onto the requester's original message; public updates also go to the
ticket's watchers (Cc). Group notices are one per address (each in the
recipient's language), internal articles on the ticket, and for a security
ticket carry no subject and no message body unless the address belongs to
the security group (``tiers.security``, or an agent in group "security").
A notice to an agent of the directory carries that agent's personal reply
address (`maild.mail.replyaddr`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from maild.config.settings import Settings
from maild.mail.parse import Address, ParsedAttachment
from maild.pipeline.decision import Notice
from maild.pipeline.directory import Directory
from maild.pipeline.tiers import (
    MAX_TIER,
    Recipient,
    agent_recipient,
    duty_manager,
    recipients_for_tier,
    security_contacts,
)
from maild.store.states import Visibility

__all__ = [
    "ROLE_ASSIGNEE", "ROLE_DUTY_MANAGER", "ROLE_HIERARCHICAL", "ROLE_SECURITY", "ROLE_TIER",
    "Audience", "Thread", "attachments_for_agents", "audience", "duty_manager",
    "duty_manager_audience", "new_ticket_audience", "recipients_for_tier", "regulator_audience", "security_contacts",
    "tier_audience", "to_groups", "to_requester", "working_audience",
]  # fmt: skip


# Why an agent receives a mail; the templates say it in words.
ROLE_TIER = "tier"  # the tier that works the ticket
ROLE_HIERARCHICAL = "hierarchical"  # informed at once: tier 3 / duty manager on a P1
ROLE_SECURITY = "security"  # security contact
ROLE_DUTY_MANAGER = "duty_manager"
ROLE_ASSIGNEE = "assignee"  # the agent the ticket is assigned to


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
                out[r.address.email] = (replace(seen[0], security_group=True), seen[1])
    return tuple(out.values())


def new_ticket_audience(
    settings: Settings, *, priority: int, tier: int, security: bool,
    directory: Directory | None = None,
) -> Audience:  # fmt: skip
    """The tier that works a new ticket; on a P1 also tier 3 and the duty manager
    at once (hierarchical escalation); on a security ticket the security contacts."""
    groups: list[tuple[tuple[Recipient, ...], str]] = [
        (recipients_for_tier(settings, tier, directory), ROLE_TIER)
    ]
    if security:
        groups.append((security_contacts(settings, directory), ROLE_SECURITY))
    if priority == 1:
        groups.append((recipients_for_tier(settings, MAX_TIER, directory), ROLE_HIERARCHICAL))
        groups.append((duty_manager(settings, directory), ROLE_HIERARCHICAL))
    return audience(*groups)


def tier_audience(
    settings: Settings, tier: int, *, security: bool, directory: Directory | None = None
) -> Audience:
    """The group working a ticket at `tier` (plus the security contacts on a security ticket)."""
    groups = [(recipients_for_tier(settings, tier, directory), ROLE_TIER)]
    if security:
        groups.append((security_contacts(settings, directory), ROLE_SECURITY))
    return audience(*groups)


def working_audience(
    settings: Settings, directory: Directory | None, *, tier: int, assignee_id: int | None,
    security: bool,
) -> Audience:  # fmt: skip
    """The assignee if there is one (and active), else the tier working the ticket."""
    agent = directory.by_id(assignee_id) if directory else None
    if agent is None:
        return tier_audience(settings, tier, security=security, directory=directory)
    groups = [((agent_recipient(settings, agent),), ROLE_ASSIGNEE)]
    if security:
        groups.append((security_contacts(settings, directory), ROLE_SECURITY))
    return audience(*groups)


def regulator_audience(settings: Settings, directory: Directory | None = None) -> Audience:
    return audience((security_contacts(settings, directory), ROLE_SECURITY),
                    (duty_manager(settings, directory), ROLE_DUTY_MANAGER))  # fmt: skip


def duty_manager_audience(
    settings: Settings, *, security: bool, directory: Directory | None = None
) -> Audience:
    groups = [(duty_manager(settings, directory), ROLE_DUTY_MANAGER)]
    if security:
        groups.append((security_contacts(settings, directory), ROLE_SECURITY))
    return audience(*groups)


def to_groups(
    template: str,
    kind: str,
    recipients: Iterable[tuple[Recipient, str]],
    *,
    security: bool,
    context: Mapping[str, Any] | None = None,
    attachments: tuple[ParsedAttachment, ...] = (),
) -> tuple[Notice, ...]:
    """One notice per agent address; `attachments` ride along where the content may."""
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
                agent_id=recipient.agent_id,
                attachments=() if restricted else attachments,
            )
        )
    return tuple(out)


def attachments_for_agents(
    attachments: tuple[ParsedAttachment, ...], limit: int
) -> tuple[tuple[ParsedAttachment, ...], list[dict[str, Any]]]:
    """(the files carried, the list every notice shows) for a requester's attachments.

    In order, as many as fit in `limit` bytes in all; each listed with its
    name, size and whether it is attached (the template names the command
    that gets the others).
    """
    carried: list[ParsedAttachment] = []
    listing: list[dict[str, Any]] = []
    total = 0
    for att in attachments:
        fits = total + att.size <= limit
        if fits:
            carried.append(att)
            total += att.size
        listing.append({"name": att.filename, "size": att.size,
                        "content_type": att.content_type, "attached": fits})  # fmt: skip
    return tuple(carried), listing


def to_requester(
    template: str,
    kind: str,
    requester: Address,
    *,
    thread: Thread | None = None,
    context: Mapping[str, Any] | None = None,
    auto_submitted: str = "auto-generated",
    cc: tuple[Address, ...] = (),
    attachments: tuple[ParsedAttachment, ...] = (),
) -> Notice:
    """A mail to the requester; `cc`: the watchers, for public updates."""
    thread = thread or Thread()
    return Notice(
        template=template,
        to=(requester,),
        cc=tuple(a for a in cc if a.email != requester.email),
        kind=kind,
        auto_submitted=auto_submitted,
        in_reply_to=thread.in_reply_to,
        references=thread.references[-20:],
        context=dict(context or {}),
        attachments=attachments,
    )
