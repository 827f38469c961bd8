"""Alertmanager webhook payloads (version 4): strict parsing with bounded sizes, and the mapping of each
alert to a runbook incident and an inventory host. Pure: no I/O, stdlib only.

An alert names its incident by the label ``incident`` (a catalog id) and its host by ``node`` or, failing
that, the host part of ``instance``. The host is only ever an Ansible ``--limit`` value checked against
`HOST_PATTERN` (never a path, never shell text). Alerts that cannot be mapped are ignored one by one with
a reason; only a malformed payload refuses the whole request.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_ALERTS = 200  # per request (Alertmanager's max_alerts, when set, truncates below this)
MAX_LABELS = 64  # labels (or annotations) per alert
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 1024
MAX_TEXT_CHARS = 2048  # receiver, groupKey, externalURL, generatorURL, timestamps

STATUSES = ("firing", "resolved")
# An inventory host name / node id usable as one `--limit` host: no Ansible pattern syntax, no path.
HOST_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_LABEL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AlertPayloadError(ValueError):
    """A payload that is not Alertmanager's webhook shape; its message is one line."""


@dataclass(frozen=True)
class Alert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str
    generator_url: str
    fingerprint: str


@dataclass(frozen=True)
class Payload:
    receiver: str
    status: str
    alerts: tuple[Alert, ...]
    group_key: str
    external_url: str
    truncated_alerts: int
    common_labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Mapped:
    """An alert mapped to an incident and a host (None: the incident's own target group)."""

    alert: Alert
    incident: str
    host: str | None


@dataclass(frozen=True)
class Ignored:
    alert: Alert
    reason: str


def _str(doc: Mapping[str, Any], key: str, where: str, *, required: bool = True, limit: int = MAX_TEXT_CHARS) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise AlertPayloadError(f"{where}{key}: must be a string")
    if len(value) > limit:
        raise AlertPayloadError(f"{where}{key}: longer than {limit} characters")
    return value


def _kv(doc: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AlertPayloadError(f"{where}{key}: must be an object of strings")
    if len(value) > MAX_LABELS:
        raise AlertPayloadError(f"{where}{key}: more than {MAX_LABELS} entries")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _LABEL_KEY.match(k) or len(k) > MAX_KEY_CHARS:
            raise AlertPayloadError(f"{where}{key}: invalid name {str(k)[:40]!r}")
        if not isinstance(v, str):
            raise AlertPayloadError(f"{where}{key}.{k}: must be a string")
        if len(v) > MAX_VALUE_CHARS:
            raise AlertPayloadError(f"{where}{key}.{k}: longer than {MAX_VALUE_CHARS} characters")
        out[k] = v
    return out


def _status(doc: Mapping[str, Any], where: str) -> str:
    status = doc.get("status")
    if status not in STATUSES:
        raise AlertPayloadError(f"{where}status: must be 'firing' or 'resolved'")
    return str(status)


def _alert(doc: Any, i: int) -> Alert:
    where = f"alerts[{i}]."
    if not isinstance(doc, Mapping):
        raise AlertPayloadError(f"alerts[{i}]: must be an object")
    return Alert(status=_status(doc, where), labels=_kv(doc, "labels", where),
                 annotations=_kv(doc, "annotations", where),
                 starts_at=_str(doc, "startsAt", where, required=False),
                 ends_at=_str(doc, "endsAt", where, required=False),
                 generator_url=_str(doc, "generatorURL", where, required=False),
                 fingerprint=_str(doc, "fingerprint", where, required=False, limit=128))


def parse_payload(doc: Any, *, max_alerts: int = MAX_ALERTS) -> Payload:
    """The payload of one webhook call, or AlertPayloadError naming the first problem."""
    if not isinstance(doc, Mapping):
        raise AlertPayloadError("body must be a JSON object (Alertmanager webhook payload)")
    if doc.get("version") != "4":
        raise AlertPayloadError("version: must be \"4\" (Alertmanager webhook payload)")
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise AlertPayloadError("alerts: must be a list")
    if len(alerts) > max_alerts:
        raise AlertPayloadError(f"alerts: more than {max_alerts} in one request")
    truncated = doc.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise AlertPayloadError("truncatedAlerts: must be an integer >= 0")
    _kv(doc, "groupLabels", "")
    _kv(doc, "commonAnnotations", "")
    return Payload(receiver=_str(doc, "receiver", ""), status=_status(doc, ""),
                   alerts=tuple(_alert(a, i) for i, a in enumerate(alerts)),
                   group_key=_str(doc, "groupKey", "", required=False),
                   external_url=_str(doc, "externalURL", "", required=False),
                   truncated_alerts=truncated, common_labels=_kv(doc, "commonLabels", ""))


def host_of(labels: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(host, None), (None, None) when no label names one, or (None, reason) when it is not a host name.
    ``node`` wins over ``instance``; ``instance`` loses its port (``host:9100``)."""
    raw = labels.get("node") or ""
    if not raw:
        instance = labels.get("instance") or ""
        if not instance:
            return None, None
        raw = instance.rsplit(":", 1)[0] if instance.count(":") == 1 else instance
    if not HOST_PATTERN.match(raw):
        return None, f"host {raw[:64]!r} is not a node id or inventory host name"
    return raw, None


def dedupe(alerts: tuple[Alert, ...]) -> list[Alert]:
    """One alert per (fingerprint, status), first kept; alerts without a fingerprint are all kept."""
    seen: set[tuple[str, str]] = set()
    out = []
    for a in alerts:
        key = (a.fingerprint, a.status)
        if a.fingerprint and key in seen:
            continue
        seen.add(key)
        out.append(a)
    return out


def map_alert(alert: Alert, incidents: Collection[str]) -> Mapped | Ignored:
    """The incident and host `alert` is about, or why it is ignored."""
    incident = alert.labels.get("incident", "")
    if not incident:
        return Ignored(alert, "no incident label")
    if incident not in incidents:
        return Ignored(alert, f"unknown incident {incident[:64]!r}")
    host, problem = host_of(alert.labels)
    if problem:
        return Ignored(alert, problem)
    return Mapped(alert, incident, host)


def map_payload(payload: Payload, incidents: Collection[str]) -> list[Mapped | Ignored]:
    return [map_alert(a, incidents) for a in dedupe(payload.alerts)]


SUPERVISORS_GROUP = "hal_supervisors"


def run_target(incident_hosts: str, host: str | None, supervisor_host: str | None) -> tuple[str, str] | str:
    """(throttle host, --limit) of a remediation started by an alert, or why it cannot run.

    Supervisor incidents (group ``hal_supervisors``) run on `supervisor_host`, else that group, whatever
    the alert's instance label says (the supervisor's scrape address need not be its inventory name).
    Other incidents need the alert's host: an alert without one never runs on a whole group."""
    if incident_hosts == SUPERVISORS_GROUP:
        target = supervisor_host or SUPERVISORS_GROUP
        return target, target
    if host is None:
        return "no node or instance label: the remediation needs a host"
    return host, host


def remediate_command(incident: str, inventory: str | None, limit: str | None) -> str:
    """The exact `halctl remediate` line an operator runs for the alert (quoted for a POSIX shell)."""
    argv = ["halctl", "remediate", incident, "-i", inventory or "INVENTORY"]
    if limit:
        argv += ["--limit", limit]
    return shlex.join(argv)


def alert_time(value: str | None) -> float | None:
    """An RFC 3339 time of a payload (``startsAt``, ``finished_at``; nanoseconds allowed) as epoch seconds;
    None for Alertmanager's zero time (``0001-01-01T00:00:00Z``), a time without zone, or anything else."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None
