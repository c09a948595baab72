"""The workspace as one ASGI app (FastAPI): console, requester pages, ``/api/v1``.

`WebApp` holds what every request needs (settings, the database, the desk's
`Applier`, the signer, the compiled pages); `create_app` wires the routes:

- ``/login`` and ``/login/{token}``: sign in by a mailed link (`maild.web.auth`);
- ``/`` the queue, ``/tickets/N`` a ticket, ``POST /tickets/N/{action}`` every
  action (`maild.web.operate`), ``/new`` a ticket for a caller, ``/search``,
  ``/dashboard``;
- ``/r/N/{token}`` the requester's page (`maild.mail.weblink`);
- ``/api/v1/...`` the JSON API (`maild.web.api`).

Every response carries a strict CSP (no script at all, styles from our own
origin), ``frame-ancestors 'none'`` and ``nosniff``; every POST from a browser
checks a CSRF token and the Origin; request bodies are cut off at
``limits.max_message_bytes``.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maild.addresses import is_valid_address, normalize_address
from maild.clock import Clock, SystemClock
from maild.config.settings import Settings
from maild.desk import agents, report
from maild.desk.actions import ActionRefused, StaleChange, TicketNotFound, TicketOps
from maild.desk.apply import Applier
from maild.mail.phrases import in_language
from maild.mail.render import Renderer
from maild.mail.tokens import Signer, load_or_create_secret
from maild.mail.weblink import page_secret
from maild.pipeline.decision import EventSpec
from maild.pipeline.directory import AgentEntry, Directory
from maild.pipeline.triage import Rulebook
from maild.store.db import make_engine, session_factory
from maild.store.states import FINISHED_STATUSES, TicketStatus
from maild.web import api, auth, queries, submit
from maild.web.operate import FieldError, Forbidden, TooLarge, Upload, attachments, perform
from maild.web.pages import Pages, web_dir
from maild.web.search import Found, find_tickets, similar

log = logging.getLogger(__name__)

SESSION_COOKIE = "maild_session"
BROWSER_COOKIE = "maild_browser"
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")  # fmt: skip
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)
DIRECTORY_TTL = 30.0
PURGE_SECONDS = 3600.0
TOUCH_SECONDS = 10.0  # how often the sessions seen are written (auth.TOUCH_EVERY apart)  # seconds between re-reads of the agent directory
WAIT_FOR_TICKET = 8.0
DASHBOARD_DAYS = (7, 30, 90, 365)  # seconds a new ticket may take before the answer says "queued"


class LoginRequired(Exception):
    """No live session: browsers go to /login."""


class NotFound(Exception):
    pass


class WebApp:
    """What every request needs, built once per process."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.engine = make_engine(settings.database.url)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        # Pages read through a second engine that never takes SQLite's write lock.
        self.reader = make_engine(settings.database.url, read_only=True)
        self.reads: sessionmaker[Session] = session_factory(self.reader)
        self.applier = Applier(settings, Renderer.from_settings(settings))
        self.signer: Signer = Signer(load_or_create_secret(settings.helpdesk.secret_file))
        self.applier._signer = self.signer
        self.pages = Pages(settings.helpdesk.timezone)
        self.rules = Rulebook.from_settings(settings)
        agents.install(self.sessions, self.applier)
        self._directory_at = time.monotonic()
        self._lock = threading.Lock()
        # Sessions seen since the last write of last_seen_at: written together, off the
        # request path (a page view must not queue for the write lock).
        self._seen: dict[int, datetime] = {}
        self._tokens_used: dict[int, datetime] = {}
        self._purged_at = 0.0
        self._stop = threading.Event()
        self._toucher = threading.Thread(target=self._touch_loop, name="web-touch", daemon=True)
        self._toucher.start()
        origin = urlsplit(settings.web.url)
        self.origin = f"{origin.scheme}://{origin.netloc}"

    @property
    def directory(self) -> Directory:
        """The agent directory, re-read from the database every half minute (the daemon
        syncs it with the configuration, on start and on SIGHUP)."""
        if time.monotonic() - self._directory_at > DIRECTORY_TTL:
            with self._lock:
                if time.monotonic() - self._directory_at > DIRECTORY_TTL:
                    with self.reads() as session:
                        self.applier.directory = agents.load(session, self.settings.tiers.language)
                    self._directory_at = time.monotonic()
        return self.applier.directory

    def now(self) -> datetime:
        return self.clock.now()

    def search(self, session: Session, q: str, agent: AgentEntry, limit: int = 50) -> Found:
        """The tickets the words `q` find, best first (`maild.web.search`)."""
        secure = queries.may_see_security(self.settings, agent)
        return find_tickets(session, q, limit, include_security=secure)

    def seen(self, session_id: int, now: datetime) -> None:
        with self._lock:
            self._seen[session_id] = now

    def token_used(self, token_id: int, now: datetime) -> None:
        with self._lock:
            self._tokens_used[token_id] = now

    def _touch_loop(self) -> None:
        while not self._stop.wait(TOUCH_SECONDS):
            self.flush_seen()

    def flush_seen(self) -> None:
        """Write the sessions and tokens used since the last round; once an hour, forget
        sign-in requests older than a day and sessions over for 30 days."""
        with self._lock:
            seen, self._seen = self._seen, {}
            used, self._tokens_used = self._tokens_used, {}
        purge = time.monotonic() - self._purged_at > PURGE_SECONDS
        if not seen and not used and not purge:
            return
        try:
            with self.sessions.begin() as session:
                for session_id, at in seen.items():
                    auth.touch_session(session, session_id, at)
                for token_id, at in used.items():
                    auth.token_used(session, token_id, at)
                if purge:
                    auth.purge(session, self.now())
            if purge:
                self._purged_at = time.monotonic()
        except Exception:
            log.exception("could not record %d session(s) as seen; next round", len(seen))
            with self._lock:
                for session_id, at in seen.items():
                    self._seen.setdefault(session_id, at)
                for token_id, at in used.items():
                    self._tokens_used.setdefault(token_id, at)

    def close(self) -> None:
        self._stop.set()
        self._toucher.join(5)
        self.flush_seen()
        self.engine.dispose()
        self.reader.dispose()


