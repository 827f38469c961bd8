"""HTTP for the provider reports: retries on 429/5xx/network errors with backoff (honouring
`Retry-After`), a request timeout from the client, and cursor paging (`has_more` / `next_page`)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from halswarm.core.retry_after import retry_after
from halswarm.core.secret_values import SECRETS, SecretValues

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 60.0
MAX_PAGES = 200


class ProviderError(Exception):
    """A provider request failed for good (after its retries, or a non-retryable answer)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff_base_s: float = 0.5
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    def backoff(self, attempt: int) -> float:
        base = self.backoff_base_s * (2 ** attempt)
        return base + random.uniform(0, base / 4)


def _short(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


def _scrub(text: str, headers: dict[str, str]) -> str:
    """A provider's error body without any configured secret nor the credentials this request sent
    (providers echo the key back in their error messages)."""
    local = SecretValues()
    local.add(*(part for v in headers.values() for part in (v, v.rpartition(" ")[2])))
    return local.scrub(SECRETS.scrub(text))


async def get_json(client: httpx.AsyncClient, url: str, params: list[tuple[str, str]], headers: dict[str, str],
                   retry: RetryPolicy) -> dict[str, Any]:
    """GET one JSON object. Raises ProviderError with a one-line reason (never the key)."""
    last = ""
    for attempt in range(retry.max_retries + 1):
        wait: float | None = None
        try:
            # a tuple: httpx takes it like a list, and its type is covariant (list[tuple[str, str]] is not
            # a list of httpx's wider value type)
            resp = await client.get(url, params=tuple(params), headers=headers)
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if resp.status_code == 200:
                try:
                    body = resp.json()
                except ValueError:
                    raise ProviderError(f"GET {url}: response is not JSON") from None
                if not isinstance(body, dict):
                    raise ProviderError(f"GET {url}: response is not a JSON object")
                return body
            last = f"HTTP {resp.status_code}: {_short(_scrub(resp.text, headers))}"
            if resp.status_code != 429 and resp.status_code < 500:
                raise ProviderError(f"GET {url}: {last}")
            wait = retry_after(resp.headers.get("retry-after"))
        if attempt == retry.max_retries:
            break
        delay = min(MAX_RETRY_AFTER_S, wait) if wait is not None else retry.backoff(attempt)
        log.info("cost: GET %s failed (%s); retry %d/%d in %.2f s", url, last, attempt + 1, retry.max_retries, delay)
        await retry.sleep(delay)
    raise ProviderError(f"GET {url}: {last} (after {retry.max_retries + 1} attempts)")


async def get_pages(client: httpx.AsyncClient, url: str, params: list[tuple[str, str]], headers: dict[str, str],
                    retry: RetryPolicy) -> list[dict[str, Any]]:
    """Every `data[]` bucket of a paged report: follows `has_more` / `next_page` via the `page` parameter."""
    buckets: list[dict[str, Any]] = []
    page: str | None = None
    for _ in range(MAX_PAGES):
        body = await get_json(client, url, params + ([("page", page)] if page else []), headers, retry)
        data = body.get("data")
        if not isinstance(data, list):
            raise ProviderError(f"GET {url}: response has no data[] list")
        buckets.extend(b for b in data if isinstance(b, dict))
        nxt = body.get("next_page")
        if not body.get("has_more") or not isinstance(nxt, str) or not nxt or nxt == page:
            return buckets
        page = nxt
    raise ProviderError(f"GET {url}: more than {MAX_PAGES} pages")
