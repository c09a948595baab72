"""Parse raw bytes once into a frozen `ParsedMessage`.

This is the only module that imports mail-parser. Later stages never see a
`email.message.Message`; they read the fields of `ParsedMessage`.
"""

from __future__ import annotations

import base64
import binascii
import email
import functools
import hashlib
import logging
import mimetypes
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

import mailparser
from mailparser.exceptions import MailParserError

from maild.addresses import normalize_address
from maild.errors import PermanentError
from maild.mail import tnef
from maild.mail.bounce import BounceReport, analyse
from maild.mail.htmltext import html_to_text
from maild.mail.language import fold, load_languages, phrase_pattern
from maild.mail.limits import ParseLimits, prescan
from maild.mail.phrases import Phrase

log = logging.getLogger(__name__)

MAX_IDS_PER_HEADER = 100
MAX_ID_LENGTH = 998
_ID_RE_STR = re.compile(r"<[^<>\s]{1,996}>")
_HEADER_LINE_RE = re.compile(rb"^[!-9;-~]{1,76}:")
_MESSAGE_HEADERS = frozenset(
    {b"from", b"to", b"subject", b"date", b"message-id", b"received", b"sender", b"return-path"}
)
# Display names must not smuggle control or bidi-override characters.
_BIDI = dict.fromkeys(
    map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"), None
)


class NotAMessage(PermanentError):
    """The bytes are not an Internet message at all."""


@dataclass(frozen=True)
class Address:
    name: str
    email: str  # normalised: lower-case, no brackets

    def formatted(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True)
class ParsedAttachment:
    filename: str  # a safe display name, never a path
    content_type: str
    data: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.data).hexdigest())

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class ParsedMessage:
    size: int
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    sender: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: datetime | None
    headers: Mapping[str, tuple[str, ...]]  # lower-case name -> unfolded raw values
    content_type: str
    text: str
    html: str | None
    attachments: tuple[ParsedAttachment, ...]
    language: str | None
    defects: tuple[str, ...]
    notes: tuple[str, ...] = ()  # what the limits cut (maild.limits), for people
    bounce: BounceReport | None = None  # for mail that looks like a delivery report
    header_order: tuple[str, ...] = ()  # lower-case names of all header fields, top first
    # Classified beside the parse (`maild.service.parsepool`): (rules token, recipient,
    # Triage). `maild.pipeline.triage.classify` uses it only for the same rules and
    # recipient; typed `object` here because triage is a layer above the format.
    pre_triage: tuple[str, str, object] | None = field(default=None, compare=False, repr=False)
    # A reply's own words (`maild.mail.quotes.strip_reply` of `text`), worked out
    # beside the parse (`maild.service.parsepool`) for the search index; None: not known.
    reply_text: str | None = field(default=None, compare=False, repr=False)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def fields(self) -> list[tuple[str, str]]:
        """Every header field as (lower-case name, value), in order, top first."""
        seen: dict[str, int] = {}
        out = []
        for name in self.header_order:
            i = seen.get(name, 0)
            seen[name] = i + 1
            values = self.headers.get(name, ())
            if i < len(values):
                out.append((name, values[i]))
        return out

    def thread_ids(self) -> tuple[str, ...]:
        """Message-IDs this message refers to, most specific first.

        A delivery report refers to the mail that bounced.
        """
        seen: dict[str, None] = {}
        for mid in (*self.in_reply_to, *reversed(self.references)):
            seen.setdefault(mid, None)
        if self.bounce is not None:
            for mid in self.bounce.original_message_ids:
                seen.setdefault(mid, None)
        return tuple(seen)


# --- cheap looks at raw bytes, before any full parse ----------------------


def header_block(raw: bytes, limit: int = 256 * 1024) -> bytes:
    """The bytes before the first empty line (at most `limit`)."""
    head = raw[:limit]
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = head.find(sep)
        if end != -1:
            return head[: end + len(sep) // 2]
    return head


def looks_like_message(raw: bytes) -> bool:
    """True when the bytes start with header fields a message would have."""
    head = header_block(raw)
    if head.startswith(b"From "):  # an mbox separator line
        head = head.split(b"\n", 1)[1] if b"\n" in head else b""
    if not head.strip() or b"\0" in head:
        return False
    if not _HEADER_LINE_RE.match(head):
        return False
    names = {
        line.split(b":", 1)[0].strip().lower()
        for line in head.splitlines()
        if line and line[:1] not in (b" ", b"\t") and b":" in line
    }
    return bool(names & _MESSAGE_HEADERS)


def _peek(raw: bytes) -> Message | None:
    try:
        return BytesHeaderParser(policy=compat32).parsebytes(header_block(raw, limit=64 * 1024))
    except Exception:  # a header block bad enough to break the parser tells us nothing
        return None


_MESSAGE_ID_FIELD = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)


