"""decide: run the pure stages and return one frozen `Decision`.

``screen -> correlate -> identify -> commands -> triage -> decide``. No
database, no network, no clock: the worker passes in the `Facts` it looked
up and "now". `apply` writes the Decision in one transaction (and
`maild.desk.agentreply` runs an agent's commands in it).

Mail on the agents' channel (to a personal reply address, or from or
imitating an agent of the directory) is decided by `maild.pipeline.agentmail`.

Who a mail is from is what maild can verify (`maild.pipeline.verify`), not
its From line. Mail that claims a participant of the ticket but is not
verified adds its text (marked unverified, the agents told) and nothing
else: no watcher added or removed, no status changed, nothing sent to anyone
it names. Notices go to the addresses stored on the ticket, never to a
message's Reply-To or Cc; an acknowledgement goes to the From of a new
ticket and quotes nothing of an unverified message but its subject.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from maild.addresses import ServedAddresses, is_valid_address, normalize_address, split_plus
from maild.config.settings import Settings
from maild.mail.language import choose as choose_language
from maild.mail.language import spoken_languages
from maild.mail.parse import Address, ParsedMessage
from maild.mail.quotes import phrases, strip_reply
from maild.pipeline import agentauth, agentmail, alertmail, closure, notices
from maild.pipeline.alerts import from_monitor
from maild.pipeline.correlate import Facts, TicketFacts, correlate
from maild.pipeline.decision import (
    ArticleSpec,
    BounceSpec,
    ClosureReply,
    Decision,
    EventSpec,
    InboundMeta,
    Notice,
    TicketSpec,
)
from maild.pipeline.identify import Role, identify
from maild.pipeline.mailbox_defaults import apply_mailbox_defaults
from maild.pipeline.screen import Envelope, Screening, Verdict, is_auto_submitted, screen
from maild.pipeline.sla import SlaPolicy
from maild.pipeline.triage import Rulebook, classify
from maild.pipeline.verify import Trust, message_source, verify_sender
from maild.store.states import (
    FINISHED_STATUSES,
    ArticleKind,
    Direction,
    Outcome,
    Source,
    TicketStatus,
    Visibility,
)

SUMMARY_CHARS = 600
SUMMARY_SCAN_CHARS = 8192
MAX_WATCHERS = 20


def decide(
    msg: ParsedMessage,
    inbound: InboundMeta,
    facts: Facts,
    settings: Settings,
    now: datetime,
    rules: Rulebook | None = None,
) -> Decision:
    monitor = from_monitor(msg, settings)  # None: not from alerts.senders
    decision = _decide(msg, inbound, facts, settings, now, rules,
                       alert=monitor is not None and monitor.verified)  # fmt: skip
    if monitor is not None and not monitor.verified:
        decision = _not_an_alert(decision, msg, monitor)
    article = decision.article
    if article is not None and article.verified_by is not None and decision.ticket_id:
        ticket = facts.tickets.get(decision.ticket_id)
        if ticket is not None and article.author.email in ticket.bounced:
            decision = replace(decision, deliverable_again=article.author.email)
    if inbound.wanted_by and decision.outcome in (Outcome.NEW_TICKET, Outcome.APPENDED):
        replayed = EventSpec("replayed", inbound.wanted_by,
                             detail={"inbound": inbound.id, "was": inbound.was})  # fmt: skip
        decision = replace(decision, events=(*decision.events, replayed))
    if decision.notices:  # they count against the limit of the source the mail came from
        decision = replace(decision, source=message_source(msg, settings))
    return decision


def _decide(
    msg: ParsedMessage,
    inbound: InboundMeta,
    facts: Facts,
    settings: Settings,
    now: datetime,
    rules: Rulebook | None,
    *,
    alert: bool,
) -> Decision:
    served = ServedAddresses.of(settings.helpdesk.addresses)
    sender = _sender(msg, inbound)
    env = Envelope(
        mail_from=inbound.envelope_from, recipient=inbound.recipient, to=inbound.envelope_to
    )
    screening = screen(msg, env, settings)
    if inbound.wanted_by and screening.verdict != Verdict.OWN_LOOP:
        screening = Screening(Verdict.PERSON, "")  # a person chose it (maild inbound replay)
    correlation = correlate(msg, facts)
    ticket = facts.tickets.get(correlation.ticket_id) if correlation.ticket_id else None

    if screening.verdict == Verdict.OWN_LOOP:
        if inbound.source == Source.IMPORT and ticket is not None:
            return _desk_reply(msg, sender, ticket, facts, settings, correlation.how)
        return Decision(Outcome.IGNORED, f"own mail: {screening.reason}", rule=screening.rule)
    if screening.verdict == Verdict.SPAM:
        # Stored as spam: no ticket, no article, nobody answered. A reply to a
        # ticket leaves a trace there, so an agent can replay a false positive.
        held = ()
        if ticket is not None:
            held = (EventSpec("spam_held", sender.email, detail={
                "inbound": inbound.id, "reason": screening.reason}),)  # fmt: skip
        return Decision(Outcome.SPAM, f"spam: {screening.reason}", rule=screening.rule,
                        ticket_id=ticket.id if ticket else None, events=held,
                        how=correlation.how)  # fmt: skip
    if screening.verdict != Verdict.BOUNCE and alert:
        # A monitor, verified: read as alerts, never as an auto-reply, never answered.
        if facts.already_stored_on is not None:
            return Decision(Outcome.IGNORED, f"already recorded on ticket "
                            f"#{facts.already_stored_on} (same Message-ID)",
                            rule="already_recorded")  # fmt: skip
        return alertmail.decide(msg, inbound, facts, settings, now)
    if screening.verdict in (Verdict.BOUNCE, Verdict.AUTOMATED):
        # Never a new ticket, an acknowledgement, a reopen or a command.
        if ticket is None:
            return Decision(Outcome.IGNORED, f"{screening.verdict}: {screening.reason}",
                            rule=screening.rule)  # fmt: skip
        kind = ArticleKind.BOUNCE if screening.verdict == Verdict.BOUNCE else ArticleKind.AUTOMATED
        bounce = _bounce(msg, facts, ticket) if screening.verdict == Verdict.BOUNCE else None
        detail: dict[str, Any] = {"reason": screening.reason}
        if bounce is not None:
            detail.update(kind=bounce.kind, addresses=list(bounce.addresses),
                          status=bounce.status, outbox=bounce.outbox_id)  # fmt: skip
        return Decision(
            Outcome.APPENDED,
            f"{screening.verdict}: {screening.reason}",
            rule=screening.rule,
            ticket_id=ticket.id,
            article=_article(msg, sender, kind, Visibility.INTERNAL),
            events=(EventSpec(f"{kind}_received", sender.email, detail=detail),),
            how=correlation.how,
            bounce=bounce,
        )
    # Through a list or group to us: a ticket like any other, but nothing
    # automatic goes back to the requester (it would go to the whole group).
    quiet = screening.reason if screening.verdict == Verdict.LIST else ""

    if facts.already_stored_on is not None:
        return Decision(
            Outcome.IGNORED,
            f"already recorded on ticket #{facts.already_stored_on} (same Message-ID)",
            rule="already_recorded",
        )
    if served.serves(sender.email):  # an envelope sender of ours (From was screened)
        return Decision(Outcome.IGNORED, f"sent from our own address {sender.email}",
                        rule="our_envelope_sender")  # fmt: skip
    if ticket is not None:  # the agents' channel first: a look-alike From is no valid address
        check = agentauth.check(msg, facts.reply_token, facts.directory, settings,
                                ticket_id=ticket.id, requester=ticket.requester, now=now)  # fmt: skip
        if check is not None:
            return agentmail.decide(msg, inbound, facts, settings, now, ticket, check, sender,
                                    how=correlation.how)  # fmt: skip
    if not is_valid_address(sender.email):
        return Decision(Outcome.QUARANTINED, "no usable sender address (From or envelope)",
                        rule="no_sender")  # fmt: skip

    if ticket is not None:
        role = identify(msg, ticket)
        trust = verify_sender(msg, facts, settings, sender=sender.email, ticket_id=ticket.id,
                              now=now)  # fmt: skip
        if role in (Role.REQUESTER, Role.PARTICIPANT) and not trust.verified:
            return _unverified(msg, inbound, sender, ticket, facts, settings, role, trust,
                               how=correlation.how)  # fmt: skip
        if ticket.status in FINISHED_STATUSES and role == Role.REQUESTER:
            finished_at = ticket.closed_at or ticket.resolved_at or now
            if now - finished_at > timedelta(days=settings.helpdesk.reopen_days):
                return _new_ticket(
                    msg, inbound, sender, settings, now, facts, rules, parent=ticket,
                    note=f"reply to #{ticket.id} after the reopen window", quiet=quiet,
                )  # fmt: skip
            reading = closure.read(msg.text, settings.languages.directory)
            # Threaded by our own Message-IDs or reply address: a subject tag alone
            # may add words, never close a ticket.
            trusted = correlation.how in ("references", "reply-address")
            rating = reading.score is not None and inbound.notify
            if reading.kind in (closure.Reading.RATING, closure.Reading.THANKS) and not (
                reading.still_broken
            ):
                return Decision(
                    Outcome.APPENDED,
                    f"requester {reading.kind} on #{ticket.id}"
                    + (f" ({reading.score}/5)" if reading.score else ""),
                    ticket_id=ticket.id,
                    article=_article(msg, sender, ArticleKind.MESSAGE, Visibility.PUBLIC, trust),
                    events=(EventSpec("article_added", sender.email,
                                      detail={"role": str(role), "verified": trust.how,
                                              "reading": str(reading.kind)}),),
                    closure=ClosureReply(str(reading.kind), sender.email, reading.score,
                                         reading.comment, close=trusted, tell=inbound.notify)
                    if inbound.notify else None,
                    how=correlation.how,
                )  # fmt: skip
            return Decision(
                Outcome.APPENDED,
                f"requester reply reopens #{ticket.id} ({reading.kind})",
                ticket_id=ticket.id,
                article=_article(msg, sender, ArticleKind.MESSAGE, Visibility.PUBLIC, trust),
                status=TicketStatus.OPEN,
                events=(
                    EventSpec("article_added", sender.email,
                              detail={"role": str(role), "verified": trust.how,
                                      "reading": str(reading.kind)}),  # fmt: skip
                    EventSpec(
                        "status",
                        sender.email,
                        old=ticket.status,
                        new=TicketStatus.OPEN,
                        detail={"reason": "requester replied"},
                    ),
                ),  # fmt: skip
                notices=_reopen_notices(msg, ticket, facts, settings, quiet=bool(quiet))
                if inbound.notify
                else (),
                how=correlation.how,
                # A low rating that says the problem is still there: kept, the reopen tells.
                closure=ClosureReply("rating", sender.email, reading.score, reading.comment,
                                     close=False, tell=False) if rating else None,
            )  # fmt: skip
        if role == Role.OTHER:
            return _stranger(msg, inbound, sender, ticket, facts, settings, correlation.how)
        verified = trust.verified
        events = [EventSpec("article_added", sender.email,
                            detail={"role": str(role), "verified": trust.how})]  # fmt: skip
        status = None
        if ticket.status == TicketStatus.PENDING_USER and role == Role.REQUESTER:
            status = TicketStatus.OPEN
            events.append(EventSpec("status", sender.email, old=ticket.status, new=status,
                                    detail={"reason": "requester replied"}))  # fmt: skip
        add: tuple[Address, ...] = ()
        remove: tuple[str, ...] = ()
        told: list[Notice] = []
        if role == Role.REQUESTER and msg.cc:  # the requester's Cc says who watches
            add, remove = _watcher_changes(msg, sender, ticket, facts, settings)
            if inbound.notify:  # a watcher the requester no longer copies hears so
                told += [_watcher_removed(ticket, email) for email in remove]
        if inbound.notify and role in (Role.REQUESTER, Role.PARTICIPANT):
            told += _reply_notices(msg, sender, ticket, facts, settings, status)
        limits = _limits_notice(msg, inbound, sender, settings) if verified and not quiet else ()
        return Decision(
            Outcome.APPENDED,
            f"{role} reply to #{ticket.id} ({correlation.how})",
            ticket_id=ticket.id,
            article=_article(msg, sender, ArticleKind.MESSAGE, Visibility.PUBLIC, trust),
            status=status,
            events=tuple(events),
            notices=(*told, *limits),
            how=correlation.how,
            watchers_add=add,
            watchers_remove=remove,
        )
    return _new_ticket(msg, inbound, sender, settings, now, facts, rules, note=correlation.note,
                       quiet=quiet)  # fmt: skip


def _not_an_alert(decision: Decision, msg: ParsedMessage, monitor: Trust) -> Decision:
    """Mail whose From names a monitor that maild could not verify went the way of
    any other mail (a new ticket, a reply, ignored ...); the reason and the ticket
    say why it was not read as an alert."""
    why = f"From is one of alerts.senders but not read as an alert: {monitor.why}"
    sender = msg.sender.email if msg.sender else ""
    decision = replace(decision, reason=f"{decision.reason} ({why})")
    if decision.ticket_id is None and decision.new_ticket is None:
        return decision
    doubted = EventSpec("alert_not_verified", sender, detail={"why": monitor.why})
    return replace(decision, events=(*decision.events, doubted))


def _unverified(
    msg: ParsedMessage, inbound: InboundMeta, sender: Address, ticket: TicketFacts,
    facts: Facts, settings: Settings, role: Role, trust: Trust, *, how: str,
) -> Decision:  # fmt: skip
    """Mail that claims a participant maild cannot verify: its text is added,
    marked, and the agents working the ticket are told; nothing else happens."""
    detail: dict[str, Any] = {"role": str(role), "verified": trust.how, "why": trust.why}
    ignored = {}
    if msg.cc and role == Role.REQUESTER:
        ignored["cc"] = [a.email for a in msg.cc][:MAX_WATCHERS]
    if msg.reply_to:
        ignored["reply_to"] = [a.email for a in msg.reply_to][:MAX_WATCHERS]
    if ignored:
        detail["ignored"] = ignored
    told: tuple[Notice, ...] = ()
    if inbound.notify:
        told = _reply_notices(msg, sender, ticket, facts, settings, None, unverified=trust.why)
    return Decision(
        Outcome.APPENDED,
        f"unverified {role} mail to #{ticket.id} ({how}): text added, nothing changed",
        ticket_id=ticket.id,
        article=_article(msg, sender, ArticleKind.MESSAGE, Visibility.PUBLIC, trust),
        events=(EventSpec("article_added", sender.email, detail=detail),),
        notices=told,
        how=how,
    )


def _desk_reply(
    msg: ParsedMessage, sender: Address, ticket: TicketFacts, facts: Facts, settings: Settings,
    how: str,
) -> Decision:  # fmt: skip
    """The old desk's own mail in an archive being imported, on a thread we have: an
    outgoing article, as it was sent. A person's reply is the ticket's first
    response; an automatic one (its acknowledgement) is recorded only."""
    if facts.own_message_on is not None:
        return Decision(Outcome.IGNORED, f"already recorded on ticket #{facts.own_message_on} "
                        "(same Message-ID)", rule="already_recorded")  # fmt: skip
    automatic = bool(is_auto_submitted(msg, Envelope(None, None), settings)
                     or "x-autoreply" in msg.headers)  # fmt: skip
    article = replace(_article(msg, sender, ArticleKind.NOTIFICATION if automatic
                               else ArticleKind.MESSAGE, Visibility.PUBLIC),
                      direction=Direction.OUT)  # fmt: skip
    return Decision(
        Outcome.APPENDED,
        f"the help desk's own {'automatic mail' if automatic else 'reply'} on #{ticket.id}, "
        "from the archive",
        rule="imported_desk_reply",
        ticket_id=ticket.id,
        article=article,
        events=(
            EventSpec("article_added", sender.email, detail={"role": "desk", "imported": True}),
        ),  # fmt: skip
        first_response=not automatic,
        how=how,
    )


def _stranger(
    msg: ParsedMessage, inbound: InboundMeta, sender: Address, ticket: TicketFacts, facts: Facts,
    settings: Settings, how: str,
) -> Decision:  # fmt: skip
    """Someone who takes no part in the ticket wrote to its thread (a forwarded copy,
    a colleague). Kept as an internal note; nothing changes, nobody outside hears of
    it; the agents working the ticket are told."""
    told: tuple[Notice, ...] = ()
    if inbound.notify:
        audience = notices.working_audience(settings, facts.directory, tier=ticket.tier,
                                            assignee_id=ticket.assignee,
                                            security=ticket.security)  # fmt: skip
        said = strip_reply(msg.text[:SUMMARY_SCAN_CHARS]) or msg.text
        carried, listing = notices.attachments_for_agents(msg.attachments,
                                                          settings.attachments.notify_max_bytes)  # fmt: skip
        told = notices.to_groups("agent_update", "agent_update", audience,
                                 security=ticket.security, attachments=carried,
                                 context={"event": "stranger", "summary": _summary(said),
                                          "author": sender.formatted(),
                                          "attachments": listing})  # fmt: skip
    return Decision(
        Outcome.APPENDED,
        f"reply to #{ticket.id} from {sender.email}, who takes no part in it: an internal note",
        ticket_id=ticket.id,
        article=_article(msg, sender, ArticleKind.NOTE, Visibility.INTERNAL),
        events=(
            EventSpec(
                "non_participant_reply", sender.email, detail={"from": sender.email, "how": how}
            ),
        ),  # fmt: skip
        notices=told,
        how=how,
    )


def _watcher_removed(ticket: TicketFacts, email: str) -> Notice:
    """A watcher the requester's latest mail no longer copies is told so."""
    return notices.to_requester("watcher_removed", "watcher_removed", Address("", email),
                                context={"removed_by": ticket.requester})  # fmt: skip


