"""Rate limits and alerts for automatic mail: the loop breaker (DESIGN §5).

`Applier.queue_notice` is the one place automatic mail is queued, and it asks
`AutoreplyGuard.screen` first. A notice is suppressed when

- every recipient's address hard-bounced (`contact.bounce_state = "hard"`);
- a recipient already got ``limits.autoreply_per_address_per_hour`` automatic
  mails in the last hour, or the ticket ``autoreply_per_ticket_per_10_minutes``
  in the last ten minutes (a loop, most likely): the ticket is flagged
  ``loop_suspected`` and the tier-1 group (``tiers.tier1``) is told once;
- ``autoreply_global_per_hour`` automatic mails left in the last hour (the
  global breaker): alerted once per hour.

Mail to agents (internal notices, and these alerts, each sent once per
cause) is never limited, and alerts are never counted; nor is a person's
reply relayed by maild (``Auto-Submitted: no``: an agent's answer by mail).
Every mail that does go out is logged in ``autoreply_log``, one row per
recipient (watchers in Cc count per address, not per ticket). DB only, the
clock comes in as "now".
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


@dataclass(frozen=True)
class Refusal:
    reason: str
    loop: bool  # flag the ticket as a suspected loop
    alert_key: str | None = None  # autoreply_log kind/address that says "already alerted"


# Built once (the hot path of every acknowledgement): one round trip for the
# three counts, each an index-only range scan. Alert rows are counted too:
# there is at most one per hour and cause, which the limits can bear.
_INSERT_LOG = Direct(insert(AutoreplyLog))
_HARD = select(Contact.email).where(
    Contact.email.in_(bindparam("emails", expanding=True)), Contact.bounce_state == "hard"
)
_PER_ADDRESS = (
    select(AutoreplyLog.address, func.count())
    .where(
        AutoreplyLog.address.in_(bindparam("emails", expanding=True)),
        AutoreplyLog.at > bindparam("hour_ago"),
    )
    .group_by(AutoreplyLog.address)
)


@functools.cache
def _counts(n: int) -> Direct:
    """The four counts for `n` addresses (one statement per count, run directly)."""
    keys = [bindparam(f"e{i}") for i in range(n)]
    return Direct(
        select(
            select(func.count())
            .select_from(Contact)
            .where(Contact.email.in_(keys), Contact.bounce_state == "hard")
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
            )
            .group_by(AutoreplyLog.address)
            .order_by(func.count().desc())
            .limit(1)
            .scalar_subquery(),
        )
    )


class AutoreplyGuard:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def screen(
        self, session: Session, ticket_id: int, notice: Notice, now: datetime
    ) -> tuple[Notice, Refusal | None]:
        """The notice to send (undeliverable recipients removed), or why not."""
        if notice.kind == ALERT_KIND or notice.visibility == Visibility.INTERNAL:
            return notice, None  # to our own agents: screening stops their auto-replies
        if notice.auto_submitted == "no":
            return notice, None  # a person's reply (an agent's, relayed): not automatic mail
        conn = session.connection()
        emails = [a.email for a in notice.to]
        lim = self.settings.limits
        hour_ago = now - timedelta(hours=1)
        params = {f"e{i}": email for i, email in enumerate(emails)}
        params.update(hour_ago=hour_ago, ticket_id=ticket_id, ten_ago=now - timedelta(minutes=10))
        hard_count, total, recent, most = _counts(len(emails)).one(session, params)
        if hard_count:
            hard = set(conn.execute(_HARD, {"emails": emails}).scalars())
            notice = replace(notice, to=tuple(a for a in notice.to if a.email not in hard))
            if not notice.to:
                return notice, Refusal(Phrase("alert.hard_bounced", addresses=", ".join(sorted(hard))),
                                       loop=False)  # fmt: skip
            emails = [a.email for a in notice.to]
        if total >= lim.autoreply_global_per_hour:
            return notice, Refusal(
                Phrase("alert.breaker", count=total, limit=lim.autoreply_global_per_hour),
                loop=True,
                alert_key="alert_breaker",
            )
        if recent >= lim.autoreply_per_ticket_per_10_minutes:
            return notice, Refusal(
                Phrase("alert.per_ticket", count=recent),
                loop=True,
            )
        if (most or 0) < lim.autoreply_per_address_per_hour:
            return notice, None
        for address, sent in conn.execute(_PER_ADDRESS, {"emails": emails, "hour_ago": hour_ago}):
            if sent >= lim.autoreply_per_address_per_hour:
                return notice, Refusal(
                    Phrase("alert.per_address", count=sent, address=address),
                    loop=True,
                    alert_key=address,
                )
        return notice, None

    def record(
        self, session: Session, ticket_id: int | None, to: tuple[Address, ...], kind: str,
        now: datetime,
    ) -> None:  # fmt: skip
        if kind == ALERT_KIND or not to:
            return
        for a in to:
            params = {"address": a.email, "ticket_id": ticket_id, "at": now, "kind": kind[:32]}
            _INSERT_LOG.execute(session, params).close()

    def should_alert(
        self, session: Session, ticket_id: int, refusal: Refusal, now: datetime, was_flagged: bool
    ) -> bool:
        """Alert once: per ticket (the flag), per looping address or breaker per hour."""
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
        params = {"address": address, "ticket_id": ticket_id, "at": now, "kind": kind}
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
