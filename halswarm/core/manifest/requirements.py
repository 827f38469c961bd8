"""The environment manifest, normalised (pure): both accepted formats become per-project ``Requirements``.

Formats (``halswarm/schemas/manifest.schema.json``):

- Go (go-original 5.3): ``{version: "X.Y", requirements: {...}, projects: {name: {requirements}}}``.
  The top-level requirements apply to every project; a project's own ``requirements`` override them
  category by category (maps merge key by key, the project winning; lists are replaced).
- Spec 8.1: ``{version, defaults?, projects: {name: {runtime, tools, env_vars, native_libs,
  agent_config: {AGENT.md, context_dir, required_docs}, git: {remote, branch, hooks, config},
  context, docs, disk, variables}}}``; ``defaults`` (same shape) applies to every project and the
  project's section overrides it the same way.

Both may carry ``templates`` (name -> text: the supervisor's templates, e.g. ``AGENT.md``) and
``variables`` (template variables). A project the manifest does not name gets the Go top-level
requirements, or the spec ``defaults``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from halswarm.core.capabilities import version_probes
from halswarm.core.manifest.templates import AGENT_MD, DEFAULT_AGENT_MD, project_variables, render
from halswarm.core.manifest_rules import (
    env_var_refusal,
    git_config_refusal,
    relative_path_refusal,
    remote_name_refusal,
    remote_url_refusal,
    template_name_refusal,
)
from halswarm.core.probe_rules import RUNTIME_PROBES, probe_argv, probe_table, unprobed_reason

GO, SPEC = "go", "spec"
DEFAULT_CONTEXT_DIR = ".context/"
_NAME_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9_.+\-/]+?)\s*((?:>=|<=|>|<|\^|~|=|@).*)?$")
# Suggested install commands for the usual runtimes (Debian/Ubuntu names, like the Go provisioner).
APT_NAMES = {"node": "nodejs", "nodejs": "nodejs", "python": "python3", "python3": "python3",
             "java": "openjdk-17-jdk", "go": "golang", "rust": "rustc", "ruby": "ruby"}
# How a known runtime reports its version (the agent's own table; see ``halswarm.core.probe_rules``).
PROBES = RUNTIME_PROBES
# What every node probes without its own ``env.probe_tools``: the runtimes and the coding-agent CLIs.
DEFAULT_PROBES = probe_table(version_probes(), {})


@dataclass(frozen=True)
class VersionReq:
    category: str  # runtime | tools
    name: str
    constraint: str = ""
    command: tuple[str, ...] = ()
    install: str = ""
    become: bool = False

    def probe_in(self, table: Mapping[str, tuple[str, ...]]) -> tuple[str, ...] | None:
        """The fixed argv a check may run: the node's table entry for this name (never the manifest's
        ``command``). None: the item is never run by a check, only through an approved pending item."""
        return probe_argv(table, self.name, self.command)

    @property
    def unprobed_reason(self) -> str:
        return unprobed_reason(self.command)

    @property
    def approval_check(self) -> tuple[str, ...]:
        """What an approved item runs first to see whether it is already satisfied (shown before approval)."""
        return self.command or PROBES.get(self.name, (self.name, "--version"))


@dataclass(frozen=True)
class EnvVarReq:
    name: str
    mode: str  # required | optional | value
    value: str | None = None


@dataclass(frozen=True)
class LibReq:
    name: str
    install: str = ""
    become: bool = False


@dataclass(frozen=True)
class AndroidReq:
    platforms: tuple[str, ...] = ()
    build_tools: tuple[str, ...] = ()
    install: str = ""


@dataclass(frozen=True)
class GitReq:
    remote: str | None = None
    remote_name: str = "origin"
    branch: str | None = None
    hooks: tuple[str, ...] = ()
    config: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DiskReq:
    min_free_gb: float
    cleanup: str = ""


@dataclass
class Requirements:
    project: str
    managed: bool = False  # the manifest has something for this project
    runtime: list[VersionReq] = field(default_factory=list)
    tools: list[VersionReq] = field(default_factory=list)
    env_vars: list[EnvVarReq] = field(default_factory=list)
    agent_md: bool = False
    agent_md_template: str = AGENT_MD
    agent_md_text: str = ""  # rendered
    template_missing: str | None = None
    context_files: list[str] = field(default_factory=list)
    context_dirs: list[str] = field(default_factory=list)
    git: GitReq | None = None
    docs_required: list[str] = field(default_factory=list)
    docs_recommended: list[str] = field(default_factory=list)
    native_libs: list[LibReq] = field(default_factory=list)
    android: AndroidReq | None = None
    disk: DiskReq | None = None
    model: str | None = None
    hook_templates: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)


class ManifestError(ValueError):
    """The document cannot be used as a manifest (not an object, no projects or requirements)."""


def detect_format(doc: Mapping[str, Any]) -> str:
    projects = doc.get("projects")
    if "requirements" in doc:
        return GO
    if isinstance(projects, Mapping) and any(isinstance(p, Mapping) and "requirements" in p
                                             for p in projects.values()):
        return GO
    return SPEC


def digest(doc: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a manifest (what 'the same manifest' means)."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def project_names(doc: Mapping[str, Any]) -> list[str]:
    projects = doc.get("projects")
    return sorted(projects) if isinstance(projects, Mapping) else []


def template_refs(doc: Mapping[str, Any]) -> dict[str, str]:
    """JSON path -> template name for every AGENT.md template a spec project refers to."""
    out: dict[str, str] = {}
    for where, section in _spec_sections(doc):
        ac = section.get("agent_config")
        if isinstance(ac, Mapping) and isinstance(ac.get(AGENT_MD), str):
            out[f"{where}.agent_config[\"{AGENT_MD}\"]"] = ac[AGENT_MD]
    return out


def _spec_sections(doc: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    out: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(doc.get("defaults"), Mapping):
        out.append(("defaults", doc["defaults"]))
    projects = doc.get("projects")
    if isinstance(projects, Mapping):
        out += [(f"projects.{k}", v) for k, v in projects.items() if isinstance(v, Mapping)]
    return out


# --------------------------------------------------------------------------- merging

def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Category-wise override: nested maps merge key by key (``over`` wins), everything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, str | int | float) and str(v)]
    return []


def section_for(doc: Mapping[str, Any], project: str) -> tuple[dict[str, Any], bool]:
    """The merged requirement section of ``project`` and whether the manifest covers it at all."""
    fmt = detect_format(doc)
    projects = _obj(doc.get("projects"))
    if fmt == GO:
        base = _obj(doc.get("requirements"))
        own = _obj(_obj(projects.get(project)).get("requirements"))
        return _merge(base, own), bool(base) or project in projects
    base = _obj(doc.get("defaults"))
    own = _obj(projects.get(project))
    return _merge(base, own), bool(base) or project in projects


# --------------------------------------------------------------------------- normalising

def split_name(spec: str) -> tuple[str, str]:
    """``"cmake>=3.20"`` -> ("cmake", ">=3.20"); ``"protoc"`` -> ("protoc", "")."""
    m = _NAME_CONSTRAINT.match(spec)
    if not m:
        return spec.strip(), ""
    return m.group(1), (m.group(2) or "").lstrip("@").strip()


def _version_reqs(category: str, raw: Any) -> list[VersionReq]:
    out: list[VersionReq] = []
    items: list[tuple[str, Any]]
    if isinstance(raw, Mapping):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = [split_name(str(s)) for s in raw if isinstance(s, str) and s.strip()]
    else:
        items = []
    for name, value in items:
        if name == "android_sdk":
            continue
        if isinstance(value, Mapping):
            cmd = value.get("command")
            command = tuple(shlex.split(cmd)) if isinstance(cmd, str) else tuple(_strs(cmd))
            out.append(VersionReq(category, name, str(value.get("version") or ""), command,
                                  str(value.get("install") or ""), bool(value.get("become", False))))
        else:
            out.append(VersionReq(category, name, "" if value is None else str(value)))
    return sorted(out, key=lambda r: r.name)


def _env_reqs(raw: Any) -> list[EnvVarReq]:
    out = []
    for name, value in _obj(raw).items():
        if isinstance(value, Mapping):
            if value.get("value") is not None:
                out.append(EnvVarReq(name, "value", str(value["value"])))
            else:
                out.append(EnvVarReq(name, "required" if value.get("required", True) else "optional"))
        elif value in ("required", "optional"):
            out.append(EnvVarReq(name, str(value)))
        elif value is not None:
            out.append(EnvVarReq(name, "value", str(value)))
    return sorted(out, key=lambda r: r.name)


def _android(raw: Any) -> AndroidReq | None:
    if not isinstance(raw, Mapping):
        return None
    platforms = _strs(raw.get("platforms"))
    for key in ("compile_sdk", "target_sdk", "platform"):
        v = raw.get(key)
        if isinstance(v, int | str) and str(v):
            platforms.append(str(v) if str(v).startswith("android-") else f"android-{v}")
    return AndroidReq(tuple(sorted(set(platforms))), tuple(sorted(set(_strs(raw.get("build_tools"))))),
                      str(raw.get("install") or ""))


def _libs(raw: Any) -> list[LibReq]:
    out = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, str) and item:
            out.append(LibReq(item))
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            out.append(LibReq(item["name"], str(item.get("install") or ""), bool(item.get("become", False))))
    return out


def _git(raw: Any) -> GitReq | None:
    if not isinstance(raw, Mapping):
        return None
    remote, remote_name = raw.get("remote"), "origin"
    if isinstance(remote, Mapping):
        remote_name = str(remote.get("name") or "origin")
        remote = remote.get("url")
    config = tuple(sorted((str(k), str(v)) for k, v in _obj(raw.get("config")).items()))
    return GitReq(remote=str(remote) if remote else None, remote_name=remote_name,
                  branch=str(raw["branch"]) if raw.get("branch") else None,
                  hooks=tuple(dict.fromkeys(_strs(raw.get("hooks")))), config=config)


def _context_entries(raw: Any) -> tuple[list[str], list[str]]:
    ctx = _obj(raw)
    files: list[str] = []
    dirs: list[str] = []
    for entry in _strs(ctx.get("files")):
        (dirs if entry.endswith("/") else files).append(entry)
    dirs += _strs(ctx.get("directories"))
    return files, dirs


def requirements_for(doc: Mapping[str, Any], project: str) -> Requirements:
    """Everything ``project`` must have, with the AGENT.md template rendered for it."""
    if not isinstance(doc, Mapping):
        raise ManifestError("manifest must be an object")
    sec, managed = section_for(doc, project)
    templates = {str(k): v for k, v in _obj(doc.get("templates")).items() if isinstance(v, str)}
    variables = {**{str(k): str(v) for k, v in _obj(doc.get("variables")).items()},
                 **{str(k): str(v) for k, v in _obj(sec.get("variables")).items()}}
    req = Requirements(project=project, managed=managed)
    req.runtime = _version_reqs("runtime", sec.get("runtime"))
    req.tools = _version_reqs("tools", sec.get("tools"))
    req.env_vars = _env_reqs(sec.get("env_vars"))
    runtime = _obj(sec.get("runtime"))
    req.android = _android(runtime.get("android_sdk") or sec.get("android_sdk"))
    req.native_libs = _libs(sec.get("native_libs"))
    req.git = _git(sec.get("git"))
    files, dirs = _context_entries(sec.get("context"))
    docs = _obj(sec.get("docs"))
    req.docs_required = _strs(docs.get("required"))
    req.docs_recommended = _strs(docs.get("recommended"))
    ac = sec.get("agent_config")
    if isinstance(ac, Mapping):
        req.agent_md = True
        req.model = str(ac["model"]) if ac.get("model") else None
        if isinstance(ac.get(AGENT_MD), str):
            req.agent_md_template = ac[AGENT_MD]
        context_dir = ac.get("context_dir")
        if isinstance(context_dir, str) and context_dir:
            base = context_dir.rstrip("/") + "/"
            dirs.append(base)
            files += [base + name for name in ("CURRENT_TASK.md", "PROGRESS.md")]
        req.docs_required += [d for d in _strs(ac.get("required_docs")) if d not in req.docs_required]
    disk = _obj(sec.get("disk"))
    if isinstance(disk.get("min_free_gb"), int | float):
        req.disk = DiskReq(float(disk["min_free_gb"]), str(disk.get("cleanup") or ""))
    req.context_files = list(dict.fromkeys(files))
    req.context_dirs = list(dict.fromkeys(d.rstrip("/") + "/" for d in dirs))
    variables.setdefault("model", req.model or "")
    if req.git is not None:
        variables.setdefault("git_remote", req.git.remote or "")
        variables.setdefault("git_branch", req.git.branch or "")
    req.variables = project_variables(project, variables)
    template = templates.get(req.agent_md_template)
    if template is None and req.agent_md_template != AGENT_MD:
        req.template_missing = req.agent_md_template
    if template is None:
        template = templates.get(AGENT_MD, DEFAULT_AGENT_MD)
    req.agent_md_text = render(template, req.variables)
    req.hook_templates = {k.split("/", 1)[1]: v for k, v in templates.items() if k.startswith("hooks/")}
    return req


# --------------------------------------------------------------------------- safety (pure)

def _requirement_sections(doc: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(JSON path, section) of every requirement section, in both formats."""
    if detect_format(doc) == SPEC:
        return _spec_sections(doc)
    out: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(doc.get("requirements"), Mapping):
        out.append(("requirements", doc["requirements"]))
    for name, project in _obj(doc.get("projects")).items():
        if isinstance(project, Mapping) and isinstance(project.get("requirements"), Mapping):
            out.append((f"projects.{name}.requirements", project["requirements"]))
    return out


