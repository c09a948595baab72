"""The ``maild`` command line.

Exit statuses follow sysexits(3): 0 ok, 65 EX_DATAERR (input is not a
message), 75 EX_TEMPFAIL (try again later), 78 EX_CONFIG (one line naming
the bad key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import mailbox
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from maild import __version__
from maild.addresses import ServedAddresses, normalize_address
from maild.cli import search as cli_search
from maild.cli import tickets as cli_tickets
from maild.cli import web as cli_web
from maild.clock import SystemClock
from maild.config.settings import Settings, load_settings
from maild.errors import ConfigError
from maild.log import escape, escape_output, setup_logging

log = logging.getLogger("maild")

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maild", description="Help-desk mail gateway.")
    p.add_argument("--config", metavar="PATH", help="TOML file (default: $MAILD_CONFIG)")
    p.add_argument("--version", action="version", version=f"maild {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("serve", help="run the daemon in the foreground")
    sub.add_parser("check-config", help="validate the configuration and exit")

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="create or upgrade the schema")

    ingest = sub.add_parser("ingest", help="store one message from stdin (for MTA pipes)")
    ingest.add_argument("--to", metavar="ADDRESS", help="the help-desk address it was sent to")
    ingest.add_argument("--no-notify", action="store_true", help="send no acknowledgement")

    sub.add_parser(
        "drain", help="process every pending message and send due mail, then exit (no daemon)"
    )

    imp = sub.add_parser("import", help="import an mbox file or a Maildir folder")
    imp.add_argument("path", type=Path)
    imp.add_argument("--no-notify", action="store_true", help="record without acknowledgements")
    imp.add_argument("--close-before", metavar="YYYY-MM-DD",
                     help="then close (quietly) the imported tickets last written to before "
                          "this day (UTC)")  # fmt: skip

    tickets = sub.add_parser("tickets", help="list tickets")
    t_sub = tickets.add_subparsers(dest="tickets_command", required=True, metavar="ACTION")
    t_list = t_sub.add_parser("list")
    t_list.add_argument("--status")
    t_list.add_argument("--json", action="store_true")

    ticket = sub.add_parser("ticket", help="one ticket")
    tk_sub = ticket.add_subparsers(dest="ticket_command", required=True, metavar="ACTION")
    tk_show = tk_sub.add_parser("show")
    tk_show.add_argument("number", type=int)
    tk_show.add_argument("--json", action="store_true")

    outbox = sub.add_parser("outbox", help="outgoing mail")
    o_sub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    o_list = o_sub.add_parser("list")
    o_list.add_argument("--status")
    o_list.add_argument("--json", action="store_true")
    o_retry = o_sub.add_parser("retry", help="send dead mail again (the same message)")
    o_retry.add_argument("ids", type=int, nargs="+", metavar="ID")
    o_retry.add_argument("--as", dest="actor", metavar="WHO",
                         help="who asked (default: USER@cli)")  # fmt: skip

    mailbox = sub.add_parser("mailbox", help="IMAP mailboxes ([[imap.mailboxes]])")
    m_sub = mailbox.add_subparsers(dest="mailbox_command", required=True, metavar="ACTION")
    m_check = m_sub.add_parser("check", help="connect, log in, report what maild will use")
    m_check.add_argument("name", nargs="?", help="the mailbox (default: every mailbox)")

    inbound = sub.add_parser("inbound", help="every received message and its fate")
    i_sub = inbound.add_subparsers(dest="inbound_command", required=True, metavar="ACTION")
    i_list = i_sub.add_parser("list", help="newest first: ticket, reply, ignored, spam, ...")
    i_list.add_argument("--outcome", action="append", metavar="FATE",
                        choices=["ticket", "reply", "ignored", "spam", "quarantined", "pending"],
                        help="only these (repeatable): ticket, reply, ignored, spam, "
                             "quarantined, pending")  # fmt: skip
    i_list.add_argument("--since", metavar="WHEN", help="received at or after (YYYY-MM-DD or "
                        "an ISO date-time; UTC unless it names a zone)")  # fmt: skip
    i_list.add_argument("--limit", type=int, default=200, help="at most this many (200)")
    i_list.add_argument("--json", action="store_true")
    i_show = i_sub.add_parser("show", help="one message: fate, rule, reason, headers")
    i_show.add_argument("id", type=int)
    i_show.add_argument("--json", action="store_true")
    i_show.add_argument("--raw", action="store_true", help="write the raw bytes to stdout")
    i_replay = i_sub.add_parser(
        "replay", help="run ignored or spam messages through again as if they were wanted"
    )
    i_replay.add_argument("ids", type=int, nargs="+", metavar="ID")
    i_replay.add_argument("--as", dest="actor", metavar="WHO",
                          help="who chose it (default: USER@cli)")  # fmt: skip

    quarantine = sub.add_parser("quarantine", help="messages set aside")
    q_sub = quarantine.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")
    q_list = q_sub.add_parser("list")
    q_list.add_argument("--json", action="store_true")
    agents = sub.add_parser("agents", help="the agent directory")
    a_sub = agents.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    a_list = a_sub.add_parser("list", help="sync the directory with the configuration and list it")
    a_list.add_argument("--json", action="store_true")
    cli_tickets.add_parsers(tk_sub, sub)
    cli_search.add_parsers(sub)
    cli_web.add_parsers(sub)
    q_show = q_sub.add_parser("show", help="one quarantined message: reason and headers")
    q_show.add_argument("id", type=int)
    q_show.add_argument("--json", action="store_true")
    q_show.add_argument("--raw", action="store_true", help="write the raw bytes to stdout")
    q_replay = q_sub.add_parser(
        "replay", help="run quarantined messages through the pipeline again"
    )
    q_replay.add_argument("ids", type=int, nargs="+", metavar="ID")
    q_drop = q_sub.add_parser("drop", help="delete quarantined messages for good")
    q_drop.add_argument("ids", type=int, nargs="+", metavar="ID")

    contact = sub.add_parser("contact", help="one person who writes in: state, reset")
    c_sub = contact.add_subparsers(dest="contact_command", required=True, metavar="ACTION")
    c_show = c_sub.add_parser("show", help="bounce state, rate limits, held notices, tickets")
    c_show.add_argument("address")
    c_show.add_argument("--json", action="store_true")
    c_reset = c_sub.add_parser(
        "reset", help="mark deliverable again and clear loop_suspected on their tickets"
    )
    c_reset.add_argument("address")

    hp = sub.add_parser("hash-password", help="hash a password (stdin) for smtp.auth_users_file")
    hp.add_argument("user", nargs="?", help="print user:hash instead of the hash alone")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    # Nothing maild creates (database, secret, outgoing mail, reports) is for
    # other users; the files that hold secrets are 0600 whatever the umask.
    os.umask(0o027)
    # Everything printed may carry text from mail: control characters are
    # shown, never sent to the terminal (maild.log.escape).
    escape_output()
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"maild: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    setup_logging(settings.log.level)
    try:
        return _dispatch(args, settings)
    except ConfigError as exc:
        print(f"maild: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    cmd = args.command
    if cmd == "check-config":
        return cmd_check_config(settings)
    if cmd == "serve":
        from maild.service.daemon import Daemon

        return asyncio.run(Daemon(settings).run())
    if cmd == "db":
        return cmd_db_upgrade(settings)
    if cmd == "ingest":
        return cmd_ingest(settings, args.to, notify=not args.no_notify)
    if cmd == "import":
        return cmd_import(settings, args.path, notify=not args.no_notify,
                          close_before=args.close_before)  # fmt: skip
    if cmd == "drain":
        return cmd_drain(settings)
    if cmd == "agents":
        return cmd_agents(settings, as_json=args.json)
    if cli_search.handles(args):
        return cli_search.run(args, settings, _sessions(settings))
    if cli_web.handles(args):
        return cli_web.run(args, settings, _sessions(settings))
    if cli_tickets.handles(args):
        return cli_tickets.run(args, settings, _sessions(settings))
    if cmd == "mailbox":
        return cmd_mailbox_check(settings, args.name)
    if cmd == "hash-password":
        return cmd_hash_password(args.user)
    if cmd == "contact":
        return cmd_contact(args, settings)
    if cmd == "quarantine" and args.quarantine_command != "list":
        return cmd_quarantine(args, settings)
    if cmd == "inbound":
        return cmd_inbound(args, settings)
    if cmd == "outbox" and args.outbox_command == "retry":
        return cmd_outbox_retry(args, settings)
    return cmd_view(args, settings)


def cmd_hash_password(user: str | None) -> int:
    from maild.intake.smtpauth import hash_password

    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("maild: no password on stdin", file=sys.stderr)
        return EX_DATAERR
    hashed = hash_password(password)
    print(f"{user}:{hashed}" if user else hashed)
    return EX_OK


def cmd_contact(args: argparse.Namespace, settings: Settings) -> int:
    """``maild contact show|reset ADDRESS``."""
    from maild.desk import contacts

    sessions = _sessions(settings)
    now = SystemClock().now()
    if args.contact_command == "reset":
        with sessions.begin() as session:
            done = contacts.reset(session, args.address, actor=cli_tickets.actor_name(), now=now)
        if done is None:
            print(f"maild: no contact {args.address}", file=sys.stderr)
            return EX_NOINPUT
        cleared = ", ".join(f"#{n}" for n in done["loop_suspected_cleared"]) or "none"
        print(f"{done['email']}: bounce state {done['bounce_state']['was']} -> ok; "
              f"loop_suspected cleared on: {cleared}")  # fmt: skip
        return EX_OK
    with sessions() as session:
        data = contacts.show(session, settings, args.address, now)
    if data is None:
        print(f"maild: no contact {args.address}", file=sys.stderr)
        return EX_NOINPUT
    if args.json:
        _print_json(data)
        return EX_OK
    print(f"{escape(data['name'] or '')} <{escape(data['email'])}>".lstrip())
    state = data["bounce_state"]
    if data["undeliverable_until"]:
        state += f" (no automatic mail until {data['undeliverable_until']})"
    print(f"  bounce state:     {state}")
    print(f"  automatic mails:  {data['automatic_mails_last_hour']} in the last hour, "
          f"{data['held_notices']} held for a digest")  # fmt: skip
    for t in data["tickets"]:
        loop = ", loop suspected" if t["loop_suspected"] else ""
        print(f"  ticket #{t['number']}: {t['status']}{loop}")
    return EX_OK


def cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    """show / replay / drop (``list`` is a plain view)."""
    from maild.desk import quarantine

    sessions = _sessions(settings)
    action = args.quarantine_command
    if action == "show":
        with sessions() as session:
            data = quarantine.show(session, args.id)
        if data is None:
            print(f"maild: no quarantined message {args.id}", file=sys.stderr)
            return EX_NOINPUT
        if args.raw:
            sys.stdout.buffer.write(data.pop("raw"))
            return EX_OK
        data.pop("raw")
        if args.json:
            _print_json(data)
        else:
            when = _when(data["received_at"], settings)
            print(f"inbound {data['id']} from {data['source']}, received {when}, "
                  f"{data['size']} bytes, {data['attempts']} attempt(s)")  # fmt: skip
            print(f"  reason: {escape(data['reason'] or '')}")
            for name, value in data["headers"]:
                print(f"  {escape(name)}: {escape(value)}")
        return EX_OK
    if action == "drop":
        with sessions.begin() as session:
            dropped = quarantine.drop(session, args.ids)
        for inbound_id in args.ids:
            word = "dropped" if inbound_id in dropped else "not in quarantine:"
            print(f"{word} inbound {inbound_id}")
        return EX_OK if len(dropped) == len(set(args.ids)) else EX_NOINPUT
    # replay
    with sessions.begin() as session:
        queued = quarantine.release(session, args.ids)
    results = _drain_now(settings, sessions)
    status = EX_OK
    for inbound_id in args.ids:
        if inbound_id not in queued:
            print(f"not in quarantine: inbound {inbound_id}")
            status = EX_NOINPUT
            continue
        p = results.get(inbound_id)
        outcome = p.outcome if p is not None else "pending"
        ticket = f" ticket #{p.ticket_id}" if p is not None and p.ticket_id else ""
        print(f"inbound {inbound_id}: {outcome}{ticket} {p.reason if p else ''}".rstrip())
    return status


def _drain_now(settings: Settings, sessions: Any) -> dict[int, Any]:
    """Process what is pending and send what is due; the outcome per inbound row."""
    from maild.desk import agents
    from maild.desk.apply import Applier
    from maild.mail.render import Renderer
    from maild.service.parsepool import ParsePool
    from maild.service.sender import Sender, transport_from_settings
    from maild.service.worker import Worker

    clock = SystemClock()
    parser = ParsePool.from_settings(settings)
    applier = Applier(settings, Renderer.from_settings(settings))
    agents.install(sessions, applier)
    try:
        results = {p.inbound_id: p for p in Worker(sessions, settings, clock, applier,
                                                   parser=parser).drain()}  # fmt: skip
    finally:
        parser.close()
    Sender(sessions, settings, clock, transport_from_settings(settings)).drain()
    return results


def _since(text: str) -> Any:
    from datetime import UTC, datetime

    when = datetime.fromisoformat(text)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def cmd_inbound(args: argparse.Namespace, settings: Settings) -> int:
    """``maild inbound list | show | replay``: every message's fate (maild.desk.inbound)."""
    from maild.cli.tickets import actor_name
    from maild.desk import inbound

    sessions = _sessions(settings)
    action = args.inbound_command
    if action == "list":
        try:
            since = _since(args.since) if args.since else None
        except ValueError:
            print(f"maild: --since: not a date or date-time: {args.since!r}", file=sys.stderr)
            return EX_USAGE
        with sessions() as session:
            rows = inbound.list_inbound(session, fates=args.outcome or (), since=since,
                                        limit=max(1, args.limit))  # fmt: skip
        if args.json:
            _print_json(rows)
            return EX_OK
        for r in rows:
            where = f"#{r['ticket']}" if r["ticket"] else ""
            why = f"{r['rule']}: {r['reason']}" if r["rule"] else (r["reason"] or "")
            if r["fate"] in ("ticket", "reply"):
                why = ""
            flags = " [reused Message-ID]" if r["message_id_clash"] else ""
            flags += f" [replayed by {r['replayed_by']}]" if r["replayed_by"] else ""
            print(f"{r['id']:<6} {_when(r['received_at'], settings):<26} {r['fate']:<11} {where:<6} "
                  f"{r['from'][:32]:<32} {r['subject'][:40]}{flags}"
                  + (f"\n       {why[:150]}" if why else ""))  # fmt: skip
        return EX_OK
    if action == "show":
        with sessions() as session:
            data = inbound.show(session, args.id)
        if data is None:
            print(f"maild: no inbound message {args.id}", file=sys.stderr)
            return EX_NOINPUT
        raw = data.pop("raw")
        if args.raw:
            sys.stdout.buffer.write(raw)
            return EX_OK
        if args.json:
            _print_json(data)
            return EX_OK
        ticket = f" (ticket #{data['ticket']})" if data["ticket"] else ""
        print(f"inbound {data['id']}: {data['fate']}{ticket}, from {data['source']}, received "
              f"{_when(data['received_at'], settings)}, {data['size']} bytes")  # fmt: skip
        if data["rule"] or data["reason"]:
            print(f"  {data['rule'] or 'reason'}: {data['reason'] or ''}")
        if data["message_id_clash"]:
            print(f"  reused Message-ID: inbound {data['message_id_clash']} has the same one "
                  "with other content")  # fmt: skip
        if data["replayed_by"]:
            print(f"  replayed by {data['replayed_by']} at {_when(data['replayed_at'], settings)}")
        for name, value in data["headers"]:
            print(f"  {name}: {value}")
        return EX_OK
    # replay
    actor = args.actor or actor_name()
    with sessions.begin() as session:
        asked = inbound.replay(session, args.ids, actor, SystemClock().now())
    if any(a.queued for a in asked):
        _drain_now(settings, sessions)  # (a running daemon may take them first: same result)
    status = EX_OK
    for a in asked:
        if not a.queued:
            print(f"inbound {a.inbound_id}: not replayed: {a.why}")
            status = EX_NOINPUT
            continue
        with sessions() as session:
            now = inbound.show(session, a.inbound_id)
        assert now is not None
        if now["fate"] == "pending":
            print(f"inbound {a.inbound_id}: queued (the running daemon is processing it)")
            continue
        if now["fate"] == "ticket":
            said = f"opened ticket #{now['ticket']}"
        elif now["fate"] == "reply":
            said = f"recorded on ticket #{now['ticket']}"
        else:
            said = f"{now['fate']}: {now['reason'] or ''}"
        print(f"inbound {a.inbound_id}: {said}")
    return status


