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

from halswarm.core.remediation.catalog import get

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
    errors = [str(e) for e in facts.get("journal_errors") or [] if str(e).strip()]
    if errors:
        reasons.append(f"{len(errors)} recent journal error(s), last: {errors[-1][:300]}")
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
    elif valid is None:
        reasons.append("config validity unknown (the daemon's --validate could not run)")
    actions.append(Action("restart_service", f"systemctl reset-failed {name}; systemctl restart {name}", role,
                          {"unit": name}))
    return Plan(incident, PRESENT, reasons, actions, verify)


def _storage(facts: Facts) -> Mapping[str, Any]:
    """``storage``: ``{"engine": "sqlite"|"postgresql", "url": URL without password, "reachable": bool|None,
    "error": str, "password_file": path}``; missing means SQLite."""
    st = facts.get("storage")
    return st if isinstance(st, Mapping) else {}


def _on_pg(facts: Facts) -> bool:
    return str(_storage(facts).get("engine", "sqlite")).lower() == "postgresql"


def _shell_quote(value: Any) -> str:
    text = str(value)
    return "'" + text.replace("'", "'\\''") + "'"


def _pg_commands(facts: Facts) -> list[str]:
    """The exact commands of PostgreSQL's own tooling for the supervisors' store; the password only ever
    through a passfile (PGPASSFILE), never on a command line."""
    st = _storage(facts)
    url = _shell_quote(st.get("url") or "postgresql://USER@HOST:5432/DB")
    passfile = f"PGPASSFILE={_shell_quote(st['pgpass'])} " if st.get("pgpass") else ""
    backup = facts.get("pg_backup")
    restore = ("ansible-playbook -i INVENTORY halswarm.ops.restore -e hal_restore_backup="
               + (_shell_quote(str(backup).rsplit("/", 1)[-1]) if backup else "latest"))
    return [
        f"pg_isready -d {url}",
        f"{passfile}psql -X -w -d {url} -c 'SELECT 1'",
        "on the database host, as the postgres OS user: pg_amcheck --install-missing --heapallindexed DB "
        "(checks every table and index of the store)",
        "on the database host: journalctl -u postgresql --since -1h; the server log in /var/log/postgresql/",
        "restore the newest pg_dump backup into a new empty database, then point hal_supervisor_storage_url at it "
        "and deploy: sudo -u postgres createdb -O ROLE DB_restored; "
        f"{restore} -e hal_restore_pg_url=postgresql://ROLE@HOST:5432/DB_restored",
        f"or in place (stops every supervisor, replaces what the backup holds): {restore} -e hal_restore_force=true",
    ]


def plan_supervisor_crashed(facts: Facts) -> Plan:
    """One supervisor's unit (facts of this host). With several supervisors (``peers``: the other
    supervisors' unit states, ``[{"host", "active_state"}]``) only the dead one is restarted: the plan's
    actions always target this host, and a healthy host's plan is not_present, so the others carry on. On a
    shared PostgreSQL store that does not answer (``storage.reachable`` false) every supervisor fails alike:
    restarting them does not help, the plan escalates to the database with PostgreSQL's own commands."""
    verify = ["hal-supervisor.service active", f"/readyz answers 200 within {VERIFY_TIMEOUT}s"]
    plan = _crashed("supervisor-crashed", facts, "hal-supervisor", "supervisor", verify)
    peers = [p for p in facts.get("peers") or [] if isinstance(p, Mapping)]
    host = str(facts.get("host") or "this host")
    if not plan.present:
        return plan
    alive = sorted(str(p.get("host")) for p in peers if _running(p))
    dead = sorted(str(p.get("host")) for p in peers if p.get("active_state") in ("failed", "inactive"))
    st = _storage(facts)
    if _on_pg(facts) and st.get("reachable") is False:
        reasons = [*plan.reasons, f"the shared PostgreSQL store {st.get('url', '?')} does not answer: "
                   f"{str(st.get('error') or 'no connection')[:300]}; a restart would fail the same way"]
        if dead:
            reasons.append(f"the other supervisors are down too: {', '.join(dead)}")
        return Plan(plan.incident, ESCALATE, reasons, [], verify, _pg_commands(facts))
    if facts.get("host") or peers:  # HA: say which supervisor each action is for
        for action in plan.actions:
            action.params = {**action.params, "host": host}
    if peers:
        if alive:
            plan.reasons.append(f"{len(alive)} other supervisor(s) running ({', '.join(alive)}): agents fail over "
                                f"to them; only {host} is restarted, the others are not touched")
        else:
            plan.reasons.append(f"no other supervisor is running ({', '.join(dead) or 'none known'}): "
                                "the fleet has no control plane until this restart")
        plan.guidance.append(f"journalctl -u hal-supervisor.service -n 200 --no-pager (on {host})")
    return plan


