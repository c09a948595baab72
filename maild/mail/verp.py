"""VERP return paths: every mail we send names itself in its envelope sender.

``help+bounces.<outbox-id>.<token>@example.com`` is a plus-variant of the
served address the mail went out from, so the bounce comes back to us; the
token (an HMAC over the outbox id, `maild.mail.tokens`) makes sure a forged bounce
cannot mark anyone's address undeliverable. Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable

from maild.addresses import normalize_address, split_plus
from maild.mail.tokens import Signer

TAG = "bounces"
_PURPOSE = "bounce"


def verp_address(signer: Signer, base_address: str, outbox_id: int) -> str:
    local, _at, domain = normalize_address(base_address).rpartition("@")
    token = signer.sign(_PURPOSE, str(outbox_id))
    return f"{local}+{TAG}.{outbox_id}.{token}@{domain}"


def is_verp_address(address: str) -> bool:
    """Looks like one of our bounce addresses (the token is not checked)."""
    _base, tag = split_plus(address)
    return tag is not None and tag.startswith(f"{TAG}.")


def outbox_id_of(signer: Signer, address: str) -> int | None:
    """The outbox id a genuine VERP address names, else None."""
    _base, tag = split_plus(address)
    if tag is None:
        return None
    parts = tag.split(".")
    if len(parts) != 3 or parts[0] != TAG or not parts[1].isdigit() or len(parts[1]) > 18:
        return None
    return int(parts[1]) if signer.verify(parts[2], _PURPOSE, parts[1]) else None


def first_outbox_id(signer: Signer, addresses: Iterable[str]) -> int | None:
    for address in addresses:
        if is_verp_address(address) and (found := outbox_id_of(signer, address)) is not None:
            return found
    return None