def cmd_outbox_retry(args: argparse.Namespace, settings: Settings) -> int:
    """``maild outbox retry ID...``: dead mail goes out again; its ticket records who asked."""
    from maild.cli.tickets import actor_name
    from maild.desk import deadmail
    from maild.desk.apply import Applier
    from maild.mail.render import Renderer
    from maild.service.sender import Sender, transport_from_settings

    sessions = _sessions(settings)
    clock = SystemClock()
    applier = Applier(settings, Renderer.from_settings(settings))
    with sessions.begin() as session:
        asked = deadmail.retry(session, applier, args.ids, args.actor or actor_name(),
                               clock.now())  # fmt: skip
    if any(a.queued for a in asked):
        Sender(sessions, settings, clock, transport_from_settings(settings)).drain()
    from sqlalchemy import select

    from maild.store.models import Outbox

    with sessions() as session:
        now = {r.id: r for r in session.execute(
            select(Outbox.id, Outbox.status, Outbox.last_error).where(Outbox.id.in_(args.ids)))}  # fmt: skip
    status = EX_OK
    for a in asked:
        if not a.queued:
            print(f"outbox {a.outbox_id}: not retried: {a.why}")
            status = EX_NOINPUT
            continue
        r = now[a.outbox_id]
        error = f" ({r.last_error})" if r.status != "sent" and r.last_error else ""
        print(f"outbox {a.outbox_id}: queued again; now {r.status}{error}")
    return status


