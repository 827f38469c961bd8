"""The fleet of inventory.example under real systemd (Molecule scenario `default`), then upgrade,
rollback and a deploy that fails verification, all for real.

Three podman instances with systemd as PID 1 (no network of their own; the agents share the
supervisor's network namespace) are created once for the module:

1. Molecule converge (playbook halswarm.ops.deploy with inventory.example), idempotence
   (changed=0) and verify (users, modes, unit properties, systemd-analyze verify, /readyz, every
   agent registered, Restart=on-failure after kill -9).
2. `halctl upgrade` to a second release (same code, bumped version, built from a temporary copy of
   the repo) with a config change: backup first, versions switch, data kept.
3. `halctl rollback`: the first release and its config are back, the second stays installed.
4. `halctl deploy` of the second release with a config its daemon cannot serve (it validates, but
   cannot bind): the deploy fails loudly and leaves the first release running.
5. uninstall.yml on one agent keeps its data and config.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.molecule_support.env import (
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
from tests.molecule_support.molecule import halctl, molecule, podman_exec, write_nsenter_inventory

pytestmark = pytest.mark.timeout(1200)

SUP = "hal-sup-1"
AGENTS = ("hal-agent-1", "hal-agent-2")
HOSTS = (SUP, *AGENTS)
DB = "/var/lib/hal-o-swarm/supervisor/supervisor.db"

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


def test_rollback_restores_release_and_config(fleet: Fleet) -> None:
    v1, v2 = fleet.wheels.current_version, fleet.wheels.bumped_version
    back = fleet.halctl("rollback", log="halctl-rollback.log")
    assert back.returncode == 0, back.stdout[-4000:]
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


def test_uninstall_keeps_data_and_config(fleet: Fleet) -> None:
    """uninstall.yml on one agent: unit and releases go, config, token and data stay (no hal_purge)."""
    agent = AGENTS[-1]
    podman_exec(agent, "sh", "-c", "echo outbox > /var/lib/hal-o-swarm/agent/ci-keep")
    run([str(VENV_BIN / "ansible-playbook"), "-i", str(ROOT / "inventory.example"), "-i", str(fleet.inventory),
         "--limit", agent, "halswarm.ops.uninstall"], env=fleet.env, timeout=300,
        log=ARTIFACTS / "uninstall.log")
    gone = "test -e /etc/systemd/system/hal-agent.service && echo left || echo gone"
    assert podman_exec(agent, "sh", "-c", gone).strip() == "gone"
    assert not active(agent, "hal-agent.service")
    assert podman_exec(agent, "sh", "-c", "test -e /opt/hal-o-swarm && echo left || echo gone").strip() == "gone"
    assert podman_exec(agent, "cat", "/var/lib/hal-o-swarm/agent/ci-keep").strip() == "outbox"
    assert config(agent, "agent")["node_id"] == agent
    podman_exec(agent, "test", "-f", "/etc/hal-o-swarm/agent.token")
    podman_exec(agent, "id", "hal-agent")