def peek_message_id(raw: bytes) -> str | None:
    """The Message-ID from the header block, without parsing anything else.

    Every intake path calls this before it commits (dedupe), so it is a scan
    of the header bytes, not a header parse.
    """
    match = _MESSAGE_ID_FIELD.search(header_block(raw, limit=64 * 1024))
    if match is None:
        return None
    return normalize_message_id(
        match.group(1).decode("latin-1").replace("\r", " ").replace("\n", " ")
    )


def peek_recipients(raw: bytes) -> list[str]:
    """Addresses in Delivered-To, X-Original-To, To and Cc (in that order)."""
    msg = _peek(raw)
    if msg is None:
        return []
    values: list[str] = []
    for name in ("Delivered-To", "X-Original-To", "To", "Cc"):
        values.extend(str(v) for v in msg.get_all(name, []))
    return [normalize_address(addr) for _name, addr in getaddresses(values) if "@" in addr]


def peek_header(raw: bytes, name: str) -> str | None:
    """The topmost `name` field's value (unfolded), or None; the header block only."""
    msg = _peek(raw)
    value = msg.get(name) if msg is not None else None
    return _unfold(str(value)) if value is not None else None


def peek_return_path(raw: bytes) -> str | None:
    """The envelope sender the final MTA recorded (``Return-Path``, topmost).

    ``""`` for the null reverse-path ``<>`` (bounces), None when there is none.
    """
    msg = _peek(raw)
    value = msg.get("Return-Path") if msg is not None else None
    if value is None:
        return None
    return normalize_address(str(value))


def normalize_message_id(value: str | None) -> str | None:
    if not value:
        return None
    match = _ID_RE_STR.search(value)
    if match:
        return match.group(0)
    token = value.strip()
    if not token or any(c.isspace() for c in token) or len(token) > MAX_ID_LENGTH - 2:
        return None
    return f"<{token}>"