def _sessions(settings: Settings, *, ensure: bool = True) -> Any:
    from maild.store.db import ensure_schema, make_engine, session_factory

    engine = make_engine(settings.database.url)
    if ensure:
        ensure_schema(engine)
    return session_factory(engine)


def cmd_check_config(settings: Settings) -> int:
    from maild.mail.render import Renderer

    renderer = Renderer.from_settings(settings)  # templates compile, or a ConfigError
    from maild.pipeline.triage import Rulebook

    rules = Rulebook.from_settings(settings)  # triage rules compile, or a ConfigError
    from maild.mail.language import load_languages
    from maild.pipeline.screen import recognisers

    recognisers(settings.languages.directory)  # language data compiles, or a ConfigError
    languages = load_languages(settings.languages.directory)
    from maild.mail.tokens import check_secret_mode

    check_secret_mode(settings.helpdesk.secret_file)  # others may read it: a ConfigError
    from maild.pipeline.alerts import compile_rules

    alert_rules = compile_rules(settings.alerts)  # so do the [[alerts.rules]]
    print(f"configuration OK ({settings.source})")
    print(f"  serving:  {', '.join(settings.helpdesk.addresses)}")
    print(f"  database: {settings.database.url}")
    smtp = f"{'LMTP' if settings.smtp.lmtp else 'SMTP'} on {settings.smtp.listen}"
    print(f"  intake:   {smtp if settings.smtp.enabled else 'SMTP disabled'}")
    for box in settings.imap.mailboxes:
        after = f"move to {box.processed_folder}" if box.after == "move" else "flag"
        print(f"  imap:     {box.name}: {box.username} at {box.host}:{box.effective_port}, "
              f"{box.folder}, then {after}")  # fmt: skip
    if settings.outgoing.transport == "smtp":
        print(f"  outgoing: SMTP relay {settings.outgoing.smtp_host}:{settings.outgoing.smtp_port}")
    else:
        print(f"  outgoing: Maildir {settings.outgoing.maildir}")
    print(f"  triage:   {len(rules.category_names)} categories ({', '.join(rules.category_names)})")
    extra = f" (with {settings.languages.directory})" if settings.languages.directory else ""
    print(f"  language data: {', '.join(languages.codes)}{extra}")
    print(
        f"  mail in:  {', '.join(renderer.languages)} (default "
        f"{settings.helpdesk.default_language}; times in {settings.helpdesk.timezone})"
    )
    sla = settings.sla
    print(f"  SLA:      {sla.business_hours or '24/7'}; first response "
          f"{'/'.join(f'{h:g}' for h in sla.first_response_hours)} h, resolution "
          f"{'/'.join(f'{h:g}' for h in sla.resolution_hours)} h (P1..P4)")  # fmt: skip
    a = settings.alerts
    if a.senders:
        print(f"  alerts:   from {', '.join(a.senders)}: tier {a.tier}, recovery {a.recovery}, "
              f"{len(alert_rules)} rule(s) besides the stock formats")  # fmt: skip
    else:
        print("  alerts:   none (alerts.senders is empty)")
    mj = settings.major
    print(f"  major:    {mj.threshold} new incidents of one category or host within "
          f"{mj.window_minutes:g} min" if mj.enabled else "  major:    off (declared by agents "
          "only)")  # fmt: skip
    tiers = settings.tiers
    groups = [f"{n} {len(getattr(tiers, n))}" for n in ("tier1", "tier2", "tier3",
              "duty_manager", "security")]  # fmt: skip
    print(f"  tiers:    addresses per group: {', '.join(groups)}")
    for key, path in _password_files(settings):
        mode = path.stat().st_mode & 0o777 if path.is_file() else 0
        if mode & 0o007:
            print(f"  warning:  {key} ({path}) is readable by other users (mode {mode:04o}): "
                  f"chmod 600 it")  # fmt: skip
    return EX_OK


