"""Two supervisors on one PostgreSQL, deployed by the collection under real systemd (issue 21, point 4).

Four podman instances with systemd as PID 1 and no network: the database host (the image with Debian's
PostgreSQL), two supervisor hosts and one agent host, all in the database host's network namespace (so
every address is 127.0.0.1 and nothing reaches outside). The collection's own playbooks do the work, as
docs/ha.md tells an operator to: `postgresql.yml` on the `postgresql` group, then `deploy.yml` with
`hal_supervisor_storage_url`; the agent role lists both supervisors by itself (the second one's ports are
set per host). Then, on the deployed hosts:

- both supervisors are active and ready on PostgreSQL, and each one's API shows the agent online, whichever
  holds it (the lease in the shared database names the holder);
- a command sent to the supervisor that does not hold the node is forwarded and answered;
- `kill -9` of the holding supervisor's process: the agent moves to the other one (its lease changes owner),
  systemd restarts the killed one, and a command through it reaches the node again, now forwarded the other
  way. The failover time is printed.

The database host is also where the postgresql role is checked for real (it once had a container of its
own): its first converge changed things, a second changes nothing, nor does `--check --diff`; the role is
least-privilege, its password is SCRAM, it owns its two databases, PUBLIC may not connect to them, scram
over TCP works and a wrong password is refused. The password never appears in any playbook output.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.fleet.env import (
    ARTIFACTS,
    AUTH_TOKEN,
    IMAGE,
    PG_IMAGE,
    ROOT,
    WHEELHOUSE,
    ansible_env,
    host_ready,
    run,
    wheels,
)
from tests.support.fleet.fleet import AGENT_CONFIG, SUP_CONFIG, SUP_UNIT, api_probe, wait_booted
from tests.support.fleet.molecule import container_pid, podman_exec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(1500)

PREFIX = f"hal-ha-{secrets.token_hex(3)}"
DB, SUP1, SUP2, AGENT = (f"{PREFIX}-{n}" for n in ("db", "sup1", "sup2", "agent"))
PORTS = {SUP1: (8420, 8421), SUP2: (8430, 8431)}  # (agent WebSocket, HTTP API): one network namespace



@dataclass
class HaFleet:
    workdir: Path
    password: str
    first_postgresql_run: str = ""

    @property
    def inventory(self) -> Path:
        return self.workdir / "inventory.yml"

    @property
    def secrets(self) -> Path:
        return self.workdir / "secrets.yml"

    def api(self, sup: str, path: str, method: str = "GET", body: Any = None) -> dict[str, Any]:
        """The API of supervisor `sup`, asked from its own host (the namespace is out of the host's reach)."""
        return api_probe(sup, path, method, body, port=PORTS[sup][1])

    def holder(self) -> str | None:
        """The supervisor host whose lease holds the agent's node (the lease names `<hostname>:<ws port>`)."""
        out = podman_exec(DB, "su", "postgres", "-c",
                          f"psql -XAt halswarm -c \"SELECT owner FROM node_leases WHERE node_id = '{AGENT}'\"",
                          check=False).strip()
        return next((sup for sup, (ws, _) in PORTS.items() if out == f"{sup}:{ws}"), None)

    def online_on(self, sup: str) -> bool:
        res = self.api(sup, f"/api/v1/nodes/{AGENT}")
        return res["status"] == 200 and res["body"]["data"].get("status") == "online"

    def command(self, sup: str) -> dict[str, Any]:
        """`auth_refresh` for the agent's node, sent to supervisor `sup` (it needs nothing but the agent)."""
        return self.api(sup, "/api/v1/commands", "POST",
                        {"type": "auth_refresh", "target": {"node_id": AGENT}, "args": {}, "timeout": 60})


def _destroy() -> None:
    for name in (AGENT, SUP2, SUP1, DB):  # the namespace's owner last
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=120, check=False)


def _create() -> None:
    for name, image, network in ((DB, PG_IMAGE, "none"), (SUP1, IMAGE, f"container:{DB}"),
                                 (SUP2, IMAGE, f"container:{DB}"), (AGENT, IMAGE, f"container:{DB}")):
        run(["podman", "run", "-d", "--name", name, "--hostname", name, "--network", network, "--systemd", "always",
             "--label", "halswarm-ci=1", image, "/sbin/init"], timeout=120, log=ARTIFACTS / f"ha-{name}-create.log")
    for name in (DB, SUP1, SUP2, AGENT):
        wait_booted(name)
    # The agent reaches the supervisors by their inventory names, as the role derives its URLs from them.
    podman_exec(AGENT, "sh", "-c", f"echo '127.0.0.1 {SUP1} {SUP2}' >> /etc/hosts")


