"""ansible-test `units` on the data-safety plugins (the collection's tests/unit/plugins/modules/test_hal_*.py),
on a copy of the collection in a temporary ansible_collections tree (the repo's tree may hold
.ansible/ caches that ansible-test would lint; feasibility.md section 1, gotcha b). `ansible-test sanity`
runs once over the whole collection, these plugins included (tests/fleet/test_ops_lint.py).

The modules are MIT licensed like the project: validate-modules' missing-gplv3-license is ignored
(tests/sanity/ignore-2.19.txt lines below, merged into the collection's own ignore file if it has one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backup import COLLECTIONS

SOURCE = COLLECTIONS / "ansible_collections/halswarm/ops"
MODULES = ("hal_config", "hal_sqlite_backup", "hal_sqlite_restore", "hal_sqlite_recover")
IGNORES = [f"plugins/modules/{m}.py validate-modules:missing-gplv3-license" for m in MODULES]
ANSIBLE_TEST = Path(sys.executable).parent / "ansible-test"


@pytest.fixture(scope="module")
def collection_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not ANSIBLE_TEST.exists():
        pytest.skip("ansible-test is not installed")
    root = tmp_path_factory.mktemp("atest")
    dest = root / "ansible_collections/halswarm/ops"
    shutil.copytree(SOURCE, dest, ignore=shutil.ignore_patterns(".ansible", "output", "__pycache__", "*.pyc",
                                                                   "*.tar.gz"))
    ignore = dest / "tests/sanity/ignore-2.19.txt"
    ignore.parent.mkdir(parents=True, exist_ok=True)
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    present = {ln.split("#", 1)[0].strip() for ln in lines}  # entries may carry a trailing comment
    ignore.write_text("\n".join(lines + [line for line in IGNORES if line not in present]) + "\n")
    yield dest


def _ansible_test(where: Path, *args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{ANSIBLE_TEST.parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(ANSIBLE_TEST), *args, "--venv", "--python", "3.11", "--requirements", "--color", "no"],
                          cwd=where, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(1200)
def test_ansible_test_units_of_the_modules(collection_copy: Path) -> None:
    res = _ansible_test(collection_copy, "units", "tests/unit/plugins/modules/", timeout=1100)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]
    assert " passed" in res.stdout and " failed" not in res.stdout