# --- middleware ----------------------------------------------------------------------------


class Guard:
    """Security headers on every response; request bodies over `limit` get 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _drain(receive, DRAIN_BYTES)
            await _too_large(scope, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge
            return message

        async def secure_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, limited_receive, secure_send)
        except BodyTooLarge:
            if not started:
                await _drain(receive, DRAIN_BYTES)
                await _too_large(scope, send)


class BodyTooLarge(Exception):
    pass


# A refused body is read and dropped up to this much before the 413: closing the
# connection with the client's bytes unread makes the kernel reset it, and the
# client (a browser, httpx) sees "connection reset" instead of the answer. A
# larger body is cut off (its sender gets the reset).
DRAIN_BYTES = 8 * 1024 * 1024


async def _drain(receive: Receive, limit: int) -> None:
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _too_large(scope: Scope, send: Send) -> None:
    body = b"request body too large"
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
        (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


# --- helpers -----------------------------------------------------------------------------


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def same_origin(web: WebApp, request: Request) -> bool:
    """The Origin (or, lacking one, the Referer) is ours; neither sent: only the token counts."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return True
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    own = {web.origin, f"{request.url.scheme}://{request.url.netloc}"}
    return origin in own


def _language(request: Request, default: str) -> str:
    accept = request.headers.get("accept-language", "")
    for part in accept.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in ("en", "fi"):
            return code
    return default


async def read_form(request: Request, settings: Settings) -> tuple[dict[str, str], list[Upload]]:
    """The fields and files of a form post (urlencoded or multipart), within the limits."""
    lim = settings.limits
    try:
        form = await request.form(max_files=lim.max_attachments + 1, max_fields=100,
                                  max_part_size=lim.max_message_bytes)  # fmt: skip
    except Exception as exc:  # malformed multipart, too many parts
        raise FieldError("form", f"the form could not be read: {type(exc).__name__}") from None
    fields: dict[str, str] = {}
    uploads: list[Upload] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read()
            if value.filename or data:
                uploads.append(Upload(value.filename or "", value.content_type or "", data))
        else:
            fields.setdefault(key, value)
    await form.close()
    return fields, uploads


def _cookie_args(web: WebApp) -> dict[str, Any]:
    return {"httponly": True, "samesite": "lax", "secure": web.settings.web.secure, "path": "/"}


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


# --- the app --------------------------------------------------------------------------------


