"""Limits checked on the raw bytes before any full parse.

`prescan()` looks at a message with a few linear byte scans (no
`email.message.Message` is built) and returns what the full parser may safely
be given:

- the header block, trimmed to ``max_header_block_bytes`` and
  ``max_header_fields`` (the fields screening and threading read are kept
  first), every field cut to ``max_header_bytes``, address lists cut to
  ``max_addresses_per_header``;
- the body as it is when its MIME structure stays within ``max_mime_depth``
  and ``max_mime_parts``; otherwise (and over ``max_message_bytes``) only the
  first text part, so the person's words still reach a ticket. The original
  bytes are then offered as an attachment, or dropped with a note when they
  are larger than ``max_attachment_bytes``.

Each cut leaves a human-readable note; the notes travel with the parsed
message onto the ticket and into the mail that tells the sender.
Pure: bytes in, a frozen `Prescan` out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from maild.mail.phrases import Phrase

HEADER_SCAN_LIMIT = 64 * 1024 * 1024  # beyond this no header block is looked for


@dataclass(frozen=True)
class ParseLimits:
    max_message_bytes: int = 25 * 1024 * 1024
    max_header_block_bytes: int = 256 * 1024
    max_header_fields: int = 1000
    max_header_bytes: int = 32 * 1024
    max_addresses_per_header: int = 1000
    max_mime_depth: int = 30
    max_mime_parts: int = 500
    max_attachments: int = 100
    max_attachment_bytes: int = 20 * 1024 * 1024
    max_text_bytes: int = 2 * 1024 * 1024  # of the salvaged text part


@dataclass(frozen=True)
class Prescan:
    raw: bytes  # what the full parser gets
    notes: tuple[str, ...]  # what was cut, for people
    salvaged: bool  # the body was replaced by its first text part
    keep_original: bool  # attach the original bytes (salvaged and small enough)


# Fields kept first when a header block must be cut: what screening,
# correlation and the parser itself read.
_KEY_FIELDS = frozenset(
    {
        b"from", b"sender", b"reply-to", b"to", b"cc", b"subject", b"date", b"message-id",
        b"in-reply-to", b"references", b"mime-version", b"content-type",
        b"content-transfer-encoding", b"content-language", b"auto-submitted", b"precedence",
        b"list-id", b"list-unsubscribe", b"x-autoreply", b"x-autorespond",
        b"x-auto-response-suppress", b"x-failed-recipients", b"x-maild-loop", b"return-path",
        b"delivered-to", b"x-original-to",
    }
)  # fmt: skip
_ADDRESS_FIELDS = frozenset({b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc"})
_FIELD_NAME_RE = re.compile(rb"^([!-9;-~]{1,200})[ \t]*:")
_BOUNDARY_RE = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.I)
_CT_RE = re.compile(rb"^content-type[ \t]*:[ \t]*([!-~]+/[!-~]+?)(?:[ \t;\r]|$)", re.I | re.M)


def header_end(raw: bytes, start: int = 0, stop: int | None = None) -> tuple[int, int]:
    """(end of the header block, start of the body) of the entity at `start`.

    Both are ``len(raw)`` (or `stop`) when there is no empty line.
    """
    stop = len(raw) if stop is None else min(stop, len(raw))
    if raw.startswith(b"\r\n", start):
        return start, start + 2
    if raw.startswith(b"\n", start):
        return start, start + 1
    crlf = raw.find(b"\r\n\r\n", start, stop)
    lf = raw.find(b"\n\n", start, crlf + 2 if crlf != -1 else stop)
    if lf != -1 and (crlf == -1 or lf < crlf):
        return lf + 1, lf + 2
    if crlf != -1:
        return crlf + 2, crlf + 4
    return stop, stop


def split_header_block(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(header block, separator, body); no separator when there is no body."""
    head_end, body_start = header_end(raw, 0, HEADER_SCAN_LIMIT)
    if body_start >= min(len(raw), HEADER_SCAN_LIMIT) and head_end == body_start:
        return raw, b"", b""
    return raw[:head_end], raw[head_end:body_start], raw[body_start:]


