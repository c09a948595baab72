"""Rate limits and alerts for automatic mail: the loop breaker (DESIGN §5).

`Applier.queue_notice` is the one place automatic mail is queued, and it asks
`AutoreplyGuard.screen` first. A notice is suppressed when

- every recipient's address hard-bounced (`contact.bounce_state = "hard"`,
  for ``outgoing.hard_bounce_days``; a bounce marks an address only through
  its VERP return path, `maild.pipeline.decide`);
- the mail that triggered it came from a source (client IPv4 address or IPv6
  /64: `maild.mail.trace.client_source`) that already triggered
  ``limits.autoreply_per_source_per_hour`` automatic mails in the last hour:
  one source may not spray acknowledgements over many addresses, nor trip
  the global breaker; it is dropped, and the tier-1 group told once an hour.

A notice is held back, and sent later as one digest per address
(`send_digests`, a sweep, once that address has room again), when

- a recipient already got ``limits.autoreply_per_address_per_hour``
  automatic mails in the last hour *triggered from the same source* (mail
  from elsewhere cannot use up a person's allowance: ten forgeries "from"
  someone do not withhold their own acknowledgement), or the ticket
  ``autoreply_per_ticket_per_10_minutes`` in the last ten minutes (a loop,
  most likely): the ticket is flagged ``loop_suspected`` and the tier-1
  group (``tiers.tier1``) is told once;
- ``autoreply_global_per_hour`` automatic mails left in the last hour (the
  global breaker): alerted once per hour.

Mail to agents (internal notices, and these alerts, each sent once per
cause) is never limited, and alerts are never counted; nor is a person's
reply relayed by maild (``Auto-Submitted: no``: an agent's answer by mail).
Every mail that does go out is logged in ``autoreply_log``, one row per
recipient (watchers in Cc count per address, not per ticket), with its
source. DB only, the clock comes in as "now".
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.orm import Session

from maild.config.settings import Settings
from maild.mail.parse import Address
from maild.mail.phrases import Phrase
from maild.pipeline.decision import Notice
from maild.store.db import Direct
from maild.store.models import AutoreplyLog, Contact
from maild.store.states import Visibility

log = logging.getLogger(__name__)

ALERT_KIND = "alert"
DIGEST_KIND = "digest"


@dataclass(frozen=True)
class Refusal:
    reason: str
    loop: bool  # flag the ticket as a suspected loop
    alert_key: str | None = None  # autoreply_log kind/address that says "already alerted"
    hold: bool = False  # keep it for the digest (held_notice)


# Built once (the hot path of every acknowledgement): one round trip for the
# counts, each an index range scan. Alert rows are counted too: there is at
# most one per hour and cause, which the limits can bear.
_INSERT_LOG = Direct(insert(AutoreplyLog))
_HARD = select(Contact.email).where(
    Contact.email.in_(bindparam("emails", expanding=True)),
    Contact.bounce_state == "hard",
    Contact.bounced_at > bindparam("hard_since"),
)
_SAME_SOURCE = AutoreplyLog.source.is_not_distinct_from(bindparam("source"))
_PER_ADDRESS = (
    select(AutoreplyLog.address, func.count())
    .where(
        AutoreplyLog.address.in_(bindparam("emails", expanding=True)),
        AutoreplyLog.at > bindparam("hour_ago"),
        _SAME_SOURCE,
    )
    .group_by(AutoreplyLog.address)
)


@functools.cache
def _counts(n: int) -> Direct:
    """The five counts for `n` addresses (one statement per count, run directly)."""
    keys = [bindparam(f"e{i}") for i in range(n)]
    return Direct(
        select(
            select(func.count())
            .select_from(Contact)
            .where(
                Contact.email.in_(keys),
                Contact.bounce_state == "hard",
                Contact.bounced_at > bindparam("hard_since"),
            )
            .scalar_subquery(),
            select(func.count())
            .select_from(AutoreplyLog)
            .where(AutoreplyLog.at > bindparam("hour_ago"))
            .scalar_subquery(),
            select(func.count())
            .select_from(AutoreplyLog)
            .where(
                AutoreplyLog.ticket_id == bindparam("ticket_id"),
                AutoreplyLog.at > bindparam("ten_ago"),
            )
            .scalar_subquery(),
            select(func.count())
            .select_from(AutoreplyLog)
            .where(
                AutoreplyLog.address.in_(keys),
                AutoreplyLog.at > bindparam("hour_ago"),
                _SAME_SOURCE,
            )
            .group_by(AutoreplyLog.address)
            .order_by(func.count().desc())
            .limit(1)
            .scalar_subquery(),
            select(func.count())
            .select_from(AutoreplyLog)
            .where(
                AutoreplyLog.source == bindparam("source"),
                AutoreplyLog.at > bindparam("hour_ago"),
            )
            .scalar_subquery(),
        )
    )


class AutoreplyGuard:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def screen(
        self, session: Session, ticket_id: int, notice: Notice, now: datetime,
        source: str | None = None,
    ) -> tuple[Notice, Refusal | None]:  # fmt: skip
        """The notice to send (undeliverable recipients removed), or why not.

        `source`: the client network of the mail that triggered it (None: a
        sweep, an agent's action, the command line).
        """
        if notice.kind == ALERT_KIND or notice.visibility == Visibility.INTERNAL:
            return notice, None  # to our own agents: screening stops their auto-replies
        if notice.auto_submitted == "no":
            return notice, None  # a person's reply (an agent's, relayed): not automatic mail
        conn = session.connection()
        emails = [a.email for a in notice.to]
        lim = self.settings.limits
        hour_ago = now - timedelta(hours=1)
        hard_since = now - timedelta(days=self.settings.outgoing.hard_bounce_days)
        params = {f"e{i}": email for i, email in enumerate(emails)}
        params.update(hour_ago=hour_ago, ticket_id=ticket_id, ten_ago=now - timedelta(minutes=10),
                      hard_since=hard_since, source=source)  # fmt: skip
        hard_count, total, recent, most, from_source = _counts(len(emails)).one(session, params)
        if hard_count:
            hard = set(conn.execute(_HARD, {"emails": emails, "hard_since": hard_since}).scalars())
            notice = replace(notice, to=tuple(a for a in notice.to if a.email not in hard))
            if not notice.to:
                return notice, Refusal(Phrase("alert.hard_bounced", addresses=", ".join(sorted(hard))),
                                       loop=False)  # fmt: skip
            emails = [a.email for a in notice.to]
        if source is not None and from_source >= lim.autoreply_per_source_per_hour:
            return notice, Refusal(
                Phrase("alert.per_source", count=from_source, source=source),
                loop=False,
                alert_key=source,
            )
        if total >= lim.autoreply_global_per_hour:
            return notice, Refusal(
                Phrase("alert.breaker", count=total, limit=lim.autoreply_global_per_hour),
                loop=True,
                alert_key="alert_breaker",
                hold=True,
            )
        if recent >= lim.autoreply_per_ticket_per_10_minutes:
            return notice, Refusal(
                Phrase("alert.per_ticket", count=recent),
                loop=True,
                hold=True,
            )
        if (most or 0) < lim.autoreply_per_address_per_hour:
            return notice, None
        per_address = {"emails": emails, "hour_ago": hour_ago, "source": source}
        for address, sent in conn.execute(_PER_ADDRESS, per_address):
            if sent >= lim.autoreply_per_address_per_hour:
                return notice, Refusal(
                    Phrase("alert.per_address_from", count=sent, address=address, source=source)
                    if source
                    else Phrase("alert.per_address", count=sent, address=address),
                    loop=True,
                    alert_key=address,
                    hold=True,
                )
        return notice, None

    def record(
        self, session: Session, ticket_id: int | None, to: tuple[Address, ...], kind: str,
        now: datetime, source: str | None = None,
    ) -> None:  # fmt: skip
        if kind == ALERT_KIND or not to:
            return
        for a in to:
            params = {"address": a.email, "ticket_id": ticket_id, "at": now, "kind": kind[:32],
                      "source": source}  # fmt: skip
            _INSERT_LOG.execute(session, params).close()

    def should_alert(
        self, session: Session, ticket_id: int, refusal: Refusal, now: datetime, was_flagged: bool
    ) -> bool:
        """Alert once: per ticket (the flag), per looping address, source or breaker per hour."""
        if refusal.alert_key is None:
            return not was_flagged
        kind = "alert_breaker" if refusal.alert_key == "alert_breaker" else "alert_loop"
        address = "*" if kind == "alert_breaker" else refusal.alert_key
        already = session.scalar(
            select(func.count())
            .select_from(AutoreplyLog)
            .where(
                AutoreplyLog.kind == kind,
                AutoreplyLog.address == address,
                AutoreplyLog.at > now - timedelta(hours=1),
            )
        )
        if already:
            return False
        params = {"address": address, "ticket_id": ticket_id, "at": now, "kind": kind,
                  "source": None}  # fmt: skip
        _INSERT_LOG.execute(session, params).close()
        return True


def alert_notice(
    settings: Settings, headline: str, details: list[str], advice: str
) -> Notice | None:
    """An internal notice to the tier-1 group, ``tiers.tier1`` (None when it is not set)."""
    to = tuple(Address("", a.lower()) for a in settings.tiers.tier1)
    if not to:
        return None
    return Notice(
        template="alert",
        to=to,
        kind=ALERT_KIND,
        auto_submitted="auto-generated",
        context={"headline": headline, "details": details, "advice": advice},
        language=settings.tiers.language,
        visibility=Visibility.INTERNAL,
    )