def create_app(settings: Settings, clock: Clock | None = None) -> FastAPI:
    web = WebApp(settings, clock)
    app = FastAPI(title="maild", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/api/v1/openapi.json")  # fmt: skip
    app.state.web = web
    app.add_middleware(Guard, limit=settings.limits.max_message_bytes + 64 * 1024)
    css = (web_dir() / "static" / "console.css").read_bytes()

    def page(request: Request, name: str, lang: str, status: int = 200, **context: Any
             ) -> HTMLResponse:  # fmt: skip
        html = web.pages.render(name, lang, {"helpdesk": settings.helpdesk.name,
                                             "request_path": request.url.path, **context})  # fmt: skip
        return HTMLResponse(html, status_code=status)

    # --- who is asking ---

    def viewer(request: Request) -> tuple[AgentEntry, auth.SessionInfo]:
        secret = request.cookies.get(SESSION_COOKIE)
        now = web.now()
        if secret:
            with web.reads() as session:
                info, touch = auth.find_session(session, settings.web, secret, now)
            if info is not None:
                agent = web.directory.by_id(info.agent_id)
                if agent is not None:
                    if touch:
                        web.seen(info.id, now)
                    return agent, info
        sso = _proxy_user(request)
        if sso is not None:
            return sso
        raise LoginRequired

    def _proxy_user(request: Request) -> tuple[AgentEntry, auth.SessionInfo] | None:
        header = settings.web.trusted_proxy_header
        if not header or client_of(request) not in settings.web.trusted_proxies:
            return None
        value = request.headers.get(header)
        agent = web.directory.by_email(normalize_address(value)) if value else None
        if agent is None:
            return None
        # A proxy-authenticated request: the CSRF token is bound to the agent.
        return agent, auth.SessionInfo(0, agent.id, web.signer.sign("sso-csrf", agent.email))

    def check_post(request: Request, fields: dict[str, str], info: auth.SessionInfo) -> None:
        token = fields.get("csrf", "")
        if not same_origin(web, request) or not secrets.compare_digest(token, info.csrf):
            raise CsrfFailed

    # --- errors ---

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)
        return PlainTextResponse("sign in first", status_code=401)

    @app.exception_handler(CsrfFailed)
    async def _csrf(request: Request, exc: CsrfFailed) -> Response:
        lang = _language(request, settings.helpdesk.default_language)
        return page(request, "error.html.j2", lang, 403, agent=None, title="error.forbidden",
                    message=web.pages.translator(lang)("error.csrf"))  # fmt: skip

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        lang = _language(request, settings.helpdesk.default_language)
        return page(request, "error.html.j2", lang, 404, agent=None, title="error.not_found",
                    message=web.pages.translator(lang)("error.not_found_text"))  # fmt: skip

    # --- static ---

    @app.get("/static/console.css", include_in_schema=False)
    def _css() -> Response:
        return Response(css, media_type="text/css",
                        headers={"cache-control": "public, max-age=3600"})  # fmt: skip

    # --- signing in ---

    def _browser(request: Request) -> tuple[str, bool]:
        value = request.cookies.get(BROWSER_COOKIE)
        if value and 20 <= len(value) <= 64:
            return value, False
        return secrets.token_urlsafe(24), True

    def _with_browser(response: Response, browser: str, new: bool) -> Response:
        if new:
            response.set_cookie(BROWSER_COOKIE, browser, max_age=3600, **_cookie_args(web))
        return response

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> Response:
        browser, new = _browser(request)
        lang = _language(request, settings.helpdesk.default_language)
        response = page(request, "login.html.j2", lang, agent=None, sent=False, limited=False,
                        next=_safe_next(next), csrf=web.signer.sign("login-form", browser))  # fmt: skip
        return _with_browser(response, browser, new)

    async def checked_login_form(request: Request) -> tuple[dict[str, str], str]:
        """A sign-in form's fields, refused (CsrfFailed) unless it came from a page of
        ours in the browser that holds the cookie it was made for; with its token."""
        browser = request.cookies.get(BROWSER_COOKIE, "")
        fields, _files = await read_form(request, settings)
        expected = web.signer.sign("login-form", browser) if browser else ""
        if (
            not browser
            or not same_origin(web, request)
            or not secrets.compare_digest(fields.get("csrf", ""), expected)
        ):
            raise CsrfFailed
        return fields, expected

    @app.post("/login", include_in_schema=False)
    async def login_post(request: Request) -> Response:
        fields, expected = await checked_login_form(request)
        browser = request.cookies.get(BROWSER_COOKIE, "")
        lang = _language(request, settings.helpdesk.default_language)
        email = normalize_address(fields.get("email", "").strip())[:320]
        if not is_valid_address(email):
            return page(request, "login.html.j2", lang, 422, agent=None, sent=False,
                        limited=False, next=_safe_next(fields.get("next")), csrf=expected,
                        error=web.pages.translator(lang)("login.bad_address"))  # fmt: skip
        nxt = _safe_next(fields.get("next"))
        result = await run_in_threadpool(_request_login, email, client_of(request), browser, nxt)
        return page(request, "login.html.j2", lang, 429 if result.limited else 200, agent=None,
                    sent=not result.limited, limited=result.limited, next=nxt,
                    csrf=expected)  # fmt: skip

    def _request_login(email: str, client: str, browser: str, nxt: str) -> auth.LoginRequest:
        now = web.now()
        with web.sessions.begin() as session:
            result = auth.request_login(session, settings.web, web.directory, email, client,
                                        browser, now)  # fmt: skip
            if result.token is not None and result.agent_id is not None:
                agent = web.directory.by_id(result.agent_id)
                assert agent is not None
                link = f"{settings.web.url}/login/{result.token}"
                if nxt != "/":
                    link += "?" + urlencode({"next": nxt})
                web.applier.queue_mail(session, "web_login", agent.address, agent.language,
                                       {"link": link, "agent": agent,
                                        "minutes": int(settings.web.login_link_minutes)},
                                       now, kind="web_login")  # fmt: skip
                log.info("sign-in link queued for %s", email)
        return result

    @app.get("/login/{token}", include_in_schema=False)
    def login_link(request: Request, token: str, next: str = "/") -> Response:
        lang = _language(request, settings.helpdesk.default_language)
        browser, new = _browser(request)
        with web.reads() as session:
            row = auth.pending_login(session, token, web.now())
        valid = row is not None and row.agent_id is not None
        response = page(request, "login_confirm.html.j2", lang, 200 if valid else 400,
                        agent=None, valid=valid, token=token, next=_safe_next(next),
                        csrf=web.signer.sign("login-form", browser))  # fmt: skip
        return _with_browser(response, browser, new)

    @app.post("/login/{token}", include_in_schema=False)
    async def login_confirm(request: Request, token: str) -> Response:
        fields, expected = await checked_login_form(request)
        browser = request.cookies.get(BROWSER_COOKIE, "")
        now = web.now()

        def consume() -> str | None:
            with web.sessions.begin() as session:
                agent_id = auth.consume_login(session, token, browser, now)
                if agent_id is None or web.directory.by_id(agent_id) is None:
                    return None
                secret, _info = auth.start_session(
                    session, settings.web, agent_id, client_of(request),
                    request.headers.get("user-agent", ""), now)  # fmt: skip
                return secret

        secret = await run_in_threadpool(consume)
        if secret is None:
            lang = _language(request, settings.helpdesk.default_language)
            return page(request, "login_confirm.html.j2", lang, 400, agent=None, valid=False,
                        token="", next="/", csrf=expected)  # fmt: skip
        response = RedirectResponse(_safe_next(fields.get("next")), status_code=303)
        response.set_cookie(SESSION_COOKIE, secret, **_cookie_args(web))
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        agent, info = await run_in_threadpool(viewer, request)
        fields, _ = await read_form(request, settings)
        check_post(request, fields, info)
        if info.id:
            with web.sessions.begin() as session:
                auth.end_session(session, info.id, web.now())
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- the queue ---

    @app.get("/", include_in_schema=False)
    def queue_page(request: Request) -> Response:
        agent, info = viewer(request)
        params = request.query_params
        view = params.get("view") or "open"
        filters = {k: params[k] for k in queries.FILTERS if params.get(k)}
        q = queries.QueueQuery(view=view, filters=filters, cursor=params.get("after") or None,
                               limit=settings.web.page_size)  # fmt: skip
        now = web.now()
        with web.reads() as session:
            try:
                data = queries.queue(session, settings, web.directory, agent, q, now)
                error = None
            except queries.BadQuery as exc:
                data = {"view": "open", "filters": {}, "tickets": [], "count": 0, "next": None}
                error = f"{exc.field}: {exc}"
            counts = queries.view_counts(session, settings, web.directory, agent)
        base = {k: v for k, v in filters.items()}
        base["view"] = data["view"]
        next_url = f"/?{urlencode({**base, 'after': data['next']})}" if data["next"] else None
        return page(request, "queue.html.j2", agent.language, 400 if error else 200,
                    agent=agent, csrf=info.csrf, data=data, counts=counts, views=queries.VIEWS,
                    filters=filters, now=now, next_url=next_url, error=error,
                    statuses=queries.STATUSES,
                    categories=web.rules.category_names)  # fmt: skip

    # --- one ticket ---

    @app.get("/tickets/{number}", include_in_schema=False)
    def ticket_page(request: Request, number: int) -> Response:
        agent, info = viewer(request)
        now = web.now()
        with web.reads() as session:
            data = queries.ticket(session, settings, web.directory, number, agent=agent, now=now)
        if data is None:
            raise NotFound
        status = 403 if data["restricted"] else 200
        past = []
        if not data["restricted"]:
            with web.reads() as session:
                past = similar(session, number,
                               include_security=queries.may_see_security(settings, agent))  # fmt: skip
        return page(request, "ticket.html.j2", agent.language, status, agent=agent,
                    csrf=info.csrf, t_=data, now=now, agents=web.directory.active,
                    categories=web.rules.category_names,
                    statuses=queries.STATUSES, message=request.query_params.get("done"),
                    similar=past)  # fmt: skip

    @app.get("/tickets/{number}/attachments/{attachment_id}", include_in_schema=False)
    def ticket_attachment(request: Request, number: int, attachment_id: int) -> Response:
        agent, _info = viewer(request)
        with web.reads() as session:
            found = queries.attachment(session, settings, number, attachment_id, agent=agent)
        if found is None:
            raise NotFound
        return download(*found)

    @app.post("/tickets/{number}/{action}", include_in_schema=False)
    async def ticket_action(request: Request, number: int, action: str) -> Response:
        agent, info = await run_in_threadpool(viewer, request)
        try:
            fields, uploads = await read_form(request, settings)
        except FieldError as exc:
            return _action_error(request, agent, number, 422, f"{exc.field}: {exc}", info.csrf)
        check_post(request, fields, info)
        try:
            files = attachments(settings, uploads)
            done = await run_in_threadpool(perform, web.sessions, web.applier, agent, number,
                                           action, fields, web.now(), files)  # fmt: skip
        except TicketNotFound:
            raise NotFound from None
        except TooLarge as exc:
            return _action_error(request, agent, number, 413, str(exc), info.csrf)
        except FieldError as exc:
            return _action_error(request, agent, number, 422, f"{exc.field}: {exc}", info.csrf)
        except Forbidden as exc:
            return _action_error(request, agent, number, 403, str(exc), info.csrf)
        except StaleChange as exc:
            return _action_error(request, agent, number, 409, str(exc), info.csrf)
        except ActionRefused as exc:
            return _action_error(request, agent, number, 409, said(exc, agent.language),
                                 info.csrf)  # fmt: skip
        what = ", ".join(done.events) or "nothing to change"
        return RedirectResponse(f"/tickets/{number}?{urlencode({'done': what})}",
                                status_code=303)  # fmt: skip

    def _action_error(request: Request, agent: AgentEntry, number: int, status: int,
                      message: str, csrf: str = "") -> Response:  # fmt: skip
        return page(request, "error.html.j2", agent.language, status, agent=agent, csrf=csrf,
                    title="error.refused", message=message, back=f"/tickets/{number}")  # fmt: skip

    # --- a new ticket for a caller ---

    @app.get("/new", include_in_schema=False)
    def new_form(request: Request) -> Response:
        agent, info = viewer(request)
        return page(request, "new.html.j2", agent.language, agent=agent, csrf=info.csrf,
                    error=None, fields={})  # fmt: skip

    @app.post("/new", include_in_schema=False)
    async def new_post(request: Request) -> Response:
        agent, info = await run_in_threadpool(viewer, request)
        fields, uploads = await read_form(request, settings)
        check_post(request, fields, info)
        try:
            files = attachments(settings, uploads)
            sender, name, subject, text = new_ticket_fields(fields)
        except (FieldError, TooLarge) as exc:
            code = 413 if isinstance(exc, TooLarge) else 422
            message = str(exc) if isinstance(exc, TooLarge) else f"{exc.field}: {exc}"
            return page(request, "new.html.j2", agent.language, code, agent=agent,
                        csrf=info.csrf, error=message, fields=fields)  # fmt: skip
        number = await run_in_threadpool(create_for_caller, agent, sender, name, subject, text,
                                         files, fields.get("take") == "1")  # fmt: skip
        if number is None:
            return RedirectResponse("/?" + urlencode({"view": "open"}), status_code=303)
        return RedirectResponse(f"/tickets/{number}", status_code=303)

    def create_for_caller(agent: AgentEntry, sender: str, name: str, subject: str, text: str,
                          files: Any, take: bool) -> int | None:  # fmt: skip
        stored = submit.new_ticket(web.sessions, settings, web.clock, sender=sender, name=name,
                                   subject=subject, text=text, source=submit.WEB,
                                   attachments=files)  # fmt: skip
        row = submit.wait(web.reads, stored.inbound_id, WAIT_FOR_TICKET)
        if row is None or row.ticket_id is None:
            return None
        now = web.now()
        with web.sessions.begin() as session:
            ops = TicketOps(session, web.applier, now)
            ticket = ops.get(row.ticket_id)
            ops.applier.event(session, ticket.id, _created_event(agent), now)
            if take and ticket.status not in FINISHED_STATUSES:
                ops.assign(ticket.id, agent.email, actor=agent.email)
        return row.ticket_id

    # --- search ---

    @app.get("/search", include_in_schema=False)
    def search_page(request: Request, q: str = "") -> Response:
        agent, info = viewer(request)
        now = web.now()
        found, error = search_numbers(q, agent)
        data = None
        if found is not None:
            with web.reads() as session:
                data = queries.queue(session, settings, web.directory, agent,
                                     queries.QueueQuery(view="open", numbers=found.numbers), now)  # fmt: skip
            for row in data["tickets"]:
                row["snippet"] = "" if row["restricted"] else found.snippets.get(row["number"], "")
        return page(request, "search.html.j2", agent.language, agent=agent, csrf=info.csrf,
                    q=q, data=data, now=now, error=error)  # fmt: skip

    def search_numbers(q: str, agent: AgentEntry) -> tuple[Found | None, str | None]:
        q = q.strip()
        if not q:
            return None, None
        with web.reads() as session:
            try:
                return web.search(session, q, agent), None
            except ValueError as exc:
                return None, str(exc)

    # --- the dashboard ---

    @app.get("/dashboard", include_in_schema=False)
    def dashboard(request: Request, days: int = 30) -> Response:
        """The report's figures for tickets created in the last `days` (7, 30, 90 or 365)."""
        agent, info = viewer(request)
        days = days if days in DASHBOARD_DAYS else 30
        now = web.now()
        with web.reads() as session:
            data = report.build(session, settings, now, now - timedelta(days=days))
            breached = queries.breached_tickets(session, since=now - timedelta(days=days))
        charts = dashboard_charts(data)
        return page(request, "dashboard.html.j2", agent.language, agent=agent, csrf=info.csrf,
                    r=data, charts=charts, breached=breached, now=now, days=days,
                    choices=DASHBOARD_DAYS)  # fmt: skip

    # --- the requester's page ---

    def requester_view(number: int, token: str) -> Any:
        with web.reads() as session:
            ticket = auth.requester_ticket(session, settings.web, web.signer, number, token,
                                           web.now())  # fmt: skip
            if ticket is None:
                raise NotFound
            session.expunge(ticket)
            return ticket

    @app.get("/r/{number}/{token}", include_in_schema=False)
    def requester_page(request: Request, number: int, token: str) -> Response:
        ticket = requester_view(number, token)
        now = web.now()
        with web.reads() as session:
            data = queries.ticket(session, settings, web.directory, number, agent=None, now=now)
        assert data is not None
        return page(request, "requester.html.j2", ticket.language, agent=None, t_=data,
                    base=f"/r/{number}/{token}", csrf=page_secret(web.signer, number, token),
                    message=request.query_params.get("done"),
                    finished=ticket.status in FINISHED_STATUSES,
                    rating=ticket.satisfaction_score)  # fmt: skip

    @app.get("/r/{number}/{token}/attachments/{attachment_id}", include_in_schema=False)
    def requester_attachment(number: int, token: str, attachment_id: int) -> Response:
        requester_view(number, token)
        with web.reads() as session:
            found = queries.attachment(session, settings, number, attachment_id, agent=None)
        if found is None:
            raise NotFound
        return download(*found)

    @app.post("/r/{number}/{token}/{action}", include_in_schema=False)
    async def requester_action(request: Request, number: int, token: str, action: str
                               ) -> Response:  # fmt: skip
        ticket = await run_in_threadpool(requester_view, number, token)
        fields, uploads = await read_form(request, settings)
        if not same_origin(web, request) or not secrets.compare_digest(
            fields.get("csrf", ""), page_secret(web.signer, number, token)
        ):
            raise CsrfFailed
        t = web.pages.translator(ticket.language)
        base = f"/r/{number}/{token}"
        try:
            if action == "reply":
                files = attachments(settings, uploads)
                text = fields.get("text", "").replace("\r\n", "\n")
                if not text.strip():
                    raise FieldError("text", t("requester.empty"))
                await run_in_threadpool(submit.requester_reply, web.sessions, settings,
                                        web.clock, web.signer, ticket, text, files)  # fmt: skip
                done = t("requester.sent")
            elif action in ("solved", "unsolved"):
                await run_in_threadpool(requester_verdict, ticket, action == "solved", t)
                done = t("requester.thanks")
            elif action == "rate":
                score, comment = rating_fields(fields, t)
                await run_in_threadpool(requester_rating, ticket, score, comment, t)
                done = t("requester.rated")
            else:
                raise NotFound
        except TooLarge as exc:
            return page(request, "error.html.j2", ticket.language, 413, agent=None,
                        title="error.refused", message=str(exc), back=base)  # fmt: skip
        except FieldError as exc:
            return page(request, "error.html.j2", ticket.language, 422, agent=None,
                        title="error.refused", message=str(exc), back=base)  # fmt: skip
        except ActionRefused as exc:
            return page(request, "error.html.j2", ticket.language, 409, agent=None,
                        title="error.refused", message=said(exc, ticket.language),
                        back=base)  # fmt: skip
        return RedirectResponse(f"{base}?{urlencode({'done': done})}", status_code=303)

    def requester_verdict(ticket: Any, solved: bool, t: Any) -> None:
        """ "It's solved" confirms a resolved ticket (it closes; maild.closure's
        `confirm_solved`, as a "thanks, it works" reply does) and resolves an open one;
        "still a problem" reopens a resolved or closed one (`not_solved`). The
        requester is the actor, as when they say so by mail."""
        now = web.now()
        with web.sessions.begin() as session:
            ops = TicketOps(session, web.applier, now)
            current = ops.get(ticket.id)
            actor = current.requester.email
            if solved:
                if current.status == TicketStatus.RESOLVED:
                    ops.confirm_solved(ticket.id, actor=actor)
                elif current.status not in FINISHED_STATUSES:
                    ops.resolve(ticket.id, actor=actor, note="")
                else:
                    raise ActionRefused(t("requester.already_closed"))
            elif current.status in FINISHED_STATUSES:
                ops.not_solved(ticket.id, actor=actor)
            else:
                raise ActionRefused(t("requester.still_open"))

    def requester_rating(ticket: Any, score: int, comment: str, t: Any) -> None:
        """A rating of the help on a resolved or closed ticket (`TicketOps.rate`: stored,
        a resolved ticket closes, the agents working it are told)."""
        now = web.now()
        with web.sessions.begin() as session:
            ops = TicketOps(session, web.applier, now)
            current = ops.get(ticket.id)
            if current.status not in FINISHED_STATUSES:
                raise ActionRefused(t("requester.rate_open"))
            ops.rate(ticket.id, score, actor=current.requester.email, comment=comment)

    # --- the API ---

    api.install(app, web, new_ticket_fields=new_ticket_fields,
                create_for_caller=create_for_caller, search_numbers=search_numbers)  # fmt: skip
    return app


