"""Drills of the cost and auth remediations (issue #6): cost-data-discrepancy, credential-drift on the
deployed drill fleet (real systemd, real supervisor and agent), manual-auth-required on loopback with a
real supervisor, a real hal-agent process and the real claude / codex CLIs (the fleet's instances have
no tool CLIs and no node).

- cost-data-discrepancy: a fake Anthropic Admin API (tests/fakes/fake_providers.py, the real wire
  format) runs INSIDE the supervisor instance; the supervisor is configured to poll it while it is
  down (degraded, never updated, every day of the window missing), then it comes back, `halctl
  remediate` forces the re-poll/back-fill -> verified, rows in the `costs` table.
- credential-drift: the supervisor holds credentials (auto_push off), they are pushed (in sync) and
  survive a restart of the agent (persisted on it); then they are rotated on the supervisor (new
  version, new value) -> the agent drifts -> remediate pushes -> verified in_sync.
- manual-auth-required: claude_code and codex unauthenticated on a real agent -> the remediation
  triggers codex's device flow through the supervisor, prints the runbook's SSH guidance for
  claude_code, status failed (manual), exit 1; after an API-key push (claude) and the real
  `codex login --with-api-key` (the manual login) -> not_present, exit 0.

Every drill restores what it changed (config, processes it started) and leaves the system healthy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes import fake_providers
from tests.support.fleet.env import ARTIFACTS, ROOT, ansible_env
from tests.support.fleet.fleet import AGENT_UNIT, SUP_CONFIG, SUP_DB, SUP_UNIT, DrillFleet, parse_report

pytestmark = pytest.mark.timeout(1500)

FAKE_PORT = 18931
FAKE_DIR = "/root/hal-drill-costauth"
FAKE_PID = "/run/hal-drill-costauth-fake.pid"
CONFIG_BACKUP = SUP_CONFIG + ".costauth-orig"
DRILL_KEY = "sk-ant-api03-DRILL-costauth-0123456789"
DRILL_KEY2 = "sk-ant-api03-DRILL-rotated-9876543210"
AGENT_DATA = "/var/lib/hal-o-swarm/agent"
AGENT_CREDENTIAL_FILES = ("credentials.json", "credentials.values.json")
CLI_BIN = Path(os.environ.get("HAL_TEST_CLI_BIN", ROOT / ".tools" / "npm" / "node_modules" / ".bin"))

# Merges a JSON patch (argv[2]) into a JSON config (argv[1]) in place: same inode, owner and mode.
_PATCH = """
import json, sys
p = sys.argv[1]
with open(p) as f:
    d = json.load(f)
d.update(json.loads(sys.argv[2]))
with open(p, "w") as f:
    json.dump(d, f, indent=2, sort_keys=True)
"""

# The fake provider API on 127.0.0.1:PORT inside the supervisor instance, with three days of data.
_FAKE = """
import datetime as dt, os, sys, time
sys.path.insert(0, sys.argv[2])
import fake_providers as fp
port = int(sys.argv[1])
_server = fp.ThreadingHTTPServer
fp.ThreadingHTTPServer = lambda addr, handler: _server(("127.0.0.1", port), handler)
fake = fp.FakeProviders()
today = dt.datetime.now(dt.UTC).date()
for i in (1, 2, 3):
    fake.anthropic_day((today - dt.timedelta(days=i)).isoformat(), "claude-sonnet-4-5", 10000 * i, 2000 * i,
                       cents=100 * i)
