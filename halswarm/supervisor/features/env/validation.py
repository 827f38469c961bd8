"""Is a manifest acceptable: schema, semantic and safety problems as ``PATH: message``, and the AGENT.md
templates it names by file, read from the supervisor's template directory only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from halswarm.config import validate_data
from halswarm.core.manifest.requirements import safety_problems, template_ref_refusal, template_refs

MAX_TEMPLATE_BYTES = 256 * 1024


def read_template(ref: str, root: Path) -> str:
    """The text of template ``ref`` from the template directory ``root`` only (a name or a path of names,
    resolved and confined there); ValueError with the one-line reason otherwise."""
    why = template_ref_refusal(ref)
    if why:
        raise ValueError(why)
    root = root.resolve()
    path = (root / ref.removeprefix("templates/")).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"template {ref!r} resolves outside the supervisor's template directory")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_TEMPLATE_BYTES + 1)
    except OSError:
        raise ValueError(f"template {ref!r} not found (not in templates, no such file on the supervisor)") from None
    if len(raw) > MAX_TEMPLATE_BYTES:
        raise ValueError(f"template {ref!r} is larger than {MAX_TEMPLATE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"template {ref!r} is not UTF-8 text") from None


def manifest_problems(doc: Any, template_dir: Path) -> tuple[list[str], list[str], dict[str, str]]:
    """(errors, warnings, templates read from files): schema, semantic and safety problems as
    ``PATH: message`` (``safety_problems``: git config allowlist, hook names, paths confined to the
    project), plus every AGENT.md template a project names that is neither in ``templates`` nor a file
    of ``template_dir`` (read by name only)."""
    if not isinstance(doc, Mapping):
        return ["(root): manifest must be a JSON object"], [], {}
    problems = validate_data("manifest", doc)
    errors = [str(p) for p in problems if p.is_error]
    warnings = [str(p) for p in problems if not p.is_error]
    unsafe, notes = safety_problems(doc)
    errors += unsafe
    warnings += notes
    inlined: dict[str, str] = {}
    templates = found if isinstance(found := doc.get("templates"), Mapping) else {}
    for where, name in sorted(template_refs(doc).items()):
        if name in templates or name in inlined:
            continue
        try:
            inlined[name] = read_template(name, template_dir)
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
    return errors, warnings, inlined
