"""Message formats per target kind (pure): Discord embeds, Slack Block Kit, JSON for n8n/webhooks.

Every format is built from one Notification: the stored event as the API shows it (secrets redacted)
plus the observed values of the route's conditions. Discord uses the embed style of the Go bot
(go-original.md section 11): title, description, fields, colour by outcome (success 0x00CC66,
failure 0xCC3333, warning 0xFF9900, info 0x3399FF). Mentions are never parsed from event text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from halswarm.core.approvals import approve_command, deny_command
from halswarm.core.chatops.components import decided, permission_buttons, remediation_buttons, reply_line
from halswarm.supervisor.redact import redact

COLORS = {"success": 0x00CC66, "error": 0xCC3333, "warning": 0xFF9900, "info": 0x3399FF}
EMOJI = {"success": ":white_check_mark:", "error": ":red_circle:", "warning": ":warning:",
         "info": ":information_source:"}
SOURCE = "hal-o-swarm"


NO_VALUES: Mapping[str, float | None] = MappingProxyType({})


class Notification(NamedTuple):
    """What one route sends for one event (a tuple: one is made per routed event)."""

    event: dict[str, Any]
    route: str
    values: Mapping[str, float | None] = NO_VALUES
    edit: bool = False  # not a new message: the edit of a posted permission request once answered

    @property
    def type(self) -> str:
        return str(self.event.get("type") or "event")

    @property
    def data(self) -> Any:
        return redact(self.event.get("data"))


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def severity(n: Notification) -> str:
    t, data = n.type, n.data if isinstance(n.data, dict) else {}
    result = str(data.get("result") or data.get("status") or "").lower()
    if t == "condition":
        return "warning"
    if t.endswith((".error", ".failed", "_failed", ".offline", ".retry_cap", ".escalated")):
        return "error"
    if result in ("failure", "failed", "error"):
        return "error"
    if result in ("timeout",) or t.endswith((".warning", ".degraded")) or t == "permission.asked":
        return "warning"
    if t.endswith((".online", ".completed", ".started", ".recovered")) or result in ("success", "completed"):
        return "success"
    return "info"


def _message_of(data: Any) -> str | None:
    if isinstance(data, str):
        return data
    if not isinstance(data, dict):
        return None
    for key in ("message", "reason", "error", "detail"):
        v = data.get(key)
        if isinstance(v, str) and v.strip():
            return v
        if isinstance(v, dict):  # opencode: {"error": {"name": ..., "data": {"message": ...}}}
            inner = _message_of(v.get("data")) or _message_of(v)
            if inner:
                return f"{v.get('name')}: {inner}" if v.get("name") else inner
    return None


def title(n: Notification) -> str:
    ev = n.event
    if n.type == "condition":
        return f"Condition met: {(n.data or {}).get('condition', n.route)}"
    where = ev.get("project") or ev.get("node_id")
    return f"{n.type} · {where}" if where else n.type


def description(n: Notification) -> str:
    data = n.data if isinstance(n.data, dict) else {}
    t = n.type
    if t == "policy.action":
        text = f"{data.get('policy')}: {data.get('action')} → {data.get('result')}"
        extra = data.get("reason") or data.get("error")
        return f"{text} ({extra})" if extra else text
    if t == "policy.retry_cap":
        last = data.get("last_error") or (f"last attempt {data['last_result']}" if data.get("last_result")
                                          else "no detail")
        return (f"{data.get('policy')} gave up on session {data.get('session_id')} after "
                f"{data.get('retry_count')} attempts: {last}")
    if t.startswith("node."):
        return f"node {n.event.get('node_id')} is {t.split('.', 1)[1]}"
    if t == "permission.asked" and isinstance(data.get("id"), str):
        return _asked(n.event, data)
    if t == "condition":
        vals = ", ".join(f"{k} (now {_fmt(v)})" for k, v in n.values.items())
        return vals or str(data.get("condition"))
    msg = _message_of(n.data)
    if msg:
        return msg
    if n.data in (None, {}, []):
        return t
    return _cut(json.dumps(n.data, default=str, separators=(",", ":")), 300)


def _asked(ev: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """A permission request names what it asks for and the exact halctl lines that answer it."""
    rid = str(data["id"])
    meta = m if isinstance(m := data.get("metadata"), dict) else {}
    patterns = p if isinstance(p := data.get("patterns"), list) else []
    what = meta.get("command") or ", ".join(str(p) for p in patterns[:5]) or "-"
    return (f"session {ev.get('session_id')} asks for {data.get('permission') or 'permission'}: "
            f"{_cut(str(what), 200)} · approve: {approve_command(rid)} · deny: {deny_command(rid)}")


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.0f}"


def fields(n: Notification) -> list[tuple[str, str]]:
    ev = n.event
    out = [(label, str(ev[key])) for label, key in (("Node", "node_id"), ("Project", "project"),
                                                   ("Session", "session_id")) if ev.get(key)]
    out.extend((k, _fmt(v)) for k, v in n.values.items())
    if ev.get("timestamp"):
        out.append(("Time", str(ev["timestamp"])))
    return out


def session_url(n: Notification, console_url: str | None) -> str | None:
    """The web console's page of the event's session, when the console's public URL is configured."""
    sid = n.event.get("session_id")
    if not console_url or not isinstance(sid, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", sid):
        return None
    return f"{console_url}/ui/sessions/{sid}"


def discord_components(n: Notification, console_url: str | None = None) -> list[dict[str, Any]]:
    """Buttons for a message the bot posts (a plain webhook cannot carry them): Approve / Always / Deny on a
    permission request (and on its escalation), Run check / Run on an alert or an escalated remediation."""
    data = n.data if isinstance(n.data, dict) else {}
    if n.type in ("permission.asked", "approval.escalated") and isinstance(data.get("id"), str):
        return permission_buttons(data["id"], n.event.get("session_id"), console_url)
    if n.type == "alert.firing":
        return remediation_buttons(data.get("incident"), data.get("host"))
    if n.type == "remediation.escalated":
        hosts = h if isinstance(h := data.get("hosts"), list) else []
        return remediation_buttons(data.get("incident"), hosts[0] if len(hosts) == 1 else None)
    return []


def discord_payload(n: Notification, *, webhook: bool = True, console_url: str | None = None) -> dict[str, Any]:
    sev = severity(n)
    embed: dict[str, Any] = {
        "title": _cut(title(n), 256),
        "description": _cut(description(n), 4096),
        "color": COLORS[sev],
        "fields": [{"name": _cut(k, 256), "value": _cut(v, 1024), "inline": True} for k, v in fields(n)][:25],
        "footer": {"text": _cut(f"{SOURCE} · {n.route}", 2048)},
    }
    if n.event.get("timestamp"):
        embed["timestamp"] = n.event["timestamp"]
    link = session_url(n, console_url)
    if link:
        embed["url"] = link  # the title opens the session in the web console
    body: dict[str, Any] = {"embeds": [embed], "allowed_mentions": {"parse": []}}
    if webhook:
        body["username"] = "HAL-O-SWARM"
    else:
        components = discord_components(n, console_url)
        if components:
            body["components"] = components
    return body


def discord_decided(posted: dict[str, Any], replied: Notification) -> dict[str, Any]:
    """The edit of a posted permission request once answered (by anyone: a button, halctl, the console or
    the timeout policy): who answered, how, and no buttons left."""
    data = replied.data if isinstance(replied.data, dict) else {}
    reply = str(data.get("reply") or "")
    colour = COLORS["error"] if reply == "reject" else COLORS["success"]
    msg = data.get("message") if isinstance(data.get("message"), str) else None
    return decided(posted, reply_line(reply, str(data.get("actor") or "?"), msg), colour)


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(n: Notification, channel: str | None = None) -> dict[str, Any]:
    sev = severity(n)
    head = _cut(title(n), 150)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head, "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"{EMOJI[sev]} {_mrkdwn(description(n))}",
                                                                    3000)}},
    ]
    fs = fields(n)
    if fs:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": _cut(f"*{_mrkdwn(k)}*\n{_mrkdwn(v)}", 2000)} for k, v in fs][:10]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(_mrkdwn(f"{SOURCE} · {n.route}"),
                                                                                   3000)}]})
    body: dict[str, Any] = {"text": _cut(f"{head}: {description(n)}", 3000), "blocks": blocks}
    if channel:
        body["channel"] = channel
    return body


def webhook_payload(n: Notification, target: str) -> dict[str, Any]:
    ev = dict(n.event)
    ev["data"] = n.data
    out = {"source": SOURCE, "route": n.route, "target": target, "severity": severity(n), "title": title(n),
           "text": description(n), "event": ev, "conditions": dict(n.values)}
    data = n.data if isinstance(n.data, dict) else {}
    if n.type == "permission.asked" and isinstance(data.get("id"), str):
        out["approve_command"] = approve_command(data["id"])  # for a bot that offers the answer as a button
        out["deny_command"] = deny_command(data["id"])
    return out
