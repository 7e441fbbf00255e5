"""The one server interceptor: request id, authentication, error mapping, one log line per RPC."""

from __future__ import annotations

import inspect
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeAlias

import grpc
import structlog
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.common import errors
from services.common.security.auth import ANONYMOUS, Authenticator, Caller, bind_caller
from services.common.security.authz import Access
from services.common.server.metrics import RpcMetrics

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

# One table from domain error to status code; the most specific class wins (MRO order).
STATUS_FOR_ERROR: Mapping[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}

REQUEST_ID_HEADER = "x-request-id"
_MAX_REQUEST_ID = 128
# Status messages travel in the trailers, where a client refuses more than 8 KiB of metadata.
MAX_STATUS_MESSAGE = 2000

log = structlog.get_logger("rpc")


def status_for(error: errors.DomainError) -> grpc.StatusCode:
    """The status code for a domain error (INTERNAL for an unmapped subclass)."""
    for cls in type(error).__mro__:
        code = STATUS_FOR_ERROR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _request_id(metadata: Mapping[str, str]) -> str:
    given = metadata.get(REQUEST_ID_HEADER, "").strip()
    # A caller's id is echoed into logs: keep it short and printable.
    if given and len(given) <= _MAX_REQUEST_ID and given.isprintable():
        return given
    return uuid.uuid4().hex


class _Undecodable:
    """Stands in for a request whose bytes did not parse, so the handler can refuse it."""

    __slots__ = ()


_UNDECODABLE = _Undecodable()


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A deserializer that turns malformed bytes (bad wire format, invalid UTF-8 in a string
    field) into a marker: grpc would otherwise answer UNKNOWN with the parser's text."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            return _UNDECODABLE

    return parse


def _refuse_undecodable(request: Any) -> None:
    if request is _UNDECODABLE:
        raise errors.InvalidArgument(
            "the request is not a valid protobuf message for this method "
            "(malformed bytes, or invalid UTF-8 in a string field)"
        )
    if isinstance(request, Message):
        found = _bad_text(request, "")
        if found is not None:
            where, what = found
            raise errors.InvalidArgument(f"{where} {what}, which no text field accepts")


def _text_problem(value: str) -> str | None:
    # PostgreSQL text and jsonb cannot store U+0000 (the insert fails as INTERNAL), and no
    # field of ours means one; a lone surrogate cannot be encoded for PostgreSQL, a log line or
    # a status message at all. Refused once, here, for every RPC.
    if "\x00" in value:
        return "holds a NUL character (U+0000)"
    if value.isascii():  # O(1) in CPython, and most text is: skips the encoding below
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def _bad_text(message: Message, prefix: str) -> tuple[str, str] | None:
    """The first string field, map key or Struct value at any depth that no text field
    accepts, as (its path in the request, what is wrong), or None."""
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else [value]
            for index, text in enumerate(values):
                problem = _text_problem(text)
                if problem is not None:
                    return (f"{name}[{index}]" if field.is_repeated else name), problem
        elif field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            entry = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                for key, item in value.items():
                    for text in (key, item):
                        problem = _text_problem(text) if isinstance(text, str) else None
                        if problem is not None:
                            return f"{name}[{key!r}]", problem
                    if isinstance(item, Message):
                        found = _bad_text(item, f"{name}[{key!r}].")
                        if found is not None:
                            return found
                continue
            items = list(value) if field.is_repeated else [value]
            for index, item in enumerate(items):
                label = f"{name}[{index}]." if field.is_repeated else f"{name}."
                found = _bad_text(item, label)
                if found is not None:
                    return found
    return None


def sendable(message: str) -> str:
    """A status message every client can receive: valid UTF-8, and short enough for trailers.

    grpc does not send a message it cannot encode, nor does a client accept trailers past its
    metadata limit: either way the reply is lost and the client waits for its deadline
    (EnableEncryption did, naming a path with an escaped lone surrogate).
    """
    text = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > MAX_STATUS_MESSAGE:
        cut = len(text) - MAX_STATUS_MESSAGE + 40
        text = f"{text[: MAX_STATUS_MESSAGE - 40]}... ({cut} more characters)"
    return text


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame: enough to find the bug, with no exception text."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