def _reopen_notices(
    msg: ParsedMessage, ticket: TicketFacts, facts: Facts, settings: Settings, *,
    quiet: bool = False,
) -> tuple[Notice, ...]:  # fmt: skip
    """The requester hears the ticket is open again; the agents working it, that it came back."""
    references = (*msg.references, msg.message_id) if msg.message_id else msg.references
    thread = notices.Thread(msg.message_id, references)
    carried, listing = notices.attachments_for_agents(msg.attachments,
                                                      settings.attachments.notify_max_bytes)  # fmt: skip
    context = {"event": "reopened", "summary": _summary(msg.text), "attachments": listing}
    watchers = tuple(Address("", w) for w in sorted(ticket.watchers))
    audience = notices.working_audience(
        settings,
        facts.directory,
        tier=ticket.tier,
        assignee_id=ticket.assignee,
        security=ticket.security,
    )
    told = notices.to_groups("agent_update", "agent_update", audience,
                             security=ticket.security, context=context,
                             attachments=carried)  # fmt: skip
    if quiet:
        return told
    return (
        # To the requester stored on the ticket: never to the mail's Reply-To.
        notices.to_requester("status", "status", Address(name="", email=ticket.requester),
                             thread=thread, context={"event": "reopened", "by_reply": True},
                             cc=watchers),
        *told,
    )  # fmt: skip


