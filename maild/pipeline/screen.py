"""Screening (DESIGN §5): is this mail from a person, or from a machine?

Each rule is a plain function ``(msg, envelope, settings) -> reason | None``,
listed in order in `SCREENS` with the verdict it gives. The first rule that
answers decides, and the `Screening` names it (``rule``), so every ignored
message says which rule set it aside and why. Rules never look at the
database: whether the mail refers to a ticket is the correlator's business.

The phrases that give auto-replies and relay bounces away in each language
(subjects such as "Automatische Antwort:", "Réponse automatique :",
"Automātiskā atbilde:", "Unzustellbar:", "Non remis :"; out-of-office texts;
bounce texts) are data: the ``[autoreply]`` and ``[bounce]`` sections of
``maild/mail/lang/<code>.toml`` plus ``languages.directory``, compiled once
into `Recognisers`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from maild.addresses import ServedAddresses
from maild.config.settings import Settings
from maild.mail.compose import LOOP_HEADER, is_our_message_id
from maild.mail.language import fold, load_languages, phrase_pattern
from maild.mail.parse import ParsedMessage
from maild.mail.verp import is_verp_address
from maild.pipeline.correlate import subject_tag


class Verdict(StrEnum):
    PERSON = "person"  # an ordinary message: may open or update a ticket
    OWN_LOOP = "own_loop"  # our own mail came back: drop
    BOUNCE = "bounce"  # a delivery report: record on its ticket, never a new ticket
    SPAM = "spam"  # a spam filter's verdict: stored as spam, never ticketed or answered
    AUTOMATED = "automated"  # an auto-reply or bulk mail: no ack, no reopen
    LIST = "list"  # a person's mail to us through a list or group: a ticket, no ack


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
    rule: str = ""  # the name of the rule that decided ("" for a person)


Rule = Callable[[ParsedMessage, Envelope, Settings], str | None]

# Out-of-office text is looked for only this far into a message that answers ours;
# bounce text this far into a message whose subject says "undeliverable".
OOO_TEXT_CHARS = 600
BOUNCE_TEXT_CHARS = 4000
_RETURNED_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "message/rfc822-headers"})


@dataclass(frozen=True)
class Recognisers:
    """The phrase lists of every language, compiled once (see the module doc)."""

    autoreply_subject: re.Pattern[str]  # "Automatic reply: ...", after "RE:" / "AW:" ...
    autoreply_ending: re.Pattern[str]  # "Bob Smith is out of the office."
    autoreply_text: re.Pattern[str]  # "I am out of the office until ..."
    bounce_subject: re.Pattern[str]  # "Undeliverable: ...", at the very start
    bounce_text: re.Pattern[str]  # "Delivery has failed to these recipients ..."
    forward_prefix: re.Pattern[str]  # "Fwd:" "WG:" "VB:" ...


@functools.cache
def recognisers(directory: Path | None = None) -> Recognisers:
    """Compile the ``[autoreply]`` and ``[bounce]`` phrases (built-in plus `directory`).

    Raises `ConfigError` (naming the file and key) for bad language data.
    """
    langs = load_languages(directory)
    prefixes = phrase_pattern([*langs.strings("autoreply", "reply_prefixes"),
                               *langs.strings("bounce", "forward_prefixes")])  # fmt: skip
    skip = rf"^\s*(?:(?:{prefixes})\s*(?:\[\d+\])?\s*:\s*)*"
    return Recognisers(
        autoreply_subject=re.compile(
            rf"{skip}(?:{phrase_pattern(langs.strings('autoreply', 'subjects'))})"
            r"\s*(?::|$|\(|\[)"
        ),
        autoreply_ending=re.compile(
            rf"(?:^|\s)(?:{phrase_pattern(langs.strings('autoreply', 'subject_endings'))})"
            r"\.?\s*$"
        ),
        autoreply_text=re.compile(phrase_pattern(langs.strings("autoreply", "body"))),
        bounce_subject=re.compile(
            rf"^\s*(?:{phrase_pattern(langs.strings('bounce', 'subjects'))})"
        ),
        bounce_text=re.compile(phrase_pattern(langs.strings("bounce", "body"))),
        forward_prefix=re.compile(
            rf"^\s*(?:{phrase_pattern(langs.strings('bounce', 'forward_prefixes'))})\s*:"
        ),
    )


def _rec(settings: Settings) -> Recognisers:
    return recognisers(settings.languages.directory)


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
_BATV = re.compile(r"^(?:prvs|btv1|msprvs1)=[^=]+=", re.IGNORECASE)


def _local(address: str) -> str:
    """The local part of an address, without a BATV tag (prvs=1234=ndr@ -> ndr)."""
    return _BATV.sub("", address.strip().strip("<>").partition("@")[0]).lower()


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
    """A Message-ID of the shape we make, on our domain (`maild.mail.compose.new_message_id`)."""
    if is_our_message_id(msg.message_id, settings.helpdesk.domain):
        return f"Message-ID {msg.message_id} is one of ours"
    return None


def is_from_us(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    sender = _sender(msg)
    if sender and ServedAddresses.of(settings.helpdesk.addresses).serves(sender):
        return f"sent from our own address {sender}"
    return None


OWN_LOOP_RULES: tuple[Rule, ...] = (has_our_loop_header, has_our_message_id, is_from_us)


def is_own_loop(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """Our own mail came back: our loop header, Message-ID domain or From."""
    return _first(OWN_LOOP_RULES, msg, env, settings)[1]


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
    if _rec(settings).forward_prefix.match(fold(msg.subject)):
        return None  # "Fwd: Undeliverable": a person asking why their mail bounced
    return f"reports failed delivery to {', '.join((*report.permanent, *report.temporary)[:3])}"


def is_relay_bounce(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """A bounce a relay sent with a real return path: its subject says so in some
    language ("Undeliverable:", "Unzustellbar:", "Non remis :", "Toimittamaton:")
    and its text says so too, or it carries the returned message. A subject
    alone is not enough (a person may write "Undeliverable parcel")."""
    rec = _rec(settings)
    subject = fold(msg.subject)
    if not rec.bounce_subject.match(subject) or rec.forward_prefix.match(subject):
        return None
    if found := rec.bounce_text.search(fold(msg.text[:BOUNCE_TEXT_CHARS])):
        return f"bounce subject {msg.subject[:60]!r} and text {found.group(0)!r}"
    if any(a.content_type in _RETURNED_TYPES for a in msg.attachments):
        return f"bounce subject {msg.subject[:60]!r} with the returned message attached"
    return None


BOUNCE_RULES: tuple[Rule, ...] = (
    is_delivery_report, has_null_return_path, is_to_our_bounce_address, has_failed_recipients,
    is_from_mailer_daemon, is_reported_failure, is_relay_bounce,
)  # fmt: skip


def is_bounce(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """A delivery report: DSN, null sender, our VERP address, MAILER-DAEMON, a relay's."""
    return _first(BOUNCE_RULES, msg, env, settings)[1]


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
        if precedence in ("bulk", "junk", "auto_reply"):
            return f"Precedence: {precedence}"
    return None


