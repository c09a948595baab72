"""Triage (DESIGN §6): type, category, impact, urgency, priority, tier.

The first slice classifies every new ticket with the documented defaults
(an incident in category "other", one user affected, normal urgency: P3,
tier 1). The rule-driven classifier replaces `classify` without changing its
signature.
"""

from __future__ import annotations

from dataclasses import dataclass

from maild.config import Settings
from maild.parse import ParsedMessage
from maild.states import TicketType

# impact (1 many users .. 3 one user) x urgency (1 high .. 3 low) -> priority P1..P4
PRIORITY_MATRIX: dict[tuple[int, int], int] = {
    (1, 1): 1, (1, 2): 2, (1, 3): 3,
    (2, 1): 2, (2, 2): 3, (2, 3): 3,
    (3, 1): 3, (3, 2): 3, (3, 3): 4,
}  # fmt: skip


@dataclass(frozen=True)
class Triage:
    type: TicketType
    category: str
    impact: int
    urgency: int
    priority: int
    tier: int
    security: bool = False


def classify(msg: ParsedMessage, recipient: str | None, settings: Settings) -> Triage:
    impact, urgency = 3, 2
    return Triage(
        type=TicketType.INCIDENT,
        category="other",
        impact=impact,
        urgency=urgency,
        priority=PRIORITY_MATRIX[(impact, urgency)],
        tier=1,
    )
