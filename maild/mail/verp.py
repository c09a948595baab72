"""VERP return paths: every mail we send names itself, and its recipient, in
its envelope sender.

``help+bounces.<outbox-id>.<n>.<token>@example.com`` is a plus-variant of the
served address the mail went out from, so the bounce comes back to us; `n`
is the recipient's place in the outbox row (each recipient gets a
transaction of their own), and the token (an HMAC over both, `maild.tokens`)
makes sure a forged bounce cannot mark anyone's address undeliverable: a
bounce changes the state of that one recipient only, and a co-recipient who
saw their own return path cannot speak for anyone else.

The older ``help+bounces.<outbox-id>.<token>@`` (one for the whole mail) is
still understood, for the mail a single recipient got. Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from maild.addresses import normalize_address, split_plus
from maild.mail.tokens import Signer

TAG = "bounces"
_PURPOSE = "bounce"


@dataclass(frozen=True)
class Verp:
    """What a genuine VERP address names."""

    outbox_id: int
    recipient: int | None  # its place in the row's recipients; None: the older form


def verp_address(
    signer: Signer, base_address: str, outbox_id: int, recipient: int | None = None
) -> str:
    local, _at, domain = normalize_address(base_address).rpartition("@")
    if recipient is None:
        token = signer.sign(_PURPOSE, str(outbox_id))
        return f"{local}+{TAG}.{outbox_id}.{token}@{domain}"
    token = signer.sign(_PURPOSE, str(outbox_id), str(recipient))
    return f"{local}+{TAG}.{outbox_id}.{recipient}.{token}@{domain}"


def is_verp_address(address: str) -> bool:
    """Looks like one of our bounce addresses (the token is not checked)."""
    _base, tag = split_plus(address)
    return tag is not None and tag.startswith(f"{TAG}.")


def parse_verp(signer: Signer, address: str) -> Verp | None:
    """What a genuine VERP address names, else None."""
    _base, tag = split_plus(address)
    if tag is None:
        return None
    parts = tag.split(".")
    if parts[0] != TAG or not all(p.isdigit() and len(p) <= 18 for p in parts[1:-1]):
        return None
    if len(parts) == 3 and signer.verify(parts[2], _PURPOSE, parts[1]):
        return Verp(int(parts[1]), None)
    if len(parts) == 4 and signer.verify(parts[3], _PURPOSE, parts[1], parts[2]):
        return Verp(int(parts[1]), int(parts[2]))
    return None


def outbox_id_of(signer: Signer, address: str) -> int | None:
    """The outbox id a genuine VERP address names, else None."""
    found = parse_verp(signer, address)
    return found.outbox_id if found else None


def first_verp(signer: Signer, addresses: Iterable[str]) -> Verp | None:
    for address in addresses:
        if is_verp_address(address) and (found := parse_verp(signer, address)) is not None:
            return found
    return None


def first_outbox_id(signer: Signer, addresses: Iterable[str]) -> int | None:
    found = first_verp(signer, addresses)
    return found.outbox_id if found else None
