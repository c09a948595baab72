"""``maild search``: the full-text index from the command line.

    maild search find WORDS...      tickets matching every word, best first
    maild search similar N          past fixes for ticket N (or --text TEXT)
    maild search reindex            rebuild the index from the stored tickets

The command line is an administrator's: it sees security tickets too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from maild.config.settings import Settings

EX_OK, EX_USAGE, EX_DATAERR = 0, 64, 65


def add_parsers(sub: Any, command: Any, add_json: Any) -> None:
    """`command(sub, name, help)` makes a subcommand parser; `add_json(p)` its ``--json``."""
    p = command(sub, "search", "full-text search and past fixes")
    s_sub = p.add_subparsers(dest="search_command", required=True, metavar="ACTION")
    find = command(s_sub, "find", "tickets matching every word, best first")
    find.add_argument("words", nargs="+", help="words every ticket found contains")
    find.add_argument("--limit", type=int, default=20, metavar="N",
                      help="at most N tickets (default 20)")  # fmt: skip
    find.add_argument("--after", metavar="CURSOR",
                      help="the cursor of the last hit of the previous page")  # fmt: skip
    add_json(find)
    similar = command(s_sub, "similar", "the resolved tickets most like a ticket")
    similar.add_argument("number", type=int, nargs="?", help="the ticket to compare")
    similar.add_argument("--text", help="compare this text instead of a ticket")
    similar.add_argument("--limit", type=int, default=3, metavar="N",
                         help="at most N past fixes (default 3)")  # fmt: skip
    add_json(similar)
    add_json(command(s_sub, "reindex", "rebuild the whole index from the stored tickets"))


def handles(args: argparse.Namespace) -> bool:
    return bool(args.command == "search")


def run(args: argparse.Namespace, settings: Settings, sessions: Any) -> int:
    from maild.store import search

    cmd = args.search_command
    if cmd == "reindex":
        with sessions.begin() as session:
            docs, fixes = search.rebuild(session)
        if args.json:
            _json({"texts": docs, "past_fixes": fixes})
        else:
            print(f"search index rebuilt: {docs} texts, {fixes} past fixes")
        return EX_OK
    if cmd == "find":
        try:
            with sessions() as session:
                hits = search.search_tickets(session, " ".join(args.words), limit=args.limit,
                                             after=args.after, include_security=True)  # fmt: skip
        except ValueError as exc:
            print(f"maild: {exc}", file=sys.stderr)
            return EX_USAGE
        if args.json:
            _json([{"number": h.number, "subject": h.subject, "status": h.status,
                    "priority": f"P{h.priority}", "security": h.security, "rank": h.rank,
                    "snippet": h.snippet, "cursor": h.cursor} for h in hits])  # fmt: skip
        else:
            for h in hits:
                print(f"#{h.number:<6} {h.status:<12} P{h.priority} {h.subject[:60]}")
                print(f"        {h.snippet[:150]}")
        return EX_OK
    if (args.number is None) == (args.text is None):
        print("maild: give a ticket number or --text", file=sys.stderr)
        return EX_USAGE
    with sessions() as session:
        fixes = search.similar_resolved(session, args.number if args.text is None else args.text,
                                        limit=args.limit, include_security=True)  # fmt: skip
    if args.json:
        _json([{"number": f.number, "subject": f.subject, "status": f.status,
                "resolution": f.resolution, "resolved_at": f.resolved_at.isoformat(),
                "rank": f.rank, "helpful": f.helpful} for f in fixes])  # fmt: skip
    else:
        for f in fixes:
            print(f"#{f.number:<6} {f.subject[:60]}")
            print(f"        {f.short(150) or '(no resolution was written down)'}")
    return EX_OK


def _json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
