"""The runbook's systemd, journald and process lines, typed as written on the drill fleet's hosts.

Each line of DRILL_RUN (tests/support/runbook.py) runs with ``bash -o pipefail -c`` inside the host it
names: a line about hal-agent on the agent host, the others on the supervisor host; ``ssh <host> "X"``
runs X on that host (the fleet's exec stands in for ssh; HOST_ROOT lines go through nsenter, see there).
The checks are the runbook's outcomes:
``systemctl status`` says active/inactive, ``journalctl -p err`` shows an error the test provoked (the
agent's rejected token) and never an info or warning line (journald priorities from the daemons'
``<N>`` prefixes), the ``memory`` grep finds the daemons' warning once MemoryMax is lowered below the
warning share, ``ps``/``ss`` see the deployed console script. Every change is undone in ``finally``.
"""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.support.fleet.fleet import AGENT_CONFIG, AGENT_UNIT, SUP_CONFIG, SUP_DB, SUP_UNIT, DrillFleet
from tests.support.fleet.molecule import container_pid
from tests.support.runbook import DRILL_RUN
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(1500)

_SSH = re.compile(r'^ssh (supervisor-host|agent-host) "(.*)"$')
_LEVEL = re.compile(r'"level": "(\w+)"')
MEMORY_DROPIN = "45-drill-runbook-memory.conf"
# Lines that need the capabilities a host's root has: `podman exec` drops CAP_SYS_PTRACE, without which root
# cannot read another user's /proc/<pid>/fd, so `ss -p` names no process. These run in the host's namespaces
# through nsenter from the (real) root instead.
HOST_ROOT = {"ss -tnp | grep hal-supervisor | wc -l"}


class Operator:
    """Types runbook lines on the fleet's hosts and remembers which ones it typed."""

    def __init__(self, fleet: DrillFleet) -> None:
        self.fleet = fleet
        self.ran: set[str] = set()

    def host_of(self, line: str) -> tuple[str, str]:
        m = _SSH.match(line)
        if m:
            return (self.fleet.sup if m.group(1) == "supervisor-host" else self.fleet.agent), m.group(2)
        return (self.fleet.agent if "hal-agent" in line else self.fleet.sup), line

    def run(self, line: str, timeout: float = 120) -> tuple[int, str]:
        assert line in DRILL_RUN, f"not a DRILL_RUN runbook line: {line}"
        self.ran.add(line)
        host, inner = self.host_of(line)
        enter = ["podman", "exec", host]
        if line in HOST_ROOT:
            enter = ["nsenter", "-t", str(container_pid(host)), "-m", "-u", "-i", "-n", "-p"]
        proc = subprocess.run([*enter, "bash", "-o", "pipefail", "-c", inner], text=True,
                              capture_output=True, timeout=timeout, check=False)
        return proc.returncode, proc.stdout + proc.stderr

    def ok(self, line: str) -> str:
        code, out = self.run(line)
        assert code == 0, f"{line}\n-> exit {code}\n{out}"
        return out


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    wait_for(pred, what, timeout, interval=0.5)  # each probe is a command on a fleet host: poll gently


def _levels(journal: str) -> list[str]:
    """The `level` of every JSON line the daemon wrote (systemd's own lines about the unit have none)."""
    return [m.group(1) for m in (_LEVEL.search(line) for line in journal.splitlines()) if m]


def _main_pid(fleet: DrillFleet, host: str, unit: str) -> str:
    return fleet.unit_state(host, unit)["MainPID"]


def _restarted(fleet: DrillFleet, host: str, unit: str, old_pid: str) -> None:
    pid = _main_pid(fleet, host, unit)
    assert fleet.active(host, unit) == "active" and pid not in ("0", old_pid), (pid, old_pid)
    assert fleet.wait_node_online(120), f"{fleet.agent} not back online after the restart of {unit}"


