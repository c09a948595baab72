"""Bounce analysis: which recipients failed, for good or for now.

The only module that imports flufl.bounce (GNU Mailman's bounce detectors:
RFC 3464 DSNs plus the formats of some twenty MTAs found in the wild). It
runs inside the bounded parse on messages that look like delivery reports and
answers with a frozen `BounceReport`, which says `is_hard()` like Salmon's
bounce objects do.

The Message-IDs of the bounced mail are read from the returned message or
headers the report carries, so a bounce finds its ticket even without a VERP
return path.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.message import Message

from flufl.bounce import all_failures

log = logging.getLogger(__name__)

MAX_IDS = 20
_ORIGINAL_ID_RE = re.compile(rb"(?im)^[ \t>]*message-id[ \t]*:[ \t]*(<[^<>\s]{1,250}>)")
_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class BounceReport:
    permanent: tuple[str, ...]  # recipients that failed for good (lower-case)
    temporary: tuple[str, ...]  # recipients still being retried, or over quota
    original_message_ids: tuple[str, ...]  # Message-IDs of the mail that bounced
    status: str | None = None  # the first DSN Status, e.g. "5.1.1"
    diagnostic: str | None = None  # the first Diagnostic-Code, shortened

    def is_hard(self) -> bool:
        return bool(self.permanent)

    def is_soft(self) -> bool:
        return not self.permanent and bool(self.temporary)

    @property
    def kind(self) -> str:
        return "hard" if self.is_hard() else "soft" if self.is_soft() else "unknown"


def _addresses(found: frozenset[bytes]) -> tuple[str, ...]:
    out = set()
    for item in found:
        text = item.decode("ascii", "replace").strip().strip("<>").lower()
        if "@" in text and len(text) <= 320:
            out.add(text)
    return tuple(sorted(out))


def _dsn_fields(msg: Message) -> tuple[str | None, str | None]:
    status = diagnostic = None
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        for block in blocks:
            if not isinstance(block, Message):
                continue
            if status is None and (value := block.get("status")):
                match = _STATUS_RE.search(str(value))
                status = ".".join(match.groups()) if match else None
            if diagnostic is None and (value := block.get("diagnostic-code")):
                diagnostic = " ".join(str(value).split())[:300]
    return status, diagnostic


def analyse(msg: Message, raw: bytes) -> BounceReport:
    """What the delivery report `msg` (parsed from `raw`) says; never raises."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # a detector tripping over a strange report
        log.warning("bounce detectors failed: %s: %s", type(exc).__name__, exc)
        temporary, permanent = frozenset(), frozenset()
    try:
        status, diagnostic = _dsn_fields(msg)
    except Exception:
        status = diagnostic = None
    head_end = raw.find(b"\n\n")
    crlf_end = raw.find(b"\r\n\r\n")
    ends = [e for e in (head_end, crlf_end) if e != -1]
    body = raw[min(ends) :] if ends else b""
    seen: dict[str, None] = {}
    for match in _ORIGINAL_ID_RE.finditer(body[: 4 * 1024 * 1024]):
        seen.setdefault(match.group(1).decode("ascii", "replace"), None)
        if len(seen) >= MAX_IDS:
            break
    permanent_addrs = _addresses(permanent)
    temporary_addrs = tuple(a for a in _addresses(temporary) if a not in permanent_addrs)
    return BounceReport(
        permanent=permanent_addrs,
        temporary=temporary_addrs,
        original_message_ids=tuple(seen),
        status=status,
        diagnostic=diagnostic,
    )
