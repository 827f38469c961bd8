"""OpenAI organization Usage and Costs APIs (an Admin key, `sk-admin-...`, is required).

Completions usage (OpenAI API reference, "Usage > Completions"):
    GET /v1/organization/usage/completions
        ?start_time=<unix s>&end_time=<unix s, exclusive>&bucket_width=1d
        &group_by=model&group_by=project_id&limit=31[&page=<next_page>]
    header: Authorization: Bearer <key>
    -> {"object": "page",
        "data": [{"object": "bucket", "start_time": 1730419200, "end_time": 1730505600,
                  "results": [{"object": "organization.usage.completions.result", "input_tokens": 1000,
                               "output_tokens": 500, "input_cached_tokens": 800, "input_audio_tokens": 0,
                               "output_audio_tokens": 0, "num_model_requests": 5, "project_id": "proj_abc",
                               "user_id": null, "api_key_id": null, "model": "gpt-4o-mini-2024-07-18",
                               "batch": null}]}],
        "has_more": true, "next_page": "page_AAAA..."}
    `input_tokens` already includes the cached ones (and, in current docs, audio and image tokens).

Costs ("Usage > Costs"):
    GET /v1/organization/costs?start_time=...&end_time=...&bucket_width=1d
        &group_by=project_id&group_by=line_item&limit=31[&page=...]
    -> {"object": "page",
        "data": [{"object": "bucket", "start_time": 1730419200, "end_time": 1730505600,
                  "results": [{"object": "organization.costs.result", "amount": {"value": 0.06, "currency": "usd"},
                               "line_item": "gpt-4o-2024-08-06, input", "project_id": "proj_abc"}]}],
        "has_more": false, "next_page": null}
    Costs cannot be grouped by model; the model is taken from the line item ("<model>, input|output").
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
    day_start,
    merge,
)
from halswarm.supervisor.features.cost.http import RetryPolicy, get_pages
from halswarm.supervisor.features.cost.settings import ProviderSettings

USAGE_PATH = "/v1/organization/usage/completions"
COST_PATH = "/v1/organization/costs"
PAGE_LIMIT = "31"


def _results(bucket: dict[str, Any]) -> list[dict[str, Any]]:
    # The documented key is `results`; some generated clients spell it `result`.
    items = bucket.get("results", bucket.get("result"))
    return [r for r in items if isinstance(r, dict)] if isinstance(items, list) else []


def model_of_line_item(line_item: object) -> str:
    if not isinstance(line_item, str) or not line_item.strip():
        return UNKNOWN_MODEL
    return line_item.split(",", 1)[0].strip() or UNKNOWN_MODEL


def parse_usage(buckets: list[dict[str, Any]]) -> dict[Key, tuple[int, int]]:
    acc: dict[Key, tuple[int, int]] = {}
    for b in buckets:
        date = day_of(b.get("start_time"))
        if date is None:
            continue
        for r in _results(b):
            # Current docs: input/output_tokens include text, audio and image tokens (not added twice).
            key = (date, r.get("model") or UNKNOWN_MODEL, r.get("project_id") or DEFAULT_PROJECT)
            add(acc, key, as_int(r.get("input_tokens")), as_int(r.get("output_tokens")))
    return acc


def parse_costs(buckets: list[dict[str, Any]]) -> dict[Key, float]:
    acc: dict[Key, float] = {}
    for b in buckets:
        date = day_of(b.get("start_time"))
        if date is None:
            continue
        for r in _results(b):
            amount = found if isinstance(found := r.get("amount"), dict) else {}
            if str(amount.get("currency") or "usd").lower() != "usd":
                continue
            value = amount.get("value")
            try:
                usd = float(value) if value is not None else 0.0
            except (TypeError, ValueError):
                continue
            key = (date, model_of_line_item(r.get("line_item")), r.get("project_id") or DEFAULT_PROJECT)
            acc[key] = acc.get(key, 0.0) + usd
    return acc


class OpenAISource:
    name = "openai"

    def __init__(self, settings: ProviderSettings, client: httpx.AsyncClient, retry: RetryPolicy) -> None:
        self.settings = settings
        self.client = client
        self.retry = retry

    async def fetch(self, first: dt.date, end_excl: dt.date) -> list[Bucket]:
        window = [("start_time", str(int(day_start(first)))), ("end_time", str(int(day_start(end_excl)))),
                  ("bucket_width", "1d"), ("limit", PAGE_LIMIT)]
        headers = {"Authorization": f"Bearer {self.settings.api_key}"}
        root = self.settings.root
        usage = await get_pages(self.client, root + USAGE_PATH,
                                [*window, ("group_by", "model"), ("group_by", "project_id")], headers, self.retry)
        costs = await get_pages(self.client, root + COST_PATH,
                                [*window, ("group_by", "project_id"), ("group_by", "line_item")], headers, self.retry)
        return merge(self.name, parse_usage(usage), parse_costs(costs))