def _bounce(msg: ParsedMessage, facts: Facts, ticket: TicketFacts) -> BounceSpec:
    """Which recipient of our mail the report says failed, and how.

    Only through a genuine VERP return path (`maild.mail.verp`), and only for
    the one recipient it was made for: a report that merely quotes our
    Message-ID, or names anyone else, is recorded on the ticket and changes
    no contact (anyone can write a delivery report naming anyone).
    """
    report = msg.bounce
    outbox = facts.bounced_outbox
    if report is None:
        return BounceSpec("unknown", (), outbox.id if outbox else None)
    ours = {outbox.recipient} if outbox is not None and outbox.recipient else set()

    hard = tuple(a for a in report.permanent if a in ours)
    soft = tuple(a for a in report.temporary if a in ours)
    kind = "hard" if hard else "soft" if soft else "unknown"
    return BounceSpec(
        kind,
        hard or soft,
        outbox.id if outbox else None,
        status=report.status,
        diagnostic=report.diagnostic,
    )


def _limits_notice(
    msg: ParsedMessage, inbound: InboundMeta, sender: Address, settings: Settings
) -> tuple[Notice, ...]:
    """Tell a person whose reply was cut by the limits what was left out."""
    if not msg.notes or not inbound.notify:
        return ()
    return (
        Notice(
            template="limits",
            to=(sender,),
            kind="limits",
            auto_submitted="auto-replied",
            in_reply_to=msg.message_id,
            references=((*msg.references, msg.message_id) if msg.message_id else msg.references)[
                -20:
            ],
            context={"notes": list(msg.notes)},
        ),
    )


