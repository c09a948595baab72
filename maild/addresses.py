"""Mail addresses: normalisation, validation and the addresses we serve; and
the network a client address belongs to, for per-source limits.

Pure functions. Plus-addressed variants of a served address
(``help+anything@domain``) are served too: they carry our signed reply and
bounce tokens.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

# A deliberately strict dot-atom local part and a hostname domain: what we
# accept in configuration and in envelope recipients.
_ADDRESS_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)


def is_valid_address(address: str) -> bool:
    return len(address) <= 254 and bool(_ADDRESS_RE.match(address))


def normalize_address(address: str) -> str:
    """Lower-case, strip angle brackets and whitespace."""
    return address.strip().strip("<>").strip().lower()


def split_plus(address: str) -> tuple[str, str | None]:
    """``help+123.abc@x`` -> (``help@x``, ``123.abc``); no tag -> (address, None)."""
    local, at, domain = normalize_address(address).rpartition("@")
    if not at:
        return normalize_address(address), None
    base, plus, tag = local.partition("+")
    return f"{base}@{domain}", (tag if plus else None)


@dataclass(frozen=True)
class ServedAddresses:
    """The help-desk addresses this instance accepts mail for."""

    addresses: frozenset[str]

    @classmethod
    def of(cls, addresses: Iterable[str]) -> ServedAddresses:
        return cls(frozenset(normalize_address(a) for a in addresses))

    def base_of(self, address: str) -> str | None:
        """The served base address for `address` (plus tag stripped), or None."""
        base, _tag = split_plus(address)
        return base if base in self.addresses else None

    def serves(self, address: str) -> bool:
        return self.base_of(address) is not None


@functools.lru_cache(maxsize=4096)  # per message and per SMTP session; clients repeat
def network_key(ip: str) -> str:
    """The source a client address counts as: an IPv4 address itself, an IPv6
    address its /64 (one host gets a whole /64 and picks any address in it),
    an IPv4-mapped IPv6 address its IPv4 address. Anything else as given."""
    text = ip.strip().strip("[]")
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text.lower()[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)
