"""`/metrics` carries a series for every runbook prevention line (issue 18, point 1), scraped from a real
supervisor over HTTP and read with prometheus_client's own exposition parser.

Agents (simulated on the wire, and one real hal-agent) report their figures in heartbeats; the supervisor
renders them per node from live state, so a node that leaves turns `up` 0 and its figures disappear, and
a hostile agent's values can neither show up nor add series.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from halswarm.memwatch import read_memory_max
from tests.fakes.fake_providers import ANTHROPIC_KEY, OPENAI_KEY, fake_providers
from tests.support.agent_proc import FakeOpencode, node_status
from tests.support.agentsim import SimAgent, raw_frame
from tests.support.waiting import until, wait_for

pytestmark = pytest.mark.timeout(120)

P = "hal_o_swarm_"
RESOURCES = {"cpu_percent": 1.0, "ram_used_mb": 1, "ram_total_mb": 2, "disk_used_gb": 1, "disk_total_gb": 2}
VITALS = {"rss_bytes": 123_456_789, "memory_max_bytes": 1 << 30, "restarts": 2, "opencode_restarts": 1}
OUTBOX = {"pending": 3, "max_events": 100, "refused_total": 4}
AGENT_SERIES = {"agent_resident_memory_bytes": ("gauge", 123_456_789), "agent_memory_max_bytes": ("gauge", 1 << 30),
                "agent_systemd_restarts": ("counter", 2), "agent_opencode_restarts": ("counter", 1)}
OUTBOX_SERIES = {"agent_outbox_pending": ("gauge", 3), "agent_outbox_max_events": ("gauge", 100),
                 "agent_outbox_refused": ("counter", 4)}


class Scrape:
    """One parsed scrape: family name -> (type, {(sample name, sorted labels): value})."""

    def __init__(self, text: str) -> None:
        self.families: dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
        for fam in text_string_to_metric_families(text):
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}
            self.families[fam.name] = (fam.type, samples)

    def type(self, family: str) -> str:
        return self.families[family][0]

    def value(self, sample: str, **labels: str) -> float | None:
        for fam in self.families.values():
            v = fam[1].get((sample, tuple(sorted(labels.items()))))
            if v is not None:
                return v
        return None

    def labelsets(self, family: str) -> set[tuple[tuple[str, str], ...]]:
        return {labels for (_, labels) in self.families.get(family, ("", {}))[1]}

    def series(self, prefix: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {key for name, (_, samples) in self.families.items() if name.startswith(prefix) for key in samples}


def scrape(sup: Any) -> Scrape:
    """Blocking: async tests call it through `until` (a worker thread) or asyncio.to_thread."""
    with sup.client() as c:
        r = c.get("/metrics")
    r.raise_for_status()
    return Scrape(r.text)


async def heartbeat(agent: SimAgent, process: Any) -> None:
    await agent.send_raw(raw_frame("heartbeat", {"resources": RESOURCES, "process": process, "outbox": OUTBOX}))


def node_vital(sup: Any, node: str, family: str = "agent_resident_memory_bytes") -> float | None:
    return scrape(sup).value(P + family, node=node)


async def test_per_node_series_from_heartbeats_and_gone_when_the_node_leaves(supervisor: Any) -> None:
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "m1")
    await agent.connect()
    try:
        await heartbeat(agent, VITALS)
        await until(lambda: (node_vital(supervisor, "m1")) == VITALS["rss_bytes"],
                    "the agent's figures on /metrics")
        s = await asyncio.to_thread(scrape, supervisor)
        for fam, typ in (("node_up", "gauge"), ("node_connected", "gauge"),
                         ("node_last_heartbeat_timestamp_seconds", "gauge")):
            assert s.type(P + fam) == typ and s.labelsets(P + fam) == {(("node", "m1"),)}
        assert s.value(P + "node_up", node="m1") == 1 and s.value(P + "node_connected", node="m1") == 1
        assert abs((s.value(P + "node_last_heartbeat_timestamp_seconds", node="m1") or 0) - time.time()) < 60
        for fam, (typ, want) in (AGENT_SERIES | OUTBOX_SERIES).items():
            assert s.type(P + fam) == typ, fam
            sample = P + fam + ("_total" if typ == "counter" else "")
            assert s.value(sample, node="m1") == want, fam
    finally:
        await agent.close()
    await until(lambda: node_status(supervisor, "m1") == "offline", "the node marked offline")
    s = await asyncio.to_thread(scrape, supervisor)  # the next scrape
    assert s.value(P + "node_up", node="m1") == 0 and s.value(P + "node_connected", node="m1") == 0
    assert s.value(P + "node_last_heartbeat_timestamp_seconds", node="m1") is not None  # when it was last seen
    for fam in AGENT_SERIES | OUTBOX_SERIES:
        assert s.labelsets(P + fam) == set(), f"{fam} still shown for a node that left"


HOSTILE: list[Any] = [
    {"rss_bytes": -5, "memory_max_bytes": 1e300, "restarts": "7", "opencode_restarts": True},
    {"rss_bytes": 10**30, "memory_max_bytes": [1], "restarts": {"node": "evil"}, "opencode_restarts": None},
    {"node": "evil", 'x"} 1\nhal_o_swarm_node_up{node="forged': 1, "le": 3, "extra": 5},
    "rss_bytes=1", [1, 2, 3], 42,
    # Not JSON (orjson refuses these literals): the whole frame is rejected with an error frame.
    {"rss_bytes": float("nan"), "memory_max_bytes": float("inf"), "restarts": float("-inf")},
]


def not_json(frame: str) -> bool:
    try:
        orjson.loads(frame)
    except orjson.JSONDecodeError:
        return True
    return False


async def test_hostile_agent_values_are_dropped_and_add_no_series(supervisor: Any) -> None:
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "m2")
    await agent.connect()
    try:
        await heartbeat(agent, VITALS)
        await until(lambda: node_vital(supervisor, "m2") == VITALS["rss_bytes"], "valid figures shown")
        first = await asyncio.to_thread(scrape, supervisor)
        before = first.series(P + "node_") | first.series(P + "agent_")
        not_json_frames = 0
        for bad in HOSTILE:
            errors = len(agent.errors)
            # json.dumps writes NaN/Infinity literals and huge ints: the wire carries exactly the hostile value.
            frame = json.dumps({"version": 1, "type": "heartbeat", "request_id": None, "timestamp": time.time(),
                                "payload": {"resources": RESOURCES, "process": bad}})
            if not_json(frame):
                not_json_frames += 1
            await agent.send_raw(frame)
            await until(lambda n=errors: node_vital(supervisor, "m2") is None or len(agent.errors) > n,
                        f"the hostile heartbeat {bad!r} dropped or rejected")
            s = await asyncio.to_thread(scrape, supervisor)
            after = s.series(P + "node_") | s.series(P + "agent_")
            assert after <= before, f"new series from {bad!r}: {sorted(after - before)}"
            for fam, (typ, want) in AGENT_SERIES.items():  # nothing of the hostile frame, at most the last valid
                value = s.value(P + fam + ("_total" if typ == "counter" else ""), node="m2")
                assert value in (None, want), (fam, bad, value)
            assert s.value(P + "node_up", node="m2") == 1
            await heartbeat(agent, VITALS)  # valid again, for the next round
            await until(lambda: node_vital(supervisor, "m2") == VITALS["rss_bytes"], "valid again")
        # Only frames that are not JSON were errors; a bad figure in valid JSON is dropped, never an error.
        assert not_json_frames >= 1
        assert [e.get("code") for e in agent.errors] == ["bad_json"] * not_json_frames
    finally:
        await agent.close()


def test_request_duration_is_per_route_template(supervisor: Any) -> None:
    with supervisor.client() as c:
        for node in ("ghost-a", "ghost-b", "ghost-c"):
            assert c.get(f"/api/v1/nodes/{node}").status_code == 404
        assert c.get("/api/v1/nodes").status_code == 200
        assert c.get("/no/such/path/x1").status_code == 404
        assert c.get("/no/such/path/x2").status_code == 404
        s = Scrape(c.get("/metrics").text)
    fam = P + "http_request_duration_seconds"
    assert s.type(fam) == "histogram"
    sets = s.labelsets(fam)
    labels = [dict(ls) for ls in sets]
    assert {"route": "/api/v1/nodes/{node_id}", "method": "GET", "status_class": "4xx"} in [
        {k: v for k, v in d.items() if k != "le"} for d in labels]
    assert {"route": "/api/v1/nodes", "method": "GET", "status_class": "2xx"} in [
        {k: v for k, v in d.items() if k != "le"} for d in labels]
    routes = {d["route"] for d in labels}
    assert "unmatched" in routes
    assert not any("ghost" in r or "/no/such" in r for r in routes), routes
    count = s.value(fam + "_count", route="/api/v1/nodes/{node_id}", method="GET", status_class="4xx")
    assert count == 3
    le5 = s.value(fam + "_bucket", route="/api/v1/nodes/{node_id}", method="GET", status_class="4xx", le="5.0")
    assert le5 == 3  # the runbook's 5 s line is a bucket bound


async def test_supervisor_process_database_and_connection_failure_series(supervisor: Any) -> None:
    s = await asyncio.to_thread(scrape, supervisor)
    assert s.type(P + "supervisor_resident_memory_bytes") == "gauge"
    assert (s.value(P + "supervisor_resident_memory_bytes") or 0) > 10 << 20
    limit = read_memory_max()  # the test runs in the supervisor's cgroup: the same limit or none
    if limit is None:
        assert P + "supervisor_memory_max_bytes" not in s.families  # absent, not a fake value
    else:
        assert s.value(P + "supervisor_memory_max_bytes") == limit
    # Started by hand, not by systemd: no restart count at all (never a made-up 0).
    assert P + "supervisor_systemd_restarts" not in s.families
    db = supervisor.db_path
    assert s.type(P + "database_size_bytes") == "gauge"
    assert (s.value(P + "database_size_bytes") or 0) >= db.stat().st_size > 0
    avail, size = s.value(P + "database_filesystem_avail_bytes"), s.value(P + "database_filesystem_size_bytes")
    assert avail is not None and size is not None and 0 < avail <= size
    fam = P + "agent_connection_failures"
    assert s.type(fam) == "counter"
    reasons = {dict(ls)["reason"] for ls in s.labelsets(fam)}
    assert {"bad_token", "no_token", "throttled", "bad_json", "register_timeout"} <= reasons
    before = s.value(fam + "_total", reason="bad_token") or 0

    bad = SimAgent(supervisor.ws_url, "x" * 40, "intruder")
    with pytest.raises(Exception, match="401"):
        await bad.connect()
    agent = SimAgent(supervisor.ws_url, supervisor.agent_token, "m3")
    await agent.connect()
    try:
        await agent.send_raw("{not json")
        await agent.next_frame("error")
        s = await asyncio.to_thread(scrape, supervisor)
        assert s.value(fam + "_total", reason="bad_token") == before + 1
        assert (s.value(fam + "_total", reason="bad_json") or 0) >= 1
        assert {dict(ls)["reason"] for ls in s.labelsets(fam)} == reasons  # a fixed set: nothing added
    finally:
        await agent.close()


def cost_config(url: str) -> dict[str, Any]:
    return {"poll_interval_minutes": 60, "degraded_retry_seconds": 1, "request_timeout_seconds": 10,
            "max_retries": 0, "backoff_base_ms": 10,
            "providers": {"anthropic": {"admin_api_key": ANTHROPIC_KEY, "base_url": url},
                          "openai": {"org_api_key": OPENAI_KEY, "base_url": url}}}


def test_cost_poll_outcomes_and_data_age_per_provider(make_supervisor: Any) -> None:
    with fake_providers() as fake:
        fake.down.add("anthropic")
        sup = make_supervisor(cost=cost_config(fake.url)).start()

        def scraped() -> Scrape | None:
            s = scrape(sup)
            done = (s.value(P + "cost_polls_total", provider="anthropic", status="failure") or 0) >= 1 and (
                s.value(P + "cost_polls_total", provider="openai", status="success") or 0) >= 1
            return s if done else None

        s = wait_for(scraped, "a failed and a successful poll counted", 60)
    assert s.type(P + "cost_polls") == "counter"
    # Both outcomes of each enabled provider exist from the start: anthropic never succeeded, yet reads 0.
    assert s.value(P + "cost_polls_total", provider="anthropic", status="success") == 0
    assert s.type(P + "cost_data_age_seconds") == "gauge"
    age = s.value(P + "cost_data_age_seconds", provider="openai")
    assert age is not None and 0 <= age < 120
    assert s.value(P + "cost_data_age_seconds", provider="anthropic") is None  # never updated: no age


def test_real_agent_reports_its_figures_through_the_supervisor(make_supervisor: Any, make_agent: Any,
                                                               tmp_path: Path) -> None:
    fake = FakeOpencode().start()
    try:
        sup = make_supervisor(server={"heartbeat_interval_sec": 1}).start()
        agent = make_agent(sup, "vit", opencode_port=fake.port).start()
        agent.wait_online(sup)

        def figures() -> Scrape | None:
            s = scrape(sup)
            return s if s.value(P + "agent_resident_memory_bytes", node="node-vit") else None

        s = wait_for(figures, "the real agent's RSS on the supervisor's /metrics", 30)
        assert (s.value(P + "agent_resident_memory_bytes", node="node-vit") or 0) > 10 << 20
        limit = read_memory_max()
        assert s.value(P + "agent_memory_max_bytes", node="node-vit") == (float(limit) if limit else None)
        # attach mode (the agent does not run opencode) and not under systemd: neither count is reported
        assert s.value(P + "agent_opencode_restarts_total", node="node-vit") is None
        assert s.value(P + "agent_systemd_restarts_total", node="node-vit") is None
        agent.stop()
        wait_for(lambda: node_status(sup, "node-vit") == "offline", "the agent gone")
        s = scrape(sup)
        assert s.value(P + "node_up", node="node-vit") == 0
        assert s.value(P + "agent_resident_memory_bytes", node="node-vit") is None
    finally:
        fake.stop()
