"""`/remediate` from chat takes the path of a firing alert (AlertsService.request): the auto engine for an
incident listed in `remediation.auto`, else (and always in check mode) an `alert.firing` event carrying the
exact halctl command. Stand-ins for the engine and the ingestor record what was asked."""

from __future__ import annotations

from typing import Any

import pytest

from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.alerts.service import AlertsService
from halswarm.supervisor.features.alerts.settings import AlertSettings


class Engine:
    def __init__(self, answer: str = "started") -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, str, str]] = []

    async def on_alert(self, incident: str, host: str, limit: str, reason: str) -> str:
        self.calls.append((incident, host, limit, reason))
        return self.answer


class Ingestor:
    def __init__(self) -> None:
        self.events: list[tuple[str | None, str, dict[str, Any]]] = []

    async def emit_stored(self, node: str | None, kind: str, data: dict[str, Any]) -> None:
        self.events.append((node, kind, data))


def service(auto: tuple[str, ...] = (), engine: Engine | None = None) -> tuple[AlertsService, Engine, Ingestor]:
    engine, ingestor = engine or Engine(), Ingestor()
    settings = AlertSettings(auto=auto, inventory="/etc/hal/inventory.ini", supervisor_host="sup-1")
    return AlertsService(settings, engine, ingestor, writer=None), engine, ingestor  # type: ignore[arg-type]


async def test_an_auto_incident_is_started_by_the_engine_under_its_throttle() -> None:
    svc, engine, ingestor = service(auto=("agent-crashed",))
    out = await svc.request("agent-crashed", "node-1", check=False, actor="discord:42")
    assert out["action"] == "started" and out["host"] == "node-1"
    assert engine.calls == [("agent-crashed", "node-1", "node-1", "requested by discord:42")]
    assert ingestor.events == []


async def test_check_mode_and_other_incidents_are_routed_with_the_command() -> None:
    svc, engine, ingestor = service(auto=("agent-crashed",))
    out = await svc.request("agent-crashed", "node-1", check=True, actor="discord:42")
    assert out["action"] == "routed" and engine.calls == []
    assert out["command"] == "halctl remediate agent-crashed -i /etc/hal/inventory.ini --limit node-1 --check"
    out = await svc.request("supervisor-crashed", None, check=False, actor="discord:42")
    assert out["action"] == "routed" and out["host"] == "sup-1"  # supervisor incidents: the supervisor host
    assert [(n, k, d["receiver"]) for n, k, d in ingestor.events] == [
        ("node-1", "alert.firing", "discord:42"), ("sup-1", "alert.firing", "discord:42")]


@pytest.mark.parametrize(("incident", "host", "message"), [
    ("no-such-incident", "node-1", "unknown incident"),
    ("agent-crashed", "node 1; rm -rf /", "is not a node id"),
    ("agent-crashed", None, "needs a host"),
])
async def test_bad_requests_are_one_line_validation_errors(incident: str, host: str | None, message: str) -> None:
    svc, engine, ingestor = service(auto=("agent-crashed",))
    with pytest.raises(ApiError, match=message) as exc:
        await svc.request(incident, host, check=False, actor="discord:42")
    assert exc.value.code == "VALIDATION_ERROR" and engine.calls == [] and ingestor.events == []
