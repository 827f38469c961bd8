"""The env checks (pure): ``Requirements`` + ``Facts`` in, ``Item`` list out. One function per category."""

from __future__ import annotations

from collections.abc import Callable

from halswarm.agent.env.facts import Facts
from halswarm.agent.env.model import FAIL, MANUAL, PASS, RISKY, SAFE, WARN, Item
from halswarm.agent.env.versions import BadConstraint, parse_version, satisfies
from halswarm.core.manifest.requirements import Requirements
from halswarm.core.manifest.templates import AGENT_MD, sha256_text
from halswarm.core.manifest_rules import (
    env_var_refusal,
    git_config_refusal,
    remote_name_refusal,
    remote_url_refusal,
)

REFUSED = "refused"
NOT_PROBED = "not probed"


def check_versions(req: Requirements, facts: Facts) -> list[Item]:
    items = []
    for r in [*req.runtime, *req.tools]:
        probe = facts.probes.get(f"{r.category}:{r.name}")
        expected = r.constraint or "installed"
        if probe is not None and probe.skipped:
            items.append(Item(r.category, r.name, expected, NOT_PROBED, WARN, RISKY, detail=probe.skipped))
            continue
        if probe is None or not probe.found:
            error = probe.error if probe is not None else None
            actual = error if error and error.startswith("not found") else (
                f"not found ({error})" if error else "not found")
            items.append(Item(r.category, r.name, expected, actual, FAIL, RISKY))
            continue
        if not r.constraint:
            items.append(Item(r.category, r.name, expected, probe.version or probe.output or "installed", PASS))
            continue
        v = parse_version(probe.version or "")
        if v is None:
            items.append(Item(r.category, r.name, expected, probe.output or "unknown version", FAIL, RISKY,
                              detail=probe.error or "could not read a version from the output"))
            continue
        try:
            ok = satisfies(v, r.constraint)
        except BadConstraint as exc:
            items.append(Item(r.category, r.name, expected, probe.version or "", FAIL, MANUAL, detail=str(exc)))
            continue
        items.append(Item(r.category, r.name, expected, probe.version or "", PASS if ok else FAIL,
                          None if ok else RISKY, drift=not ok))
    return items


def check_env_vars(req: Requirements, facts: Facts) -> list[Item]:
    items = []
    for ev in req.env_vars:
        present = facts.env_present.get(ev.name, False)
        actual = "set" if present else "not set"
        why = env_var_refusal(ev.name) if ev.mode == "value" else None
        if why:
            items.append(Item("env_vars", ev.name, "set (manifest value)", REFUSED, FAIL, MANUAL, detail=why))
        elif ev.mode == "value":
            matches = facts.env_matches.get(ev.name, False)
            if matches:
                items.append(Item("env_vars", ev.name, "set (manifest value)", "set", PASS))
            else:
                items.append(Item("env_vars", ev.name, "set (manifest value)", "set, different value" if present
                                  else actual, FAIL, SAFE, drift=present))
        elif present:
            items.append(Item("env_vars", ev.name, ev.mode, actual, PASS))
        else:
            items.append(Item("env_vars", ev.name, ev.mode, actual, FAIL if ev.mode == "required" else WARN, MANUAL))
    return items


def check_agent_md(req: Requirements, facts: Facts) -> list[Item]:
    if not req.agent_md:
        return []
    items = []
    if req.template_missing:
        items.append(Item("agent_config", "template", req.template_missing, "not in the manifest's templates", WARN,
                          MANUAL, detail="the default AGENT.md template is used"))
    want = sha256_text(req.agent_md_text)
    if AGENT_MD in facts.refused:
        items.append(Item("agent_config", AGENT_MD, f"sha256:{want}", REFUSED, FAIL, MANUAL,
                          detail=facts.refused[AGENT_MD]))
        return items
    f = facts.files.get(AGENT_MD)
    if f is None or not f.exists:
        items.append(Item("agent_config", AGENT_MD, f"sha256:{want}", "missing", FAIL, SAFE))
    elif not f.is_file:
        items.append(Item("agent_config", AGENT_MD, f"sha256:{want}", "not a regular file", FAIL, MANUAL))
    elif f.sha256 == want:
        items.append(Item("agent_config", AGENT_MD, f"sha256:{want}", f"sha256:{f.sha256}", PASS))
    else:
        items.append(Item("agent_config", AGENT_MD, f"sha256:{want}", f"sha256:{f.sha256}", WARN, MANUAL,
                          detail="differs from the rendered template (local edit?); sync with force to replace",
                          drift=True))
    return items


def check_context(req: Requirements, facts: Facts) -> list[Item]:
    items = []
    for d in req.context_dirs:
        f = facts.files.get(d)
        if d in facts.refused:
            items.append(Item("context", d, "directory", REFUSED, FAIL, MANUAL, detail=facts.refused[d]))
        elif f is not None and f.is_dir:
            items.append(Item("context", d, "directory", "exists", PASS))
        else:
            actual = "not a directory" if f is not None and f.exists else "missing"
            items.append(Item("context", d, "directory", actual, FAIL, SAFE if actual == "missing" else MANUAL))
    for p in req.context_files:
        f = facts.files.get(p)
        if p in facts.refused:
            items.append(Item("context", p, "file", REFUSED, FAIL, MANUAL, detail=facts.refused[p]))
        elif f is not None and f.is_file:
            items.append(Item("context", p, "file", "exists", PASS))
        else:
            actual = "not a file" if f is not None and f.exists else "missing"
            items.append(Item("context", p, "file", actual, FAIL, SAFE if actual == "missing" else MANUAL))
    return items


