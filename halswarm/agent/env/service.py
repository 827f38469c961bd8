"""The agent's env service: env check, provisioning and AGENT.md commands against the project dirs.

Commands (each answers with exactly one ``CommandResult``):

- ``env_check`` {manifest?, manifest_version?, project?}: check every project of the node (or
  ``target.project`` / ``args.project``); output ``{node_id, manifest_version, results: [...]}``, plus
  the Go shape ``{project, status, details: {drift, timestamp}}`` at the top when one project was asked.
- ``env_provision`` {manifest?, project?, dry_run?, force?}: safe fixes, risky items as pending,
  modified managed files as conflicts with a unified diff; ``dry_run`` returns the plan and changes nothing.
- ``agentmd_show`` / ``agentmd_diff`` / ``agentmd_sync`` {project, force?}.

Every env command carries ``manifest_version`` and ``manifest_digest``; ``manifest`` itself only when the
supervisor does not know that this node holds it (the digest in ``capabilities.env`` at registration, or
in the last answer). The manifest is kept in ``<data_dir>/env/manifest.json`` and used by commands without
one; a command whose ``manifest_digest`` differs from the kept one fails with ``manifest_outdated: ...``
(the supervisor then resends it with the manifest). With no manifest at all, the Go fallback
``<project>/env-manifest.json`` is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from halswarm.agent.env.apply import _replace, _write_new, apply_actions
from halswarm.agent.env.checks import check_all
from halswarm.agent.env.envfile import EnvFile
from halswarm.agent.env.facts import effective_env, file_fact, gather
from halswarm.agent.env.model import FAIL, PASS, WARN, overall
from halswarm.agent.env.paths import PathRefused, confine
from halswarm.agent.env.plan import build_plan
from halswarm.agent.env.procenv import OpencodeEnvSync, merge_project_env
from halswarm.core.capabilities import version_probes
from halswarm.core.manifest.requirements import DEFAULT_PROBES, ManifestError, Requirements, digest, requirements_for
from halswarm.core.manifest.templates import AGENT_MD, sha256_text, unified_diff
from halswarm.core.probe_rules import probe_table
from halswarm.protocol import Command, CommandResult

log = logging.getLogger(__name__)

Handler = Callable[[Command], Awaitable[CommandResult]]
MAX_SHOW_CHARS = 256 * 1024
GO_MANIFEST = "env-manifest.json"


def node_probes(probe_tools: Mapping[str, Sequence[str]], tool_paths: Mapping[str, str] | None = None, *,
                opencode_binary: str = "opencode") -> dict[str, tuple[str, ...]]:
    """The version-probe table of this node: known runtimes, the coding-agent CLIs (``tool_paths``), and the
    agent config's ``env.probe_tools``."""
    return probe_table(version_probes(tool_paths, opencode_binary=opencode_binary), probe_tools)


