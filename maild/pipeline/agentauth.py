"""Who may change a ticket by mail: authentication of agent replies (pure).

A reply runs commands only when all of these hold:

1. it came to a personal reply address (`maild.mail.replyaddr`) whose signature
   is ours, that has not expired, issued for this ticket to this agent;
2. its From, parsed strictly, is exactly that agent's directory address:
   one From field, one mailbox, a plain ASCII address, no address-like
   display name, no Sender of someone else (so no IDN or homoglyph
   look-alike, display-name trick or second address gets through);
3. with ``agent_mail.require_authentication_results``, a DKIM or DMARC pass
   for the agent's domain in the Authentication-Results header that one of
   ``trusted_authserv_ids`` wrote (RFC 8601). Only the top-most such header,
   and only above the ``trusted_hops``-th Received header (the one our
   border server adds), counts: a header claiming a trusted authserv-id
   further down came from outside, where anyone can write one, and is
   ignored (and named in the refusal).

Anything else from (or imitating) an agent, or sent to a reply address, is
stored as an internal note, changes nothing, and the agents concerned are
told why at their directory address, never at the From.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from email.header import decode_header, make_header

from maild.addresses import is_valid_address, normalize_address
from maild.config.settings import Settings
from maild.mail.parse import ParsedMessage
from maild.mail.phrases import Phrase
from maild.mail.replyaddr import ReplyToken
from maild.mail.trace import UNTRUSTED_RESULTS, authserv_id, parse_authentication_results
from maild.pipeline.directory import EMPTY, AgentEntry, Directory

_QUOTED_DISPLAY = re.compile(r'^"(?:[^"\\]|\\.)*"$')
_PLAIN_DISPLAY = re.compile(r'^[^,;:<>@"()\\\[\]]*$')
_RENAMED = UNTRUSTED_RESULTS.decode("ascii").lower()


@dataclass(frozen=True)
class AgentCheck:
    """What the pipeline concluded about a mail on the agents' channel."""

    agent: AgentEntry | None  # the authenticated agent, or the one it claims to be
    authenticated: bool
    reasons: tuple[str, ...] = ()  # why not, in words for the agent
    tell: tuple[AgentEntry, ...] = field(default=())  # who hears about a refusal


# --- From, strictly ----------------------------------------------------------------------


def _decoded(text: str) -> str:
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # an undecodable encoded-word: judge the raw text
        return text


def strict_from(msg: ParsedMessage) -> tuple[str | None, str]:
    """The one plain address of the From field, or (None, why it is not acceptable)."""
    values = msg.headers.get("from", ())
    if len(values) != 1:
        return None, Phrase("auth.from_count", count=len(values))
    value = values[0].strip()
    if "<" in value or ">" in value:
        m = re.fullmatch(r"(?P<display>[^<>]*)<(?P<addr>[^<>]*)>", value)
        if m is None:
            return None, Phrase("auth.from_many")
        display, addr = m.group("display").strip(), m.group("addr").strip()
        if display and not (_QUOTED_DISPLAY.match(display) or _PLAIN_DISPLAY.match(display)):
            return None, Phrase("auth.from_malformed")
        shown = _decoded(display)
        if "@" in shown or "<" in shown or ">" in shown:
            return None, Phrase("auth.from_poses", name=shown)
    else:
        addr = value
        if "," in addr or ";" in addr:
            return None, Phrase("auth.from_many")
        if not re.fullmatch(r"[^\s,;:()\"<>]+", addr):
            return None, Phrase("auth.from_not_plain")
    if not is_valid_address(addr):
        return None, Phrase("auth.from_not_ascii", address=addr)
    email = normalize_address(addr)
    senders = msg.headers.get("sender", ())
    for sender in senders:
        m = re.search(r"<([^<>]*)>", sender)
        other = normalize_address(m.group(1) if m else sender)
        if other != email:
            return None, Phrase("auth.on_behalf", other=other)
    return email, ""


# --- Authentication-Results (RFC 8601) ------------------------------------------------------


def _aligned(domain: str, other: str) -> bool:
    other = other.lstrip("@").rpartition("@")[2]
    return bool(other) and (
        other == domain or domain.endswith("." + other) or other.endswith("." + domain)
    )


