"""``maild web`` (the workspace) and ``maild api-token`` (bearer tokens for /api/v1).

maild web                          serve the console, requester pages and API
maild web sessions [--all] [--revoke ID ... | --revoke-agent EMAIL]
maild web revoke-links N           requester links of ticket N stop working
maild api-token create --agent EMAIL [--name NAME]   (the token: last line of stdout)
maild api-token list [--json]
maild api-token revoke ID
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from maild.config.settings import Settings

EX_OK, EX_USAGE, EX_DATAERR, EX_NOINPUT = 0, 64, 65, 66


def add_parsers(sub: Any, command: Any, add_json: Any) -> None:
    """``maild web [ACTION]`` and ``maild api-token ACTION``.

    `command(sub, name, help)` makes a subcommand parser; `add_json(p)` its ``--json``.
    """
    web = command(sub, "web", "serve the web console, requester pages and JSON API "
                  "(maild serve runs it; ACTION: manage it)")  # fmt: skip
    w_sub = web.add_subparsers(dest="web_command", metavar="ACTION")
    sessions = command(w_sub, "sessions", "list (or revoke) agents' console sessions")
    sessions.add_argument("--all", action="store_true", help="also ended and revoked sessions")
    sessions.add_argument("--revoke", type=int, nargs="+", metavar="ID", help="end these now")
    sessions.add_argument("--revoke-agent", metavar="EMAIL", help="end every session of an agent")
    add_json(sessions)
    links = command(w_sub, "revoke-links", "make a ticket's requester links stop working")
    links.add_argument("number", type=int, help="the ticket number")
    add_json(links)

    token = command(sub, "api-token", "bearer tokens for /api/v1")
    t_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = command(t_sub, "create", "make a token (printed once, as the last line)")
    create.add_argument("--agent", required=True, metavar="EMAIL", help="the agent it acts as")
    create.add_argument("--name", default="", help="what it is for")
    add_json(create)
    add_json(command(t_sub, "list", "tokens (never their secrets)"))
    revoke = command(t_sub, "revoke", "stop a token working")
    revoke.add_argument("id", type=int, help="the token's id (maild api-token list)")
    add_json(revoke)


def writes(args: argparse.Namespace) -> bool:
    """Whether the command changes the database (see maild.cli.safety)."""
    if args.command == "web":
        return args.web_command != "sessions" or bool(args.revoke or args.revoke_agent)
    return bool(args.token_command != "list")


def _json_out(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def handles(args: argparse.Namespace) -> bool:
    return args.command in ("web", "api-token")


def run(args: argparse.Namespace, settings: Settings, sessions: Any) -> int:
    from maild.addresses import normalize_address
    from maild.clock import SystemClock
    from maild.desk import agents
    from maild.desk.apply import Applier
    from maild.mail.render import Renderer
    from maild.web import auth

    now = SystemClock().now()
    if args.command == "web":
        if args.web_command is None:
            from maild.web.server import serve

            return serve(settings)
        if args.web_command == "revoke-links":
            with sessions.begin() as session:
                ok = auth.revoke_requester_links(session, args.number, now)
            if not ok:
                print(f"maild: no ticket #{args.number}", file=sys.stderr)
                return EX_NOINPUT
            if args.json:
                _json_out({"ticket": args.number, "revoked_at": now.isoformat()})
            else:
                print(f"ticket #{args.number}: requester links issued until now no longer work")
            return EX_OK
        with sessions.begin() as session:
            if args.revoke or args.revoke_agent:
                agent_id = None
                if args.revoke_agent:
                    from sqlalchemy import select

                    from maild.store.models import Agent

                    agent_id = session.scalar(select(Agent.id).where(
                        Agent.email == normalize_address(args.revoke_agent)))  # fmt: skip
                    if agent_id is None:
                        print(f"maild: no agent {args.revoke_agent}", file=sys.stderr)
                        return EX_NOINPUT
                n = auth.revoke_sessions(session, now, ids=args.revoke, agent_id=agent_id)
                if args.json:
                    _json_out({"revoked": n})
                else:
                    print(f"{n} session(s) revoked")
                return EX_OK
            rows = auth.list_sessions(session, now, all_=args.all)
        if args.json:
            json.dump(rows, sys.stdout, indent=2)
            sys.stdout.write("\n")
        elif not rows:
            print("no sessions")
        for r in [] if args.json else rows:
            state = "revoked" if r["revoked_at"] else "live"
            print(f"{r['id']:>5}  {r['agent']:<32} {state:<8} last seen {r['last_seen_at']}  "
                  f"from {r['client']}")  # fmt: skip
        return EX_OK
    # api-token
    if args.token_command == "create":
        applier = Applier(settings, Renderer.from_settings(settings))
        directory = agents.install(sessions, applier)
        agent = directory.by_email(normalize_address(args.agent))
        if agent is None:
            print(f"maild: {args.agent} is not an active agent of the directory",
                  file=sys.stderr)  # fmt: skip
            return EX_DATAERR
        with sessions.begin() as session:
            secret, row = auth.create_api_token(session, agent.id, args.name, now)
            token_id = row.id
        if args.json:
            _json_out({"id": token_id, "agent": agent.email, "token": secret})
            return EX_OK
        print(f"API token {token_id} for {agent.email}; it is shown only now:", file=sys.stderr)
        print(secret)
        return EX_OK
    if args.token_command == "list":
        with sessions() as session:
            rows = auth.list_api_tokens(session)
        if args.json:
            json.dump(rows, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return EX_OK
        if not rows:
            print("no API tokens")
        for r in rows:
            state = "revoked" if r["revoked_at"] else "live"
            print(f"{r['id']:>4}  {r['agent']:<32} {state:<8} {r['prefix']}…  {r['name']}  "
                  f"last used {r['last_used_at'] or 'never'}")  # fmt: skip
        return EX_OK
    with sessions.begin() as session:
        ok = auth.revoke_api_token(session, args.id, now)
    if not ok:
        print(f"maild: no live API token {args.id}", file=sys.stderr)
        return EX_NOINPUT
    if args.json:
        _json_out({"revoked": args.id})
    else:
        print(f"API token {args.id} revoked")
    return EX_OK
