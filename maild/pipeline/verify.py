"""Is this mail from the person its From names? What maild can verify (pure).

A ``From`` line proves nothing: anyone can write any. A sender is verified,
for the ticket a message goes to, by one of

1. **their reply address**: the message was delivered to the reply address
   maild gave that very address on that ticket (`maild.mail.replyaddr`:
   the token signs the ticket and the From address), not expired;
2. **a reference**: its ``In-Reply-To``/``References`` name a Message-ID of
   mail maild sent *to that address* (on that ticket): only its recipients
   (and whoever they forwarded it to) know that random identifier;
3. **their domain's signature**: a DKIM pass for the From domain or a DMARC
   pass, in the ``Authentication-Results`` a trusted mail server of ours
   wrote (`maild.pipeline.agentauth.authentication_results`: the same
   ``agent_mail.trusted_authserv_ids`` and ``trusted_hops``).

What unverified mail may not do is the desk's business (`maild.pipeline.decide`):
it may add text, marked as unverified, but it changes no watcher, status or
address, and nobody is told anything but the agents.

A **monitor** (a From of ``alerts.senders``) is verified by where its mail
came from, never by its From (`verify_monitor`): the client maild's
outermost trusted hop recorded lies in one of ``alerts.source_networks``, or
its domain's signature as above. Unverified, its mail is no alert: it is
ordinary mail from whoever wrote it (`maild.pipeline.alerts.from_monitor`).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from datetime import datetime

from maild.addresses import network_key
from maild.config.settings import Settings
from maild.mail.parse import ParsedMessage
from maild.mail.trace import client_source
from maild.pipeline.agentauth import authentication_results, strict_from
from maild.pipeline.correlate import Facts

REPLY_ADDRESS = "reply-address"
REFERENCES = "references"
SIGNATURE = "authentication-results"
SOURCE_NETWORK = "source-network"  # a monitor's mail, from one of alerts.source_networks
UNVERIFIED = "none"


@dataclass(frozen=True)
class Trust:
    verified: bool
    how: str  # REPLY_ADDRESS | REFERENCES | SIGNATURE | SOURCE_NETWORK | UNVERIFIED
    why: str = ""  # why not, in words for the agents

    @property
    def label(self) -> str:
        """What the article records (`maild.store.models.Article.verified_by`)."""
        return self.how


def verify_sender(
    msg: ParsedMessage,
    facts: Facts,
    settings: Settings,
    *,
    sender: str,
    ticket_id: int | None,
    now: datetime,
) -> Trust:
    """Whether `sender` (the From address) is verified for ticket `ticket_id`
    (None: a new ticket; a reference to our mail to them on any ticket counts)."""
    if not sender:
        return Trust(False, UNVERIFIED, "the mail has no From address")
    token = facts.requester_token
    if (token is not None and token.valid and not token.expired(now)
            and (ticket_id is None or token.ticket == ticket_id)):  # fmt: skip
        return Trust(True, REPLY_ADDRESS)
    for mid in msg.thread_ids():
        recipients = facts.sent_to.get(mid)
        if (recipients and sender in recipients
                and (ticket_id is None or facts.known_ids.get(mid) == ticket_id)):  # fmt: skip
            return Trust(True, REFERENCES)
    if settings.agent_mail.trusted_authserv_ids:
        ok, why = _signed(msg, settings, sender)
        if ok:
            return Trust(True, SIGNATURE)
        return Trust(False, UNVERIFIED, f"{why}; and it neither came to {sender}'s reply "
                     "address nor answers a mail maild sent to it")  # fmt: skip
    why = (f"it neither came to {sender}'s reply address nor answers a mail maild sent to it, "
           "and no mail server of ours vouches for its From")  # fmt: skip
    if token is not None and not token.valid:
        why = f"its reply address was not issued to {sender}; " + why
    elif token is not None and token.expired(now):
        why = f"its reply address expired on {token.expires:%Y-%m-%d}; " + why
    return Trust(False, UNVERIFIED, why)


def verify_monitor(msg: ParsedMessage, settings: Settings) -> Trust:
    """Whether a mail whose From names a monitor came from it: the client maild's
    outermost trusted hop recorded is in ``alerts.source_networks``, or a trusted
    mail server vouches for the From domain (DKIM/DMARC, as `verify_sender`)."""
    sender = msg.sender.email if msg.sender else ""
    reasons = []
    networks = _networks(settings.alerts.source_networks)
    if networks:
        source = client_source(list(msg.headers.get("received", ())),
                               settings.agent_mail.trusted_hops)  # fmt: skip
        if source is not None and _inside(source, networks):
            return Trust(True, SOURCE_NETWORK)
        reasons.append(f"it came from {source}, outside alerts.source_networks" if source
                       else "no hop of ours recorded where it came from")  # fmt: skip
    if settings.agent_mail.trusted_authserv_ids:
        ok, why = _signed(msg, settings, sender)
        if ok:
            return Trust(True, SIGNATURE)
        reasons.append(why)
    return Trust(False, UNVERIFIED, "; ".join(reasons) or "maild has no way to verify a monitor")


def _signed(msg: ParsedMessage, settings: Settings, sender: str) -> tuple[bool, str]:
    """A trusted mail server of ours vouches for `sender`'s domain (DKIM/DMARC in
    its Authentication-Results), and the From is plainly `sender`; else why not."""
    strict, why = strict_from(msg)
    if why or strict != sender:
        return False, why or f"its From is not plainly {sender}"
    return authentication_results(msg, settings, sender)


@functools.lru_cache(maxsize=4096)  # per message that queues mail; sources repeat
def _inside(
    source: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    """`source` (a `network_key`: an address, or an IPv6 /64) lies in one of `networks`."""
    try:
        net = ipaddress.ip_network(source, strict=False)
    except ValueError:
        return False
    return any(net.version == n.version and net.subnet_of(n) for n in networks)  # type: ignore[arg-type]


def message_source(msg: ParsedMessage, settings: Settings) -> str | None:
    """The client network a message came from, as the per-source limits count
    it: the client our outermost trusted hop recorded (``agent_mail.trusted_hops``,
    maild's own Received line counted); None when unknown, or one of
    ``limits.autoreply_unlimited_sources``."""
    source = client_source(list(msg.headers.get("received", ())), settings.agent_mail.trusted_hops)
    if source is None:
        return None
    unlimited = _networks(settings.limits.autoreply_unlimited_sources)
    if unlimited and _inside(source, unlimited):
        return None
    return source


@functools.cache
def _networks(values: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(network_key(v.split("/")[0]) if "/" not in v else v,
                                      strict=False) for v in values)  # fmt: skip
