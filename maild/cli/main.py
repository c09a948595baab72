"""The ``maild`` command line.

Exit statuses follow sysexits(3): 0 ok, 64 EX_USAGE (the command line is
wrong), 65 EX_DATAERR (input is not a message), 66 EX_NOINPUT (no such
ticket or message), 75 EX_TEMPFAIL (try again later), 77 EX_NOPERM (root
against another user's files), 78 EX_CONFIG (one line naming the bad key).

Safe by default (`maild.cli.safety`, `maild.store.access`): the
configuration is ``--config``, ``$MAILD_CONFIG`` or /etc/maild/maild.toml
and must exist; only ``serve`` and ``db upgrade`` create a database;
read-only commands create nothing at all.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import mailbox
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from maild import __version__
from maild.addresses import ServedAddresses, normalize_address
from maild.cli import contact as cli_contact
from maild.cli import safety
from maild.cli import search as cli_search
from maild.cli import tickets as cli_tickets
from maild.cli import web as cli_web
from maild.clock import SystemClock
from maild.config.settings import Settings, load_settings
from maild.errors import ConfigError, TransientError
from maild.log import LOG_LEVELS, escape, escape_output, setup_logging

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


class Parser(argparse.ArgumentParser):
    """argparse with sysexits: a usage error is exit 64, not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


EPILOG = """\
exit status: 0 ok, 64 usage error, 65 bad input, 66 no such ticket or message,
69 service unavailable, 73 cannot write the output, 75 temporary failure (try
again later), 77 refused (run as the owner of maild's files), 78 configuration
error (one line naming the key).

configuration: --config PATH, else $MAILD_CONFIG, else /etc/maild/maild.toml.
Only 'serve' and 'db upgrade' create a database.
"""