def authentication_results(msg: ParsedMessage, settings: Settings, email: str) -> tuple[bool, str]:
    """Whether a trusted server vouches for `email`'s domain; else why not."""
    am = settings.agent_mail
    trusted = {a.lower() for a in am.trusted_authserv_ids}
    domain = email.rpartition("@")[2]
    hops = 0
    counted: set[str] = set()
    outside = []
    verdicts = []
    for name, value in msg.fields():
        if name == "received":
            hops += 1
            continue
        if name == _RENAMED and authserv_id(value) in trusted:
            outside.append(authserv_id(value))  # renamed at intake (maild.mail.trace)
            continue
        if name != "authentication-results":
            continue
        authserv, results = parse_authentication_results(value)
        if authserv not in trusted:
            continue
        if hops >= am.trusted_hops or authserv in counted:
            outside.append(authserv)
            continue
        counted.add(authserv)
        for r in results:
            if r.method not in am.authentication_methods or r.result != "pass":
                continue
            if r.method == "dkim" and _aligned(domain, r.props.get("header.d", "")):
                return True, ""
            if r.method == "dmarc" and _aligned(domain, r.props.get("header.from", domain)):
                return True, ""
        verdicts.append(", ".join(f"{r.method}={r.result}" for r in results) or "no results")
    if verdicts:
        why = Phrase("auth.no_pass", methods="/".join(am.authentication_methods).upper(),
                     domain=domain, verdicts="; ".join(verdicts))  # fmt: skip
    else:
        why = Phrase("auth.missing")
    if outside:
        why = Phrase("auth.both", first=why, second=Phrase("auth.outside", authserv=outside[0]))
    return False, why


# --- the verdict ---------------------------------------------------------------------------


def check(
    msg: ParsedMessage,
    token: ReplyToken | None,
    directory: Directory | None,
    settings: Settings,
    *,
    ticket_id: int | None,
    requester: str | None,
    now: datetime,
) -> AgentCheck | None:
    """None when the mail does not concern the agents' channel: no reply address,
    and not from (or imitating) an agent. Else whether it may run commands."""
    directory = directory or EMPTY
    sender = msg.sender.email if msg.sender else ""
    claimed = directory.by_email(sender)
    lookalike = directory.lookalike(sender) if claimed is None else None
    owner = directory.by_id(token.agent) if token is not None and token.valid else None
    if token is None and claimed is None and lookalike is None:
        return None
    if token is None and sender and sender == requester:
        return None  # an agent who is the requester of this ticket writes as a requester
    reasons: list[str] = []
    if token is None:
        reasons.append(Phrase("auth.not_personal"))
    elif not token.valid:
        reasons.append(Phrase("auth.bad_signature"))
    else:
        if token.expired(now):
            reasons.append(Phrase("auth.expired", expires=token.expires))
        if ticket_id is not None and token.ticket != ticket_id:
            reasons.append(Phrase("auth.other_ticket", ticket=token.ticket))
        if owner is None:
            reasons.append(Phrase("auth.gone_agent"))
    if lookalike is not None:
        reasons.append(Phrase("auth.lookalike", sender=sender, agent=lookalike.email))
    elif claimed is None and sender:
        reasons.append(Phrase("auth.not_agent", sender=sender))
    if owner is not None and claimed is not None and owner.id != claimed.id:
        reasons.append(Phrase("auth.owner", owner=owner.email, claimed=claimed.email))
    strict, why = strict_from(msg)
    if why:
        reasons.append(why)
    elif claimed is not None and strict != claimed.email:
        reasons.append(Phrase("auth.from_mismatch", address=strict, claimed=claimed.email))
    if not reasons and claimed is not None and settings.agent_mail.check_authentication_results:
        ok, why = authentication_results(msg, settings, claimed.email)
        if not ok:
            reasons.append(why)
    if not reasons and claimed is not None:
        return AgentCheck(claimed, True)
    tell: dict[int, AgentEntry] = {}
    for agent in (claimed, lookalike, owner):
        if agent is not None:
            tell.setdefault(agent.id, agent)
    return AgentCheck(claimed or lookalike or owner, False, tuple(reasons), tuple(tell.values()))
