"""The provisioning planner (pure): failing check items become safe actions, risky pending items,
conflicts (a modified managed file: a diff, never an overwrite without force) and manual items."""

from __future__ import annotations

import os
import shlex

from halswarm.agent.env.checks import NOT_PROBED
from halswarm.agent.env.facts import Facts
from halswarm.agent.env.model import PASS, Action, Conflict, Item, Manual, Pending, Plan
from halswarm.core.manifest.requirements import Requirements
from halswarm.core.manifest.risky import approval_token, pending_id, risky_command
from halswarm.core.manifest.templates import AGENT_MD, CONTEXT_FILES, doc_stub, unified_diff
from halswarm.core.manifest_rules import git_config_refusal


class Planner:
    def __init__(self, req: Requirements, facts: Facts, *, force: bool = False, node_id: str = "NODE") -> None:
        self.req = req
        self.facts = facts
        self.force = force
        self.node_id = node_id or "NODE"
        self.plan = Plan()

    def path(self, rel: str) -> str:
        return os.path.normpath(os.path.join(self.facts.directory, rel))

    def build(self, items: list[Item]) -> Plan:
        handlers = {
            "runtime": self._version, "tools": self._version, "native_libs": self._lib, "android_sdk": self._android,
            "disk": self._disk, "env_vars": self._env, "agent_config": self._agent_md, "context": self._context,
            "docs": self._docs, "git": self._git,
        }
        for it in items:
            if it.status == PASS:
                continue
            handler = handlers.get(it.category)
            if handler is not None:
                handler(it)
        return self.plan

    # ----- risky: pending with a suggested command -----

    def _pending(self, it: Item, command: str, reason: str, *, become: bool, check: list[str] | None = None,
                 chdir: str = "") -> None:
        p = self.req.project
        self.plan.pending.append(Pending(
            id=pending_id(p, it.category, it.item), token=approval_token(p, it.category, it.item, command),
            project=p, category=it.category, item=it.item, command=command, reason=reason, become=become,
            check=check or [], chdir=chdir))

    def _risky(self, it: Item, reason: str) -> None:
        missing = it.actual.startswith("not found") or it.actual == NOT_PROBED
        cmd = risky_command(self.req, it.category, it.item, directory=self.facts.directory, missing=missing)
        if cmd is not None:
            self._pending(it, cmd.command, reason, become=cmd.become, check=cmd.check, chdir=cmd.chdir)

    def _version(self, it: Item) -> None:
        if it.actual == NOT_PROBED:
            self._risky(it, f"{it.item}: {it.detail}; wanted {it.expected}")
            return
        missing = it.actual.startswith("not found")
        self._risky(it, f"{it.item} {'is not installed' if missing else 'is ' + it.actual}; wanted {it.expected}")

    def _lib(self, it: Item) -> None:
        self._risky(it, f"native library {it.item} not found")

    def _android(self, it: Item) -> None:
        self._risky(it, f"Android SDK: {it.item} {it.actual}")

    def _disk(self, it: Item) -> None:
        if it.item != "free_space" or it.actual == "unknown":
            return
        self._risky(it, f"{it.actual}; wanted {it.expected}")

    # ----- safe fixes -----

    def _env(self, it: Item) -> None:
        ev = next((e for e in self.req.env_vars if e.name == it.item), None)
        if ev is None or it.actual == "refused":
            return
        if ev.mode == "value" and ev.value is not None:
            self.plan.actions.append(Action("env_vars", ev.name, "env_set", args=(ev.name, ev.value)))
        else:
            self.plan.manual.append(Manual("env_vars", ev.name, f"{ev.mode} variable is not set",
                                           f"halctl auth push {self.node_id} --env {ev.name}=<value>"))

    def _agent_md(self, it: Item) -> None:
        if it.item == "template":
            self.plan.manual.append(Manual("agent_config", "template", f"template {it.expected} not found",
                                           "add it to the manifest's templates (PUT /api/v1/env/manifest)"))
            return
        path = self.path(AGENT_MD)
        want = self.req.agent_md_text
        if it.actual == "missing":
            self.plan.actions.append(Action("agent_config", AGENT_MD, "create", path, want, 0o644))
            return
        f = self.facts.files.get(AGENT_MD)
        if it.drift and f is not None and f.text is not None:
            if self.force:
                self.plan.actions.append(Action("agent_config", AGENT_MD, "overwrite", path, want, None))
            else:
                diff = unified_diff(f.text, want, AGENT_MD)
                self.plan.conflicts.append(Conflict("agent_config", AGENT_MD, path, diff,
                                                    "modified locally; not overwritten without force"))

    def _context(self, it: Item) -> None:
        if it.actual != "missing":
            return
        if it.item.endswith("/"):
            self.plan.actions.append(Action("context", it.item, "mkdir", self.path(it.item), mode=0o755))
            return
        content = CONTEXT_FILES.get(os.path.basename(it.item), "") if "/" in it.item else ""
        self.plan.actions.append(Action("context", it.item, "create", self.path(it.item), content, 0o644))

    def _docs(self, it: Item) -> None:
        if it.expected == "required" and it.actual == "missing":
            self.plan.actions.append(Action("docs", it.item, "create", self.path(it.item), doc_stub(it.item), 0o644))

    def _git(self, it: Item) -> None:
        g, gf, d = self.req.git, self.facts.git, self.facts.directory
        if g is None:
            return
        q = shlex.quote(d)
        if it.actual == "refused":
            return  # the check says why; nothing is planned for it
        if it.item == "repository" or gf is None:
            self.plan.manual.append(Manual("git", it.item, it.actual, f"git -C {q} init"))
            return
        if it.item.startswith("remote."):
            url = g.remote or ""
            if it.actual == "missing":
                self.plan.actions.append(Action("git", it.item, "git_remote_add", d, args=(g.remote_name, url)))
            elif self.force:
                self.plan.actions.append(Action("git", it.item, "git_remote_set_url", d, args=(g.remote_name, url)))
            else:
                diff = f"-{g.remote_name} {it.actual}\n+{g.remote_name} {url}\n"
                self.plan.conflicts.append(Conflict("git", it.item, d, diff, "remote URL differs; not changed "
                                                    "without force"))
        elif it.item == "branch":
            self.plan.manual.append(Manual("git", "branch", f"on {it.actual}, wanted {it.expected}",
                                           f"git -C {q} switch {shlex.quote(it.expected)}"))
        elif it.item.startswith("hooks/"):
            if it.actual in ("missing", "not executable"):
                self._risky(it, f"git hook {it.item.split('/', 1)[1]} is {it.actual} (a hook is code: it is "
                                "installed only after approval)")
        elif it.item.startswith("config."):
            key = it.item.removeprefix("config.")
            want = dict(g.config).get(key, "")
            if want in ("required", "optional"):
                self.plan.manual.append(Manual("git", it.item, f"{want} setting is not set",
                                               f"git -C {q} config {shlex.quote(key)} <value>"))
            elif git_config_refusal(key, want):
                return
            elif it.actual == "not set" or self.force:
                self.plan.actions.append(Action("git", it.item, "git_config", d, args=(key, want)))
            else:
                self.plan.conflicts.append(Conflict("git", it.item, d, f"-{key} = {it.actual}\n+{key} = {want}\n",
                                                    "set to another value; not changed without force"))


def build_plan(req: Requirements, facts: Facts, items: list[Item], *, force: bool = False,
               node_id: str = "NODE") -> Plan:
    return Planner(req, facts, force=force, node_id=node_id).build(items)
