"""The Discord slash commands the supervisor answers: names, options, the role each needs, and whether
its answer is deferred (it waits for an agent, longer than Discord's 3 s for a first answer).

One table serves both the interactions route (authorization, dispatch) and `halctl chatops discord
register` (the JSON Discord's bulk-overwrite route takes), so the two cannot drift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from halswarm.core.roles import Role

# Discord application command option types.
SUB_COMMAND, STRING, INTEGER, BOOLEAN = 1, 3, 4, 5
CHAT_INPUT = 1  # application command type of a slash command


@dataclass(frozen=True)
class Option:
    name: str
    description: str
    type: int = STRING
    required: bool = False
    choices: tuple[str, ...] = ()
    min_value: int | None = None
    max_value: int | None = None
    options: tuple[Option, ...] = ()  # a SUB_COMMAND's own options

    def to_discord(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "description": self.description, "type": self.type}
        if self.type != SUB_COMMAND:
            out["required"] = self.required
        if self.choices:
            out["choices"] = [{"name": c, "value": c} for c in self.choices]
        if self.min_value is not None:
            out["min_value"] = self.min_value
        if self.max_value is not None:
            out["max_value"] = self.max_value
        if self.options:
            out["options"] = [o.to_discord() for o in self.options]
        return out


@dataclass(frozen=True)
class ChatCommand:
    name: str
    description: str
    role: Role
    deferred: bool = False
    options: tuple[Option, ...] = ()

    def to_discord(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "type": CHAT_INPUT,
                "options": [o.to_discord() for o in self.options]}


_SESSION = Option("session_id", "The session id (see /status)", required=True)
_APPROVAL = Option("approval_id", "The request id (per_..., see /approvals)", required=True)
LOGS_MAX = 50

COMMANDS: tuple[ChatCommand, ...] = (
    ChatCommand("status", "Sessions (and the nodes serving them) of a project, or of the fleet", Role.viewer,
                options=(Option("project", "Project name (all projects when omitted)"),)),
    ChatCommand("nodes", "Agent nodes and their heartbeats", Role.viewer),
    ChatCommand("logs", "A session's latest events", Role.viewer,
                options=(_SESSION, Option("limit", "How many events (default 20)", INTEGER, min_value=1,
                                          max_value=LOGS_MAX))),
    ChatCommand("resume", "Resume a session, optionally with a message", Role.operator, deferred=True,
                options=(_SESSION, Option("message", "A prompt to send once resumed"))),
    ChatCommand("inject", "Send a prompt to a session", Role.operator, deferred=True,
                options=(_SESSION, Option("message", "The prompt", required=True))),
    ChatCommand("restart", "Restart a session", Role.operator, deferred=True, options=(_SESSION,)),
    ChatCommand("kill", "Kill a session", Role.operator, deferred=True, options=(_SESSION,)),
    ChatCommand("start", "Start a session for a project", Role.operator, deferred=True,
                options=(Option("project", "Project name", required=True), Option("prompt", "First prompt"),
                         Option("node_id", "Run on this node (else any node serving the project)"))),
    ChatCommand("cost", "LLM cost over a period", Role.viewer,
                options=(Option("period", "today, week or month (default today)",
                                choices=("today", "week", "month")),)),
    ChatCommand("remediate", "Run (or route) a runbook remediation", Role.admin, deferred=True,
                options=(Option("incident", "Runbook incident id", required=True),
                         Option("host", "Inventory host (agent incidents)"),
                         Option("check", "Check mode: report what would change, change nothing", BOOLEAN))),
    ChatCommand("env", "Environment manifest", Role.viewer,
                options=(Option("drift", "Nodes whose environment differs from the manifest", SUB_COMMAND,
                                options=(Option("node_id", "Only this node"), Option("project", "Only this project"))),
                         )),
    ChatCommand("approve", "Approve an agent's pending permission request", Role.operator, deferred=True,
                options=(_APPROVAL, Option("always", "Also allow the same request for the rest of the session",
                                           BOOLEAN))),
    ChatCommand("deny", "Deny an agent's pending permission request", Role.operator, deferred=True,
                options=(_APPROVAL, Option("message", "Why (the agent's model reads it)"))),
    ChatCommand("approvals", "Pending permission requests, oldest first", Role.viewer,
                options=(Option("project", "Only this project"),)),
)
BY_NAME = {c.name: c for c in COMMANDS}


def registration_payload() -> list[dict[str, Any]]:
    """The body of Discord's bulk-overwrite route (`PUT /applications/{id}[/guilds/{guild}]/commands`)."""
    return [c.to_discord() for c in COMMANDS]


def flatten_options(options: Any) -> tuple[str | None, dict[str, Any]]:
    """(sub-command name or None, {option: value}) of an interaction's `data.options`."""
    if not isinstance(options, list):
        return None, {}
    sub = next((o for o in options if isinstance(o, dict) and o.get("type") == SUB_COMMAND), None)
    if sub is not None:
        return str(sub.get("name")), flatten_options(sub.get("options"))[1]
    return None, {str(o["name"]): o.get("value") for o in options if isinstance(o, dict) and "name" in o}
