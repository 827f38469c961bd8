"""Fleet-wide drill: on a healthy fleet every remediation reports "not present" and changes nothing.

Each incident of the catalog (but the escalation step collect-diagnostics, which always collects) runs for
real, without --check, through `halctl remediate`. Before and after the whole sequence the fleet's
observable state is fingerprinted: configs, tokens, unit files with their drop-ins, the daemons' main PIDs
and restart counts (no restart happened), firewall rules of the shared namespace, the row counts of
every supervisor table but `nodes` (heartbeat columns move by design) and `events`, and no event the
supervisor records itself (node offline/online, pushes, re-polls, ...) may appear; the agent's own
forwarded events flow on. The reports are not sent, so the database sees nothing from the drill itself.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from halswarm.core.remediation.catalog import IDS
from tests.support.fleet.fleet import AGENT_CONFIG, AGENT_UNIT, SUP_CONFIG, SUP_DB, SUP_UNIT, DrillFleet

pytestmark = pytest.mark.timeout(1800)

HEALTHY_IDS = [i for i in IDS if i != "collect-diagnostics"]

_COUNTS = """
import json, sqlite3, sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
names = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
print(json.dumps({n: c.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in sorted(names)
                  if n not in ("nodes", "events")}))
"""
# Events since a rowid: (type, origin). Agents forward their own events all the time (origin "agent",
# a per-node seq); what the supervisor records itself (origin "supervisor": node.offline/online,
# credential.pushed, cost.refreshed, auth.*, remediation.*) is what a remediation would cause.
_EVENTS = """
import json, sqlite3, sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
rows = c.execute("SELECT type, seq IS NULL FROM events WHERE rowid > ? ORDER BY rowid", (int(sys.argv[2]),))
print(json.dumps({"max": c.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0],
                  "added": [[t, "supervisor" if s else "agent"] for t, s in rows]}))
"""


def fingerprint(fleet: DrillFleet) -> dict[str, Any]:
    files = fleet.sha256(fleet.sup, SUP_CONFIG, "/etc/hal-o-swarm/supervisor.token")
    agent_files = fleet.sha256(fleet.agent, AGENT_CONFIG, "/etc/hal-o-swarm/agent.token")
    files |= {f"agent:{k}": v for k, v in agent_files.items()}
    units = {}
    for host, unit in ((fleet.sup, SUP_UNIT), (fleet.agent, AGENT_UNIT)):
        state = fleet.unit_state(host, unit)
        units[unit] = {"cat": fleet.exec(host, "systemctl", "cat", unit),
                       **{k: state.get(k) for k in ("ActiveState", "MainPID", "NRestarts", "MemoryMax")}}
    rules = fleet.sh(fleet.sup, "command -v iptables >/dev/null && iptables -S || echo no-iptables", check=False)
    counts = json.loads(fleet.exec(fleet.sup, "python3", "-c", _COUNTS, SUP_DB))
    return {"files": files, "units": units, "iptables": rules, "rows": counts}


def events_since(fleet: DrillFleet, rowid: int) -> dict[str, Any]:
    return json.loads(fleet.exec(fleet.sup, "python3", "-c", _EVENTS, SUP_DB, str(rowid)))


def test_healthy_fleet_reports_not_present_for_every_incident(fleet: DrillFleet) -> None:
    before = fingerprint(fleet)
    mark = events_since(fleet, 0)["max"]
    assert before["units"][SUP_UNIT]["ActiveState"] == "active" and before["units"][AGENT_UNIT]["MainPID"] != "0"
    outcomes = {}
    for incident in HEALTHY_IDS:
        rc, report = fleet.remediate(incident, "--no-send")
        outcomes[incident] = (rc, report.get("status"), report.get("reasons"))
        assert report["incident"] == incident and report["check"] is False
        assert report["actions"] == [], (incident, report["actions"])
        assert report["severity"] and report["response_time"]
    wrong = {i: o for i, o in outcomes.items() if o[:2] != (0, "not_present")}
    assert not wrong, f"a healthy fleet must report 'not present' everywhere: {wrong}"
    after = fingerprint(fleet)
    assert after == before
    added = events_since(fleet, mark)["added"]
    assert [e for e in added if e[1] == "supervisor"] == [], added
