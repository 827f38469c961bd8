"""`/remediate` from chat takes the path of a firing alert (AlertsService.request): the auto engine for an
incident listed in `remediation.auto` (a check run at once and awaited), else an `alert.firing` event
carrying the exact halctl command. Stand-ins for the engine and the ingestor record what was asked."""

from __future__ import annotations

from typing import Any

import pytest

from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.alerts.service import AlertsService
from halswarm.supervisor.features.alerts.settings import AlertSettings


class Engine:
    def __init__(self, answer: str = "started", checked: str = "checked") -> None:
        self.answer, self.checked = answer, checked
        self.calls: list[tuple[str, str, str, str]] = []
        self.checks: list[tuple[str, str, str, str]] = []

    async def check_run(self, incident: str, host: str, limit: str, actor: str) -> dict[str, Any]:
        self.checks.append((incident, host, limit, actor))
        if self.checked != "checked":
            return {"action": self.checked}
        return {"action": "checked", "status": "check", "report_id": "rem_1", "error": None}

    async def on_alert(self, incident: str, host: str, limit: str, reason: str) -> str:
        self.calls.append((incident, host, limit, reason))
        return self.answer


class Ingestor:
    def __init__(self) -> None:
        self.events: list[tuple[str | None, str, dict[str, Any]]] = []

    async def emit_stored(self, node: str | None, kind: str, data: dict[str, Any]) -> None:
        self.events.append((node, kind, data))


def service(auto: tuple[str, ...] = (), engine: Engine | None = None,
            chat_check: tuple[str, ...] = ()) -> tuple[AlertsService, Engine, Ingestor]:
    engine, ingestor = engine or Engine(), Ingestor()
    settings = AlertSettings(auto=auto, chat_check=chat_check, inventory="/etc/hal/inventory.ini",
                             supervisor_host="sup-1")
    return AlertsService(settings, engine, ingestor, writer=None), engine, ingestor  # type: ignore[arg-type]


async def test_an_auto_incident_is_started_by_the_engine_under_its_throttle() -> None:
    svc, engine, ingestor = service(auto=("agent-crashed",))
    out = await svc.request("agent-crashed", "node-1", check=False, actor="discord:42")
    assert out["action"] == "started" and out["host"] == "node-1"
    assert engine.calls == [("agent-crashed", "node-1", "node-1", "requested by discord:42")]
    assert ingestor.events == []


async def test_a_check_of_an_auto_incident_is_run_and_answers_its_report() -> None:
    svc, engine, ingestor = service(auto=("agent-crashed",))
    out = await svc.request("agent-crashed", "node-1", check=True, actor="slack:U1")
    assert (out["action"], out["status"], out["report_id"]) == ("checked", "check", "rem_1")
    assert out["command"] == "halctl remediate agent-crashed -i /etc/hal/inventory.ini --limit node-1 --check"
    assert engine.checks == [("agent-crashed", "node-1", "node-1", "slack:U1")]
    assert engine.calls == [] and ingestor.events == []  # neither the throttled run nor a routed alert
    busy, _e, _i = service(auto=("agent-crashed",), engine=Engine(checked="busy"))
    assert (await busy.request("agent-crashed", "node-1", check=True, actor="slack:U1"))["action"] == "busy"


async def test_remediation_chat_check_allows_the_check_only_never_the_run() -> None:
    svc, engine, ingestor = service(chat_check=("agent-crashed",))
    out = await svc.request("agent-crashed", "node-1", check=True, actor="discord:42")
    assert out["action"] == "checked" and engine.checks == [("agent-crashed", "node-1", "node-1", "discord:42")]
    out = await svc.request("agent-crashed", "node-1", check=False, actor="discord:42")
    assert out["action"] == "routed" and engine.calls == []  # a repair needs remediation.auto
    assert [k for _n, k, _d in ingestor.events] == ["alert.firing"]


async def test_check_mode_of_other_incidents_and_other_incidents_are_routed_with_the_command() -> None:
    svc, engine, ingestor = service(auto=("agent-high-memory",))
    out = await svc.request("agent-crashed", "node-1", check=True, actor="discord:42")
    assert out["action"] == "routed" and engine.calls == [] and engine.checks == []
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