def _password_files(settings: Settings) -> list[tuple[str, Path]]:
    files = [("smtp.auth_users_file", settings.smtp.auth_users_file),
             ("outgoing.smtp_password_file", settings.outgoing.smtp_password_file)]  # fmt: skip
    files += [(f"imap.mailboxes[{i}].password_file", m.password_file)
              for i, m in enumerate(settings.imap.mailboxes)]  # fmt: skip
    return [(key, path) for key, path in files if path is not None]


def cmd_db_upgrade(settings: Settings) -> int:
    from maild.store.db import current_revision, head_revision, make_engine, upgrade

    engine = make_engine(settings.database.url)
    before = current_revision(engine)
    upgrade(engine)
    after = current_revision(engine)
    if before == after:
        print(f"database is up to date (revision {after})")
    else:
        print(f"database upgraded: {before or 'empty'} -> {after} (head {head_revision(engine)})")
    return EX_OK


# --- ingest and import --------------------------------------------------------


def _recipient(raw: bytes, served: ServedAddresses, default: str) -> str:
    from maild.mail.parse import peek_recipients

    for addr in peek_recipients(raw):
        base = served.base_of(addr)
        if base:
            return base
    return default


def cmd_ingest(settings: Settings, to: str | None, *, notify: bool) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from maild.intake.commit import Delivery, store_one, traced
    from maild.mail.parse import looks_like_message
    from maild.store.states import InboundStatus, Source

    limit = settings.limits.max_message_bytes
    raw = sys.stdin.buffer.read(limit + 1)
    if len(raw) > limit:
        print(f"maild: message larger than limits.max_message_bytes ({limit})", file=sys.stderr)
        return EX_DATAERR
    served = ServedAddresses.of(settings.helpdesk.addresses)
    if to:
        recipient = served.base_of(to) or normalize_address(to)
    else:
        recipient = _recipient(raw, served, served_default(settings))
    is_message = looks_like_message(raw)
    trace = b""
    if is_message:  # our Received line on top (maild.mail.trace)
        raw, trace = traced(raw, settings, SystemClock().now(), protocol="local",
                            note="maild ingest")  # fmt: skip
    delivery = Delivery(
        raw=raw,
        trace=trace,
        source=Source.INGEST,
        recipient=recipient,
        envelope_from=os.environ.get("SENDER"),
        envelope_to=(normalize_address(to) if to else recipient,),  # keeps a reply address
        notify=notify,
        status=InboundStatus.PENDING if is_message else InboundStatus.QUARANTINED,
        error=None if is_message else "not an email message: no header fields found",
    )
    try:
        sessions = _sessions(settings)
        stored = store_one(sessions, delivery, SystemClock())
    except (SQLAlchemyError, OSError) as exc:
        print(f"maild: cannot store the message now ({type(exc).__name__}); try again later",
              file=sys.stderr)  # fmt: skip
        return EX_TEMPFAIL
    if not is_message:
        print(f"maild: input is not an email message (kept in quarantine as inbound "
              f"{stored.inbound_id})", file=sys.stderr)  # fmt: skip
        return EX_DATAERR
    word = "duplicate of" if stored.duplicate else "stored as"
    print(f"{word} inbound {stored.inbound_id}", file=sys.stderr)
    return EX_OK


