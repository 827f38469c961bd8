"""Build hook: ship the `halswarm.ops` collection and the example inventory inside the wheel.

The repository keeps them where Ansible and operators expect them in a checkout
(``collections/ansible_collections/halswarm/ops``, ``inventory.example``); ``build_py`` copies
them into ``halswarm/_data/`` of the build, so a wheel install (pip, pipx) carries the whole
toolkit without a second tree in git. ``halswarm.ops.install`` finds either layout.
Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
COLLECTION = Path("collections", "ansible_collections", "halswarm", "ops")
# Same exclusions as the collection's galaxy.yml build_ignore (test output, caches, built tarballs).
IGNORE = shutil.ignore_patterns(".ansible", "output", "__pycache__", "*.pyc", "*.tar.gz", ".pytest_cache")


class BuildWithToolkit(build_py):
    """build_py plus the collection and the example inventory under halswarm/_data/."""

    def run(self) -> None:
        super().run()
        data = Path(self.build_lib, "halswarm", "_data")
        for rel, dest in ((COLLECTION, data / COLLECTION), (Path("inventory.example"), data / "inventory.example")):
            src = ROOT / rel
            if not src.is_dir():  # an sdist without them would build a wheel that cannot deploy
                raise SystemExit(f"setup.py: {src} is missing; build from the repository or its sdist")
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(src, dest, ignore=IGNORE, symlinks=False)


setup(cmdclass={"build_py": BuildWithToolkit})
