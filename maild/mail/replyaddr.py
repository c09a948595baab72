"""Personal reply addresses: one per (ticket, agent) and one per (ticket,
requester or watcher), signed, optionally expiring.

``help+<ticket>.<agent>.<token>@example.com`` or, expiring,
``help+<ticket>.<agent>.<yyyymmdd>.<token>@example.com``: a plus-variant of
the ticket's help-desk address, so it arrives like any mail to us. The token
is an HMAC-SHA256 (`maild.mail.tokens`, 128 bits, compared in constant time) over
the ticket number, the agent's number and the expiry date, so none of them
can be changed, and the expiry cannot be dropped, without the secret.

A requester's (or watcher's) address, on every mail maild sends them, is
``help+<ticket>.r[<yyyymmdd>].<token>@example.com``: its token signs the
ticket, the expiry and the person's own mail address, which the address does
not show. It proves a reply is theirs only when the reply's From is that
address: forwarded to someone else, it verifies nobody.

Pure functions. A tag that does not have this shape (a VERP bounce address,
``help+anything``) is not a reply address at all; one that has the shape but
a wrong token is reported as such, so the agent can be told.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from maild.addresses import normalize_address, split_plus
from maild.mail.tokens import Signer

_PURPOSE = "reply"
_TAG_RE = re.compile(r"^(\d{1,12})\.(\d{1,9})(?:\.(\d{8}))?\.([a-z2-7]{26})$")


@dataclass(frozen=True)
class ReplyToken:
    """A reply address found on a message, and what its signature says."""

    address: str
    ticket: int
    agent: int
    expires: date | None
    valid: bool  # the signature matches (so ticket, agent and expiry are ours)

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now.date() > self.expires


def reply_address(
    signer: Signer, base_address: str, ticket: int, agent: int, expires: date | None = None
) -> str:
    local, _at, domain = normalize_address(base_address).rpartition("@")
    day = expires.strftime("%Y%m%d") if expires else ""
    token = signer.sign(_PURPOSE, str(ticket), str(agent), day)
    middle = f"{ticket}.{agent}.{day}" if day else f"{ticket}.{agent}"
    return f"{local}+{middle}.{token}@{domain}"


def expiry(now: datetime, days: float) -> date | None:
    """The last valid day of an address issued at `now` (None: never expires)."""
    return (now + timedelta(days=days)).date() if days > 0 else None


def parse_reply_address(signer: Signer, address: str) -> ReplyToken | None:
    """The reply token in `address`, checked; None when it is not a reply address."""
    _base, tag = split_plus(address)
    if not tag:
        return None
    match = _TAG_RE.match(tag)
    if match is None:
        return None
    ticket, agent, day, token = match.groups()
    expires = None
    if day:
        try:
            expires = datetime.strptime(day, "%Y%m%d").date()
        except ValueError:
            return None
    valid = signer.verify(token, _PURPOSE, ticket, agent, day or "")
    return ReplyToken(normalize_address(address), int(ticket), int(agent), expires, valid)


def find_reply_token(signer: Signer, addresses: Iterable[str]) -> ReplyToken | None:
    """The first valid reply token among `addresses`, else the first invalid one."""
    invalid = None
    for address in addresses:
        found = parse_reply_address(signer, address)
        if found is None:
            continue
        if found.valid:
            return found
        invalid = invalid or found
    return invalid


_REQUESTER_PURPOSE = "requester"
_REQUESTER_TAG_RE = re.compile(r"^(\d{1,12})\.r(\d{8})?\.([a-z2-7]{26})$")


@dataclass(frozen=True)
class RequesterToken:
    """A requester's reply address a message was delivered to, checked against its From."""

    address: str
    ticket: int
    expires: date | None
    valid: bool  # issued by us for this ticket to the message's From address

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now.date() > self.expires


def requester_address(
    signer: Signer, base_address: str, ticket: int, email: str, expires: date | None = None
) -> str:
    """The reply address of `email` (a requester or watcher) on `ticket`."""
    local, _at, domain = normalize_address(base_address).rpartition("@")
    day = expires.strftime("%Y%m%d") if expires else ""
    token = signer.sign(_REQUESTER_PURPOSE, str(ticket), normalize_address(email), day)
    return f"{local}+{ticket}.r{day}.{token}@{domain}"


def parse_requester_address(signer: Signer, address: str, email: str) -> RequesterToken | None:
    """The requester token in `address`, valid only for mail from `email`."""
    _base, tag = split_plus(address)
    if not tag:
        return None
    match = _REQUESTER_TAG_RE.match(tag)
    if match is None:
        return None
    ticket, day, token = match.groups()
    expires = None
    if day:
        try:
            expires = datetime.strptime(day, "%Y%m%d").date()
        except ValueError:
            return None
    valid = bool(email) and signer.verify(
        token, _REQUESTER_PURPOSE, ticket, normalize_address(email), day or ""
    )
    return RequesterToken(normalize_address(address), int(ticket), expires, valid)


def find_requester_token(
    signer: Signer, addresses: Iterable[str], email: str
) -> RequesterToken | None:
    """The first requester token among `addresses` that is valid for `email`,
    else the first one found (invalid for this sender)."""
    invalid = None
    for address in addresses:
        found = parse_requester_address(signer, address, email)
        if found is None:
            continue
        if found.valid:
            return found
        invalid = invalid or found
    return invalid
