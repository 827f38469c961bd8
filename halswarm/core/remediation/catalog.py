"""The remediation catalog: one entry per runbook incident (SPEC 8, seed RUNBOOK.md).

Severity and response time come from the runbook's "Incident Classification" table; each incident is
mapped to the class whose impact it has (a crashed supervisor is "system down", a disconnected agent a
"partial outage", a stale cost report "feature unavailable, workaround exists", credential drift after a
manual login is informational). Pure data and lookups, no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

CRITICAL, HIGH, MEDIUM, LOW, NA = "Critical", "High", "Medium", "Low", "n/a"


@dataclass(frozen=True)
class Severity:
    name: str
    impact: str
    response: str          # the runbook's words, e.g. "Immediate"
    response_time: str     # e.g. "< 5 min"
    response_seconds: int | None


SEVERITIES: dict[str, Severity] = {
    CRITICAL: Severity(CRITICAL, "System down, data loss risk", "Immediate", "< 5 min", 5 * 60),
    HIGH: Severity(HIGH, "Partial outage, degraded performance", "Urgent", "< 30 min", 30 * 60),
    MEDIUM: Severity(MEDIUM, "Feature unavailable, workaround exists", "Standard", "< 2 hours", 2 * 3600),
    LOW: Severity(LOW, "Minor issue, no user impact", "Routine", "< 24 hours", 24 * 3600),
    # collect-diagnostics is the escalation step itself: it takes the severity of the escalated incident.
    NA: Severity(NA, "Escalation step (severity of the escalated incident)", "With the escalation", "-", None),
}


@dataclass(frozen=True)
class Incident:
    id: str
    section: str
    runbook_group: str
    severity: str
    description: str
    hosts: str              # which inventory group the playbook targets
    auto_fixable: bool = True

    @property
    def playbook(self) -> str:
        """Collection playbook name (``halswarm.ops.remediate_<id with underscores>``)."""
        return "remediate_" + self.id.replace("-", "_")

    @property
    def fqcn(self) -> str:
        return "halswarm.ops." + self.playbook

    @property
    def severity_info(self) -> Severity:
        return SEVERITIES[self.severity]

    @property
    def response_time(self) -> str:
        return self.severity_info.response_time

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        sev = self.severity_info
        d.update(playbook=self.fqcn, response=sev.response, response_time=sev.response_time,
                 response_seconds=sev.response_seconds, impact=sev.impact)
        return d


INCIDENTS: tuple[Incident, ...] = (
    Incident("supervisor-crashed", "Supervisor Process Crashed", "Supervisor Incidents", CRITICAL,
             "hal-supervisor.service is inactive/failed or crash-looping; restart it, restoring the config "
             "from the newest valid backup when the current one does not validate.", "hal_supervisors"),
    Incident("supervisor-high-memory", "Supervisor High Memory Usage", "Supervisor Incidents", HIGH,
             "Supervisor memory above 80% of MemoryMax (or > 2 GB without a limit); archive old events, "
             "raise MemoryMax and restart.", "hal_supervisors"),
    Incident("supervisor-db-corruption", "Supervisor Database Corruption", "Supervisor Incidents", CRITICAL,
             "PRAGMA integrity_check fails; stop, keep the corrupt file, recover (.recover) or restore the "
             "newest valid backup, start, verify.", "hal_supervisors"),
    Incident("agent-cannot-connect", "Agent Can't Connect to Supervisor", "Agent Incidents", HIGH,
             "hal-agent runs but its node is offline; fix what blocks it (supervisor down, token mismatch, "
             "firewall on 8420) and restart the agent.", "hal_agents"),
    Incident("agent-high-memory", "Agent High Memory Usage", "Agent Incidents", HIGH,
             "Agent memory above 80% of MemoryMax (or > 4 GB without a limit); kill idle sessions and raise "
             "MemoryMax.", "hal_agents"),
    Incident("agent-crashed", "Agent Process Crashed", "Agent Incidents", HIGH,
             "hal-agent.service is inactive/failed or crash-looping; restart it, restoring the config from "
             "the newest valid backup when needed.", "hal_agents"),
    Incident("supervisor-unreachable", "Supervisor Unreachable from Agents", "Network Incidents", CRITICAL,
             "Supervisor runs but agents cannot reach port 8420 (not listening, firewall); fix and restart "
             "the offline agents.", "all"),
    Incident("high-latency", "High Latency / Slow Responses", "Network Incidents", HIGH,
             "API or database queries slower than the threshold; archive old events, VACUUM/ANALYZE, "
             "restart the supervisor.", "hal_supervisors"),
    Incident("lost-session-data", "Lost Session Data", "Data Incidents", CRITICAL,
             "Rows present in the newest valid backup are missing from the live DB; stop, keep the current "
             "file, merge the missing rows back from the backup, start.", "hal_supervisors"),
    Incident("cost-data-discrepancy", "Cost Data Discrepancy", "Data Incidents", MEDIUM,
             "Cost data stale, missing dates or degraded providers; force a re-poll and back-fill.",
             "hal_supervisors"),
    Incident("manual-auth-required", "Manual Authentication Procedures (per tool)", "Manual Authentication", MEDIUM,
             "A tool on a node is unauthenticated; print the runbook's per-tool login guidance (manual "
             "login over SSH).", "hal_agents", auto_fixable=False),
    Incident("credential-drift", '"credential drift detected" after manual login', "Manual Authentication", LOW,
             "Node credential version differs from the supervisor's; push the configured credentials, or "
             "report that the drift is informational.", "hal_supervisors"),
    Incident("collect-diagnostics", "Escalation: document the incident", "Escalation", NA,
             "Collect the escalation bundle: journals of both services, system info, redacted config, DB "
             "integrity, recent events, the failed report.", "all"),
)

BY_ID: dict[str, Incident] = {i.id: i for i in INCIDENTS}
IDS: tuple[str, ...] = tuple(i.id for i in INCIDENTS)


class UnknownIncident(KeyError):
    def __init__(self, incident_id: str) -> None:
        super().__init__(incident_id)
        self.incident_id = incident_id

    def __str__(self) -> str:
        return f"unknown incident {self.incident_id!r} (known: {', '.join(IDS)})"


def get(incident_id: str) -> Incident:
    key = incident_id.strip().lower().replace("_", "-")
    try:
        return BY_ID[key]
    except KeyError:
        raise UnknownIncident(incident_id) from None


def listing() -> list[dict[str, Any]]:
    """Rows for ``halctl remediate list``."""
    return [{"id": i.id, "severity": i.severity, "response_time": i.response_time, "section": i.section}
            for i in INCIDENTS]