def header_fields(head: bytes) -> list[bytes]:
    """The fields of a header block, each with its folded continuation lines."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _field_name(field: bytes) -> bytes:
    match = _FIELD_NAME_RE.match(field)
    return match.group(1).lower() if match else b""


def _eol(field: bytes) -> bytes:
    return b"\r\n" if field.endswith(b"\r\n") else b"\n"


def _cut_addresses(field: bytes, limit: int) -> tuple[bytes, int] | None:
    if field.count(b"@") <= limit:
        return None
    # Cut at the comma after the limit-th address: the first `limit` stay whole.
    pos, seen = 0, 0
    while seen < limit:
        at = field.find(b"@", pos)
        if at == -1:
            return None
        seen, pos = seen + 1, at + 1
    comma = field.find(b",", pos)
    if comma == -1:
        return None
    return field[:comma].rstrip() + _eol(field), field.count(b"@") - limit


def _cut_field(field: bytes, limit: int) -> bytes:
    """Shorten a field to `limit` bytes at a space, keeping encoded-words whole."""
    eol = _eol(field)
    body = field[: limit - len(eol)]
    space = max(body.rfind(b" "), body.rfind(b"\t"))
    if space > len(body) // 2:
        body = body[:space]
    return body.rstrip(b"\r\n") + eol


def trim_header_block(head: bytes, limits: ParseLimits) -> tuple[bytes, list[str]]:
    """The header block within the limits, and a note for each cut."""
    notes: list[str] = []
    if (
        len(head) <= min(limits.max_header_bytes, limits.max_header_block_bytes)
        and head.count(b"\n") < limits.max_header_fields
        and head.count(b"@") <= limits.max_addresses_per_header
    ):
        return head, notes  # nothing in it can be over a limit
    fields = header_fields(head)
    too_many = len(fields) > limits.max_header_fields or len(head) > limits.max_header_block_bytes
    kept: list[tuple[int, bytes]] = []
    dropped_long: dict[str, int] = {}
    for index, field in enumerate(fields):
        name = _field_name(field)
        if name in _ADDRESS_FIELDS:
            cut = _cut_addresses(field, limits.max_addresses_per_header)
            if cut is not None:
                field, extra = cut
                notes.append(Phrase("limits.addresses_cut", field=name.decode("ascii", "replace").title(),
                                    count=extra, limit=limits.max_addresses_per_header))  # fmt: skip
        if len(field) > limits.max_header_bytes:
            if name in _KEY_FIELDS:
                field = _cut_field(field, limits.max_header_bytes)
                notes.append(Phrase("limits.header_shortened",
                                    field=name.decode("ascii", "replace").title(),
                                    limit=limits.max_header_bytes))  # fmt: skip
            else:
                label = name.decode("ascii", "replace")[:40] or "(unnamed)"
                dropped_long[label] = dropped_long.get(label, 0) + 1
                continue
        kept.append((index, field))
    for label, count in dropped_long.items():
        notes.append(Phrase("limits.headers_dropped", count=count, field=label,
                            limit=limits.max_header_bytes))  # fmt: skip
    if too_many:
        budget_bytes = limits.max_header_block_bytes
        budget_fields = limits.max_header_fields
        chosen: list[tuple[int, bytes]] = []
        # Key fields first (in order), then the rest in order, while they fit.
        key = [kf for kf in kept if _field_name(kf[1]) in _KEY_FIELDS]
        rest = [kf for kf in kept if _field_name(kf[1]) not in _KEY_FIELDS]
        size = 0
        for index, field in key + rest:
            if len(chosen) >= budget_fields or size + len(field) > budget_bytes:
                continue
            chosen.append((index, field))
            size += len(field)
        dropped = len(kept) - len(chosen)
        if dropped:
            notes.append(Phrase("limits.fields_dropped", count=dropped, fields=budget_fields,
                                limit=budget_bytes))  # fmt: skip
        kept = sorted(chosen)
    return b"".join(f for _i, f in kept), notes


@dataclass
class _Structure:
    depth: int = 0
    parts: int = 0
    over: str = ""
    first_text: tuple[int, int] | None = None  # (start of part headers, end of part)
    first_html: tuple[int, int] | None = None


def _part_type(head: bytes) -> tuple[bytes, bytes | None]:
    match = _CT_RE.search(head)
    ctype = match.group(1).lower() if match else b"text/plain"
    boundary = None
    if ctype.startswith(b"multipart/"):
        bmatch = _BOUNDARY_RE.search(head)
        if bmatch:
            boundary = bmatch.group(1) or bmatch.group(2)
    return ctype, boundary


def _is_attachment(head: bytes) -> bool:
    lower = head.lower()
    return b"attachment" in lower or b"filename" in lower or b"name=" in lower


def scan_structure(raw: bytes, limits: ParseLimits) -> _Structure:
    """Depth and part count of the MIME tree, found without building it.

    Delimiter lines are found with ``bytes.find`` per open boundary (each
    boundary's next occurrence is remembered, so every byte is searched once
    per open boundary). Stops as soon as a limit is passed (``over`` says
    which). Also remembers where the first text/plain and text/html leaves
    are, for salvage.
    """
    st = _Structure()
    stack: list[tuple[bytes, int]] = []  # open multipart boundaries and their depth
    open_leaf: list[tuple[int, bytes]] = []  # the leaf whose end we are looking for
    size = len(raw)

    def entity(start: int, depth: int) -> int:
        """Record the entity at `start`; return where its body starts."""
        # Follows message/rfc822 chains without recursion.
        while True:
            st.parts += 1
            st.depth = max(st.depth, depth)
            if st.depth > limits.max_mime_depth:
                st.over = Phrase("limits.mime_depth", limit=limits.max_mime_depth)
                return size
            if st.parts > limits.max_mime_parts:
                st.over = Phrase("limits.mime_parts", limit=limits.max_mime_parts)
                return size
            head_end, body_start = header_end(raw, start, start + 256 * 1024)
            ctype, boundary = _part_type(raw[start:head_end])
            if ctype.startswith(b"multipart/"):
                if boundary:
                    stack.append((boundary, depth + 1))
                return body_start
            if ctype in (b"message/rfc822", b"message/global"):
                start, depth = body_start, depth + 1
                continue
            if ctype in (b"text/plain", b"text/html") and not _is_attachment(raw[start:head_end]):
                open_leaf[:] = [(start, ctype)]
            return body_start

    def close_leaf(end: int) -> None:
        if open_leaf:
            leaf_start, ctype = open_leaf.pop()
            if ctype == b"text/plain" and st.first_text is None:
                st.first_text = (leaf_start, end)
            elif ctype == b"text/html" and st.first_html is None:
                st.first_html = (leaf_start, end)

    def delimiter(boundary: bytes, pos: int) -> tuple[int, int, bool] | None:
        """The next delimiter line of `boundary`: (start, end of line, closing)."""
        needle = b"--" + boundary
        while True:
            at = raw.find(needle, pos)
            if at == -1:
                return None
            eol = raw.find(b"\n", at)
            eol = size if eol == -1 else eol
            rest = raw[at + len(needle) : eol].rstrip(b"\r \t")
            if (at == 0 or raw[at - 1] == 0x0A) and rest in (b"", b"--"):
                return at, eol, rest == b"--"
            pos = at + 1

    pos = entity(0, 0)
    found: dict[bytes, tuple[int, int, bool] | None] = {}
    while stack and not st.over:
        best: tuple[int, int, bool] | None = None
        level = -1
        for i, (boundary, _depth) in enumerate(stack):
            hit = found.get(boundary, (-1, 0, False))
            if hit is not None and hit[0] < pos:
                hit = found[boundary] = delimiter(boundary, pos)
            if hit is not None and (best is None or hit[0] < best[0]):
                best, level = hit, i
        if best is None:
            break
        at, eol, closing = best
        close_leaf(at)
        depth = stack[level][1]
        del stack[level if closing else level + 1 :]
        pos = eol + 1
        if not closing:
            pos = entity(pos, depth)
    close_leaf(size)
    return st


_PART_FIELDS = (b"content-type", b"content-transfer-encoding")


def _salvage_body(raw: bytes, st: _Structure, limit: int) -> tuple[bytes, bytes]:
    """(MIME header fields, body) of the first text part, at most `limit` bytes."""
    span = st.first_text or st.first_html
    if span is None:
        return b"Content-Type: text/plain; charset=us-ascii\r\n", b""
    part = raw[span[0] : span[1]]
    head, _sep, body = split_header_block(part)
    fields = [f for f in header_fields(head) if _field_name(f) in _PART_FIELDS]
    if not any(_field_name(f) == b"content-type" for f in fields):
        fields.insert(0, b"Content-Type: text/plain\r\n")
    if len(body) > limit:
        body = body[:limit]
        cut = max(body.rfind(b"\n"), 0)
        body = body[:cut]
    return b"".join(fields), body


def prescan(raw: bytes, limits: ParseLimits, *, force_salvage: bool = False) -> Prescan:
    """The bytes the full parser may be given, and what was cut to get them.

    `force_salvage`: the full parse of this message already failed its CPU or
    memory budget; keep only the headers and the first text part.
    """
    notes: list[str] = []
    if force_salvage:
        notes.append(Phrase("limits.cpu"))
    too_big = len(raw) > limits.max_message_bytes
    if too_big:
        notes.append(Phrase("limits.too_large", limit=limits.max_message_bytes))
    head, sep, body = split_header_block(raw)
    trimmed, head_notes = trim_header_block(head, limits)
    notes.extend(head_notes)
    st = scan_structure(raw, limits)
    salvage = force_salvage or too_big or bool(st.over)
    if st.over:
        notes.append(st.over)
    if not salvage:
        if not head_notes:
            return Prescan(raw, (), False, False)
        return Prescan(trimmed + (sep or b"\r\n") + body, tuple(notes), False, False)
    part_fields, text = _salvage_body(raw, st, limits.max_text_bytes)
    outer = [
        f
        for f in header_fields(trimmed)
        if _field_name(f) not in (*_PART_FIELDS, b"mime-version") and _field_name(f)
    ]
    keep_original = len(raw) <= limits.max_attachment_bytes
    if keep_original:
        notes.append(Phrase("limits.original_attached"))
    else:
        notes.append(Phrase("limits.original_kept"))
    new_raw = b"".join(outer) + b"MIME-Version: 1.0\r\n" + part_fields + b"\r\n" + text
    return Prescan(new_raw, tuple(notes), True, keep_original)
