"""Agents' actions from the console and the API, through the desk's `TicketOps`.

One function, `perform`, for both doors: it checks the values (a bad one is
a `FieldError` naming its field, 422), opens the one transaction, refuses a
security incident to anyone outside the security group (`Forbidden`, 403),
refuses a form that is older than the ticket (`StaleChange`, 409: the row
lock orders two agents, the second is told what the first changed) and
runs the same operation the ``#commands`` and the CLI run, with the agent
as actor, so the events, notices and rate limits are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from maild.addresses import is_valid_address, normalize_address
from maild.config.settings import Settings
from maild.desk.actions import ActionRefused, Done, TicketOps
from maild.desk.apply import Applier
from maild.mail.parse import Address, ParsedAttachment, safe_filename
from maild.pipeline.commands import STATUSES, parse_meeting
from maild.pipeline.directory import AgentEntry
from maild.web.queries import may_see_security

ACTIONS = ("reply", "note", "status", "priority", "type", "category", "take", "assign",
           "unassign", "escalate", "link", "merge", "watch", "unwatch", "meeting", "resolve",
           "close", "reopen")  # fmt: skip


class FieldError(ValueError):
    """A value that cannot be used: 422, naming the field; nothing was changed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Forbidden(Exception):
    """The agent may not act on this ticket (a security incident): 403."""


class TooLarge(Exception):
    """An upload over the attachment limits: 413; nothing was changed."""


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


def attachments(settings: Settings, uploads: list[Upload]) -> tuple[ParsedAttachment, ...]:
    """Uploaded files as attachments, within ``[limits]`` (else `TooLarge`)."""
    lim = settings.limits
    files = [u for u in uploads if u.filename or u.data]
    if len(files) > lim.max_attachments:
        raise TooLarge(f"at most {lim.max_attachments} files")
    total = 0
    out = []
    for u in files:
        if len(u.data) > lim.max_attachment_bytes:
            raise TooLarge(f"{u.filename}: larger than {lim.max_attachment_bytes} bytes")
        total += len(u.data)
        ctype = (u.content_type or "application/octet-stream").split(";")[0].strip().lower()
        out.append(ParsedAttachment(filename=safe_filename(u.filename, ctype), content_type=ctype,
                                    data=u.data))  # fmt: skip
    if total > lim.max_message_bytes:
        raise TooLarge(f"the files together are larger than {lim.max_message_bytes} bytes")
    return tuple(out)


def _text(params: Mapping[str, Any], name: str, *, required: bool = False, limit: int = 100_000
          ) -> str:  # fmt: skip
    value = params.get(name)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise FieldError(name, "must be text")
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in value:
        raise FieldError(name, "must not contain NUL characters")
    if len(value) > limit:
        raise FieldError(name, f"is longer than {limit} characters")
    if required and not value.strip():
        raise FieldError(name, "is required")
    return value


def _int(params: Mapping[str, Any], name: str, *, required: bool = True) -> int | None:
    value = params.get(name)
    if value in (None, "") and not required:
        return None
    text = str(value).strip().upper().removeprefix("P").removeprefix("#")
    if not text.isdigit() or len(text) > 12:
        raise FieldError(name, "must be a number")
    return int(text)


def _address(params: Mapping[str, Any], name: str) -> str:
    value = _text(params, name, required=True, limit=320).strip()
    email = normalize_address(value)
    if not is_valid_address(email):
        raise FieldError(name, f"not a mail address: {value!r}")
    return email


