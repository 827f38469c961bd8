"""The fleet of inventory.example under real systemd (Molecule scenario `default`), then upgrade,
rollback and a deploy that fails verification, all for real.

Three podman instances with systemd as PID 1 (no network of their own; the agents share the
supervisor's network namespace) are created once for the module:

1. Molecule converge (playbook halswarm.ops.deploy with inventory.example), idempotence
   (changed=0) and verify (users, modes, unit properties, systemd-analyze verify, /readyz, every
   agent registered, Restart=on-failure after kill -9, the backup timer enabled and its service
   writing a verified backup).
2. `halctl upgrade` to a second release (same code, bumped version, built from a temporary copy of
   the repo) with a config change: backup first, versions switch, data kept.
3. `halctl rollback --batch-size 1`: the first release and its config are back (one agent per
   batch, in order), the second stays installed.
4. `halctl deploy` of the second release with a config its daemon cannot serve (it validates, but
   cannot bind): the deploy fails loudly and leaves the first release running.
5. `halctl deploy` of the second release with a config its `--validate` refuses: nothing switches,
   the first release and its config keep running.
6. `halctl rollback --batch-size 1` to a release that is broken on the first agent: exit 1, the
   second batch never starts (the second agent is untouched).
7. `halctl restore latest` on the supervisor under systemd: the rows written after the backup are
   gone, the service is active, /readyz 200.
8. uninstall.yml on the supervisor and one agent: no hal unit left (the backup timer included),
   releases gone, data and config kept.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet.env import (
    ARTIFACTS,
    AUTH_TOKEN,
    ROOT,
    VENV_BIN,
    WHEELHOUSE,
    Wheels,
    ansible_env,
    host_ready,
    run,
    wheels,
)
from tests.support.fleet.molecule import halctl, molecule, podman_exec, write_nsenter_inventory

pytestmark = pytest.mark.timeout(1200)

SUP = "hal-sup-1"
AGENTS = ("hal-agent-1", "hal-agent-2")
HOSTS = (SUP, *AGENTS)
DB = "/var/lib/hal-o-swarm/supervisor/supervisor.db"
SUP_TOKEN = "/etc/hal-o-swarm/supervisor.token"

_API_PROBE = """
import json, sys, urllib.request
req = urllib.request.Request("http://127.0.0.1:8421" + sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
with urllib.request.urlopen(req, timeout=10) as r:
    print(json.dumps({"status": r.status, "body": json.load(r)}))
"""


class Fleet:
    def __init__(self, env: dict[str, str], wheels: Wheels, inventory: Path, state_dir: Path) -> None:
        self.env = env
        self.wheels = wheels
        self.inventory = inventory
        self.state_dir = state_dir

    def halctl(self, command: str, *args: str, log: str,
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return halctl(command, "-i", str(ROOT / "inventory.example"), "-i", str(self.inventory),
                      "--state-dir", str(self.state_dir), *args, env=self.env, timeout=timeout,
                      log=ARTIFACTS / log)


def unit_release(host: str, service: str) -> str:
    env = podman_exec(host, "systemctl", "show", "--property=Environment", "--value", service)
    return next((w.split("=", 1)[1] for w in env.split() if w.startswith("HAL_RELEASE=")), "")


def current(host: str) -> str:
    return podman_exec(host, "readlink", "/opt/hal-o-swarm/current").strip()


def config(host: str, name: str) -> dict:
    return json.loads(podman_exec(host, "cat", f"/etc/hal-o-swarm/{name}.config.json"))


def active(host: str, service: str) -> bool:
    return podman_exec(host, "systemctl", "is-active", service, check=False).strip() == "active"


def api(path: str) -> dict:
    return json.loads(podman_exec(SUP, "python3", "-c", _API_PROBE, path, AUTH_TOKEN))


def online_nodes(expected: set[str], timeout: float = 120) -> set[str]:
    """Node ids online through the API; waits (agents reconnect with backoff after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = api("/api/v1/nodes")["body"]["data"]
        online = {n["id"] for n in nodes if n["status"] == "online"}
        if online >= expected or time.monotonic() > deadline:
            return online
        time.sleep(2)


def assert_fleet_on(version: str) -> None:
    assert current(SUP) == f"releases/{version}"
    assert unit_release(SUP, "hal-supervisor.service") == version
    assert active(SUP, "hal-supervisor.service")
    for agent in AGENTS:
        assert current(agent) == f"releases/{version}"
        assert unit_release(agent, "hal-agent.service") == version
        assert active(agent, "hal-agent.service")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    reason = host_ready()
    if reason:
        pytest.skip(reason)
    w = wheels()
    env = ansible_env(HAL_AUTH_TOKEN=AUTH_TOKEN, HAL_RELEASE_WHEEL=str(w.current),
                      HAL_RELEASE_WHEELHOUSE=str(WHEELHOUSE))
    tmp = tmp_path_factory.mktemp("fleet")
    try:
        molecule("destroy", "default", env, timeout=180, check=False)
        molecule("create", "default", env, timeout=300)
        inventory = write_nsenter_inventory(tmp / "nsenter.yml", {h: [] for h in HOSTS}, {})
        molecule("converge", "default", env, timeout=900)
        yield Fleet(env, w, inventory, tmp / "state")
    finally:
        molecule("destroy", "default", env, timeout=300, check=False)


def test_converge_is_idempotent(fleet: Fleet) -> None:
    assert_fleet_on(fleet.wheels.current_version)
    molecule("idempotence", "default", fleet.env, timeout=600)


def test_verify_real_systemd(fleet: Fleet) -> None:
    molecule("verify", "default", fleet.env, timeout=600)


def test_upgrade_switches_release_and_keeps_data(fleet: Fleet) -> None:
    v2 = fleet.wheels.bumped_version
    # Data written under release 1 must survive the upgrade and the rollback.
    podman_exec(SUP, "sqlite3", DB, "CREATE TABLE ci_marker(v TEXT); INSERT INTO ci_marker VALUES('kept');")
    up = fleet.halctl("upgrade", "--wheel", str(fleet.wheels.bumped), "--wheelhouse", str(WHEELHOUSE),
                      "-e", "hal_supervisor_log_level=debug", log="halctl-upgrade.log")
    assert up.returncode == 0, up.stdout[-4000:]
    assert "  TASK " in up.stdout and "RECAP" in up.stdout and "upgrade succeeded" in up.stdout
    assert_fleet_on(v2)
    assert config(SUP, "supervisor")["log"]["level"] == "debug"
    assert podman_exec(SUP, "/opt/hal-o-swarm/current/bin/hal-supervisor", "--version").split()[-1] == v2
    assert podman_exec(SUP, "sh", "-c", "ls /var/backups/hal-o-swarm/supervisor-pre-upgrade-*.db").strip()
    assert podman_exec(SUP, "sqlite3", DB, "SELECT v FROM ci_marker").strip() == "kept"
    assert online_nodes(set(AGENTS)) >= set(AGENTS)
    runs = list((fleet.state_dir / "runs").iterdir())
    assert runs and all((r / "artifacts" / "run" / "job_events").is_dir() for r in runs)


BATCH_PLAY = "PLAY Roll back the agents in batches"


def test_rollback_restores_release_and_config(fleet: Fleet) -> None:
    v1, v2 = fleet.wheels.current_version, fleet.wheels.bumped_version
    back = fleet.halctl("rollback", "--batch-size", "1", log="halctl-rollback.log")
    assert back.returncode == 0, back.stdout[-4000:]
    # Serial batches: one play start per agent, each batch touching only its own agent.
    _before, first, rest = back.stdout.split(BATCH_PLAY)
    second = rest.split(" PLAY ")[0]
    assert "hal-agent-1" in first and "hal-agent-2" not in first, first
    assert "hal-agent-2" in second and "hal-agent-1" not in second, second
    assert_fleet_on(v1)
    assert config(SUP, "supervisor")["log"]["level"] == "info", "the config of release 1 was not restored"
    podman_exec(SUP, "test", "-f", f"/opt/hal-o-swarm/releases/{v2}/.hal-release.json")
    tagged = podman_exec(SUP, "ls", "/etc/hal-o-swarm/backups/")
    assert f"supervisor.config.json.{v1}." in tagged and f"supervisor.config.json.{v2}." in tagged
    assert podman_exec(SUP, "sqlite3", DB, "SELECT v FROM ci_marker").strip() == "kept"
    assert api("/readyz")["status"] == 200


def test_failed_deploy_rolls_itself_back(fleet: Fleet) -> None:
    v1 = fleet.wheels.current_version
    # Release 2 with a listen address this host does not have: `hal-supervisor --validate` accepts
    # the config, the daemon cannot bind, /readyz never answers: deploy.yml must go back to release 1.
    bad = fleet.halctl("deploy", "--wheel", str(fleet.wheels.bumped), "--wheelhouse", str(WHEELHOUSE),
                       "-e", "hal_supervisor_listen_host=203.0.113.7", "-e", "hal_supervisor_verify_retries=4",
                       "-e", "hal_supervisor_verify_delay=2", log="halctl-deploy-failing.log")
    assert bad.returncode == 1, bad.stdout[-4000:]
    assert "DEPLOY FAILED on hal-sup-1" in bad.stdout
    assert f"Rolled back: release {v1} and its config are running again" in bad.stdout
    assert "error: deploy failed on hal-sup-1" in bad.stdout
    assert_fleet_on(v1)  # the agents were never touched: the playbook stopped at the supervisor
    assert config(SUP, "supervisor")["server"]["host"] == "0.0.0.0"
    assert api("/readyz")["status"] == 200
    assert online_nodes(set(AGENTS)) >= set(AGENTS)


def test_deploy_with_config_refused_by_new_release(fleet: Fleet) -> None:
    """The new release's `hal-supervisor --validate` refuses the new config: the live config is never
    replaced, nothing switches, release 1 and its config keep running. The same deploy also rotates the
    token: the token file is replaced only after the config check, so it keeps the running token."""
    v1 = fleet.wheels.current_version
    pid_before = podman_exec(SUP, "systemctl", "show", "--property=MainPID", "--value", "hal-supervisor.service")
    token_before = podman_exec(SUP, "sha256sum", SUP_TOKEN)
    bad = fleet.halctl("deploy", "--wheel", str(fleet.wheels.bumped), "--wheelhouse", str(WHEELHOUSE),
                       "-e", json.dumps({"hal_supervisor_config_extra": {"retention": {"events_days": 0}},
                                         "hal_supervisor_auth_token": "rotated-" + "r" * 40}),
                       log="halctl-deploy-refused-config.log")
    assert bad.returncode == 1, bad.stdout[-4000:]
    assert "DEPLOY FAILED on hal-sup-1" in bad.stdout and "--validate" in bad.stdout, bad.stdout[-4000:]
    assert "error: deploy failed on hal-sup-1" in bad.stdout
    assert_fleet_on(v1)
    assert config(SUP, "supervisor")["retention"]["events_days"] == 30
    assert podman_exec(SUP, "sha256sum", SUP_TOKEN) == token_before, "a refused deploy replaced the token"
    assert podman_exec(SUP, "systemctl", "show", "--property=MainPID", "--value",
                       "hal-supervisor.service") == pid_before, "the supervisor was restarted"
    assert api("/readyz")["status"] == 200


def test_rollback_stops_at_the_first_failed_batch(fleet: Fleet) -> None:
    """Rollback to release 2 with its daemon broken on the first agent, one agent per batch: the first
    batch fails (the target's --validate fails before anything switches), the run stops with exit 1
    and the second agent is never touched."""
    v1, v2 = fleet.wheels.current_version, fleet.wheels.bumped_version
    first, second = AGENTS
    binary = f"/opt/hal-o-swarm/releases/{v2}/bin/hal-agent"
    podman_exec(first, "sh", "-c", f"mv {binary} {binary}.ci-orig && printf '#!/bin/sh\nexit 3\n' > {binary}"
                                   f" && chmod 755 {binary}")
    second_pid = podman_exec(second, "systemctl", "show", "--property=MainPID", "--value", "hal-agent.service")
    second_config = config(second, "agent")
    try:
        back = fleet.halctl("rollback", "--to", v2, "--batch-size", "1", "--limit", "hal_agents",
                            log="halctl-rollback-failing-batch.log")
    finally:
        podman_exec(first, "mv", f"{binary}.ci-orig", binary)
    assert back.returncode == 1, back.stdout[-4000:]
    assert back.stdout.count(BATCH_PLAY) == 1, "a second batch started after the first one failed"
    assert "error: rollback failed on hal-agent-1" in back.stdout, back.stdout[-4000:]
    assert current(first) == f"releases/{v1}" and active(first, "hal-agent.service")
    assert current(second) == f"releases/{v1}" and unit_release(second, "hal-agent.service") == v1
    assert podman_exec(second, "systemctl", "show", "--property=MainPID", "--value",
                       "hal-agent.service") == second_pid, "the second agent was restarted"
    assert config(second, "agent") == second_config


def _rows(table: str) -> int:
    return int(podman_exec(SUP, "sqlite3", DB, f"SELECT count(*) FROM {table}").strip())


def test_restore_latest_under_systemd(fleet: Fleet) -> None:
    """A backup by the role's backup service, rows written after it, `halctl restore latest -i ...`:
    the database is back to the backup (row counts), the service active, /readyz 200."""
    podman_exec(SUP, "sqlite3", DB, "INSERT INTO ci_marker VALUES('in-backup');")
    podman_exec(SUP, "systemctl", "start", "hal-supervisor-backup.service", timeout=180)
    in_backup = _rows("ci_marker")
    podman_exec(SUP, "sqlite3", DB, "INSERT INTO ci_marker VALUES('after-backup'); INSERT INTO ci_marker VALUES('x');")
    assert _rows("ci_marker") == in_backup + 2
    env = dict(fleet.env, HALCTL_STATE_DIR=str(fleet.state_dir))
    proc = halctl("restore", "latest", "-i", str(ROOT / "inventory.example"), "-i", str(fleet.inventory),
                  env=env, timeout=600, log=ARTIFACTS / "halctl-restore.log")
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = "".join(p.read_text() for p in fleet.state_dir.glob("runs/*-restore/artifacts/run/stdout"))
    assert f"ci_marker {in_backup + 2} -> {in_backup}" in report, report[-4000:]
    assert _rows("ci_marker") == in_backup
    assert podman_exec(SUP, "sqlite3", DB, "SELECT count(*) FROM ci_marker WHERE v='after-backup'").strip() == "0"
    assert active(SUP, "hal-supervisor.service")
    assert api("/readyz")["status"] == 200
    podman_exec(SUP, "sh", "-c", "ls /var/lib/hal-o-swarm/supervisor/supervisor.db.replaced-*")
    assert online_nodes(set(AGENTS)) >= set(AGENTS)


def test_uninstall_keeps_data_and_config(fleet: Fleet) -> None:
    """uninstall.yml on one agent and the supervisor: units (the backup timer and service included)
    and releases go, config, token, data and database backups stay (no hal_purge)."""
    agent = AGENTS[-1]
    podman_exec(agent, "sh", "-c", "echo outbox > /var/lib/hal-o-swarm/agent/ci-keep")
    # As the role writes it for hal_agent_login_operators: the grant goes with the service.
    podman_exec(agent, "sh", "-c", "echo 'ops ALL=(hal-agent) NOPASSWD: ALL' > /etc/sudoers.d/hal-agent-login")
    run([str(VENV_BIN / "ansible-playbook"), "-i", str(ROOT / "inventory.example"), "-i", str(fleet.inventory),
         "--limit", f"{agent},{SUP}", "halswarm.ops.uninstall"], env=fleet.env, timeout=300,
        log=ARTIFACTS / "uninstall.log")
    units = podman_exec(SUP, "sh", "-c", "ls /etc/systemd/system | grep '^hal-' || true").split()
    assert units == [], units
    listed = podman_exec(SUP, "systemctl", "list-units", "--all", "--plain", "--no-legend", "hal-*").strip()
    assert "hal-supervisor" not in listed, listed
    assert podman_exec(SUP, "sh", "-c", "test -e /opt/hal-o-swarm && echo left || echo gone").strip() == "gone"
    assert podman_exec(SUP, "sqlite3", DB, "SELECT v FROM ci_marker WHERE v='kept'").strip() == "kept"
    assert config(SUP, "supervisor")["server"]["port"] == 8420
    podman_exec(SUP, "test", "-f", "/etc/hal-o-swarm/supervisor.token")
    podman_exec(SUP, "sh", "-c", "ls /var/backups/hal-o-swarm/*.db.sha256")
    gone = "test -e /etc/systemd/system/hal-agent.service && echo left || echo gone"
    assert podman_exec(agent, "sh", "-c", gone).strip() == "gone"
    assert not active(agent, "hal-agent.service")
    assert podman_exec(agent, "sh", "-c", "test -e /opt/hal-o-swarm && echo left || echo gone").strip() == "gone"
    assert podman_exec(agent, "cat", "/var/lib/hal-o-swarm/agent/ci-keep").strip() == "outbox"
    sudoers = "test -e /etc/sudoers.d/hal-agent-login && echo left || echo gone"
    assert podman_exec(agent, "sh", "-c", sudoers).strip() == "gone"
    assert config(agent, "agent")["node_id"] == agent
    podman_exec(agent, "test", "-f", "/etc/hal-o-swarm/agent.token")
    podman_exec(agent, "id", "hal-agent")
