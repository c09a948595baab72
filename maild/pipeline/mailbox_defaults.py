"""Per-mailbox ticket defaults, applied after triage (pure).

A mailbox in ``[[imap.mailboxes]]`` may name a `category` and a `tier` for
the tickets that arrive through it. They are defaults, not overrides: a
category applies only where triage found nothing more specific than its
catch-all (``triage.default_category``), the tier only raises the starting
tier, and a security ticket (triage's P1, tier 3) is never touched.
"""

from __future__ import annotations

from dataclasses import replace

from maild.config.settings import Settings
from maild.pipeline.triage import Triage


def apply_mailbox_defaults(triage: Triage, mailbox: str | None, settings: Settings) -> Triage:
    box = settings.imap.mailbox(mailbox) if mailbox else None
    if box is None or triage.security:
        return triage
    category = triage.category
    if box.category and category == settings.triage.default_category:
        category = box.category
    return replace(triage, category=category, tier=max(triage.tier, box.tier))