def message_ids(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    ids = _ID_RE_STR.findall(value)
    return tuple(ids[-MAX_IDS_PER_HEADER:])


# --- the full parse --------------------------------------------------------


@functools.cache
def _bounce_subject() -> re.Pattern[str]:
    """Bounce subjects of every built-in language ([bounce] subjects of maild/mail/lang)."""
    phrases = load_languages().strings("bounce", "subjects")
    return re.compile(rf"^\s*(?:{phrase_pattern(phrases)})")


_DAEMON_RE = re.compile(
    r"^(?:(?:prvs|btv1)=[^=]+=)?(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon|mdaemon|ndr)@",
    re.IGNORECASE,
)


def looks_like_bounce(
    headers: Mapping[str, tuple[str, ...]], content_type: str, sender: str, subject: str
) -> bool:
    """Cheap signals that a message is a delivery report (worth analysing)."""
    if content_type == "multipart/report" or "x-failed-recipients" in headers:
        return True
    for value in headers.get("return-path", ()):
        if value.strip() in ("<>", "") or _DAEMON_RE.match(value.strip().strip("<>") + "@"):
            return True
    return bool(_DAEMON_RE.match(sender) or _bounce_subject().match(fold(subject)))


def parse(
    raw: bytes,
    limits: ParseLimits | None = None,
    *,
    bounce_hint: bool = False,
    salvage: bool = False,
) -> ParsedMessage:
    """Parse `raw` within `limits`; raise `NotAMessage` / `PermanentError`.

    `bounce_hint` says the envelope already marks this as a delivery report
    (null sender, or sent to one of our VERP addresses); `salvage` parses
    only the headers and the first text part (see `maild.mail.limits.prescan`).
    """
    limits = limits or ParseLimits()
    if not looks_like_message(raw[: 1024 * 1024]):
        raise NotAMessage("not an email message: no header fields found")
    pre = prescan(raw, limits, force_salvage=salvage)
    work = pre.raw
    if pre.notes and not looks_like_message(work):
        raise NotAMessage("not an email message: no usable header fields within the limits")
    try:
        msg: Message = email.message_from_bytes(work)
        headers: dict[str, list[str]] = {}
        for name, value in msg.items():
            headers.setdefault(name.lower(), []).append(_unfold(str(value)))
        header_order = tuple(name.lower() for name in msg)
        # mail-parser analyses every Received header (a seventh of a parse) for
        # a `received` list we never read; the headers above keep them, and
        # `header_order` their places, for the trusted-hop count of
        # `maild.pipeline.agentauth`.
        del msg["Received"]
        mp = mailparser.MailParser(msg)
    except MailParserError as exc:
        raise PermanentError(f"unparseable message: {exc}") from None
    except RecursionError:
        raise PermanentError("unparseable message: MIME nesting too deep") from None
    frozen_headers = {k: tuple(v) for k, v in headers.items()}

    text_parts, html_parts = _bodies(msg)
    html = "\n".join(html_parts) if html_parts else None
    text = "\n\n".join(t for t in text_parts if t.strip())
    if not text.strip() and html:
        text = html_to_text(html)

    senders = _addresses(mp.from_)
    language = None
    if content_language := frozen_headers.get("content-language"):
        language = content_language[0].split(",")[0].strip().split("-")[0].lower() or None

    attachments, att_notes, tnef_body = _limit_attachments(
        _attachments(mp.attachments, msg), limits
    )
    if not text.strip() and tnef_body:
        text = tnef_body
    if pre.keep_original:
        attachments.append(ParsedAttachment("original-message.eml", "message/rfc822", raw))
    subject = _single_line(mp.subject or "")
    content_type = msg.get_content_type()
    sender = senders[0] if senders else None
    bounce = None
    if bounce_hint or looks_like_bounce(
        frozen_headers, content_type, sender.email if sender else "", subject
    ):
        bounce = analyse(msg, work)

    return ParsedMessage(
        size=len(raw),
        message_id=normalize_message_id(frozen_headers.get("message-id", (None,))[0]),
        in_reply_to=message_ids(" ".join(frozen_headers.get("in-reply-to", ()))),
        references=message_ids(" ".join(frozen_headers.get("references", ()))),
        subject=subject,
        sender=sender,
        reply_to=_addresses(mp.reply_to),
        to=_addresses(mp.to),
        cc=_addresses(mp.cc),
        date=_utc(mp.date),
        headers=frozen_headers,
        content_type=content_type,
        text=text,
        html=html,
        attachments=tuple(attachments),
        language=language,
        defects=tuple(sorted(mp.defects_categories)),
        notes=(*pre.notes, *att_notes),
        bounce=bounce,
        header_order=header_order,
    )


def _limit_attachments(
    items: list[ParsedAttachment], limits: ParseLimits
) -> tuple[list[ParsedAttachment], list[str], str | None]:
    """Unpack winmail.dat; keep what fits the count and size limits."""
    out: list[ParsedAttachment] = []
    notes: list[str] = []
    body: str | None = None
    for att in items:
        if not tnef.is_tnef(att.content_type, att.filename):
            out.append(att)
            continue
        content = tnef.unpack(
            att.data, max_files=limits.max_attachments, max_bytes=limits.max_attachment_bytes
        )
        if content is None or not (content.files or content.body or content.html):
            out.append(att)  # kept as it came: not decodable
            continue
        body = body or content.body or (html_to_text(content.html) if content.html else None)
        for f in content.files:
            ctype = _guess_type(f.name)
            out.append(ParsedAttachment(safe_filename(f.name, ctype), ctype, f.data))
    big = [a for a in out if a.size > limits.max_attachment_bytes]
    if big:
        out = [a for a in out if a.size <= limits.max_attachment_bytes]
        for a in big:
            notes.append(Phrase("limits.attachment_too_large", filename=a.filename, size=a.size,
                                limit=limits.max_attachment_bytes))  # fmt: skip
    if len(out) > limits.max_attachments:
        extra = out[limits.max_attachments :]
        out = out[: limits.max_attachments]
        notes.append(Phrase("limits.attachments_dropped", count=len(extra),
                            limit=limits.max_attachments))  # fmt: skip
    return out, notes, body


def _guess_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]*", " ", value).strip()


def _single_line(value: str) -> str:
    """Decoded header text with every control character turned into a space."""
    value = "".join(" " if unicodedata.category(c) == "Cc" else c for c in value)
    return re.sub(r" {2,}", " ", value.translate(_BIDI)).strip()


