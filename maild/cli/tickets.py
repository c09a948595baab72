"""Command-line ticket operations, sweeps and the report (``maild ticket ...``,
``maild sweep``, ``maild report``).

Every ``maild ticket ACTION N`` runs one `TicketOps` operation in one
transaction and queues its mails in the outbox (the running daemon sends
them). A refused operation prints one line and exits 65 (EX_DATAERR); an
unknown ticket exits 66 (EX_NOINPUT).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from maild.config.settings import Settings

EX_OK, EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_CANTCREAT = 0, 64, 65, 66, 73

ACTIONS = ("resolve", "close", "reopen", "escalate", "status", "priority", "type", "category",
           "reply", "first-response", "regulator-notified", "assign", "link", "major", "attach",
           "detach")  # fmt: skip


def actor_name() -> str:
    """Who runs this command, for the audit log: ``USER@cli``."""
    try:
        return f"{getpass.getuser()}@cli"
    except Exception:  # no user name in this environment
        return "admin@cli"


def add_parsers(ticket_sub: Any, sub: Any) -> None:
    """Add the actions under ``maild ticket`` and the ``sweep`` and ``report`` commands."""

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = ticket_sub.add_parser(name, help=help_text)
        p.add_argument("number", type=int)
        p.add_argument("--as", dest="actor", metavar="WHO", help="who does it (default: USER@cli)")
        return p

    action("resolve", "resolve, telling the requester").add_argument("--note", default="")
    action("close", "close, telling the requester").add_argument("--note", default="")
    action("reopen", "reopen a resolved or closed ticket").add_argument("--note", default="")
    p = action("escalate", "escalate to the next tier (or --tier N)")
    p.add_argument("--tier", type=int)
    p.add_argument("--reason", default="")
    p = action("status", "set the status")
    p.add_argument("status", choices=["open", "in_progress", "escalated", "pending_user",
                                      "resolved", "closed"])  # fmt: skip
    p.add_argument("--note", default="")
    action("priority", "set the priority (1..4 or P1..P4)").add_argument("priority")
    action("type", "set the type").add_argument("type", choices=["incident", "request"])
    action("category", "set the category").add_argument("category")
    p = action("reply", "send the requester a public reply (stops the first-response clock)")
    p.add_argument("text")
    p.add_argument("--name", default="", help="the agent's display name")
    p.add_argument(
        "--attach",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="send this file along (repeatable; attachments.reply_max_bytes in all)",
    )
    p.add_argument("--status", choices=["in_progress", "pending_user"],
                   help="then set this status (pending_user: waiting for the requester)")  # fmt: skip
    action("first-response", "record a first response given outside maild")
    action("regulator-notified", "close the 72-hour regulator deadline of a security incident"
           ).add_argument("--note", default="")  # fmt: skip
    action("assign", "assign to an agent of the directory (address or name)"
           ).add_argument("agent")  # fmt: skip
    action("link", "relate to another ticket").add_argument("other", type=int)
    p = action("major", "declare a major incident (tier 3 and the duty manager are told at "
               "once), and attach the reports CHILD...")  # fmt: skip
    p.add_argument("children", type=int, nargs="*", metavar="CHILD")
    p.add_argument("--note", default="")
    action("attach", "attach reports to major incident NUMBER (their requesters hear once that "
           "the problem is known)").add_argument("children", type=int, nargs="+", metavar="CHILD")  # fmt: skip
    action("detach", "detach reports from major incident NUMBER"
           ).add_argument("children", type=int, nargs="+", metavar="CHILD")  # fmt: skip

    p = ticket_sub.add_parser("attachment", help="write one of the ticket's attachments out")
    p.add_argument("number", type=int)
    p.add_argument("name", help="its file name as `ticket show` lists it, or its id")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write it here (default: standard output, unless a terminal)")  # fmt: skip

    sub.add_parser(
        "sweep", help="run the periodic sweeps once (SLA, reminders, closing, regulator)"
    )
    rep = sub.add_parser("report", help="SLA and backlog report")
    rep.add_argument("--since", type=date.fromisoformat, metavar="YYYY-MM-DD",
                     help="only tickets created on or after this day (UTC)")  # fmt: skip
    out = rep.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML page")


def handles(args: argparse.Namespace) -> bool:
    return args.command in ("sweep", "report") or (
        args.command == "ticket" and args.ticket_command in (*ACTIONS, "attachment")
    )


def run(args: argparse.Namespace, settings: Settings, sessions: Any) -> int:
    from maild.clock import SystemClock
    from maild.desk import agents
    from maild.desk.apply import Applier
    from maild.mail.render import Renderer

    clock = SystemClock()
    if args.command == "report":
        return _report(args, settings, sessions, clock.now())
    if args.command == "ticket" and args.ticket_command == "attachment":
        return _attachment(args, sessions)
    applier = Applier(settings, Renderer.from_settings(settings))
    agents.install(sessions, applier)
    if args.command == "sweep":
        from maild.desk.sweeps import run_all

        acted = run_all(sessions, applier, clock)
        print("sweeps: " + ", ".join(f"{name} {n}" for name, n in acted.items()))
        return EX_OK
    return _ticket_action(args, sessions, applier, clock.now())


def _ticket_action(args: argparse.Namespace, sessions: Any, applier: Any, now: datetime) -> int:
    from maild.desk.actions import ActionRefused, TicketNotFound, TicketOps
    from maild.mail.parse import Address

    actor = args.actor or actor_name()
    n = args.number
    try:
        with sessions.begin() as session:
            ops = TicketOps(session, applier, now)
            cmd = args.ticket_command
            if cmd == "resolve":
                done = ops.resolve(n, actor=actor, note=args.note)
            elif cmd == "close":
                done = ops.close(n, actor=actor, note=args.note)
            elif cmd == "reopen":
                done = ops.reopen(n, actor=actor, note=args.note)
            elif cmd == "escalate":
                done = ops.escalate(n, actor=actor, tier=args.tier, reason=args.reason)
            elif cmd == "status":
                done = ops.set_status(n, args.status, actor=actor, note=args.note)
            elif cmd == "priority":
                text = args.priority.upper().removeprefix("P")
                if not text.isdigit():
                    raise ActionRefused(f"priority must be 1..4 or P1..P4, got {args.priority!r}")
                done = ops.set_priority(n, int(text), actor=actor)
            elif cmd == "type":
                done = ops.set_type(n, args.type, actor=actor)
            elif cmd == "category":
                done = ops.set_category(n, args.category, actor=actor)
            elif cmd == "reply":
                agent = Address(name=args.name, email=args.actor or actor)
                done = ops.reply(n, agent=agent, text=args.text, status=args.status,
                                 attachments=_files(args.attach))  # fmt: skip
            elif cmd == "assign":
                agent = applier.directory.find(args.agent)
                if agent is None:
                    raise ActionRefused(f"no single active agent is called {args.agent!r}")
                done = ops.assign(n, agent.email, actor=actor)
            elif cmd == "link":
                done = ops.link(n, args.other, actor=actor)
            elif cmd in ("major", "attach", "detach"):
                done = _major(ops, cmd, n, args, actor)
            elif cmd == "first-response":
                done = ops.record_first_response(n, actor=actor)
            else:
                done = ops.regulator_notified(n, actor=actor, note=args.note)
    except TicketNotFound as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return EX_NOINPUT
    except ActionRefused as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return EX_DATAERR
    what = ", ".join(done.events) if done.events else "nothing to change"
    print(f"ticket #{done.ticket}: {what}; {len(done.outbox_ids)} mail(s) queued")
    return EX_OK


def _files(paths: list[Path]) -> tuple[Any, ...]:
    """`--attach` files as attachments (a safe display name, a type from the name)."""
    import mimetypes

    from maild.desk.actions import ActionRefused
    from maild.mail.parse import ParsedAttachment, safe_filename

    out = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ActionRefused(f"cannot read {path}: {exc.strerror}") from None
        ctype = mimetypes.guess_type(path.name, strict=False)[0] or "application/octet-stream"
        out.append(ParsedAttachment(safe_filename(path.name, ctype), ctype, data))
    return tuple(out)


def _attachment(args: argparse.Namespace, sessions: Any) -> int:
    """``maild ticket attachment N NAME [-o FILE]``: the bytes as stored."""
    from maild.desk import attachments

    with sessions() as session:
        found = attachments.find(session, args.number, args.name)
        if len({a.sha256 for a in found}) > 1:
            listed = "; ".join(f"id {a.id} ({a.size} bytes)" for a in found)
            print(f"maild: ticket #{args.number} has {len(found)} different attachments called "
                  f"{args.name!r}: {listed}; give the id instead", file=sys.stderr)  # fmt: skip
            return EX_DATAERR
        if not found:
            print(f"maild: ticket #{args.number} has no attachment {args.name!r} "
                  "(see maild ticket show)", file=sys.stderr)  # fmt: skip
            return EX_NOINPUT
        data = attachments.content(session, found[-1].sha256)
    if args.output is None or str(args.output) == "-":
        if sys.stdout.isatty():
            print("maild: not writing a file to a terminal; use -o FILE", file=sys.stderr)
            return EX_USAGE
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return EX_OK
    try:
        args.output.write_bytes(data)
    except OSError as exc:
        print(f"maild: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return EX_CANTCREAT
    print(f"{found[-1].filename}: {len(data)} bytes written to {args.output}", file=sys.stderr)
    return EX_OK


def _major(ops: Any, cmd: str, n: int, args: argparse.Namespace, actor: str) -> Any:
    """``ticket major N [CHILD...]``, ``ticket attach N CHILD...``, ``ticket detach N CHILD...``."""
    from maild.desk.actions import Done

    done = Done(n)
    if cmd == "major" and not ops.get(n).major:
        done = ops.declare_major(n, actor=actor, note=args.note)
    for child in args.children:
        step = (ops.detach if cmd == "detach" else ops.attach)(n, child, actor=actor)
        done.events += step.events
        done.outbox_ids += step.outbox_ids
    return done


def _report(args: argparse.Namespace, settings: Settings, sessions: Any, now: datetime) -> int:
    from maild.desk import report

    since = datetime.combine(args.since, datetime.min.time(), UTC) if args.since else None
    with sessions() as session:
        data = report.build(session, settings, now, since)
    if args.json:
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    elif args.html:
        try:
            args.html.write_text(report.render_html(data), encoding="utf-8")
        except OSError as exc:
            print(f"maild: cannot write {args.html}: {exc.strerror}", file=sys.stderr)
            return EX_CANTCREAT
        print(f"report written to {args.html}")
    else:
        sys.stdout.write(report.render_text(data))
    return EX_OK
