"""Where this installation keeps the `halswarm.ops` collection and the example inventory.

Two layouts exist:

- a checkout (editable install): ``<repo>/collections/ansible_collections/halswarm/ops`` and
  ``<repo>/inventory.example``;
- a wheel (``pip``/``pipx install 'hal-o-swarm[ops]'``): the build copies both into the package as
  ``halswarm/_data/collections/...`` and ``halswarm/_data/inventory.example`` (see ``setup.py``).

Nothing here imports Ansible; ``versions()`` asks the installed distributions' metadata only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

COLLECTION_PARTS = ("ansible_collections", "halswarm", "ops")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../halswarm
DATA_DIR = PACKAGE_DIR / "_data"


def repo_root() -> Path | None:
    """The checkout this package runs from (editable installs), if it holds the collection."""
    root = PACKAGE_DIR.parent
    if (root.joinpath("collections", *COLLECTION_PARTS) / "galaxy.yml").is_file():
        return root
    return None


def bundled_collections_dir() -> Path | None:
    """The collections path shipped inside the installed package (wheel installs), if present."""
    base = DATA_DIR / "collections"
    return base if (base.joinpath(*COLLECTION_PARTS) / "galaxy.yml").is_file() else None


def own_collections_dir() -> Path | None:
    """The collections path of this installation: the checkout's, else the wheel's copy."""
    root = repo_root()
    if root is not None:
        return root / "collections"
    return bundled_collections_dir()


def example_inventory() -> Path | None:
    """The example inventory directory (checkout or wheel), if present."""
    root = repo_root()
    for candidate in ([root / "inventory.example"] if root else []) + [DATA_DIR / "inventory.example"]:
        if (candidate / "hosts.yml").is_file():
            return candidate
    return None


def find_collection(paths: list[str]) -> Path | None:
    """The first ``halswarm/ops`` collection directory on a list of collections paths."""
    for base in paths:
        candidate = Path(base).expanduser().joinpath(*COLLECTION_PARTS)
        if (candidate / "galaxy.yml").is_file() or (candidate / "MANIFEST.json").is_file():
            return candidate
    return None


def collection_version(collection_dir: Path) -> str | None:
    """``version`` of a collection directory: ``MANIFEST.json`` (installed by ansible-galaxy) or
    ``galaxy.yml`` (source tree). A plain line scan: no YAML parser needed for one scalar."""
    manifest = collection_dir / "MANIFEST.json"
    if manifest.is_file():
        import json

        try:
            return str(json.loads(manifest.read_text())["collection_info"]["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    try:
        for line in (collection_dir / "galaxy.yml").read_text().splitlines():
            if line.startswith("version:"):
                return line.split(":", 1)[1].strip().strip("'\"") or None
    except OSError:
        return None
    return None


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Versions:
    package: str
    ansible_core: str | None
    ansible: str | None  # the community package (brings community.general)
    collection: str | None
    collection_path: Path | None
    example_inventory: Path | None

    def lines(self) -> list[str]:
        missing = "not installed (pip install 'hal-o-swarm[ops]')"
        return [
            f"halctl {self.package}",
            f"ansible-core {self.ansible_core or missing}",
            f"ansible {self.ansible or missing}",
            f"halswarm.ops {self.collection or 'not found'}"
            + (f" ({self.collection_path})" if self.collection_path else ""),
            f"example inventory {self.example_inventory or 'not found'}",
        ]

    def to_dict(self) -> dict[str, str | None]:
        return {
            "package": self.package,
            "ansible_core": self.ansible_core,
            "ansible": self.ansible,
            "collection": self.collection,
            "collection_path": str(self.collection_path) if self.collection_path else None,
            "example_inventory": str(self.example_inventory) if self.example_inventory else None,
        }


def versions(collections_paths: list[str]) -> Versions:
    """Package, Ansible and collection versions, and where the collection halctl uses was found."""
    from halswarm import __version__

    found = find_collection(collections_paths)
    return Versions(
        package=__version__,
        ansible_core=_dist_version("ansible-core"),
        ansible=_dist_version("ansible"),
        collection=collection_version(found) if found else None,
        collection_path=found,
        example_inventory=example_inventory(),
    )


def env_paths(var: str) -> list[str]:
    """A ``os.pathsep``-separated environment variable as a list (empty entries dropped)."""
    return [p for p in os.environ.get(var, "").split(os.pathsep) if p]