# --- lists and groups ----------------------------------------------------------------


def _list_marks(msg: ParsedMessage) -> str | None:
    """What says a list or group distributed this mail ("List-Id: <...>", ...)."""
    for name in ("list-id", "list-post", "list-unsubscribe", "mailing-list"):
        if values := msg.headers.get(name):
            return f"{name.title()}: {values[0][:80]}"
    for value in msg.headers.get("precedence", ()):
        if value.strip().lower() == "list":
            return "Precedence: list"
    return None


_LIST_ID = re.compile(r"<([^<>\s]{1,250})>\s*$")
_MAILTO = re.compile(r"<mailto:([^<>?\s]{1,320})", re.IGNORECASE)


def addressed_to_us(msg: ParsedMessage, settings: Settings) -> str | None:
    """The served address a list or group mail is for: in To or Cc, or the list is us
    (its List-Post, or a List-Id such as Google Groups' <help.example.com>).

    The envelope alone does not count: that is what a list subscription looks like.
    """
    served = ServedAddresses.of(settings.helpdesk.addresses)
    for a in (*msg.to, *msg.cc):
        if base := served.base_of(a.email):
            return base
    for value in msg.headers.get("list-post", ()):
        for match in _MAILTO.finditer(value):
            if base := served.base_of(match.group(1)):
                return base
    for value in msg.headers.get("list-id", ()):
        if match := _LIST_ID.search(value.strip()):
            list_id = match.group(1).lower()
            for address in served.addresses:
                if address.replace("@", ".") == list_id:
                    return address
    return None


