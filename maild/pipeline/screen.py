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

from maild.addresses import ServedAddresses
from maild.config.settings import Settings
from maild.mail.compose import LOOP_HEADER
from maild.mail.parse import ParsedMessage
from maild.mail.verp import is_verp_address


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
    to: tuple[str, ...] = ()  # every envelope recipient, plus tags kept


@dataclass(frozen=True)
class Screening:
    verdict: Verdict
    reason: str


Rule = Callable[[ParsedMessage, Envelope, Settings], str | None]

_REPLY_PREFIX = r"^\s*(?:(?:re|aw|vs|sv|antw|odp|r|ref|fw|fwd|wg|vl)\s*(?:\[\d+\])?\s*:\s*)*"
# Out-of-office subjects as responders write them: the phrase first, then a
# colon (and the original subject) or nothing; "Out of office not working"
# is a person asking for help and stays a person.
_OOO_SUBJECT = re.compile(
    _REPLY_PREFIX + r"(?:"
    r"auto(?:matic|matische|matisk|matiskt|maattinen|maatne|matyczna)?[ -]?(?:reply|response"
    r"|antwort|antwoord|svar|vastaus|odpowied[zź])"
    r"|autoreply|autosvar|automaattinen vastaus|out of (?:the )?office(?: autoreply)?"
    r"|away from (?:the |my )?office|on vacation|vacation (?:reply|notice)|auto-reply"
    r"|poissa toimistolta|poissaoloviesti|lomavastaaja|lomalla|poissa"
    r"|abwesenheitsnotiz|abwesend|abwesenheit|r[ée]ponse automatique|absence du bureau"
    r"|absent(?:e)? du bureau|fr[åa]nvaro|fr[åa]nvarande|ikke til stede|frav[æa]rsmelding"
    r"|afwezig(?:heid)?|respuesta autom[aá]tica|fuera de la oficina|risposta automatica"
    r"|fuori sede|fuori ufficio|resposta autom[aá]tica|aus[êe]ncia|poza biurem"
    r"|odpowied[zź] automatyczna|automatisch antwoord)"
    r"\s*(?::|$|\(|\[)",
    re.IGNORECASE,
)
# Lotus Notes and Domino write "<Name> is out of the office." and nothing else.
_OOO_NOTES = re.compile(
    r"\b(?:is out of (?:the )?office|est absent(?:e|\(e\))? du bureau|ist au(?:ß|ss)er haus"
    r"|ist nicht im b(?:ü|ue)ro|on poissa)\.?\s*$",
    re.IGNORECASE,
)
_NOREPLY_LOCAL = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|dont[-_.]?reply|no[-_.]?response|noreply"
    r"|bounces?|mailer[-_.]?daemon)(?:$|[-_.+])",
    re.IGNORECASE,
)
_COMMENT = re.compile(r"\([^()]*\)")
_DAEMON_LOCALPARTS = frozenset(
    {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon", "mdaemon", "ndr"}
)
_DAEMON_NAMES = re.compile(
    r"^(?:mailer[- ]?daemon|postmaster|mail delivery (?:system|subsystem)|system administrator)$",
    re.IGNORECASE,
)
_FORWARD_PREFIX = re.compile(r"^\s*(?:fwd?|fw|vs|wg|tr|vl|i)\s*:", re.IGNORECASE)
_BATV = re.compile(r"^(?:prvs|btv1|msprvs1)=[^=]+=", re.IGNORECASE)


def _local(address: str) -> str:
    """The local part of an address, without a BATV tag (prvs=1234=ndr@ -> ndr)."""
    return _BATV.sub("", address.strip().strip("<>").partition("@")[0]).lower()


def _domain_of_id(message_id: str | None) -> str:
    if not message_id:
        return ""
    return message_id.strip("<>").rpartition("@")[2].lower()


def _sender(msg: ParsedMessage) -> str:
    return msg.sender.email if msg.sender else ""


def _report_type(msg: ParsedMessage) -> str:
    value = (msg.header("content-type") or "").lower()
    match = re.search(r"report-type\s*=\s*\"?([a-z0-9-]+)", value)
    return match.group(1) if match else ""


# --- our own mail -------------------------------------------------------------


def has_our_loop_header(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    domain = settings.helpdesk.domain.lower()
    for value in msg.headers.get(LOOP_HEADER.lower(), ()):
        if value.strip().lower() == domain:
            return f"carries our loop header {LOOP_HEADER}: {domain}"
    return None


def has_our_message_id(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    if _domain_of_id(msg.message_id) == settings.helpdesk.domain.lower():
        return f"Message-ID {msg.message_id} is one of ours"
    return None


def is_from_us(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    sender = _sender(msg)
    if sender and ServedAddresses.of(settings.helpdesk.addresses).serves(sender):
        return f"sent from our own address {sender}"
    return None


def is_own_loop(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """Our own mail came back: our loop header, Message-ID domain or From."""
    for rule in (has_our_loop_header, has_our_message_id, is_from_us):
        if reason := rule(msg, env, settings):
            return reason
    return None


# --- delivery reports -----------------------------------------------------------------


def is_delivery_report(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    if msg.content_type == "multipart/report" and _report_type(msg) != "disposition-notification":
        return f"delivery report (multipart/report; {_report_type(msg) or 'no report-type'})"
    return None


def has_null_return_path(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """The null reverse-path, or a MAILER-DAEMON one (RFC 5321 §4.5.5)."""
    if env.mail_from is not None and env.mail_from.strip("<> ") == "":
        return "null return path"
    if env.mail_from and _local(env.mail_from) in _DAEMON_LOCALPARTS:
        return f"return path {env.mail_from}"
    for value in msg.headers.get("return-path", ()):
        if value.strip() in ("<>", ""):
            return "null return path (Return-Path: <>)"
        if _local(value) in _DAEMON_LOCALPARTS:
            return f"Return-Path: {value.strip()[:80]}"
    return None


def is_to_our_bounce_address(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """Sent to a VERP return path of ours: a bounce, unless it is plainly an auto-reply."""
    delivered = [v.strip().strip("<>") for n in ("delivered-to", "x-original-to")
                 for v in msg.headers.get(n, ())]  # fmt: skip
    for address in (*env.to, *delivered, *(a.email for a in (*msg.to, *msg.cc))):
        if is_verp_address(address):
            failures = msg.bounce is not None and (msg.bounce.permanent or msg.bounce.temporary)
            if not failures and is_auto_reply(msg, env, settings):
                return None  # a vacation reply sent to the return path, as RFC 3834 asks
            return f"sent to our bounce address {address}"
    return None


def has_failed_recipients(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    return "X-Failed-Recipients present" if msg.header("x-failed-recipients") else None


def is_from_mailer_daemon(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    sender = _sender(msg)
    if sender and _local(sender) in _DAEMON_LOCALPARTS:
        return f"sent by {sender}"
    if not sender:  # From: Postmaster <>
        name = re.sub(r"[<>\"']", "", msg.headers.get("from", ("",))[0]).strip()
        if _DAEMON_NAMES.match(name):
            return f"sent by {name} with no address"
    return None


def is_reported_failure(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """The bounce detectors found failed recipients, and no person forwarded it."""
    report = msg.bounce
    if report is None or not (report.permanent or report.temporary):
        return None
    if _FORWARD_PREFIX.match(msg.subject):
        return None  # "Fwd: Undeliverable": a person asking why their mail bounced
    return f"reports failed delivery to {', '.join((*report.permanent, *report.temporary)[:3])}"


def is_bounce(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """A delivery report: DSN, null sender, our VERP address, MAILER-DAEMON."""
    for rule in (is_delivery_report, has_null_return_path, is_to_our_bounce_address,
                 has_failed_recipients, is_from_mailer_daemon, is_reported_failure):  # fmt: skip
        if reason := rule(msg, env, settings):
            return reason
    return None


# --- automated mail -----------------------------------------------------------------


def is_auto_submitted(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """RFC 3834: any Auto-Submitted value but "no", whatever its case, padding or comments."""
    for value in msg.headers.get("auto-submitted", ()):
        token = _COMMENT.sub(" ", value).split(";")[0].strip().strip('"').lower()
        if token != "no":
            return f"Auto-Submitted: {token or '(empty)'}"
    return None


def has_autoreply_header(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    for name in ("x-autoreply", "x-autorespond", "x-auto-response-suppress", "x-autogenerated"):
        if name in msg.headers:
            return f"{name} present"
    return None


def has_bulk_precedence(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    for value in msg.headers.get("precedence", ()):
        precedence = value.strip().lower()
        if precedence in ("bulk", "junk", "list", "auto_reply"):
            return f"Precedence: {precedence}"
    return None


def is_list_mail(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    if "list-id" in msg.headers or "list-unsubscribe" in msg.headers:
        return "mailing-list mail"
    return None


def is_read_receipt(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    if msg.content_type == "multipart/report" and _report_type(msg) == "disposition-notification":
        return "read receipt (disposition-notification)"
    return None


def is_noreply_sender(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    sender = _sender(msg)
    return f"no-reply sender {sender}" if _NOREPLY_LOCAL.match(sender.partition("@")[0]) else None


def has_out_of_office_subject(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    if _OOO_SUBJECT.match(msg.subject) or _OOO_NOTES.search(msg.subject):
        return f"out-of-office subject: {msg.subject[:60]!r}"
    return None


def is_auto_reply(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """Auto-replies and bulk mail (RFC 3834 and the headers peers rely on)."""
    for rule in (is_auto_submitted, has_autoreply_header, has_bulk_precedence, is_list_mail,
                 is_read_receipt, is_noreply_sender, has_out_of_office_subject):  # fmt: skip
        if reason := rule(msg, env, settings):
            return reason
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