class CsrfFailed(Exception):
    pass


RATING_COMMENT_LIMIT = 2000  # what TicketOps.rate keeps


def rating_fields(fields: dict[str, Any], t: Any) -> tuple[int, str]:
    """(score, comment) of the requester page's rating form, checked (`FieldError`)."""
    raw = str(fields.get("score") or "").strip()
    if raw not in ("1", "2", "3", "4", "5"):
        raise FieldError("score", t("requester.bad_score"))
    comment = str(fields.get("comment") or "").replace("\r\n", "\n").strip()
    if "\x00" in comment or len(comment) > RATING_COMMENT_LIMIT:
        raise FieldError("comment", t("requester.long_comment", n=RATING_COMMENT_LIMIT))
    return int(raw), comment


def said(exc: ActionRefused, language: str) -> str:
    """Why the desk refused, in `language` when it said so as a `Phrase`."""
    return in_language(exc.args[0] if exc.args else str(exc), language)


def _created_event(agent: AgentEntry) -> EventSpec:
    return EventSpec("created_for_caller", agent.email)


def new_ticket_fields(fields: dict[str, Any]) -> tuple[str, str, str, str]:
    """(from, name, subject, text) of a new request, checked."""
    sender = normalize_address(str(fields.get("from") or "").strip())
    if not is_valid_address(sender):
        raise FieldError("from", "a mail address is required")
    name = " ".join(str(fields.get("name") or "").split())[:200]
    subject = " ".join(str(fields.get("subject") or "").split())
    if not subject:
        raise FieldError("subject", "is required")
    if len(subject) > 900:
        raise FieldError("subject", "is longer than 900 characters")
    text = str(fields.get("text") or "").replace("\r\n", "\n")
    if not text.strip():
        raise FieldError("text", "is required")
    if "\x00" in text or len(text) > 1_000_000:
        raise FieldError("text", "must be plain text of at most 1,000,000 characters")
    return sender, name, subject, text