def _clean_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "")


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _addresses(pairs: list[tuple[str, str]] | str | None) -> tuple[Address, ...]:
    if not pairs or isinstance(pairs, str):
        return ()
    out = []
    for name, addr in pairs:
        if addr and "@" in addr:
            out.append(Address(name=_single_line(name or ""), email=normalize_address(addr)))
    return tuple(out)


def decode_text(data: bytes, charset: str | None) -> str:
    """Bytes of a text part to str: declared charset, else UTF-8, else windows-1252."""
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("cp1252", errors="replace")


MAX_MIME_DEPTH = 50


def _is_attachment(part: Message) -> bool:
    return (
        part.get_content_disposition() == "attachment"
        or bool(part.get_param("filename", header="content-disposition"))
        or bool(part.get_param("name"))
    )


def _bodies(msg: Message) -> tuple[list[str], list[str]]:
    """The text and HTML bodies a person wrote, in order.

    Attachments, attached messages (message/rfc822) and everything inside
    them are not part of the body. Each part is decoded once: its declared
    charset, else UTF-8, else windows-1252.
    """
    texts: list[str] = []
    htmls: list[str] = []
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        if part.is_multipart():
            if part.get_content_maintype() == "message" or depth >= MAX_MIME_DEPTH:
                continue  # an attached message, or nesting no client produces
            if part is not msg and part.get_content_disposition() == "attachment":
                continue
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend((child, depth + 1) for child in reversed(children))
            continue
        if part.get_content_maintype() != "text" or _is_attachment(part):
            continue
        subtype = part.get_content_subtype()
        if subtype not in ("plain", "html"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        body = _clean_text(decode_text(payload, part.get_content_charset()))
        (htmls if subtype == "html" else texts).append(body)
    return texts, htmls


_WINDOWS_UNSAFE = re.compile(r'[<>:"|?*]')
_WINDOWS_DEVICE = re.compile(r"^(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\.|$)", re.IGNORECASE)


def safe_filename(name: str | None, content_type: str = "application/octet-stream") -> str:
    """A display name that is never a path and carries no control characters."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp"))
    name = _WINDOWS_UNSAFE.sub("_", name.translate(_BIDI)).strip().lstrip(".").strip()
    name = name.rstrip(". ")  # Windows drops trailing dots and spaces: "a.exe." runs a.exe
    if _WINDOWS_DEVICE.match(name):
        name = f"_{name}"
    if not name:
        subtype = content_type.partition("/")[2] or "bin"
        name = f"attachment.{re.sub(r'[^a-z0-9]+', '', subtype.lower())[:10] or 'bin'}"
    encoded = name.encode("utf-8")
    if len(encoded) > 200:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:20] if dot else ""
        keep = 200 - len(ext.encode()) - 1
        stem = (stem if dot else name).encode("utf-8")[:keep].decode("utf-8", "ignore")
        name = f"{stem}.{ext}" if ext else stem
    return name


def _embedded_messages(msg: Message) -> list[bytes]:
    """The bytes of each attached message/rfc822, in MIME order."""
    out = []
    for part in msg.walk():
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                try:
                    out.append(inner[0].as_bytes(policy=compat32.clone(linesep="\r\n")))
                except Exception:  # an embedded message too broken to flatten
                    out.append(b"")
    return out


def _attachments(items: list[dict[str, object]], msg: Message) -> list[ParsedAttachment]:
    out = []
    embedded = iter(_embedded_messages(msg))
    for item in items:
        content_type = str(item.get("mail_content_type") or "application/octet-stream")
        payload = item.get("payload") or ""
        if content_type == "message/rfc822":
            data = next(embedded, b"") or str(payload).encode("utf-8", "surrogateescape")
        elif item.get("binary"):
            try:
                data = base64.b64decode(str(payload))
            except (binascii.Error, ValueError):
                data = str(payload).encode("ascii", "replace")
        else:
            data = str(payload).encode("utf-8", "surrogateescape")
        content_id = str(item.get("content-id") or "").strip() or None
        disposition = str(item.get("content-disposition") or "").lower()
        filename = item.get("filename")
        if content_id and filename == content_id:
            filename = None  # mail-parser names cid-only parts after their Content-ID
        out.append(
            ParsedAttachment(
                filename=safe_filename(str(filename) if filename else None, content_type),
                content_type=content_type,
                data=data,
                content_id=content_id,
                inline=bool(content_id) and not disposition.startswith("attachment"),
            )
        )
    return out
