"""Outlook's ``winmail.dat`` (TNEF): unpack it into the files it carries.

The only module that imports tnefparse. A TNEF blob that cannot be decoded is
kept as it came (the agent can still download it); one that decodes gives its
attachments and, when the mail had no text of its own, its body.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tnefparse import TNEF

log = logging.getLogger(__name__)

TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})


@dataclass(frozen=True)
class TnefFile:
    name: str
    data: bytes


@dataclass(frozen=True)
class TnefContent:
    files: tuple[TnefFile, ...]
    body: str | None
    html: str | None


def is_tnef(content_type: str, filename: str | None) -> bool:
    return content_type.lower() in TNEF_TYPES or (filename or "").lower() == "winmail.dat"


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip("\x00") or None
    if isinstance(value, str):
        return value.strip("\x00") or None
    return None


def unpack(data: bytes, *, max_files: int, max_bytes: int) -> TnefContent | None:
    """The files and body inside a TNEF blob, or None when it is not one."""
    try:
        tnef = TNEF(data, do_checksum=False)
    except Exception as exc:  # not TNEF after all, or truncated
        log.info("winmail.dat not decoded: %s: %s", type(exc).__name__, exc)
        return None
    files = []
    for att in tnef.attachments[:max_files]:
        payload = att.data if isinstance(att.data, bytes) else b""
        if len(payload) > max_bytes:
            continue
        try:
            name = att.long_filename()
        except Exception:
            name = ""
        files.append(TnefFile(name=_text(name) or "", data=payload))
    return TnefContent(files=tuple(files), body=_text(tnef.body), html=_text(tnef.htmlbody))