def plan_agent_crashed(facts: Facts) -> Plan:
    return _crashed("agent-crashed", facts, "hal-agent", "agent",
                    ["hal-agent.service active", f"node online in the supervisor within {VERIFY_TIMEOUT}s"])


# ----- high memory -----

def _memory(incident: str, facts: Facts, unit: str, role: str, default_threshold: int) -> tuple[Plan, int, int | None]:
    s = _svc(facts, role)
    name = f"{unit}.service"
    if s and (not _installed(s) or not _running(s)):
        return Plan(incident, NOT_PRESENT, [f"{name} is not running (see the *-crashed remediation)"]), 0, None
    if not s or s.get("memory_current") is None:
        return Plan(incident, UNKNOWN, [f"no memory facts for {name}"]), 0, None
    cur = _int(s.get("memory_current"))
    limit = s.get("memory_max")
    limit = _int(limit) if limit not in (None, "", "infinity") else None
    threshold = int(limit * MEMORY_RATIO) if limit else default_threshold
    what = f"{int(MEMORY_RATIO * 100)}% of MemoryMax={limit}" if limit else f"{default_threshold} bytes"
    configured = _int(facts.get("memory_threshold"), 0)    # operator/drill override, in bytes
    if configured > 0:
        threshold, what = configured, f"the configured threshold of {configured} bytes"
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


IDLE = "idle"


def idle_sessions(facts: Facts) -> tuple[list[str], list[str]]:
    """(idle session ids to kill, live ids spared) from the node's ``sessions`` fact (``[{"id", "status"}]``,
    the supervisor's view). Only ``idle`` sessions are killed: ``waiting_input`` ones wait for a person and
    ``running`` ones are busy; finished ones (completed/killed) need nothing. A bare ``idle_sessions`` list
    of ids is taken as already chosen."""
    idle = [str(x) for x in facts.get("idle_sessions") or []]
    spared: list[str] = []
    for s in facts.get("sessions") or []:
        if not isinstance(s, Mapping) or not s.get("id"):
            continue
        sid, status = str(s["id"]), s.get("status")
        if status == IDLE:
            if sid not in idle:
                idle.append(sid)
        elif status not in ("completed", "killed"):
            spared.append(sid)
    return idle, spared


def plan_agent_high_memory(facts: Facts) -> Plan:
    plan, cur, limit = _memory("agent-high-memory", facts, "hal-agent", "agent", 4 * GiB)
    if plan.decision != PRESENT:
        return plan
    new = _new_limit(cur, limit, 4 * GiB, facts.get("memory_cap"))
    idle, spared = idle_sessions(facts)
    if spared:
        plan.reasons.append(f"{len(spared)} session(s) not idle (waiting, running, ...) spared: {', '.join(spared)}")
    if idle:
        # The runbook's short-term step, done before the limit is raised: idle sessions only.
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

def _pg_db_corruption(facts: Facts) -> Plan:
    """supervisor-db-corruption on a PostgreSQL store: no SQLite file surgery, ever. The database is the
    server's; the plan names what PostgreSQL's own tools check and the pg_dump backups to restore from,
    as a manual decision (the operator chooses a fresh database or a forced restore in place)."""
    inc = "supervisor-db-corruption"
    st = _storage(facts)
    url = st.get("url") or "the PostgreSQL store"
    backup = facts.get("pg_backup")
    verify = ["pg_isready and SELECT 1 answer", f"/readyz answers 200 within {VERIFY_TIMEOUT}s"]
    backup_line = (f"newest pg_dump backup: {backup}" if backup else
                   "no pg_dump backup found in the backup directory (playbook halswarm.ops.backup takes one)")
    integrity = str(st.get("integrity") or "").strip()
    if st.get("reachable") is False:
        return Plan(inc, MANUAL, [f"{url} does not answer: {str(st.get('error') or 'no connection')[:300]}",
                                  backup_line], [], verify, _pg_commands(facts))
    if integrity and integrity.lower() != "ok":
        return Plan(inc, MANUAL, [f"{url}: {integrity[:300]}", backup_line], [], verify, _pg_commands(facts))
    if st.get("reachable") is True:
        return Plan(inc, NOT_PRESENT, [f"{url} answers; SQLite's integrity checks do not apply to PostgreSQL "
                                       "(pg_amcheck checks tables and indexes)"], guidance=_pg_commands(facts))
    return Plan(inc, UNKNOWN, [f"no reachability facts about {url}"], guidance=_pg_commands(facts))