def _reply_notices(
    msg: ParsedMessage, sender: Address, ticket: TicketFacts, facts: Facts, settings: Settings,
    status: TicketStatus | None, *, unverified: str = "",
) -> tuple[Notice, ...]:  # fmt: skip
    """The agents working the ticket hear of a requester's (or watcher's) reply;
    `unverified`: why its sender could not be verified."""
    audience = notices.working_audience(
        settings,
        facts.directory,
        tier=ticket.tier,
        assignee_id=ticket.assignee,
        security=ticket.security,
    )
    if not audience:  # no agent to tell (no tier group configured): no summary to make
        return ()
    # What they wrote, without the mail they quote (the head only: it is untrusted input).
    said = (
        strip_reply(msg.text[:SUMMARY_SCAN_CHARS], phrases(settings.languages.directory))
        or msg.text
    )
    carried, listing = notices.attachments_for_agents(msg.attachments,
                                                      settings.attachments.notify_max_bytes)  # fmt: skip
    context = {
        "event": "reply",
        "summary": _summary(said),
        "author": sender.formatted(),
        "status_now": str(status) if status else ticket.status,
        "unverified": unverified,
        "attachments": listing,
    }
    return notices.to_groups("agent_update", "agent_update", audience, security=ticket.security,
                             context=context, attachments=carried)  # fmt: skip