def _write_inventory(fleet: HaFleet, password: str) -> None:
    w = wheels()
    doc = {"all": {
        "vars": {
            "ansible_connection": "community.docker.nsenter",
            "ansible_python_interpreter": "/usr/bin/python3",
            "hal_auth_token": AUTH_TOKEN,
            "hal_release_wheel": str(w.current),
            "hal_release_wheelhouse": str(WHEELHOUSE),
            "hal_supervisor_address": "127.0.0.1",
            "hal_agent_opencode_manage": False,
            "hal_supervisor_storage_url": "postgresql://halswarm@127.0.0.1:5432/halswarm",
            # The supervisor hosts have no network for apt: pg_dump is not needed by this test.
            "hal_supervisor_storage_client": False,
            "hal_postgresql_client_sources": ["127.0.0.1"],
            "hal_postgresql_listen_addresses": ["localhost"],
            "hal_postgresql_apt_cache_valid_time": 0,
            # Liveness in 6 s: a killed supervisor's lease expires sooner; same code path, shorter wait.
            "hal_supervisor_config_extra": {"server": {"heartbeat_interval_sec": 2, "heartbeat_timeout_count": 3}},
        },
        "hosts": {h: {"ansible_nsenter_pid": container_pid(h)} for h in (DB, SUP1, SUP2, AGENT)},
        "children": {
            "postgresql": {"hosts": {DB: None}},
            "hal_supervisors": {"hosts": {SUP1: None, SUP2: {"hal_supervisor_port": PORTS[SUP2][0],
                                                             "hal_supervisor_http_port": PORTS[SUP2][1]}}},
            "hal_agents": {"hosts": {AGENT: None}},
        },
    }}
    fleet.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    fleet.secrets.write_text(yaml.safe_dump({"hal_postgresql_password": password,
                                             "hal_supervisor_storage_password": password}))
    fleet.secrets.chmod(0o600)


def _playbook(fleet: HaFleet, name: str, *args: str, log: str | None = None) -> str:
    w = wheels()
    env = ansible_env(HAL_RELEASE_WHEEL=str(w.current), HAL_RELEASE_WHEELHOUSE=str(WHEELHOUSE),
                      HOME=str(fleet.workdir / "home"))
    proc = run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(fleet.inventory),
                "-e", f"@{fleet.secrets}", *args, str(ROOT / "collections" / "ansible_collections" / "halswarm"
                                                      / "ops" / "playbooks" / name)],
               env=env, timeout=1200, log=ARTIFACTS / f"ha-{PREFIX}-{log or name}.log", cwd=ROOT)
    assert fleet.password not in proc.stdout, f"the database password shows in the output of {name}"
    return proc.stdout


def _changed(out: str, host: str) -> int:
    m = re.search(rf"^{re.escape(host)}\s*:.*changed=(\d+).*failed=0", out, re.M)
    assert m, out[-3000:]
    return int(m.group(1))


