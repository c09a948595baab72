"""Mail on the agents' channel (pure): what an agent's reply, or a mail posing
as one, does to its ticket.

- Not authenticated (`maild.pipeline.agentauth`): the mail becomes an internal note,
  nothing changes, and each agent concerned is told why at their directory
  address.
- Authenticated: the agent's own text is found wherever their client put it
  (above, below or between the quoted mail: `maild.mail.quotes`); the ``#``
  lines at the top of that text are parsed (`maild.pipeline.commands`); a
  bad line refuses the whole reply (internal note, the agent gets the list
  of valid commands). Otherwise the commands and the public text (the agent's
  words, with the quoted lines an interleaved answer refers to, the agent's own
  and our reply addresses scrubbed) go to `maild.desk.agentreply`, which runs
  them in the same transaction as the article, all or nothing. A reply whose
  text could not be told apart from the quote is sent whole, minus its ``>``
  lines, and the agent is told.

The agent's mail itself is always an internal article: the requester only
ever sees what the help desk sends, from the help-desk address.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from maild.config.settings import Settings
from maild.mail import quotes
from maild.mail.parse import Address, ParsedMessage
from maild.mail.phrases import Phrase
from maild.pipeline import commands
from maild.pipeline.agentauth import AgentCheck
from maild.pipeline.correlate import Facts, TicketFacts
from maild.pipeline.decision import (
    AgentReply,
    ArticleSpec,
    Decision,
    EventSpec,
    InboundMeta,
    Notice,
)
from maild.pipeline.directory import GROUP_SECURITY, AgentEntry
from maild.store.states import ArticleKind, Outcome, Visibility

FEEDBACK = "agent_feedback"  # the outbox kind of every mail to an agent about their mail
SUMMARY_CHARS = 600


def decide(
    msg: ParsedMessage,
    inbound: InboundMeta,
    facts: Facts,
    settings: Settings,
    now: datetime,
    ticket: TicketFacts,
    check: AgentCheck,
    sender: Address,
    *,
    how: str,
) -> Decision:
    if not check.authenticated:
        return _not_authenticated(msg, inbound, facts, ticket, check, sender, how)
    agent = check.agent
    assert agent is not None
    base = dict(ticket_id=ticket.id, how=how)
    if not inbound.notify:  # an archive being imported: record, never act
        return Decision(Outcome.APPENDED, f"agent mail from {agent.email} recorded", **base,
                        article=_article(msg, sender, ArticleKind.MESSAGE),
                        events=(_added(agent, ()),))  # fmt: skip
    reply = quotes.split_reply(msg.text, quotes.phrases(settings.languages.directory))
    first = reply.parts[0] if reply.parts else quotes.Part("")
    # Commands are the leading lines of the agent's own text, wherever it starts.
    block = commands.parse(first.text, facts.directory, now=now,
                           timezone=settings.helpdesk.timezone,
                           meeting_minutes=settings.agent_mail.meeting_minutes)  # fmt: skip
    said = quotes.render((replace(first, text=block.body), *reply.parts[1:]))
    text = "" if block.internal else public_text(said, agent, settings, inbound)
    errors = list(block.errors)
    if not errors and not block.commands and not text:
        errors.append(Phrase("commands.empty"))
    if errors:
        return Decision(
            Outcome.APPENDED, f"agent reply from {agent.email} refused: {errors[0]}", **base,
            article=_article(msg, sender, ArticleKind.MESSAGE),
            events=(EventSpec("commands_refused", agent.email, detail={"errors": errors}),),
            notices=(refused_notice(agent, ticket.security, errors, msg.message_id),),
        )  # fmt: skip
    kind = ArticleKind.NOTE if block.internal else ArticleKind.MESSAGE
    lines = [c.line for c in block.commands]
    return Decision(
        Outcome.APPENDED,
        f"agent reply from {agent.email}: {len(lines)} command(s)"
        + (", public reply" if text else ""),
        **base,
        article=_article(msg, sender, kind),
        events=(_added(agent, lines),),
        agent_reply=AgentReply(
            agent.id,
            agent.address,
            block.commands,
            text,
            # Its files go to the requester with the text (inline images of the
            # agent's own signature stay behind).
            attachments=tuple(a for a in msg.attachments if not a.inline) if text else (),
            quote_kept=bool(text) and not reply.certain,
        ),
    )


def _added(agent: AgentEntry, lines: Sequence[str]) -> EventSpec:
    detail: dict[str, Any] = {"role": "agent"}
    if lines:
        detail["commands"] = list(lines)
    return EventSpec("article_added", agent.email, detail=detail)


def _article(msg: ParsedMessage, sender: Address, kind: ArticleKind) -> ArticleSpec:
    return ArticleSpec.of(msg, sender, kind, Visibility.INTERNAL)


def _not_authenticated(
    msg: ParsedMessage, inbound: InboundMeta, facts: Facts, ticket: TicketFacts,
    check: AgentCheck, sender: Address, how: str,
) -> Decision:  # fmt: skip
    reasons = list(check.reasons)
    token = facts.reply_token
    detail: dict[str, Any] = {"reasons": reasons, "from": sender.email}
    if check.agent is not None:
        detail["claimed"] = check.agent.email
    if token is not None:
        detail["reply_address"] = token.address
    told = ()
    if inbound.notify:
        summary = _summary(msg.text)
        told = tuple(
            feedback_notice("agent_rejected", agent, ticket.security, msg.message_id, {
                "reasons": reasons, "sender": sender.formatted(), "subject": msg.subject,
                "summary": summary, "received_at": inbound.received_at})
            for agent in check.tell
        )  # fmt: skip
    return Decision(
        Outcome.APPENDED,
        f"agent channel, not authenticated ({'; '.join(reasons)}): stored as an internal note",
        ticket_id=ticket.id,
        article=_article(msg, sender, ArticleKind.NOTE),
        events=(EventSpec("agent_mail_refused", sender.email, detail=detail),),
        notices=told,
        how=how,
    )


def feedback_notice(
    template: str, agent: AgentEntry, security: bool, in_reply_to: str | None,
    context: Mapping[str, Any],
) -> Notice:  # fmt: skip
    """A mail to an agent's directory address about mail on their channel."""

    restricted = security and GROUP_SECURITY not in agent.groups
    return Notice(
        template=template,
        to=(agent.address,),
        kind=FEEDBACK,
        auto_submitted="auto-replied",
        in_reply_to=in_reply_to,
        references=(in_reply_to,) if in_reply_to else (),
        context={**context, "restricted": restricted, "agent": {"name": agent.name}},
        language=agent.language,
        visibility=Visibility.INTERNAL,
        agent_id=agent.id,
    )


def refused_notice(
    agent: AgentEntry, security: bool, errors: Sequence[str], in_reply_to: str | None
) -> Notice:
    return feedback_notice("agent_refused", agent, security, in_reply_to,
                           {"errors": list(errors), "syntax": list(commands.SYNTAX)})  # fmt: skip


def public_text(text: str, agent: AgentEntry, settings: Settings, inbound: InboundMeta) -> str:
    """What the requester reads: the agent's text, with no address of the agent's or
    of our reply channel in it."""
    desk = inbound.recipient or settings.helpdesk.primary_address
    text = re.sub(re.escape(agent.email), desk, text, flags=re.IGNORECASE)
    for served in settings.helpdesk.addresses:
        local, _at, domain = served.lower().rpartition("@")
        text = re.sub(rf"\b{re.escape(local)}\+[^\s@<>\"]*@{re.escape(domain)}",
                      f"{local}@{domain}", text, flags=re.IGNORECASE)  # fmt: skip
    return text.strip()


def _summary(text: str) -> str:
    text = text.strip()
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS].rsplit(" ", 1)[0] + " …"