class _Call:
    """Bookkeeping for one RPC: the parts shared by unary and streaming handlers."""

    def __init__(self, method: str, context: Context, request: Any = None) -> None:
        self.method = method
        self.context = context
        self.request = request
        # Bound once authentication succeeds; until then the call has no caller and no rights.
        self.caller: Caller | None = None
        self.metadata = {
            k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)
        }
        self.request_id = _request_id(self.metadata)
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc=method, request_id=self.request_id)

    async def begin(self, authenticator: Authenticator, access: Access | None) -> None:
        await self.context.send_initial_metadata(((REQUEST_ID_HEADER, self.request_id),))
        auth_context = {k: list(v) for k, v in (self.context.auth_context() or {}).items()}
        principal = await authenticator.authenticate(self.method, self.metadata, auth_context)
        self.caller = Caller(principal, self.request_id)
        bind_caller(self.caller)
        structlog.contextvars.bind_contextvars(actor=principal.actor_id)
        if access is not None:
            access.check_method(principal, self.method)

    async def fail(self, exc: BaseException, access: Access | None = None) -> None:
        """Turns ``exc`` into a status; always raises."""
        if isinstance(exc, errors.PermissionDenied) and access is not None:
            # Refused before authentication finished: attributed to nobody in particular.
            caller = self.caller or Caller(ANONYMOUS, self.request_id)
            try:
                await access.denied(caller, self.method, exc, self.request)
            except Exception as audit_exc:  # the call stays denied either way
                log.error("denial_audit_failed", error_type=type(audit_exc).__name__)
        if isinstance(exc, errors.DomainError):
            self.code = status_for(exc)
            await self.context.abort(self.code, sendable(exc.message))
        if isinstance(exc, grpc.aio.AbortError):
            # The handler aborted by itself: keep its code and message (servicers abort only
            # through domain errors, so the message went through sendable()).
            code: Any = self.context.code()
            self.code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            raise exc
        if isinstance(exc, BaseException) and not isinstance(exc, Exception):
            self.code = grpc.StatusCode.CANCELLED
            raise exc
        self.code = grpc.StatusCode.INTERNAL
        log.error("rpc_crashed", error_type=type(exc).__name__, where=_where(exc))
        await self.context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error; quote request id {self.request_id} to the operators",
        )

    def finish(self, metrics: RpcMetrics | None) -> None:
        seconds = time.perf_counter() - self.started
        code = self.code.name if isinstance(self.code, grpc.StatusCode) else str(self.code)
        log.info("rpc_finished", code=code, ms=round(seconds * 1000, 3))
        if metrics is not None:
            metrics.observe(self.method, code, seconds)
        structlog.contextvars.clear_contextvars()


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler so the cross-cutting behaviour lives in exactly one place."""

    def __init__(
        self,
        authenticator: Authenticator,
        access: Access | None = None,
        metrics: RpcMetrics | None = None,
    ) -> None:
        self._authenticator = authenticator
        # Calls and latency per method and code, from the same place as the log line.
        self._metrics = metrics
        # Per-method authorization (security.authz); None: the authenticator decides.
        self._access = access

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        # Handlers are typed for the sync API in the stubs; under grpc.aio they are coroutines.
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(method, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_unary(
        self, method: str, behavior: Callable[[Any, Context], Any]
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        authenticator, access, metrics = self._authenticator, self._access, self._metrics

        async def wrapper(request: Any, context: Context) -> Any:
            call = _Call(method, context, request)
            try:
                await call.begin(authenticator, access)
                _refuse_undecodable(request)
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except BaseException as exc:
                await call.fail(exc, access)
            finally:
                call.finish(metrics)

        return wrapper

    def _wrap_stream(
        self, method: str, behavior: Callable[[Any, Context], AsyncIterator[Any]]
    ) -> Callable[[Any, Context], AsyncIterator[Any]]:
        authenticator, access, metrics = self._authenticator, self._access, self._metrics

        async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _Call(method, context, request)
            try:
                await call.begin(authenticator, access)
                _refuse_undecodable(request)
                async for item in behavior(request, context):
                    yield item
            except BaseException as exc:
                await call.fail(exc, access)
            finally:
                call.finish(metrics)

        return wrapper