def check_docs(req: Requirements, facts: Facts) -> list[Item]:
    items = []
    for level, docs in (("required", req.docs_required), ("recommended", req.docs_recommended)):
        for p in docs:
            f = facts.files.get(p)
            if p in facts.refused:
                items.append(Item("docs", p, level, REFUSED, FAIL, MANUAL, detail=facts.refused[p]))
            elif f is not None and f.exists:
                items.append(Item("docs", p, level, "exists", PASS))
            elif level == "required":
                items.append(Item("docs", p, level, "missing", FAIL, SAFE))
            else:
                items.append(Item("docs", p, level, "missing", WARN, MANUAL))
    return items


def _same_remote(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        u = u.strip().rstrip("/")
        return u[:-4] if u.endswith(".git") else u

    return norm(a) == norm(b)


def check_git(req: Requirements, facts: Facts) -> list[Item]:
    g, gf = req.git, facts.git
    if g is None:
        return []
    if gf is None or not gf.is_repo:
        reason = gf.error if gf is not None and gf.error else "not a git repository"
        return [Item("git", "repository", "git work tree", reason, FAIL, MANUAL,
                     detail=f"run `git init` or clone the project into {facts.directory}")]
    items = []
    if g.remote:
        url = gf.remotes.get(g.remote_name)
        why = remote_name_refusal(g.remote_name) or remote_url_refusal(g.remote)
        if why:
            items.append(Item("git", f"remote.{g.remote_name}", g.remote, REFUSED, FAIL, MANUAL, detail=why))
        elif url is None:
            items.append(Item("git", f"remote.{g.remote_name}", g.remote, "missing", FAIL, SAFE))
        elif _same_remote(url, g.remote):
            items.append(Item("git", f"remote.{g.remote_name}", g.remote, url, PASS))
        else:
            items.append(Item("git", f"remote.{g.remote_name}", g.remote, url, FAIL, MANUAL, drift=True,
                              detail="remote URL differs; provision with force to set it"))
    if g.branch:
        branch = gf.branch or "(detached HEAD)"
        ok = gf.branch == g.branch
        items.append(Item("git", "branch", g.branch, branch, PASS if ok else FAIL, None if ok else MANUAL,
                          drift=not ok))
    for hook in g.hooks:  # hooks are code: installed (or made executable) only after approval
        f = gf.hooks.get(hook)
        if gf.hooks_refused:
            items.append(Item("git", f"hooks/{hook}", "executable hook", REFUSED, FAIL, MANUAL,
                              detail=gf.hooks_refused))
        elif f is None or not f.exists:
            items.append(Item("git", f"hooks/{hook}", "executable hook", "missing", FAIL, RISKY))
        elif not f.is_file:
            items.append(Item("git", f"hooks/{hook}", "executable hook", "not a regular file", FAIL, MANUAL))
        elif not f.executable:
            items.append(Item("git", f"hooks/{hook}", "executable hook", "not executable", FAIL, RISKY))
        else:
            items.append(Item("git", f"hooks/{hook}", "executable hook", "executable", PASS))
    for key, want in g.config:
        have = gf.config.get(key)
        name = f"config.{key}"
        why = git_config_refusal(key, want)
        if why:
            items.append(Item("git", name, want, REFUSED, FAIL, MANUAL, detail=why))
        elif want in ("required", "optional"):
            if have:
                items.append(Item("git", name, f"set ({want})", have, PASS))
            else:
                items.append(Item("git", name, f"set ({want})", "not set", FAIL if want == "required" else WARN,
                                  MANUAL))
        elif have is None:
            items.append(Item("git", name, want, "not set", FAIL, SAFE))
        elif have == want:
            items.append(Item("git", name, want, have, PASS))
        else:
            items.append(Item("git", name, want, have, FAIL, MANUAL, drift=True,
                              detail="set to another value; provision with force to change it"))
    return items


def check_native_libs(req: Requirements, facts: Facts) -> list[Item]:
    return [Item("native_libs", lib.name, "installed", "installed" if facts.libs.get(lib.name) else "not found",
                 PASS if facts.libs.get(lib.name) else FAIL, None if facts.libs.get(lib.name) else RISKY)
            for lib in req.native_libs]


def check_android(req: Requirements, facts: Facts) -> list[Item]:
    if req.android is None:
        return []
    if facts.android_root is None:
        return [Item("android_sdk", "sdk_root", "ANDROID_HOME or ANDROID_SDK_ROOT", "not set", FAIL, RISKY)]
    return [Item("android_sdk", part, "installed", "installed" if ok else "missing", PASS if ok else FAIL,
                 None if ok else RISKY) for part, ok in sorted(facts.android_present.items())]


def check_disk(req: Requirements, facts: Facts) -> list[Item]:
    if req.disk is None:
        return []
    free = facts.disk_free_gb
    expected = f">= {req.disk.min_free_gb:g} GB free"
    if free is None:
        return [Item("disk", "free_space", expected, "unknown", WARN, MANUAL)]
    ok = free >= req.disk.min_free_gb
    return [Item("disk", "free_space", expected, f"{free:g} GB free", PASS if ok else FAIL, None if ok else RISKY)]


CHECKS: tuple[Callable[[Requirements, Facts], list[Item]], ...] = (
    check_versions, check_env_vars, check_agent_md, check_context, check_git, check_docs, check_native_libs,
    check_android, check_disk,
)


def check_all(req: Requirements, facts: Facts) -> list[Item]:
    items: list[Item] = []
    for check in CHECKS:
        items += check(req, facts)
    return items
