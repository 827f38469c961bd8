# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""Unit tests (ansible-test units style) of hal_config. The validator is a stand-in script with the
contract of `hal-supervisor --validate --config FILE` (exit 0/1, `PATH: message` lines), so these run
without the halswarm package; tests/integration/test_backup_modules.py runs the real one."""

from __future__ import annotations

import json
import os
import sys

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.halswarm.ops.plugins.modules import hal_config

TOKEN = "s3cr3t-token-0123456789abcdef0123456789"

VALIDATOR = r'''
import json, sys
path = sys.argv[-1]
strict = "--strict" in sys.argv
doc = json.load(open(path))
errors = []
port = doc.get("server", {}).get("port", 8420)
if not isinstance(port, int) or not 1 <= port <= 65535:
    errors.append("server.port: must be between 1 and 65535 (got %r)" % (port,))
if not doc.get("server", {}).get("auth_token"):
    errors.append("server.auth_token: is required")
for key in doc:
    if key not in ("server", "database", "log"):
        print("%s: unknown key%s" % (key, "" if strict else " (warning)"))
        if strict:
            errors.append(None)
for e in errors:
    if e:
        print(e)
if errors:
    sys.stderr.write("error: %s is not a valid supervisor config\n" % path)
    sys.exit(1)
print("OK: %s is a valid supervisor config" % path)
'''


class ExitJson(Exception):
    pass


class FailJson(Exception):
    pass


@pytest.fixture(autouse=True)
def intercept(monkeypatch):
    def exit_json(self, **kwargs):
        kwargs.setdefault("changed", False)
        raise ExitJson(kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs["msg"] = msg
        raise FailJson(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)


@pytest.fixture
def validator(tmp_path):
    script = tmp_path / "validator.py"
    script.write_text(VALIDATOR)
    return [sys.executable, str(script)]


def run(args, check=False, diff=True):
    params = dict(args)
    params["_ansible_check_mode"] = check
    params["_ansible_diff"] = diff
    with patch_module_args(params):
        try:
            hal_config.main()
        except ExitJson as exc:
            return True, exc.args[0]
        except FailJson as exc:
            return False, exc.args[0]
    raise AssertionError("module returned without exit_json/fail_json")


def config(port=8420):
    return {"server": {"host": "127.0.0.1", "port": port}, "database": {"path": "/var/lib/x/supervisor.db"}}


def test_renders_validated_json_0600_with_secret_redacted_in_diff(tmp_path, validator):
    path = tmp_path / "supervisor.config.json"
    ok, res = run({"path": str(path), "kind": "supervisor", "config": config(), "validator": validator,
                   "secrets": {"server.auth_token": TOKEN}})
    assert ok, res
    assert res["changed"] and res["valid"]
    written = json.loads(path.read_text())
    assert written["server"]["auth_token"] == TOKEN and written["server"]["port"] == 8420
    assert oct(os.stat(str(path)).st_mode & 0o777) == "0o600"
    assert TOKEN not in json.dumps(res)
    assert '"auth_token": "********"' in res["diff"]["after"]
    ok, again = run({"path": str(path), "kind": "supervisor", "config": config(), "validator": validator,
                     "secrets": {"server.auth_token": TOKEN}})
    assert ok and not again["changed"]  # idempotent


def test_invalid_config_is_never_written(tmp_path, validator):
    path = tmp_path / "supervisor.config.json"
    path.write_text("{}\n")
    ok, res = run({"path": str(path), "kind": "supervisor", "config": config(port=70000), "validator": validator,
                   "secrets": {"server.auth_token": TOKEN}})
    assert not ok
    assert "server.port: must be between 1 and 65535" in res["msg"]
    assert path.read_text() == "{}\n"
    assert [p for p in os.listdir(str(tmp_path)) if p.startswith(".")] == []  # no candidate left behind


def test_check_mode_validates_and_diffs_without_writing(tmp_path, validator):
    path = tmp_path / "supervisor.config.json"
    ok, res = run({"path": str(path), "kind": "supervisor", "config": config(), "validator": validator,
                   "secrets": {"server.auth_token": TOKEN}}, check=True)
    assert ok and res["changed"] and res["valid"]
    assert not path.exists()
    assert res["diff"]["before"] == ""


def test_backup_of_the_replaced_file_and_unknown_key_warning(tmp_path, validator):
    path = tmp_path / "supervisor.config.json"
    first = dict(config(), server={"port": 8420, "auth_token": TOKEN})
    path.write_text(json.dumps(first))
    doc = dict(config(port=9420), extra_section={"a": 1})
    ok, res = run({"path": str(path), "kind": "supervisor", "config": doc, "validator": validator,
                   "secrets": {"server.auth_token": TOKEN}, "backup": True})
    assert ok, res
    with open(res["backup_file"]) as handle:
        assert json.load(handle) == first
    assert "extra_section: unknown key (warning)" in res["problems"]
    ok, res = run({"path": str(path), "kind": "supervisor", "config": doc, "validator": validator,
                   "secrets": {"server.auth_token": TOKEN}, "strict": True})
    assert not ok and "extra_section" in json.dumps(res["problems"])


def test_validate_only_existing_file(tmp_path, validator):
    path = tmp_path / "supervisor.config.json"
    path.write_text(json.dumps(dict(config(), server={"auth_token": TOKEN})))
    ok, res = run({"path": str(path), "kind": "supervisor", "validator": validator})
    assert ok and res["valid"] and not res["changed"]
    path.write_text(json.dumps(config()))
    ok, res = run({"path": str(path), "kind": "supervisor", "validator": validator})
    assert not ok and "server.auth_token: is required" in res["problems"]


def test_missing_validator_is_a_clear_error(tmp_path):
    path = tmp_path / "agent.config.json"
    ok, res = run({"path": str(path), "kind": "agent", "config": {"supervisor_url": "ws://x:8420"},
                   "venv": str(tmp_path / "no-release")})
    assert not ok and "hal-agent" in res["msg"] and "not found" in res["msg"]
    assert not path.exists()


def test_redact_known_secret_keys():
    doc = {"server": {"auth_token": "a", "auth_token_file": "/etc/t", "port": 1},
           "security": {"agent_tokens": {"n1": "b"}}, "cost": {"anthropic": {"admin_api_key": "c"}}}
    red = hal_config.redact(doc)
    assert red["server"] == {"auth_token": "********", "auth_token_file": "/etc/t", "port": 1}
    assert red["security"]["agent_tokens"] == {"n1": "********"}
    assert red["cost"]["anthropic"]["admin_api_key"] == "********"
