"""The collection's release pruning (roles/common/tasks/prune.yml), run by the real ansible-playbook through
ansible-runner on localhost against a temporary install root: which releases go, which stay (current,
previous and the newest `hal_release_keep` others), their dist/ wheels with them, check mode and idempotence."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from halswarm.ops.runner import PlaybookRun, run_playbook

pytestmark = pytest.mark.timeout(180)

PLAY = """
- name: Prune releases
  hosts: all
  gather_facts: false
  tasks:
    - name: Remove old releases
      ansible.builtin.import_role:
        name: halswarm.ops.common
        tasks_from: prune
"""


def _root(tmp_path: Path) -> Path:
    """releases/0.1 (oldest) .. 0.6 (newest), each with dist/<version>/; current -> 0.6, previous -> 0.1."""
    root = tmp_path / "opt"
    now = time.time()
    for age, version in enumerate(reversed(["0.1", "0.2", "0.3", "0.4", "0.5", "0.6"])):
        rel = root / "releases" / version
        (rel / "bin").mkdir(parents=True)
        dist = root / "dist" / version
        dist.mkdir(parents=True)
        (dist / f"hal_o_swarm-{version}-py3-none-any.whl").write_bytes(b"wheel")
        os.utime(rel, (now - 3600 * (age + 1), now - 3600 * (age + 1)))
    (root / "current").symlink_to(root / "releases" / "0.6")
    (root / "previous").symlink_to(root / "releases" / "0.1")
    return root


def _prune(tmp_path: Path, root: Path, *, check: bool = False, keep: int = 2) -> tuple[int, int]:
    inventory = tmp_path / "hosts"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    play = tmp_path / "prune.yml"
    play.write_text(PLAY)
    result = run_playbook(PlaybookRun(playbook=str(play), inventories=[str(inventory)], check=check,
                                      extravars={"hal_release_root": str(root), "hal_release_keep": keep},
                                      state_dir=tmp_path / "state"), emit=lambda _line: None)
    return result.exit_code, result.stats["localhost"].changed


def _left(root: Path) -> tuple[list[str], list[str]]:
    return sorted(p.name for p in (root / "releases").iterdir()), sorted(p.name for p in (root / "dist").iterdir())


def test_prune_keeps_current_previous_and_the_newest_others(tmp_path: Path) -> None:
    root = _root(tmp_path)
    all_six = (["0.1", "0.2", "0.3", "0.4", "0.5", "0.6"],) * 2

    assert _prune(tmp_path, root, check=True) == (0, 1)  # reports the removal, removes nothing
    assert _left(root) == all_six

    rc, changed = _prune(tmp_path, root)
    assert rc == 0 and changed == 1
    # 0.6 is current, 0.1 previous (oldest, still kept: rollback needs it), 0.5 and 0.4 the newest others
    assert _left(root) == (["0.1", "0.4", "0.5", "0.6"],) * 2
    assert (root / "current").resolve() == root / "releases" / "0.6"

    assert _prune(tmp_path, root) == (0, 0)  # idempotent
    assert _prune(tmp_path, root, keep=0) == (0, 1)
    assert _left(root) == (["0.1", "0.6"],) * 2  # the links' targets are never removed
