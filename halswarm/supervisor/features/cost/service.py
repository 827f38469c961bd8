"""What the cost API serves: the period report, the aggregator's health, and an audited forced refresh
(runbook "Cost Data Discrepancy", remediation `cost-data-discrepancy`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from halswarm.store.repos.audit import insert_audit
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.cost.aggregator import CostAggregator
from halswarm.supervisor.features.cost.report import BadPeriod
from halswarm.supervisor.runtime.ingest import Ingestor

REFRESH_TIMEOUT = 120.0


class CostService:
    def __init__(self, aggregator: CostAggregator, writer: Writer, ingestor: Ingestor) -> None:
        self.aggregator = aggregator
        self.writer = writer
        self.ingestor = ingestor

    async def report(self, period: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the report, SPEC 6 `data`; its `meta`: each provider's poll state)."""
        try:
            report = await self.aggregator.report(period.strip().lower())
        except BadPeriod as exc:
            raise ApiError("VALIDATION_ERROR", str(exc)) from None
        return report, {"providers": self.aggregator.status()}

    async def health(self) -> dict[str, Any]:
        return await self.aggregator.health()

    async def refresh(self, names: list[str] | None, *, actor: str, ip: str | None,
                      client_actor: str | None) -> dict[str, Any]:
        """Poll the enabled providers (or `names`) now; audited (`cost_refresh`) and emitted as
        `cost.refreshed`. VALIDATION_ERROR when a named provider is not enabled."""
        enabled = [p.name for p in self.aggregator.settings.enabled]
        unknown = sorted(set(names or []) - set(enabled))
        if unknown:
            raise ApiError("VALIDATION_ERROR", f"provider(s) not enabled: {', '.join(unknown)} "
                                               f"(enabled: {', '.join(enabled) or 'none'})")
        started = time.monotonic()
        try:
            results = await asyncio.wait_for(self.aggregator.refresh(names), REFRESH_TIMEOUT)
        except TimeoutError:
            raise ApiError("TIMEOUT", f"cost refresh did not finish within {REFRESH_TIMEOUT:g}s") from None
        health = await self.aggregator.health()
        failed = sorted(n for n, good in results.items() if not good)
        result = "failure" if failed else "success"
        error = "; ".join(f"{n}: {health['providers'].get(n, {}).get('reason')}" for n in failed) or None
        row = {"timestamp": time.time(), "actor": actor, "action": "cost_refresh", "target": ",".join(results),
               "args": {"providers": names}, "result": result, "error": error,
               "duration_ms": int((time.monotonic() - started) * 1000), "ip_address": ip,
               "client_actor": client_actor}
        await self.writer.run(lambda c: insert_audit(c, row))
        await self.ingestor.emit_stored(None, "cost.refreshed", {
            "results": results, "actor": actor, "missing_dates": len(health["missing_dates"]),
            "degraded_providers": health["degraded_providers"]})
        return {"results": results, "health": health}