def is_list_mail(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """List traffic we receive as a subscriber: nothing in it is addressed to us."""
    marks = _list_marks(msg)
    if marks is None or addressed_to_us(msg, settings) is not None:
        return None
    return f"mailing-list mail not addressed to us ({marks})"


def is_group_mail(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """A person's mail to one of our addresses that came through a list or group
    (a Google Group, a Microsoft 365 group): a ticket, but no acknowledgement,
    which would go to the whole group. Not for `screening.group_addresses`."""
    marks = _list_marks(msg)
    if marks is None:
        return None
    to = addressed_to_us(msg, settings)
    groups = {a.lower() for a in settings.screening.group_addresses}
    if to is None or to in groups:
        return None
    return f"mail to {to} through a list or group ({marks})"


# --- spam verdicts -----------------------------------------------------------------

_YES = frozenset({"yes", "true", "spam"})
_NO = frozenset({"no", "false", "ham"})
_SPAM_ACTIONS = frozenset({"reject", "add header", "add_header", "rewrite subject",
                           "rewrite_subject", "discard", "quarantine"})  # fmt: skip
_NUMBER = r"(-?\d{1,6}(?:\.\d{1,6})?)"
_SCORE_IN_STATUS = re.compile(rf"\bscore\s*=\s*{_NUMBER}", re.IGNORECASE)
_SPAMD_RESULT = re.compile(rf"\b(true|false)\s*\[\s*{_NUMBER}\s*/", re.IGNORECASE)
_SCORE = re.compile(rf"^\s*{_NUMBER}")


def _word(value: str) -> str:
    return value.strip().split(None, 1)[0].strip(",;").lower() if value.strip() else ""


def has_spam_verdict(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """SpamAssassin's or rspamd's verdict headers say spam.

    Any yes verdict wins (a forged "No" above the real one changes nothing);
    a score counts against ``screening.spam_threshold`` only when no yes/no
    verdict is there. Safe to believe from anyone: it only holds back the
    sender's own mail.
    """
    if not settings.screening.spam_headers:
        return None
    h = msg.headers
    verdict = False
    scores: list[float] = []
    for name in ("x-spam-flag", "x-spam"):
        for value in h.get(name, ()):
            word = _word(value)
            if word in _YES:
                return f"{name.title()}: {value.strip()[:60]}"
            verdict = verdict or word in _NO
    for value in h.get("x-spam-status", ()):
        word = _word(value)
        if word in _YES:
            return f"X-Spam-Status: {value.strip()[:80]}"
        verdict = verdict or word in _NO
        if match := _SCORE_IN_STATUS.search(value):
            scores.append(float(match.group(1)))
    for value in h.get("x-spamd-result", ()):
        if match := _SPAMD_RESULT.search(value):
            if match.group(1).lower() == "true":
                return f"X-Spamd-Result: {value.strip()[:80]}"
            verdict = True
            scores.append(float(match.group(2)))
    for name in ("x-spam-action", "x-rspamd-action"):
        for value in h.get(name, ()):
            action = " ".join(value.lower().split())
            if action in _SPAM_ACTIONS:
                return f"{name.title()}: {action}"
            verdict = verdict or bool(action)
    for name in ("x-spam-score", "x-rspamd-score"):
        for value in h.get(name, ()):
            if match := _SCORE.match(value):
                scores.append(float(match.group(1)))
    threshold = settings.screening.spam_threshold
    if not verdict and threshold > 0 and scores and max(scores) >= threshold:
        return f"spam score {max(scores):g} >= screening.spam_threshold {threshold:g}"
    return None


def is_read_receipt(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    if msg.content_type == "multipart/report" and _report_type(msg) == "disposition-notification":
        return "read receipt (disposition-notification)"
    return None


def is_noreply_sender(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    sender = _sender(msg)
    return f"no-reply sender {sender}" if _NOREPLY_LOCAL.match(sender.partition("@")[0]) else None


def has_out_of_office_subject(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """An auto-responder's subject in any language of the data ("Automatische Antwort: ...")."""
    rec = _rec(settings)
    subject = fold(msg.subject)
    if rec.autoreply_subject.match(subject) or rec.autoreply_ending.search(subject):
        return f"out-of-office subject: {msg.subject[:60]!r}"
    return None


def answers_us(msg: ParsedMessage, settings: Settings) -> bool:
    """It refers to a Message-ID of ours, or carries a ticket tag [#N]."""
    domain = settings.helpdesk.domain
    ours = any(is_our_message_id(mid, domain) for mid in (*msg.in_reply_to, *msg.references))
    return ours or subject_tag(msg.subject) is not None


def has_out_of_office_text(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """An answer to our mail that opens with an out-of-office text in some language.

    Only for answers to our mail: in a new mail "I'm on holiday, but my laptop
    is broken" is a request like any other.
    """
    if not msg.text or not answers_us(msg, settings):
        return None
    if found := _rec(settings).autoreply_text.search(fold(msg.text[:OOO_TEXT_CHARS])):
        return f"out-of-office text: {found.group(0)!r}"
    return None


AUTOMATED_RULES: tuple[Rule, ...] = (
    is_auto_submitted, has_autoreply_header, has_bulk_precedence, is_list_mail, is_read_receipt,
    is_noreply_sender, has_out_of_office_subject, has_out_of_office_text,
)  # fmt: skip


def is_auto_reply(msg: ParsedMessage, env: Envelope, settings: Settings) -> str | None:
    """Auto-replies and bulk mail (RFC 3834 and the headers peers rely on)."""
    return _first(AUTOMATED_RULES, msg, env, settings)[1]


def _first(
    rules: tuple[Rule, ...], msg: ParsedMessage, env: Envelope, settings: Settings
) -> tuple[str, str | None]:
    """(name, reason) of the first rule that answers, else ("", None)."""
    for rule in rules:
        if reason := rule(msg, env, settings):
            return rule.__name__, reason
    return "", None


SPAM_RULES: tuple[Rule, ...] = (has_spam_verdict,)
LIST_RULES: tuple[Rule, ...] = (is_group_mail,)

SCREENS: tuple[tuple[Verdict, tuple[Rule, ...]], ...] = (
    (Verdict.OWN_LOOP, OWN_LOOP_RULES),
    (Verdict.BOUNCE, BOUNCE_RULES),
    (Verdict.SPAM, SPAM_RULES),
    (Verdict.AUTOMATED, AUTOMATED_RULES),
    (Verdict.LIST, LIST_RULES),
)


def screen(msg: ParsedMessage, env: Envelope, settings: Settings) -> Screening:
    for verdict, rules in SCREENS:
        name, reason = _first(rules, msg, env, settings)
        if reason:
            return Screening(verdict, reason, name)
    return Screening(Verdict.PERSON, "")
