"""Our own trace on every message we take in, and what trace fields let us trust.

Pure functions on header bytes and values.

- `received_line`: the ``Received:`` field maild puts on top of every message
  it accepts (RFC 5321 4.4), naming the client (HELO and IP address) where
  there is one. It is the boundary between what our servers wrote (above it,
  nothing: maild writes no Authentication-Results) and what came from the
  client (everything below it).
- `untrusted_results`: RFC 8601 section 5. An ``Authentication-Results``
  field that claims one of our trusted authserv-ids but lies below the
  ``trusted_hops``-th ``Received`` field (ours counted) was written by someone
  outside, who may write anything: it is renamed to
  ``X-Maild-Untrusted-Authentication-Results`` (kept for the record, believed
  by nobody).
- `client_source`: the client our outermost trusted hop recorded in its
  ``Received`` field (the ``trusted_hops``-th from the top): the source that
  per-source limits count (`maild.addresses.network_key`).
- `parse_authentication_results`: an ``Authentication-Results`` value.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from maild.addresses import network_key
from maild.mail.limits import header_fields, split_header_block

UNTRUSTED_RESULTS = b"X-Maild-Untrusted-Authentication-Results"
_AR_NAME = re.compile(rb"^authentication-results[ \t]*:", re.IGNORECASE)
_RECEIVED_NAME = re.compile(rb"^received[ \t]*:", re.IGNORECASE)
# The "from" clause of a Received value: up to " by " (comments included: the
# address is in one).
_FROM_CLAUSE = re.compile(r"^\s*from\s+(.*?)(?:\s+by\s+|;|$)", re.IGNORECASE | re.DOTALL)
_HELO_UNSAFE = re.compile(r"[^A-Za-z0-9.:_\[\]-]")
_COMMENT = re.compile(r"\([^()]*\)")
# An address literal in a Received "from" clause: [192.0.2.1], [IPv6:2001:db8::1],
# or the bare (192.0.2.1) some servers write.
_IP_LITERAL = re.compile(
    r"\[(?:IPv6:)?([0-9A-Fa-f:.]{2,45})\]|\((\d{1,3}(?:\.\d{1,3}){3})\)", re.IGNORECASE
)


def received_line(
    *,
    by: str,
    protocol: str,
    now: datetime,
    helo: str | None = None,
    ip: str | None = None,
    note: str = "",
) -> bytes:
    """``Received: from HELO ([IP]) by HOST (maild) with PROTOCOL; DATE`` (CRLF)."""
    parts = []
    if helo is not None or ip is not None:
        name = _HELO_UNSAFE.sub("", helo or "")[:100] or "unknown"
        literal = ""
        if ip:
            literal = f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"
        parts.append(f"from {name} ({literal})" if literal else f"from {name}")
    host = _HELO_UNSAFE.sub("", by)[:200] or "localhost"
    parts.append(f"by {host} (maild{'; ' + _HELO_UNSAFE.sub('', note)[:60] if note else ''})")
    parts.append(f"with {protocol}")
    return f"Received: {' '.join(parts)};\r\n\t{format_datetime(now)}\r\n".encode("ascii")


def untrusted_results(raw: bytes, trusted_ids: Iterable[str], trusted_hops: int) -> bytes:
    """`raw` with every ``Authentication-Results`` that claims a trusted
    authserv-id from below the `trusted_hops`-th ``Received`` field renamed.

    `raw` is the message as the client sent it: maild's own ``Received`` line,
    which goes on top, counts as the first hop.
    """
    trusted = {t.lower() for t in trusted_ids}
    if not trusted or b"uthentication-" not in raw[:262144].lower():
        return raw
    head, sep, body = split_header_block(raw)
    fields = header_fields(head)
    hops = 1  # ours
    changed = False
    for i, field in enumerate(fields):
        if _RECEIVED_NAME.match(field):
            hops += 1
            continue
        match = _AR_NAME.match(field)
        if match is None or hops < trusted_hops:  # above our outermost hop's Received
            continue
        value = field[match.end() :].decode("utf-8", "replace")
        if authserv_id(value) in trusted:
            fields[i] = UNTRUSTED_RESULTS + b":" + field[match.end() :]
            changed = True
    return b"".join(fields) + sep + body if changed else raw


def received_fields(fields: Iterable[tuple[str, str]]) -> list[str]:
    """The ``Received`` values among (lower-case name, value) pairs, top first."""
    return [value for name, value in fields if name == "received"]


def client_source(received: list[str], trusted_hops: int) -> str | None:
    """The client the `trusted_hops`-th ``Received`` field (from the top) names,
    as a per-source key (`network_key`); None when that field names none.

    A client on this machine (a loopback address: the MTA that hands mail to
    maild over LMTP or a pipe) is one of our own hops: the client the next
    field down names (that MTA wrote it) is taken instead, where there is one.
    """
    local = None
    for index in range(trusted_hops - 1, len(received)):
        value = _FROM_CLAUSE.match(received[index])
        found = [a or b for a, b in _IP_LITERAL.findall(value.group(1))] if value else []
        if not found:
            break
        if not _loopback(found[-1]):
            return network_key(found[-1])
        local = local or network_key(found[-1])
    return local


@functools.lru_cache(maxsize=4096)  # per message that queues mail; clients repeat
def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AuthResult:
    authserv_id: str
    method: str
    result: str
    props: dict[str, str]


def authserv_id(value: str) -> str:
    """The authserv-id an ``Authentication-Results`` value starts with (lower case)."""
    text = value
    for _ in range(5):  # nested comments, a few levels deep
        text = _COMMENT.sub(" ", text)
    first = text.split(";", 1)[0].split()
    return first[0].lower() if first else ""


def parse_authentication_results(value: str) -> tuple[str, list[AuthResult]]:
    """(authserv-id, results) of one header value; comments are dropped."""
    text = value
    for _ in range(5):
        text = _COMMENT.sub(" ", text)
    parts = [p.strip() for p in text.split(";")]
    authserv = parts[0].split()[0].lower() if parts and parts[0].split() else ""
    results = []
    for part in parts[1:]:
        tokens = part.split()
        if not tokens or "=" not in tokens[0]:
            continue
        method, _eq, result = tokens[0].partition("=")
        props = {}
        for token in tokens[1:]:
            key, eq, val = token.partition("=")
            if eq:
                props[key.lower()] = val.strip('"').lower()
        results.append(AuthResult(authserv, method.lower().split("/")[0], result.lower(), props))
    return authserv, results