def cmd_drain(settings: Settings) -> int:
    """Burst mode: what the daemon's worker and sender would do, once."""
    from maild.desk import agents
    from maild.desk.apply import Applier
    from maild.mail.render import Renderer
    from maild.service.parsepool import ParsePool
    from maild.service.sender import Sender, transport_from_settings
    from maild.service.worker import Worker

    sessions = _sessions(settings)
    clock = SystemClock()
    parser = ParsePool.from_settings(settings)
    applier = Applier(settings, Renderer.from_settings(settings))
    agents.install(sessions, applier)
    try:
        processed = Worker(sessions, settings, clock, applier, parser=parser).drain()
    finally:
        parser.close()
    sent = Sender(sessions, settings, clock, transport_from_settings(settings)).drain()
    print(f"{len(processed)} message(s) processed; outgoing: {sent.sent} sent, "
          f"{sent.retried} to retry, {sent.dead} dead")  # fmt: skip
    return EX_OK


def cmd_agents(settings: Settings, *, as_json: bool) -> int:
    """``maild agents list``: the directory after syncing it with the configuration."""
    from maild.desk import agents
    from maild.desk.apply import Applier
    from maild.mail.render import Renderer

    applier = Applier(settings, Renderer.from_settings(settings))
    directory = agents.install(_sessions(settings), applier)
    data = agents.rows(directory)
    if as_json:
        _print_json(data)
        return EX_OK
    if not data:
        print("no agents (add [[agents]] tables to the configuration)")
        return EX_OK
    print(f"{'id':>4}  {'email':<32} {'name':<24} {'tier':>4}  {'lang':<4}  {'active':<6}  groups")
    for a in data:
        print(f"{a['id']:>4}  {a['email']:<32} {a['name'][:24]:<24} {a['tier']:>4}  "
              f"{a['language']:<4}  {'yes' if a['active'] else 'no':<6}  "
              f"{', '.join(a['groups'])}")  # fmt: skip
    return EX_OK