def plan_supervisor_db_corruption(facts: Facts) -> Plan:
    inc = "supervisor-db-corruption"
    if _on_pg(facts):
        return _pg_db_corruption(facts)
    db = d if isinstance(d := facts.get("db"), Mapping) else {}
    if not db:
        return Plan(inc, UNKNOWN, ["no database facts"])
    if not db.get("exists", True):
        return Plan(inc, NOT_PRESENT, ["no supervisor database on this host"])
    integrity = str(db.get("integrity", "")).strip()
    if integrity.lower() == "ok":
        return Plan(inc, NOT_PRESENT, ["PRAGMA integrity_check: ok"])
    if not integrity:
        return Plan(inc, UNKNOWN, ["integrity of the database unknown"])
    reasons = [f"PRAGMA integrity_check: {integrity[:300]}"]
    backup = facts.get("db_backup")
    actions = [
        Action("stop_service", "systemctl stop hal-supervisor.service", "supervisor",
               {"unit": "hal-supervisor.service"}),
        Action("keep_corrupt_copy", "keep the corrupt file as supervisor.db.corrupt.<ts> (with -wal/-shm)",
               "supervisor"),
        Action("recover_db", "recover with .recover semantics (halswarm.ops.hal_sqlite_recover) and "
               "integrity_check the result", "supervisor"),
        Action("install_recovered", "put the recovered database in place (halswarm.ops.hal_sqlite_restore)",
               "supervisor", when="recover_db complete" if backup else "recover_db succeeded"),
    ]
    if backup:
        reasons.append(f"newest valid backup: {backup}")
        actions += [
            Action("restore_db", "restore the newest valid backup (halswarm.ops.hal_sqlite_restore)",
                   "supervisor", {"backup": backup}, when="recover_db failed or incomplete"),
            Action("merge_recovered", "copy the recovered rows the backup lacks (newer ones) into the restored "
                   "database (halswarm.ops.hal_sqlite_merge)", "supervisor", when="recover_db incomplete"),
        ]
    else:
        reasons.append("no valid backup: a failed recovery escalates, an incomplete one is installed as is")
    actions.append(Action("start_service", "systemctl start hal-supervisor.service", "supervisor",
                          {"unit": "hal-supervisor.service"}))
    return Plan(inc, PRESENT, reasons, actions,
                ["PRAGMA integrity_check = ok", f"/readyz answers 200 within {VERIFY_TIMEOUT}s"])


def plan_lost_session_data(facts: Facts) -> Plan:
    inc = "lost-session-data"
    db = d if isinstance(d := facts.get("db"), Mapping) else {}
    integrity = str(db.get("integrity", "ok")).strip().lower()
    if db and integrity != "ok":
        return Plan(inc, NOT_PRESENT, ["the live database fails its integrity check: that is "
                                       "supervisor-db-corruption"])
    live = facts.get("live_counts") if isinstance(facts.get("live_counts"), Mapping) else None
    backup = facts.get("backup_counts") if isinstance(facts.get("backup_counts"), Mapping) else None
    if live is None:
        return Plan(inc, UNKNOWN, ["no row counts of the live database"])
    if not backup:
        return Plan(inc, NOT_PRESENT, ["no valid backup to compare with: no evidence of lost rows"])
    tables = [str(t) for t in facts.get("tables") or ("sessions", "events")]
    by_table = facts.get("missing_by_table") if isinstance(facts.get("missing_by_table"), Mapping) else {}
    missing = {t: _int(backup.get(t)) - _int(live.get(t)) for t in tables
               if _int(backup.get(t)) > _int(live.get(t))}
    missing_ids = _int(facts.get("missing_rows"), -1)   # rows of the backup absent from live (by key)
    if missing_ids == 0 or (missing_ids < 0 and not missing):
        return Plan(inc, NOT_PRESENT, ["every row of the newest valid backup is present in the live database"])
    if by_table:
        reasons = [f"{t}: {_int(n)} rows of the backup missing from the live database"
                   for t, n in sorted(by_table.items()) if _int(n) > 0]
    else:
        reasons = [f"{t}: {n} fewer rows than the backup" for t, n in missing.items()]
        if missing_ids > 0:
            reasons.append(f"{missing_ids} rows of the backup are missing from the live database")
    actions = [
        Action("stop_service", "systemctl stop hal-supervisor.service", "supervisor",
               {"unit": "hal-supervisor.service"}),
        Action("snapshot_db", "online backup of the current database (kept)", "supervisor"),
        Action("merge_from_backup", "copy the rows missing from the live DB back from the backup "
               "(INSERT OR IGNORE by key; newer rows are kept)", "supervisor",
               {"backup": facts.get("db_backup"), "tables": tables}),
        Action("start_service", "systemctl start hal-supervisor.service", "supervisor",
               {"unit": "hal-supervisor.service"}),
    ]
    return Plan(inc, PRESENT, reasons, actions,
                ["no row of the backup missing from the live DB", f"/readyz answers 200 within {VERIFY_TIMEOUT}s"])