def is_own_address(email: str, settings: Settings, served: ServedAddresses | None = None) -> bool:
    """One of ours: a served address (or a plus-variant), or on our Message-ID domain."""
    served = served or ServedAddresses.of(settings.helpdesk.addresses)
    base, _tag = split_plus(email)
    domain = email.rpartition("@")[2]
    return served.serves(base) or domain == settings.helpdesk.domain.lower()


def _watcher_candidates(
    msg: ParsedMessage, sender: Address, requester: str, facts: Facts, settings: Settings
) -> dict[str, Address]:
    """The people the requester copied: never our own addresses, agents or groups."""
    served = ServedAddresses.of(settings.helpdesk.addresses)
    t = settings.tiers
    groups = {e.lower() for e in (*t.tier1, *t.tier2, *t.tier3, *t.duty_manager, *t.security)}
    out: dict[str, Address] = {}
    for a in msg.cc:
        email = a.email
        if (email in (sender.email, requester) or email in groups or not is_valid_address(email)
                or facts.directory.by_email(email) is not None
                or is_own_address(email, settings, served)):  # fmt: skip
            continue
        out.setdefault(email, a)
    return dict(list(out.items())[:MAX_WATCHERS])


def _watcher_changes(
    msg: ParsedMessage, sender: Address, ticket: TicketFacts, facts: Facts, settings: Settings
) -> tuple[tuple[Address, ...], tuple[str, ...]]:
    """A requester's mail that copies anyone but us sets the watchers to exactly those copied."""
    if all(is_own_address(a.email, settings) for a in msg.cc):
        return (), ()
    wanted = _watcher_candidates(msg, sender, ticket.requester, facts, settings)
    add = tuple(a for e, a in wanted.items() if e not in ticket.watchers)
    remove = tuple(sorted(w for w in ticket.watchers if w not in wanted))
    return add, remove