def plan(
    settings: Settings, agent: AgentEntry, directory: Any, number: int, action: str,
    params: Mapping[str, Any], files: tuple[ParsedAttachment, ...], now: datetime,
) -> Callable[[TicketOps], Done]:  # fmt: skip
    """Check the values of `action` and return the operation to run (nothing runs yet)."""
    me = agent.email
    who = Address(name=agent.name, email=agent.email)
    if action == "reply":
        text = _text(params, "text", required=True)
        status = _text(params, "status", limit=32) or None
        if status is not None and status not in ("in_progress", "pending_user"):
            raise FieldError("status", "after a reply: in_progress or pending_user")
        return lambda ops: ops.reply(number, agent=who, text=text, status=status,
                                     attachments=files)  # fmt: skip
    if action == "note":
        text = _text(params, "text", required=not files)
        return lambda ops: ops.note(number, agent=who, text=text, attachments=files)
    if action == "status":
        status = _text(params, "status", required=True, limit=32)
        if status not in STATUSES:
            raise FieldError("status", f"must be one of {', '.join(STATUSES)}")
        note = _text(params, "note")
        return lambda ops: ops.set_status(number, status, actor=me, note=note)
    if action == "priority":
        priority = _int(params, "priority")
        if priority not in (1, 2, 3, 4):
            raise FieldError("priority", "must be P1, P2, P3 or P4")
        return lambda ops: ops.set_priority(number, priority, actor=me)  # type: ignore[arg-type]
    if action == "type":
        kind = _text(params, "type", required=True, limit=16)
        if kind not in ("incident", "request"):
            raise FieldError("type", "must be incident or request")
        return lambda ops: ops.set_type(number, kind, actor=me)
    if action == "category":
        category = _text(params, "category", required=True, limit=64).strip().lower()
        return lambda ops: ops.set_category(number, category, actor=me)
    if action == "take":
        return lambda ops: ops.assign(number, me, actor=me)
    if action == "assign":
        name = _text(params, "agent", required=True, limit=320)
        target = directory.find(name)
        if target is None:
            raise FieldError("agent", f"no single active agent is called {name!r}")
        return lambda ops: ops.assign(number, target.email, actor=me)
    if action == "unassign":
        return lambda ops: ops.unassign(number, actor=me)
    if action == "escalate":
        tier = _int(params, "tier", required=False)
        if tier is not None and tier not in (1, 2, 3):
            raise FieldError("tier", "must be 1, 2 or 3")
        reason = _text(params, "reason", limit=2000)
        return lambda ops: ops.escalate(number, actor=me, tier=tier, reason=reason)
    if action in ("link", "merge"):
        other = _int(params, "other" if action == "link" else "into")
        assert other is not None
        if action == "link":
            return lambda ops: ops.link(number, other, actor=me)
        return lambda ops: ops.merge(number, other, actor=me)
    if action == "watch":
        email = _address(params, "email")
        name = _text(params, "name", limit=200).strip()
        return lambda ops: ops.add_watcher(number, Address(name=name, email=email), actor=me)
    if action == "unwatch":
        email = _address(params, "email")
        return lambda ops: ops.remove_watcher(number, email, actor=me)
    if action == "meeting":
        when = _text(params, "when", required=True, limit=200)
        link = _text(params, "link", limit=400).strip()
        try:
            meeting = parse_meeting(f"{when} {link}".strip(), now, settings.helpdesk.timezone,
                                    settings.agent_mail.meeting_minutes)  # fmt: skip
        except ValueError as exc:
            raise FieldError("when", str(exc)) from None
        return lambda ops: ops.meeting(number, agent=who, start=meeting.start, end=meeting.end,
                                       link=meeting.link)  # fmt: skip
    if action in ("resolve", "close", "reopen"):
        note = _text(params, "note")
        operation = {"resolve": TicketOps.resolve, "close": TicketOps.close,
                     "reopen": TicketOps.reopen}[action]  # fmt: skip
        return lambda ops: operation(ops, number, actor=me, note=note)
    raise FieldError("action", f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")


def version(params: Mapping[str, Any]) -> datetime | None:
    """The ticket's ``updated_at`` as the form showed it (None: do not check)."""
    value = params.get("version")
    if not value:
        return None
    try:
        seen = datetime.fromisoformat(str(value))
    except ValueError:
        raise FieldError("version", "not a version of this ticket") from None
    if seen.tzinfo is None:
        raise FieldError("version", "not a version of this ticket")
    return seen


def perform(
    sessions: sessionmaker[Session], applier: Applier, agent: AgentEntry, number: int,
    action: str, params: Mapping[str, Any], now: datetime,
    files: tuple[ParsedAttachment, ...] = (),
) -> Done:  # fmt: skip
    """Run one action in one transaction; raise FieldError / Forbidden / ActionRefused."""
    settings = applier.settings
    seen = version(params)
    operation = plan(settings, agent, applier.directory, number, action, params, files, now)
    with sessions.begin() as session:
        ops = TicketOps(session, applier, now)
        ticket = ops.expect(number, seen)
        if ticket.security and not may_see_security(settings, agent):
            raise Forbidden(f"ticket #{number} is a security incident")
        return operation(ops)


__all__ = ["ACTIONS", "ActionRefused", "FieldError", "Forbidden", "TooLarge", "Upload",
           "attachments", "perform", "plan"]  # fmt: skip