def served_default(settings: Settings) -> str:
    return normalize_address(settings.helpdesk.primary_address)


def iter_source(path: Path) -> tuple[int, Iterator[bytes]]:
    """(count, messages in arrival order) of an mbox file or a Maildir folder."""
    if path.is_dir():
        files = [
            p for sub in ("cur", "new") if (path / sub).is_dir() for p in (path / sub).iterdir()
        ]
        if not files and not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise ConfigError("import", f"{path} is neither an mbox file nor a Maildir folder")

        def key(p: Path) -> tuple[float, str]:
            head = p.name.split(".", 1)[0]
            try:
                return float(head), p.name
            except ValueError:
                return p.stat().st_mtime, p.name

        files.sort(key=key)
        return len(files), (p.read_bytes() for p in files)
    if not path.is_file():
        raise ConfigError("import", f"no such file or folder: {path}")
    box = mailbox.mbox(path, create=False)
    keys = list(box.keys())
    return len(keys), (box.get_bytes(k) for k in keys)


class Progress:
    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.enabled = stream.isatty()
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total)
        pct = 100 * self.done // self.total
        self.stream.write(
            f"\r  [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {pct}%"
        )
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def cmd_import(settings: Settings, path: Path, *, notify: bool,
               close_before: str | None = None) -> int:  # fmt: skip
    """Import an archive: tickets and articles carry its dates, SLA deadlines come from
    them (those already past raise no alarm), the old desk's own replies become
    outgoing articles on their threads; `close_before` closes the old tickets."""
    from datetime import UTC, datetime

    from maild.desk import agents, archive
    from maild.desk.apply import Applier
    from maild.intake.commit import Delivery, store
    from maild.mail.render import Renderer
    from maild.service.parsepool import ParsePool
    from maild.service.sender import Sender, transport_from_settings
    from maild.service.worker import Worker
    from maild.store.states import Outcome, Source

    before = None
    if close_before:
        try:
            before = datetime.combine(datetime.fromisoformat(close_before).date(),
                                      datetime.min.time(), UTC)  # fmt: skip
        except ValueError:
            print(f"maild: --close-before: not a date: {close_before!r}", file=sys.stderr)
            return EX_USAGE
    total, messages = iter_source(path)
    sessions = _sessions(settings)
    clock = SystemClock()
    served = ServedAddresses.of(settings.helpdesk.addresses)
    default = served_default(settings)
    parser = ParsePool.from_settings(settings)
    applier = Applier(settings, Renderer.from_settings(settings))
    agents.install(sessions, applier)
    worker = Worker(sessions, settings, clock, applier, parser=parser)
    mine: set[int] = set()
    opened: set[int] = set()
    tally: Counter[str] = Counter()
    progress = Progress(total, getattr(sys.stderr, "inner", sys.stderr))  # counts only
    batch: list[Delivery] = []

    def flush() -> None:
        with sessions.begin() as session:
            results = store(session, batch, clock.now())
        for stored in results:
            if stored.duplicate:
                tally["duplicates"] += 1
            else:
                mine.add(stored.inbound_id)
        # Process as we go, in arrival order, so replies find their tickets.
        for processed in worker.drain():
            if processed.inbound_id in mine and processed.outcome is not None:
                tally[str(processed.outcome)] += 1
                if processed.rule == "imported_desk_reply":
                    tally["desk"] += 1
                if processed.outcome == Outcome.NEW_TICKET and processed.ticket_id:
                    opened.add(processed.ticket_id)
        progress.update(len(batch))
        batch.clear()

    try:
        for raw in messages:
            batch.append(Delivery(raw=raw, source=Source.IMPORT,
                                  recipient=_recipient(raw, served, default), notify=notify))  # fmt: skip
            if len(batch) >= 200:
                flush()
        if batch:
            flush()
    finally:
        parser.close()
    progress.finish()
    closed: list[int] = []
    if before is not None:
        with sessions.begin() as session:
            closed = archive.close_before(session, applier, opened, before)
    sent = (
        Sender(sessions, settings, clock, transport_from_settings(settings)).drain()
        if notify
        else None
    )
    print(f"imported {total} message(s) from {path}")
    print(f"  tickets created:   {tally[str(Outcome.NEW_TICKET)]}")
    print(f"  replies threaded:  {tally[str(Outcome.APPENDED)]}"
          + (f" ({tally['desk']} the help desk's own)" if tally["desk"] else ""))  # fmt: skip
    print(f"  ignored:           {tally[str(Outcome.IGNORED)]}")
    print(f"  quarantined:       {tally[str(Outcome.QUARANTINED)]}")
    print(f"  already stored:    {tally['duplicates']}")
    if before is not None:
        print(f"  closed (last message before {before.date().isoformat()}): {len(closed)}")
    if sent is not None:
        print(f"  acknowledgements:  {sent.sent} sent, {sent.retried} to retry, {sent.dead} dead")
    return EX_OK


