"""Network drills: agent-cannot-connect and supervisor-unreachable on a real fleet.

Faults are real: a wrong (valid-length) token in the agent's token file, the supervisor's agent listener
destroyed in the kernel (``ss -K``: the daemon keeps running, nothing listens on 8420, the runbook's
"running but not listening"), and iptables rules in the fleet's own network namespace (the agent
shares the supervisor's; rules are inserted from the host with ``nsenter -n`` and never touch the host's
firewall). The test image carries the iptables package, as production hosts do, so the remediation reads
and edits the rules from inside the hosts. Unrelated decoy rules must survive every remediation.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.fleet.fleet import AGENT_CONFIG, AGENT_UNIT, SUP_CONFIG, SUP_UNIT, DrillFleet
from tests.support.fleet.molecule import container_pid
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(1800)

AGENT_TOKEN = "/etc/hal-o-swarm/agent.token"
SUP_TOKEN = "/etc/hal-o-swarm/supervisor.token"
DECOYS = (  # rules that must never be removed (not tcp/8420 DROP/REJECT, or not ours to judge)
    ["-I", "INPUT", "-p", "tcp", "--dport", "9999", "-j", "DROP"],
    ["-I", "INPUT", "-p", "udp", "--dport", "8420", "-j", "DROP"],
    ["-I", "INPUT", "-p", "tcp", "--dport", "8421", "-j", "ACCEPT"],
    ["-I", "OUTPUT", "-p", "tcp", "--dport", "8420", "-m", "comment", "--comment", "halnet decoy", "-j", "ACCEPT"],
)
BLOCK_IN = ["INPUT", "-p", "tcp", "-m", "tcp", "--dport", "8420", "-j", "DROP"]
BLOCK_OUT = ["OUTPUT", "-p", "tcp", "-m", "tcp", "--dport", "8420", "-j", "REJECT", "--reject-with", "tcp-reset"]


def ipt(fleet: DrillFleet, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """iptables in the fleet's network namespace (the host's binary, the namespace's rules)."""
    return subprocess.run(["nsenter", "-t", str(container_pid(fleet.sup)), "-n", "iptables", "-w", "5", *args],
                          capture_output=True, text=True, timeout=60, check=check)


def nsenter_net(fleet: DrillFleet, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A host binary run in the fleet's network namespace (its sockets, its rules)."""
    return subprocess.run(["nsenter", "-t", str(container_pid(fleet.sup)), "-n", *argv],
                          capture_output=True, text=True, timeout=60, check=check)


def listening(fleet: DrillFleet, port: int = 8420) -> bool:
    return bool(nsenter_net(fleet, "ss", "-Hltn", f"( sport = :{port} )").stdout.strip())


def rules(fleet: DrillFleet) -> list[str]:
    return ipt(fleet, "-S").stdout.splitlines()


def restart_agent(fleet: DrillFleet) -> None:
    """Restart the agent now (clearing its start-rate limit, which back-to-back drills use up)."""
    fleet.exec(fleet.agent, "systemctl", "reset-failed", AGENT_UNIT, check=False)
    fleet.exec(fleet.agent, "systemctl", "restart", AGENT_UNIT)


def wait_status(fleet: DrillFleet, want_online: bool, timeout: float = 60) -> bool:
    try:
        wait_for(lambda: (fleet.node_status() == "online") == want_online,
                 f"the node {'online' if want_online else 'offline'}", timeout, interval=1)
    except AssertionError:
        return False
    return True


# ----- faults (also used by bench/drills) -----

def wrong_token(fleet: DrillFleet) -> None:
    """A different valid-length token in the agent's token file, agent restarted: 401, node offline."""
    fleet.sh(fleet.agent, f"printf '%s\\n' {secrets.token_hex(32)} > {AGENT_TOKEN}")
    restart_agent(fleet)
    assert wait_status(fleet, False), "node still online after the token fault"


def firewall_drop_in(fleet: DrillFleet) -> None:
    """INPUT DROP of tcp/8420 in the fleet's namespace, agent restarted: it cannot reconnect."""
    ipt(fleet, "-I", *BLOCK_IN)
    restart_agent(fleet)
    assert wait_status(fleet, False), "node still online after the firewall fault"


def firewall_reject_out(fleet: DrillFleet) -> None:
    """OUTPUT REJECT (tcp-reset) of tcp/8420: every agent's connection refused, node offline."""
    ipt(fleet, "-I", *BLOCK_OUT)
    restart_agent(fleet)
    assert wait_status(fleet, False), "node still online after the firewall fault"


def listener_destroyed(fleet: DrillFleet) -> None:
    """The kernel drops the supervisor's listening socket on 8420 (``ss -K``, SOCK_DESTROY) while the
    daemon keeps running; the agent, restarted, finds nothing listening and stays offline."""
    pid = fleet.unit_state(fleet.sup, SUP_UNIT)["MainPID"]
    nsenter_net(fleet, "ss", "-K", "state", "listening", "( sport = :8420 )")
    assert not listening(fleet), "something still listens on 8420 after ss -K"
    restart_agent(fleet)
    assert wait_status(fleet, False), "node still online without a listener"
    state = fleet.unit_state(fleet.sup, SUP_UNIT)
    assert state["ActiveState"] == "active" and state["MainPID"] == pid, f"the supervisor did not keep running: {state}"


FAULTS: dict[str, Callable[[DrillFleet], None]] = {
    "agent-cannot-connect": wrong_token,
    "supervisor-unreachable": firewall_reject_out,
}


# ----- fixtures -----

@pytest.fixture(scope="module")
def net_fleet(drill_fleet: DrillFleet) -> Iterator[DrillFleet]:
    """The shared fleet with decoy rules in its namespace (iptables comes with the test image)."""
    if not shutil.which("nsenter") or not shutil.which("iptables"):
        pytest.skip("needs nsenter and iptables on the host")
    for host in drill_fleet.hosts:
        assert drill_fleet.sh(host, "command -v iptables || true").strip(), \
            f"{host}: no iptables in the test image (scripts/ci-setup.sh IMAGE_PACKAGES)"
    for d in DECOYS:
        ipt(drill_fleet, *d)
    yield drill_fleet
    for d in DECOYS:
        ipt(drill_fleet, "-D", *d[1:], check=False)


@pytest.fixture
def nfleet(net_fleet: DrillFleet, fleet: DrillFleet) -> Iterator[DrillFleet]:
    """Per drill: the fleet healthy before; afterwards no blocking rule and the original token back."""
    token = net_fleet.sha256(net_fleet.agent, AGENT_TOKEN)
    original = net_fleet.exec(net_fleet.agent, "cat", AGENT_TOKEN)
    try:
        yield net_fleet
    finally:
        for rule in (BLOCK_IN, BLOCK_OUT):
            while ipt(net_fleet, "-D", *rule, check=False).returncode == 0:
                pass
        if net_fleet.sha256(net_fleet.agent, AGENT_TOKEN) != token:
            net_fleet.sh(net_fleet.agent, f"printf '%s' '{original.strip()}' > {AGENT_TOKEN}; echo >> {AGENT_TOKEN}")
            restart_agent(net_fleet)


def _state(fleet: DrillFleet) -> tuple[dict[str, str], dict[str, str], list[str]]:
    return (fleet.sha256(fleet.agent, AGENT_TOKEN, AGENT_CONFIG), fleet.sha256(fleet.sup, SUP_TOKEN, SUP_CONFIG),
            rules(fleet))


def _decoys_kept(fleet: DrillFleet) -> None:
    for d in DECOYS:
        assert ipt(fleet, "-C", *d[1:], check=False).returncode == 0, f"decoy rule removed: {d}"


# ----- drills -----

def test_healthy_fleet_is_not_present(nfleet: DrillFleet) -> None:
    for incident in ("agent-cannot-connect", "supervisor-unreachable"):
        rc, report = nfleet.remediate(incident)
        assert rc == 0 and report["status"] == "not_present", report


def test_wrong_token_is_resynced(nfleet: DrillFleet) -> None:
    sup_token = nfleet.sha256(nfleet.sup, SUP_TOKEN)[SUP_TOKEN]  # the admin operator token
    node_token = nfleet.sha256(nfleet.agent, AGENT_TOKEN)[AGENT_TOKEN]  # the node's own, as deployed
    assert node_token != sup_token
    FAULTS["agent-cannot-connect"](nfleet)
    before = _state(nfleet)
    rc, report = nfleet.remediate("agent-cannot-connect", "--check")
    assert rc == 0 and report["status"] == "check", report
    assert _state(nfleet) == before, "--check changed something"
    assert nfleet.node_status() != "online"
    facts = report["facts"][nfleet.agent]
    assert facts["token_match"] is False and facts["port_reachable"] is True, facts
    rc, report = nfleet.remediate("agent-cannot-connect")
    assert rc == 0 and report["status"] == "verified", report
    assert [a["name"] for a in report["actions"]] == ["sync_token", "restart_service"], report["actions"]
    assert nfleet.node_status() == "online"
    # the token file holds the node's own token again (same bytes: token + newline), never the operator
    # token, with a backup kept
    assert nfleet.sha256(nfleet.agent, AGENT_TOKEN)[AGENT_TOKEN] == node_token
    backups = nfleet.sh(nfleet.agent, "ls /etc/hal-o-swarm/backups/ | grep 'agent.token.*pre-token-sync'")
    assert backups.strip()
    assert nfleet.sh(nfleet.agent, f"stat -c %U:%a {AGENT_TOKEN}").strip() == "hal-agent:600"
    assert nfleet.exec(nfleet.agent, "cat", AGENT_TOKEN).strip() not in str(report)  # never in the report


def test_firewall_drop_blocks_agent(nfleet: DrillFleet) -> None:
    firewall_drop_in(nfleet)
    before = _state(nfleet)
    rc, report = nfleet.remediate("agent-cannot-connect", "--check")
    assert rc == 0 and report["status"] == "check", report
    assert _state(nfleet) == before, "--check changed something"
    rc, report = nfleet.remediate("agent-cannot-connect")
    assert rc == 0 and report["status"] == "verified", report
    assert [a["name"] for a in report["actions"]] == ["allow_port", "restart_service"], report["actions"]
    assert ipt(nfleet, "-C", *BLOCK_IN, check=False).returncode != 0, "blocking rule still there"
    _decoys_kept(nfleet)
    assert nfleet.node_status() == "online"


def test_supervisor_unreachable_firewall(nfleet: DrillFleet) -> None:
    FAULTS["supervisor-unreachable"](nfleet)
    before = _state(nfleet)
    rc, report = nfleet.remediate("supervisor-unreachable", "--check")
    assert rc == 0 and report["status"] == "check", report
    assert _state(nfleet) == before, "--check changed something"
    rc, report = nfleet.remediate("supervisor-unreachable")
    assert rc == 0 and report["status"] == "verified", report
    assert ipt(nfleet, "-C", *BLOCK_OUT, check=False).returncode != 0, "blocking rule still there"
    _decoys_kept(nfleet)
    assert nfleet.node_status() == "online"
    runs = nfleet.api("/api/v1/remediations?incident=supervisor-unreachable")["body"]["data"]
    assert runs[0]["status"] == "verified"


def test_supervisor_running_but_not_listening(nfleet: DrillFleet) -> None:
    """Runbook "Supervisor Unreachable", "if not listening, restart supervisor": the remediation sees the
    unit active with no listener on 8420 and the agents offline, restarts the supervisor and the offline
    agents, and verifies the port and every node."""
    if not shutil.which("ss"):
        pytest.skip("needs ss (iproute2) on the host")
    pid = nfleet.unit_state(nfleet.sup, SUP_UNIT)["MainPID"]
    start = time.monotonic()
    listener_destroyed(nfleet)
    before = _state(nfleet)
    rc, report = nfleet.remediate("supervisor-unreachable", "--check")
    assert rc == 0 and report["status"] == "check", report
    assert _state(nfleet) == before and not listening(nfleet), "--check changed something"
    facts = report["facts"][nfleet.sup]
    assert facts["listening"] is False and facts["offline_agents"], facts
    fixed = time.monotonic()
    rc, report = nfleet.remediate("supervisor-unreachable")
    assert rc == 0 and report["status"] == "verified", report
    names = [a["name"] for a in report["actions"]]
    assert names[0] == "restart_service" and "allow_port" not in names, report["actions"]
    assert any("not listening on 8420" in r for r in report["reasons"]), report["reasons"]
    assert listening(nfleet) and nfleet.node_status() == "online"
    assert nfleet.unit_state(nfleet.sup, SUP_UNIT)["MainPID"] != pid, "the supervisor was not restarted"
    _decoys_kept(nfleet)
    print("running-but-not-listening drill:", json.dumps({
        "fault_to_verified_s": round(time.monotonic() - start, 1),
        "remediation_s": round(time.monotonic() - fixed, 1)}))
