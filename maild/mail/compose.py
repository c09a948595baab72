"""Compose the bytes of every mail maild sends.

Every header value is cleaned before use (no CR, LF or other control
character survives, raw or inside an encoded-word's decoded text), and the
serialised header block is checked against the list of headers we set, so a
subject or a name can never add or split a header. Every mail carries a
Message-ID from our domain, ``Auto-Submitted``, ``X-Auto-Response-Suppress:
All`` and our loop header.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.utils import format_datetime, formataddr
from urllib.parse import quote

from maild.addresses import is_valid_address
from maild.errors import PermanentError
from maild.mail.parse import Address

_ID_RE = re.compile(r"^<[!-;=?-~]{1,994}>$")  # printable ASCII, no '<', '>' or space
MAX_HEADER_CHARS = 900
# Our loop header: on every mail we send; screening drops mail that carries it back.
LOOP_HEADER = "X-Maild-Loop"


_ENCODED_WORD = re.compile(r"=\?[^?\s]{1,75}\?[bBqQ]\?[^?\s]{0,2000}\?=")


def _decode_encoded_words(value: str) -> str:
    """Text that carries RFC 2047 encoded-words, decoded (so we see what a reader sees).

    A subject copied from a mail may still hold ``=?utf-8?q?a=0D=0ABcc:_x?=``:
    sent as is, a client decoding it would show a CR/LF. Decoded here, the
    cleaning below turns it into a space and `Header` encodes it afresh.
    """
    if "=?" not in value or not _ENCODED_WORD.search(value):
        return value
    try:
        return str(make_header(decode_header(value[: 4 * MAX_HEADER_CHARS])))
    except (ValueError, LookupError, UnicodeError, HeaderParseError):
        return _ENCODED_WORD.sub(" ", value)


def clean_header_text(value: str, limit: int = MAX_HEADER_CHARS) -> str:
    """One line of text: control and format characters become spaces."""
    value = _decode_encoded_words(value)
    out = []
    for ch in value:
        cat = unicodedata.category(ch)
        out.append(" " if cat in ("Cc", "Cf", "Zl", "Zp") else ch)
    text = re.sub(r"\s+", " ", "".join(out)).strip()
    return text[:limit]


def new_message_id(domain: str) -> str:
    return f"<{uuid.uuid4().hex}@{domain}>"


_OUR_ID_LOCAL = re.compile(r"<[0-9a-f]{32}@")


def is_our_message_id(message_id: str | None, domain: str) -> bool:
    """A Message-ID `new_message_id` made for `domain` (its shape and domain):
    a mail client that happens to use the same domain writes others."""
    if not message_id or _OUR_ID_LOCAL.match(message_id) is None:
        return False
    return message_id[34:-1].lower() == domain.lower() and message_id.endswith(">")


def _safe_id(value: str | None) -> str | None:
    return value if value and _ID_RE.match(value) else None


def _addr(address: Address) -> str:
    if not is_valid_address(address.email):
        raise PermanentError(f"refusing to send to invalid address {address.email!r}")
    return formataddr((clean_header_text(address.name, 200), address.email), charset="utf-8")


def _text_header(name: str, value: str) -> str:
    """A folded header value; non-ASCII text becomes RFC 2047 encoded-words."""
    value = clean_header_text(value)
    if value.isascii():
        return _fold(len(name) + 2, value)
    return encode_words(value)


def encode_words(value: str) -> str:
    """RFC 2047 ``B`` encoded-words of UTF-8, each at most 75 characters, folded.

    Chunks end on character boundaries; decoders join adjacent encoded-words
    without the folding white space between them.
    """
    words: list[str] = []
    chunk = b""
    for ch in value:
        data = ch.encode("utf-8")
        if len(chunk) + len(data) > 42:  # 42 bytes: 56 base64 characters, 68 in all
            words.append(chunk)
            chunk = b""
        chunk += data
    if chunk:
        words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def _fold(used: int, value: str, width: int = 78) -> str:
    """Fold an ASCII value (no CR/LF in it) at spaces to about `width` columns."""
    if used + len(value) <= width:
        return value
    lines: list[str] = []
    line = ""
    for word in value.split(" "):
        if line and used + len(line) + 1 + len(word) > width:
            lines.append(line)
            line, used = word, 1
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n ".join(lines)


@dataclass(frozen=True)
class Outgoing:
    sender: Address  # From
    to: tuple[Address, ...]
    subject: str
    text: str
    html: str | None
    message_id: str
    date: datetime
    auto_submitted: str
    loop_domain: str
    reply_to: Address | None = None
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    language: str | None = None
    cc: tuple[Address, ...] = ()
    calendar: bytes | None = None  # a text/calendar (iMIP REQUEST) alternative part
    attachments: tuple[OutgoingAttachment, ...] = ()  # files sent along (multipart/mixed)


@dataclass(frozen=True)
class OutgoingAttachment:
    filename: str  # a safe display name (maild.mail.parse.safe_filename)
    content_type: str
    data: bytes


def _qp(body: str) -> bytes:
    data = body.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


def _part_head(subtype: str) -> bytes:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode("ascii")


def compose(mail: Outgoing) -> bytes:
    """The wire bytes (CRLF) of `mail`."""
    if _safe_id(mail.message_id) is None:
        raise PermanentError(f"bad Message-ID {mail.message_id!r}")
    headers: list[tuple[str, str]] = [
        ("From", _addr(mail.sender)),
        ("To", ", ".join(_addr(a) for a in mail.to)),
        *([("Cc", ", ".join(_addr(a) for a in mail.cc))] if mail.cc else []),
        ("Subject", _text_header("Subject", mail.subject)),
        ("Date", format_datetime(mail.date)),
        ("Message-ID", mail.message_id),
    ]
    if mail.reply_to is not None:
        headers.append(("Reply-To", _addr(mail.reply_to)))
    if (irt := _safe_id(mail.in_reply_to)) is not None:
        headers.append(("In-Reply-To", irt))
    refs = [r for r in (_safe_id(x) for x in mail.references) if r]
    if refs:
        headers.append(("References", " ".join(refs[-20:])))
    headers += [
        ("Auto-Submitted", mail.auto_submitted),
        ("X-Auto-Response-Suppress", "All"),
        ("Precedence", "bulk"),
        (LOOP_HEADER, mail.loop_domain),
    ]
    if mail.language and re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]{1,8})*", mail.language):
        headers.append(("Content-Language", mail.language))
    headers.append(("MIME-Version", "1.0"))
    out = [f"{name}: {_fold(len(name) + 2, value) if name in _ADDRESS_HEADERS else value}\r\n"
           for name, value in headers]  # fmt: skip
    body = _text_entity(mail)
    if mail.attachments:
        boundary = f"=_maild_mixed_{uuid.uuid4().hex}"
        sep = f"--{boundary}\r\n".encode("ascii")
        parts = [sep, body, b"\r\n"]
        for att in mail.attachments:
            parts += [sep, _attachment_entity(att), b"\r\n"]
        body = b"".join((
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode("ascii"),
            b"This is a multi-part message in MIME format.\r\n\r\n", *parts,
            f"--{boundary}--\r\n".encode("ascii"),
        ))  # fmt: skip
    raw = "".join(out).encode("ascii") + body
    _check_header_block(raw, {name.lower() for name, _ in headers} | _MIME_HEADERS)
    return raw


def _text_entity(mail: Outgoing) -> bytes:
    """The readable part, with its own Content-Type: text/plain, or alternatives."""
    if mail.html is None and mail.calendar is None:
        return _part_head("plain") + _qp(mail.text)
    boundary = f"=_maild_{uuid.uuid4().hex}"
    sep = f"--{boundary}\r\n".encode("ascii")
    parts = [sep, _part_head("plain"), _qp(mail.text), b"\r\n"]
    if mail.html is not None:
        parts += [sep, _part_head("html"), _qp(mail.html), b"\r\n"]
    if mail.calendar is not None:  # last: the richest alternative (RFC 6047)
        parts += [
            sep,
            b'Content-Type: text/calendar; charset="utf-8"; method=REQUEST\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n",
            base64.encodebytes(mail.calendar).replace(b"\n", b"\r\n"),
            b"\r\n",
        ]
    return b"".join((
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode("ascii"),
        b"This is a multi-part message in MIME format.\r\n\r\n", *parts,
        f"--{boundary}--\r\n".encode("ascii"),
    ))  # fmt: skip


_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def _filename_params(name: str) -> tuple[str, str]:
    """(Content-Type name=..., Content-Disposition filename...) for `name`.

    ASCII names are quoted strings; others are RFC 2231 (filename*=utf-8''...)
    with an RFC 2047 name= for clients that know only that.
    """
    name = clean_header_text(name, 200).replace("\\", "_").replace('"', "_") or "attachment"
    if name.isascii():
        return f'name="{name}"', f'filename="{name}"'
    encoded = quote(name.encode("utf-8"), safe="")
    if len(encoded) <= 60:
        return f'name="{encode_words(name)}"', f"filename*=utf-8''{encoded}"
    pieces: list[str] = []  # RFC 2231 continuations, never splitting a %XX
    while encoded:
        cut = min(60, len(encoded))
        while cut < len(encoded) and "%" in encoded[cut - 2 : cut]:
            cut -= 1
        pieces.append(encoded[:cut])
        encoded = encoded[cut:]
    first = f"filename*0*=utf-8''{pieces[0]}"
    rest = [f"filename*{i}*={piece}" for i, piece in enumerate(pieces[1:], start=1)]
    return f'name="{encode_words(name)}"', ";\r\n ".join([first, *rest])


def _attachment_entity(att: OutgoingAttachment) -> bytes:
    ctype = att.content_type.lower().strip()
    if not _CONTENT_TYPE.match(ctype) or ctype.startswith(("multipart/", "message/")):
        ctype = "application/octet-stream"  # a container type would need a body of parts
    name_param, filename_param = _filename_params(att.filename)
    head = (f"Content-Type: {ctype};\r\n {name_param}\r\n"
            f"Content-Disposition: attachment;\r\n {filename_param}\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n")  # fmt: skip
    return head.encode("ascii") + base64.encodebytes(att.data).replace(b"\n", b"\r\n")


_ADDRESS_HEADERS = frozenset({"From", "To", "Cc", "Reply-To", "References"})
_MIME_HEADERS = {"content-type", "mime-version", "content-transfer-encoding"}


def _check_header_block(raw: bytes, allowed: set[str]) -> None:
    head = raw.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue
        name = line.split(b":", 1)[0].decode("ascii", "replace").lower()
        if name not in allowed or b"\n" in line or b"\r" in line:
            raise PermanentError(f"composed mail has an unexpected header line: {line[:80]!r}")
