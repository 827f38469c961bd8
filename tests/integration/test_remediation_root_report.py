"""The root request path reports back: the supervisor role's halctl configuration for
hal-supervisor-remediate.service (tasks/remediation_report.yml, the unit template, the operator identity it
adds to the supervisor config) makes the runner's `halctl remediate` POST its report to a real supervisor.

Process level on loopback: the role's tasks run on localhost (check mode, install, idempotence), the unit is
rendered from the role's template and its ExecStart runs as written (with this interpreter in place of the
release's) with the unit's Environment, against a real supervisor whose operators include the role's
rendered identity. The incident is `cost-data-discrepancy` on a supervisor without cost providers: the real
playbook runs through ansible-runner on localhost and decides `not_present`, changing nothing on this host.
The unit itself (systemd, .path trigger) runs only in the drill fleet."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from halswarm.supervisor.features.remediations.db_launch import write_request
from tests.support.backup import COLLECTIONS, REPO, VENV_BIN, run_playbook
from tests.support.supervisor_proc import ADMIN_NAME, SupervisorProc

pytest.importorskip("ansible_runner")

ROLE = COLLECTIONS / "ansible_collections/halswarm/ops/roles/supervisor"
INCIDENT = "cost-data-discrepancy"
RUNNER_NAME = "remediation-runner"


ROLE_TASKS = {"name": "the role's tasks", "ansible.builtin.include_role": {
    "name": "halswarm.ops.supervisor", "tasks_from": "remediation_report", "public": True}}


def _plays(tmp: Path, out: Path) -> tuple[Path, Path]:
    """The role's reporting tasks alone; and with them (outside the role, with its variables) the unit and the
    operators the role puts into the supervisor config, rendered into `out`."""
    role, render = tmp / "report.yml", tmp / "render.yml"
    role.write_text(yaml.safe_dump([{"name": "root runner reporting", "hosts": "localhost", "gather_facts": False,
                                     "tasks": [ROLE_TASKS]}], sort_keys=False))
    render.write_text(yaml.safe_dump([{
        "name": "render", "hosts": "localhost", "gather_facts": False,
        "tasks": [
            ROLE_TASKS,
            {"name": "render the unit", "ansible.builtin.template": {
                "src": str(ROLE / "templates/hal-supervisor-remediate.service.j2"),
                "dest": str(out / "hal-supervisor-remediate.service"), "mode": "0600"}},
            {"name": "the operators of the supervisor config", "ansible.builtin.copy": {
                "content": "{{ _hal_supervisor_config.security.operators | to_json }}",
                "dest": str(out / "operators.json"), "mode": "0600"}, "no_log": True},
        ],
    }], sort_keys=False))
    return role, render


def _changed(runner: Any) -> int:
    """Tasks that changed (or would change) something; no_log hides it from the task results."""
    assert runner.status == "successful", runner.stdout.read()
    return int((runner.stats or {}).get("changed", {}).get("localhost", 0))


def _unit(path: Path) -> tuple[list[str], dict[str, str]]:
    lines = path.read_text().splitlines()
    (exec_start,) = [ln.split("=", 1)[1] for ln in lines if ln.startswith("ExecStart=")]
    env = dict(ln.split("=", 1)[1].split("=", 1) for ln in lines if ln.startswith("Environment="))
    return shlex.split(exec_start), env


def _reports(sup: SupervisorProc) -> list[dict[str, Any]]:
    with sup.client() as c:
        res = c.get("/api/v1/remediations", params={"incident": INCIDENT})
    assert res.status_code == 200, res.text
    return list(res.json()["data"])


@pytest.mark.timeout(900)
def test_root_runner_report_reaches_the_supervisor(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the role writes root-owned files (CI runs as root)")
    out = tmp_path / "out"
    out.mkdir()
    sup = SupervisorProc(tmp_path / "sup")
    etc = tmp_path / "etc"
    home = etc / "remediate-halctl"
    config = home / "halctl" / "config.yaml"
    release = tmp_path / "release"
    variables = {"hal_supervisor_config_dir": str(etc), "hal_supervisor_api_url": sup.api,
                 "hal_supervisor_auth_token": sup.token, "hal_supervisor_config_file": str(sup.config_path),
                 "hal_supervisor_database_path": str(sup.db_path), "hal_release_root": str(release)}
    role_play, render_play = _plays(tmp_path, out)

    # A weak token is refused with one line naming the variables, before anything is written.
    runner, _ = run_playbook(role_play, variables | {"hal_supervisor_remediation_token": "x" * 31}, tmp_path)
    assert runner.status == "failed"
    assert "hal_supervisor_remediation_token (and the admin token" in runner.stdout.read()
    assert not etc.exists()

    # Check mode: the directories and the config would change, nothing is written.
    assert _changed(run_playbook(role_play, variables, tmp_path, check=True)[0]) == 2
    assert not etc.exists()

    runner, _ = run_playbook(role_play, variables, tmp_path)
    assert _changed(runner) == 2
    # Nothing of the token in the play's output (no_log).
    assert yaml.safe_load(config.read_text())["auth_token"] not in runner.stdout.read()
    assert _changed(run_playbook(role_play, variables, tmp_path)[0]) == 0  # idempotent
    assert _changed(run_playbook(role_play, variables, tmp_path, check=True)[0]) == 0
    for d in (home, config.parent):
        st = d.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 0, 0), d
    st = config.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)

    assert _changed(run_playbook(render_play, variables, tmp_path)[0]) == 2  # only the two renders
    written = yaml.safe_load(config.read_text())
    operators = json.loads((out / "operators.json").read_text())
    # The supervisor config gets the admin (token file) and the runner's own identity, role operator.
    assert [(o["name"], o["role"]) for o in operators] == [("admin", "admin"), (RUNNER_NAME, "operator")]
    runner_op = operators[1]
    assert written == {"supervisor_url": sup.api, "auth_token": runner_op["token"],
                       "actor": "hal-supervisor-remediate"}
    assert len(runner_op["token"]) >= 32 and runner_op["token"] != sup.token

    argv, unit_env = _unit(out / "hal-supervisor-remediate.service")
    assert unit_env["XDG_CONFIG_HOME"] == str(home)
    assert argv[0] == f"{release}/current/bin/python"
    assert argv[1:] == ["-m", "halswarm.supervisor.features.remediations.request_runner", "--config",
                        str(sup.config_path), "--dir", str(sup.db_path.parent / "remediation-requests")]

    admin_token = tmp_path / "admin.token"
    admin_token.write_text(sup.token + "\n")
    admin_token.chmod(0o600)
    inv = tmp_path / "hosts.ini"
    inv.write_text("[hal_supervisors]\n"
                   f"localhost ansible_connection=local ansible_python_interpreter={sys.executable} "
                   f"hal_supervisor_api_url={sup.api} hal_supervisor_token_file={admin_token} "
                   f"hal_supervisor_config_file={sup.config_path} hal_remediation_become=false\n")
    sup.extra = {"security": {"operators": [{"name": ADMIN_NAME, "role": "admin", "token": sup.token}, runner_op]},
                 "remediation": {"inventory": str(inv), "auto": [INCIDENT], "supervisor_host": "localhost",
                                 "timeout_minutes": 10}}
    requests = sup.db_path.parent / "remediation-requests"
    unsent = sup.db_path.parent / "remediation-runs" / "remediations" / "unsent"
    sup.start()
    try:
        requests.mkdir(mode=0o700)
        base = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO),
                "HOME": str(tmp_path / "root-home"), "LANG": "C.UTF-8"}

        def run_runner(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
            write_request(requests, INCIDENT, time.time())  # what the supervisor writes
            res = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=400,
                                 cwd=REPO, env=env)
            assert f": accepted ({INCIDENT})" in res.stdout, res.stdout + res.stderr
            assert f"{INCIDENT}: halctl remediate exited 0" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
            assert list(requests.iterdir()) == []
            return res

        # Without the role's halctl config (root's HOME has none): the run works, its report is only queued.
        run_runner(base)
        assert len(list(unsent.glob("*.json"))) == 1 and _reports(sup) == []

        # As the unit runs it: this run's report and the queued one reach the supervisor.
        run_runner(base | unit_env)
        assert list(unsent.glob("*.json")) == []
        reports = _reports(sup)
        assert len(reports) == 2, reports
        assert {(r["incident"], r["status"], r["actor"]) for r in reports} == {(INCIDENT, "not_present", RUNNER_NAME)}
        with sup.client() as c:
            audit = c.get("/api/v1/audit", params={"action": "remediation"}).json()["data"]
        assert [a["actor"] for a in audit] == [RUNNER_NAME, RUNNER_NAME], audit
    finally:
        sup.stop()

    # Disabled: only the file the role wrote goes (its directories stay, nothing else is touched).
    (home / "keep").write_text("x")
    off = variables | {"hal_supervisor_remediation_report_enabled": False}
    assert _changed(run_playbook(role_play, off, tmp_path)[0]) == 1
    assert not config.exists() and (home / "keep").exists() and config.parent.is_dir()