class EnvCommandError(Exception):
    """A command cannot be done; the message is the result's one-line error."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def _exists_not_file(path: str) -> bool:
    return os.path.lexists(path) and not os.path.isfile(path)


def _bool(args: Mapping[str, Any], name: str) -> bool:
    v = args.get(name)
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "on")
    return bool(v)


class NodeEnvService:
    def __init__(
        self,
        *,
        projects: Callable[[], Mapping[str, str]],
        data_dir: str | os.PathLike[str],
        node_id: str = "",
        base_env: Mapping[str, str] | None = None,
        extra_env: Callable[[], Mapping[str, str]] | None = None,
        probe_timeout: float = 10.0,
        opencode_env: OpencodeEnvSync | None = None,
        probes: Mapping[str, tuple[str, ...]] = DEFAULT_PROBES,
    ) -> None:
        """``probes``: the node's version-probe table (``node_probes``): the only programs a check runs
        to read a tool's version; the manifest never adds to it."""
        self._projects = projects
        self.probes = dict(probes)
        self.opencode_env = opencode_env
        self.dir = Path(data_dir) / "env"
        self.node_id = node_id
        self._base_env = base_env
        self._extra_env = extra_env or (lambda: {})
        self.probe_timeout = probe_timeout
        self.manifest: dict[str, Any] | None = None
        self.manifest_version: Any = None
        self.manifest_digest: str | None = None
        self.last_status: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._load_cached()

    # ------------------------------------------------------------------ wiring

    def handlers(self) -> dict[str, Handler]:
        table: dict[str, Callable[[Command], Awaitable[Any]]] = {
            "env_check": self.env_check, "env_provision": self.env_provision, "agentmd_show": self.agentmd_show,
            "agentmd_diff": self.agentmd_diff, "agentmd_sync": self.agentmd_sync,
        }
        aliases = {"check_env": "env_check", "provision_env": "env_provision", "show_agentmd": "agentmd_show",
                   "diff_agentmd": "agentmd_diff", "sync_agentmd": "agentmd_sync"}
        out: dict[str, Handler] = {name: self._wrap(fn) for name, fn in table.items()}
        out |= {alias: out[name] for alias, name in aliases.items()}
        return out

    def env_conflicts(self) -> dict[str, list[str]]:
        """Provisioned vars that projects set to different values (name -> projects): not passed on."""
        return merge_project_env({name: self.env_file(name).load() for name in self._projects()})[1]

    def managed_env(self) -> dict[str, str]:
        """Provisioned env vars of every project for the processes the agent starts (merge rule: see
        ``procenv``: a var with conflicting values is left out and reported)."""
        return merge_project_env({name: self.env_file(name).load() for name in self._projects()})[0]

    def process_env(self) -> dict[str, str]:
        """``managed_env()`` for starting opencode, remembered as what the process runs with."""
        env = self.managed_env()
        if self.opencode_env is not None:
            self.opencode_env.started_with(env)
        return env

    def snapshot(self) -> dict[str, Any]:
        """For the register frame's ``capabilities``."""
        return {"commands": sorted(self.handlers()), "manifest_version": self.manifest_version,
                "manifest_digest": self.manifest_digest, "status": dict(self.last_status)}

    def env_file(self, project: str) -> EnvFile:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in project)
        return EnvFile(self.dir / f"{safe}.env")

    def _wrap(self, fn: Callable[[Command], Awaitable[Any]]) -> Handler:
        async def handler(cmd: Command) -> CommandResult:
            started = time.monotonic()
            try:
                output = await fn(cmd)
            except (EnvCommandError, ManifestError) as exc:
                log.warning("command %s (%s) failed: %s", cmd.command_id, cmd.type, exc)
                return CommandResult(cmd.command_id, "failure", error=" ".join(str(exc).split())[:500])
            except Exception as exc:  # one bad project must not leave the command unanswered
                log.exception("command %s (%s) failed", cmd.command_id, cmd.type)
                return CommandResult(cmd.command_id, "failure", error=f"{type(exc).__name__}: {exc}"[:500])
            log.info("command %s (%s) done in %.0f ms", cmd.command_id, cmd.type, (time.monotonic() - started) * 1000)
            return CommandResult(cmd.command_id, "success", output=output)

        return handler

    # ------------------------------------------------------------------ manifest

    def _load_cached(self) -> None:
        try:
            saved = json.loads((self.dir / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(saved, dict) and isinstance(saved.get("manifest"), dict):
            self.manifest, self.manifest_version = saved["manifest"], saved.get("version")
            self.manifest_digest = digest(self.manifest)

    def adopt(self, args: Mapping[str, Any]) -> None:
        """Take the manifest a command carries (and keep it for commands without one).

        A command may carry only ``manifest_digest`` (the supervisor believes this node has it): when the
        kept manifest is another one, the command fails with ``manifest_outdated`` and the supervisor
        sends it again with the manifest."""
        doc = args.get("manifest")
        if not isinstance(doc, dict):
            wanted = args.get("manifest_digest")
            if isinstance(wanted, str) and wanted and wanted != self.manifest_digest:
                raise EnvCommandError(f"manifest_outdated: this node has manifest {self.manifest_digest or 'none'}, "
                                      f"the supervisor's is {wanted}")
            return
        version, dg = args.get("manifest_version"), digest(doc)
        if dg == self.manifest_digest and version == self.manifest_version:
            return
        self.manifest, self.manifest_version, self.manifest_digest = doc, version, dg
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=self.dir)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"version": version, "digest": dg, "manifest": doc}, fh)
            os.replace(tmp, self.dir / "manifest.json")
        except OSError as exc:
            log.warning("could not keep the env manifest in %s: %s", self.dir, exc)

    def requirements(self, project: str, directory: str) -> tuple[Requirements, str]:
        """(requirements, source) where source is supervisor | project_file | none."""
        if self.manifest is not None:
            return requirements_for(self.manifest, project), "supervisor"
        try:
            with open(os.path.join(directory, GO_MANIFEST), encoding="utf-8") as fh:
                doc = json.load(fh)
            if isinstance(doc, dict):
                return requirements_for(doc, project), "project_file"
        except (OSError, ValueError):
            pass
        return requirements_for({"projects": {}}, project), "none"

    def _env(self, project: str) -> dict[str, str]:
        base = self._base_env if self._base_env is not None else os.environ
        return effective_env(base, self._extra_env(), self.env_file(project).load())

    # ------------------------------------------------------------------ targets

    def _targets(self, cmd: Command) -> list[tuple[str, str]]:
        projects = dict(self._projects())
        wanted = cmd.target.project or cmd.args.get("project")
        if wanted:
            if not isinstance(wanted, str) or wanted not in projects:
                raise EnvCommandError(f"project {wanted} is not configured on this node")
            return [(wanted, projects[wanted])]
        return sorted(projects.items())

    def _one(self, cmd: Command) -> tuple[str, str]:
        if not (cmd.target.project or cmd.args.get("project")):
            raise EnvCommandError(f"{cmd.type}: a project is required (target.project or args.project)")
        return self._targets(cmd)[0]

    def _lock(self, project: str) -> asyncio.Lock:
        return self._locks.setdefault(project, asyncio.Lock())

    # ------------------------------------------------------------------ env_check

    async def check_project(self, project: str, directory: str) -> dict[str, Any]:
        req, source = self.requirements(project, directory)
        if not _is_dir(directory):
            return {"project": project, "directory": directory, "status": "missing", "source": source,
                    "error": f"{directory}: directory does not exist",
                    "details": {"drift": [], "timestamp": _now_iso()}}
        facts = await gather(req, directory, env=self._env(project), timeout=self.probe_timeout,
                             probes=self.probes)
        items = check_all(req, facts)
        status = overall(items)
        self.last_status[project] = status
        return {
            "project": project, "directory": directory, "status": status, "managed": req.managed, "source": source,
            "manifest_version": self.manifest_version if source == "supervisor" else None,
            "summary": {s: sum(1 for i in items if i.status == s) for s in (PASS, FAIL, WARN)},
            "details": {"drift": [i.to_dict() for i in items], "timestamp": _now_iso()},
        }

    async def env_check(self, cmd: Command) -> dict[str, Any]:
        self.adopt(cmd.args)
        targets = self._targets(cmd)
        results = await asyncio.gather(*(self.check_project(n, d) for n, d in targets))
        out: dict[str, Any] = {"node_id": self.node_id, "manifest_version": self.manifest_version,
                               "manifest_digest": self.manifest_digest, "results": list(results)}
        if cmd.target.project or cmd.args.get("project"):
            out |= results[0]
        return out

    # ------------------------------------------------------------------ env_provision

    async def provision_project(self, project: str, directory: str, *, dry_run: bool, force: bool) -> dict[str, Any]:
        async with self._lock(project):
            req, source = self.requirements(project, directory)
            if not _is_dir(directory):
                raise EnvCommandError(f"project {project}: {directory}: directory does not exist")
            env = self._env(project)
            facts = await gather(req, directory, env=env, timeout=self.probe_timeout, probes=self.probes)
            items = check_all(req, facts)
            plan = build_plan(req, facts, items, force=force, node_id=self.node_id)
            base: dict[str, Any] = {"project": project, "directory": directory, "dry_run": dry_run, "force": force,
                                    "source": source, "manifest_version": self.manifest_version}
            if dry_run:
                return base | {
                    "status": "planned", "changes": [a.change for a in plan.actions],
                    "details": {"planned": [a.to_dict() for a in plan.actions],
                                "pending": [p.to_dict() for p in plan.pending],
                                "conflicts": [c.to_dict() for c in plan.conflicts],
                                "manual": [m.to_dict() for m in plan.manual], "timestamp": _now_iso()},
                    "check": {"status": overall(items), "details": {"drift": [i.to_dict() for i in items]}},
                }
            env_file = self.env_file(project)
            applied, errors = await apply_actions(plan.actions, env_file=env_file, env=env,
                                                  timeout=max(self.probe_timeout, 30.0), root=directory)
        after = await self.check_project(project, directory)
        opencode = await self._env_to_opencode() if any(a.get("action") == "env_set" for a in applied) else None
        conflicts = {k: v for k, v in self.env_conflicts().items() if project in v}
        if errors:
            status = "failed"
        elif plan.pending or plan.conflicts or plan.manual:
            status = "partial"
        else:
            status = "completed"
        return base | {
            "status": status,
            "changes": [f"{a['category']}:{a['item']}:{a['action']}" for a in applied],
            "details": {"applied": applied, "pending": [p.to_dict() for p in plan.pending],
                        "conflicts": [c.to_dict() for c in plan.conflicts],
                        "manual": [m.to_dict() for m in plan.manual], "errors": errors, "timestamp": _now_iso()},
            "check": {k: after[k] for k in ("status", "summary", "details") if k in after},
        } | ({"opencode": opencode} if opencode else {}) | ({"env_conflicts": [
            {"name": k, "projects": v, "message": f"{k} is set to different values by {', '.join(v)}: not passed to "
                                                  "opencode (set one value in the manifest)"}
            for k, v in sorted(conflicts.items())]} if conflicts else {})

    async def _env_to_opencode(self) -> dict[str, Any]:
        """After provisioning changed env vars: put them into the managed opencode (see ``procenv``)."""
        if self.opencode_env is None:
            return {"restart": "needed", "message": "restart the agent's processes to pick up the env vars"}
        conflicts = self.env_conflicts()
        report = await self.opencode_env.update(self.managed_env())
        if conflicts:
            report["conflicts"] = conflicts
        return report

    async def env_provision(self, cmd: Command) -> dict[str, Any]:
        self.adopt(cmd.args)
        dry_run, force = _bool(cmd.args, "dry_run"), _bool(cmd.args, "force")
        results = []
        for name, directory in self._targets(cmd):
            results.append(await self.provision_project(name, directory, dry_run=dry_run, force=force))
        out: dict[str, Any] = {"node_id": self.node_id, "manifest_version": self.manifest_version,
                               "manifest_digest": self.manifest_digest, "dry_run": dry_run, "results": results}
        if cmd.target.project or cmd.args.get("project"):
            out |= results[0]
        return out

    # ------------------------------------------------------------------ AGENT.md

    def _agent_md(self, project: str, directory: str) -> tuple[str, str | None, str]:
        """(path, local text or None, rendered template)."""
        req, _ = self.requirements(project, directory)
        try:
            path = confine(directory, AGENT_MD)
        except PathRefused as exc:
            raise EnvCommandError(f"project {project}: {exc}") from None
        fact = file_fact(path, read=True)
        return path, fact.text if fact.is_file else None, req.agent_md_text

    async def agentmd_show(self, cmd: Command) -> dict[str, Any]:
        self.adopt(cmd.args)
        project, directory = self._one(cmd)
        path, local, template = self._agent_md(project, directory)
        return {"project": project, "path": path, "exists": local is not None,
                "content": None if local is None else local[:MAX_SHOW_CHARS],
                "sha256": None if local is None else sha256_text(local), "template": template[:MAX_SHOW_CHARS],
                "template_sha256": sha256_text(template), "in_sync": local == template,
                "manifest_version": self.manifest_version, "manifest_digest": self.manifest_digest}

    async def agentmd_diff(self, cmd: Command) -> dict[str, Any]:
        self.adopt(cmd.args)
        project, directory = self._one(cmd)
        path, local, template = self._agent_md(project, directory)
        status = "missing" if local is None else ("in_sync" if local == template else "modified")
        return {"project": project, "path": path, "status": status, "in_sync": status == "in_sync",
                "local": None if local is None else local[:MAX_SHOW_CHARS], "template": template[:MAX_SHOW_CHARS],
                "diff": unified_diff(local or "", template, AGENT_MD,
                                     old_label="missing" if local is None else "local"),
                "template_sha256": sha256_text(template), "manifest_version": self.manifest_version,
                "manifest_digest": self.manifest_digest}

    async def sync_project(self, project: str, directory: str, *, force: bool) -> dict[str, Any]:
        async with self._lock(project):
            path, local, template = self._agent_md(project, directory)
            base = {"project": project, "path": path, "template_sha256": sha256_text(template)}
            if local is None and _exists_not_file(path):
                raise EnvCommandError(f"project {project}: {path} is not a regular file; AGENT.md not written")
            if local is None:
                try:
                    created = _write_new(path, template, 0o644)
                except OSError as exc:
                    raise EnvCommandError(f"project {project}: cannot write {path}: "
                                          f"{exc.strerror or exc}") from None
                if not created:
                    raise EnvCommandError(f"{path} appeared while syncing; run sync again")
                return base | {"status": "synced", "message": "AGENT.md created", "changed": True}
            if local == template:
                return base | {"status": "already_synced", "message": "AGENT.md already matches the template",
                               "changed": False}
            diff = unified_diff(local, template, AGENT_MD)
            if not force:
                return base | {"status": "modified", "changed": False, "diff": diff,
                               "message": "AGENT.md was modified locally; not overwritten (use force)"}
            try:
                _replace(path, template)
            except OSError as exc:
                raise EnvCommandError(f"project {project}: cannot write {path}: "
                                      f"{exc.strerror or exc}") from None
            return base | {"status": "synced", "message": "AGENT.md replaced by the template (force)",
                           "changed": True, "diff": diff}

    async def agentmd_sync(self, cmd: Command) -> dict[str, Any]:
        self.adopt(cmd.args)
        force = _bool(cmd.args, "force")
        results = [await self.sync_project(n, d, force=force) for n, d in self._targets(cmd)]
        out: dict[str, Any] = {"node_id": self.node_id, "manifest_digest": self.manifest_digest, "results": results}
        if cmd.target.project or cmd.args.get("project"):
            out |= results[0]
        return out