def _db(*cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "exec", "-i", DB, *cmd], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture(scope="module")
def ha_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaFleet]:
    reason = host_ready()
    if reason:
        pytest.skip(reason)
    probe = subprocess.run(["podman", "image", "exists", PG_IMAGE], capture_output=True, timeout=60, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no {PG_IMAGE} image (scripts/ci-setup.sh builds it)")
    fleet = HaFleet(tmp_path_factory.mktemp("ha-fleet"), secrets.token_hex(16))
    (fleet.workdir / "home").mkdir()
    try:
        _destroy()
        _create()
        _write_inventory(fleet, fleet.password)
        fleet.first_postgresql_run = _playbook(fleet, "postgresql.yml")
        _playbook(fleet, "deploy.yml")
        yield fleet
    finally:
        _destroy()


def test_two_supervisors_share_postgresql_and_both_see_the_agent(ha_fleet: HaFleet) -> None:
    for sup in (SUP1, SUP2):
        assert podman_exec(sup, "systemctl", "is-active", SUP_UNIT, check=False).strip() == "active", sup
        config = json.loads(podman_exec(sup, "cat", SUP_CONFIG))
        assert config["storage"]["url"] == "postgresql://halswarm@127.0.0.1:5432/halswarm", config.get("storage")
        mode = podman_exec(sup, "stat", "-c", "%a %U", config["storage"]["password_file"]).split()
        assert mode == ["600", "hal-supervisor"], mode
        ready = ha_fleet.api(sup, "/readyz")
        assert ready["status"] == 200, (sup, ready)
        wait_for(lambda sup=sup: ha_fleet.online_on(sup), f"{AGENT} online through {sup}'s API", 60, interval=1)
    # With hal_agent_supervisor_urls empty the role lists every supervisor, in inventory order, with its port.
    agent_config = json.loads(podman_exec(AGENT, "cat", AGENT_CONFIG))
    assert agent_config["supervisor_url"] == [f"ws://{s}:{PORTS[s][0]}/ws/agent" for s in (SUP1, SUP2)]
    holder = ha_fleet.holder()
    assert holder in (SUP1, SUP2), f"no lease for {AGENT}"
    # The supervisor that does not hold the node forwards the command to the one that does.
    other = SUP2 if holder == SUP1 else SUP1
    res = ha_fleet.command(other)
    assert res["status"] == 200 and res["body"]["data"]["status"] == "success", res
    assert res["body"]["data"]["node_id"] == AGENT


def test_kill_9_of_the_holder_moves_the_agent_and_commands_follow(ha_fleet: HaFleet) -> None:
    holder = ha_fleet.holder()
    assert holder in (SUP1, SUP2)
    survivor = SUP2 if holder == SUP1 else SUP1
    before = podman_exec(holder, "systemctl", "show", SUP_UNIT, "-p", "NRestarts", "--value").strip()
    t0 = time.monotonic()
    podman_exec(holder, "systemctl", "kill", "--signal=SIGKILL", SUP_UNIT)
    wait_for(lambda: ha_fleet.holder() == survivor and ha_fleet.online_on(survivor),
             f"{AGENT} held by {survivor} after {holder} was killed", 60, interval=0.5)
    print(f"failover: kill -9 of {holder} -> {AGENT} held and online on {survivor} in {time.monotonic() - t0:.1f} s")
    # systemd brings the killed one back (Restart=on-failure); it is ready and forwards to the new holder.
    wait_for(lambda: podman_exec(holder, "systemctl", "show", SUP_UNIT, "-p", "NRestarts", "--value").strip()
             != before and podman_exec(holder, "systemctl", "is-active", SUP_UNIT, check=False).strip() == "active",
             f"{holder} restarted by systemd", 60, interval=1)
    wait_for(lambda: ha_fleet.api(holder, "/readyz")["status"] == 200, f"{holder} ready again", 90, interval=1)
    wait_for(lambda: ha_fleet.online_on(holder), f"{AGENT} online through the restarted {holder}", 60, interval=1)
    res = ha_fleet.command(holder)
    assert res["status"] == 200 and res["body"]["data"]["status"] == "success", res
    assert ha_fleet.holder() == survivor  # the agent stayed where it moved


def test_postgresql_role_is_idempotent_and_least_privilege(ha_fleet: HaFleet) -> None:
    assert _changed(ha_fleet.first_postgresql_run, DB) >= 6
    assert _changed(_playbook(ha_fleet, "postgresql.yml", log="postgresql-idempotence"), DB) == 0
    assert _changed(_playbook(ha_fleet, "postgresql.yml", "--check", "--diff", log="postgresql-check"), DB) == 0

    sql = ("SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, left(rolpassword, 14) "
           "FROM pg_authid WHERE rolname = 'halswarm'; SELECT datname, pg_get_userbyid(datdba), "
           "has_database_privilege('public', datname, 'CONNECT') FROM pg_database WHERE datname LIKE 'halswarm%' "
           "ORDER BY 1")
    res = _db("su", "postgres", "-c", f'psql -XAt -c "{sql}"')
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["f|f|f|f|f|SCRAM-SHA-256$", "halswarm|halswarm|f",
                                  "halswarm_restore_test|halswarm|f"]
    login = ("umask 077; cat > /tmp/pgpass; PGPASSFILE=/tmp/pgpass psql -X -w -h 127.0.0.1 -U halswarm "
             "halswarm_restore_test -Atc 'CREATE TABLE t (x int); DROP TABLE t; SELECT current_user'")
    ok = _db("sh", "-c", login, stdin=f"*:*:*:*:{ha_fleet.password}\n")
    assert ok.returncode == 0 and ok.stdout.split() == ["CREATE", "TABLE", "DROP", "TABLE", "halswarm"], ok.stderr
    bad = _db("sh", "-c", login, stdin="*:*:*:*:wrong\n")
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr
