"""The calls the supervisor makes to Slack: Web API methods with the bot token (chat.postMessage,
chat.update, usergroups.users.list) and messages to a request's response_url. Bounded by a timeout,
one retry after a 429 or a 5xx; failures are logged without the token or the response_url (a credential
for 30 minutes) and answered None/False, never raised."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx

from halswarm.core.retry_after import retry_after

log = logging.getLogger(__name__)
MAX_RETRY_AFTER = 5.0
_HOOK_PATH = re.compile(r"(/(?:commands|actions)/)[^\s\"']+")


def hide_response_urls(record: logging.LogRecord) -> bool:
    """Logging filter: httpx logs each request's URL at debug level; a response_url's secret part is masked."""
    message = record.getMessage()
    if "/commands/" in message or "/actions/" in message:
        record.msg, record.args = _HOOK_PATH.sub(r"\1***", message), ()
    return True


logging.getLogger("httpx").addFilter(hide_response_urls)


class SlackWeb:
    def __init__(self, api_base: str, token: str | None, response_base: str, timeout: float) -> None:
        self.api_base = api_base
        self.token = token
        self.response_base = response_base
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client

    def response_url_ok(self, url: object) -> bool:
        """Only Slack's own hooks (`response_base`) are ever posted to: the URL comes in the request."""
        return isinstance(url, str) and url.startswith(self.response_base) and len(url) < 1000 \
            and not any(c.isspace() for c in url)

    async def call(self, method: str, body: dict[str, Any], *, form: bool = False) -> dict[str, Any] | None:
        """A Web API method's answer when `ok`, else None (logged: the method and Slack's error)."""
        if self.token is None:
            return None
        headers = {"Authorization": f"Bearer {self.token}"}
        kwargs: dict[str, Any] = {"data": body} if form else {"json": body}
        r = await self._post(f"{self.api_base}/{method}", headers, kwargs, method)
        if r is None:
            return None
        try:
            doc = r.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not doc.get("ok"):
            error = doc.get("error") if isinstance(doc, dict) else f"HTTP {r.status_code}"
            log.warning("slack %s refused: %s", method, str(error)[:100])
            return None
        return doc

    async def respond(self, response_url: str, message: dict[str, Any]) -> bool:
        """Post to a request's response_url (Slack answers 200 "ok")."""
        if not self.response_url_ok(response_url):
            log.warning("slack response_url refused: not under %s", self.response_base)
            return False
        r = await self._post(response_url, {}, {"json": message}, "response_url")
        if r is None:
            return False
        if r.status_code >= 300:
            log.warning("slack response_url refused: HTTP %d", r.status_code)
            return False
        return True

    async def _post(self, url: str, headers: dict[str, str], kwargs: dict[str, Any],
                    what: str) -> httpx.Response | None:
        for attempt in (1, 2):
            try:
                r = await self._http().post(url, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                log.warning("slack %s failed: %s", what, type(exc).__name__)
                return None
            if attempt == 1 and (r.status_code == 429 or r.status_code >= 500):
                wait = retry_after(r.headers.get("retry-after"))
                await asyncio.sleep(min(1.0 if wait is None else wait, MAX_RETRY_AFTER))
                continue
            return r
        return r

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
