"""The collection as Galaxy / Automation Hub and ansible-builder expect it: metadata, LICENSE, role
entry-point docs (antsibull-docs), changelog fragments (antsibull-changelog), sanity ignore files for
every core that requires_ansible admits, and an execution environment whose build context
ansible-builder creates (no container engine needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "collections" / "ansible_collections" / "halswarm" / "ops"
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}", ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
               ANSIBLE_NOCOLOR="1", NO_COLOR="1")
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def _core(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def test_galaxy_metadata_license_and_dependencies() -> None:
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    for key in ("repository", "documentation", "homepage", "issues"):
        assert str(galaxy.get(key, "")).startswith("https://"), key
    assert galaxy["license"] == ["MIT"] and "MIT License" in (COLLECTION / "LICENSE").read_text()
    uses = set(re.findall(r"\b(community\.general|ansible\.posix|ansible\.utils)\.",
                          "\n".join(p.read_text() for p in COLLECTION.rglob("*.yml"))))
    assert uses <= set(galaxy["dependencies"]), (uses, galaxy["dependencies"])


def test_sanity_ignore_files_match_requires_ansible() -> None:
    spec = yaml.safe_load((COLLECTION / "meta" / "runtime.yml").read_text())["requires_ansible"]
    lower = re.fullmatch(r">=(\d+\.\d+)\.\d+", spec)
    assert lower, f"requires_ansible {spec!r}: expected a lower bound only"
    ignores = {_core(p.name.removeprefix("ignore-").removesuffix(".txt")): p
               for p in (COLLECTION / "tests" / "sanity").glob("ignore-*.txt")}
    assert _core(lower.group(1)) in ignores, f"no ignore file for ansible-core {lower.group(1)}"
    assert all(v >= _core(lower.group(1)) for v in ignores), f"ignore files for cores below {spec}: {sorted(ignores)}"
    newest = max(ignores)
    missing = [(2, m) for m in range(_core(lower.group(1))[1], newest[1]) if (2, m) not in ignores]
    assert not missing, f"gaps between {lower.group(1)} and {newest}: {missing}"
    assert len({p.read_text() for p in ignores.values()}) == 1, "ignore files disagree"


def test_role_entry_points_documented_antsibull_docs_lint() -> None:
    for spec in COLLECTION.glob("roles/*/meta/argument_specs.yml"):
        for name, entry in yaml.safe_load(spec.read_text())["argument_specs"].items():
            assert entry.get("short_description") and entry.get("description"), f"{spec}: {name}"
    _run([str(BIN / "antsibull-docs"), "lint-collection-docs", "--plugin-docs", "."], COLLECTION)


def test_changelog_fragments_lint() -> None:
    assert (COLLECTION / "changelogs" / "config.yaml").is_file()
    _run([str(BIN / "antsibull-changelog"), "lint"], COLLECTION)
    _run([str(BIN / "antsibull-changelog"), "lint-changelog-yaml", "changelogs/changelog.yaml"], COLLECTION)


def test_ansible_builder_creates_the_build_context(tmp_path: Path) -> None:
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    assert yaml.safe_load((COLLECTION / "meta" / "execution-environment.yml").read_text())["version"] == 1
    for name in ("execution-environment.yml", "requirements.yml"):
        shutil.copy2(ROOT / "ee" / name, tmp_path / name)
    wanted = [c["name"] for c in yaml.safe_load((tmp_path / "requirements.yml").read_text())["collections"]]
    tarball = f"halswarm-ops-{galaxy['version']}.tar.gz"
    assert f"/build/collections/{tarball}" in wanted, f"ee/requirements.yml does not name {tarball}: {wanted}"
    _run([str(BIN / "ansible-galaxy"), "collection", "build", str(COLLECTION), "--output-path", str(tmp_path)],
         tmp_path)
    _run([str(BIN / "ansible-builder"), "create", "-f", "execution-environment.yml", "--context", "context"],
         tmp_path, timeout=120)
    context = tmp_path / "context"
    assert "ansible-galaxy collection install" in (context / "Containerfile").read_text()
    assert (context / "_build" / "collections" / tarball).is_file()
    assert (context / "_build" / "requirements.yml").is_file()
