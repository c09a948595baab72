"""Requesters' personal ticket links (pure): ``BASE/r/<ticket>/<issued>.<token>``.

Every acknowledgement and status mail to a requester carries one: the page
it opens shows that ticket's public history, with a reply form, and needs no
account. The token is an HMAC (`maild.mail.tokens`) over the ticket number,
the requester's address and the moment it was issued, so it opens only that
ticket, only while that address is its requester, and the web layer can
refuse links that are too old (``web.requester_link_days``) or that were
issued before the ticket's links were revoked.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from maild.mail.tokens import Signer

_PURPOSE = "requester-page"
_TOKEN_RE = re.compile(r"^([0-9a-z]{1,10})\.([a-z2-7]{26})$")


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def requester_token(signer: Signer, ticket: int, email: str, issued: datetime) -> str:
    stamp = _b36(int(issued.timestamp()))
    return f"{stamp}.{signer.sign(_PURPOSE, str(ticket), email.lower(), stamp)}"


def requester_link(signer: Signer, base_url: str, ticket: int, email: str, now: datetime) -> str:
    return f"{base_url.rstrip('/')}/r/{ticket}/{requester_token(signer, ticket, email, now)}"


def check_requester_token(signer: Signer, ticket: int, email: str, token: str) -> datetime | None:
    """When the link was issued, if `token` is ours for this ticket and address; else None."""
    m = _TOKEN_RE.match(token)
    if m is None:
        return None
    stamp, mac = m.groups()
    if not signer.verify(mac, _PURPOSE, str(ticket), email.lower(), stamp):
        return None
    return datetime.fromtimestamp(int(stamp, 36), UTC)


def page_secret(signer: Signer, ticket: int, token: str) -> str:
    """The requester page's form token (CSRF): derived from the link, unknown to others."""
    return signer.sign("requester-form", str(ticket), token)
