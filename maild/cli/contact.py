"""``maild contact show|reset ADDRESS`` (where a person stands: bounces, rate limits,
loops), ``maild contact export EMAIL`` (GDPR art. 15) and ``erase EMAIL`` (art. 17)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from maild.cli.tickets import actor_name
from maild.config.settings import Settings

EX_OK, EX_USAGE, EX_NOINPUT, EX_TEMPFAIL = 0, 64, 66, 75
ERASE_TABLES = ("article", "attachment", "blob", "inbound", "inbound_raw", "outbox", "event",
                "watcher", "contact", "ticket", "autoreply_log", "search_doc", "similar_doc")  # fmt: skip


def add_parsers(sub: Any, command: Any, add_json: Any) -> None:
    contact = command(sub, "contact", "one person who writes in: state, reset, export, erase")
    c_sub = contact.add_subparsers(dest="contact_command", required=True, metavar="ACTION")
    show = command(c_sub, "show", "bounce state, rate limits, held notices, tickets")
    show.add_argument("address", help="the person's mail address")
    add_json(show)
    reset = command(c_sub, "reset",
                    "mark deliverable again and clear loop_suspected on their tickets")  # fmt: skip
    reset.add_argument("address", help="the person's mail address")
    add_json(reset)
    exp = command(c_sub, "export", "everything maild holds about one address",
                  description="Everything maild holds about one address: their tickets with "
                  "every article, attachment name and event, tickets they watch, their "
                  "messages elsewhere, mail sent to them and received from them. Changes "
                  "nothing.")  # fmt: skip
    exp.add_argument("email", help="the person's mail address")
    add_json(exp)
    era = command(c_sub, "erase", "remove one person's data for good",
                  description="Remove the person's name and address, the tickets they opened "
                  "(subjects, texts, attachments, raw mail, watchers, outgoing mail), their "
                  "messages on other tickets and all mail to or from them. Tickets stay, "
                  "without personal data, for the reports; each ticket touched gets an audit "
                  "event that names no one. Cannot be undone.")  # fmt: skip
    era.add_argument("email", help="the person's mail address")
    era.add_argument("--yes", action="store_true",
                     help="do not ask (needed when stdin is not a terminal)")  # fmt: skip
    era.add_argument("--as", dest="actor", metavar="WHO",
                     help="who does it, for the audit log (default: USER@cli)")  # fmt: skip
    add_json(era)


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def run(args: argparse.Namespace, settings: Settings, sessions: Any) -> int:
    from maild.desk import privacy

    if args.contact_command in ("show", "reset"):
        return _state(args, settings, sessions)
    email = args.email.strip().lower()
    if args.contact_command == "export":
        with sessions() as session:
            data = privacy.export(session, email)
        if data is None:
            print(f"maild: no contact {email}", file=sys.stderr)
            return EX_NOINPUT
        if args.json:
            _print_json(data)
            return EX_OK
        c = data["contact"]
        print(f"{c['email']} ({c['name'] or 'no name'}), known since {c['created_at']}")
        print(f"  tickets opened:          {len(data['tickets'])}")
        print(f"  tickets watched:         {len(data['watching'])}")
        print(f"  messages on other tickets: {len(data['articles_on_other_tickets'])}")
        print(f"  mail sent to them:       {len(data['mail_sent_to_them'])}")
        print(f"  mail received from them: {len(data['mail_received_from_them'])}")
        print("(everything, for the person: maild contact export ADDRESS --json)")
        return EX_OK
    if not args.yes:
        if not sys.stdin.isatty():
            print("maild: contact erase cannot be undone: add --yes", file=sys.stderr)
            return EX_USAGE
        answer = input(f"Erase everything about {email}? This cannot be undone. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing erased")
            return EX_OK
    from maild.clock import SystemClock
    from maild.store.db import purge_deleted

    with sessions.begin() as session:
        done = privacy.erase(session, email, SystemClock().now(), actor=args.actor or actor_name())
    if done is None:
        print(f"maild: no contact {email}", file=sys.stderr)
        return EX_NOINPUT
    engine = sessions.kw["bind"]
    clean = purge_deleted(engine, ERASE_TABLES)
    done["storage_clean"] = clean
    if args.json:
        _print_json(done)
    else:
        print(f"erased {email}: {done['tickets_anonymized']} ticket(s) anonymised, "
              f"{done['articles_blanked']} message(s) on {done['other_tickets']} other ticket(s) "
              f"blanked, {done['raw_messages_deleted']} raw message(s) and "
              f"{done['outgoing_deleted']} outgoing mail(s) deleted")  # fmt: skip
    if not clean:
        print("maild: erased, but the database's write-ahead log still holds old pages (a "
              "long read kept it busy for 30 s); it is emptied when maild restarts",
              file=sys.stderr)  # fmt: skip
        return EX_TEMPFAIL
    return EX_OK


def _state(args: argparse.Namespace, settings: Settings, sessions: Any) -> int:
    """``maild contact show|reset ADDRESS``."""
    from maild.clock import SystemClock
    from maild.desk import contacts
    from maild.log import escape

    now = SystemClock().now()
    if args.contact_command == "reset":
        with sessions.begin() as session:
            done = contacts.reset(session, args.address, actor=actor_name(), now=now)
        if done is None:
            print(f"maild: no contact {args.address}", file=sys.stderr)
            return EX_NOINPUT
        if args.json:
            _print_json(done)
            return EX_OK
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