fake.start()
with open(sys.argv[3], "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(3600)
"""


# ----- supervisor config helpers (fleet) -----

def patch_sup_config(fleet: DrillFleet, patch: dict[str, Any]) -> None:
    fleet.sh(fleet.sup, f"test -e {CONFIG_BACKUP} || cp -p {SUP_CONFIG} {CONFIG_BACKUP}")
    fleet.exec(fleet.sup, "python3", "-c", _PATCH, SUP_CONFIG, json.dumps(patch))


def restart_sup(fleet: DrillFleet) -> None:
    fleet.exec(fleet.sup, "systemctl", "restart", SUP_UNIT)
    assert wait(lambda: fleet.api("/readyz")["status"] == 200, 60), "supervisor not ready after restart"


def restore_sup_config(fleet: DrillFleet) -> None:
    if fleet.sh(fleet.sup, f"test -e {CONFIG_BACKUP} && echo yes || true").strip() == "yes":
        fleet.sh(fleet.sup, f"cat {CONFIG_BACKUP} > {SUP_CONFIG} && rm -f {CONFIG_BACKUP}")
        restart_sup(fleet)


def wait(pred: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def cost_status(fleet: DrillFleet) -> dict[str, Any]:
    res = fleet.api("/api/v1/cost/status")
    assert res["status"] == 200, res
    return res["body"]["data"]


# ----- faults -----

def provider_outage(fleet: DrillFleet) -> None:
    """cost-data-discrepancy: the supervisor polls an Anthropic Admin API that does not answer (nothing
    listens on its base_url) from its start: degraded, never updated, the whole window missing."""
    patch_sup_config(fleet, {"cost": {
        "poll_interval_minutes": 60, "degraded_retry_seconds": 3600, "request_timeout_seconds": 3,
        "max_retries": 0, "backoff_base_ms": 10,
        "providers": {"anthropic": {"admin_api_key": fake_providers.ANTHROPIC_KEY,
                                    "base_url": f"http://127.0.0.1:{FAKE_PORT}"}}}})
    stop_fake(fleet)
    restart_sup(fleet)
    assert wait(lambda: cost_status(fleet)["degraded_providers"] == ["anthropic"], 60), cost_status(fleet)


def credentials_rotated(fleet: DrillFleet) -> None:
    """credential-drift: the supervisor's credentials are rotated (new version and value, auto_push
    off) while the agent holds the pushed older version: it drifts until someone pushes."""
    patch_sup_config(fleet, {"credentials": {"version": 6, "auto_push": False,
                                             "agents": {fleet.agent: {"env": {"ANTHROPIC_API_KEY": DRILL_KEY2}}}}})
    restart_sup(fleet)
    assert fleet.wait_node_online(90)
    assert wait(lambda: drift_row(fleet).get("credential_sync") == "drift_detected", 60), drift_row(fleet)


def reset_agent_credentials(fleet: DrillFleet) -> None:
    """Put the agent back as deployed: its persisted pushed credentials removed, restarted."""
    files = " ".join(f"{AGENT_DATA}/{name}" for name in AGENT_CREDENTIAL_FILES)
    fleet.sh(fleet.agent, f"systemctl stop {AGENT_UNIT}; rm -f {files}; systemctl reset-failed {AGENT_UNIT}; "
                          f"systemctl start {AGENT_UNIT}", check=False)


def unauthenticated_tools(home: Path) -> None:
    """manual-auth-required: the agent's tools have no credentials at all (fresh HOME, no key)."""
    for sub in (".claude", ".claude.json", ".codex"):
        p = home / sub
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


FAULTS: dict[str, Callable[..., None]] = {
    "cost-data-discrepancy": provider_outage,
    "credential-drift": credentials_rotated,
    "manual-auth-required": unauthenticated_tools,
}


# ----- the fake provider inside the supervisor instance -----

def start_fake(fleet: DrillFleet) -> None:
    src = (ROOT / "tests" / "fakes" / "fake_providers.py").read_text()
    fleet.exec(fleet.sup, "mkdir", "-p", FAKE_DIR)
    subprocess.run(["podman", "exec", "-i", fleet.sup, "sh", "-c", f"cat > {FAKE_DIR}/fake_providers.py"],
                   input=src, text=True, check=True, timeout=60)
    subprocess.run(["podman", "exec", "-d", fleet.sup, "python3", "-c", _FAKE, str(FAKE_PORT), FAKE_DIR, FAKE_PID],
                   check=True, timeout=60)
    probe = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {FAKE_PORT}), 2)\" && echo up || true"
    assert wait(lambda: fleet.sh(fleet.sup, probe).strip() == "up", 30, 0.5), "fake provider did not start"


def stop_fake(fleet: DrillFleet) -> None:
    """Stop the fake this drill started, by the PID it wrote."""
    fleet.sh(fleet.sup, f"test -s {FAKE_PID} && kill $(cat {FAKE_PID}) 2>/dev/null; rm -f {FAKE_PID}; true")


