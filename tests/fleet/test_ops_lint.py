"""Static checks of the halswarm.ops collection and the ops tree: argument specs in sync with the
defaults, yamllint, ansible-lint (production profile), `ansible-galaxy collection build` (the
tarball holds the roles and playbooks) and `ansible-test sanity` in a clean copy of the collection.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.support.fleet.env import ARTIFACTS, COLLECTION, VENV_BIN, ansible_env, host_ready, run

pytestmark = pytest.mark.timeout(900)

ROLES = COLLECTION / "roles"
OPS_PATHS = ["collections/ansible_collections/halswarm/ops", "molecule", "playbooks", "inventory.example",
             ".yamllint", ".ansible-lint"]


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", sorted(p.name for p in ROLES.iterdir() if (p / "meta").is_dir()))
def test_argument_specs_match_defaults(role: str) -> None:
    """Every default is documented in meta/argument_specs.yml with the same default value, and every
    option of the `main` entry point has a default (prometheus.prometheus does the same in CI)."""
    defaults = _yaml(ROLES / role / "defaults" / "main.yml")
    specs = _yaml(ROLES / role / "meta" / "argument_specs.yml")["argument_specs"]
    assert "main" in specs, f"{role}: no `main` entry point"
    documented: dict[str, dict] = {}
    for entry in specs.values():
        for name, option in (entry.get("options") or {}).items():
            documented.setdefault(name, option)
            assert option.get("description"), f"{role}: {name} has no description"
            assert option.get("type"), f"{role}: {name} has no type"
    missing = sorted(set(defaults) - set(documented))
    assert not missing, f"{role}: defaults not in meta/argument_specs.yml: {missing}"
    main_options = specs["main"].get("options") or {}
    if main_options:
        undocumented_default = sorted(set(main_options) - set(defaults))
        assert not undocumented_default, f"{role}: main options without a default: {undocumented_default}"
    for name, value in defaults.items():
        option = documented[name]
        if "default" in option and not (isinstance(value, str) and "{{" in value):
            assert option["default"] == value, f"{role}: {name} default {value!r} != argspec {option['default']!r}"


def test_yamllint() -> None:
    run([str(VENV_BIN / "yamllint"), "-s", *OPS_PATHS], timeout=120, log=ARTIFACTS / "yamllint.log")


def test_ansible_lint_production_profile() -> None:
    env = ansible_env()
    # --offline: never install anything (ansible-lint would otherwise copy the collection into
    # ~/.ansible/collections, where it shadows this checkout).
    run([str(VENV_BIN / "ansible-lint"), "--offline", "--nocolor", "-q"], timeout=300, env=env,
        log=ARTIFACTS / "ansible-lint-root.log")
    run([str(VENV_BIN / "ansible-lint"), "--offline", "--nocolor", "-q"], timeout=300, env=env, cwd=COLLECTION,
        log=ARTIFACTS / "ansible-lint-collection.log")


def test_galaxy_build_holds_roles_and_playbooks(tmp_path: Path) -> None:
    run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(COLLECTION)],
        timeout=120, env=ansible_env(), log=ARTIFACTS / "galaxy-build.log")
    version = _yaml(COLLECTION / "galaxy.yml")["version"]
    tarball = tmp_path / f"halswarm-ops-{version}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for required in ("MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.md", "meta/runtime.yml",
                     "playbooks/deploy.yml", "playbooks/upgrade.yml", "playbooks/rollback.yml",
                     "playbooks/uninstall.yml", "playbooks/tasks/rollback_or_stop.yml",
                     "roles/supervisor/tasks/main.yml", "roles/supervisor/meta/argument_specs.yml",
                     "roles/supervisor/templates/hal-supervisor.service.j2", "roles/agent/tasks/main.yml",
                     "roles/firewall/tasks/main.yml", "roles/common/tasks/release.yml",
                     "playbooks/monitoring.yml", "roles/monitoring/files/hal-o-swarm.rules.yml",
                     "roles/monitoring/files/hal-o-swarm.rules.test.yml",
                     "roles/monitoring/files/hal-o-swarm.dashboard.json",
                     "extensions/eda/plugins/event_source/event_stream.py",
                     "extensions/eda/rulebooks/remediate_on_event.yml"):
        assert required in names, f"{required} missing from {tarball.name}"
    assert not any(n.startswith((".ansible", "tests/output")) or n.endswith(".ansible-lint") for n in names)


def test_ansible_test_sanity(tmp_path: Path) -> None:
    """ansible-test sanity in a clean copy: in the checkout it would also lint the .ansible/ caches
    that ansible-lint and molecule leave behind (feasibility gotcha)."""
    reason = host_ready()  # installs ansible-test's offline get-pip stand-in
    if reason:
        pytest.skip(reason)
    copy = tmp_path / "ansible_collections" / "halswarm" / "ops"
    shutil.copytree(COLLECTION, copy, ignore=shutil.ignore_patterns(".ansible", "output", "__pycache__", "*.tar.gz"))
    run([str(VENV_BIN / "ansible-test"), "sanity", "--venv", "--python", "3.11", "--requirements", "--color", "no"],
        timeout=840, env=ansible_env(), cwd=copy, log=ARTIFACTS / "ansible-test-sanity.log")
