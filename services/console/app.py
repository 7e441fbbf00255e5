"""Console composition root: settings → token verifier, session codec, templates → routes →
an HTTPS server (uvicorn) whose start-up opens the channels to the four services."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import jinja2
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from services.common.security.tokens import TokenVerifier
from services.common.server.config import ConfigError
from services.common.server.logging import configure_logging
from services.console import labels
from services.console.clients import Channels
from services.console.config import Settings
from services.console.pages import audit, classification, encryption, signin, workspaces
from services.console.session import SessionCodec
from services.console.web import (
    HTTP_STATUS,
    Console,
    FormRefused,
    Outermost,
    Page,
    SignInRequired,
    error_message,
)

HERE = Path(__file__).resolve().parent
log = structlog.get_logger("console")


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals.update(labels=labels, when=labels.when)
    return env


def verifier(settings: Settings) -> TokenVerifier:
    security = settings.security
    return TokenVerifier.from_file(
        security.token_public_key_path,
        issuer=security.token_issuer,
        audience=security.token_audience,
        leeway_seconds=security.clock_skew_seconds,
        allow_wildcard=security.allow_wildcard_tokens,
    )


async def _sign_in_again(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    page = Page.load(request, signed_in=False)
    page.flash("error", exc.reason)
    return page.finish(RedirectResponse("/signin", status_code=303))


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FormRefused)
    page = Page.load(request, signed_in=False)
    return page.render("error.html", status=exc.status, title="Form refused", message=exc.reason)


async def _service_error(request: Request, exc: Exception) -> Response:
    """A service's refusal on a page load: its message, never a stack trace."""
    assert isinstance(exc, grpc.aio.AioRpcError)
    if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
        return await _sign_in_again(request, SignInRequired(error_message(exc)))
    page = Page.load(request, signed_in=False)
    return page.render(
        "error.html",
        status=HTTP_STATUS.get(exc.code(), 502),
        title="The service refused",
        message=error_message(exc),
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    page = Page.load(request, signed_in=False)
    status = getattr(exc, "status_code", 404)
    title = "Not found" if status == 404 else "Not allowed"
    return page.render("error.html", status=status, title=title, message="No such page here.")


async def _internal(request: Request, exc: Exception) -> Response:
    page = Page.load(request, signed_in=False)
    return page.render(
        "error.html",
        status=500,
        title="Something went wrong",
        message=f"The console could not finish this request (request id {page.request_id}).",
    )


def build(settings: Settings, channels: Channels | None = None) -> Starlette:
    """The application. Channels open at start-up unless given; serve it wrapped in
    ``Outermost``."""
    console = Console(
        settings=settings,
        codec=SessionCodec.from_file(settings.session_key_file, settings.session_max_seconds),
        verifier=verifier(settings),
        templates=templates(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = channels is None
        console.channels = Channels.open(settings) if own else channels
        try:
            yield
        finally:
            if own and console.channels is not None:
                await console.channels.close()

    routes = [
        *signin.ROUTES,
        *workspaces.ROUTES,
        *encryption.ROUTES,
        *classification.ROUTES,
        *audit.ROUTES,
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        debug=False,
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            404: _not_found,
            405: _not_found,
            SignInRequired: _sign_in_again,
            FormRefused: _refused,
            grpc.aio.AioRpcError: _service_error,
            Exception: _internal,
        },
    )
    app.state.console = console
    return app


class ConsoleServer:
    """The console served over HTTPS by uvicorn in the running event loop."""

    def __init__(self, settings: Settings, channels: Channels | None = None) -> None:
        self.settings = settings
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((settings.host, settings.port))
        self.app = build(settings, channels)
        config = uvicorn.Config(
            Outermost(self.app),
            ssl_certfile=str(settings.tls_cert),
            ssl_keyfile=str(settings.tls_key),
            ssl_version=ssl.PROTOCOL_TLS_SERVER,
            log_config=None,
            # One line per request comes from the app itself, without the query string.
            access_log=False,
            server_header=False,
            lifespan="on",
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = "localhost" if self.settings.host in ("127.0.0.1", "0.0.0.0") else self.settings.host
        return f"https://{host}:{self.port}"

    async def start(self) -> None:
        # uvicorn installs its own signal handlers inside serve(); in-process (tests) we stop
        # it ourselves, so they are restored when it returns.
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the console stopped while starting")
            await asyncio.sleep(0.02)
        log.info("console_serving", url=self.url)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._sock.close()

    async def wait(self) -> None:
        if self._task is not None:
            await self._task


def main() -> None:
    """``python -m services.console``: serve until SIGTERM/SIGINT (uvicorn handles both)."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"console: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format)

    async def serve() -> None:
        server = ConsoleServer(settings)
        await server.start()
        print(f"console: serving {server.url}", file=sys.stderr, flush=True)
        await server.wait()

    try:
        asyncio.run(serve())
    except (FileNotFoundError, ValueError) as exc:
        print(f"console: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass
