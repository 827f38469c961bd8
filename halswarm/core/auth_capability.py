"""What each coding-agent CLI offers for authentication (go-original.md 9.1, corrected).

Pure data and pure functions, no I/O: the agent, the supervisor (OAuth trigger, manual guidance)
and halctl (SSH login) all read this one table.

Corrections to the Go matrix, from the real CLIs (reference/peers.md 3-5):
- codex's status command is ``codex login status`` (``--status`` does not exist, rc 2);
- opencode's device flow is ``opencode auth login -p openai -m "ChatGPT Pro/Plus (headless)"``
  (there is no ``--device-code`` flag); ``opencode auth list`` is the status command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AUTHENTICATED = "authenticated"
UNAUTHENTICATED = "unauthenticated"
NOT_INSTALLED = "not_installed"
ERROR = "error"
MANUAL_REQUIRED = "manual_required"
STATUSES = (AUTHENTICATED, UNAUTHENTICATED, NOT_INSTALLED, ERROR, MANUAL_REQUIRED)

# OAuthResult statuses (go-original.md 9.3)
CHALLENGE = "challenge"
SUCCESS = "success"
FAILURE = "failure"

TOOL_IDS = ("claude_code", "codex", "opencode")


@dataclass(frozen=True)
class ToolCapability:
    tool: str
    binary: str  # default binary name
    path_key: str  # key in the agent's ``tool_paths``
    status_args: tuple[str, ...]  # argv after the binary
    login_args: tuple[str, ...]  # the interactive login the runbook tells operators to run
    remote_oauth: bool
    flows: tuple[str, ...] = ()
    # device flow argv after the binary (None: no remote flow)
    device_args: tuple[str, ...] | None = None
    login_methods: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def status_command(self) -> str:
        return " ".join((self.binary, *self.status_args))

    @property
    def login_command(self) -> str:
        return " ".join((self.binary, *self.login_args))

    @property
    def manual_hint(self) -> str:
        return f"SSH into agent and run: {self.login_command}"


OPENCODE_DEVICE_PROVIDERS: dict[str, str] = {
    # provider id -> login method label that runs a device-code flow without prompts
    "openai": "ChatGPT Pro/Plus (headless)",
}

CAPABILITIES: dict[str, ToolCapability] = {
    "claude_code": ToolCapability(
        tool="claude_code",
        binary="claude",
        path_key="claude",
        status_args=("auth", "status"),
        login_args=("auth", "login"),
        remote_oauth=False,
        login_methods={"browser": ("auth", "login"), "console": ("auth", "login", "--console")},
    ),
    "codex": ToolCapability(
        tool="codex",
        binary="codex",
        path_key="codex",
        status_args=("login", "status"),
        login_args=("login", "--device-auth"),
        remote_oauth=True,
        flows=("device_code",),
        device_args=("login", "--device-auth"),
        login_methods={
            "device": ("login", "--device-auth"),
            "browser": ("login",),
            "api-key": ("login", "--with-api-key"),
        },
    ),
    "opencode": ToolCapability(
        tool="opencode",
        binary="opencode",
        path_key="opencode",
        status_args=("auth", "list"),
        login_args=("auth", "login"),
        remote_oauth=True,
        flows=("device_code",),
        device_args=("auth", "login", "-p", "openai", "-m", OPENCODE_DEVICE_PROVIDERS["openai"]),
        login_methods={"interactive": ("auth", "login")},
    ),
}


def capability(tool: str) -> ToolCapability | None:
    return CAPABILITIES.get(tool)


def opencode_device_args(provider: str | None, method: str | None = None) -> tuple[str, ...] | None:
    """argv (after the binary) of opencode's device flow for ``provider``; None if it has none."""
    provider = provider or "openai"
    label = method or OPENCODE_DEVICE_PROVIDERS.get(provider)
    if label is None:
        return None
    return ("auth", "login", "-p", provider, "-m", label)


def no_remote_reason(tool: str) -> str:
    return f"Tool '{tool}' does not support remote OAuth flows"


def manual_guidance(tool: str, node_id: str | None, reason: str | None = None) -> dict[str, Any]:
    """The runbook's ``manual_guidance`` object (RUNBOOK "Manual Authentication Procedures")."""
    cap = capability(tool)
    known = cap is not None
    login = cap.login_command if cap else f"{tool} auth login"
    target = f"ssh user@{node_id}" if node_id else "the target agent server"
    steps = [
        f"SSH into the agent server: {target}",
        f"Run the login command: {login}",
        "Follow the browser-based authentication flow",
    ]
    if cap is not None:
        steps.append(f"Verify auth status: {cap.status_command}")
    if reason is None:
        reason = no_remote_reason(tool) if known else f'tool "{tool}" is not supported for remote oauth'
    return {
        "tool": tool,
        "reason_code": "no_remote_oauth" if known else "provider_unsupported",
        "reason": reason,
        "steps": steps,
        "login_command": login,
        "node_id": node_id or "",
    }


def manual_required(tool: str, node_id: str | None, reason: str | None = None) -> dict[str, Any]:
    """The whole ``manual_required`` answer of ``POST /api/v1/oauth/trigger``."""
    guidance = manual_guidance(tool, node_id, reason)
    return {"status": MANUAL_REQUIRED, "reason": guidance["reason"], "manual_guidance": guidance}