def _sender(msg: ParsedMessage, inbound: InboundMeta) -> Address:
    if msg.sender is not None:
        return msg.sender
    envelope = normalize_address(inbound.envelope_from or "")
    return Address(name="", email=envelope)


def _article(
    msg: ParsedMessage, sender: Address, kind: ArticleKind, visibility: Visibility,
    trust: Trust | None = None,
) -> ArticleSpec:  # fmt: skip
    text = msg.text
    if msg.notes:  # what the limits left out, where the agent reads the message
        text = "\n\n".join(
            [text.rstrip(), "\n".join(f"[maild: {note}]" for note in msg.notes)]
        ).lstrip()
    return ArticleSpec.of(msg, sender, kind, visibility, text=text,
                          verified_by=trust.label if trust is not None else None)  # fmt: skip


def _summary(text: str) -> str:
    text = text.strip()
    if len(text) <= SUMMARY_CHARS:
        return text
    cut = text[:SUMMARY_CHARS].rsplit(" ", 1)[0]
    return cut + " …"


def _new_ticket(
    msg: ParsedMessage,
    inbound: InboundMeta,
    sender: Address,
    settings: Settings,
    now: datetime,
    facts: Facts,
    rules: Rulebook | None,
    *,
    parent: TicketFacts | None = None,
    note: str = "",
    quiet: str = "",
) -> Decision:
    """A new ticket; `quiet` (why: list or group mail) sends the requester nothing."""
    rules = rules or Rulebook.from_settings(settings)
    triage = classify(msg, inbound.recipient, settings, rules)
    triage = apply_mailbox_defaults(triage, inbound.mailbox, settings)
    language, language_source = choose_language(
        facts.sender_language, msg.language, f"{msg.subject}\n{msg.text}",
        settings.helpdesk.default_language, spoken_languages(settings.templates.directory),
        settings.languages.directory,
    )  # fmt: skip
    policy = SlaPolicy.from_settings(settings)
    clock = policy.start(triage.priority, now)
    due = clock.first_response_due
    regulator_due = regulator_next = None
    if triage.security:
        regulator_due, regulator_next = policy.regulator_clock(now)
    subject = msg.subject or "(no subject)"
    # Only a verified sender's copies become watchers: anyone can write any From
    # and Cc (maild.pipeline.verify).
    trust = verify_sender(msg, facts, settings, sender=sender.email, ticket_id=None, now=now)
    copied = _watcher_candidates(msg, sender, sender.email, facts, settings)
    spec = TicketSpec(
        type=triage.type,
        category=triage.category,
        impact=triage.impact,
        urgency=triage.urgency,
        priority=triage.priority,
        tier=triage.tier,
        security=triage.security,
        subject=subject,
        requester=sender,
        language=language,
        address=inbound.recipient or settings.helpdesk.primary_address,
        first_response_due=due,
        resolution_due=clock.resolution_due,
        parent_id=parent.id if parent else None,
        sla=clock,
        regulator_due=regulator_due,
        regulator_next_reminder_at=regulator_next,
        contact_language=language if language_source != "default" else None,
        watchers=tuple(copied.values()) if trust.verified else (),
    )
    detail: dict[str, Any] = {"triage": list(triage.matched), "language": language_source}
    if note:
        detail["note"] = note
    if quiet:
        detail["not_acknowledged"] = quiet
    events = [EventSpec("created", sender.email, new=TicketStatus.NEW, detail=detail)]
    if parent is not None:
        events.append(EventSpec("linked", sender.email, new=str(parent.id),
                                detail={"reason": "reply after the reopen window"}))  # fmt: skip
    if copied and not trust.verified:
        events.append(EventSpec("watchers_not_added", "maild", detail={
            "addresses": list(copied), "reason": f"sender not verified: {trust.why}"}))  # fmt: skip
    notices_out: tuple[Notice, ...] = ()
    if inbound.notify:
        spec = replace(spec, status=TicketStatus.OPEN)
        why = f"not acknowledged: {quiet}" if quiet else "acknowledged"
        events.append(EventSpec("status", "maild", old=TicketStatus.NEW, new=TicketStatus.OPEN,
                                detail={"reason": why}))  # fmt: skip
        # To the From (the requester now on the ticket): never to Reply-To or Cc;
        # and an unverified display name is not repeated either.
        to = (sender if trust.verified else Address(name="", email=sender.email),)
        references = (*msg.references, msg.message_id) if msg.message_id else msg.references
        hierarchical = triage.priority == 1
        ack = Notice(
            template="ack",
            to=to,
            kind="ack",
            auto_submitted="auto-replied",
            in_reply_to=msg.message_id,
            references=references[-20:],
            context={
                # Of an unverified message nothing but its subject is repeated.
                "summary": _summary(msg.text) if trust.verified else "",
                "first_response_due": due,
                "resolution_due": clock.resolution_due,
                "parent_id": parent.id if parent else None,
                "questions": list(rules.questions(triage.category, language)),
                "advice": list(rules.advice(triage.category, language)),
                "security": triage.security,
                "hierarchical": hierarchical,
                "notes": list(msg.notes) if trust.verified else [],
                "copied": 0 if trust.verified else len(copied),
                # Nor its display name: the greeting names the address.
                **({} if trust.verified else {"requester": {"name": "", "email": sender.email}}),
            },
        )
        audience = notices.new_ticket_audience(
            settings,
            priority=triage.priority,
            tier=triage.tier,
            security=triage.security,
            directory=facts.directory,
        )
        carried, listing = notices.attachments_for_agents(
            msg.attachments, settings.attachments.notify_max_bytes)  # fmt: skip
        agent_context = {"summary": _summary(msg.text), "hierarchical": hierarchical,
                         "parent_id": parent.id if parent else None,
                         "unacknowledged": quiet, "attachments": listing}  # fmt: skip
        group = notices.to_groups("agent_new", "agent_new", audience, security=triage.security,
                                  context=agent_context, attachments=carried)  # fmt: skip
        notices_out = (*(() if quiet else (ack,)), *group)
        if hierarchical:
            events.append(EventSpec("escalated", "maild", detail={
                "kind": "hierarchical", "reason": "P1",
                "notified": [r.address.email for r, role in audience
                             if role == notices.ROLE_HIERARCHICAL]}))  # fmt: skip
    return Decision(
        Outcome.NEW_TICKET,
        note or "new ticket",
        new_ticket=spec,
        article=_article(msg, sender, ArticleKind.MESSAGE, Visibility.PUBLIC, trust),
        events=tuple(events),
        notices=notices_out,
    )
