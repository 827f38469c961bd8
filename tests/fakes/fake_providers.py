"""Fake Anthropic and OpenAI organization usage/cost APIs on loopback, speaking the documented shapes.

One server answers both providers' paths:
  Anthropic  GET /v1/organizations/usage_report/messages, /v1/organizations/cost_report
             (starting_at/ending_at RFC 3339, bucket_width=1d, group_by[], limit, page;
              {"data":[{"starting_at","ending_at","results":[...]}],"has_more","next_page"})
  OpenAI     GET /v1/organization/usage/completions, /v1/organization/costs
             (start_time/end_time unix seconds, bucket_width=1d, group_by, limit, page;
              {"object":"page","data":[{"object":"bucket","start_time","end_time","results":[...]}],
               "has_more","next_page"})
Every day of the asked window gets a bucket (empty `results` when there is no data), `limit` days per
page. Faults: `fail(kind, status, times, retry_after=)` queues error answers, `down` answers 500 always.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

ANTHROPIC_KEY = "sk-ant-admin01-test-0123456789abcdef"
OPENAI_KEY = "sk-admin-test-0123456789abcdef"

PATHS = {
    "/v1/organizations/usage_report/messages": ("anthropic", "usage"),
    "/v1/organizations/cost_report": ("anthropic", "cost"),
    "/v1/organization/usage/completions": ("openai", "usage"),
    "/v1/organization/costs": ("openai", "cost"),
}


@dataclass
class Fault:
    status: int
    retry_after: str | None = None


@dataclass
class FakeProviders:
    page_size: int = 31
    # provider -> kind ("usage"|"cost") -> date -> results
    data: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = field(default_factory=lambda: {
        "anthropic": {"usage": {}, "cost": {}}, "openai": {"usage": {}, "cost": {}}})
    faults: dict[tuple[str, str], list[Fault]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)  # providers answering 500 to everything
    # Providers answering 401 with an error message that echoes the key they received (as real ones do).
    echo_key: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    # ----- data helpers (real result shapes) -----

    def anthropic_day(self, date: str, model: str, uncached: int, output: int, cents: float,
                      workspace: str | None = "wrkspc_fleet", cache_read: int = 0, cache_5m: int = 0) -> None:
        self.data["anthropic"]["usage"].setdefault(date, []).append({
            "uncached_input_tokens": uncached, "cache_read_input_tokens": cache_read,
            "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": cache_5m},
            "output_tokens": output, "server_tool_use": {"web_search_requests": 0}, "model": model,
            "workspace_id": workspace, "api_key_id": None, "service_tier": None, "context_window": None})
        # The cost report splits a model's cost into descriptions (input / output lines).
        half = cents / 2
        for token_type, amount in (("uncached_input_tokens", half), ("output_tokens", cents - half)):
            self.data["anthropic"]["cost"].setdefault(date, []).append({
                "currency": "USD", "amount": f"{amount:.4f}", "workspace_id": workspace,
                "description": f"{model} Usage - {token_type}", "cost_type": "tokens", "context_window": "0-200k",
                "model": model, "service_tier": "standard", "token_type": token_type})

    def openai_day(self, date: str, model: str, input_tokens: int, output_tokens: int, usd: float,
                   project: str | None = "proj_fleet") -> None:
        self.data["openai"]["usage"].setdefault(date, []).append({
            "object": "organization.usage.completions.result", "input_tokens": input_tokens,
            "output_tokens": output_tokens, "input_cached_tokens": 0, "input_audio_tokens": 0,
            "output_audio_tokens": 0, "num_model_requests": 3, "project_id": project, "user_id": None,
            "api_key_id": None, "model": model, "batch": None})
        half = round(usd / 2, 6)
        for kind, value in (("input", half), ("output", round(usd - half, 6))):
            self.data["openai"]["cost"].setdefault(date, []).append({
                "object": "organization.costs.result", "amount": {"value": value, "currency": "usd"},
                "line_item": f"{model}, {kind}", "project_id": project})

    def fail(self, provider: str, kind: str, status: int, times: int = 1, retry_after: str | None = None) -> None:
        with self.lock:
            self.faults.setdefault((provider, kind), []).extend(Fault(status, retry_after) for _ in range(times))

    def count(self, provider: str | None = None, kind: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if (provider is None or r["provider"] == provider)
                       and (kind is None or r["kind"] == kind))

    # ----- serving -----

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, dict[str, str],
                                                                                             Any]:
        route = PATHS.get(path)
        if route is None:
            return 404, {}, {"error": {"type": "not_found_error", "message": f"no route {path}"}}
        provider, kind = route
        with self.lock:
            self.requests.append({"provider": provider, "kind": kind, "path": path, "query": query,
                                  "headers": headers})
            if provider in self.down:
                return 500, {}, {"error": {"type": "api_error", "message": "internal error"}}
            if provider in self.echo_key:
                given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
                return 401, {}, {"error": {"type": "invalid_request_error",
                                           "message": f"Incorrect API key provided: {given}. Check it."}}
            queue = self.faults.get((provider, kind))
            if queue:
                f = queue.pop(0)
                return f.status, ({"retry-after": f.retry_after} if f.retry_after else {}), {
                    "error": {"type": "rate_limit_error" if f.status == 429 else "api_error", "message": "fault"}}
        if provider == "anthropic":
            if headers.get("x-api-key") != ANTHROPIC_KEY or headers.get("anthropic-version") != "2023-06-01":
                return 401, {}, {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}
            start = _parse_rfc3339(query["starting_at"][0])
            end = _parse_rfc3339(query["ending_at"][0]) if "ending_at" in query else start + dt.timedelta(days=7)
        else:
            if headers.get("authorization") != f"Bearer {OPENAI_KEY}":
                return 401, {}, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
            start = dt.datetime.fromtimestamp(int(query["start_time"][0]), dt.UTC)
            end = (dt.datetime.fromtimestamp(int(query["end_time"][0]), dt.UTC) if "end_time" in query
                   else start + dt.timedelta(days=7))
        if "page" in query:
            start = _parse_rfc3339(base64.b64decode(query["page"][0]).decode())
        limit = min(int(query.get("limit", ["7"])[0]), self.page_size)
        days = []
        day = start
        while day < end and len(days) < limit:
            days.append(day)
            day += dt.timedelta(days=1)
        more = day < end
        store = self.data[provider][kind]
        if provider == "anthropic":
            body: dict[str, Any] = {"data": [
                {"starting_at": _rfc(d), "ending_at": _rfc(d + dt.timedelta(days=1)),
                 "results": store.get(d.date().isoformat(), [])} for d in days]}
        else:
            body = {"object": "page", "data": [
                {"object": "bucket", "start_time": int(d.timestamp()),
                 "end_time": int((d + dt.timedelta(days=1)).timestamp()),
                 "results": store.get(d.date().isoformat(), [])} for d in days]}
        body["has_more"] = more
        body["next_page"] = base64.b64encode(_rfc(day).encode()).decode() if more else None
        return 200, {}, body

    def start(self) -> FakeProviders:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                u = urlparse(self.path)
                status, headers, body = fake.answer(u.path, parse_qs(u.query),
                                                    {k.lower(): v for k, v in self.headers.items()})
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="fake-providers").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _parse_rfc3339(text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    # Buckets snap to the start of the UTC day (bucket_width=1d).
    return parsed.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _rfc(d: dt.datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def fake_providers(page_size: int = 31) -> Iterator[FakeProviders]:
    fake = FakeProviders(page_size=page_size).start()
    try:
        yield fake
    finally:
        fake.stop()