def download(att: Any, data: bytes) -> Response:
    """An attachment: always as a download, its own type if it is a plain one, nosniff."""
    ctype = att.content_type.lower()
    if not _PLAIN_TYPE(ctype) or ctype.startswith(("text/html", "image/svg", "application/xhtml",
                                                   "text/xml", "application/xml")):  # fmt: skip
        ctype = "application/octet-stream"
    name = att.filename or "attachment"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
    return Response(data, media_type=ctype, headers={
        "content-disposition": disposition, "x-content-type-options": "nosniff",
        "content-security-policy": "sandbox; default-src 'none'"})  # fmt: skip


def _PLAIN_TYPE(ctype: str) -> bool:
    return re.fullmatch(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*", ctype) is not None


def dashboard_charts(data: dict[str, Any]) -> list[str]:
    """The report's SVG charts (inline SVG: no script, allowed by the CSP)."""
    c = report.COLORS
    by_tier, by_cat, by_agent = data["by_tier"], data["by_category"], data["by_agent"]
    return [
        report.bar_chart("SLA attainment by priority (% within target)",
                         [g["key"] for g in data["by_priority"]],
                         [("first response", c["fr"], [g["first_response"]["within_target_pct"]
                                                       for g in data["by_priority"]]),
                          ("resolution", c["res"], [g["resolution"]["within_target_pct"]
                                                    for g in data["by_priority"]])]),
        report.bar_chart("Resolution by priority (hours; line: target)",
                         [g["key"] for g in data["by_priority"]],
                         [("median", c["median"], [g["resolution"]["median_h"]
                                                   for g in data["by_priority"]]),
                          ("p90", c["p90"], [g["resolution"]["p90_h"]
                                             for g in data["by_priority"]])],
                         targets=[g["resolution"]["target_h"] for g in data["by_priority"]]),
        report.bar_chart("Breaches by tier", [g["key"] for g in by_tier],
                         [("first response", c["fr"],
                           [g["breaches"]["first_response"] for g in by_tier]),
                          ("resolution", c["res"], [g["breaches"]["resolution"] for g in by_tier])]),
        report.bar_chart("Breaches by agent", [g["key"].partition("@")[0] for g in by_agent],
                         [("first response", c["fr"],
                           [g["breaches"]["first_response"] for g in by_agent]),
                          ("resolution", c["res"],
                           [g["breaches"]["resolution"] for g in by_agent])]),
        report.bar_chart("Breaches by category", [g["key"] for g in by_cat],
                         [("first response", c["fr"],
                           [g["breaches"]["first_response"] for g in by_cat]),
                          ("resolution", c["res"], [g["breaches"]["resolution"] for g in by_cat])]),
        report.bar_chart("Backlog by status", list(data["backlog"]["by_status"]),
                         [("tickets", c["count"], list(data["backlog"]["by_status"].values()))]),
        report.bar_chart("Backlog by age", list(data["backlog"]["by_age"]),
                         [("tickets", c["count"], list(data["backlog"]["by_age"].values()))]),
    ]  # fmt: skip


__all__ = ["WebApp", "create_app"]