def drift_row(fleet: DrillFleet) -> dict[str, Any]:
    res = fleet.api("/api/v1/auth/drift?all=true")
    rows = [r for r in res["body"]["data"] if r["node_id"] == fleet.agent] if res["status"] == 200 else []
    return rows[0] if rows else {}


# ----- drills on the fleet -----

def test_cost_data_discrepancy_provider_outage_is_backfilled(fleet: DrillFleet) -> None:
    try:
        rc, report = fleet.remediate("cost-data-discrepancy")
        assert rc == 0 and report["status"] == "not_present", report  # no provider configured: zeros by design

        FAULTS["cost-data-discrepancy"](fleet)
        before = cost_status(fleet)
        assert before["last_update_age_s"] is None and len(before["missing_dates"]) == 30

        start_fake(fleet)  # the provider is back; the aggregator would only retry in an hour
        rc, report = fleet.remediate("cost-data-discrepancy", "--check")
        assert rc == 0 and report["status"] == "check", report
        assert [a["name"] for a in report["actions"]] == ["force_repoll", "backfill"], report["actions"]
        assert cost_status(fleet)["degraded_providers"] == ["anthropic"]  # --check changed nothing

        rc, report = fleet.remediate("cost-data-discrepancy")
        assert rc == 0 and report["status"] == "verified", json.dumps(report, indent=1)[-3000:]
        assert any("degraded providers: anthropic" in r for r in report["reasons"]), report["reasons"]
        details = report["verification"]["details"][fleet.sup]
        assert details["refresh_results"] == {"anthropic": True}
        assert details["missing_dates"] == [] and details["degraded_providers"] == []
        assert fake_providers.ANTHROPIC_KEY not in json.dumps(report)

        after = cost_status(fleet)
        assert after["degraded_providers"] == [] and after["missing_dates"] == [] and after["running"]
        rows = fleet.exec(fleet.sup, "python3", "-c",
                          "import sqlite3, sys, json; c = sqlite3.connect(sys.argv[1]); print(json.dumps(c.execute("
                          "\"SELECT date, tokens, cost_usd FROM costs WHERE provider='anthropic' ORDER BY date\""
                          ").fetchall()))", SUP_DB)
        assert len(json.loads(rows)) == 3, rows
        assert [r["result"] for r in fleet.api("/api/v1/audit?action=cost_refresh")["body"]["data"]][:1] == ["success"]
        runs = fleet.api("/api/v1/remediations?incident=cost-data-discrepancy")["body"]["data"]
        assert [r["status"] for r in runs][:3] == ["verified", "check", "not_present"]
    finally:
        stop_fake(fleet)
        restore_sup_config(fleet)
        fleet.exec(fleet.sup, "rm", "-rf", FAKE_DIR, check=False)
    assert fleet.wait_node_online(90)