# ----- connectivity -----

WS_PORT = 8420
FIREWALL_CHAIN = "HAL-O-SWARM"      # the halswarm.ops firewall role's own chain (and its rule comment)
FIREWALL_COMMENT = "halswarm-ops"


def _port_matches(spec: str, port: int) -> bool:
    for part in spec.split(","):
        lo, _sep, hi = part.partition(":")
        try:
            if int(lo or 0) <= port <= int(hi or lo or 65535):
                return True
        except ValueError:
            continue
    return False


def _blocking_rules(facts: Facts, port: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Firewall rules (``iptables -S`` lines per host) that DROP/REJECT tcp ``port``.

    ``facts["firewall"]`` is ``{host: {"netns": id, "rules": [lines] | None}}``. Returns the removable
    rules (foreign ones, deduplicated per network namespace: hosts sharing one see the same rule once)
    and descriptions of those that must not be deleted by hand (the firewall role's chain, ufw's chains).
    """
    import shlex

    removable: list[dict[str, Any]] = []
    kept: list[str] = []
    seen: set[tuple[str, str]] = set()
    fw = facts.get("firewall")
    for host, info in sorted((fw if isinstance(fw, Mapping) else {}).items()):
        if not isinstance(info, Mapping):
            continue
        for line in info.get("rules") or []:
            try:
                argv = shlex.split(str(line))
            except ValueError:
                continue
            if len(argv) < 4 or argv[0] != "-A":
                continue
            target = argv[argv.index("-j") + 1] if "-j" in argv[:-1] else ""
            if target not in ("DROP", "REJECT"):
                continue
            if "-p" in argv[:-1] and argv[argv.index("-p") + 1] not in ("tcp", "6"):
                continue
            ports = [argv[i + 1] for i, a in enumerate(argv[:-1])
                     if a in ("--dport", "--dports", "--destination-port", "--destination-ports")
                     and (i == 0 or argv[i - 1] != "!")]
            if not any(_port_matches(p, port) for p in ports):
                continue
            key = (str(info.get("netns") or host), str(line))
            if key in seen:
                continue
            seen.add(key)
            chain = argv[1]
            if chain == FIREWALL_CHAIN or FIREWALL_COMMENT in argv or chain.startswith("ufw"):
                owner = "ufw" if chain.startswith("ufw") else "the halswarm.ops firewall role"
                kept.append(f"{host}: {line} (managed by {owner})")
                continue
            removable.append({"host": str(host), "netns": key[0], "chain": chain, "rule": str(line),
                              "argv": argv[2:]})
    return removable, kept


def _firewall_guidance(kept: list[str], port: int) -> list[str]:
    return [f"managed rule blocks tcp/{port}: {k}; allow the agents' addresses in hal_firewall_ws_sources "
            "and re-apply `halctl ops firewall` (or `ufw allow`)" for k in kept]


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
    port = _int(facts.get("port"), WS_PORT)
    verify = [f"node online in the supervisor within {VERIFY_TIMEOUT}s", f"tcp/{port} reachable from the agent"]
    status = facts.get("node_status") or "offline"
    reasons = [f"hal-agent.service runs but its node is {status} in the supervisor"]
    actions: list[Action] = []
    guidance: list[str] = []
    escalate: list[str] = []
    fixed = False
    sup = _svc(facts, "supervisor")
    if sup and not _running(sup):
        reasons.append("supervisor is not running")
        actions.append(Action("restart_service", "systemctl restart hal-supervisor.service", "supervisor",
                              {"unit": "hal-supervisor.service"}))
        fixed = True
    elif facts.get("listening") is False:
        configured = facts.get("configured_port")
        if configured is not None and _int(configured) != port:
            escalate.append(f"the supervisor is configured for port {configured}, the agent connects to {port}")
        else:
            reasons.append(f"supervisor runs but does not listen on {port}")
            actions.append(Action("restart_service", "systemctl restart hal-supervisor.service", "supervisor",
                                  {"unit": "hal-supervisor.service"}))
            fixed = True
    if facts.get("token_match") is False:
        reasons.append("agent auth token differs from the supervisor's")
        if facts.get("token_source") == "env":
            escalate.append("the agent's token comes from HAL_AUTH_TOKEN in its unit environment; fix it there")
        else:
            actions.append(Action("sync_token", "write the supervisor's token for this node into the agent's "
                                  "token file or config (validated by hal-agent --validate, backup kept, no_log)",
                                  "agent", {"source": facts.get("token_source") or "file"}))
            fixed = True
    if facts.get("port_reachable") is False:
        reasons.append(f"tcp/{port} of the supervisor is not reachable from the agent"
                       + (f" ({facts['connect_error']})" if facts.get("connect_error") else ""))
        removable, kept = _blocking_rules(facts, port)
        if removable or (facts.get("firewall") is None and facts.get("firewall_blocks") is True):
            reasons.append(f"a firewall rule blocks {port}")
            actions.append(Action("allow_port", f"delete only the firewall rules that drop/reject tcp/{port} "
                                  "(every other rule is kept)", "supervisor", {"port": port, "rules": removable}))
            fixed = True
        guidance += _firewall_guidance(kept, port)
        if not fixed and not kept:
            escalate.append(f"tcp/{port} unreachable with the supervisor up and no blocking rule found: check "
                            f"the agent's supervisor_url ({facts.get('supervisor_url', '?')}) and the network path")
    if escalate:
        return Plan(inc, ESCALATE, reasons + escalate, [], verify, guidance)
    if guidance and not fixed:
        return Plan(inc, MANUAL, reasons, [], verify, guidance)
    actions.append(Action("restart_service", "systemctl restart hal-agent.service", "agent",
                          {"unit": "hal-agent.service"}))
    return Plan(inc, PRESENT, reasons, actions, verify, guidance)


def plan_supervisor_unreachable(facts: Facts) -> Plan:
    inc = "supervisor-unreachable"
    sup = _svc(facts, "supervisor")
    offline = [str(x) for x in facts.get("offline_agents") or []]
    total = _int(facts.get("total_agents"), len(offline))
    if not sup:
        return Plan(inc, UNKNOWN, ["no facts about hal-supervisor.service"])
    if not _running(sup):
        return Plan(inc, NOT_PRESENT, ["hal-supervisor.service is not running: that is supervisor-crashed"])
    port = _int(facts.get("port"), WS_PORT)
    unreachable_from = [str(x) for x in facts.get("unreachable_from") or []]
    unreachable = facts.get("port_reachable") is False or bool(unreachable_from)
    if not offline and not unreachable:
        return Plan(inc, NOT_PRESENT, ["agents reach the supervisor and are online"])
    if total and len(offline) < total and not unreachable:
        return Plan(inc, NOT_PRESENT, [f"only {len(offline)} of {total} agents offline and {port} reachable: "
                                       "see agent-cannot-connect"])
    verify = [f"{port} reachable from the agents", f"every agent online within {VERIFY_TIMEOUT}s"]
    reasons = [f"{len(offline)} of {total} agents offline"] if offline else []
    actions: list[Action] = []
    guidance: list[str] = []
    if facts.get("listening") is False:
        configured = facts.get("configured_port")
        if configured is not None and _int(configured) != port:
            return Plan(inc, ESCALATE, [*reasons, f"the supervisor is configured for port {configured}, "
                                        f"the agents connect to {port}"], [], verify)
        reasons.append(f"supervisor is not listening on {port}")
        actions.append(Action("restart_service", "systemctl restart hal-supervisor.service", "supervisor",
                              {"unit": "hal-supervisor.service"}))
    removable, kept = _blocking_rules(facts, port)
    if unreachable and (removable or (facts.get("firewall") is None and facts.get("firewall_blocks") is True)):
        reasons.append(f"a firewall rule blocks {port}")
        actions.append(Action("allow_port", f"delete only the firewall rules that drop/reject tcp/{port} "
                              "(every other rule is kept)", "supervisor", {"port": port, "rules": removable}))
    if unreachable:
        reasons.append(f"{port} not reachable from the agents"
                       + (f" ({', '.join(unreachable_from)})" if unreachable_from else ""))
        guidance += _firewall_guidance(kept, port)
    if not actions:
        if guidance:
            return Plan(inc, MANUAL, reasons, [], verify, guidance)
        return Plan(inc, ESCALATE, [*reasons, "supervisor listens and no blocking rule found: check the network "
                                    "path between the agents and the supervisor"], [], verify)
    if offline:
        actions.append(Action("restart_agents", "systemctl restart hal-agent.service on the offline agents",
                              "agents", {"hosts": offline}))
    return Plan(inc, PRESENT, reasons, actions, verify, guidance)


def plan_high_latency(facts: Facts) -> Plan:
    inc = "high-latency"
    threshold = _int(facts.get("threshold_ms"), LATENCY_MS)
    days = _int(facts.get("archive_days"), ARCHIVE_DAYS)
    api_ms, query_ms = facts.get("api_latency_ms"), facts.get("query_ms")
    if api_ms is None and query_ms is None:
        return Plan(inc, UNKNOWN, ["no latency measurements"])
    slow = {k: v for k, v in (("api", api_ms), ("query", query_ms)) if v is not None and float(v) > threshold}
    if not slow:
        return Plan(inc, NOT_PRESENT, [f"api {api_ms} ms / query {query_ms} ms within {threshold} ms"])
    reasons = [f"{k} latency {v} ms > {threshold} ms" for k, v in slow.items()]
    old = _int(facts.get("old_events"))
    if old > 0:
        reasons.append(f"{old} events older than {days} days")
    actions = [Action("backup_db", "online backup of the database before changing it (kept)", "supervisor"),
               Action("stop_service", "systemctl stop hal-supervisor.service", "supervisor",
                      {"unit": "hal-supervisor.service"})]
    if old > 0:
        actions.append(Action("archive_events", f"archive events older than {days} days to a side database "
                              "(not a blind DELETE)", "supervisor", {"older_than_days": days}))
    actions += [
        Action("optimize_db", "VACUUM; ANALYZE (after an online backup)", "supervisor"),
        Action("start_service", "systemctl start hal-supervisor.service", "supervisor",
               {"unit": "hal-supervisor.service"}),
    ]
    return Plan(inc, PRESENT, reasons, actions, [f"api and query latency below {threshold} ms"])


# ----- cost, auth -----

def plan_cost_data_discrepancy(facts: Facts) -> Plan:
    """Facts: the supervisor's ``GET /api/v1/cost/status`` (``providers_configured``, ``poll_interval_s``,
    ``last_update_age_s``, ``missing_dates``, ``degraded_providers``, ``aggregator_running``) plus
    ``api_reachable``; ``providers_configured`` may come from the config file when the API is down."""
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
    down = facts.get("aggregator_running") is False
    if not stale and not missing and not degraded and not down:
        return Plan(inc, NOT_PRESENT, [f"cost data fresh ({age}s old, interval {interval}s), no gaps, "
                                       "no degraded provider"])
    reasons = []
    if facts.get("api_reachable") is False:
        reasons.append("supervisor API not reachable: cost aggregator state unknown")
    elif down:
        reasons.append("cost aggregator is not running (no poll loop)")
    if stale:
        reasons.append("cost data never updated since the supervisor started" if age is None else
                       f"cost data stale: last update {age}s ago (> 2 x {interval}s)")
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        reasons.append(f"{len(missing)} missing date(s): {shown}")
    if degraded:
        reasons.append(f"degraded providers: {', '.join(degraded)}")
    guidance = [f"if {p} stays degraded, verify its API key (admin key) and base_url in supervisor.config.json "
                "and the provider's reachability from the supervisor host" for p in degraded]
    actions = []
    if down:
        actions.append(Action("restart_service", "systemctl restart hal-supervisor.service (cost "
                              "aggregator not running)", "supervisor", {"unit": "hal-supervisor.service"}))
    actions.append(Action("force_repoll", "POST /api/v1/cost/refresh: re-poll every provider now", "supervisor"))
    if missing:
        actions.append(Action("backfill", "back-fill the missing dates (same refresh: every uncovered day of the "
                              "window is asked again)", "supervisor", {"dates": missing}))
    return Plan(inc, PRESENT, reasons, actions,
                [f"last cost update younger than {interval}s", "no missing dates", "no degraded provider",
                 "cost aggregator running"], guidance)


MANUAL_STEPS: dict[str, tuple[str, str]] = {
    "claude_code": ("claude auth login", "claude auth status"),
    "opencode": ("opencode auth login", "opencode auth list"),
    "codex": ("codex login --device-auth", "codex login status"),
}
UNAUTH = {"unauthenticated", "manual_required", "expired", "error", "not_authenticated"}
DEVICE_FLOW_TOOLS = ("codex", "opencode")   # remote OAuth (device code) through POST /api/v1/oauth/trigger


def _auth_status(st: Any) -> str:
    return str(st.get("status") if isinstance(st, Mapping) else st)


def plan_manual_auth_required(facts: Facts) -> Plan:
    """Facts: ``node_id``, ``node_status``, ``auth_states`` (``GET /api/v1/nodes/{id}/auth``) and, after the
    resolve phase triggered them, ``oauth_challenges`` (tool -> the OAuthResult of ``/api/v1/oauth/trigger``).
    Never fixes anything by itself: the decision is ``manual``; device-flow tools get a triggered flow whose
    URL and code go into the guidance, the others the runbook's SSH login steps."""
    inc = "manual-auth-required"
    states = facts.get("auth_states")
    if not isinstance(states, Mapping):
        return Plan(inc, UNKNOWN, ["no auth state reported by the node"])
    node = str(facts.get("node_id") or "<agent-node>")
    if facts.get("node_status") not in (None, "online"):
        return Plan(inc, UNKNOWN, [f"node {node} is {facts.get('node_status')}: its auth state is not current "
                                   "(see agent-cannot-connect)"])
    if not states:
        return Plan(inc, UNKNOWN, [f"node {node} has not reported any auth state yet"])
    bad = sorted(t for t, st in states.items() if _auth_status(st) in UNAUTH)
    if not bad:
        return Plan(inc, NOT_PRESENT, [f"{t}: {_auth_status(st)}" for t, st in sorted(states.items())]
                    or ["every tool is authenticated"])
    challenges = c if isinstance(c := facts.get("oauth_challenges"), Mapping) else {}
    reasons, guidance, actions = [], [], []
    for tool in bad:
        st = states[tool]
        why = st.get("reason") if isinstance(st, Mapping) else None
        reasons.append(f"{tool} on {node}: {_auth_status(st)}" + (f" ({why})" if why else ""))
        login, status = MANUAL_STEPS.get(tool, (f"{tool} login", f"{tool} status"))
        ch = challenges.get(tool) if isinstance(challenges.get(tool), Mapping) else None
        if tool in DEVICE_FLOW_TOOLS:
            actions.append(Action("trigger_oauth", f"POST /api/v1/oauth/trigger {{node_id: {node}, tool: {tool}}}: "
                                  "start the device flow on the node", "supervisor", {"node_id": node, "tool": tool}))
        if ch is not None and ch.get("status") == "challenge":
            url, code = ch.get("challenge_url") or "?", ch.get("user_code")
            guidance += [f"[{tool}] Device flow started on {node}: open {url}"
                         + (f" and enter the code {code}" if code else ""),
                         f"[{tool}] Then check: halctl auth status {node} (or re-run halctl remediate {inc})"]
            continue
        if ch is not None and ch.get("status") == "success":
            guidance.append(f"[{tool}] The device flow reported success: check halctl auth status {node}")
            continue
        if ch is not None:
            guidance.append(f"[{tool}] Remote OAuth did not start ({ch.get('status')}: "
                            f"{ch.get('reason') or 'no reason given'}); log in manually:")
        guidance += [f"[{tool}] SSH into the agent server: ssh user@{node} (or: halctl auth login {node} {tool} --ssh)",
                     f"[{tool}] Run the login command: {login}",
                     f"[{tool}] Follow the browser-based / device code flow",
                     f"[{tool}] Verify auth status: {status}",
                     f"[{tool}] Check: halctl auth status {node}"]
    return Plan(inc, MANUAL, reasons, actions,
                [f"halctl auth status {node} shows {', '.join(bad)} authenticated"], guidance)


