"""Login sessions of the web console: an API token is exchanged once for a random session id carried in
an HttpOnly cookie; the token itself never reaches the page, a URL or the database.

- Stored by SHA-256 digest (``console_sessions``, migration 017) so a supervisor restart keeps operators
  logged in; a bounded in-memory cache answers the requests of a page without a database read.
- The role is not stored: each request takes it from the current operator list, by name, and only
  while the token the session was opened with is still that operator's token (a rotated, removed or
  demoted credential takes effect on the console at once).
- The CSRF token is derived from the session id (HMAC), so it needs no storage and dies with the session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from halswarm.core.roles import Identity, identify
from halswarm.store.reader import Reader
from halswarm.store.repos.console_sessions import (
    ConsoleSessionRow,
    delete_console_session,
    get_console_session,
    insert_console_session,
    touch_console_session,
)
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.deps import OperatorGate
from halswarm.supervisor.features.console.settings import ConsoleSettings

COOKIE = "hal_console"
CACHE_MAX = 2048  # sessions held in memory (the rest are read from the store when they come back)
TOUCH_EVERY_SEC = 60.0  # last_seen is written at most this often per session
ID_BYTES = 32


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class Login:
    """A live console session: who, and its CSRF token (never the API token)."""

    sid_hash: str
    identity: Identity
    csrf: str
    row: ConsoleSessionRow
    flash: str | None = None  # the outcome of the last action, shown once on the next page


class LoginStore:
    def __init__(self, settings: ConsoleSettings, gate: OperatorGate, reader: Reader, writer: Writer) -> None:
        self.settings = settings
        self.gate = gate
        self.reader = reader
        self.writer = writer
        self._cache: OrderedDict[str, ConsoleSessionRow] = OrderedDict()
        self._written: dict[str, float] = {}  # session -> last_seen last written to the store

    def authenticate(self, token: str, addr: str) -> Identity | None:
        """The operator whose API token this is; failures count in the API's failure throttle (so the
        login form is no faster a way to guess tokens than the API). A success clears nothing, as on the
        API: holding one token must not reset the count of guesses at the others."""
        ident = identify(token.strip() or None, self.gate.operators)
        if ident is None and not self.gate.throttle.blocked(addr):
            self.gate.throttle.failed(addr)
        return ident

    def blocked(self, addr: str) -> bool:
        return self.gate.throttle.blocked(addr)

    async def open(self, ident: Identity) -> tuple[str, Login]:
        """A new session for `ident`: (the cookie value, the login)."""
        sid = secrets.token_urlsafe(ID_BYTES)
        now = time.time()
        row = ConsoleSessionRow(digest(sid), ident.name, digest(ident.token), now, now, now + self.settings.max_sec)
        await self.writer.run(lambda c: insert_console_session(c, row, keep=self.settings.max_sessions, now=now))
        self._remember(row)
        return sid, Login(row.id_hash, ident, self.csrf_of(sid), row)

    async def lookup(self, sid: str | None) -> Login | None:
        """The live login of a cookie value, or None (unknown, expired, idle too long, credential gone)."""
        if not sid or len(sid) > 200:
            return None
        h = digest(sid)
        row = self._cache.get(h)
        if row is None:
            row = await self.reader.run(lambda c: get_console_session(c, h))
            if row is None:
                return None
        now = time.time()
        ident = self._identity(row)
        if ident is None or now >= row.expires_at or now - row.last_seen > self.settings.idle_sec:
            await self._forget(h)
            return None
        # Memory holds the exact last use; the store at most TOUCH_EVERY_SEC behind (one write a minute).
        if now - self._written.get(h, row.last_seen) > min(TOUCH_EVERY_SEC, self.settings.idle_sec / 4):
            await self.writer.run(lambda c: touch_console_session(c, h, now))
            self._written[h] = now
        row = ConsoleSessionRow(row.id_hash, row.actor, row.token_hash, row.created_at, now, row.expires_at)
        self._remember(row)
        return Login(h, ident, self.csrf_of(sid), row)

    async def close(self, login: Login) -> None:
        await self._forget(login.sid_hash)

    @staticmethod
    def csrf_of(sid: str) -> str:
        return hmac.new(sid.encode(), b"hal-console-csrf", hashlib.sha256).hexdigest()

    @staticmethod
    def csrf_ok(login: Login, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(login.csrf.encode(), (given or "").encode())

    def _identity(self, row: ConsoleSessionRow) -> Identity | None:
        for ident in self.gate.operators:
            if ident.name == row.actor and hmac.compare_digest(digest(ident.token), row.token_hash):
                return ident
        return None

    def _remember(self, row: ConsoleSessionRow) -> None:
        self._cache[row.id_hash] = row
        self._cache.move_to_end(row.id_hash)
        while len(self._cache) > CACHE_MAX:
            gone, _ = self._cache.popitem(last=False)
            self._written.pop(gone, None)

    async def _forget(self, h: str) -> None:
        self._cache.pop(h, None)
        self._written.pop(h, None)
        await self.writer.run(lambda c: delete_console_session(c, h))