def test_credential_drift_after_agent_restart_is_pushed_in_sync(fleet: DrillFleet) -> None:
    try:
        rc, report = fleet.remediate("credential-drift")
        assert rc == 0 and report["status"] == "not_present", report

        patch_sup_config(fleet, {"credentials": {"version": 5, "auto_push": False,
                                                 "agents": {fleet.agent: {"env": {"ANTHROPIC_API_KEY": DRILL_KEY}}}}})
        restart_sup(fleet)
        assert fleet.wait_node_online(90)
        pushed = fleet.api("/api/v1/commands/credentials/push", "POST", {"target_node": fleet.agent})
        assert pushed["status"] == 200 and pushed["body"]["data"]["credential_sync"] == "in_sync", pushed

        # Pushed credentials persist on the agent: a restart keeps it in sync, nothing to repair.
        fleet.exec(fleet.agent, "systemctl", "restart", AGENT_UNIT)
        assert fleet.wait_node_online(90)
        assert wait(lambda: drift_row(fleet).get("credential_version") == 5, 60), drift_row(fleet)
        assert drift_row(fleet)["credential_sync"] == "in_sync"
        mode = fleet.exec(fleet.agent, "stat", "-c", "%a", f"{AGENT_DATA}/credentials.values.json").strip()
        assert mode == "600", mode

        FAULTS["credential-drift"](fleet)
        assert drift_row(fleet)["credential_version"] == 5
        rc, report = fleet.remediate("credential-drift")
        assert rc == 0 and report["status"] == "verified", json.dumps(report, indent=1)[-3000:]
        assert [(a["name"], a["result"]) for a in report["actions"]] == [("push_credentials", "done")]
        assert report["verification"]["details"][fleet.sup]["nodes"][fleet.agent] == {
            "credential_sync": "in_sync", "credential_version": 6}
        row = drift_row(fleet)
        assert row["credential_sync"] == "in_sync" and row["credential_version"] == 6
        assert DRILL_KEY not in json.dumps(report) and DRILL_KEY2 not in json.dumps(report)
        audit = fleet.api("/api/v1/audit?action=credential_push")["body"]["data"]
        assert audit and audit[0]["actor"] == "admin", audit[:1]  # the token's name
        assert audit[0]["client_actor"] == "halctl remediate credential-drift", audit[:1]
        assert DRILL_KEY not in json.dumps(audit) and DRILL_KEY2 not in json.dumps(audit)

        # the same drift on a node the supervisor holds no credentials for: informational, manual, exit 1
        patch_sup_config(fleet, {"credentials": {"version": 7, "auto_push": False}})
        restart_sup(fleet)
        assert fleet.wait_node_online(90)
        assert wait(lambda: drift_row(fleet).get("credential_sync") == "drift_detected", 60)
        rc, report = fleet.remediate("credential-drift")
        assert rc == 1 and report["status"] == "failed" and report["decision"] == "present", report
        assert report["actions"] == [] and any("informational" in g for g in report["guidance"]), report
    finally:
        restore_sup_config(fleet)
        # The pushed credentials persist on the agent: remove them, so the next drill on this shared
        # fleet (the fleet-wide "not present" drill among them) finds the agent as deployed.
        reset_agent_credentials(fleet)
    assert fleet.wait_node_online(90)
    assert wait(lambda: drift_row(fleet).get("credential_sync") == "in_sync", 60), drift_row(fleet)


# ----- manual-auth-required on loopback (real CLIs) -----

@pytest.fixture
def auth_bench(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from tests.support.agent_proc import AgentProc
    from tests.support.supervisor_proc import SupervisorProc

    for tool in ("claude", "codex"):
        if not os.access(CLI_BIN / tool, os.X_OK):
            pytest.skip(f"{CLI_BIN / tool} not installed; run scripts/install-test-clis.sh")
    # a node with claude and codex (no opencode), HOME outside /tmp (codex warns under /tmp)
    home = Path(tempfile.mkdtemp(prefix="hal-costauth-home-", dir="/var/tmp"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("claude", "codex"):
        (bindir / tool).symlink_to((CLI_BIN / tool).resolve())
    sup = SupervisorProc(tmp_path / "sup", extra={"credentials": {"version": 1, "auto_push": False}}).start()
    agent = AgentProc(tmp_path / "agent", sup.ws_url, sup.agent_token, node_id="costauth-node", clean_env=True,
                      env={"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(home), "npm_config_offline": "true"},
                      extra={"auth_report_interval_sec": 2})
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_python_interpreter": sys.executable, "hal_supervisor_api_url": sup.api,
                 "hal_remediation_api_token": sup.token, "hal_remediation_become": False},
        "children": {"hal_agents": {"hosts": {"costauth-loopback": {
            "ansible_connection": "local", "hal_agent_config_file": str(agent.config_path)}}}}}}))
    try:
        FAULTS["manual-auth-required"](home)
        agent.start()
        agent.wait_online(sup, 60)
        yield {"sup": sup, "agent": agent, "home": home, "inventory": inv, "state": tmp_path / "state",
               "bindir": bindir}
    finally:
        agent.cleanup()
        sup.stop()
        shutil.rmtree(home, ignore_errors=True)


