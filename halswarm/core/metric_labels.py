"""Bounded metric label values for what agents choose (event types): a known set plus `other`.

Every distinct label value is a new time series held in memory and served by `/metrics`; an
agent that invents event types must not be able to grow either without bound.
"""

from __future__ import annotations

OTHER = "other"

# opencode's bus events the agent forwards (reference/opencode-openapi.json, reference/peers.md) and the
# events the agent and the supervisor make themselves. A new type shows as `other` until listed here.
OPENCODE_EVENT_TYPES = frozenset({
    "catalog.updated", "command.executed", "file.edited", "file.watcher.updated", "global.disposed",
    "installation.updated", "installation.update-available", "integration.connection.updated",
    "integration.updated", "lsp.client.diagnostics", "lsp.updated", "mcp.tools.changed",
    "message.part.delta", "message.part.removed", "message.part.updated", "message.removed", "message.updated",
    "permission.asked", "permission.replied", "plugin.added", "project.directories.updated", "project.updated",
    "pty.created", "pty.deleted", "pty.exited", "pty.updated", "question.asked", "question.rejected",
    "question.replied", "reference.updated", "server.connected", "server.heartbeat", "server.instance.disposed",
    "session.compacted", "session.created", "session.deleted", "session.diff", "session.error", "session.idle",
    "session.status", "session.updated", "todo.updated", "vcs.branch.updated",
})
HAL_EVENT_TYPES = frozenset({
    "session.state", "session.foreign_refused", "agent.warning", "project.status", "current_task.refresh",
    "opencode.started", "opencode.start_failed", "opencode.restarting", "opencode.exited",
    "env.check.fail", "env.drift.detected", "env.provisioned", "env.approval.started", "env.manifest.updated",
    "env.opencode.restarted", "env.opencode.restart_pending", "agentmd.synced", "auth.changed",
    "auth.oauth_completed", "auth.oauth_triggered", "credential.pushed", "node.online", "node.offline",
    "policy.action", "policy.retry_cap", "cost.daily", "cost.refreshed", "cost.session",
    "dependency.started", "dependency.start_failed", "remediation.started", "remediation.completed",
    "remediation.failed", "remediation.escalated", "remediation.throttled", "approval.replied",
    "approval.escalated",
})
KNOWN_EVENT_TYPES = OPENCODE_EVENT_TYPES | HAL_EVENT_TYPES


def event_type_label(ev_type: str) -> str:
    """`ev_type` when it is a known event type, else `other`."""
    return ev_type if ev_type in KNOWN_EVENT_TYPES else OTHER
