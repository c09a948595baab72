"""Identification: who is writing, relative to the ticket?

Pure. A requester's reply may reopen a finished ticket; a stranger who knows
a Message-ID of the thread (a colleague in Cc, say) is appended as a
participant but does not change the ticket's state.
"""

from __future__ import annotations

from enum import StrEnum

from maild.mail.parse import ParsedMessage
from maild.pipeline.correlate import TicketFacts


class Role(StrEnum):
    REQUESTER = "requester"
    PARTICIPANT = "participant"  # watcher or agent already on the ticket
    OTHER = "other"


def identify(msg: ParsedMessage, ticket: TicketFacts | None) -> Role:
    sender = msg.sender.email if msg.sender else ""
    if ticket is None:
        return Role.REQUESTER
    if sender == ticket.requester:
        return Role.REQUESTER
    if sender in ticket.participants:
        return Role.PARTICIPANT
    return Role.OTHER
