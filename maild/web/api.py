"""``/api/v1``: the JSON API (OpenAPI at ``/api/v1/openapi.json``).

Bearer tokens from ``maild api-token create`` (stored hashed); a token acts
with its agent's rights. Every action is the console's (`maild.web.operate`,
the desk's `TicketOps`). Errors are ``application/problem+json`` (RFC 9457)
with the right status: 401 without a valid token, 403 for a security
incident outside the security group, 404 for an unknown ticket, 409 for a
refused or stale change, 413 for oversized files, 422 naming the field.
A refused request changes nothing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from maild.desk.actions import ActionRefused, StaleChange, TicketNotFound
from maild.pipeline.directory import AgentEntry
from maild.web import auth, queries, submit
from maild.web.operate import ACTIONS, FieldError, Forbidden, TooLarge, Upload, attachments, perform

PROBLEM = "application/problem+json"


class Problem(Exception):
    def __init__(self, status: int, title: str, detail: str = "", field: str | None = None
                 ) -> None:  # fmt: skip
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field


def problem(status: int, title: str, detail: str = "", field: str | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def install(
    app: FastAPI, web: Any, *, new_ticket_fields: Callable[..., Any],
    create_for_caller: Callable[..., Any], search_numbers: Callable[..., Any],
) -> None:  # fmt: skip
    settings = web.settings
    router = APIRouter(prefix="/api/v1", tags=["tickets"])

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return problem(exc.status, exc.title, exc.detail, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        return problem(422, "invalid request", f"{field}: {first.get('msg', 'invalid')}", field)

    def token_agent(request: Request) -> AgentEntry:
        header = request.headers.get("authorization", "")
        scheme, _sp, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Problem(401, "authentication required", "send Authorization: Bearer TOKEN")
        with web.reads() as session:
            found = auth.find_api_token(session, secret.strip())
        if found is None:
            raise Problem(401, "invalid token", "the token is unknown or revoked")
        token_id, agent_id = found
        agent = web.directory.by_id(agent_id)
        if agent is None:
            raise Problem(403, "agent inactive", "the token's agent is no longer in the directory")
        web.token_used(token_id, web.now())  # written in the background, with the sessions
        return agent

    @router.get("/tickets", summary="List or search tickets")
    def list_tickets(
        request: Request, view: str = "open", q: str = "", status: str = "", priority: str = "",
        type: str = "", category: str = "", tier: str = "", assignee: str = "",
        cursor: str = "", limit: int = 0,
    ) -> Any:  # fmt: skip
        agent = token_agent(request)
        filters = {k: v for k, v in (("status", status), ("priority", priority), ("type", type),
                                     ("category", category), ("tier", tier),
                                     ("assignee", assignee)) if v}  # fmt: skip
        size = limit or settings.web.page_size
        if not 1 <= size <= 500:
            raise Problem(422, "invalid request", "limit must be 1..500", "limit")
        numbers = None
        if q.strip():
            found, error = search_numbers(q, agent)
            if error is not None:
                raise Problem(422, "invalid request", f"q: {error}", "q")
            numbers = found.numbers if found is not None else []
        query = queries.QueueQuery(view=view, filters=filters, cursor=cursor or None,
                                   limit=size, numbers=numbers)  # fmt: skip
        with web.reads() as session:
            try:
                data = queries.queue(session, settings, web.directory, agent, query, web.now())
            except queries.BadQuery as exc:
                raise Problem(422, "invalid request", f"{exc.field}: {exc}", exc.field) from None
        return _json(data)

    @router.post("/tickets", status_code=201, summary="Create a ticket as if mailed")
    def create_ticket(
        request: Request, response: Response,
        body: dict[str, Any] = Body(..., examples=[{  # noqa: B008
            "from": "caller@example.org", "name": "Carla Caller", "subject": "VPN down",
            "text": "Since 9:00 nobody on the 2nd floor can connect."}]),
    ) -> Any:  # fmt: skip
        agent = token_agent(request)
        try:
            sender, name, subject, text = new_ticket_fields(body)
            files = attachments(settings, _uploads(body.get("attachments")))
        except FieldError as exc:
            raise Problem(422, "invalid request", f"{exc.field}: {exc}", exc.field) from None
        except TooLarge as exc:
            raise Problem(413, "too large", str(exc)) from None
        number = create_for_caller(agent, sender, name, subject, text, files,
                                   bool(body.get("take")))  # fmt: skip
        if number is None:
            response.status_code = 202
            return {"status": "queued", "ticket": None}
        response.headers["location"] = f"/api/v1/tickets/{number}"
        return {"status": "created", "ticket": number}

    @router.get("/tickets/{number}", summary="One ticket: conversation, events, SLA")
    def show_ticket(request: Request, number: int) -> Any:
        agent = token_agent(request)
        with web.reads() as session:
            data = queries.ticket(session, settings, web.directory, number, agent=agent,
                                  now=web.now())  # fmt: skip
        if data is None:
            raise Problem(404, "not found", f"there is no ticket #{number}")
        if data["restricted"]:
            raise Problem(403, "forbidden", f"ticket #{number} is a security incident")
        return _json(data)

    @router.post("/tickets/{number}/{action}", summary="Act on a ticket")
    async def act(request: Request, number: int, action: str) -> Any:
        agent = await run_in_threadpool(token_agent, request)
        if action not in ACTIONS:
            raise Problem(404, "not found", f"unknown action {action!r}")
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            raise Problem(422, "invalid request", "the body is not JSON", "body") from None
        if not isinstance(body, dict):
            raise Problem(422, "invalid request", "the body must be a JSON object", "body")
        try:
            files = attachments(settings, _uploads(body.get("attachments")))
            done = await run_in_threadpool(perform, web.sessions, web.applier, agent, number,
                                           action, _strings(body), web.now(), files)  # fmt: skip
        except TicketNotFound as exc:
            raise Problem(404, "not found", str(exc)) from None
        except FieldError as exc:
            raise Problem(422, "invalid request", f"{exc.field}: {exc}", exc.field) from None
        except TooLarge as exc:
            raise Problem(413, "too large", str(exc)) from None
        except Forbidden as exc:
            raise Problem(403, "forbidden", str(exc)) from None
        except StaleChange as exc:
            raise Problem(409, "changed meanwhile", str(exc)) from None
        except ActionRefused as exc:
            raise Problem(409, "refused", str(exc)) from None
        with web.reads() as session:
            data = queries.ticket(session, settings, web.directory, number, agent=agent,
                                  now=web.now())  # fmt: skip
        return {
            "ticket": number,
            "events": done.events,
            "mails": len(done.outbox_ids),
            "version": data["version"] if data else None,
        }

    app.include_router(router)


def _strings(body: dict[str, Any]) -> dict[str, Any]:
    """JSON values as the form fields `perform` reads (numbers become text)."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "attachments":
            continue
        if isinstance(value, bool):
            out[key] = "1" if value else ""
        elif isinstance(value, int | float):
            out[key] = str(value)
        elif value is None or isinstance(value, str):
            out[key] = value
        else:
            raise FieldError(key, "must be text or a number")
    return out


def _uploads(value: Any) -> list[Upload]:
    """``attachments: [{"filename", "content_type", "data": base64}]``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise FieldError("attachments", "must be a list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("data"), str):
            raise FieldError(f"attachments.{i}", "needs filename, content_type and base64 data")
        try:
            data = base64.b64decode(item["data"], validate=True)
        except (binascii.Error, ValueError):
            raise FieldError(f"attachments.{i}.data", "is not base64") from None
        out.append(Upload(str(item.get("filename") or ""), str(item.get("content_type") or ""),
                          data))  # fmt: skip
    return out


__all__ = ["install", "submit"]
