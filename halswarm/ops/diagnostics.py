"""The escalation bundle from halctl's side: where it goes, what is in it, and redaction (SPEC 8/10).

One implementation: the collection's ``plugins/module_utils/hal_diagnostics.py`` collects on the hosts
(module ``hal_diagnostics``), writes the tarball (module ``hal_diagnostics_bundle``) and holds the
redaction rules (by key and by known secret value). It is standard-library only; ``core()`` loads that
same file here, so halctl, the modules and the tests share the rules. This module adds the bundle's
layout as halctl reads it back and the ``escalation`` block of a report.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

_CORE_NAME = "halswarm.ops._hal_diagnostics"
_CORE_REL = Path("plugins", "module_utils", "hal_diagnostics.py")
SECTIONS = ("journal", "system", "config", "db")


class DiagnosticsError(RuntimeError):
    """The bundle cannot be written or read; the message is one line for the operator."""


def core_path() -> Path:
    from halswarm.ops.datasafety import collection_candidates

    for candidate in collection_candidates():
        if (candidate / _CORE_REL).is_file():
            return candidate / _CORE_REL
    raise DiagnosticsError(f"cannot find the halswarm.ops collection (looked for {_CORE_REL}); "
                           "set HALCTL_COLLECTIONS_PATH")


def core() -> ModuleType:
    """The collection's hal_diagnostics module_utils file, loaded once from its path."""
    from halswarm.ops.datasafety import load_file_module

    loaded = sys.modules.get(_CORE_NAME)
    return loaded if loaded is not None else load_file_module(_CORE_NAME, core_path())


# ----- redaction (the core's rules) -----

def mask() -> str:
    return str(core().MASK)


def is_secret_key(key: str) -> bool:
    return bool(core().is_secret_key(key))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    return str(core().redact_text(text, list(secrets)))


def redact_obj(value: Any, secrets: Iterable[str] = ()) -> Any:
    return core().redact_obj(value, list(secrets))


def secret_values_in(doc: Any) -> set[str]:
    return set(core().secret_values_in(doc))


def find_secrets(text: str, secrets: Iterable[str]) -> int:
    return int(core().find_secrets(text, list(secrets)))


def redact_values(value: Any, secrets: Iterable[str]) -> Any:
    """Only the by-value layer: every known secret value masked in every string of a JSON-like document
    (keys untouched), for reports whose facts quote what a daemon printed."""
    known = list(core()._usable(list(secrets)))
    if not known:
        return value
    if isinstance(value, Mapping):
        return {k: redact_values(v, known) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v, known) for v in value]
    if isinstance(value, str):
        for secret in known:
            value = value.replace(secret, mask())
        return value
    return value


def write_bundle(dest: Path, hosts: Mapping[str, Mapping[str, Any]], *, include: Iterable[Path] = (),
                 secrets: Iterable[str] = (), metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return dict(core().write_bundle(str(dest), dict(hosts), include=[str(p) for p in include],
                                    secrets=list(secrets), metadata=dict(metadata or {})))


def scan_tarball(path: Path, secrets: Iterable[str]) -> dict[str, Any]:
    return dict(core().scan_tarball(str(path), list(secrets)))


# ----- layout -----

def default_output(state_dir: Path, incident: str | None = None) -> Path:
    """``<state dir>/diagnostics/hal-diagnostics[-<incident>]-<UTC time>.tar.gz``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = "hal-diagnostics" + (f"-{incident}" if incident else "") + f"-{stamp}.tar.gz"
    return state_dir.expanduser() / "diagnostics" / name


def layout(path: Path) -> dict[str, Any]:
    """What a bundle holds: {top, manifest, hosts: {host: {section: [files]}}, report: [files]}."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
            top = names[0].split("/", 1)[0] if names else ""
            f = tar.extractfile(f"{top}/MANIFEST.json") if f"{top}/MANIFEST.json" in names else None
            manifest = json.loads(f.read()) if f is not None else None
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise DiagnosticsError(f"cannot read the bundle {path}: {exc}") from None
    hosts: dict[str, dict[str, list[str]]] = {}
    report: list[str] = []
    for name in names:
        parts = name.split("/")
        if len(parts) >= 4 and parts[1] == "hosts":
            hosts.setdefault(parts[2], {}).setdefault(parts[3], []).append(
                "/".join(parts[3:]))
        elif len(parts) == 3 and parts[1] == "report":
            report.append(parts[2])
    return {"top": top, "manifest": manifest, "hosts": hosts, "report": report, "members": names}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def escalation_block(path: Path, *, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The report's ``escalation`` field for a written bundle: path, sha256, size, collected_at, scan."""
    st = path.stat()
    scan = scan_tarball(path, secrets)
    return {"bundle": str(path), "sha256": sha256(path), "size": st.st_size,
            "collected_at": datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace("+00:00", "Z"),
            "secret_scan": {"passed": scan["passed"], "findings": scan["findings"]}}
