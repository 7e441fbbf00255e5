"""The session cookie: the person's bearer token and CSRF secret, sealed with AES-256-GCM.

The console keeps no state of its own, so the session lives in the browser, encrypted and
authenticated under a key only the console holds: the browser can neither read the token nor
change anything in it. The cookie is ``__Host-`` prefixed (Secure, Path=/, no Domain),
HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

COOKIE = "__Host-phiseal-session"
_AAD = b"phiseal-console-session-v1"
_NONCE = 12
# Workspaces opened in this session, for the list: no RPC lists a person's workspaces.
MAX_RECENT_WORKSPACES = 20
MAX_FLASH = 5


@dataclass(frozen=True)
class Flash:
    """A one-time message for the next page: ``level`` is "ok" or "error"."""

    level: str
    text: str


@dataclass(frozen=True)
class Session:
    """What the cookie carries. ``token`` is empty until the person signs in."""

    csrf: str
    issued_at: int
    token: str = ""
    recent_workspaces: tuple[str, ...] = ()
    flashes: tuple[Flash, ...] = field(default_factory=tuple)

    @classmethod
    def fresh(cls, now: float | None = None) -> Session:
        return cls(csrf=secrets.token_urlsafe(32), issued_at=int(now or time.time()))

    def signed_in(self, token: str, now: float | None = None) -> Session:
        # A new CSRF secret at sign-in: a value planted before it (login CSRF) is worthless.
        return Session(
            csrf=secrets.token_urlsafe(32), issued_at=int(now or time.time()), token=token
        )

    def csrf_ok(self, submitted: str) -> bool:
        return bool(submitted) and hmac.compare_digest(submitted.encode(), self.csrf.encode())

    def with_workspace(self, workspace_id: str) -> Session:
        recent = (workspace_id, *(w for w in self.recent_workspaces if w != workspace_id))
        return replace(self, recent_workspaces=recent[:MAX_RECENT_WORKSPACES])

    def with_flash(self, level: str, text: str) -> Session:
        return replace(self, flashes=(*self.flashes, Flash(level, text[:500]))[-MAX_FLASH:])

    def without_flashes(self) -> Session:
        return replace(self, flashes=())


class SessionCodec:
    """Seals sessions into cookie values and opens them; a bad or old cookie opens as None."""

    def __init__(self, key: bytes, max_age_seconds: int) -> None:
        if len(key) != 32:
            raise ValueError("the session key must be 32 bytes")
        self._aead = AESGCM(key)
        self.max_age = max_age_seconds

    @classmethod
    def from_file(cls, path: Path | None, max_age_seconds: int) -> SessionCodec:
        key = secrets.token_bytes(32) if path is None else _read_key(path)
        return cls(key, max_age_seconds)

    def seal(self, session: Session) -> str:
        body = orjson.dumps(
            {
                "c": session.csrf,
                "i": session.issued_at,
                "t": session.token,
                "w": list(session.recent_workspaces),
                "f": [[f.level, f.text] for f in session.flashes],
            }
        )
        nonce = secrets.token_bytes(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, body, _AAD)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, value: str, now: float | None = None) -> Session | None:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            body = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _AAD)
            data = orjson.loads(body)
            session = Session(
                csrf=str(data["c"]),
                issued_at=int(data["i"]),
                token=str(data["t"]),
                recent_workspaces=tuple(str(w) for w in data["w"]),
                flashes=tuple(Flash(str(lv), str(tx)) for lv, tx in data["f"]),
            )
        except (
            ValueError,
            binascii.Error,
            InvalidTag,
            KeyError,
            TypeError,
            orjson.JSONDecodeError,
        ):
            return None
        if (now or time.time()) - session.issued_at > self.max_age:
            return None
        return session


def _read_key(path: Path) -> bytes:
    try:
        raw = path.read_bytes().strip()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"CONSOLE_SESSION_KEY_FILE {path} is missing: create it with "
            "`head -c 32 /dev/urandom | base64 > FILE` or unset the variable"
        ) from None
    key = base64.b64decode(raw) if len(raw) != 32 else raw
    if len(key) != 32:
        raise ValueError(f"{path} must hold 32 bytes (raw or base64)")
    return key
