"""Screening (DESIGN §5): is this mail from a person, or from a machine?

Each rule is a plain function ``(msg, envelope, settings) -> reason | None``,
listed in order in `SCREENS` with the verdict it gives. The first rule that
answers decides. Rules never look at the database: whether the mail refers to
a ticket is the correlator's business.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from maild.config import Settings
from maild.parse import ParsedMessage

LOOP_HEADER = "X-Maild-Loop"


class Verdict(StrEnum):
    PERSON = "person"  # an ordinary message: may open or update a ticket
    OWN_LOOP = "own_loop"  # our own mail came back: drop
    BOUNCE = "bounce"  # a delivery report: record on its ticket, never a new ticket
    AUTOMATED = "automated"  # an auto-reply or bulk mail: no ack, no reopen


@dataclass(frozen=True)
class Envelope:
    """What the transport told us besides the bytes."""

    mail_from: str | None  # "" for the null reverse-path, None when unknown
    recipient: str | None


@dataclass(frozen=True)
class Screening:
    verdict: Verdict
    reason: str


Rule = Callable[[ParsedMessage, Envelope, Settings], str | None]

_OOO_SUBJECT = re.compile(
    r"^\s*(?:(?:re|aw|vs|sv)\s*:\s*)*"
    r"(?:auto(?:matic)?[ -]?reply|autoreply|automatic response|out of (?:the )?office"
    r"|automaattinen vastaus|poissa toimistolta|lomavastaaja|abwesenheitsnotiz"
    r"|automatische antwort|r[ée]ponse automatique|absence du bureau|frånvaro"
    r"|autosvar|fraværsmelding|respuesta autom[aá]tica|risposta automatica)",
    re.IGNORECASE,
)
_DAEMON_LOCALPARTS = frozenset({"mailer-daemon", "postmaster", "mail-daemon"})


def _domain_of_id(message_id: str | None) -> str:
    if not message_id:
        return ""
    return message_id.strip("<>").rpartition("@")[2].lower()


def is_own_loop(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    domain = settings.helpdesk.domain.lower()
    for value in msg.headers.get(LOOP_HEADER.lower(), ()):
        if value.strip().lower() == domain:
            return f"carries our loop header {LOOP_HEADER}: {domain}"
    if _domain_of_id(msg.message_id) == domain:
        return f"Message-ID {msg.message_id} is one of ours"
    return None


def is_bounce(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    if msg.content_type == "multipart/report":
        return "delivery report (multipart/report)"
    if env.mail_from is not None and env.mail_from.strip("<> ") == "":
        return "null return path"
    if msg.header("x-failed-recipients"):
        return "X-Failed-Recipients present"
    sender = msg.sender.email if msg.sender else ""
    if sender.partition("@")[0] in _DAEMON_LOCALPARTS:
        return f"sent by {sender}"
    return None


def is_auto_reply(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    auto = msg.header("auto-submitted")
    if auto is not None:
        token = auto.split(";")[0].strip().lower()
        if token != "no":
            return f"Auto-Submitted: {token or '(empty)'}"
    for name in ("x-autoreply", "x-autorespond", "x-auto-response-suppress"):
        if msg.header(name) is not None:
            return f"{name} present"
    precedence = (msg.header("precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"Precedence: {precedence}"
    if msg.header("list-id") is not None or msg.header("list-unsubscribe") is not None:
        return "mailing-list mail"
    if _OOO_SUBJECT.match(msg.subject):
        return f"out-of-office subject: {msg.subject[:60]!r}"
    return None


SCREENS: tuple[tuple[Verdict, Rule], ...] = (
    (Verdict.OWN_LOOP, is_own_loop),
    (Verdict.BOUNCE, is_bounce),
    (Verdict.AUTOMATED, is_auto_reply),
)


def screen(msg: ParsedMessage, env: Envelope, settings: Settings) -> Screening:
    for verdict, rule in SCREENS:
        reason = rule(msg, env, settings)
        if reason:
            return Screening(verdict, reason)
    return Screening(Verdict.PERSON, "")
