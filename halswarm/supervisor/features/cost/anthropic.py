"""Anthropic Admin API: the Usage & Cost reports (an Admin API key, `sk-ant-admin...`, is required).

Usage report (Anthropic API reference, "Get Messages Usage Report"):
    GET /v1/organizations/usage_report/messages
        ?starting_at=<RFC 3339>&ending_at=<RFC 3339>&bucket_width=1d
        &group_by[]=model&group_by[]=workspace_id&limit=31[&page=<next_page>]
    headers: x-api-key, anthropic-version: 2023-06-01
    -> {"data": [{"starting_at": "2025-08-01T00:00:00Z", "ending_at": "2025-08-02T00:00:00Z",
                  "results": [{"uncached_input_tokens": 1500, "cache_read_input_tokens": 200,
                               "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 100},
                               "output_tokens": 500, "server_tool_use": {"web_search_requests": 0},
                               "model": "claude-sonnet-4-20250514", "workspace_id": "wrkspc_...",
                               "api_key_id": null, "service_tier": null, "context_window": null}]}],
        "has_more": true, "next_page": "page_..."}

Cost report ("Get Cost Report"):
    GET /v1/organizations/cost_report
        ?starting_at=...&ending_at=...&bucket_width=1d&group_by[]=workspace_id&group_by[]=description&limit=31
    -> {"data": [{"starting_at", "ending_at",
                  "results": [{"currency": "USD", "amount": "123.45", "workspace_id": "wrkspc_...",
                               "description": "Claude Sonnet 4 Usage - Input Tokens", "cost_type": "tokens",
                               "context_window": "0-200k", "model": "claude-sonnet-4-20250514",
                               "service_tier": "standard", "token_type": "uncached_input_tokens"}]}],
        "has_more": false, "next_page": null}
    `amount` is a decimal string in the lowest currency unit (cents): "123.45" USD is $1.2345.

`ending_at` is exclusive. Buckets are UTC days.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from halswarm.core.cost import (
    DEFAULT_PROJECT,
    UNKNOWN_MODEL,
    Bucket,
    Key,
    add,
    as_int,
    day_of,
    merge,
    rfc3339,
)
from halswarm.supervisor.features.cost.http import RetryPolicy, get_pages
from halswarm.supervisor.features.cost.settings import ProviderSettings

USAGE_PATH = "/v1/organizations/usage_report/messages"
COST_PATH = "/v1/organizations/cost_report"
API_VERSION = "2023-06-01"
PAGE_LIMIT = "31"  # max buckets per page for bucket_width=1d


def parse_usage(buckets: list[dict[str, Any]]) -> dict[Key, tuple[int, int]]:
    """(date, model, workspace) -> (input tokens incl. cache reads/writes, output tokens)."""
    acc: dict[Key, tuple[int, int]] = {}
    for b in buckets:
        date = day_of(b.get("starting_at"))
        if date is None:
            continue
        for r in b.get("results") or []:
            if not isinstance(r, dict):
                continue
            cc = found if isinstance(found := r.get("cache_creation"), dict) else {}
            inp = (as_int(r.get("uncached_input_tokens")) + as_int(r.get("cache_read_input_tokens"))
                   + as_int(cc.get("ephemeral_1h_input_tokens")) + as_int(cc.get("ephemeral_5m_input_tokens"))
                   # flat spellings seen in some SDKs
                   + as_int(r.get("cache_creation_1h_input_tokens")) + as_int(r.get("cache_creation_5m_input_tokens")))
            key = (date, r.get("model") or UNKNOWN_MODEL, r.get("workspace_id") or DEFAULT_PROJECT)
            add(acc, key, inp, as_int(r.get("output_tokens")))
    return acc


def parse_costs(buckets: list[dict[str, Any]]) -> dict[Key, float]:
    """(date, model, workspace) -> USD. Non-USD rows are skipped (the API documents USD only)."""
    acc: dict[Key, float] = {}
    for b in buckets:
        date = day_of(b.get("starting_at"))
        if date is None:
            continue
        for r in b.get("results") or []:
            if not isinstance(r, dict) or str(r.get("currency") or "USD").upper() != "USD":
                continue
            try:
                cents = float(r.get("amount") or 0)
            except (TypeError, ValueError):
                continue
            key = (date, r.get("model") or UNKNOWN_MODEL, r.get("workspace_id") or DEFAULT_PROJECT)
            acc[key] = acc.get(key, 0.0) + cents / 100.0
    return acc


class AnthropicSource:
    name = "anthropic"

    def __init__(self, settings: ProviderSettings, client: httpx.AsyncClient, retry: RetryPolicy) -> None:
        self.settings = settings
        self.client = client
        self.retry = retry

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self.settings.api_key, "anthropic-version": API_VERSION}

    async def fetch(self, first: dt.date, end_excl: dt.date) -> list[Bucket]:
        window = [("starting_at", rfc3339(first)), ("ending_at", rfc3339(end_excl)), ("bucket_width", "1d"),
                  ("limit", PAGE_LIMIT)]
        root = self.settings.root
        usage = await get_pages(self.client, root + USAGE_PATH,
                                [*window, ("group_by[]", "model"), ("group_by[]", "workspace_id")],
                                self._headers(), self.retry)
        costs = await get_pages(self.client, root + COST_PATH,
                                [*window, ("group_by[]", "workspace_id"), ("group_by[]", "description")],
                                self._headers(), self.retry)
        return merge(self.name, parse_usage(usage), parse_costs(costs))
