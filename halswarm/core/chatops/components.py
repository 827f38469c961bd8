"""Discord message components (buttons) on notifications, and what a press means (pure).

A button's `custom_id` comes back in a component interaction; it is data from the chat, so it is parsed
strictly and mapped to the slash command a person could have typed (`/approve`, `/deny`, `/remediate`):
the same role check, handler and audit row follow. Formats (at most 100 characters, Discord's limit):

    hal:approve:once:<approval id>     hal:approve:always:<approval id>     hal:deny:<approval id>
    hal:rem:check:<incident>:<host>    hal:rem:run:<incident>:<host>        (host may be empty)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from halswarm.core.alerts import HOST_PATTERN

CUSTOM_ID_MAX = 100
ACTION_ROW, BUTTON = 1, 2
PRIMARY, SECONDARY, SUCCESS_STYLE, DANGER, LINK = 1, 2, 3, 4, 5
_APPROVAL = re.compile(r"per_[A-Za-z0-9]{1,64}")
_INCIDENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class Press:
    """A button press as the slash command it stands for: `command` and its options."""

    command: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_custom_id(custom_id: object) -> Press | None:
    """The command a button stands for, or None for anything not made by `permission_buttons` /
    `remediation_buttons` (never trusted beyond these shapes; the service re-checks what it acts on)."""
    if not isinstance(custom_id, str) or len(custom_id) > CUSTOM_ID_MAX or not custom_id.startswith("hal:"):
        return None
    parts = custom_id.split(":")
    if parts[1] == "approve" and len(parts) == 4 and parts[2] in ("once", "always") \
            and _APPROVAL.fullmatch(parts[3]):
        return Press("approve", {"approval_id": parts[3], "always": parts[2] == "always"})
    if parts[1] == "deny" and len(parts) == 3 and _APPROVAL.fullmatch(parts[2]):
        return Press("deny", {"approval_id": parts[2]})
    if parts[1] == "rem" and len(parts) == 5 and parts[2] in ("check", "run") and _INCIDENT.fullmatch(parts[3]) \
            and (parts[4] == "" or HOST_PATTERN.match(parts[4])):
        opts: dict[str, Any] = {"incident": parts[3], "check": parts[2] == "check"}
        if parts[4]:
            opts["host"] = parts[4]
        return Press("remediate", opts)
    return None


def _button(label: str, style: int, custom_id: str) -> dict[str, Any]:
    return {"type": BUTTON, "style": style, "label": label, "custom_id": custom_id}


def permission_buttons(approval_id: str, session_id: str | None, console_url: str | None) -> list[dict[str, Any]]:
    """One action row: Approve / Always / Deny, and a link to the session in the web console when its public
    URL is known. Empty for an id that is not an approval id (nothing to press)."""
    if not _APPROVAL.fullmatch(approval_id):
        return []
    row = [_button("Approve", SUCCESS_STYLE, f"hal:approve:once:{approval_id}"),
           _button("Always", PRIMARY, f"hal:approve:always:{approval_id}"),
           _button("Deny", DANGER, f"hal:deny:{approval_id}")]
    if console_url and session_id and re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", session_id):
        row.append({"type": BUTTON, "style": LINK, "label": "Session",
                    "url": f"{console_url}/ui/sessions/{session_id}"})
    return [{"type": ACTION_ROW, "components": row}]


def remediation_buttons(incident: object, host: object) -> list[dict[str, Any]]:
    """One action row: Run check / Run for the incident on the host (None: the incident's default host);
    empty when either does not fit, so a press can never act on another host than the one named."""
    if not isinstance(incident, str) or not _INCIDENT.fullmatch(incident):
        return []
    if host is not None and not (isinstance(host, str) and HOST_PATTERN.match(host)):
        return []
    h = host or ""
    ids = [f"hal:rem:check:{incident}:{h}", f"hal:rem:run:{incident}:{h}"]
    if any(len(i) > CUSTOM_ID_MAX for i in ids):
        return []
    return [{"type": ACTION_ROW, "components": [_button("Run check", SECONDARY, ids[0]),
                                                _button("Run", DANGER, ids[1])]}]


REPLY_WORDS = {"once": "Approved", "always": "Approved (always)", "reject": "Denied"}


def reply_line(reply: str, actor: str, message: str | None = None) -> str:
    """Who answered a request and how, as the updated message says it."""
    who = f"<@{actor.split(':', 1)[1]}>" if actor.startswith("discord:") and actor[8:].isdigit() else actor
    text = f"{REPLY_WORDS.get(reply, reply)} by {who}"
    return f"{text}: {message[:300]}" if message else text


def decided(message: dict[str, Any] | None, outcome: str, colour: int) -> dict[str, Any]:
    """The notification message once decided: its first embed with an `Outcome` field and the outcome's
    colour, and no buttons left to press. Mentions in the outcome are never pinged."""
    embeds = message.get("embeds") if isinstance(message, dict) else None
    first = dict(embeds[0]) if isinstance(embeds, list) and embeds and isinstance(embeds[0], dict) else {}
    fields = [f for f in first.get("fields") or [] if isinstance(f, dict) and f.get("name") != "Outcome"]
    first["fields"] = [*fields, {"name": "Outcome", "value": outcome[:1024] or "-", "inline": False}][-25:]
    first["color"] = colour
    first.setdefault("title", "Decision")
    return {"embeds": [first], "components": [], "allowed_mentions": {"parse": []}}
