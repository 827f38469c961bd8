"""Commands of the operator runbook that name one of our programs (for tests/integration/test_runbook.py)."""

from __future__ import annotations

import re

PROGRAMS = ("halctl", "hal-supervisor", "hal-agent", "sqlite3")
_NAMED = re.compile(r"(?<![\w.-])(?:/usr/local/bin/)?(halctl|hal-supervisor|hal-agent|sqlite3)(?![\w-])")
_FENCE = re.compile(r"^\s*```")
_INLINE = re.compile(r"`([^`\n]+)`")


def _logical_lines(block: list[str]) -> list[str]:
    """Join backslash continuations; drop comments and blank lines."""
    out, buf = [], ""
    for raw in block:
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
            continue
        out.append((buf + line).strip())
        buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def extract_commands(markdown: str) -> list[str]:
    """Every shell line of a fenced code block (bash/sh or unlabelled) and every inline code span that
    names halctl, hal-supervisor, hal-agent or sqlite3, in order, without duplicates."""
    found: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        if _FENCE.match(lines[i]):
            lang = lines[i].strip().strip("`").strip().lower()
            j = i + 1
            while j < len(lines) and not _FENCE.match(lines[j]):
                j += 1
            if lang in ("", "bash", "sh", "shell", "console"):
                found += [ln for ln in _logical_lines(lines[i + 1:j]) if _NAMED.search(ln)]
            i = j + 1
            continue
        found += [span.strip() for span in _INLINE.findall(lines[i]) if _NAMED.search(span) and " " in span.strip()]
        i += 1
    seen: set[str] = set()
    return [c for c in found if not (c in seen or seen.add(c))]  # type: ignore[func-returns-value]


# The runbook lines that need systemd, journald or the deployed processes: run as typed on the drill
# fleet's hosts by tests/fleet/drills/test_drills_runbook.py (`ssh <host> "X"` runs X on that host),
# each with the outcome it checks. tests/integration/test_runbook.py counts them as covered, so every
# runbook command sits in exactly one of its RUN, this DRILL_RUN, or its NOT_RUN.
_ERR_ONLY = "only error lines of the daemon (no info/warning), the provoked error among them"
DRILL_RUN: dict[str, str] = {
    "systemctl status hal-supervisor": "exit 0, 'active (running)'; exit 3, 'inactive' when stopped",
    "sudo systemctl status hal-supervisor": "exit 0, 'active (running)'",
    "sudo systemctl restart hal-supervisor": "a new main PID, active, the agent back online",
    "sudo systemctl stop hal-supervisor": "inactive",
    "sudo systemctl start hal-supervisor": "active, the agent back online",
    "systemctl show hal-supervisor -p NRestarts": "NRestarts=<n>, systemd's counter",
    "systemctl show hal-supervisor -p MemoryLimit": "MemoryLimit=<value> (deprecated alias; the unit sets MemoryMax)",
    "sudo systemctl status hal-agent": "exit 0, 'active (running)'",
    "systemctl status hal-agent": "exit 0, 'active (running)'",
    "sudo systemctl restart hal-agent": "a new main PID, active, the node back online",
    "systemctl show hal-agent -p MemoryLimit": "MemoryLimit=<value>",
    "systemctl show hal-agent -p NRestarts": "NRestarts=<n>",
    "sudo journalctl -u hal-supervisor -n 50": "at most 50 lines of the unit",
    'sudo journalctl -u hal-supervisor --since "5 minutes ago"': "the lines of the restarted process",
    'sudo journalctl -u hal-supervisor | grep -i "memory\\|leak"': "the daemon's 'memory:' warning with figures",
    'sudo journalctl -u hal-supervisor -p err --since "24 hours ago"': "no info/warning line of the daemon",
    "sudo journalctl -u hal-supervisor -p err -n 20": "no info/warning line of the daemon",
    'sudo journalctl -u hal-supervisor -p err --since "1 hour ago"': "no info/warning line of the daemon",
    "sudo journalctl -u hal-supervisor -n 1000 > /tmp/supervisor.log": "a file of the unit's lines",
    "sudo journalctl -u hal-agent -n 50": "at most 50 lines of the unit",
    'sudo journalctl -u hal-agent --since "1 minute ago"': "the lines of the restarted process",
    'sudo journalctl -u hal-agent | grep -i "memory\\|leak"': "the daemon's 'memory:' warning with figures",
    'sudo journalctl -u hal-agent -p err --since "24 hours ago"': _ERR_ONLY,
    'sudo journalctl -u hal-agent --since "5 minutes ago"': "the lines of the restarted process",
    "sudo journalctl -u hal-agent -n 1000 > /tmp/agent.log": "a file of the unit's lines",
    'sudo journalctl -u hal-agent | grep -i "auth"': "the agent's rejected-token error",
    "ps aux | grep hal-supervisor": "the unit's main process, by its console script",
    "ps aux | grep hal-agent": "the unit's main process, by its console script",
    "ss -tnp | grep hal-supervisor | wc -l": "the supervisor's TCP connections (>= 1: the agent)",
    'ssh supervisor-host "sudo systemctl status hal-supervisor"': "inner command on the supervisor host: active",
    'ssh supervisor-host "sudo systemctl restart hal-supervisor"': "inner command on the supervisor host: "
                                                                   "new PID, agent back online",
    'ssh agent-host "sudo systemctl restart hal-agent"': "inner command on the agent host: new PID, online",
}
