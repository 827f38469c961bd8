"""Every metric the shipped alert rules and Grafana dashboard query is exported by a running supervisor
(issue 18 point 3). One real supervisor with a backup directory (status files of the backup timer and
the restore test), two cost providers (one down, one answering), and an agent on the wire that
registers, heartbeats its figures and sends an event; its `/metrics` is scraped and parsed with
prometheus_client's own parser. Names are read loosely from the PromQL (the project's prefixes); the
sample names carry their `_total` / `_bucket` / `_count` / `_sum` suffixes as the queries do.

The series of a shared PostgreSQL (the LISTEN connection, the event tail, the leader's fleet count) are
absent on this SQLite supervisor; the same registration the supervisor makes on PostgreSQL renders them.

Two series exist only under systemd with a memory limit (the supervisor's MemoryMax and NRestarts);
when this supervisor has no such figure, the same collector the supervisor uses renders them from given
figures, so a renamed series still fails here. The label names (and histogram bounds) the promtool rule
tests feed in must be those the supervisor exports."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.live_metrics import LiveMetrics
from tests.fakes.fake_providers import ANTHROPIC_KEY, OPENAI_KEY, fake_providers
from tests.support.agentsim import SimAgent, raw_frame
from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import until

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "collections/ansible_collections/halswarm/ops/roles/monitoring/files"
METRIC = re.compile(r"\b(hal_o_swarm_[a-z0-9_]+|hal_backup_[a-z0-9_]+|hal_restore_test_[a-z0-9_]+)\b")
SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')
TARGET_LABELS = {"job", "instance"}  # added by Prometheus at scrape time, not by the supervisor
# Only under systemd (NRestarts) and with a cgroup memory limit (MemoryMax).
SYSTEMD_ONLY = {"hal_o_swarm_supervisor_memory_max_bytes", "hal_o_swarm_supervisor_systemd_restarts_total"}
# Only on a shared PostgreSQL (Metrics.shared_store).
PG_ONLY = {"hal_o_swarm_pg_listen_up", "hal_o_swarm_pg_listen_connects_total", "hal_o_swarm_event_tail_lag_events",
           "hal_o_swarm_event_tail_horizon_waits_total", "hal_o_swarm_fleet_nodes_held"}
VITALS = {"rss_bytes": 200_000_000, "memory_max_bytes": 1 << 30, "restarts": 1, "opencode_restarts": 1}
RESOURCES = {"cpu_percent": 1.0, "ram_used_mb": 1, "ram_total_mb": 2, "disk_used_gb": 1, "disk_total_gb": 2}
OUTBOX = {"pending": 0, "max_events": 100, "refused_total": 0}


def queried() -> dict[str, set[str]]:
    """Metric name -> where it is used (rule alert names, dashboard panel titles)."""
    used: dict[str, set[str]] = {}
    for group in yaml.safe_load((FILES / "hal-o-swarm.rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            for name in METRIC.findall(rule["expr"]):
                used.setdefault(name, set()).add(f"rule {rule['alert']}")
    for panel in json.loads((FILES / "hal-o-swarm.dashboard.json").read_text())["panels"]:
        for target in panel.get("targets", []):
            for name in METRIC.findall(target["expr"]):
                used.setdefault(name, set()).add(f"panel {panel['title']!r}")
    return used


def test_queries_are_read() -> None:
    used = queried()
    assert len(used) >= 30, sorted(used)
    assert {"hal_o_swarm_http_request_duration_seconds_bucket", "hal_o_swarm_agent_systemd_restarts_total",
            "hal_backup_size_anomaly", "hal_restore_test_success", "hal_o_swarm_node_up"} <= set(used)


def samples(text: str) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(dict(s.labels))
    return out


def write_backup_status(backups: Path) -> None:
    now = time.time()
    for name, doc in (
        ("backup-status.json", {"version": 1, "backup": "supervisor-20260101T000000Z.db", "timestamp": now,
                                "size": 4096, "size_anomaly": {"anomaly": False, "reason": None}}),
        ("restore-test.json", {"version": 1, "backup": "supervisor-20260101T000000Z.db", "timestamp": now,
                               "ok": True, "reasons": []}),
    ):
        path = backups / name
        path.write_text(json.dumps(doc))
        path.chmod(0o600)


def scrape(sup: SupervisorProc) -> dict[str, list[dict[str, str]]]:
    response = httpx.get(sup.api + "/metrics", timeout=10)
    response.raise_for_status()
    return samples(response.text)


def systemd_only_rendered(tmp_path: Path) -> set[str]:
    """The supervisor's own series as its collector renders them under systemd with a MemoryMax."""
    live = LiveMetrics({}, lambda: (), {}, tmp_path / "none.db", rss_fn=lambda: 1 << 20,
                       limit_fn=lambda: 1 << 30)
    live.restarts = 2
    registry = CollectorRegistry()
    registry.register(live)
    return set(samples(generate_latest(registry).decode()))