def remediate_loopback(bench: dict[str, Any], incident: str, *args: str) -> tuple[int, dict[str, Any]]:
    sup = bench["sup"]
    env = ansible_env(HALCTL_SUPERVISOR_URL=sup.api, HALCTL_AUTH_TOKEN=sup.token, HOME=str(bench["state"]))
    proc = subprocess.run([sys.executable, "-m", "tests.support.fleet.halctl", "--output", "json", "remediate",
                           incident, "-i", str(bench["inventory"]), "--state-dir", str(bench["state"]), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=400, check=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"drill-costauth-{incident}.log").write_text(proc.stdout + "\n--- stderr\n" + proc.stderr)
    return proc.returncode, parse_report(proc.stdout)


def node_auth(sup: Any) -> dict[str, Any]:
    import httpx

    r = httpx.get(f"{sup.api}/api/v1/nodes/costauth-node/auth", headers={"Authorization": f"Bearer {sup.token}"},
                  timeout=10)
    return r.json()["data"]


def test_manual_auth_required_guides_then_not_present(auth_bench: dict[str, Any]) -> None:
    sup = auth_bench["sup"]
    states = wait(lambda: (s := node_auth(sup)["auth_states"]) and {"claude_code", "codex"} <= set(s) and s, 60)
    assert states["claude_code"]["status"] == "unauthenticated" and states["codex"]["status"] == "unauthenticated"

    rc, report = remediate_loopback(auth_bench, "manual-auth-required")
    assert rc == 1 and report["status"] == "failed", json.dumps(report, indent=1)[-3000:]
    assert report["error"].startswith("manual action required"), report["error"]
    assert [(a["name"], a["params"]["tool"]) for a in report["actions"]] == [("trigger_oauth", "codex")]
    guidance = "\n".join(report["guidance"])
    assert "[claude_code] Run the login command: claude auth login" in guidance
    assert "halctl auth login costauth-node claude_code --ssh" in guidance
    # codex's device flow really ran on the agent: offline it cannot reach auth.openai.com, so the guidance
    # says why and falls back to the manual login; online it would carry the URL and the user code.
    codex_result = report["actions"][0]["result"]
    assert codex_result in ("challenge", "failure"), report["actions"]
    if codex_result == "challenge":
        assert "[codex] Device flow started on costauth-node: open https://" in guidance
    else:
        assert "[codex] Remote OAuth did not start (failure:" in guidance
        assert "[codex] Run the login command: codex login --device-auth" in guidance
    assert report["verification"]["passed"] is False
    triggered = httpx_get(sup, "/api/v1/events?type=auth.oauth_triggered")
    assert any(e["data"]["tool"] == "codex" for e in triggered), triggered

    # the operator logs in: an API key pushed for claude, the real `codex login --with-api-key` on the node
    pushed = httpx_post(sup, "/api/v1/commands/credentials/push",
                        {"target_node": "costauth-node", "env_vars": {"ANTHROPIC_API_KEY": DRILL_KEY}, "version": 1})
    assert pushed["data"]["status"] == "success", pushed
    login = subprocess.run([str(auth_bench["bindir"] / "codex"), "login", "--with-api-key"],
                           input="sk-test-costauth-1234567890", text=True, capture_output=True, timeout=60,
                           env={"PATH": f"{auth_bench['bindir']}:/usr/bin:/bin", "HOME": str(auth_bench["home"])})
    assert login.returncode == 0, login.stderr
    assert wait(lambda: all(node_auth(sup)["auth_states"][t]["status"] == "authenticated"
                            for t in ("claude_code", "codex")), 60), node_auth(sup)

    rc, report = remediate_loopback(auth_bench, "manual-auth-required")
    assert rc == 0 and report["status"] == "not_present", json.dumps(report, indent=1)[-3000:]
    assert DRILL_KEY not in json.dumps(report)
    runs = httpx_get(sup, "/api/v1/remediations?incident=manual-auth-required")
    assert [r["status"] for r in runs][:2] == ["not_present", "failed"]


def httpx_get(sup: Any, path: str) -> Any:
    import httpx

    return httpx.get(sup.api + path, headers={"Authorization": f"Bearer {sup.token}"}, timeout=10).json()["data"]


def httpx_post(sup: Any, path: str, body: Any) -> Any:
    import httpx

    return httpx.post(sup.api + path, json=body, headers={"Authorization": f"Bearer {sup.token}"}, timeout=60).json()