def _drift_nodes(facts: Facts) -> list[Mapping[str, Any]] | None:
    nodes = facts.get("nodes")
    if isinstance(nodes, list):
        return [n for n in nodes if isinstance(n, Mapping)]
    if facts.get("credential_sync") is None:
        return None
    return [{"node_id": facts.get("node_id") or "", "credential_sync": facts.get("credential_sync"),
             "credential_version": facts.get("node_version"), "status": facts.get("node_status", "online")}]


def plan_credential_drift(facts: Facts) -> Plan:
    """Facts: ``nodes`` (rows of ``GET /api/v1/auth/drift?all=true``), ``expected_version``, and from the
    supervisor config which nodes it holds credentials for: ``credentials_configured`` (``defaults.env``
    set: every node) and ``configured_agents`` (``agents.<node>.env`` set). The one-node shape
    ``{credential_sync, node_id, node_version, expected_version, credentials_configured}`` is accepted too."""
    inc = "credential-drift"
    nodes = _drift_nodes(facts)
    if nodes is None:
        return Plan(inc, UNKNOWN, ["credential sync state unknown"])
    drifting = [n for n in nodes if n.get("credential_sync") == "drift_detected"]
    if not drifting:
        return Plan(inc, NOT_PRESENT, [f"{n.get('node_id')}: credential_sync = {n.get('credential_sync')}"
                                       for n in nodes] or ["no node reports credential drift"])
    expected = facts.get("expected_version", drifting[0].get("expected_version"))
    every = bool(facts.get("credentials_configured"))
    agents = {str(a) for a in facts.get("configured_agents") or []}
    reasons, actions, guidance, verify = [], [], [], []
    informational = []
    for n in drifting:
        node = str(n.get("node_id") or "")
        reasons.append(f"node {node}: credential_version {n.get('credential_version')} != supervisor's {expected}")
        if not (every or node in agents):
            informational.append(node)
        elif n.get("status", "online") != "online":
            guidance.append(f"node {node} is {n.get('status')}: credentials cannot be pushed until it reconnects "
                            "(see agent-cannot-connect)")
        else:
            actions.append(Action("push_credentials", f"POST /api/v1/commands/credentials/push {{target_node: {node}}}"
                                  f" (the supervisor's configured credentials, version {expected})", "supervisor",
                                  {"target_node": node}))
            verify.append(f"{node}: credential_sync = in_sync within {VERIFY_TIMEOUT}s")
    if informational or not actions:
        guidance = ["Expected after a manual login: informational only, manual auth stays valid.", *guidance]
    if informational:
        guidance.append(f"No credentials configured in the supervisor for {', '.join(informational)}: ignore the "
                        "drift, or configure `credentials` (defaults.env or agents.<node>.env) and run "
                        "`halctl auth push`.")
    if actions:
        return Plan(inc, PRESENT, reasons, actions, verify, guidance)
    return Plan(inc, MANUAL, reasons, [], [], guidance)


def plan_collect_diagnostics(facts: Facts) -> Plan:
    """Always present: it is the escalation step itself (read-only on the hosts, one tarball on the controller)."""
    inc = "collect-diagnostics"
    out = facts.get("output") or "<state dir>/diagnostics/hal-diagnostics-<time>.tar.gz"
    reasons = ["escalation: document the incident" + (f" ({facts['incident']})" if facts.get("incident") else "")]
    if facts.get("collected") is False:
        reasons.append("this host could not be collected; the bundle records why")
    reasons.extend(f"could not read {e}" for e in facts.get("errors") or [])
    return Plan(inc, PRESENT, reasons, [
        Action("collect", "journals of both services (-n 1000), uname/uptime/df/free, systemctl show, configs with "
               "secrets redacted, DB integrity_check, sizes, row counts and recent events (read-only)", "all",
               {"failed_report": facts.get("failed_report")}),
        Action("bundle", f"write one tarball {out} (0600, redacted, scanned for known secrets)", "localhost",
               {"output": out}),
    ], ["tarball exists", "every host collected", "no known secret value in the tarball"])


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
