"""The console's ASGI application: routes, login, sessions, CSRF, roles, actions.

Plain ASGI like the autoconfig server (:mod:`mailwarden.server.http`). Every page needs a
session except ``/login``; every POST needs the session's CSRF token (the login form a token
bound to a pre-login cookie); ``lock`` and ``/config`` need the ``admin`` role. An action is
asked twice: the first post shows what will happen, the second (``confirm=yes``) does it.
Each action and each login is logged; actions also go into the account's guard history.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from mailwarden.console import chart
from mailwarden.console.audit import read_audit
from mailwarden.console.auth import PasswordAuth, proxy_operator, trusted
from mailwarden.console.config import ConsoleConfig
from mailwarden.console.data import Backend
from mailwarden.console.i18n import STRINGS, Lang, choose_language
from mailwarden.console.ratelimit import LoginLimiter
from mailwarden.console.render import CONTENT_SECURITY_POLICY, render
from mailwarden.console.sessions import (
    Operator,
    Session,
    Sessions,
    clear_cookie_header,
    cookie_header,
    cookie_value,
    csrf_ok,
)
from mailwarden.errors import MailwardenError
from mailwarden.guard.actions import Actor
from mailwarden.server.http import (
    BadRequest,
    BodyTooLarge,
    QueryTooLong,
    Receive,
    Scope,
    Send,
    StatusSend,
    header,
    query_params,
    read_body,
    respond,
)

log = logging.getLogger("mailwarden.console")

HTML = b"text/html; charset=utf-8"
MAX_FORM = 16 * 1024
MAX_FIELD = 1024
LOGIN_COOKIE = "mwc_login"
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32}")
_PAGES = frozenset({"/", "/account", "/audit", "/audit/report", "/config", "/action", "/logout"})
_USER_RE = re.compile(r"[^\x00-\x1f\x7f]{1,254}")
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii")),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class Forbidden(Exception):
    """An authenticated operator asked for what their role does not allow."""


class Request:
    """What a handler needs of one request, read once."""

    def __init__(self, scope: Scope, client: str) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.params = query_params(scope)
        self.client = client
        self.cookies = (header(scope, b"cookie") or b"").decode("latin-1")
        self.session: Session | None = None
        self.lang: Lang = "en"
        self.set_cookies: list[bytes] = []


class ConsoleApp:
    def __init__(
        self,
        config: ConsoleConfig,
        backend: Backend,
        password_auth: PasswordAuth | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.backend = backend
        self.password_auth = password_auth
        self.clock = clock
        self.sessions = Sessions(config.idle_minutes * 60.0, config.max_hours * 3600.0)
        self.limiter = LoginLimiter(
            config.login_attempts, config.login_attempts * 4, config.login_window_minutes * 60.0
        )

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            request = Request(scope, self._client(scope))
            await self._route(request, receive, send)
        except (BadRequest, QueryTooLong) as exc:
            await respond(send, 400, f"bad request: {exc or 'query too long'}\n".encode())
        except BodyTooLarge:
            await respond(send, 413, b"request body too large\n")
        except Exception:
            log.exception("console: internal error on %s", scope.get("path"))
            await respond(send, 500, b"internal error\n")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.backend.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _client(self, scope: Scope) -> str:
        """The client's address: the peer, or what a trusted reverse proxy says it is."""
        peer = (scope.get("client") or ("", 0))[0] or ""
        if self.config.trusted_proxies and trusted(peer, self.config.trusted_proxies):
            forwarded = (header(scope, b"x-forwarded-for") or b"").decode("latin-1")
            last = forwarded.rsplit(",", 1)[-1].strip()[:64]
            if last:
                return last
        return peer

    # -- routing ------------------------------------------------------------------------------

    async def _route(self, request: Request, receive: Receive, send: Send) -> None:
        now = self.clock()
        path, method = request.path, request.method
        request.session = self._session(request, now)
        request.lang = self._language(request)
        if path == "/login":
            if method == "POST":
                await self._login_post(request, receive, send, now)
            else:
                await self._login_page(request, send)
            return
        if path not in _PAGES:
            title = self._t(request)["not_found_page"]
            await self._page(request, send, "message.html", 404, title=title)
            return
        if request.session is None:
            expired = cookie_value(request.cookies) is not None
            target = "/login?expired=1" if expired else "/login"
            await self._redirect(send, target, [(b"set-cookie", clear_cookie_header())])
            return
        session = request.session
        if method == "POST":
            form = await self._form(request, receive)
            if not csrf_ok(session, form.get("csrf", "")):
                log.warning(
                    json.dumps(
                        {"event": "console-csrf-refused", "user": session.operator.name}
                        | {"client": request.client, "path": path}
                    )
                )
                await self._page(
                    request, send, "message.html", 403, title=self._t(request)["bad_form"]
                )
                return
            if path == "/logout":
                self.sessions.drop(session.id)
                await self._redirect(send, "/login", [(b"set-cookie", clear_cookie_header())])
                return
            if path == "/action":
                try:
                    await self._action(request, form, send)
                except Forbidden:
                    t = self._t(request)
                    title = t["forbidden"].format(role=session.operator.role)
                    await self._page(request, send, "message.html", 403, title=title)
                return
        elif method in ("GET", "HEAD"):
            handler = {
                "/": self._overview,
                "/account": self._account,
                "/audit": self._audit,
                "/audit/report": self._audit_report,
                "/config": self._config_page,
            }.get(path)
            if handler is not None:
                await handler(request, send)
                return
        else:
            await respond(
                send, 405, b"method not allowed\n", extra_headers=[(b"allow", b"GET, POST")]
            )
            return
        await self._page(
            request, send, "message.html", 404, title=self._t(request)["not_found_page"]
        )

    def _session(self, request: Request, now: float) -> Session | None:
        session = self.sessions.get(cookie_value(request.cookies), now)
        proxy = self.config.proxy
        if self.config.auth != "proxy" or proxy is None:
            return session
        peer = (request.scope.get("client") or ("", 0))[0] or ""
        value = header(request.scope, proxy.header.lower().encode("ascii"))
        operator = proxy_operator(proxy, peer, value.decode("latin-1") if value else None)
        if operator is None:
            return None  # the header alone is the login: without it, no session counts
        if session is not None and session.operator == operator:
            return session
        session = self.sessions.create(operator, request.client, now)
        request.set_cookies.append(cookie_header(session.id, self._cookie_age()))
        log.info(
            json.dumps(
                {"event": "console-login", "user": operator.name}
                | {"role": operator.role, "method": "proxy", "client": request.client, "ok": True}
            )
        )
        return session

    def _language(self, request: Request) -> Lang:
        accept = (header(request.scope, b"accept-language") or b"").decode("latin-1")
        chosen = request.params.get("lang")
        session = request.session
        if chosen in STRINGS and session is not None:
            session.lang = chosen
        elif chosen is None and session is not None and session.lang in STRINGS:
            chosen = session.lang
        return choose_language(accept, chosen)

    def _t(self, request: Request) -> dict[str, str]:
        return STRINGS[request.lang]

    def _cookie_age(self) -> int:
        return self.config.max_hours * 3600

    # -- responses ----------------------------------------------------------------------------

    async def _page(
        self, request: Request, send: Send, template: str, status: int = 200, **values: Any
    ) -> None:
        session = request.session
        if session is not None:
            values.setdefault("operator", session.operator)
            values.setdefault("csrf", session.csrf)
            values.setdefault("flash", session.flash[:])
            session.flash.clear()
        query = {k: v for k, v in request.params.items() if k in ("q",)}
        body = render(template, request.lang, query, **values)
        headers = [
            *_HEADERS,
            (b"content-language", request.lang.encode("ascii")),
            *((b"set-cookie", c) for c in request.set_cookies),
        ]
        await respond(StatusSend(send, request.method == "HEAD"), status, body, HTML, headers)

    async def _redirect(
        self, send: Send, location: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        headers = [(b"location", location.encode("ascii")), *(extra or [])]
        await respond(send, 303, b"see other\n", extra_headers=headers)

    async def _form(self, request: Request, receive: Receive) -> dict[str, str]:
        body = await read_body(request.scope, receive, MAX_FORM)
        try:
            pairs = parse_qsl(
                body.decode("ascii"),
                keep_blank_values=True,
                max_num_fields=20,
                encoding="utf-8",
                errors="strict",
            )
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("form is not valid") from None
        form: dict[str, str] = {}
        for key, value in pairs:
            form.setdefault(key, value[:MAX_FIELD])
        return form

    # -- login --------------------------------------------------------------------------------

    async def _login_page(
        self,
        request: Request,
        send: Send,
        status: int = 200,
        errors: list[str] | None = None,
        typed: str = "",
    ) -> None:
        if request.session is not None and request.method == "GET" and not errors:
            await self._redirect(send, "/")
            return
        t = self._t(request)
        shown = list(errors or [])
        if request.params.get("expired") and not shown:
            shown.append(t["expired"])
        # One token per browser, kept while the cookie lives: a second login page (another
        # tab, a redirect the browser followed for its icon) must not void the first form.
        token = cookie_value(request.cookies, LOGIN_COOKIE) or ""
        if not _TOKEN_RE.fullmatch(token):
            token = secrets.token_urlsafe(24)
        request.set_cookies.append(
            f"{LOGIN_COOKIE}={token}; Path=/login; Max-Age=3600; Secure; HttpOnly; "
            "SameSite=Strict".encode("ascii")
        )
        request.session = None  # the login page shows no navigation
        await self._page(
            request,
            send,
            "login.html",
            status,
            title=t["login_title"],
            errors=shown,
            login_token=token,
            typed=typed,
            proxy_only=self.password_auth is None,
        )

    async def _login_post(self, request: Request, receive: Receive, send: Send, now: float) -> None:
        t = self._t(request)
        form = await self._form(request, receive)
        expected = cookie_value(request.cookies, LOGIN_COOKIE) or ""
        token = form.get("csrf", "")
        if not expected or not secrets.compare_digest(expected.encode(), token.encode()):
            await self._login_page(request, send, 403, [t["bad_form"]])
            return
        login = form.get("login", "").strip()[:128]
        password = form.get("password", "")
        if self.password_auth is None:
            await self._login_page(request, send, 403, [t["proxy_only"]])
            return
        if not self.limiter.allowed(request.client, login, now):
            self._log_login(login, request.client, False, "throttled")
            await self._login_page(request, send, 429, [t["login_throttled"]], login)
            return
        try:
            operator = await self.password_auth.authenticate(login, password)
        except MailwardenError as exc:
            log.error("console login: %s", exc.message)
            await self._login_page(request, send, 503, [t["login_error"]], login)
            return
        if operator is None:
            self.limiter.failed(request.client, login, now)
            self._log_login(login, request.client, False, "refused")
            await self._login_page(request, send, 401, [t["login_failed"]], login)
            return
        self.limiter.succeeded(login)
        if request.session is not None:
            self.sessions.drop(request.session.id)  # a new id at login: no fixation
        session = self.sessions.create(operator, request.client, now)
        session.lang = request.lang
        self._log_login(operator.name, request.client, True, operator.method)
        await self._redirect(
            send,
            "/",
            [
                (b"set-cookie", cookie_header(session.id, self._cookie_age())),
                (b"set-cookie", f"{LOGIN_COOKIE}=; Path=/login; Max-Age=0".encode("ascii")),
            ],
        )

    def _log_login(self, user: str, client: str, ok: bool, how: str) -> None:
        record = {"event": "console-login", "user": user, "client": client, "ok": ok, "how": how}
        (log.info if ok else log.warning)(json.dumps(record, ensure_ascii=False))

    # -- pages --------------------------------------------------------------------------------

    async def _overview(self, request: Request, send: Send) -> None:
        t = self._t(request)
        now = self.clock()
        data = await self.backend.overview(now)
        svg, text = None, ""
        if data.events is not None:
            hours = chart.per_hour(data.events, now)
            labels = {a: t[a] for a in chart.ACTIONS}
            from markupsafe import Markup

            svg = Markup(chart.render_svg(hours, labels, t["decisions"]))  # noqa: S704 - escaped inside
            totals = chart.summary(hours)
            text = ", ".join(f"{labels[a]} {totals[a]}" for a in chart.ACTIONS)
        await self._page(
            request,
            send,
            "overview.html",
            title=t["overview"],
            page="overview",
            locks=data.locks,
            holds=data.holds,
            store=data.store,
            directory=data.directory,
            audit=data.audit,
            chart=svg,
            chart_text=text,
            actions=chart.ACTIONS,
        )

    async def _account(self, request: Request, send: Send) -> None:
        t = self._t(request)
        query = request.params.get("q", "").strip()
        if not query or not _USER_RE.fullmatch(query):
            await self._redirect(send, "/")
            return
        data = await self.backend.account(query)
        await self._page(
            request,
            send,
            "account.html",
            title=f"{t['account']}: {query}",
            data=data,
            can_act=self.backend.store is not None,
        )

    async def _audit(self, request: Request, send: Send) -> None:
        import asyncio

        audit = await asyncio.to_thread(read_audit, self.config.audit_dir)
        await self._page(
            request, send, "audit.html", title=self._t(request)["audit"], page="audit", audit=audit
        )

    async def _audit_report(self, request: Request, send: Send) -> None:
        """The newest run's HTML report, as the audit wrote it, under the report's own policy
        (its one style sheet by hash, no script, no fetch) plus ``sandbox``; framed only by the
        console's audit page."""
        import asyncio

        from mailwarden.audit.report.html import _csp
        from mailwarden.console.audit import MAX_REPORT_BYTES, latest_html

        folder = self.config.audit_dir
        path = await asyncio.to_thread(latest_html, folder) if folder and folder.is_dir() else None
        body = await asyncio.to_thread(_read_bounded, path, MAX_REPORT_BYTES) if path else None
        if body is None:
            await self._page(request, send, "message.html", 404, title=self._t(request)["no_audit"])
            return
        policy = f"{_csp()}; frame-ancestors 'self'; sandbox"
        headers = [
            (b"content-security-policy", policy.encode("ascii")),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"SAMEORIGIN"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        await respond(StatusSend(send, request.method == "HEAD"), 200, body, HTML, headers)

    async def _config_page(self, request: Request, send: Send) -> None:
        assert request.session is not None
        t = self._t(request)
        if not request.session.operator.admin:
            title = t["forbidden"].format(role=request.session.operator.role)
            await self._page(request, send, "message.html", 403, title=title)
            return
        guard = self.backend.guard
        await self._page(
            request,
            send,
            "config.html",
            title=t["config"],
            page="config",
            guard=guard.model_dump_json(indent=2) if guard is not None else t["no_guard"],
            console=self.config.model_dump_json(indent=2),
        )

    # -- actions ------------------------------------------------------------------------------

    async def _action(self, request: Request, form: dict[str, str], send: Send) -> None:
        assert request.session is not None
        session = request.session
        operator: Operator = session.operator
        t = self._t(request)
        op = form.get("op", "")
        user = form.get("user", "").strip()
        key = form.get("key", "").strip()
        reason = " ".join(form.get("reason", "").split())[:500]
        back = form.get("q", "").strip() or user
        if op not in ("unlock", "lock", "release", "release-all") or not _USER_RE.fullmatch(user):
            raise BadRequest("unknown action or account")
        if op == "release" and not _USER_RE.fullmatch(key):
            raise BadRequest("which message?")
        if op == "lock" and not operator.admin:
            log.warning(
                json.dumps(
                    {"event": "console-forbidden", "user": operator.name, "action": op}
                    | {"account": user, "client": request.client}
                )
            )
            raise Forbidden
        if op == "lock" and not reason:
            reason = f"locked by {operator.name}"
        if form.get("confirm") != "yes":
            await self._confirm(request, send, op, user, key, reason, back)
            return
        actor = Actor(operator.name, "console", request.client)
        if op == "unlock":
            done = await self.backend.unlock(user, actor)
            detail = done.action.detail
            word = "done_unlock" if done.found else "done_unlock_none"
            session.flash.append(
                t[word if done.action.ok else "failed_unlock"].format(user=user, detail=detail)
            )
        elif op == "lock":
            result = await self.backend.lock(user, reason, actor)
            word = "done_lock" if result.ok else "failed_lock"
            session.flash.append(t[word].format(user=user, detail=result.detail))
        else:
            target = key if op == "release" else user
            results = await self.backend.release(target, actor)
            if not results:
                session.flash.append(t["nothing_held"].format(key=target))
            for r in results:
                word = "done_release" if r.ok else "failed_release"
                session.flash.append(t[word].format(detail=r.detail))
        await self._redirect(send, "/account?q=" + quote(back, safe="@"))

    async def _confirm(
        self, request: Request, send: Send, op: str, user: str, key: str, reason: str, back: str
    ) -> None:
        t = self._t(request)
        count = 0
        if op == "release-all":
            data = await self.backend.account(user)
            count = len(data.holds)
        question = t[f"confirm_{op.replace('-', '_')}"].format(user=user, key=key, count=count)
        fields = [("op", op), ("user", user), ("q", back)]
        if key:
            fields.append(("key", key))
        if op == "lock":
            fields.append(("reason", reason))
        await self._page(
            request,
            send,
            "confirm.html",
            title=t["confirm_title"],
            question=question,
            fields=fields,
            danger=op == "lock",
            back=back,
        )


def _read_bounded(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it is gone or larger than ``limit``."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None
