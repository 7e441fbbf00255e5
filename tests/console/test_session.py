"""The sealed session cookie: only this console can read or make one, and it ages out."""

from __future__ import annotations

import secrets

from services.console.session import MAX_FLASH, Session, SessionCodec

KEY = secrets.token_bytes(32)
TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


def test_a_sealed_session_opens_to_itself() -> None:
    """What goes in (token, CSRF secret, workspaces, messages) comes back out."""
    codec = SessionCodec(KEY, 3600)
    session = Session.fresh(now=1000).signed_in(TOKEN, now=1000).with_workspace("ws_1")
    session = session.with_flash("ok", "Saved.")
    assert codec.open(codec.seal(session), now=1001) == session


def test_the_cookie_does_not_show_the_token() -> None:
    """The bearer token is encrypted, not merely signed: the browser cannot read it."""
    codec = SessionCodec(KEY, 3600)
    sealed = codec.seal(Session.fresh().signed_in(TOKEN))
    assert TOKEN not in sealed
    assert "alice" not in sealed


def test_a_changed_cookie_opens_as_nothing() -> None:
    """Flipping any character, or sealing under another key, gives no session at all."""
    codec = SessionCodec(KEY, 3600)
    sealed = codec.seal(Session.fresh(now=1000).signed_in(TOKEN, now=1000))
    flipped = sealed[:10] + ("A" if sealed[10] != "A" else "B") + sealed[11:]
    other = SessionCodec(secrets.token_bytes(32), 3600)
    assert [codec.open(flipped, now=1000), other.open(sealed, now=1000)] == [None, None]
    assert codec.open("not base64 at all!", now=1000) is None


def test_an_old_session_opens_as_nothing() -> None:
    """Past the console's maximum session age the cookie is worthless."""
    codec = SessionCodec(KEY, 60)
    sealed = codec.seal(Session.fresh(now=1000))
    assert codec.open(sealed, now=1059) is not None
    assert codec.open(sealed, now=1061) is None


def test_signing_in_replaces_the_csrf_secret() -> None:
    """A CSRF value planted before sign-in is worthless after it (login CSRF)."""
    before = Session.fresh()
    after = before.signed_in(TOKEN)
    assert not after.csrf_ok(before.csrf)
    assert after.csrf_ok(after.csrf)
    assert not after.csrf_ok("")


def test_messages_and_workspaces_stay_bounded() -> None:
    """The cookie cannot grow without bound however many messages or workspaces pile up."""
    session = Session.fresh()
    for n in range(50):
        session = session.with_flash("ok", f"message {n}").with_workspace(f"ws_{n}")
    assert len(session.flashes) == MAX_FLASH
    assert session.recent_workspaces[0] == "ws_49"
    assert len(session.recent_workspaces) == 20
    assert len(SessionCodec(KEY, 60).seal(session)) < 3000
