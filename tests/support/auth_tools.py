"""Stand-in CLIs for the auth tests: shell scripts answering like claude, codex and opencode do (the
answers recorded in tests/unit/auth/recorded), for deterministic runs; and the answer they expect to an
``oauth_trigger`` for claude_code."""

from __future__ import annotations

from pathlib import Path

RECORDED = Path(__file__).resolve().parents[1] / "unit" / "auth" / "recorded"


CLAUDE = """#!/bin/sh
[ "$1" = --version ] && { echo "2.1.197 (Claude Code)"; exit 0; }
if [ -n "$ANTHROPIC_API_KEY" ]; then
  echo '{"loggedIn": true, "authMethod": "api_key", "apiProvider": "firstParty", "apiKeySource": "ANTHROPIC_API_KEY"}'
  exit 0
fi
echo '{"loggedIn": false, "authMethod": "none", "apiProvider": "firstParty"}'; exit 1
"""
CODEX = """#!/bin/sh
[ "$1" = --version ] && { echo "codex-cli 0.171.0"; exit 0; }
if [ "$1 $2" = "login status" ]; then
  [ -f "$HOME/.codex/auth.json" ] && { echo "API key configured - sk-***abcde" >&2; exit 0; }
  echo "Not logged in" >&2; exit 1
fi
if [ "$1 $2" = "login --device-auth" ]; then
  cat "$HAL_RECORDED/codex_device_auth_challenge.stdout.txt"; sleep 1
  mkdir -p "$HOME/.codex"; echo '{"OPENAI_API_KEY": "sk-from-device"}' > "$HOME/.codex/auth.json"; exit 0
fi
exit 2
"""
OPENCODE = """#!/bin/sh
[ "$1" = --version ] && { echo "1.18.33"; exit 0; }
[ "$1 $2" = "auth list" ] && { cat "$HAL_RECORDED/opencode_auth_list_empty.txt"; exit 0; }
exit 2
"""

# The runbook's manual_required answer for claude_code on node "agent-node-1", written out (not built with
# core.auth_capability.manual_guidance, so that a change of the wording fails the tests).
CLAUDE_MANUAL_REQUIRED = {
    "status": "manual_required",
    "reason": "Tool 'claude_code' does not support remote OAuth flows",
    "manual_guidance": {
        "tool": "claude_code",
        "reason_code": "no_remote_oauth",
        "reason": "Tool 'claude_code' does not support remote OAuth flows",
        "steps": [
            "SSH into the agent server: ssh user@agent-node-1",
            "Run the login command: claude auth login",
            "Follow the browser-based authentication flow",
            "Verify auth status: claude auth status",
        ],
        "login_command": "claude auth login",
        "node_id": "agent-node-1",
    },
}


def stand_in_tools(root: Path) -> dict[str, str]:
    """Write the stand-ins under ``root``; returns the base env for an AuthService using them."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (("claude", CLAUDE), ("codex", CODEX), ("opencode", OPENCODE)):
        p = bin_dir / name
        p.write_text(body)
        p.chmod(0o755)
    home = root / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "HAL_RECORDED": str(RECORDED)}


