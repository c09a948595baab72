"""iCalendar invitations (RFC 5545 / iMIP RFC 6047) for ``#meeting`` (pure).

The only module that imports icalendar. The invitation comes from the help
desk (ORGANIZER is the ticket's help-desk address, never the agent's) and
asks the requester to accept; the UID names the ticket, so a client files
the event with the ticket's mail.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from icalendar import Calendar, Event, vCalAddress, vText

from maild.mail.compose import clean_header_text
from maild.mail.parse import Address


def invitation(
    *,
    ticket_id: int,
    subject: str,
    desk: Address,
    requester: Address,
    start: datetime,
    end: datetime,
    link: str,
    now: datetime,
    domain: str,
    agent_name: str = "",
) -> bytes:
    """The text/calendar body (METHOD:REQUEST) of one invitation."""
    cal = Calendar()
    cal.add("prodid", "-//maild//help desk//EN")
    cal.add("version", "2.0")
    cal.add("method", "REQUEST")
    event = Event()
    event.add("uid", f"ticket-{ticket_id}-{uuid.uuid4().hex}@{domain}")
    event.add("dtstamp", now)
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("sequence", 0)
    event.add("status", "CONFIRMED")
    event.add("summary", clean_header_text(f"[#{ticket_id}] {subject}", 200))
    with_whom = f" with {clean_header_text(agent_name, 100)}" if agent_name else ""
    description = f"{desk.name}: a call{with_whom} about ticket #{ticket_id}."
    if link:
        description += f"\nJoin: {link}"
        event.add("location", link)
        event.add("url", link)
    event.add("description", description)
    organizer = vCalAddress(f"mailto:{desk.email}")
    organizer.params["cn"] = vText(clean_header_text(desk.name, 100))
    event["organizer"] = organizer
    attendee = vCalAddress(f"mailto:{requester.email}")
    if requester.name:
        attendee.params["cn"] = vText(clean_header_text(requester.name, 100))
    attendee.params["role"] = "REQ-PARTICIPANT"
    attendee.params["partstat"] = "NEEDS-ACTION"
    attendee.params["rsvp"] = "TRUE"
    event.add("attendee", attendee)
    cal.add_component(event)
    return bytes(cal.to_ical())
