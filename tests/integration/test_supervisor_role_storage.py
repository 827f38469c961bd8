"""The supervisor role's PostgreSQL store settings (issue 21): the role's own tasks/storage.yml and config
template (defaults and vars as the role has them), run through ansible-runner on localhost into a temp
directory. With a URL: storage.url and storage.password_file in the rendered config, which the supervisor's
own validator accepts, the password file written 0600 and never shown in the output; a URL holding a
password is refused with one message; an empty URL renders no storage section (SQLite as before)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from halswarm.config.validate import validate_data
from tests.support.backup import COLLECTIONS, run_playbook, task_result

pytestmark = pytest.mark.timeout(240)

ROLE = COLLECTIONS / "ansible_collections" / "halswarm" / "ops" / "roles" / "supervisor"


def render(tmp_path: Path, extravars: dict[str, Any]) -> tuple[Any, list[dict[str, Any]], Path]:
    out = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    out.mkdir()
    storage = yaml.safe_load((ROLE / "tasks" / "storage.yml").read_text())
    # Only the URL check and the password file: the client install (apt) is not for this host.
    tasks = [t for t in storage if "apt" not in str(t) and "pg_dump" not in t.get("name", "")]
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "handlers": [{"name": "Restart hal-supervisor", "ansible.builtin.debug": {"msg": "restart"}}],
        "tasks": [*tasks, {"name": "Render the supervisor config", "ansible.builtin.template": {
            "src": str(ROLE / "templates" / "config.json.j2"), "dest": str(out / "supervisor.config.json"),
            "mode": "0600"}}],
    }]
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(play))
    user = __import__("getpass").getuser()
    runner, results = run_playbook(playbook, {"hal_supervisor_user": user, "hal_supervisor_group": user,
                                              "hal_supervisor_config_dir": str(out), "hal_auth_token": "t" * 40,
                                              "hal_supervisor_token_file": str(out / "supervisor.token"),
                                              **extravars}, tmp_path)
    return runner, results, out


def test_postgresql_store_renders_url_and_password_file(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(24)
    url = "postgresql://halswarm@hal-db-1:5432/halswarm?sslmode=verify-full"
    runner, _, out = render(tmp_path, {"hal_supervisor_storage_url": url, "hal_supervisor_storage_password": password})
    text = runner.stdout.read()
    assert runner.status == "successful", text
    assert password not in text
    secret = out / "db.password"
    assert secret.read_text() == password + "\n" and oct(secret.stat().st_mode & 0o777) == "0o600"
    cfg = json.loads((out / "supervisor.config.json").read_text())
    assert cfg["storage"] == {"url": url, "password_file": str(secret)}
    assert password not in (out / "supervisor.config.json").read_text()
    (out / "supervisor.token").write_text("t" * 40 + "\n")
    problems = [str(p) for p in validate_data("supervisor", cfg, env={}) if p.is_error]
    assert problems == [], problems


def test_a_password_in_the_url_is_refused_and_sqlite_is_unchanged(tmp_path: Path) -> None:
    runner, results, out = render(tmp_path, {"hal_supervisor_storage_url": "postgresql://u:pw@db/hal"})
    assert runner.status == "failed"
    assert "without a" in task_result(results, "Check the storage URL")["msg"]
    assert not (out / "db.password").exists()

    runner, _, out = render(tmp_path, {})
    assert runner.status == "successful", runner.stdout.read()
    cfg = json.loads((out / "supervisor.config.json").read_text())
    assert "storage" not in cfg and cfg["database"]["path"].endswith("supervisor.db")
    assert not (out / "db.password").exists()