# Which DRILL_RUN lines each drill types: together they are all of DRILL_RUN (checked without a fleet).
SERVICE_LINES = [
    "systemctl status hal-supervisor", "sudo systemctl status hal-supervisor",
    'ssh supervisor-host "sudo systemctl status hal-supervisor"', "systemctl show hal-supervisor -p NRestarts",
    "systemctl show hal-supervisor -p MemoryLimit", "ps aux | grep hal-supervisor",
    "ss -tnp | grep hal-supervisor | wc -l", "sudo systemctl restart hal-supervisor",
    'sudo journalctl -u hal-supervisor --since "5 minutes ago"', "sudo journalctl -u hal-supervisor -n 50",
    "sudo journalctl -u hal-supervisor -n 1000 > /tmp/supervisor.log", "sudo systemctl stop hal-supervisor",
    "sudo systemctl start hal-supervisor", 'ssh supervisor-host "sudo systemctl restart hal-supervisor"',
    "systemctl status hal-agent", "sudo systemctl status hal-agent", "systemctl show hal-agent -p NRestarts",
    "systemctl show hal-agent -p MemoryLimit", "ps aux | grep hal-agent", "sudo journalctl -u hal-agent -n 50",
    "sudo journalctl -u hal-agent -n 1000 > /tmp/agent.log", 'ssh agent-host "sudo systemctl restart hal-agent"',
    'sudo journalctl -u hal-agent --since "5 minutes ago"',
]
ERROR_LINES = [
    'sudo journalctl -u hal-agent -p err --since "24 hours ago"', 'sudo journalctl -u hal-agent | grep -i "auth"',
    "sudo systemctl restart hal-agent", 'sudo journalctl -u hal-agent --since "1 minute ago"',
    'sudo journalctl -u hal-supervisor -p err --since "24 hours ago"', "sudo journalctl -u hal-supervisor -p err -n 20",
    'sudo journalctl -u hal-supervisor -p err --since "1 hour ago"',
]
MEMORY_LINES = ['sudo journalctl -u hal-supervisor | grep -i "memory\\|leak"',
                'sudo journalctl -u hal-agent | grep -i "memory\\|leak"']


def test_the_drills_type_every_drill_run_line() -> None:
    assert sorted(set(SERVICE_LINES) | set(ERROR_LINES) | set(MEMORY_LINES)) == sorted(DRILL_RUN)


def _status_active(out: str) -> bool:
    return "Active: active (running)" in out


def test_service_lines_do_what_the_runbook_says(fleet: DrillFleet) -> None:
    op = Operator(fleet)
    sup, agent = fleet.sup, fleet.agent
    try:
        for line in ("systemctl status hal-supervisor", "sudo systemctl status hal-supervisor",
                     'ssh supervisor-host "sudo systemctl status hal-supervisor"'):
            assert _status_active(op.ok(line)), line
        for role, host, unit in (("supervisor", sup, SUP_UNIT), ("agent", agent, AGENT_UNIT)):
            state = fleet.unit_state(host, unit)
            assert op.ok(f"systemctl show hal-{role} -p NRestarts").strip() == f"NRestarts={state['NRestarts']}"
            assert re.fullmatch(r"MemoryLimit=(infinity|\d+)",
                                op.ok(f"systemctl show hal-{role} -p MemoryLimit").strip())
            # ps: the unit's main process, by the deployed console script (the grep's own line aside).
            procs = [ln for ln in op.ok(f"ps aux | grep hal-{role}").splitlines() if "grep" not in ln]
            assert any(ln.split()[1] == state["MainPID"] and f"/bin/hal-{role} --config" in ln for ln in procs), procs
            # The runbook's paths: /usr/local/bin/<command> is the current release's, and runs.
            link = fleet.exec(host, "readlink", "-f", f"/usr/local/bin/hal-{role}").strip()
            assert link == fleet.exec(host, "readlink", "-f", f"/opt/hal-o-swarm/current/bin/hal-{role}").strip()
            exec_start = fleet.exec(host, "systemctl", "show", unit, "-p", "ExecStart", "--value")
            unit_bin = re.search(r"path=(\S+)", exec_start).group(1)  # type: ignore[union-attr]
            assert fleet.exec(host, "readlink", "-f", unit_bin).strip() == link
            config = SUP_CONFIG if role == "supervisor" else AGENT_CONFIG
            assert "OK" in fleet.exec(host, f"/usr/local/bin/hal-{role}", "--config", config, "--validate")
        # sqlite3 is where the runbook runs it (as the database's owner: root would leave root-owned -shm).
        assert fleet.exec(sup, "runuser", "-u", "hal-supervisor", "--", "sqlite3", SUP_DB,
                          "PRAGMA integrity_check;").strip() == "ok"
        assert int(op.ok("ss -tnp | grep hal-supervisor | wc -l").strip()) >= 1  # the agent's WebSocket

        pid = _main_pid(fleet, sup, SUP_UNIT)
        op.ok("sudo systemctl restart hal-supervisor")
        _restarted(fleet, sup, SUP_UNIT, pid)
        new_pid = _main_pid(fleet, sup, SUP_UNIT)
        assert f"hal-supervisor[{new_pid}]" in op.ok('sudo journalctl -u hal-supervisor --since "5 minutes ago"')
        tail = op.ok("sudo journalctl -u hal-supervisor -n 50").splitlines()
        assert 0 < len(tail) <= 52 and any(f"hal-supervisor[{new_pid}]" in ln for ln in tail)  # + boot separators
        op.ok("sudo journalctl -u hal-supervisor -n 1000 > /tmp/supervisor.log")
        saved = fleet.exec(sup, "cat", "/tmp/supervisor.log").splitlines()
        assert 0 < len(saved) <= 1002 and any("hal-supervisor[" in ln for ln in saved)

        op.ok("sudo systemctl stop hal-supervisor")
        assert fleet.active(sup, SUP_UNIT) == "inactive"
        code, out = op.run("systemctl status hal-supervisor")  # the runbook's symptom: "inactive"
        assert code == 3 and "Active: inactive" in out, out
        op.ok("sudo systemctl start hal-supervisor")
        assert fleet.active(sup, SUP_UNIT) == "active" and fleet.wait_node_online(120)
        pid = _main_pid(fleet, sup, SUP_UNIT)
        op.ok('ssh supervisor-host "sudo systemctl restart hal-supervisor"')
        _restarted(fleet, sup, SUP_UNIT, pid)

        for line in ("systemctl status hal-agent", "sudo systemctl status hal-agent"):
            assert _status_active(op.ok(line)), line
        pid = _main_pid(fleet, agent, AGENT_UNIT)
        op.ok('ssh agent-host "sudo systemctl restart hal-agent"')
        _restarted(fleet, agent, AGENT_UNIT, pid)
        new_pid = _main_pid(fleet, agent, AGENT_UNIT)
        assert f"hal-agent[{new_pid}]" in op.ok('sudo journalctl -u hal-agent --since "5 minutes ago"')
        tail = op.ok("sudo journalctl -u hal-agent -n 50").splitlines()
        assert 0 < len(tail) <= 52 and any(f"hal-agent[{new_pid}]" in ln for ln in tail)
        op.ok("sudo journalctl -u hal-agent -n 1000 > /tmp/agent.log")
        saved = fleet.exec(agent, "cat", "/tmp/agent.log").splitlines()
        assert 0 < len(saved) <= 1002 and any("hal-agent[" in ln for ln in saved)
    finally:
        fleet.exec(sup, "rm", "-f", "/tmp/supervisor.log", check=False)
        fleet.exec(agent, "rm", "-f", "/tmp/agent.log", check=False)
    assert op.ran == set(SERVICE_LINES)


AGENT_TOKEN = "/etc/hal-o-swarm/agent.token"  # the deployed agent reads its token here (auth_token_file)


def test_journal_priority_lines_show_errors_and_only_errors(fleet: DrillFleet) -> None:
    """A wrong agent token: the agent logs an error (its rejected token), the supervisor a warning (a bad
    token). `-p err` shows the agent's error and no info/warning line of either daemon; the unfiltered
    journal has both, so the filter is journald's, by the priority each line carries."""
    op = Operator(fleet)
    agent, sup = fleet.agent, fleet.sup
    good = fleet.exec(agent, "cat", AGENT_TOKEN)
    start = time.time() - 1
    try:
        fleet.sh(agent, f"printf '%s\\n' {secrets.token_hex(32)} > {AGENT_TOKEN}")  # same inode, owner, mode
        fleet.exec(agent, "systemctl", "restart", AGENT_UNIT)
        _wait(lambda: "rejected the agent token" in fleet.exec(
            agent, "journalctl", "-u", AGENT_UNIT, "-p", "err", "--since", f"@{int(start)}", "--no-pager"),
            120, "the agent's rejected-token error in its journal at priority err")
        _wait(lambda: "bad or missing token" in fleet.journal(sup, SUP_UNIT, since=start), 60,
              "the supervisor's bad-token warning")
        assert "warning" in _levels(fleet.journal(sup, SUP_UNIT, since=start))
        assert "info" in _levels(fleet.journal(agent, AGENT_UNIT, since=start))

        errors = op.ok('sudo journalctl -u hal-agent -p err --since "24 hours ago"')
        assert "rejected the agent token" in errors
        assert set(_levels(errors)) <= {"error", "critical"}, errors
        assert "auth_token" in op.ok('sudo journalctl -u hal-agent | grep -i "auth"')
        for line in ('sudo journalctl -u hal-supervisor -p err --since "24 hours ago"',
                     "sudo journalctl -u hal-supervisor -p err -n 20",
                     'sudo journalctl -u hal-supervisor -p err --since "1 hour ago"'):
            out = op.ok(line)
            assert "bad or missing token" not in out and set(_levels(out)) <= {"error", "critical"}, out
    finally:
        b64 = base64.b64encode(good.encode()).decode()
        fleet.sh(agent, f"echo {b64} | base64 -d > {AGENT_TOKEN}")
    # The runbook's fix, then its check: the agent back with the right token.
    pid = _main_pid(fleet, agent, AGENT_UNIT)
    op.ok("sudo systemctl restart hal-agent")
    _restarted(fleet, agent, AGENT_UNIT, pid)
    new_pid = _main_pid(fleet, agent, AGENT_UNIT)
    assert f"hal-agent[{new_pid}]" in op.ok('sudo journalctl -u hal-agent --since "1 minute ago"')
    assert fleet.exec(agent, "cat", AGENT_TOKEN) == good
    assert op.ran == set(ERROR_LINES)


def _unit_rss(fleet: DrillFleet, host: str, unit: str) -> int:
    out = fleet.exec(host, "ps", "-e", "-o", "rss=,unit=")
    return 1024 * sum(int(f[0]) for f in (ln.split() for ln in out.splitlines()) if len(f) == 2 and f[1] == unit)


def test_memory_grep_finds_the_daemons_memory_warning(fleet: DrillFleet) -> None:
    """MemoryMax at ~115% of what each unit uses: past the 80% warning share, each daemon logs its
    `memory:` warning (checked every 30 s) and the runbook's grep finds it with the figures."""
    op = Operator(fleet)
    targets = ((fleet.sup, SUP_UNIT, MEMORY_LINES[0]), (fleet.agent, AGENT_UNIT, MEMORY_LINES[1]))
    for host, unit, _ in targets:
        current = fleet.exec(host, "systemctl", "show", unit, "-p", "MemoryCurrent", "--value").strip()
        if not current.isdigit():  # e.g. cgroup v1 in the container: MemoryMax is then not enforced nor readable
            pytest.skip(f"{host}: systemd has no memory accounting for {unit} (MemoryCurrent={current}), so "
                        "there is no MemoryMax for the daemon to warn against")
    start = time.time() - 1
    try:
        for host, unit, _ in targets:
            limit = int(_unit_rss(fleet, host, unit) * 1.15)
            assert limit > 0
            fleet.sh(host, f"install -d /etc/systemd/system/{unit}.d && printf '[Service]\\nMemoryMax={limit}\\n' "
                           f"> /etc/systemd/system/{unit}.d/{MEMORY_DROPIN} && systemctl daemon-reload")
            assert fleet.unit_state(host, unit)["MemoryMax"] == str(limit)
        for host, unit, line in targets:
            _wait(lambda h=host, u=unit: "memory: RSS" in fleet.journal(h, u, since=start), 150,
                  f"the memory warning of {unit}")
            found = op.ok(line)
            assert re.search(r"memory: RSS .* of MemoryMax .*\(\d+ bytes\)", found), found
            assert "warning" in _levels(found)
            assert fleet.active(host, unit) == "active"
    finally:
        for host, unit, _ in targets:
            fleet.sh(host, f"rm -f /etc/systemd/system/{unit}.d/{MEMORY_DROPIN}; "
                           f"rmdir /etc/systemd/system/{unit}.d 2>/dev/null; systemctl daemon-reload", check=False)
    assert op.ran == set(MEMORY_LINES)
