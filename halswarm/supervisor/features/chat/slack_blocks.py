"""Slack Block Kit messages: a command's embed as blocks, the notification of a permission request, a firing
alert or an escalated remediation with its buttons, and that message once someone decided.

Text that comes from data (session ids, commands, project names) is escaped (&, <, >) so it can never
become a mention or a link; the colour of an embed becomes an emoji (Block Kit has no colour)."""

from __future__ import annotations

import json
from typing import Any

from halswarm.core.chatops.components import remediation_buttons
from halswarm.core.chatops.embeds import FAILURE, INFO, SUCCESS, TIMEOUT
from halswarm.protocol import is_permission_id
from halswarm.supervisor.notify.formats import Notification, slack_payload

Block = dict[str, Any]
APPROVE_PREFIX, REMEDIATE_PREFIX = "hal_approve_", "hal_remediate_"
REPLIES = {"once": "Approve", "always": "Always", "reject": "Deny"}
DONE_REPLY = {"once": "Approved (once)", "always": "Approved (always)", "reject": "Denied"}
ACTIONS_BLOCK = "hal_actions"
OUTCOME_BLOCK = "hal_outcome"
_EMOJI = {SUCCESS: ":white_check_mark:", FAILURE: ":red_circle:", TIMEOUT: ":warning:", INFO: ":information_source:"}
MAX_BLOCKS = 50  # Slack refuses a message with more


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _mrkdwn(discord_text: str) -> str:
    """Discord markdown of the shared handlers (`**bold**`, backticks) as Slack mrkdwn, escaped."""
    return escape(discord_text).replace("**", "*")


def embed_blocks(embed: dict[str, Any]) -> list[Block]:
    """One embed of the shared chat handlers as Block Kit (header, text, up to 10 fields)."""
    emoji = _EMOJI.get(int(embed.get("color") or INFO), _EMOJI[INFO])
    blocks: list[Block] = [{"type": "header", "text": {"type": "plain_text", "emoji": True,
                                                       "text": _cut(f"{emoji} {embed.get('title') or ''}", 150)}}]
    if embed.get("description"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(_mrkdwn(embed["description"]),
                                                                                 3000)}})
    fields = [f for f in embed.get("fields") or [] if isinstance(f, dict)][:10]
    if fields:
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": _cut(f"*{escape(str(f['name']))}*\n{_mrkdwn(str(f['value']))}", 2000)}
            for f in fields]})
    return blocks


def embed_message(embed: dict[str, Any], response_type: str = "in_channel") -> dict[str, Any]:
    """A slash command's answer (the HTTP response, or a message posted to its response_url)."""
    text = str(embed.get("title") or "")
    if embed.get("description"):
        text += f": {embed['description']}"
    return {"response_type": response_type, "text": _cut(escape(text), 3000), "blocks": embed_blocks(embed)}


def ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "text": _cut(escape(text), 3000)}


def buttons(event: dict[str, Any]) -> list[Block] | None:
    """The action buttons an event's notification carries, or None when it has none."""
    data = as_dict(event.get("data"))
    kind = event.get("type")
    if kind in ("permission.asked", "approval.escalated") and is_permission_id(data.get("id")):
        rid = data["id"]
        return [_button(REPLIES["once"], f"{APPROVE_PREFIX}once", rid, "primary"),
                _button(REPLIES["always"], f"{APPROVE_PREFIX}always", rid),
                _button(REPLIES["reject"], f"{APPROVE_PREFIX}reject", rid, "danger")]
    if kind == "alert.firing":  # the alert's own host, as on Discord (`formats.discord_components`)
        return _remediation(data.get("incident"), data.get("host"))
    if kind == "remediation.escalated":
        hosts: list[Any] = data["hosts"] if isinstance(data.get("hosts"), list) else []
        return _remediation(data.get("incident"), hosts[0] if len(hosts) == 1 else None)
    return None


def _remediation(incident: object, host: object) -> list[Block] | None:
    """Run check / Run (Run asks for confirmation) for the incident on the host (None: the incident's default
    host); None when either is not an incident id or a host name, so a press can only name what was shown."""
    if not isinstance(incident, str) or not remediation_buttons(incident, host):
        return None
    value = json.dumps({"incident": incident, "host": host})
    run = _button("Run", f"{REMEDIATE_PREFIX}run", value, "danger")
    run["confirm"] = {"title": {"type": "plain_text", "text": "Run the remediation?"},
                      "text": {"type": "mrkdwn", "text": _cut(f"`halctl remediate {escape(incident)}` "
                                                              "changes the hosts it names.", 300)},
                      "confirm": {"type": "plain_text", "text": "Run"},
                      "deny": {"type": "plain_text", "text": "Cancel"}}
    return [_button("Run check", f"{REMEDIATE_PREFIX}check", value, "primary"), run]


def _button(label: str, action_id: str, value: str, style: str | None = None) -> Block:
    out: Block = {"type": "button", "text": {"type": "plain_text", "text": label}, "action_id": action_id,
                  "value": value[:2000]}
    if style:
        out["style"] = style
    return out


def notification(event: dict[str, Any], channel: str) -> dict[str, Any] | None:
    """The chat.postMessage body of an event that carries buttons (the routed format, plus the buttons)."""
    actions = buttons(event)
    if actions is None:
        return None
    body = slack_payload(Notification(event, "chatops"), channel)
    body["blocks"] = [*body["blocks"], {"type": "actions", "block_id": ACTIONS_BLOCK, "elements": actions}]
    return body


def decided(blocks: list[Block], outcome: str, *, keep_buttons: bool) -> list[Block]:
    """The message's blocks after a decision: the outcome line (the newest last, at most 5) replaces the
    previous one, and the buttons go unless they can still be used (a check run, a failed answer)."""
    kept = [b for b in blocks if isinstance(b, dict) and b.get("block_id") != ACTIONS_BLOCK]
    lines: list[str] = []
    previous = next((b for b in kept if b.get("block_id") == OUTCOME_BLOCK), None)
    if previous is not None:
        kept.remove(previous)
        lines = [str(e.get("text")) for e in previous.get("elements") or [] if isinstance(e, dict)][-4:]
    out = [*kept[: MAX_BLOCKS - 2],
           {"type": "context", "block_id": OUTCOME_BLOCK,
            "elements": [{"type": "mrkdwn", "text": _cut(t, 3000)} for t in [*lines, outcome]]}]
    actions = next((b for b in blocks if isinstance(b, dict) and b.get("block_id") == ACTIONS_BLOCK), None)
    if keep_buttons and actions is not None:
        out.append(actions)
    return out
