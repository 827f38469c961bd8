"""Pure planners: facts (plain dicts gathered read-only by the diagnose phase) -> plan.

Each planner answers "is the symptom really there?" and, when it is, the ordered actions of the
runbook's resolution, done safely (archive instead of delete, keep replaced files, merge instead of
overwrite, never a restart when the fix applies live). No I/O here: the playbooks mirror these rules in
their decide phase, and the tests feed fixture facts.

Common fact shapes (missing keys mean "unknown"):

- service: ``{"load_state": "loaded"|"not-found", "active_state": "active"|"inactive"|"failed"|
  "activating", "sub_state": ..., "n_restarts": int, "memory_current": bytes, "memory_max": bytes|None}``
- ``config_valid``: bool (the daemon's own ``--validate``); ``config_backup``: path of the newest backup
  that validates, or None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from halswarm.ops.remediation.catalog import get

GiB = 1024 ** 3
PRESENT, NOT_PRESENT, MANUAL, ESCALATE, UNKNOWN = "present", "not_present", "manual", "escalate", "unknown"
RESTART_LOOP = 3          # runbook: alert on > 3 restarts in 5 minutes
MEMORY_RATIO = 0.8        # runbook: alert on memory > 80% of limit
ARCHIVE_DAYS = 30
LATENCY_MS = 5000         # runbook: alert on response time > 5 s
VERIFY_TIMEOUT = 60

Facts = Mapping[str, Any]


@dataclass
class Action:
    name: str
    description: str
    target: str = "localhost"          # supervisor|agent|<host>
    params: dict[str, Any] = field(default_factory=dict)
    when: str | None = None            # e.g. "recover_db failed"


@dataclass
class Plan:
    incident: str
    decision: str                      # present|not_present|manual|escalate|unknown
    reasons: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    verify: list[str] = field(default_factory=list)
    guidance: list[str] = field(default_factory=list)

    @property
    def present(self) -> bool:
        return self.decision in (PRESENT, MANUAL, ESCALATE)

    def to_dict(self) -> dict[str, Any]:
        return {"incident": self.incident, "decision": self.decision, "present": self.present,
                "reasons": list(self.reasons), "actions": [asdict(a) for a in self.actions],
                "verify": list(self.verify), "guidance": list(self.guidance)}


def _svc(facts: Facts, key: str) -> Mapping[str, Any]:
    s = facts.get(key)
    return s if isinstance(s, Mapping) else {}


def _installed(s: Mapping[str, Any]) -> bool:
    return s.get("load_state", "loaded") not in ("not-found", "masked")


def _running(s: Mapping[str, Any]) -> bool:
    return s.get("active_state") in ("active", "reloading") or (
        s.get("active_state") == "activating" and s.get("sub_state") != "auto-restart")


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


# ----- crashed services (supervisor-crashed, agent-crashed) -----

def _crashed(incident: str, facts: Facts, unit: str, role: str, verify: list[str]) -> Plan:
    s = _svc(facts, role)
    name = f"{unit}.service"
    if not s:
        return Plan(incident, UNKNOWN, [f"no facts about {name}"])
    if not _installed(s):
        return Plan(incident, NOT_PRESENT, [f"{name} is not installed on this host"])
    restarts = _int(s.get("n_restarts"))
    looping = restarts > RESTART_LOOP
    if _running(s) and not looping:
        return Plan(incident, NOT_PRESENT, [f"{name} is {s.get('active_state')} (NRestarts={restarts})"])
    reasons = [f"{name} is {s.get('active_state')}/{s.get('sub_state', '?')} (NRestarts={restarts})"]
    if looping:
        reasons.append(f"crash loop: NRestarts={restarts} > {RESTART_LOOP}")
    actions: list[Action] = []
    valid = facts.get("config_valid")
    if valid is False:
        backup = facts.get("config_backup")
        if not backup:
            return Plan(incident, ESCALATE, [*reasons, "config does not validate and no valid config backup exists"],
                        verify=verify)
        reasons.append("config does not validate; newest valid backup found")
        actions.append(Action("restore_config", f"restore {unit} config from the newest valid backup "
                              "(the replaced file is kept)", role, {"backup": backup}))
    actions.append(Action("restart_service", f"systemctl restart {name}", role, {"unit": name}))
    return Plan(incident, PRESENT, reasons, actions, verify)


def plan_supervisor_crashed(facts: Facts) -> Plan:
    return _crashed("supervisor-crashed", facts, "hal-supervisor", "supervisor",
                    ["hal-supervisor.service active", f"/readyz answers 200 within {VERIFY_TIMEOUT}s"])


def plan_agent_crashed(facts: Facts) -> Plan:
    return _crashed("agent-crashed", facts, "hal-agent", "agent",
                    ["hal-agent.service active", f"node online in the supervisor within {VERIFY_TIMEOUT}s"])


# ----- high memory -----

def _memory(incident: str, facts: Facts, unit: str, role: str, default_threshold: int) -> tuple[Plan, int, int | None]:
    s = _svc(facts, role)
    name = f"{unit}.service"
    if not s or s.get("memory_current") is None:
        return Plan(incident, UNKNOWN, [f"no memory facts for {name}"]), 0, None
    if not _installed(s) or not _running(s):
        return Plan(incident, NOT_PRESENT, [f"{name} is not running"]), 0, None
    cur = _int(s.get("memory_current"))
    limit = s.get("memory_max")
    limit = _int(limit) if limit not in (None, "", "infinity") else None
    threshold = int(limit * MEMORY_RATIO) if limit else default_threshold
    what = f"{int(MEMORY_RATIO * 100)}% of MemoryMax={limit}" if limit else f"{default_threshold} bytes"
    if cur < threshold:
        return Plan(incident, NOT_PRESENT, [f"{name} uses {cur} bytes, below {what}"]), cur, limit
    return Plan(incident, PRESENT, [f"{name} uses {cur} bytes, at or above {what}"]), cur, limit


def _new_limit(cur: int, limit: int | None, default_threshold: int, cap: Any) -> int:
    base = limit or default_threshold
    new = max(base * 2, int(cur / MEMORY_RATIO) + 1)
    cap_i = _int(cap, 0)
    return min(new, cap_i) if cap_i > 0 else new


def plan_supervisor_high_memory(facts: Facts) -> Plan:
    plan, cur, limit = _memory("supervisor-high-memory", facts, "hal-supervisor", "supervisor", 2 * GiB)
    if plan.decision != PRESENT:
        return plan
    new = _new_limit(cur, limit, 2 * GiB, facts.get("memory_cap"))
    if _int(facts.get("old_events")) > 0:
        plan.actions.append(Action("archive_events", f"archive events older than {ARCHIVE_DAYS} days to a "
                                   "side database (not a blind DELETE)", "supervisor",
                                   {"older_than_days": ARCHIVE_DAYS}))
    plan.actions += [
        Action("set_memory_max", f"drop-in MemoryMax={new}", "supervisor", {"unit": "hal-supervisor.service",
                                                                            "memory_max": new}),
        Action("daemon_reload", "systemctl daemon-reload", "supervisor"),
        Action("restart_service", "systemctl restart hal-supervisor.service", "supervisor",
               {"unit": "hal-supervisor.service"}),
    ]
    plan.verify = ["hal-supervisor.service active", f"memory below {int(MEMORY_RATIO * 100)}% of MemoryMax={new}",
                   f"/readyz answers 200 within {VERIFY_TIMEOUT}s"]
    return plan


def plan_agent_high_memory(facts: Facts) -> Plan:
    plan, cur, limit = _memory("agent-high-memory", facts, "hal-agent", "agent", 4 * GiB)
    if plan.decision != PRESENT:
        return plan
    new = _new_limit(cur, limit, 4 * GiB, facts.get("memory_cap"))
    idle = [str(x) for x in facts.get("idle_sessions") or []]
    if idle:
        plan.actions.append(Action("kill_idle_sessions", f"kill {len(idle)} idle session(s)", "supervisor",
                                   {"session_ids": idle}))
    # MemoryMax applies live to the running cgroup after daemon-reload: no restart, running sessions survive.
    plan.actions += [
        Action("set_memory_max", f"drop-in MemoryMax={new} (applied live)", "agent",
               {"unit": "hal-agent.service", "memory_max": new}),
        Action("daemon_reload", "systemctl daemon-reload", "agent"),
    ]
    plan.verify = ["hal-agent.service active", f"memory below {int(MEMORY_RATIO * 100)}% of MemoryMax={new}"]
    return plan


# ----- database -----

def plan_supervisor_db_corruption(facts: Facts) -> Plan:
    inc = "supervisor-db-corruption"
    db = facts.get("db") if isinstance(facts.get("db"), Mapping) else {}
    if not db:
        return Plan(inc, UNKNOWN, ["no database facts"])
    if not db.get("exists", True):
        return Plan(inc, NOT_PRESENT, ["no supervisor database on this host"])
    integrity = str(db.get("integrity", "")).strip()
    if integrity.lower() == "ok":
        return Plan(inc, NOT_PRESENT, ["PRAGMA integrity_check: ok"])
    reasons = [f"PRAGMA integrity_check: {integrity or 'failed'}"]
    backup = facts.get("db_backup")
    actions = [
        Action("stop_service", "systemctl stop hal-supervisor.service", "supervisor",
               {"unit": "hal-supervisor.service"}),
        Action("keep_corrupt_copy", "keep the corrupt file as supervisor.db.corrupt.<ts> (with -wal/-shm)",
               "supervisor"),
        Action("recover_db", "recover with .recover semantics (halswarm.ops.hal_sqlite_recover) and "
               "integrity_check the result", "supervisor"),
    ]
    if backup:
        actions.append(Action("restore_db", "restore the newest valid backup (halswarm.ops.hal_sqlite_restore)",
                              "supervisor", {"backup": backup}, when="recover_db failed"))
    else:
        reasons.append("no valid backup: a failed recovery escalates")
    actions.append(Action("start_service", "systemctl start hal-supervisor.service", "supervisor",
                          {"unit": "hal-supervisor.service"}))
    return Plan(inc, PRESENT, reasons, actions,
                ["PRAGMA integrity_check = ok", f"/readyz answers 200 within {VERIFY_TIMEOUT}s"])


def plan_lost_session_data(facts: Facts) -> Plan:
    inc = "lost-session-data"
    live = facts.get("live_counts") if isinstance(facts.get("live_counts"), Mapping) else None
    backup = facts.get("backup_counts") if isinstance(facts.get("backup_counts"), Mapping) else None
    if live is None:
        return Plan(inc, UNKNOWN, ["no row counts of the live database"])
    if not backup:
        return Plan(inc, NOT_PRESENT, ["no valid backup to compare with: no evidence of lost rows"])
    missing = {t: _int(backup.get(t)) - _int(live.get(t)) for t in ("sessions", "events")
               if _int(backup.get(t)) > _int(live.get(t))}
    missing_ids = _int(facts.get("missing_rows"), -1)   # rows of the backup absent from live (by key)
    if missing_ids == 0 or (missing_ids < 0 and not missing):
        return Plan(inc, NOT_PRESENT, ["every row of the newest valid backup is present in the live database"])
    reasons = [f"{t}: {n} fewer rows than the backup" for t, n in missing.items()]
    if missing_ids > 0:
        reasons.append(f"{missing_ids} rows of the backup are missing from the live database")
    actions = [
        Action("stop_service", "systemctl stop hal-supervisor.service", "supervisor",
               {"unit": "hal-supervisor.service"}),
        Action("snapshot_db", "online backup of the current database (kept)", "supervisor"),
        Action("merge_from_backup", "copy the rows missing from the live DB back from the backup "
               "(INSERT OR IGNORE by key; newer rows are kept)", "supervisor",
               {"backup": facts.get("db_backup"), "tables": ["sessions", "events"]}),
        Action("start_service", "systemctl start hal-supervisor.service", "supervisor",
               {"unit": "hal-supervisor.service"}),
    ]
    return Plan(inc, PRESENT, reasons, actions,
                ["no row of the backup missing from the live DB", f"/readyz answers 200 within {VERIFY_TIMEOUT}s"])


# ----- connectivity -----

def plan_agent_cannot_connect(facts: Facts) -> Plan:
    inc = "agent-cannot-connect"
    agent = _svc(facts, "agent")
    if not agent:
        return Plan(inc, UNKNOWN, ["no facts about hal-agent.service"])
    if not _installed(agent) or not _running(agent):
        return Plan(inc, NOT_PRESENT, ["hal-agent.service is not running: that is agent-crashed"])
    if facts.get("node_online") is True:
        return Plan(inc, NOT_PRESENT, ["the node is online in the supervisor"])
    if facts.get("node_online") is None:
        return Plan(inc, UNKNOWN, ["node status in the supervisor unknown"])
    reasons = ["hal-agent.service runs but its node is offline"]
    actions: list[Action] = []
    sup = _svc(facts, "supervisor")
    if sup and not _running(sup):
        reasons.append("supervisor is not running")
        actions.append(Action("restart_service", "systemctl restart hal-supervisor.service", "supervisor",
                              {"unit": "hal-supervisor.service"}))
    if facts.get("token_match") is False:
        reasons.append("agent auth token differs from the supervisor's")
        actions.append(Action("sync_token", "write the supervisor's agent token into agent.config.json "
                              "(validated, backup kept, no_log)", "agent"))
    if facts.get("port_reachable") is False and facts.get("firewall_blocks") is True:
        reasons.append("a firewall rule blocks 8420")
        actions.append(Action("allow_port", "allow tcp/8420 from the agent (halswarm.ops firewall role)",
                              "supervisor", {"port": 8420}))
    actions.append(Action("restart_service", "systemctl restart hal-agent.service", "agent",
                          {"unit": "hal-agent.service"}))
    return Plan(inc, PRESENT, reasons, actions, [f"node online in the supervisor within {VERIFY_TIMEOUT}s"])


def plan_supervisor_unreachable(facts: Facts) -> Plan:
    inc = "supervisor-unreachable"
    sup = _svc(facts, "supervisor")
    offline = [str(x) for x in facts.get("offline_agents") or []]
    total = _int(facts.get("total_agents"), len(offline))
    if not sup:
        return Plan(inc, UNKNOWN, ["no facts about hal-supervisor.service"])
    if not _running(sup):
        return Plan(inc, NOT_PRESENT, ["hal-supervisor.service is not running: that is supervisor-crashed"])
    unreachable = facts.get("port_reachable") is False
    if not offline and not unreachable:
        return Plan(inc, NOT_PRESENT, ["agents reach the supervisor and are online"])
    if total and len(offline) < total and not unreachable:
        return Plan(inc, NOT_PRESENT, [f"only {len(offline)} of {total} agents offline and 8420 reachable: "
                                       "see agent-cannot-connect"])
    reasons = [f"{len(offline)} of {total} agents offline"] if offline else []
    actions: list[Action] = []
    if facts.get("listening") is False:
        reasons.append("supervisor is not listening on 8420")
        actions.append(Action("restart_service", "systemctl restart hal-supervisor.service", "supervisor",
                              {"unit": "hal-supervisor.service"}))
    if facts.get("firewall_blocks") is True:
        reasons.append("a firewall rule blocks 8420")
        actions.append(Action("allow_port", "allow tcp/8420 from the agents (halswarm.ops firewall role)",
                              "supervisor", {"port": 8420}))
    if unreachable:
        reasons.append("8420 not reachable from the agents")
    if offline:
        actions.append(Action("restart_agents", "systemctl restart hal-agent.service on the offline agents",
                              "agents", {"hosts": offline}))
    return Plan(inc, PRESENT, reasons, actions,
                ["8420 reachable from the agents", f"every agent online within {VERIFY_TIMEOUT}s"])


def plan_high_latency(facts: Facts) -> Plan:
    inc = "high-latency"
    threshold = _int(facts.get("threshold_ms"), LATENCY_MS)
    api_ms, query_ms = facts.get("api_latency_ms"), facts.get("query_ms")
    if api_ms is None and query_ms is None:
        return Plan(inc, UNKNOWN, ["no latency measurements"])
    slow = {k: v for k, v in (("api", api_ms), ("query", query_ms)) if v is not None and float(v) > threshold}
    if not slow:
        return Plan(inc, NOT_PRESENT, [f"api {api_ms} ms / query {query_ms} ms within {threshold} ms"])
    reasons = [f"{k} latency {v} ms > {threshold} ms" for k, v in slow.items()]
    actions = [Action("stop_service", "systemctl stop hal-supervisor.service", "supervisor",
                      {"unit": "hal-supervisor.service"})]
    if _int(facts.get("old_events")) > 0:
        actions.append(Action("archive_events", f"archive events older than {ARCHIVE_DAYS} days (not a blind "
                              "DELETE)", "supervisor", {"older_than_days": ARCHIVE_DAYS}))
    actions += [
        Action("optimize_db", "VACUUM; ANALYZE (after an online backup)", "supervisor"),
        Action("start_service", "systemctl start hal-supervisor.service", "supervisor",
               {"unit": "hal-supervisor.service"}),
    ]
    return Plan(inc, PRESENT, reasons, actions, [f"api and query latency below {threshold} ms"])


# ----- cost, auth -----

def plan_cost_data_discrepancy(facts: Facts) -> Plan:
    inc = "cost-data-discrepancy"
    providers = facts.get("providers_configured")
    if providers is None:
        return Plan(inc, UNKNOWN, ["cost configuration unknown"])
    if not providers:
        return Plan(inc, NOT_PRESENT, ["no cost provider configured (report is zeros by design)"])
    interval = _int(facts.get("poll_interval_s"), 3600)
    age = facts.get("last_update_age_s")
    stale = age is None or float(age) > 2 * interval
    missing = [str(d) for d in facts.get("missing_dates") or []]
    degraded = [str(p) for p in facts.get("degraded_providers") or []]
    if not stale and not missing and not degraded:
        return Plan(inc, NOT_PRESENT, [f"cost data fresh ({age}s old, interval {interval}s), no gaps"])
    reasons = []
    if stale:
        reasons.append(f"cost data stale: last update {age}s ago (> 2 x {interval}s)")
    if missing:
        reasons.append(f"missing dates: {', '.join(missing)}")
    if degraded:
        reasons.append(f"degraded providers: {', '.join(degraded)}")
    guidance = [f"verify the API key of provider {p} in supervisor.config.json" for p in degraded]
    actions = [Action("force_repoll", "force a cost re-poll of every provider", "supervisor")]
    if missing:
        actions.append(Action("backfill", "back-fill the missing dates from the providers", "supervisor",
                              {"dates": missing}))
    if facts.get("aggregator_running") is False:
        actions.insert(0, Action("restart_service", "systemctl restart hal-supervisor.service (cost "
                                 "aggregator not running)", "supervisor", {"unit": "hal-supervisor.service"}))
    return Plan(inc, PRESENT, reasons, actions,
                [f"last cost update younger than {interval}s", "no missing dates", "no degraded provider"],
                guidance)


MANUAL_STEPS: dict[str, tuple[str, str]] = {
    "claude_code": ("claude auth login", "claude auth status"),
    "opencode": ("opencode auth login", "opencode auth list"),
    "codex": ("codex login --device-auth", "codex login status"),
}
UNAUTH = {"unauthenticated", "manual_required", "expired", "error", "not_authenticated"}


def plan_manual_auth_required(facts: Facts) -> Plan:
    inc = "manual-auth-required"
    states = facts.get("auth_states")
    if not isinstance(states, Mapping):
        return Plan(inc, UNKNOWN, ["no auth state reported by the node"])
    node = str(facts.get("node_id") or "<agent-node>")
    bad = sorted(t for t, st in states.items()
                 if str((st or {}).get("status") if isinstance(st, Mapping) else st) in UNAUTH)
    if not bad:
        return Plan(inc, NOT_PRESENT, ["every tool is authenticated"])
    guidance: list[str] = []
    for tool in bad:
        login, status = MANUAL_STEPS.get(tool, (f"{tool} login", f"{tool} status"))
        guidance += [f"[{tool}] SSH into the agent server: ssh user@{node}",
                     f"[{tool}] Run the login command: {login}",
                     f"[{tool}] Follow the browser-based / device code flow",
                     f"[{tool}] Verify auth status: {status}",
                     f"[{tool}] Check: halctl auth status {node}"]
    return Plan(inc, MANUAL, [f"{t}: {states[t]}" for t in bad], [],
                [f"halctl auth status {node} shows every tool authenticated"], guidance)


def plan_credential_drift(facts: Facts) -> Plan:
    inc = "credential-drift"
    sync = facts.get("credential_sync")
    if sync is None:
        return Plan(inc, UNKNOWN, ["credential sync state unknown"])
    if sync != "drift_detected":
        return Plan(inc, NOT_PRESENT, [f"credential_sync = {sync}"])
    node = str(facts.get("node_id") or "")
    reasons = [f"node {node}: credential_version {facts.get('node_version')} != supervisor's "
               f"{facts.get('expected_version')}"]
    guidance = ["Expected after a manual login: informational only, manual auth stays valid."]
    if facts.get("credentials_configured"):
        return Plan(inc, PRESENT, reasons,
                    [Action("push_credentials", "POST /api/v1/commands/credentials/push (configured credentials)",
                            "supervisor", {"target_node": node})],
                    [f"credential_sync = in_sync within {VERIFY_TIMEOUT}s"], guidance)
    return Plan(inc, MANUAL, reasons, [], [], [
        *guidance, "No credentials configured in the supervisor to push: ignore the drift, or configure "
        "`credentials` and run `halctl auth push`."])


def plan_collect_diagnostics(facts: Facts) -> Plan:
    inc = "collect-diagnostics"
    out = facts.get("output") or "/tmp/hal-diagnostics.tar.gz"
    return Plan(inc, PRESENT, ["escalation: document the incident"], [
        Action("collect", "journals of both services (-n 1000), uname/df/free, configs with secrets redacted, "
               "DB integrity_check, recent events, the failed report", "all",
               {"failed_report": facts.get("failed_report")}),
        Action("bundle", f"write one tarball {out}", "localhost", {"output": out}),
    ], ["tarball exists and contains no secret values"])


PLANNERS: dict[str, Callable[[Facts], Plan]] = {
    "supervisor-crashed": plan_supervisor_crashed,
    "supervisor-high-memory": plan_supervisor_high_memory,
    "supervisor-db-corruption": plan_supervisor_db_corruption,
    "agent-cannot-connect": plan_agent_cannot_connect,
    "agent-high-memory": plan_agent_high_memory,
    "agent-crashed": plan_agent_crashed,
    "supervisor-unreachable": plan_supervisor_unreachable,
    "high-latency": plan_high_latency,
    "lost-session-data": plan_lost_session_data,
    "cost-data-discrepancy": plan_cost_data_discrepancy,
    "manual-auth-required": plan_manual_auth_required,
    "credential-drift": plan_credential_drift,
    "collect-diagnostics": plan_collect_diagnostics,
}


def plan(incident_id: str, facts: Facts) -> Plan:
    return PLANNERS[get(incident_id).id](facts)
