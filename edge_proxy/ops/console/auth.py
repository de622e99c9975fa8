"""Who may use the console: a token, given as ``Authorization: Bearer`` or once on the login page.

The login page trades the token for a random session id in an ``HttpOnly``, ``SameSite=Strict``
cookie; the cookie never holds the token. Sessions are few and expire. Without a configured
token (the console then listens on loopback only) everyone on this machine may use it.
"""

from __future__ import annotations

import collections
import hmac
import secrets
import time

COOKIE = "edge_console"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 64


class Sessions:
    """Login sessions by random id, bounded in number and age."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None
        self._sessions: collections.OrderedDict[str, float] = collections.OrderedDict()

    @property
    def required(self) -> bool:
        """Whether a token is configured (else no one needs to log in)."""
        return self._token is not None

    def token_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the token (in constant time)."""
        if self._token is None:
            return True
        if not given:
            return False
        return hmac.compare_digest(given.encode(), self._token)

    def bearer_ok(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the token."""
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def login(self, given: str | None) -> str | None:
        """A new session id for the right token, else None."""
        if not self.token_ok(given):
            return None
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = time.monotonic() + SESSION_SECONDS
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return sid

    def valid(self, sid: str | None) -> bool:
        """Whether ``sid`` is a live session."""
        if not sid:
            return False
        expires = self._sessions.get(sid)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._sessions[sid]
            return False
        return True

    def logout(self, sid: str | None) -> None:
        """End a session."""
        if sid:
            self._sessions.pop(sid, None)

    def allowed(self, header: str | None, sid: str | None) -> bool:
        """Whether a request may go on: no token configured, the right bearer, a session."""
        return not self.required or self.bearer_ok(header) or self.valid(sid)
