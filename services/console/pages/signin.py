"""Signing in with a bearer token (or the development sign-in), signing out, health."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from services.common.errors import Unauthenticated
from services.console.web import Page, form_action, text


async def home(request: Request) -> Response:
    page = Page.load(request, signed_in=False)
    return page.finish(RedirectResponse("/workspaces" if page.claims else "/signin", 303))


async def signin_form(request: Request) -> Response:
    page = Page.load(request, signed_in=False)
    dev = request.app.state.console.settings.dev_token_file is not None
    return page.render("signin.html", dev_signin=dev)


def _sign_in(page: Page, token: str) -> Response:
    try:
        claims = page.console.verifier.verify(token)
    except Unauthenticated as exc:
        return page.redirect("/signin", error=exc.message)
    page.update(page.session.signed_in(token))
    page.claims = claims
    return page.redirect("/workspaces", ok=f"Signed in as {claims.subject}.")


@form_action(lambda r: "/signin", signed_in=False)
async def signin(page: Page, form: FormData) -> Response:
    """The token travels in the form body only: never in a URL, never logged."""
    token = text(form, "token", 9000)
    if not token:
        return page.redirect("/signin", error="Paste a bearer token to sign in.")
    return _sign_in(page, token.removeprefix("Bearer ").strip())


@form_action(lambda r: "/signin", signed_in=False)
async def signin_dev(page: Page, form: FormData) -> Response:
    """Development only: the token `make run` minted, when CONSOLE_DEV_TOKEN_FILE names it."""
    path = page.console.settings.dev_token_file
    if path is None:
        return page.redirect("/signin", error="Development sign-in is off on this console.")
    try:
        token = path.read_text().strip()
    except OSError:
        return page.redirect("/signin", error=f"The development token file {path} is unreadable.")
    return _sign_in(page, token)


@form_action(lambda r: "/signin", signed_in=False)
async def signout(page: Page, form: FormData) -> Response:
    page.sign_out()
    return page.redirect("/signin", ok="Signed out.")


async def healthz(request: Request) -> Response:
    """The console's own health, and what it sees of the four services (no credentials)."""
    console = request.app.state.console
    services = await console.open_channels().health(within=2.0)
    return JSONResponse({"status": "SERVING", "services": services})


ROUTES = [
    Route("/", home),
    Route("/signin", signin_form, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signin/dev", signin_dev, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
    Route("/healthz", healthz),
]