def _path_lists(sec: Mapping[str, Any], where: str) -> list[tuple[str, Any]]:
    ctx, docs, ac = _obj(sec.get("context")), _obj(sec.get("docs")), _obj(sec.get("agent_config"))
    out = [(f"{where}.context.files", ctx.get("files")), (f"{where}.context.directories", ctx.get("directories")),
           (f"{where}.docs.required", docs.get("required")), (f"{where}.docs.recommended", docs.get("recommended")),
           (f"{where}.agent_config.required_docs", ac.get("required_docs"))]
    if isinstance(ac.get("context_dir"), str):
        out.append((f"{where}.agent_config.context_dir", [ac["context_dir"]]))
    return out


def safety_problems(doc: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(errors, warnings) as ``PATH: message`` for what a manifest may not ask of a node: git config keys
    outside the allowlist, env var values that load code (``LD_PRELOAD``, ``NODE_OPTIONS``...), paths that
    leave the project, option-like remote names (hook names are the
    schema's ``gitHook``; template references: ``template_ref_refusal``). Warnings: version items the
    checks may not run (own ``command``, or a name outside the known runtimes that only nodes listing it
    in ``env.probe_tools`` probe; elsewhere they need approval)."""
    errors: list[str] = []
    warnings: list[str] = []
    for where, sec in _requirement_sections(doc):
        git = _obj(sec.get("git"))
        for key, value in _obj(git.get("config")).items():
            why = git_config_refusal(str(key), str(value))
            if why:
                errors.append(f"{where}.git.config: {why}")
        remote = git.get("remote")
        if isinstance(remote, Mapping) and remote.get("name") is not None:
            why = remote_name_refusal(str(remote.get("name")))
            if why:
                errors.append(f"{where}.git.remote.name: {why}")
        url = remote.get("url") if isinstance(remote, Mapping) else remote
        if isinstance(url, str) and (why := remote_url_refusal(url)):
            errors.append(f"{where}.git.remote: {why}")
        for ev in _env_reqs(sec.get("env_vars")):
            why = env_var_refusal(ev.name) if ev.mode == "value" else None
            if why:
                errors.append(f"{where}.env_vars.{ev.name}: {why}")
        for path, value in _path_lists(sec, where):
            for i, rel in enumerate(_strs(value)):
                why = relative_path_refusal(rel)
                if why:
                    errors.append(f"{path}[{i}]: {why}")
        for category in ("runtime", "tools"):
            for r in _version_reqs(category, sec.get(category)):
                if r.command:
                    warnings.append(f"{where}.{category}.{r.name}: not probed by env checks "
                                    f"({r.unprobed_reason}); it becomes a pending item that needs approval")
                elif r.probe_in(DEFAULT_PROBES) is None and r.name != "ndk":
                    warnings.append(f"{where}.{category}.{r.name}: probed only on nodes whose agent config "
                                    "lists it in env.probe_tools; elsewhere it is not probed and becomes a "
                                    "pending item that needs approval")
    return errors, warnings


def template_ref_refusal(ref: str) -> str | None:
    """Why an AGENT.md template reference cannot be read from the supervisor's template directory.

    A reference is a name there (``AGENT.md``) or a relative path of names (``x/AGENT.md``); a leading
    ``templates/`` (the spec 8.1 examples) names the same directory."""
    parts = ref.removeprefix("templates/").split("/")
    for part in parts:
        why = template_name_refusal(part)
        if why:
            return f"template {ref!r} is not a name in the supervisor's template directory ({why})"
    return None
