"""What every page shares: the session, sign-in, CSRF, rendering, headers and error pages."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import grpc
import jinja2
import structlog
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import Unauthenticated
from services.common.security.auth import Principal, Role
from services.common.security.authz import allowed
from services.common.security.tokens import TokenClaims, TokenVerifier
from services.console.clients import Calls, Channels
from services.console.config import Settings
from services.console.session import COOKIE, Session, SessionCodec

log = structlog.get_logger("console")

# Larger forms are refused before they are read: the biggest honest one is an imported key.
MAX_FORM_BYTES = 256 * 1024

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), clipboard-read=()"),
    (b"strict-transport-security", b"max-age=31536000"),
]
# Pages may show PHI-adjacent data (audit records) or a private key: nothing is ever stored.
NO_STORE = (b"cache-control", b"no-store")
STATIC_CACHE = (b"cache-control", b"public, max-age=300")

# How a service's status becomes an HTTP status on an error page.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


@dataclass
class Console:
    """Everything a request needs, built once by the composition root."""

    settings: Settings
    codec: SessionCodec
    verifier: TokenVerifier
    templates: jinja2.Environment
    channels: Channels | None = None  # opened in the app's lifespan (needs the running loop)

    def open_channels(self) -> Channels:
        if self.channels is None:
            raise RuntimeError("the console's channels are opened at start-up")
        return self.channels


class SignInRequired(Exception):
    """The page needs a signed-in person; ``reason`` is shown on the sign-in page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FormRefused(Exception):
    """A form without its CSRF token, or too large: refused before anything runs."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def error_message(exc: grpc.aio.AioRpcError) -> str:
    """A service's answer as a person reads it: the status and the service's own message."""
    code = exc.code()
    name = code.name if code is not None else "UNKNOWN"
    return f"{name.replace('_', ' ').capitalize()}: {exc.details() or 'no details'}"


@dataclass
class Page:
    """One request's view of the session, the person and the services."""

    request: Request
    console: Console
    session: Session
    request_id: str
    claims: TokenClaims | None = None
    _cookie_dirty: bool = field(default=False, repr=False)

    @classmethod
    def load(cls, request: Request, *, signed_in: bool = True) -> Page:
        console: Console = request.app.state.console
        raw = request.cookies.get(COOKIE)
        opened = console.codec.open(raw) if raw else None
        page = cls(
            request=request,
            console=console,
            session=opened or Session.fresh(),
            request_id=request.scope.get("phiseal.request_id") or uuid.uuid4().hex,
            _cookie_dirty=opened is None,
        )
        if page.session.token:
            try:
                page.claims = console.verifier.verify(page.session.token)
            except Unauthenticated as exc:
                page.session = Session.fresh()
                page._cookie_dirty = True
                if signed_in:
                    raise SignInRequired(f"Your sign-in ended ({exc.message}).") from None
        if signed_in and page.claims is None:
            raise SignInRequired("Sign in to continue.")
        return page

    @property
    def subject(self) -> str:
        return self.claims.subject if self.claims else ""

    @property
    def calls(self) -> Calls:
        if not self.session.token:
            raise SignInRequired("Sign in to continue.")
        return Calls.for_person(
            self.console.open_channels(),
            self.session.token,
            self.request_id,
            self.console.settings.rpc_timeout,
        )

    def can(self, workspace_id: str, role: str) -> bool:
        """Whether the person's token grants ``role`` there: only to hide buttons; the services
        decide every call on their own."""
        if self.claims is None:
            return False
        principal: Principal = self.claims.principal()
        return allowed(principal, workspace_id, Role(role))

    def update(self, session: Session) -> None:
        self.session = session
        self._cookie_dirty = True

    def flash(self, level: str, text: str) -> None:
        self.update(self.session.with_flash(level, text))

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        flashes = self.session.flashes
        if flashes:
            self.update(self.session.without_flashes())
        html = self.console.templates.get_template(template).render(
            page=self, csrf=self.session.csrf, flashes=flashes, **context
        )
        return self.finish(HTMLResponse(html, status_code=status))

    def redirect(self, url: str, *, ok: str | None = None, error: str | None = None) -> Response:
        if ok:
            self.flash("ok", ok)
        if error:
            self.flash("error", error)
        return self.finish(RedirectResponse(url, status_code=303))

    def finish(self, response: Response) -> Response:
        """Writes the session cookie when it changed."""
        if self._cookie_dirty:
            response.set_cookie(
                COOKIE,
                self.console.codec.seal(self.session),
                max_age=self.console.codec.max_age,
                path="/",
                secure=True,
                httponly=True,
                samesite="strict",
            )
        return response

    def sign_out(self) -> None:
        self.update(replace(Session.fresh(), flashes=()))


def text(form: FormData, name: str, limit: int = 1000) -> str:
    """A form field as stripped text ('' when absent); uploads are not accepted."""
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return ""
    return value.strip()[:limit]


Handler = Callable[[Page, FormData], Awaitable[Response]]


def form_action(
    back: Callable[[Request], str], *, signed_in: bool = True
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wraps every POST endpoint: size limit and CSRF check before anything else runs; a
    service's refusal goes back to ``back`` as a message."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            declared = request.headers.get("content-length", "")
            if not declared.isdigit():
                raise FormRefused("a form must declare its length", 411)
            if int(declared) > MAX_FORM_BYTES:
                raise FormRefused(f"a form may be at most {MAX_FORM_BYTES // 1024} KiB", 413)
            page = Page.load(request, signed_in=signed_in)
            form = await request.form(max_files=0, max_fields=2000)
            if not page.session.csrf_ok(text(form, "csrf", 200)):
                raise FormRefused(
                    "This form did not come from this console session (its CSRF token is "
                    "missing or stale). Reload the page and submit it again."
                )
            try:
                return await handler(page, form)
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
                    raise SignInRequired(error_message(exc)) from None
                return page.redirect(back(request), error=error_message(exc))

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    return wrap


class Outermost:
    """ASGI wrapper around the whole app: a request id, security headers and Cache-Control on
    every response (errors included), one log line per request without query or body, and no
    exception text anywhere."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope["phiseal.request_id"] = request_id
        static = scope["path"].startswith("/static/")
        started = time.perf_counter()
        status = 500
        sent = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = True
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                ]
                headers += [*SECURITY_HEADERS, STATIC_CACHE if static else NO_STORE]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            # Starlette has answered with the 500 page already; the exception's text may
            # quote a request field, so only its type is logged.
            log.error("request_failed", error=type(exc).__name__, request_id=request_id)
            if not sent:
                await send_with_headers(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send({"type": "http.response.body", "body": b"Internal error\n"})
        finally:
            route = scope.get("route")
            log.info(
                "http_request",
                method=scope["method"],
                route=getattr(route, "path", "unmatched"),
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
                request_id=request_id,
            )


def url(*parts: str) -> str:
    """A console path from segments, each quoted (ids come from people as well as services)."""
    return "/" + "/".join(quote(p, safe="") for p in parts)
