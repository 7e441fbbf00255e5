"""structlog set-up: JSON off a TTY, console on one, with one redaction choke point."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

# Keys whose values are never logged, whatever they hold. Matched after lower-casing, as a
# substring, so "private_key_pem" and "passphrase_confirm" are caught too.
SECRET_KEY_PARTS = (
    "private",
    "passphrase",
    "password",
    "secret",
    "token",
    "authorization",
    "bearer",
    "credential",
    "cookie",
    "challenge",
    "plaintext",
    "event_body",
    "events",
    "value",
)
REDACTED = "[REDACTED]"

# Values that look like key material are dropped even under an innocent key.
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_JWT = re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")
_BEARER = re.compile(r"(?i)\bbearer\s+\S+")


# What every pattern above starts with: one search rules all three out for the usual value.
_MAYBE_SECRET = re.compile(r"-----BEGIN |eyJ|(?i:bearer)")


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    # Cached: the same few dozen keys come with every log line (the scan was a third of a
    # line's cost); the bound keeps keys taken from a mapping's data from growing it.
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        if _MAYBE_SECRET.search(value) is None:
            return value
        if _PEM.search(value):
            return REDACTED
        return _BEARER.sub(REDACTED, _JWT.sub(REDACTED, value))
    if isinstance(value, BaseException):
        # Exception text can quote row values or request fields; only the type is safe.
        return type(value).__name__
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret_key(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        # Raw bytes in a log line are event bodies or key material far more often than not.
        return f"<{len(value)} bytes>"
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: removes secrets and PHI before anything is rendered."""
    for key in list(event_dict):
        if key == "event":
            event_dict[key] = _scrub(event_dict[key])
        elif _is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def safe_db_error(exc: BaseException) -> str:
    """A PostgreSQL/asyncpg error reduced to what is safe to log or return: SQLSTATE and
    constraint name. Message, DETAIL, WHERE and hint are dropped: they can echo row values
    (``Key (email)=(jane@example.com) already exists``)."""
    sqlstate = getattr(exc, "sqlstate", None)
    if not isinstance(sqlstate, str):
        return f"database error ({type(exc).__name__})"
    constraint = getattr(exc, "constraint_name", None)
    if isinstance(constraint, str) and constraint:
        return f"database error SQLSTATE {sqlstate} (constraint {constraint})"
    return f"database error SQLSTATE {sqlstate}"


def _json_line(value: Any, **kw: Any) -> str:
    """JSONRenderer's serializer: orjson (a fifth of a log line's cost with the standard json),
    the standard library for what orjson refuses (an integer past 64 bits)."""
    try:
        return orjson.dumps(
            value, default=kw.get("default"), option=orjson.OPT_NON_STR_KEYS
        ).decode()
    except TypeError:
        return json.dumps(value, **kw)


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Production chain; console rendering only when asked or attached to a terminal."""
    out = sys.stderr if stream is None else stream
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if use_console
        else structlog.processors.JSONRenderer(serializer=_json_line)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # One write per line (message and newline together): worker processes share the
        # supervisor's stderr, and print()'s two writes let their lines run together when
        # output is unbuffered (PYTHONUNBUFFERED=1, usual in containers).
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