# --- IMAP mailboxes -----------------------------------------------------------------


def cmd_mailbox_check(settings: Settings, name: str | None) -> int:
    """Exit 0 when every mailbox checked is ready; 69 cannot connect, 77 login
    refused, 66 the folder to read is missing, 64 no such mailbox configured."""
    from maild.intake.imap import check_mailbox

    boxes = settings.imap.mailboxes
    if name is not None:
        boxes = tuple(m for m in boxes if m.name == name)
        if not boxes:
            known = ", ".join(m.name for m in settings.imap.mailboxes) or "none"
            print(f"maild: no mailbox named {name!r} in imap.mailboxes (configured: {known})",
                  file=sys.stderr)  # fmt: skip
            return EX_USAGE
    if not boxes:
        print("no IMAP mailboxes configured (add [[imap.mailboxes]] tables)")
        return EX_OK
    worst = EX_OK
    checkpoints = _checkpoints(settings)
    for box in boxes:
        report = check_mailbox(box, settings.imap.timeout_seconds)
        print(f"mailbox {box.name}: {report.where} as {box.username}")
        auth = "XOAUTH2 token from oauth2_token_command" if box.oauth2_token_command else "password"
        if not report.connected:
            print(f"  connect:      FAILED: {report.error}")
            worst = worst or EX_UNAVAILABLE
            continue
        if not report.logged_in:
            print(f"  login:        FAILED ({auth}): {report.error}")
            worst = worst or EX_NOPERM
            continue
        print(f"  login:        ok ({auth})")
        flags = ", ".join(
            f"{c} {'yes' if report.has(c) else 'no'}" for c in ("IDLE", "MOVE", "UIDPLUS")
        )
        print(f"  capabilities: {flags}")
        if not report.has("IDLE"):
            print(
                f"                no IDLE: new mail is picked up every {settings.imap.poll_seconds:g}s"
            )
        if box.after == "move" and not report.has("MOVE"):
            print(
                "                no MOVE: COPY, then \\Deleted and "
                + ("UID EXPUNGE" if report.has("UIDPLUS") else "EXPUNGE (the whole folder)")
            )
        for folder in report.folders:
            role = "reads" if folder.name == box.folder else "moves to"
            if folder.exists:
                print(f"  folder:       {folder.name} ({role}): {folder.messages} message(s), "
                      f"{folder.unseen} unseen, UIDVALIDITY {folder.uidvalidity}, "
                      f"UIDNEXT {folder.uidnext}")  # fmt: skip
            elif folder.name == box.folder:
                print(f"  folder:       {folder.name} ({role}): MISSING")
                worst = worst or EX_NOINPUT
            else:
                print(f"  folder:       {folder.name} ({role}): missing, created at first run")
        if box.after == "flag":
            print("  after import: flag \\Seen and $MaildProcessed (messages stay in the folder)")
        if report.error:
            print(f"  error:        {report.error}")
            worst = worst or EX_UNAVAILABLE
        saved = checkpoints.get((box.name, box.folder))
        if saved is None:
            print("  checkpoint:   none yet (the first run reads the whole folder)")
        else:
            print(f"  checkpoint:   UIDVALIDITY {saved[0]}, last UID {saved[1]}")
    return worst


