"""Copy the pure remediation rules into the collection's plugin_utils, so the collection stands alone.

The `halswarm.ops.remediation_plan` filter runs on the Ansible controller; under AWX / Automation
Platform that controller has the collection but not the hal-o-swarm package. The rules keep one
source of truth, ``halswarm/core/remediation/{catalog,planners}.py`` (stdlib only, fixture-tested);
this script writes their copies with the one import rewritten, and
tests/unit/remediation/test_vendored_plugin_utils.py fails when a copy is stale.

    python scripts/vendor_collection.py          # rewrite the copies
    python scripts/vendor_collection.py --check  # exit 1 when a copy differs
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_UTILS = ROOT / "collections" / "ansible_collections" / "halswarm" / "ops" / "plugins" / "plugin_utils"
SOURCES = {  # package module -> vendored file name
    "catalog": "remediation_catalog.py",
    "planners": "remediation_planners.py",
}
IMPORT_FROM = "from halswarm.core.remediation.catalog import"
IMPORT_TO = "from ansible_collections.halswarm.ops.plugins.plugin_utils.remediation_catalog import"


def header(module: str) -> str:
    return (
        "# Copyright: HAL-O-SWARM contributors\n"
        "# MIT License (see LICENSE in the collection)\n"
        f"# GENERATED from halswarm/core/remediation/{module}.py by scripts/vendor_collection.py: edit the\n"
        "# source in the hal-o-swarm package and re-run the script, never this copy.\n"
    )


def render(module: str) -> str:
    """The vendored text of one package module."""
    text = (ROOT / "halswarm" / "core" / "remediation" / f"{module}.py").read_text()
    return header(module) + text.replace(IMPORT_FROM, IMPORT_TO)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    PLUGIN_UTILS.mkdir(parents=True, exist_ok=True)
    for module, name in SOURCES.items():
        target = PLUGIN_UTILS / name
        want = render(module)
        if target.is_file() and target.read_text() == want:
            continue
        stale.append(target)
        if not check:
            target.write_text(want)
    if check and stale:
        print("stale vendored copies (run scripts/vendor_collection.py): " + ", ".join(map(str, stale)),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
