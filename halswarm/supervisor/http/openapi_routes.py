"""What the OpenAPI document says of each route beyond what FastAPI sees: summary, one-line description
and the error answers its handler can give besides the derived ones (see ``error_statuses``).

One row per operation; ``tests/integration/test_openapi_doc.py`` fails on a route without a row or a
stale row, and the schemathesis fuzz (``status_code_conformance``) fails on a status a route answers
but its row does not list, so the table cannot drift silently.
"""

from __future__ import annotations

from typing import NamedTuple

# Errors of a route that dispatches a command to an agent: no such node/session/project (404), the
# agent failed (502), none can take it (503), it timed out (504).
DISPATCH = frozenset({"404", "502", "503", "504"})


class RouteDoc(NamedTuple):
    summary: str
    description: str
    extra: frozenset[str] = frozenset()


def _r(summary: str, description: str, *extra: str | frozenset[str]) -> RouteDoc:
    codes: set[str] = set()
    for e in extra:
        codes |= {e} if isinstance(e, str) else set(e)
    return RouteDoc(summary, description, frozenset(codes))


V1 = "/api/v1"
ROUTES: dict[tuple[str, str], RouteDoc] = {
    ("GET", "/healthz"): _r("Liveness", "Answers while the process serves HTTP, with its version."),
    ("GET", "/readyz"): _r("Readiness", "Each component's state; 503 while one is not ready.", "503"),
    ("GET", "/metrics"): _r("Prometheus metrics", "The supervisor's metrics in the Prometheus text format."),
    ("GET", f"{V1}/nodes"): _r("List nodes",
                                "Every known node with its state, projects and sessions, by id; paged by cursor."),
    ("GET", f"{V1}/nodes/{{node_id}}"): _r("Get a node", "One node by id."),
    ("GET", f"{V1}/nodes/{{node_id}}/auth"): _r("Node auth state",
                                                "The node's tool auth states and credential sync."),
    ("GET", f"{V1}/sessions"): _r("List sessions",
                                   "Sessions, newest first, filtered by project, node or status; paged by cursor."),
    ("GET", f"{V1}/sessions/{{session_id}}"): _r("Get a session", "One session by id."),
    ("POST", f"{V1}/sessions"): _r("Create a session", "Starts an opencode session for a project on a node.",
                                   DISPATCH),
    ("POST", f"{V1}/sessions/{{session_id}}/prompt"): _r("Prompt a session", "Sends a message to the session.",
                                                         DISPATCH),
    ("POST", f"{V1}/sessions/{{session_id}}/resume"): _r("Resume a session", "Resumes a stopped session.",
                                                         DISPATCH),
    ("POST", f"{V1}/sessions/{{session_id}}/restart"): _r("Restart a session", "Restarts the session.",
                                                          DISPATCH),
    ("POST", f"{V1}/sessions/{{session_id}}/handover"): _r("Hand a session over",
                                                           "Moves the session to another node.", DISPATCH),
    ("DELETE", f"{V1}/sessions/{{session_id}}"): _r("Kill a session", "Stops the session on its node.", DISPATCH),
    ("GET", f"{V1}/approvals"): _r("List pending approvals",
                                   "Agents' permission requests still waiting for an answer, across the fleet, "
                                   "oldest first; paged by cursor."),
    ("POST", f"{V1}/approvals/{{approval_id}}"): _r(
        "Answer an approval", "Replies once, always or reject to one pending permission request through its "
        "agent; 409 when it was already answered.", DISPATCH, "409"),
    ("GET", f"{V1}/events"): _r("List events",
                                 "Stored events by time (order=asc or desc), filtered and paged by cursor."),
    ("GET", f"{V1}/events/stream"): _r("Stream events", "Live events as server-sent events."),
    ("POST", f"{V1}/commands"): _r("Run a command", "Dispatches a typed command to an agent, waiting or not.",
                                   DISPATCH),
    ("GET", f"{V1}/commands/{{command_id}}"): _r("Get a command", "A command's state and result."),
    ("GET", f"{V1}/audit"): _r("Audit log", "Who did what, newest first, filtered and paged by cursor."),
    ("GET", f"{V1}/cost"): _r("Cost report", "Spend of the default period, with provider poll state."),
    ("GET", f"{V1}/cost/status"): _r("Cost poll status", "Each cost provider's last poll."),
    ("POST", f"{V1}/cost/refresh"): _r("Refresh costs", "Polls the cost providers now.", "504"),
    ("GET", f"{V1}/cost/{{period}}"): _r("Cost of a period", "Spend of today, week or month."),
    ("GET", f"{V1}/policies"): _r("Policies", "The auto-remediation policies in force."),
    ("GET", f"{V1}/dependencies"): _r("Dependencies", "External dependencies and their health."),
    ("GET", f"{V1}/auth/drift"): _r("Credential drift", "Nodes whose credentials or tool auth drifted."),
    ("POST", f"{V1}/oauth/trigger"): _r("Trigger OAuth", "Asks a node to re-run a tool's OAuth login.", DISPATCH),
    ("POST", f"{V1}/commands/credentials/push"): _r("Push credentials",
                                                    "Pushes the credential set to one or all nodes.", DISPATCH),
    ("GET", f"{V1}/env/manifest"): _r("Env manifest", "The manifest nodes are checked against; 404 if none.",
                                      "404"),
    ("PUT", f"{V1}/env/manifest"): _r("Replace the env manifest", "Validates and stores a new manifest."),
    ("GET", f"{V1}/env/status"): _r("Env status", "Every node's environment state."),
    ("GET", f"{V1}/env/status/{{node_id}}"): _r("Env status of a node", "One node's environment items."),
    ("GET", f"{V1}/env/drift"): _r("Env drift", "Items that differ from the manifest."),
    ("POST", f"{V1}/env/check/{{node_id}}"): _r("Check a node's env", "Runs env_check on the node.", DISPATCH),
    ("POST", f"{V1}/env/provision/{{node_id}}"): _r("Provision a node's env",
                                                    "Runs env_provision on the node.", DISPATCH),
    ("POST", f"{V1}/env/approve/{{node_id}}"): _r("Approve an env item",
                                                  "Runs an approved item's playbook for the node.", DISPATCH, "409"),
    ("GET", f"{V1}/agent-md/{{project}}"): _r("AGENT.md of a project", "The project's AGENT.md on a node.",
                                              DISPATCH),
    ("GET", f"{V1}/agent-md/{{project}}/diff"): _r("AGENT.md diff", "The node's AGENT.md against the template.",
                                                   DISPATCH),
    ("GET", f"{V1}/agent-md/{{project}}/template"): _r("AGENT.md template", "The supervisor's template.",
                                                       DISPATCH),
    ("POST", f"{V1}/agent-md/sync"): _r("Sync AGENT.md", "Writes the template to the project's nodes.", DISPATCH),
    ("GET", f"{V1}/remediations"): _r("List remediations", "Recorded remediations, filtered and paged."),
    ("POST", f"{V1}/remediations"): _r("Record a remediation", "Stores a remediation run's outcome.", "409"),
    ("POST", f"{V1}/alerts"): _r("Receive alerts", "Alertmanager's webhook: each firing alert starts its "
                                 "remediation (remediation.auto) or is routed with the halctl command."),
    ("POST", f"{V1}/chat/discord/interactions"): _r(
        "Discord interactions", "Discord's Interactions Endpoint URL: no bearer token; admitted only with a valid "
        "Ed25519 signature of the configured application, a fresh timestamp and no replay (else 401).", "401"),
    ("POST", f"{V1}/chat/slack/commands"): _r(
        "Slack slash commands", "Slack's slash command Request URL: no bearer token; admitted only with a valid "
        "v0 signature under the signing secret, a fresh timestamp and no replay (else 401).", "401"),
    ("POST", f"{V1}/chat/slack/interactions"): _r(
        "Slack interactions", "Slack's interactivity Request URL (Block Kit button presses): signed like the slash "
        "commands; answered 200 with no body at once, the outcome replaces the message later.", "401"),
}

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def error_statuses(method: str, *, authenticated: bool, has_params: bool, has_path_ids: bool,
                   extra: frozenset[str]) -> set[str]:
    """The error statuses one operation can answer: 500 always; 401/403/429 behind auth; 400 with
    parameters or a body; 404 with path ids; 413 when a body is read; plus the route's own ``extra``.
    (A malformed or oversized Content-Length header is refused with 400/413 on any route; that is not
    repeated on the parameterless GETs.)"""
    codes = {"500"} | set(extra)
    if authenticated:
        codes |= {"401", "403", "429"}
    if has_params or method in BODY_METHODS:
        codes.add("400")
    if has_path_ids:
        codes.add("404")
    if method in BODY_METHODS:
        codes.add("413")
    return codes