def pg_only_rendered() -> dict[str, list[dict[str, str]]]:
    """The series the supervisor registers on PostgreSQL only, as it exports them (as the leader)."""
    metrics = Metrics()
    metrics.shared_store(lambda: 3)
    return samples(generate_latest(metrics.registry).decode())


def test_postgresql_only_series_are_absent_on_sqlite_and_rendered_on_postgresql() -> None:
    plain = samples(generate_latest(Metrics().registry).decode())
    rendered = pg_only_rendered()
    assert not PG_ONLY & set(plain)
    assert set(rendered) >= PG_ONLY, PG_ONLY - set(rendered)
    assert "hal_o_swarm_fleet_nodes_held" not in samples(generate_latest(_follower().registry).decode())


def _follower() -> Metrics:
    metrics = Metrics()
    metrics.shared_store(lambda: None)  # not the leader: the fleet count is absent
    return metrics


async def test_every_queried_metric_is_exported(make_supervisor: Any, tmp_path: Path) -> None:
    used = queried()
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    write_backup_status(backups)
    with fake_providers() as fake:
        fake.down.add("anthropic")
        cost = {"poll_interval_minutes": 60, "degraded_retry_seconds": 1, "request_timeout_seconds": 10,
                "max_retries": 0, "backoff_base_ms": 10,
                "providers": {"anthropic": {"admin_api_key": ANTHROPIC_KEY, "base_url": fake.url},
                              "openai": {"org_api_key": OPENAI_KEY, "base_url": fake.url}}}
        sup = make_supervisor(backup={"dir": str(backups), "check_interval_sec": 1}, cost=cost)
        await asyncio.to_thread(sup.start)
        agent = SimAgent(sup.ws_url, sup.agent_token, "mon-1")
        await agent.connect()
        try:
            await agent.send_raw(raw_frame("heartbeat", {"resources": RESOURCES, "process": VITALS,
                                                         "outbox": OUTBOX}))
            await agent.send_event(1)
            await agent.wait_acked(1)
            with sup.client() as client:
                assert (await asyncio.to_thread(client.get, "/api/v1/nodes")).status_code == 200
            wanted = set(used) - SYSTEMD_ONLY - PG_ONLY

            def all_there() -> dict[str, list[dict[str, str]]] | None:
                got = scrape(sup)
                return got if wanted <= set(got) else None

            try:
                got = await until(all_there, "every queried series on /metrics", 60, interval=0.5)
            except AssertionError:
                got = await asyncio.to_thread(scrape, sup)
            missing = {name: sorted(used[name]) for name in sorted(wanted - set(got))}
            assert not missing, f"queried but not exported: {missing}"
            absent_here = SYSTEMD_ONLY & (set(used) - set(got))
            rendered = systemd_only_rendered(tmp_path)
            assert absent_here <= rendered, f"not rendered by the supervisor's collector: {absent_here - rendered}"
            pg_rendered = pg_only_rendered()
            pg_absent = PG_ONLY & (set(used) - set(got))
            assert pg_absent <= set(pg_rendered), f"not registered on PostgreSQL: {pg_absent - set(pg_rendered)}"
            got = pg_rendered | got  # the label checks below read either

            # The promtool rule tests feed series with the labels (and bucket bounds) exported here.
            cases = yaml.safe_load((FILES / "hal-o-swarm.rules.test.yml").read_text())["tests"]
            for case in cases:
                for item in case["input_series"]:
                    m = SERIES.match(item["series"])
                    assert m, item["series"]
                    name, labels = m.group(1), dict(LABEL.findall(m.group(2)))
                    if name not in got:
                        assert name in SYSTEMD_ONLY, f"{name}: not exported"
                        continue
                    keys = set(labels) - TARGET_LABELS
                    exported = [s for s in got[name] if set(s) == keys]
                    assert exported, f"{item['series']}: exported with labels {sorted(set(got[name][0]))}"
                    if "le" in labels:
                        assert labels["le"] in {s["le"] for s in exported}, f"{item['series']}: no such bucket"
        finally:
            await agent.close()