def _command(sub: Any, name: str, help_text: str, *, description: str | None = None) -> Any:
    return sub.add_parser(name, help=help_text, description=description or help_text,
                          formatter_class=_Formatter)  # fmt: skip


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _paging(p: argparse.ArgumentParser, what: str, default: int) -> None:
    p.add_argument("--limit", type=_positive_int, default=default, metavar="N",
                   help=f"show at most N {what} (default {default})")  # fmt: skip
    p.add_argument("--after", type=_positive_int, metavar="ID",
                   help=f"continue after this one (newest first; printed when there are more {what})")  # fmt: skip


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def build_parser() -> Parser:
    p = Parser(prog="maild", description="Help-desk mail gateway: mail in, tickets out.",
               epilog=EPILOG, formatter_class=_Formatter)  # fmt: skip
    p.add_argument("--config", metavar="PATH",
                   help="the TOML file (default: $MAILD_CONFIG, else /etc/maild/maild.toml)")  # fmt: skip
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.upper, metavar="LEVEL",
                   help="DEBUG, INFO, WARNING or ERROR (default: log.level of the configuration)")  # fmt: skip
    p.add_argument("--version", action="version", version=f"maild {__version__}",
                   help="print the version and exit")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _command(sub, "serve", "run the daemon in the foreground (creates the database if empty)")
    _json(_command(sub, "check-config", "validate the configuration and exit"))

    db = _command(sub, "db", "database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    _json(_command(db_sub, "upgrade", "create the database, or upgrade its schema"))

    ingest = _command(sub, "ingest", "store one message from stdin (for MTA pipes)",
                      description="Store one message read from stdin. Exit 0 once it is "
                      "committed, 75 when the MTA should try again later, 65 when the input "
                      "is not a message (kept in quarantine) or too large.")  # fmt: skip
    ingest.add_argument("--to", metavar="ADDRESS",
                        help="the help-desk address it was sent to (default: from its header)")  # fmt: skip
    ingest.add_argument("--no-notify", action="store_true", help="send no acknowledgement")
    _json(ingest)

    _json(_command(sub, "drain",
                   "process every pending message and send due mail, then exit (no daemon)"))  # fmt: skip

    imp = _command(sub, "import", "import an mbox file or a Maildir folder, in arrival order")
    imp.add_argument("path", type=Path, help="an mbox file, or a Maildir folder (cur/ and new/)")
    imp.add_argument("--no-notify", action="store_true",
                     help="record without acknowledgements (migrating from another help desk)")  # fmt: skip
    imp.add_argument("--close-before", metavar="YYYY-MM-DD",
                     help="then close (quietly) the imported tickets last written to before "
                          "this day (UTC)")  # fmt: skip
    _json(imp)

    tickets = _command(sub, "tickets", "list tickets")
    t_sub = tickets.add_subparsers(dest="tickets_command", required=True, metavar="ACTION")
    t_list = _command(t_sub, "list", "list tickets, newest first, with filters and paging",
                      description="List tickets, newest first. Filters combine (AND); a "
                      "filter given twice, or with commas, matches any of its values.")  # fmt: skip
    t_list.add_argument("--status", action="append", type=_listed(_status), metavar="STATUS",
                        help="new, open, in_progress, escalated, pending_user, resolved, closed")  # fmt: skip
    t_list.add_argument("--priority", action="append", type=_listed(_priority), metavar="P",
                        help="P1..P4 (or 1..4)")  # fmt: skip
    t_list.add_argument("--tier", action="append", type=_listed(_tier), metavar="T",
                        help="1, 2 or 3")  # fmt: skip
    t_list.add_argument("--assignee", metavar="AGENT",
                        help="an agent's address or name, or 'none' for unassigned tickets")  # fmt: skip
    t_list.add_argument("--breached", action="store_true",
                        help="only tickets that missed a first-response or resolution target")  # fmt: skip
    _paging(t_list, "tickets", 100)
    _json(t_list)

    ticket = _command(sub, "ticket", "show or change one ticket")
    tk_sub = ticket.add_subparsers(dest="ticket_command", required=True, metavar="ACTION")
    tk_show = _command(tk_sub, "show", "one ticket with its articles and events")
    tk_show.add_argument("number", type=int, help="the ticket number")
    _json(tk_show)

    outbox = _command(sub, "outbox", "outgoing mail")
    o_sub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    o_list = _command(o_sub, "list", "outgoing mail, newest first")
    o_list.add_argument("--status", metavar="STATUS", help="pending, sending, sent or dead")
    _paging(o_list, "mails", 100)
    _json(o_list)
    o_retry = _command(o_sub, "retry", "send dead mail again (the same message)")
    o_retry.add_argument("ids", type=int, nargs="+", metavar="ID", help="outbox ids")
    o_retry.add_argument("--as", dest="actor", metavar="WHO",
                         help="who asked, for the audit log (default: USER@cli)")  # fmt: skip
    _json(o_retry)

    mailbox = _command(sub, "mailbox", "IMAP mailboxes ([[imap.mailboxes]])")
    m_sub = mailbox.add_subparsers(dest="mailbox_command", required=True, metavar="ACTION")
    m_check = _command(m_sub, "check", "connect, log in, report what maild will use",
                       description="Connect to IMAP mailboxes as the daemon would and report "
                       "what maild will use, changing nothing. Exit 69 cannot connect, 77 login "
                       "refused, 66 the folder to read is missing, 64 no such mailbox.")  # fmt: skip
    m_check.add_argument("name", nargs="?", help="the mailbox (default: every mailbox)")
    _json(m_check)

    inbound = _command(sub, "inbound", "every received message and its fate")
    i_sub = inbound.add_subparsers(dest="inbound_command", required=True, metavar="ACTION")
    i_list = _command(i_sub, "list", "newest first: ticket, reply, ignored, spam, ...")
    i_list.add_argument("--outcome", action="append", metavar="FATE",
                        choices=["ticket", "reply", "ignored", "spam", "quarantined", "pending"],
                        help="only these (repeatable): ticket, reply, ignored, spam, "
                             "quarantined, pending")  # fmt: skip
    i_list.add_argument("--since", metavar="WHEN", help="received at or after (YYYY-MM-DD or "
                        "an ISO date-time; UTC unless it names a zone)")  # fmt: skip
    i_list.add_argument("--limit", type=_positive_int, default=200, metavar="N",
                        help="show at most N messages (default 200)")  # fmt: skip
    _json(i_list)
    i_show = _command(i_sub, "show", "one message: fate, rule, reason, headers")
    i_show.add_argument("id", type=int, help="the inbound id (from inbound list)")
    i_out = i_show.add_mutually_exclusive_group()
    i_out.add_argument("--json", action="store_true", help="print JSON instead of text")
    i_out.add_argument("--raw", action="store_true", help="write the raw bytes to stdout")
    i_replay = _command(i_sub, "replay",
                        "run ignored or spam messages through again as if they were wanted")  # fmt: skip
    i_replay.add_argument("ids", type=int, nargs="+", metavar="ID", help="inbound ids")
    i_replay.add_argument("--as", dest="actor", metavar="WHO",
                          help="who chose it (default: USER@cli)")  # fmt: skip
    _json(i_replay)

    quarantine = _command(sub, "quarantine", "messages set aside")
    q_sub = quarantine.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")
    q_list = _command(q_sub, "list", "quarantined messages, newest first")
    _paging(q_list, "messages", 100)
    _json(q_list)
    q_show = _command(q_sub, "show", "one quarantined message: reason and headers")
    q_show.add_argument("id", type=int, help="the inbound id (from quarantine list)")
    q_out = q_show.add_mutually_exclusive_group()
    q_out.add_argument("--json", action="store_true", help="print JSON instead of text")
    q_out.add_argument("--raw", action="store_true", help="write the raw bytes to stdout")
    q_replay = _command(q_sub, "replay", "run quarantined messages through the pipeline again")
    q_replay.add_argument("ids", type=int, nargs="+", metavar="ID", help="inbound ids")
    _json(q_replay)
    q_drop = _command(q_sub, "drop", "delete quarantined messages for good")
    q_drop.add_argument("ids", type=int, nargs="+", metavar="ID", help="inbound ids")
    _json(q_drop)

    agents = _command(sub, "agents", "the agent directory")
    a_sub = agents.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    _json(_command(a_sub, "list", "sync the directory with the configuration and list it"))

    cli_tickets.add_parsers(tk_sub, sub, _command, _json)
    cli_search.add_parsers(sub, _command, _json)
    cli_contact.add_parsers(sub, _command, _json)
    cli_web.add_parsers(sub, _command, _json)

    hp = _command(sub, "hash-password", "hash a password (stdin) for smtp.auth_users_file")
    hp.add_argument("user", nargs="?", help="print USER:HASH instead of the hash alone")
    return p


# What a command may do to maild's state (see maild.store.access).
CREATES = {"serve", "db"}  # may create the database (and the secret)
NO_STATE = {"check-config", "hash-password"}  # never open the database


def _writes(args: argparse.Namespace) -> bool:
    cmd = args.command
    if cmd in ("tickets", "report", "mailbox"):
        return False
    if cmd == "outbox":
        return bool(args.outbox_command == "retry")
    if cmd == "ticket":
        return bool(args.ticket_command not in ("show", "attachment"))
    if cmd == "quarantine":
        return bool(args.quarantine_command in ("replay", "drop"))
    if cmd == "inbound":
        return bool(args.inbound_command == "replay")
    if cmd == "search":
        return bool(args.search_command == "reindex")
    if cmd == "contact":
        return bool(args.contact_command not in ("export", "show"))
    if cmd in ("web", "api-token"):
        return cli_web.writes(args)
    return cmd not in NO_STATE


def main(argv: Sequence[str] | None = None) -> int:
    # Nothing maild creates (database, secret, outgoing mail, reports) is for
    # other users; the files that hold secrets are 0600 whatever the umask.
    os.umask(0o027)
    # Everything printed may carry text from mail: control characters are
    # shown, never sent to the terminal (maild.log.escape).
    escape_output()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (64)
        return int(exc.code or 0)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"maild: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    settings = _with_options(settings, args)
    setup_logging(settings.log.level, settings.log.format)
    try:
        if args.command not in NO_STATE:
            explicit = bool(args.config or os.environ.get("MAILD_CONFIG"))
            safety.check(settings, writes=_writes(args), explicit=explicit)
        return _dispatch(args, settings)
    except ConfigError as exc:
        print(f"maild: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except safety.Refused as exc:
        print(f"maild: {exc}", file=sys.stderr)
        return EX_NOPERM
    except TransientError as exc:
        print(f"maild: {exc}; try again later", file=sys.stderr)
        return EX_TEMPFAIL
    except KeyboardInterrupt:
        return 130


# Batch commands print a summary; a log line per message would bury it (and
# cost a tenth of an import's time): warnings and errors only, unless asked.
QUIET_COMMANDS = ("import", "drain")


def _with_options(settings: Settings, args: argparse.Namespace) -> Settings:
    """Command-line options over the file (also for the daemon's child processes
    and after a reload)."""
    level = args.log_level
    if not level and args.command in QUIET_COMMANDS and settings.log.level in ("DEBUG", "INFO"):
        level = "WARNING"
    if not level:
        return settings
    return dataclasses.replace(settings, log=dataclasses.replace(settings.log, level=level))


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    cmd = args.command
    if cmd == "check-config":
        return cmd_check_config(settings, as_json=args.json)
    if cmd == "hash-password":
        return cmd_hash_password(args.user)
    if cmd == "serve":
        from maild.service.daemon import Daemon

        def reread(_old: Settings) -> Settings:
            return _with_options(load_settings(args.config), args)

        return asyncio.run(Daemon(settings, config=reread).run())
    if cmd == "db":
        return cmd_db_upgrade(settings, as_json=args.json)
    if cmd == "ingest":
        return cmd_ingest(settings, args.to, notify=not args.no_notify, as_json=args.json)
    if cmd == "import":
        return cmd_import(settings, args.path, notify=not args.no_notify,
                          close_before=args.close_before, as_json=args.json)  # fmt: skip
    if cmd == "drain":
        return cmd_drain(settings, as_json=args.json)
    if cmd == "agents":
        return cmd_agents(settings, as_json=args.json)
    if cmd == "mailbox":
        return cmd_mailbox_check(settings, args.name, as_json=args.json)
    if cli_search.handles(args):
        return cli_search.run(args, settings, _sessions(settings, writes=_writes(args)))
    if cmd == "contact":
        return cli_contact.run(args, settings, _sessions(settings, writes=_writes(args)))
    if cli_web.handles(args):
        return cli_web.run(args, settings, _sessions(settings, writes=_writes(args)))
    if cli_tickets.handles(args):
        return cli_tickets.run(args, settings, _sessions(settings, writes=_writes(args)))
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


def cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    """show / replay / drop (``list`` is a plain view)."""
    from maild.desk import quarantine

    action = args.quarantine_command
    sessions = _sessions(settings, writes=action != "show")
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
        missing = [i for i in dict.fromkeys(args.ids) if i not in dropped]
        if args.json:
            _print_json({"dropped": sorted(dropped), "not_in_quarantine": missing})
        else:
            for inbound_id in args.ids:
                word = "dropped" if inbound_id in dropped else "not in quarantine:"
                print(f"{word} inbound {inbound_id}")
        return EX_NOINPUT if missing else EX_OK
    # replay
    with sessions.begin() as session:
        queued = quarantine.release(session, args.ids)
    results = _drain_now(settings, sessions)
    status = EX_OK
    rows: list[dict[str, Any]] = []
    for inbound_id in dict.fromkeys(args.ids):
        if inbound_id not in queued:
            rows.append({"id": inbound_id, "outcome": "not_in_quarantine"})
            status = EX_NOINPUT
            continue
        p = results.get(inbound_id)
        rows.append({"id": inbound_id, "outcome": str(p.outcome) if p and p.outcome else "pending",
                     "ticket": p.ticket_id if p else None, "reason": p.reason if p else None})  # fmt: skip
    if args.json:
        _print_json(rows)
        return status
    for row in rows:
        if row["outcome"] == "not_in_quarantine":
            print(f"not in quarantine: inbound {row['id']}")
            continue
        ticket = f" ticket #{row['ticket']}" if row["ticket"] else ""
        print(f"inbound {row['id']}: {row['outcome']}{ticket} {row['reason'] or ''}".rstrip())
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

    action = args.inbound_command
    sessions = _sessions(settings, writes=action == "replay")
    if action == "list":
        try:
            since = _since(args.since) if args.since else None
        except ValueError:
            print(f"maild: --since: not a date or date-time: {args.since!r}", file=sys.stderr)
            return EX_USAGE
        with sessions() as session:
            rows = inbound.list_inbound(session, fates=args.outcome or (), since=since,
                                        limit=args.limit + 1)  # fmt: skip
        if len(rows) > args.limit:
            rows = rows[: args.limit]
            print(f"maild: there are more messages: narrow with --since or --outcome, or "
                  f"raise --limit (the oldest shown: inbound {rows[-1]['id']})", file=sys.stderr)  # fmt: skip
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
    rows: list[dict[str, Any]] = []
    for a in asked:
        if not a.queued:
            rows.append({"id": a.inbound_id, "replayed": False, "why": a.why})
            status = EX_NOINPUT
            continue
        with sessions() as session:
            now = inbound.show(session, a.inbound_id)
        assert now is not None
        rows.append({"id": a.inbound_id, "replayed": True, "fate": now["fate"],
                     "ticket": now["ticket"], "reason": now["reason"]})  # fmt: skip
    if args.json:
        _print_json(rows)
        return status
    for r in rows:
        if not r["replayed"]:
            print(f"inbound {r['id']}: not replayed: {r['why']}")
        elif r["fate"] == "pending":
            print(f"inbound {r['id']}: queued (the running daemon is processing it)")
        elif r["fate"] == "ticket":
            print(f"inbound {r['id']}: opened ticket #{r['ticket']}")
        elif r["fate"] == "reply":
            print(f"inbound {r['id']}: recorded on ticket #{r['ticket']}")
        else:
            print(f"inbound {r['id']}: {r['fate']}: {r['reason'] or ''}")
    return status


def cmd_outbox_retry(args: argparse.Namespace, settings: Settings) -> int:
    """``maild outbox retry ID...``: dead mail goes out again; its ticket records who asked."""
    from maild.cli.tickets import actor_name
    from maild.desk import deadmail
    from maild.desk.apply import Applier
    from maild.mail.render import Renderer
    from maild.service.sender import Sender, transport_from_settings

    sessions = _sessions(settings, writes=True)
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
    status = EX_OK if all(a.queued for a in asked) else EX_NOINPUT
    if args.json:
        _print_json([{"outbox": a.outbox_id, "queued": a.queued, "why": None if a.queued else a.why,
                      "status": now[a.outbox_id].status if a.queued else None,
                      "error": now[a.outbox_id].last_error if a.queued else None}
                     for a in asked])  # fmt: skip
        return status
    for a in asked:
        if not a.queued:
            print(f"outbox {a.outbox_id}: not retried: {a.why}")
            continue
        r = now[a.outbox_id]
        error = f" ({r.last_error})" if r.status != "sent" and r.last_error else ""
        print(f"outbox {a.outbox_id}: queued again; now {r.status}{error}")
    return status


def _sessions(settings: Settings, *, writes: bool) -> Any:
    """Sessions on the existing database (only serve and db upgrade create one).

    A command that writes also refuses to mint a new signing secret for a
    database that has tickets (`maild.store.access.guard_secret`).
    """
    from maild.store.access import guard_secret, open_existing
    from maild.store.db import session_factory

    engine = open_existing(settings.database.url)
    if writes:
        guard_secret(settings.helpdesk.secret_file, engine)
    return session_factory(engine)


def cmd_check_config(settings: Settings, *, as_json: bool = False) -> int:
    from maild.mail.render import Renderer
    from maild.pipeline.triage import Rulebook

    renderer = Renderer.from_settings(settings)  # templates compile, or a ConfigError
    rules = Rulebook.from_settings(settings)  # triage rules compile, or a ConfigError
    from maild.mail.language import load_languages
    from maild.pipeline.screen import recognisers

    recognisers(settings.languages.directory)  # language data compiles, or a ConfigError
    languages = load_languages(settings.languages.directory)
    from maild.mail.tokens import check_secret_mode

    check_secret_mode(settings.helpdesk.secret_file)  # others may read it: a ConfigError
    from maild.pipeline.alerts import compile_rules

    alert_rules = compile_rules(settings.alerts)  # so do the [[alerts.rules]]
    sla, tiers, out = settings.sla, settings.tiers, settings.outgoing
    groups = {n: len(getattr(tiers, n)) for n in ("tier1", "tier2", "tier3", "duty_manager",
                                                  "security")}  # fmt: skip
    data = {
        "source": settings.source,
        "serving": list(settings.helpdesk.addresses),
        "database": _render_url(settings.database.url),
        "intake": None if not settings.smtp.enabled else {
            "protocol": "lmtp" if settings.smtp.lmtp else "smtp", "listen": settings.smtp.listen},
        "imap": [{"name": b.name, "username": b.username, "host": b.host,
                  "port": b.effective_port, "folder": b.folder, "after": b.after,
                  "processed_folder": b.processed_folder} for b in settings.imap.mailboxes],
        "outgoing": {"transport": "smtp", "host": out.smtp_host, "port": out.smtp_port}
        if out.transport == "smtp" else {"transport": "maildir", "maildir": str(out.maildir)},
        "categories": list(rules.category_names),
        "languages": list(languages.codes),
        "languages_directory": str(settings.languages.directory or "") or None,
        "mail_languages": list(renderer.languages),
        "default_language": settings.helpdesk.default_language,
        "timezone": settings.helpdesk.timezone,
        "sla": {"business_hours": sla.business_hours or None,
                "first_response_hours": list(sla.first_response_hours),
                "resolution_hours": list(sla.resolution_hours)},
        "alerts": {"senders": list(settings.alerts.senders),
                   "source_networks": list(settings.alerts.source_networks),
                   "rules": len(alert_rules)},
        "major": {"enabled": settings.major.enabled, "threshold": settings.major.threshold,
                  "window_minutes": settings.major.window_minutes},
        "tiers": groups,
        "agents": len(settings.agents),
        "warnings": [f"{key} ({path}) is readable by other users"
                     for key, path in _password_files(settings)
                     if path.is_file() and path.stat().st_mode & 0o007],
    }  # fmt: skip
    if as_json:
        _print_json(data)
        return EX_OK
    print(f"configuration OK ({settings.source})")
    print(f"  serving:  {', '.join(settings.helpdesk.addresses)}")
    print(f"  database: {data['database']}")
    smtp = f"{'LMTP' if settings.smtp.lmtp else 'SMTP'} on {settings.smtp.listen}"
    print(f"  intake:   {smtp if settings.smtp.enabled else 'SMTP disabled'}")
    for box in settings.imap.mailboxes:
        after = f"move to {box.processed_folder}" if box.after == "move" else "flag"
        print(f"  imap:     {box.name}: {box.username} at {box.host}:{box.effective_port}, "
              f"{box.folder}, then {after}")  # fmt: skip
    if out.transport == "smtp":
        print(f"  outgoing: SMTP relay {out.smtp_host}:{out.smtp_port}")
    else:
        print(f"  outgoing: Maildir {out.maildir}")
    print(f"  triage:   {len(rules.category_names)} categories ({', '.join(rules.category_names)})")
    extra = f" (with {settings.languages.directory})" if settings.languages.directory else ""
    print(f"  language data: {', '.join(languages.codes)}{extra}")
    print(
        f"  mail in:  {', '.join(renderer.languages)} (default "
        f"{settings.helpdesk.default_language}; times in {settings.helpdesk.timezone})"
    )
    print(f"  SLA:      {sla.business_hours or '24/7'}; first response "
          f"{'/'.join(f'{h:g}' for h in sla.first_response_hours)} h, resolution "
          f"{'/'.join(f'{h:g}' for h in sla.resolution_hours)} h (P1..P4)")  # fmt: skip
    a = settings.alerts
    if a.senders:
        print(f"  alerts:   from {', '.join(a.senders)}: tier {a.tier}, recovery {a.recovery}, "
              f"{len(alert_rules)} rule(s) besides the stock formats")  # fmt: skip
        ways = [f"from {', '.join(a.source_networks)}"] if a.source_networks else []
        if settings.agent_mail.trusted_authserv_ids:
            ways.append("signed for their domain (DKIM/DMARC from "
                        f"{', '.join(settings.agent_mail.trusted_authserv_ids)})")  # fmt: skip
        print(f"            believed only {' or '.join(ways)}")
    else:
        print("  alerts:   none (alerts.senders is empty)")
    mj = settings.major
    print(f"  major:    {mj.threshold} new incidents of one category or host within "
          f"{mj.window_minutes:g} min" if mj.enabled else "  major:    off (declared by agents "
          "only)")  # fmt: skip
    print(f"  tiers:    addresses per group: {', '.join(f'{k} {v}' for k, v in groups.items())}")
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


def _render_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_db_upgrade(settings: Settings, *, as_json: bool = False) -> int:
    from maild.store.db import current_revision, head_revision, make_engine, upgrade

    engine = make_engine(settings.database.url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
        head = head_revision(engine)
    finally:
        engine.dispose()
    if as_json:
        _print_json({"database": _render_url(settings.database.url), "before": before,
                     "after": after, "head": head, "upgraded": before != after})  # fmt: skip
    elif before == after:
        print(f"database is up to date (revision {after})")
    else:
        print(f"database upgraded: {before or 'empty'} -> {after} (head {head})")
    return EX_OK


# --- ingest and import --------------------------------------------------------


def _recipient(raw: bytes, served: ServedAddresses, default: str) -> str:
    from maild.mail.parse import peek_recipients

    for addr in peek_recipients(raw):
        base = served.base_of(addr)
        if base:
            return base
    return default


def cmd_ingest(settings: Settings, to: str | None, *, notify: bool, as_json: bool = False) -> int:
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
        sessions = _sessions(settings, writes=True)
        stored = store_one(sessions, delivery, SystemClock())
    except (SQLAlchemyError, OSError) as exc:
        print(f"maild: cannot store the message now ({type(exc).__name__}); try again later",
              file=sys.stderr)  # fmt: skip
        return EX_TEMPFAIL
    if as_json:
        _print_json({"inbound": stored.inbound_id, "duplicate": stored.duplicate,
                     "quarantined": not is_message})  # fmt: skip
    if not is_message:
        print(f"maild: input is not an email message (kept in quarantine as inbound "
              f"{stored.inbound_id})", file=sys.stderr)  # fmt: skip
        return EX_DATAERR
    word = "duplicate of" if stored.duplicate else "stored as"
    if not as_json:
        print(f"{word} inbound {stored.inbound_id}", file=sys.stderr)
    return EX_OK


def cmd_drain(settings: Settings, *, as_json: bool = False) -> int:
    """Burst mode: what the daemon's worker and sender would do, once."""
    from maild.desk import agents
    from maild.desk.apply import Applier
    from maild.mail.render import Renderer
    from maild.service.parsepool import ParsePool
    from maild.service.sender import Sender, transport_from_settings
    from maild.service.worker import Worker

    sessions = _sessions(settings, writes=True)
    clock = SystemClock()
    parser = ParsePool.from_settings(settings)
    applier = Applier(settings, Renderer.from_settings(settings))
    agents.install(sessions, applier)
    try:
        processed = Worker(sessions, settings, clock, applier, parser=parser).drain()
    finally:
        parser.close()
    sent = Sender(sessions, settings, clock, transport_from_settings(settings)).drain()
    if as_json:
        _print_json({"processed": len(processed), "sent": sent.sent, "retried": sent.retried,
                     "dead": sent.dead})  # fmt: skip
        return EX_OK
    print(f"{len(processed)} message(s) processed; outgoing: {sent.sent} sent, "
          f"{sent.retried} to retry, {sent.dead} dead")  # fmt: skip
    return EX_OK


def cmd_agents(settings: Settings, *, as_json: bool) -> int:
    """``maild agents list``: the directory after syncing it with the configuration."""
    from maild.desk import agents
    from maild.desk.apply import Applier
    from maild.mail.render import Renderer

    applier = Applier(settings, Renderer.from_settings(settings))
    directory = agents.install(_sessions(settings, writes=True), applier)
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


# Messages stored per commit and processed per worker batch (at most
# IMPORT_BATCH_BYTES of them in memory), per worker transaction, and
# acknowledgements sent per batch (one syncfs, two commits). 400/200 against
# 200/100: 0.5 s less of a 16.9 s import of 10,000 messages (fewer commits and
# batch starts); a transaction then holds SQLite's write lock about 0.3 s,
# which a daemon running beside the import makes its SMTP clients wait.
IMPORT_BATCH, IMPORT_TXN, IMPORT_SEND_BATCH = 400, 200, 500
IMPORT_GC_THRESHOLD = 10_000
IMPORT_BATCH_BYTES = 32 * 1024 * 1024


def cmd_import(settings: Settings, path: Path, *, notify: bool,
               close_before: str | None = None, as_json: bool = False) -> int:  # fmt: skip
    """Import an archive: tickets and articles carry its dates, SLA deadlines come from
    them (those already past raise no alarm), the old desk's own replies become
    outgoing articles on their threads; `close_before` closes the old tickets."""
    import gc
    from datetime import UTC, datetime

    from maild.desk import agents, archive
    from maild.desk.apply import Applier
    from maild.intake.commit import Delivery, store
    from maild.mail.render import Renderer
    from maild.service.parsepool import ParsePool
    from maild.service.renderpool import RenderPool
    from maild.service.sender import Sender, transport_from_settings
    from maild.service.worker import Worker
    from maild.store.db import Checkpointer, is_sqlite
    from maild.store.states import Outcome, Source

    before = None
    if close_before:
        try:
            before = datetime.combine(datetime.fromisoformat(close_before).date(),
                                      datetime.min.time(), UTC)  # fmt: skip
        except ValueError:
            print(f"maild: --close-before: not a date: {close_before!r}", file=sys.stderr)
            return EX_USAGE
    try:
        total, messages = iter_source(path)
    except (ConfigError, OSError) as exc:
        print(f"maild: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return EX_NOINPUT
    sessions = _sessions(settings, writes=True)
    engine = sessions.kw["bind"]
    # SQLite: the WAL is copied into the database by a thread beside the
    # import, not inside its commits (maild.store.db.Checkpointer).
    checkpointer = Checkpointer(engine) if is_sqlite(engine) else None
    clock = SystemClock()
    served = ServedAddresses.of(settings.helpdesk.addresses)
    default = served_default(settings)
    # The parse processes start (half a second) while the first messages are
    # read and stored.
    parser = ParsePool.from_settings(settings)
    parser.start(wait=False)
    applier = Applier(settings, Renderer.from_settings(settings))
    # The acknowledgements are made on another core while the worker goes on
    # (maild.service.renderpool); started now, it sets up meanwhile.
    maker = RenderPool(applier.renderer) if notify else None
    if maker is not None:
        maker.start()
        applier.make_elsewhere = maker
    agents.install(sessions, applier)
    worker = Worker(sessions, settings, clock, applier, parser=parser)
    # Nobody waits for one message of an archive: bigger transactions, fewer fsyncs.
    worker.batch_size, worker.txn_messages = IMPORT_BATCH, IMPORT_TXN
    mine: set[int] = set()
    opened: set[int] = set()
    tally: Counter[str] = Counter()
    progress = Progress(total, getattr(sys.stderr, "inner", sys.stderr))  # counts only
    batch: list[Delivery] = []
    batch_bytes = 0

    def flush() -> None:
        nonlocal batch_bytes
        batch_bytes = 0
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

    # What start-up made (modules, the schema, templates, rules) lives until
    # the command ends: kept out of the collector's full passes, which would
    # otherwise walk all of it again and again as the import allocates; and
    # the young objects are looked at every 10,000 allocations, not 700.
    gc.freeze()
    gc.set_threshold(IMPORT_GC_THRESHOLD, 20, 20)
    if checkpointer is not None:
        checkpointer.start()
    try:
        try:
            for raw in messages:
                batch.append(Delivery(raw=raw, source=Source.IMPORT,
                                      recipient=_recipient(raw, served, default),
                                      notify=notify))  # fmt: skip
                batch_bytes += len(raw)
                if len(batch) >= IMPORT_BATCH or batch_bytes >= IMPORT_BATCH_BYTES:
                    flush()
            if batch:
                flush()
        finally:
            parser.close()
            if maker is not None:
                applier.make_elsewhere = None
                maker.close()
        progress.finish()
        closed: list[int] = []
        if before is not None:
            with sessions.begin() as session:
                closed = archive.close_before(session, applier, opened, before)
        sent = None
        if notify:
            sender = Sender(sessions, settings, clock, transport_from_settings(settings))
            sender.batch_size = max(sender.batch_size, IMPORT_SEND_BATCH)
            sent = sender.drain()
    finally:
        if checkpointer is not None:
            checkpointer.stop()
    if as_json:
        summary: dict[str, Any] = {
            "path": str(path), "messages": total,
            "tickets_created": tally[str(Outcome.NEW_TICKET)],
            "replies_threaded": tally[str(Outcome.APPENDED)],
            "desk_replies": tally["desk"],
            "ignored": tally[str(Outcome.IGNORED)],
            "quarantined": tally[str(Outcome.QUARANTINED)],
            "already_stored": tally["duplicates"],
            "closed_before": len(closed),
            "acknowledgements": None if sent is None
            else {"sent": sent.sent, "retried": sent.retried, "dead": sent.dead},
        }  # fmt: skip
        _print_json(summary)
        return EX_OK
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


def cmd_mailbox_check(settings: Settings, name: str | None, *, as_json: bool = False) -> int:
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
        if as_json:
            _print_json([])
        else:
            print("no IMAP mailboxes configured (add [[imap.mailboxes]] tables)")
        return EX_OK
    worst = EX_OK
    checkpoints = _checkpoints(settings)
    results: list[dict[str, Any]] = []
    for box in boxes:
        report = check_mailbox(box, settings.imap.timeout_seconds)
        auth = "XOAUTH2 token from oauth2_token_command" if box.oauth2_token_command else "password"
        saved = checkpoints.get((box.name, box.folder))
        result: dict[str, Any] = {
            "name": box.name, "where": report.where, "username": box.username, "auth": auth,
            "connected": report.connected, "logged_in": report.logged_in,
            "capabilities": {c: report.has(c) for c in ("IDLE", "MOVE", "UIDPLUS")},
            "folders": [{"name": f.name, "role": "reads" if f.name == box.folder else "moves to",
                         "exists": f.exists, "messages": f.messages, "unseen": f.unseen,
                         "uidvalidity": f.uidvalidity, "uidnext": f.uidnext}
                        for f in report.folders],
            "after": box.after, "error": report.error,
            "checkpoint": None if saved is None
            else {"uidvalidity": saved[0], "last_uid": saved[1]},
        }  # fmt: skip
        results.append(result)
        if not report.connected:
            worst = worst or EX_UNAVAILABLE
        elif not report.logged_in:
            worst = worst or EX_NOPERM
        else:
            if any(f.name == box.folder and not f.exists for f in report.folders):
                worst = worst or EX_NOINPUT
            if report.error:
                worst = worst or EX_UNAVAILABLE
        if not as_json:
            _print_mailbox(result, settings.imap.poll_seconds)
    if as_json:
        _print_json(results)
    return worst


def _print_mailbox(r: dict[str, Any], poll_seconds: float) -> None:
    print(f"mailbox {r['name']}: {r['where']} as {r['username']}")
    if not r["connected"]:
        print(f"  connect:      FAILED: {r['error']}")
        return
    if not r["logged_in"]:
        print(f"  login:        FAILED ({r['auth']}): {r['error']}")
        return
    caps = r["capabilities"]
    print(f"  login:        ok ({r['auth']})")
    print("  capabilities: " + ", ".join(f"{c} {'yes' if ok else 'no'}" for c, ok in caps.items()))
    if not caps["IDLE"]:
        print(f"                no IDLE: new mail is picked up every {poll_seconds:g}s")
    if r["after"] == "move" and not caps["MOVE"]:
        print("                no MOVE: COPY, then \\Deleted and "
              + ("UID EXPUNGE" if caps["UIDPLUS"] else "EXPUNGE (the whole folder)"))  # fmt: skip
    for f in r["folders"]:
        if f["exists"]:
            print(f"  folder:       {f['name']} ({f['role']}): {f['messages']} message(s), "
                  f"{f['unseen']} unseen, UIDVALIDITY {f['uidvalidity']}, "
                  f"UIDNEXT {f['uidnext']}")  # fmt: skip
        elif f["role"] == "reads":
            print(f"  folder:       {f['name']} ({f['role']}): MISSING")
        else:
            print(f"  folder:       {f['name']} ({f['role']}): missing, created at first run")
    if r["after"] == "flag":
        print("  after import: flag \\Seen and $MaildProcessed (messages stay in the folder)")
    if r["error"]:
        print(f"  error:        {r['error']}")
    saved = r["checkpoint"]
    if saved is None:
        print("  checkpoint:   none yet (the first run reads the whole folder)")
    else:
        print(f"  checkpoint:   UIDVALIDITY {saved['uidvalidity']}, last UID {saved['last_uid']}")


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


def _listed(check: Any) -> Any:
    """An option type for values that may be comma-separated: a list of checked values."""

    def parse(text: str) -> list[Any]:
        return [check(v.strip()) for v in text.split(",") if v.strip()]

    return parse


def _status(text: str) -> str:
    statuses = ("new", "open", "in_progress", "escalated", "pending_user", "resolved", "closed")
    if text not in statuses:
        raise argparse.ArgumentTypeError(f"no status {text!r} (use {', '.join(statuses)})")
    return text


def _priority(text: str) -> int:
    digits = text.upper().removeprefix("P")
    if digits not in ("1", "2", "3", "4"):
        raise argparse.ArgumentTypeError(f"{text!r} is not P1..P4")
    return int(digits)


def _tier(text: str) -> int:
    if text not in ("1", "2", "3"):
        raise argparse.ArgumentTypeError(f"{text!r} is not 1, 2 or 3")
    return int(text)


def _flat(values: list[list[Any]] | None) -> list[Any]:
    return [v for group in values or () for v in group]


def _more(what: str, rows: list[dict[str, Any]], key: str, limit: int) -> list[dict[str, Any]]:
    """Cut the look-ahead row; say on stderr how to get the next page."""
    if len(rows) <= limit:
        return rows
    rows = rows[:limit]
    last = rows[-1][key]
    print(f"maild: there are more {what}: repeat with --after {last} for the next "
          f"{limit}", file=sys.stderr)  # fmt: skip
    return rows


def cmd_view(args: argparse.Namespace, settings: Settings) -> int:
    from maild.store import views

    sessions = _sessions(settings, writes=False)
    with sessions() as session:
        if args.command == "tickets":
            filters: dict[str, Any] = {
                "status": _flat(args.status), "priorities": _flat(args.priority),
                "tiers": _flat(args.tier), "breached": args.breached, "after": args.after,
            }  # fmt: skip
            assignee = (args.assignee or "").strip()
            if assignee and assignee.lower() != "none":
                found = views.agent_id(session, assignee)
                if found is None:
                    print(f"maild: --assignee: no agent is called {assignee!r}", file=sys.stderr)
                    return EX_DATAERR
                filters["assignee_id"] = found
            filters["unassigned"] = assignee.lower() == "none"
            rows = views.list_tickets(session, limit=args.limit + 1, **filters)
            rows = _more("tickets", rows, "number", args.limit)
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
            rows = views.list_outbox(session, args.status, args.limit + 1, after=args.after)
            rows = _more("mails", rows, "id", args.limit)
            if args.json:
                _print_json(rows)
            else:
                for o in rows:
                    print(f"{o['id']:<6} {o['status']:<8} #{o['ticket'] or '-':<6} {o['kind']:<10} "
                          f"{escape(', '.join(o['to'])):<32} tries={o['attempts']} "
                          f"{escape(o['last_error'] or '')}")  # fmt: skip
            return EX_OK
        if args.command == "quarantine":
            rows = views.list_quarantine(session, args.limit + 1, after=args.after)
            rows = _more("messages", rows, "id", args.limit)
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