def _checkpoints(settings: Settings) -> dict[tuple[str, str], tuple[int, int]]:
    """Saved checkpoints, or nothing when the database cannot be read yet."""
    from sqlalchemy import select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from maild.store.db import make_engine
    from maild.store.models import ImapCheckpoint

    url = make_url(settings.database.url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return {}  # no database yet: do not create one just to look
    try:
        engine = make_engine(settings.database.url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(select(ImapCheckpoint.mailbox, ImapCheckpoint.folder,
                                           ImapCheckpoint.uidvalidity, ImapCheckpoint.last_uid))  # fmt: skip
                return {(r[0], r[1]): (int(r[2]), int(r[3])) for r in rows}
        finally:
            engine.dispose()
    except (SQLAlchemyError, OSError):
        return {}


# --- views ---------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def cmd_view(args: argparse.Namespace, settings: Settings) -> int:
    from maild.store import views

    sessions = _sessions(settings)
    with sessions() as session:
        if args.command == "tickets":
            rows = views.list_tickets(session, args.status)
            if args.json:
                _print_json(rows)
            else:
                for t in rows:
                    print(f"#{t['number']:<6} {t['status']:<12} {t['priority']} {t['type']:<8} "
                          f"{escape(t['requester']['email']):<32} {escape(t['subject'][:60])}")  # fmt: skip
            return EX_OK
        if args.command == "ticket":
            data = views.show_ticket(session, args.number)
            if data is None:
                print(f"maild: no ticket #{args.number}", file=sys.stderr)
                return EX_NOINPUT
            if args.json:
                _print_json(data)
            else:
                _print_ticket(data, settings)
            return EX_OK
        if args.command == "outbox":
            rows = views.list_outbox(session, args.status)
            if args.json:
                _print_json(rows)
            else:
                for o in rows:
                    print(f"{o['id']:<6} {o['status']:<8} #{o['ticket'] or '-':<6} {o['kind']:<10} "
                          f"{escape(', '.join(o['to'])):<32} tries={o['attempts']} "
                          f"{escape(o['last_error'] or '')}")  # fmt: skip
            return EX_OK
        if args.command == "quarantine":
            rows = views.list_quarantine(session)
            if args.json:
                _print_json(rows)
            else:
                for q in rows:
                    print(f"{q['id']:<6} {_when(q['received_at'], settings)} {q['source']:<6} "
                          f"{escape(q['message_id'] or '(no Message-ID)')}: "
                          f"{escape(q['reason'] or '')}")  # fmt: skip
            return EX_OK
    return EX_USAGE  # pragma: no cover


def _when(iso: str | None, settings: Settings) -> str:
    """A time from a JSON view, in the desk's zone, as the mail writes it (English)."""
    from datetime import datetime

    from maild.mail.dates import format_when

    return format_when(datetime.fromisoformat(iso), settings.helpdesk.timezone) if iso else "-"


def _print_ticket(t: dict[str, Any], settings: Settings) -> None:
    e = escape  # every field from mail, on its line; article text line by line
    print(f"Ticket #{t['number']}: {e(t['subject'])}")
    print(f"  status {t['status']}, {t['type']}, {e(t['category'])}, {t['priority']}, "
          f"tier {t['tier']}")  # fmt: skip
    print(f"  requester {e(t['requester']['name'])} <{e(t['requester']['email'])}>")
    print(f"  created {_when(t['created_at'], settings)}, first response due "
          f"{_when(t['first_response_due'], settings)}")  # fmt: skip
    for a in t["articles"]:
        unverified = "  [sender NOT verified]" if a.get("verified_by") == "none" else ""
        print(f"\n--- {a['direction']} {a['kind']} ({a['visibility']}) "
              f"{_when(a['created_at'], settings)} "
              f"from {e(a['from']['email'])}{unverified}")  # fmt: skip
        print(f"    Subject: {e(a['subject'])}")
        for line in a["text"].splitlines()[:40]:
            print(f"    {e(line, multiline=True)}")
        for att in a["attachments"]:
            print(f"    [attachment {att['id']}] {e(att['filename'])} ({e(att['content_type'])}, "
                  f"{att['size']} bytes)")  # fmt: skip
    print("\nEvents:")
    for ev in t["events"]:
        change = f" {e(str(ev['old']))} -> {e(str(ev['new']))}" if ev["old"] or ev["new"] else ""
        print(f"  {ev['at']} {e(ev['actor'])}: {ev['kind']}{change}")
