"""`GET /api/v1/cost/status` and `POST /api/v1/cost/refresh` against the real supervisor, with the fake
provider APIs on loopback: a provider down at start is degraded with every day of the window missing;
once it is back, one forced refresh back-fills the window (rows in `costs`), clears the degraded state,
is audited and emitted, and the regular schedule (60 min here) would not have done it."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

from tests.fakes.fake_providers import ANTHROPIC_KEY, fake_providers
from tests.support.supervisor_proc import ADMIN_NAME
from tests.support.waiting import wait_for

TODAY = dt.datetime.now(dt.UTC).date()


def cost_config(url: str) -> dict[str, Any]:
    # degraded_retry_seconds of an hour: without the forced refresh nothing would recover during the test.
    return {"poll_interval_minutes": 60, "degraded_retry_seconds": 3600, "request_timeout_seconds": 2,
            "max_retries": 0, "backoff_base_ms": 10,
            "providers": {"anthropic": {"admin_api_key": ANTHROPIC_KEY, "base_url": url}}}


def test_status_and_refresh_backfill_after_provider_outage(make_supervisor: Any) -> None:
    with fake_providers() as fake:
        fake.down.add("anthropic")
        yesterday = (TODAY - dt.timedelta(days=1)).isoformat()
        fake.anthropic_day(yesterday, "claude-sonnet-4-5", 30_000, 5_000, cents=250)
        sup = make_supervisor(cost=cost_config(fake.url)).start()
        with sup.client() as c:
            def degraded() -> Any:
                data = c.get("/api/v1/cost/status").json()["data"]
                return data if data["degraded_providers"] == ["anthropic"] else None

            health = wait_for(degraded)
            assert health["running"] is True and health["providers_configured"] == ["anthropic"]
            assert health["last_update_age_s"] is None
            assert len(health["missing_dates"]) == 30 and yesterday in health["missing_dates"]
            assert health["providers"]["anthropic"]["reason"]
            # the period route still works beside the new ones
            assert c.get("/api/v1/cost/today").status_code == 200
            assert c.get("/api/v1/cost/status", headers={"Authorization": "Bearer nope"}).status_code == 401

            bad = c.post("/api/v1/cost/refresh", json={"providers": ["openai"]})
            assert bad.status_code == 400 and "not enabled" in bad.json()["error"]

            still_down = c.post("/api/v1/cost/refresh", headers={"X-HAL-Actor": "test"}).json()["data"]
            assert still_down["results"] == {"anthropic": False}
            assert still_down["health"]["degraded_providers"] == ["anthropic"]

            fake.down.clear()
            before = fake.count("anthropic")
            res = c.post("/api/v1/cost/refresh", json={}, headers={"X-HAL-Actor": "test"})
            assert res.status_code == 200, res.text
            data = res.json()["data"]
            assert data["results"] == {"anthropic": True}
            assert fake.count("anthropic") > before
            h = data["health"]
            assert h["degraded_providers"] == [] and h["missing_dates"] == []
            assert h["last_update_age_s"] is not None and h["last_update_age_s"] < 10
            report = c.get("/api/v1/cost/week").json()["data"]
            assert {"provider": "anthropic", "tokens": 35_000, "cost_usd": 2.5} in report["by_provider"]
            audit = c.get("/api/v1/audit", params={"action": "cost_refresh"}).json()["data"]
            assert [a["result"] for a in audit][:2] == ["success", "failure"]
            assert all(a["actor"] == ADMIN_NAME and a["client_actor"] == "test" for a in audit[:2])
            assert ANTHROPIC_KEY not in str(audit)

            def event() -> Any:
                evs = c.get("/api/v1/events", params={"type": "cost.refreshed"}).json()["data"]
                return evs if len(evs) >= 2 else None

            wait_for(event)
        conn = sqlite3.connect(sup.db_path)
        try:
            rows = conn.execute("SELECT date, model, tokens, cost_usd FROM costs WHERE provider='anthropic'").fetchall()
            polled = conn.execute("SELECT COUNT(*) FROM cost_polls WHERE provider='anthropic'").fetchone()[0]
        finally:
            conn.close()
        assert (yesterday, "claude-sonnet-4-5", 35_000, 2.5) in rows
        assert polled == 31
        assert ANTHROPIC_KEY not in sup.log_path.read_text()
