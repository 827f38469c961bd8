"""Environment manifest, env checks, drift, provisioning, approvals and AGENT.md (SPEC 6, issue 9).

The supervisor owns the manifest (table ``env_manifests``; both the Go format and the spec 8.1 format
are accepted, validated with ``PATH: message`` problems). Every env command it sends names the current
manifest (``args.manifest_version`` + ``args.manifest_digest``) and carries the document itself
(``args.manifest``) unless the node is known to hold it; an agent that holds another one answers
``manifest_outdated`` and gets it resent. The push is an ``env_check``: to every node when it registers
(the watcher sees a new ``connected_at``), to every online node when the manifest changes, and again
every ``recheck_interval`` seconds. No extra command type, no hub hook.

Results are stored (``env_status``: latest per node and project; ``env_runs``: history) and turned into
routed events: ``env.check.fail`` (a project's failing items changed and it is ``missing``),
``env.drift.detected`` (items that newly deviate from the manifest), ``env.provisioned``,
``provision.manual_required`` (a new risky item waits for approval), ``env.approval.succeeded|failed``,
``env.manifest.updated``.

Approved risky items (``POST /api/v1/env/approve/{node}`` {item}) run on the node through the Ansible
collection (module ``halswarm.ops.hal_env_item``) with ansible-runner in a worker thread, against the
inventory ``remediation.inventory`` (host = node id; how it is reached, e.g. ``ansible_connection: ssh`` with
``ansible_host``/``ansible_user``/a key, comes from the inventory); the result is stored and reported, and
the node's project is checked again. SSH host keys are checked (ansible-runner turns that off unless
``ANSIBLE_HOST_KEY_CHECKING`` is set; we set it unless the supervisor's environment does): an inventory host
opts out explicitly with ``ansible_host_key_checking: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from halswarm.core.manifest.requirements import (
    detect_format,
    digest,
    project_names,
    requirements_for,
    safety_problems,
    template_ref_refusal,
    template_refs,
)
from halswarm.core.manifest.risky import RiskyCommand, approval_token, risky_command
from halswarm.core.roles import Role
from halswarm.core.timeutil import iso
from halswarm.protocol import CommandTarget
from halswarm.supervisor.apikit.commands import raise_for
from halswarm.supervisor.apikit.deps import actor_of, role_dependencies
from halswarm.supervisor.apikit.envelope import ApiError, ok
from halswarm.supervisor.runtime.dispatcher import CommandError, Result

if TYPE_CHECKING:
    from halswarm.supervisor.app import Supervisor

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 512 * 1024
CHECK_TIMEOUT = 120.0
PROVISION_TIMEOUT = 300.0
AGENTMD_TIMEOUT = 60.0
APPROVAL_TIMEOUT = 900
WATCH_INTERVAL = 1.0
RECHECK_INTERVAL = 1800.0
RUNS_RETENTION_S = 90 * 86400
OUTPUT_TAIL = 4000
MODULE = "halswarm.ops.hal_env_item"
_SHELL_CHARS = re.compile(r"[|&;<>()$`\\*?\[\]{}~\n]")


# --------------------------------------------------------------------------- validation

TEMPLATE_DIR = "templates"
MAX_TEMPLATE_BYTES = 256 * 1024


def template_dir(base_dir: str | None) -> Path:
    """The supervisor's template directory: ``templates/`` next to its config file (or the cwd)."""
    return Path(base_dir or os.getcwd()) / TEMPLATE_DIR


def read_template(ref: str, base_dir: str | None) -> str:
    """The text of template ``ref`` from the template directory only (a name or a path of names, resolved
    and confined there); ValueError with the one-line reason otherwise."""
    why = template_ref_refusal(ref)
    if why:
        raise ValueError(why)
    root = template_dir(base_dir).resolve()
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


def manifest_problems(doc: Any, base_dir: str | None = None) -> tuple[list[str], list[str], dict[str, str]]:
    """(errors, warnings, templates read from files): schema, semantic and safety problems as
    ``PATH: message`` (``safety_problems``: git config allowlist, hook names, paths confined to the
    project), plus every AGENT.md template a project names that is neither in ``templates`` nor a file
    of the supervisor's template directory (``templates/`` next to its config; read by name only)."""
    from halswarm.config import validate_data

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
            inlined[name] = read_template(name, base_dir)
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
    return errors, warnings, inlined


# --------------------------------------------------------------------------- storage (run on the writer/reader)

def _j(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _load(text: Any) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def q_manifest(conn: Any) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM env_manifests ORDER BY version DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return {"version": row["version"], "document": _load(row["document"]), "format": row["format"],
            "digest": row["digest"], "actor": row["actor"], "created_at": row["created_at"]}


def q_status(conn: Any, node_id: str | None = None, project: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM env_status WHERE 1=1"
    params: list[Any] = []
    if node_id:
        sql, params = sql + " AND node_id=?", [*params, node_id]
    if project:
        sql, params = sql + " AND project=?", [*params, project]
    rows = conn.execute(sql + " ORDER BY node_id, project", params).fetchall()
    return [{"node_id": r["node_id"], "project": r["project"], "status": r["status"],
             "manifest_version": r["manifest_version"], "result": _load(r["result"]) or {},
             "checked_at": r["checked_at"]} for r in rows]


def q_pending(conn: Any, node_id: str | None = None, statuses: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    sql = "SELECT * FROM env_pending WHERE 1=1"
    params: list[Any] = []
    if node_id:
        sql, params = sql + " AND node_id=?", [*params, node_id]
    if statuses:
        sql += f" AND status IN ({','.join('?' * len(statuses))})"
        params += list(statuses)
    return [_pending_row(r) for r in conn.execute(sql + " ORDER BY node_id, item_id", params).fetchall()]


def _pending_row(r: Any) -> dict[str, Any]:
    detail = _load(r["detail"]) or {}
    return {"node_id": r["node_id"], "id": r["item_id"], "token": r["token"], "project": r["project"],
            "category": r["category"], "item": r["item"], "command": r["command"], "status": r["status"],
            "reason": detail.get("reason"), "become": bool(detail.get("become")), "check": detail.get("check") or [],
            "chdir": detail.get("chdir") or "", "result": _load(r["result"]),
            "approvable": not detail.get("untrusted") and bool(r["command"]),
            "reported_command": detail.get("reported_command"),
            "created_at": iso(r["created_at"]), "updated_at": iso(r["updated_at"])}


def q_runs(conn: Any, node_id: str, limit: int = 20) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM env_runs WHERE node_id=? ORDER BY id DESC LIMIT ?", (node_id, limit))
    return [{"id": r["id"], "project": r["project"], "kind": r["kind"], "status": r["status"], "actor": r["actor"],
             "command_id": r["command_id"], "created_at": iso(r["created_at"]), "result": _load(r["result"])}
            for r in rows.fetchall()]


def _insert_run(conn: Any, node_id: str, project: str | None, kind: str, status: str, result: Any, actor: str,
                command_id: str | None) -> None:
    now = time.time()
    conn.execute("INSERT INTO env_runs(node_id, project, kind, status, result, actor, command_id, created_at) "
                 "VALUES (?,?,?,?,?,?,?,?)", (node_id, project, kind, status, _j(result), actor, command_id, now))
    conn.execute("DELETE FROM env_runs WHERE created_at < ?", (now - RUNS_RETENTION_S,))


# --------------------------------------------------------------------------- the manager

@dataclass
class _Seen:
    status: str
    non_pass: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)


def _non_pass(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    items = (result.get("details") or {}).get("drift") or []
    return {f"{i.get('category')}:{i.get('item')}": i for i in items
            if isinstance(i, dict) and i.get("status") != "pass"}


class EnvManager:
    def __init__(self, sup: Supervisor, *, recheck_interval: float = RECHECK_INTERVAL,
                 watch_interval: float = WATCH_INTERVAL) -> None:
        self.sup = sup
        self.recheck_interval = recheck_interval
        self.watch_interval = watch_interval
        self._manifest: dict[str, Any] | None = None
        self._manifest_loaded = False
        self._seen: dict[tuple[str, str], _Seen] | None = None
        self._pushing: dict[str, Any] = {}
        self._node_digest: dict[str, Any] = {}
        self._registered: dict[str, float | None] = {}
        self._last_recheck = time.monotonic()
        self._approving: set[tuple[str, str]] = set()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()

    # ----- manifest -----

    async def manifest(self) -> dict[str, Any] | None:
        if not self._manifest_loaded:
            self._manifest = await self.sup.reader.run(q_manifest)
            self._manifest_loaded = True
        return self._manifest

    async def args_for(self, node_id: str, **extra: Any) -> dict[str, Any]:
        """Command args for ``node_id``: the manifest's version and digest always, the manifest itself only
        when the node is not known to hold it (its last answer, or its registration's capabilities)."""
        man = await self.manifest()
        args = {k: v for k, v in extra.items() if v is not None}
        if man is None:
            return args
        args |= {"manifest_version": man["version"], "manifest_digest": man["digest"]}
        known = self._node_digest.get(node_id)
        if known is None:
            node = self.sup.nodes.get(node_id)
            caps = node.capabilities.get("env") if node is not None and isinstance(node.capabilities, dict) else None
            known = caps.get("manifest_digest") if isinstance(caps, dict) else None
        if known != man["digest"]:
            args["manifest"] = man["document"]
        return args

    async def put_manifest(self, doc: dict[str, Any], actor: str) -> tuple[dict[str, Any], bool]:
        """Store ``doc`` (already validated); returns (record, changed)."""
        fmt, dg = detect_format(doc), digest(doc)
        async with self._lock:
            current = await self.manifest()
            if current is not None and current["digest"] == dg:
                return current, False

            def job(c: Any) -> dict[str, Any] | None:
                c.execute("INSERT INTO env_manifests(document, format, digest, actor, created_at) VALUES (?,?,?,?,?)",
                          (_j(doc), fmt, dg, actor, time.time()))
                return q_manifest(c)

            record = await self.sup.writer.run(job)
            self._manifest, self._manifest_loaded = record, True
        assert record is not None
        await self.sup.ingestor.emit_stored(None, "env.manifest.updated", {
            "version": record["version"], "format": fmt, "digest": dg, "actor": actor,
            "projects": project_names(doc)})
        self.push_all("manifest_changed")
        return record, True

    # ----- dispatching -----

    async def dispatch(self, ctype: str, target: CommandTarget, args: dict[str, Any], *, actor: str,
                       ip: str | None = None, timeout: float) -> Result:
        try:
            return await self.sup.dispatcher.dispatch(ctype, target, args, actor=actor, ip=ip, timeout=timeout)
        except CommandError as exc:
            raise ApiError(exc.code, exc.message) from None

    def resolve(self, ctype: str, target: CommandTarget) -> str:
        try:
            return self.sup.dispatcher.resolve(ctype, target)
        except CommandError as exc:
            raise ApiError(exc.code, exc.message) from None

    async def send(self, ctype: str, node_id: str, project: str | None, *, actor: str, ip: str | None = None,
                   timeout: float, **extra: Any) -> Result:
        """One env command to one node, with the manifest when the node may not have it (and once more
        with it when the node answers ``manifest_outdated``)."""
        target = CommandTarget(node_id=node_id, project=project)
        args = await self.args_for(node_id, project=project, **extra)
        res = await self.dispatch(ctype, target, args, actor=actor, ip=ip, timeout=timeout)
        if res.status == "failure" and (res.error or "").startswith("manifest_outdated") and "manifest" not in args:
            man = await self.manifest()
            self._node_digest.pop(node_id, None)
            if man is not None:
                res = await self.dispatch(ctype, target, args | {"manifest": man["document"]}, actor=actor, ip=ip,
                                          timeout=timeout)
        if res.status == "success" and isinstance(res.output, dict) and "manifest_digest" in res.output:
            self._node_digest[node_id] = res.output["manifest_digest"]
        return res

    async def check(self, node_id: str, project: str | None, *, actor: str, ip: str | None = None) -> Result:
        res = await self.send("env_check", node_id, project, actor=actor, ip=ip, timeout=CHECK_TIMEOUT)
        if res.status == "success" and isinstance(res.output, dict):
            await self.record_checks(node_id, res.output.get("results") or [], actor, res.command_id,
                                     full=project is None)
        else:
            await self.sup.writer.run(lambda c: _insert_run(c, node_id, project, "check", res.status,
                                                            {"error": res.error}, actor, res.command_id))
        return res

    async def provision(self, node_id: str, project: str | None, *, dry_run: bool, force: bool, actor: str,
                        ip: str | None = None) -> Result:
        res = await self.send("env_provision", node_id, project, actor=actor, ip=ip, timeout=PROVISION_TIMEOUT,
                              dry_run=dry_run, force=force)
        if res.status == "success" and isinstance(res.output, dict):
            await self.record_provision(node_id, res.output, actor, res.command_id)
        else:
            await self.sup.writer.run(lambda c: _insert_run(c, node_id, project, "provision", res.status,
                                                            {"error": res.error}, actor, res.command_id))
        return res

    # ----- recording -----

    async def _seen_map(self) -> dict[tuple[str, str], _Seen]:
        if self._seen is None:
            rows = await self.sup.reader.run(q_status)
            self._seen = {}
            for r in rows:
                np = _non_pass(r["result"])
                self._seen[(r["node_id"], r["project"])] = _Seen(
                    r["status"], set(np), {k for k, i in np.items() if i.get("status") == "fail"})
        return self._seen

    async def record_checks(self, node_id: str, results: list[Any], actor: str, command_id: str | None, *,
                            full: bool = False) -> None:
        """Store check results; ``full``: they cover every project of the node (others are forgotten)."""
        seen = await self._seen_map()
        now = time.time()
        rows = [r for r in results if isinstance(r, dict) and isinstance(r.get("project"), str)]
        if full:
            keep = {r["project"] for r in rows}
            gone = [p for (n, p) in list(seen) if n == node_id and p not in keep]
            for p in gone:
                seen.pop((node_id, p), None)

            def forget(c: Any) -> None:
                marks = ",".join("?" * len(keep))
                c.execute(f"DELETE FROM env_status WHERE node_id=? AND project NOT IN ({marks})" if keep
                          else "DELETE FROM env_status WHERE node_id=?", (node_id, *sorted(keep)))

            await self.sup.writer.run(forget)

        def job(c: Any) -> None:
            for r in rows:
                c.execute("INSERT INTO env_status(node_id, project, status, manifest_version, result, checked_at) "
                          "VALUES (?,?,?,?,?,?) ON CONFLICT(node_id, project) DO UPDATE SET status=excluded.status, "
                          "manifest_version=excluded.manifest_version, result=excluded.result, "
                          "checked_at=excluded.checked_at",
                          (node_id, r["project"], str(r.get("status") or "unknown"), r.get("manifest_version"),
                           _j(r), now))
                _insert_run(c, node_id, r["project"], "check", str(r.get("status")), r, actor, command_id)

        if rows:
            await self.sup.writer.run(job)
        ids = [e for r in rows for e in self._events_for(node_id, r, seen, command_id)]
        if ids:
            await self.sup.ingestor.stored(ids)

    def _events_for(self, node_id: str, r: dict[str, Any], seen: dict[tuple[str, str], _Seen],
                    command_id: str | None) -> list[str]:
        """Emit (tracked) the events this check result causes; their event ids."""
        project, status = r["project"], str(r.get("status") or "unknown")
        np = _non_pass(r)
        failing = {k for k, i in np.items() if i.get("status") == "fail"}
        prev = seen.get((node_id, project))
        new = sorted(set(np) - (prev.non_pass if prev else set()))
        base = {"project": project, "status": status, "manifest_version": r.get("manifest_version"),
                "command_id": command_id}
        ids = []
        if status == "missing" and (prev is None or prev.failing != failing or prev.status != status):
            ids.append(self.sup.ingestor.emit(node_id, "env.check.fail", base | {"failed": sorted(failing)},
                                              project=project, track=True))
        if new:
            items = [{k: np[key].get(k) for k in ("category", "item", "expected", "actual", "status", "drift")}
                     for key in new]
            ids.append(self.sup.ingestor.emit(node_id, "env.drift.detected", base | {"items": items},
                                              project=project, track=True))
        seen[(node_id, project)] = _Seen(status, set(np), failing)
        return ids

    async def rebuild(self, node_id: str, project: str, category: str, item: str, *,
                      missing: bool) -> RiskyCommand | None:
        """The command for a risky item from the supervisor's OWN stored manifest (never the agent's text)."""
        man = await self.manifest()
        if man is None or not isinstance(man.get("document"), dict):
            return None
        node = self.sup.nodes.get(node_id)
        directory = next((str(p.get("directory") or "") for p in (node.projects if node else [])
                          if p.get("name") == project), "")
        return risky_command(requirements_for(man["document"], project), category, item, directory=directory,
                             missing=missing)

    async def _trusted_pending(self, node_id: str, project: str, p: dict[str, Any]) -> dict[str, Any]:
        """A reported pending item with its command, become, check and chdir replaced by the rebuilt ones."""
        category, item = str(p.get("category")), str(p.get("item"))
        built = await self.rebuild(node_id, project, category, item, missing=bool(p.get("check")))
        reported = str(p.get("command") or "")
        out = {**p, "project": project, "category": category, "item": item}
        if built is None:
            log.warning("env item %s reported by %s is not in the supervisor's manifest; it cannot be approved",
                        p.get("id"), node_id)
            return out | {"command": "", "become": False, "check": [], "chdir": "", "untrusted": True,
                          "reported_command": reported,
                          "reason": f"{p.get('reason')} (not in the supervisor's manifest: cannot be approved)"}
        if reported != built.command or bool(p.get("become")) != built.become:
            log.warning("env item %s: %s reported command %r (become %s); the manifest's is %r (become %s)",
                        p.get("id"), node_id, reported, p.get("become"), built.command, built.become)
            out["reported_command"] = reported
        return out | {"command": built.command, "become": built.become, "check": built.check, "chdir": built.chdir,
                      "token": approval_token(project, category, item, built.command)}

    async def record_provision(self, node_id: str, output: dict[str, Any], actor: str, command_id: str | None) -> None:
        results = [r for r in output.get("results") or [] if isinstance(r, dict) and isinstance(r.get("project"), str)]
        dry = bool(output.get("dry_run"))
        trusted: dict[tuple[str, str], dict[str, Any]] = {}
        if not dry:
            for r in results:
                for p in (r.get("details") or {}).get("pending") or []:
                    if isinstance(p, dict) and isinstance(p.get("id"), str):
                        trusted[(r["project"], p["id"])] = await self._trusted_pending(node_id, r["project"], p)
        checks = [{"project": r["project"], "manifest_version": r.get("manifest_version"), **r["check"]}
                  for r in results if isinstance(r.get("check"), dict)]
        now = time.time()
        new_pending: list[dict[str, Any]] = []

        def job(c: Any) -> None:
            for r in results:
                _insert_run(c, node_id, r["project"], "provision_dry_run" if dry else "provision",
                            str(r.get("status")), r, actor, command_id)
                if dry:
                    continue
                pending = [trusted[(r["project"], p["id"])] for p in (r.get("details") or {}).get("pending") or []
                           if isinstance(p, dict) and (r["project"], p.get("id")) in trusted]
                ids = {p.get("id") for p in pending}
                for p in pending:
                    old = c.execute("SELECT status FROM env_pending WHERE node_id=? AND item_id=?",
                                    (node_id, p["id"])).fetchone()
                    if old is not None and old["status"] in ("pending", "running"):
                        continue
                    detail = {k: p.get(k) for k in ("reason", "become", "check", "chdir", "untrusted",
                                                      "reported_command") if k in p}
                    c.execute("INSERT INTO env_pending(node_id, item_id, token, project, category, item, command, "
                              "detail, status, result, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                              "ON CONFLICT(node_id, item_id) DO UPDATE SET token=excluded.token, "
                              "command=excluded.command, detail=excluded.detail, status='pending', result=NULL, "
                              "updated_at=excluded.updated_at",
                              (node_id, p["id"], str(p.get("token") or ""), r["project"], str(p.get("category")),
                               str(p.get("item")), str(p.get("command") or ""), _j(detail), "pending", None, now, now))
                    new_pending.append(p)
                for row in c.execute("SELECT item_id FROM env_pending WHERE node_id=? AND project=? AND "
                                     "status IN ('pending','failed')", (node_id, r["project"])).fetchall():
                    if row["item_id"] not in ids:
                        c.execute("UPDATE env_pending SET status='resolved', updated_at=? WHERE node_id=? AND "
                                  "item_id=?", (now, node_id, row["item_id"]))

        if results:
            await self.sup.writer.run(job)
        if checks:
            await self.record_checks(node_id, checks, actor, command_id)
        ids = []
        for r in results:
            if not dry and r.get("changes"):
                ids.append(self.sup.ingestor.emit(node_id, "env.provisioned", {
                    "project": r["project"], "status": r.get("status"), "changes": r.get("changes"),
                    "actor": actor, "command_id": command_id}, project=r["project"], track=True))
        for p in new_pending:
            ids.append(self.sup.ingestor.emit(node_id, "provision.manual_required", {
                "project": p.get("project"), "item": p.get("id"), "category": p.get("category"),
                "approval_token": p.get("token"), "command": p.get("command"), "reason": p.get("reason"),
                "approve": f"halctl env approve {node_id} {p.get('id')}"}, project=p.get("project"), track=True))
        if ids:
            await self.sup.ingestor.stored(ids)

    # ----- push on registration / change, periodic re-check -----

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="env-watcher")

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def push(self, node_id: str, reason: str) -> None:
        """Send the manifest (as an ``env_check``) to one node, at most one at a time per node."""
        if node_id in self._pushing:
            self._pushing[node_id] = reason  # run once more after the one in flight
            return
        self._pushing[node_id] = None

        async def run() -> None:
            try:
                again: Any = reason
                while again:
                    if not self.sup.dispatcher.running:
                        return
                    node = self.sup.nodes.get(node_id)
                    if node is None or node.status != "online":
                        return
                    try:
                        res = await self.check(node_id, None, actor=f"supervisor:env:{again}")
                        if res.status != "success":
                            log.info("env check of %s (%s) did not succeed: %s", node_id, again, res.error)
                    except ApiError as exc:
                        log.info("env check of %s (%s) not sent: %s", node_id, again, exc.message)
                    again, self._pushing[node_id] = self._pushing.get(node_id), None
            except Exception:
                log.exception("env push to %s failed", node_id)
            finally:
                self._pushing.pop(node_id, None)

        self._spawn(run())

    def push_all(self, reason: str) -> None:
        for node in list(self.sup.nodes.values()):
            if node.status == "online":
                self.push(node.id, reason)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                man = await self.manifest()
                for node in list(self.sup.nodes.values()):
                    if node.status != "online":
                        self._registered.pop(node.id, None)
                        self._node_digest.pop(node.id, None)
                        continue
                    seen = self._registered.get(node.id)
                    if seen != node.connected_at:
                        self._registered[node.id] = node.connected_at
                        if seen is not None:  # registered again (maybe a new agent process): ask its capabilities
                            self._node_digest.pop(node.id, None)
                        if man is not None:
                            self.push(node.id, "registration")
                if man is not None and time.monotonic() - self._last_recheck >= self.recheck_interval:
                    self._last_recheck = time.monotonic()
                    self.push_all("periodic")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("env watcher failed")

    # ----- approvals -----

    def state_dir(self) -> Path:
        db = self.sup.config.database_path
        base = Path(db).parent if db and db != ":memory:" else Path.cwd()
        return base / "env-approvals"

    async def approve(self, node_id: str, ref: str, actor: str, *, dry_run: bool = False) -> dict[str, Any]:
        """Run an approved item (``dry_run``: only show what would run where). The command, ``become`` and
        ``check`` are rebuilt from the supervisor's current manifest; what the agent reported is ignored."""
        rows = await self.sup.reader.run(lambda c: q_pending(c, node_id))
        row = next((r for r in rows if ref in (r["id"], r["token"])), None)
        if row is None:
            raise ApiError("NOT_FOUND", f"no pending env item {ref!r} on node {node_id} (see `halctl env drift`)")
        if row["status"] == "succeeded" and not dry_run:
            return {"node_id": node_id, "item": row, "status": "succeeded", "result": row["result"], "replayed": True,
                    "run": (row["result"] or {}).get("run")}
        if row["status"] not in ("pending", "failed", "succeeded") or (node_id, row["id"]) in self._approving:
            raise ApiError("CONFLICT", f"env item {row['id']} on {node_id} is {row['status']}")
        built = await self.rebuild(node_id, row["project"], row["category"], row["item"], missing=bool(row["check"]))
        if built is None:
            raise ApiError("CONFLICT", f"env item {row['id']} is not in the supervisor's manifest: nothing to run "
                                       "(the supervisor runs only commands its own manifest defines)")
        row = row | {"command": built.command, "become": built.become, "check": built.check, "chdir": built.chdir}
        inventory = _inventory(self.sup)
        if inventory is None:
            raise ApiError("CONFLICT", "no Ansible inventory configured (remediation.inventory): approved env items "
                                       "run on the node through the halswarm.ops collection")
        run = {"command": built.command, "become": built.become, "check": built.check, "chdir": built.chdir,
               "host": node_id, "inventory": inventory, "module": MODULE}
        if dry_run:
            return {"node_id": node_id, "item": row, "status": "dry_run", "run": run}
        self._approving.add((node_id, row["id"]))
        try:
            await self._set_pending(node_id, row["id"], "running", None)
            await self.sup.ingestor.emit_stored(node_id, "env.approval.started", {
                "item": row["id"], "project": row["project"], "command": row["command"], "become": row["become"],
                "host": node_id, "actor": actor}, project=row["project"])
            result = await self._run_item(node_id, row, inventory)
            result["run"] = run
        finally:
            self._approving.discard((node_id, row["id"]))
        status = "succeeded" if result.get("ok") else "failed"
        await self._set_pending(node_id, row["id"], status, result)
        await self.sup.writer.run(lambda c: _insert_run(c, node_id, row["project"], "approval", status,
                                                        {"item": row["id"], **result}, actor, None))
        await self.sup.ingestor.emit_stored(node_id, f"env.approval.{status}", {
            "item": row["id"], "project": row["project"], "category": row["category"], "command": row["command"],
            "rc": result.get("rc"), "changed": result.get("changed"), "message": result.get("msg"), "actor": actor},
            project=row["project"])
        check = None
        node = self.sup.nodes.get(node_id)
        if status == "succeeded" and node is not None and node.status == "online":
            with contextlib.suppress(ApiError):
                res = await self.check(node_id, row["project"], actor=actor)
                if res.status == "success" and isinstance(res.output, dict):
                    check = {k: res.output.get(k) for k in ("project", "status", "summary")}
        item = next((r for r in await self.sup.reader.run(lambda c: q_pending(c, node_id)) if r["id"] == row["id"]),
                    row)
        return {"node_id": node_id, "item": item, "status": status, "result": result, "check": check, "run": run}

    async def _set_pending(self, node_id: str, item_id: str, status: str, result: Any) -> None:
        now = time.time()
        await self.sup.writer.run(lambda c: c.execute(
            "UPDATE env_pending SET status=?, result=?, updated_at=? WHERE node_id=? AND item_id=?",
            (status, _j(result) if result is not None else None, now, node_id, item_id)))

    async def _run_item(self, node_id: str, row: dict[str, Any], inventory: str) -> dict[str, Any]:
        from halswarm.ops.runner import PlaybookRun, arun_playbook, host_address

        state = self.state_dir()
        plays = state / "plays"
        await asyncio.to_thread(plays.mkdir, parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{node_id}-{row['id']}")[:100]
        play = plays / f"{time.strftime('%Y%m%dT%H%M%S')}-{slug}.yml"
        await asyncio.to_thread(play.write_text, approval_play(row), "utf-8")
        lines: list[str] = []
        started = time.monotonic()
        try:
            run = await arun_playbook(PlaybookRun(playbook=str(play), inventories=[inventory],
                                                  extravars={"hal_env_target": node_id}, timeout=APPROVAL_TIMEOUT,
                                                  state_dir=state, keep_runs=100), emit=lines.append,
                                      envvars=approval_envvars())
        except Exception as exc:
            log.exception("approval run of %s on %s failed to start", row["id"], node_id)
            return {"ok": False, "msg": f"ansible-runner: {type(exc).__name__}: {exc}", "rc": None}
        task = await asyncio.to_thread(_module_result, run.artifact_dir)
        out: dict[str, Any] = {"ansible_status": run.status, "ansible_rc": run.rc, "duration_s": round(
            time.monotonic() - started, 3), "artifacts": str(run.artifact_dir), "progress": lines[-40:]}
        if task is None:
            why = "; ".join(f"{h}: {m}" for h, _, m in run.failures) or (
                f"host {node_id} is not in the inventory {inventory}" if run.status == "successful" else run.status)
            return out | {"ok": False, "msg": why, "rc": None}
        host, event, res = task
        address = await asyncio.to_thread(host_address, inventory, host)
        out |= {"host": host, "address": address, "rc": res.get("rc"), "changed": bool(res.get("changed")),
                "skipped_reason": res.get("skipped_reason"), "stdout": str(res.get("stdout") or "")[-OUTPUT_TAIL:],
                "stderr": str(res.get("stderr") or "")[-OUTPUT_TAIL:], "msg": res.get("msg") or ""}
        out["ok"] = event == "runner_on_ok" and run.status == "successful"
        return out


def _inventory(sup: Supervisor) -> str | None:
    rem = sup.config.raw.get("remediation")
    inv = rem.get("inventory") if isinstance(rem, Mapping) else None
    if not isinstance(inv, str) or not inv:
        return None
    if not os.path.isabs(inv) and sup.config.source_path:
        inv = os.path.join(os.path.dirname(sup.config.source_path), inv)
    return inv


def approval_envvars() -> dict[str, str]:
    """ansible-runner disables SSH host key checking unless told otherwise: approved commands must not run on
    a host that merely claims to be the node, so checking stays on unless the supervisor's environment
    says otherwise (per host: ``ansible_host_key_checking: false`` in the inventory)."""
    return {"ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING") or "True"}


def approval_play(row: Mapping[str, Any]) -> str:
    """The one-task play that runs an approved item with ``halswarm.ops.hal_env_item`` (JSON is YAML)."""
    command = str(row["command"])
    args: dict[str, Any] = {"name": row["id"], "command": command, "shell": bool(_SHELL_CHARS.search(command))}
    if not args["shell"]:
        try:
            shlex.split(command)
        except ValueError:
            args["shell"] = True
    if row.get("check"):
        args["check"] = list(row["check"])
    if row.get("chdir"):
        args["chdir"] = row["chdir"]
    play = [{"name": f"hal-o-swarm: approved env item {row['id']}", "hosts": "{{ hal_env_target }}",
             "gather_facts": False,
             "tasks": [{"name": "Run the approved env item", MODULE: args, "become": bool(row.get("become"))}]}]
    return json.dumps(play, indent=2) + "\n"


def _module_result(artifact_dir: Path) -> tuple[str, str, dict[str, Any]] | None:
    """(host, event, module result) of the approval task, from ansible-runner's job events."""
    found = None
    for path in sorted((artifact_dir / "job_events").glob("*.json")):
        try:
            ev = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        data = ev.get("event_data") or {}
        if ev.get("event") in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable") and \
                data.get("task_action") in (MODULE, "hal_env_item"):
            found = (str(data.get("host")), str(ev["event"]), data.get("res") or {})
    return found


# --------------------------------------------------------------------------- API shapes

def _status_row(r: dict[str, Any], current: int | None, node_status: str | None) -> dict[str, Any]:
    res = r["result"]
    return {"node_id": r["node_id"], "project": r["project"], "status": r["status"],
            "checked_at": iso(r["checked_at"]), "manifest_version": r["manifest_version"],
            "stale": current is not None and r["manifest_version"] != current,
            "summary": res.get("summary") or {}, "node_status": node_status, "error": res.get("error")}


def _drift_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        for item in _non_pass(r["result"]).values():
            out.append({"node_id": r["node_id"], "project": r["project"], **{k: item.get(k) for k in (
                "category", "item", "expected", "actual", "status", "fix", "drift", "detail")},
                "checked_at": iso(r["checked_at"])})
    return out


class ProvisionBody(BaseModel):
    project: str | None = None
    dry_run: bool = False
    force: bool = False


class CheckBody(BaseModel):
    project: str | None = None


class ApproveBody(BaseModel):
    item: str = Field(min_length=1)
    dry_run: bool = False


class SyncBody(BaseModel):
    project: str | None = None
    node_id: str | None = None
    force: bool = False


# --------------------------------------------------------------------------- routes

def include_env_routes(app: FastAPI, sup: Supervisor) -> None:
    """Add the env and agent-md routes to ``app`` and start the manifest push watcher (idempotent)."""
    if getattr(app.state, "env_routes_included", False):
        return
    app.state.env_routes_included = True
    mgr = EnvManager(sup)
    app.state.env_manager = mgr

    need = role_dependencies()

    def node_or_404(node_id: str) -> Any:
        return sup.node(node_id)

    # ----- manifest -----

    @app.get("/api/v1/env/manifest", dependencies=need[Role.viewer], tags=["env"])
    async def get_manifest() -> Any:
        man = await mgr.manifest()
        if man is None:
            raise ApiError("NOT_FOUND", "no environment manifest stored yet (PUT /api/v1/env/manifest)")
        return ok(man["document"], meta={k: man[k] for k in ("version", "format", "digest", "actor")}
                  | {"updated_at": iso(man["created_at"])})

    @app.put("/api/v1/env/manifest", dependencies=need[Role.admin], tags=["env"],
             responses={201: {"description": "Created (the first manifest)"}})
    async def put_manifest(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ApiError("PAYLOAD_TOO_LARGE", f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            doc = json.loads(raw or b"null")
        except ValueError as exc:
            raise ApiError("BAD_REQUEST", f"body is not JSON: {exc}") from None
        base = os.path.dirname(sup.config.source_path) if sup.config.source_path else None
        errors, warnings, inlined = manifest_problems(doc, base)
        if errors:
            return JSONResponse({"error": "invalid manifest: " + "; ".join(errors), "code": "VALIDATION_ERROR",
                                 "problems": errors}, status_code=400)
        if inlined:
            doc = {**doc, "templates": {**(doc.get("templates") or {}), **inlined}}
        actor, _ = actor_of(request)
        existed = await mgr.manifest() is not None
        record, changed = await mgr.put_manifest(doc, actor)
        pushed = sorted(n.id for n in sup.nodes.values() if n.status == "online") if changed else []
        data = {k: record[k] for k in ("version", "format", "digest", "actor")} | {
            "updated_at": iso(record["created_at"]), "changed": changed, "pushed_to": pushed, "warnings": warnings}
        return ok(data, status=200 if existed else 201)

    # ----- status, drift -----

    @app.get("/api/v1/env/status", dependencies=need[Role.viewer], tags=["env"])
    async def env_status() -> Any:
        man = await mgr.manifest()
        current = man["version"] if man else None
        rows = await sup.reader.run(q_status)
        out = [_status_row(r, current, getattr(sup.nodes.get(r["node_id"]), "status", None)) for r in rows]
        have = {(r["node_id"], r["project"]) for r in rows}
        for node in sorted(sup.nodes.values(), key=lambda n: n.id):
            for p in node.project_names:
                if (node.id, p) not in have:
                    out.append({"node_id": node.id, "project": p, "status": "unknown", "checked_at": None,
                                "manifest_version": None, "stale": current is not None, "summary": {},
                                "node_status": node.status, "error": None})
        out.sort(key=lambda r: (r["node_id"], r["project"]))
        pending = await sup.reader.run(lambda c: q_pending(c, statuses=("pending", "failed")))
        return ok(out, meta={"total": len(out), "manifest_version": current, "pending": len(pending)})

    @app.get("/api/v1/env/status/{node_id}", dependencies=need[Role.viewer], tags=["env"])
    async def env_status_node(node_id: str) -> Any:
        man = await mgr.manifest()
        current = man["version"] if man else None
        node = sup.nodes.get(node_id)
        if node is None:
            rows = await sup.reader.run(lambda c: q_status(c, project=node_id))
            if not rows and not any(node_id in n.project_names for n in sup.nodes.values()):
                raise ApiError("NOT_FOUND", f"node {node_id} not found (nor a project of that name)")
            return ok({"project": node_id, "nodes": [_status_row(r, current, getattr(
                sup.nodes.get(r["node_id"]), "status", None)) | {"items": r["result"].get("details", {}).get(
                    "drift", [])} for r in rows]})
        rows = await sup.reader.run(lambda c: q_status(c, node_id))
        pending = await sup.reader.run(lambda c: q_pending(c, node_id))
        runs = await sup.reader.run(lambda c: q_runs(c, node_id, 10))
        projects = [_status_row(r, current, node.status) | {"items": r["result"].get("details", {}).get("drift", [])}
                    for r in rows]
        return ok({"node_id": node_id, "node_status": node.status, "manifest_version": current,
                   "projects": projects, "pending": pending, "recent_runs": runs})

    @app.get("/api/v1/env/drift", dependencies=need[Role.viewer], tags=["env"])
    async def env_drift(node_id: str | None = None, project: str | None = None) -> Any:
        rows = await sup.reader.run(lambda c: q_status(c, node_id, project))
        drift = _drift_rows(rows)
        pending = await sup.reader.run(lambda c: q_pending(c, node_id, ("pending", "failed", "running")))
        if project:
            pending = [p for p in pending if p["project"] == project]
        nodes = sorted({d["node_id"] for d in drift})
        return ok(drift, meta={"total": len(drift), "nodes": nodes, "pending": pending})

    # ----- commands -----

    @app.post("/api/v1/env/check/{node_id}", dependencies=need[Role.operator], tags=["env"])
    async def env_check(node_id: str, request: Request, body: CheckBody | None = None) -> Any:
        node_or_404(node_id)
        actor, ip = actor_of(request)
        project = body.project if body else request.query_params.get("project")
        res = await mgr.check(node_id, project or None, actor=actor, ip=ip)
        raise_for(res)
        out = res.output if isinstance(res.output, dict) else {}
        results = out.get("results") or []
        return ok({"node_id": node_id, "command_id": res.command_id, "manifest_version": out.get("manifest_version"),
                   "status": _worst([r.get("status") for r in results]), "results": results})

    @app.post("/api/v1/env/provision/{node_id}", dependencies=need[Role.operator], tags=["env"])
    async def env_provision(node_id: str, request: Request, body: ProvisionBody | None = None) -> Any:
        node_or_404(node_id)
        body = body or ProvisionBody()
        actor, ip = actor_of(request)
        res = await mgr.provision(node_id, body.project, dry_run=body.dry_run, force=body.force, actor=actor, ip=ip)
        raise_for(res)
        out = res.output if isinstance(res.output, dict) else {}
        return ok({"node_id": node_id, "command_id": res.command_id, "dry_run": body.dry_run,
                   "manifest_version": out.get("manifest_version"), "results": out.get("results") or []})

    @app.post("/api/v1/env/approve/{node_id}", dependencies=need[Role.admin], tags=["env"])
    async def env_approve(node_id: str, body: ApproveBody, request: Request) -> Any:
        node_or_404(node_id)
        actor, _ = actor_of(request)
        return ok(await mgr.approve(node_id, body.item, actor, dry_run=body.dry_run))

    # ----- AGENT.md -----

    async def agentmd(ctype: str, project: str, node_id: str | None, request: Request) -> Any:
        actor, ip = actor_of(request)
        target_node = mgr.resolve(ctype, CommandTarget(node_id=node_id or None, project=project))
        res = await mgr.send(ctype, target_node, project, actor=actor, ip=ip, timeout=AGENTMD_TIMEOUT)
        raise_for(res)
        out = dict(res.output) if isinstance(res.output, dict) else {}
        return ok(out | {"node_id": res.node_id, "command_id": res.command_id})

    @app.get("/api/v1/agent-md/{project}", dependencies=need[Role.viewer], tags=["agent-md"])
    async def agentmd_show(project: str, request: Request, node_id: str | None = None) -> Any:
        return await agentmd("agentmd_show", project, node_id, request)

    @app.get("/api/v1/agent-md/{project}/diff", dependencies=need[Role.viewer], tags=["agent-md"])
    async def agentmd_diff(project: str, request: Request, node_id: str | None = None) -> Any:
        return await agentmd("agentmd_diff", project, node_id, request)

    @app.get("/api/v1/agent-md/{project}/template", dependencies=need[Role.viewer], tags=["agent-md"])
    async def agentmd_template(project: str) -> Any:
        man = await mgr.manifest()
        req = requirements_for(man["document"] if man else {"projects": {}}, project)
        from halswarm.core.manifest.templates import sha256_text

        return ok({"project": project, "template": req.agent_md_template, "content": req.agent_md_text,
                   "sha256": sha256_text(req.agent_md_text), "manifest_version": man["version"] if man else None})

    @app.post("/api/v1/agent-md/sync", dependencies=need[Role.operator], tags=["agent-md"])
    async def agentmd_sync(request: Request, body: SyncBody | None = None) -> Any:
        body = body or SyncBody()
        actor, ip = actor_of(request)
        nodes = [n for n in sorted(sup.nodes.values(), key=lambda n: n.id) if n.status == "online"
                 and (body.node_id is None or n.id == body.node_id)
                 and (body.project is None or body.project in n.project_names) and n.project_names]
        if not nodes:
            what = f"project {body.project}" if body.project else "any project"
            raise ApiError("NOT_FOUND", f"no online node has {what}")
        out: list[dict[str, Any]] = []

        async def one(node_id: str) -> None:
            res = await mgr.send("agentmd_sync", node_id, body.project, actor=actor, ip=ip, timeout=AGENTMD_TIMEOUT,
                                 force=body.force)
            if res.status != "success" or not isinstance(res.output, dict):
                out.append({"node_id": node_id, "project": body.project, "status": "failed",
                            "message": res.error or res.status, "command_id": res.command_id})
                return
            for r in res.output.get("results") or []:
                out.append({"node_id": node_id, **r, "command_id": res.command_id})

        await asyncio.gather(*(one(n.id) for n in nodes))
        out.sort(key=lambda r: (r["node_id"], str(r.get("project"))))
        counts = {s: sum(1 for r in out if r.get("status") == s) for s in ("synced", "already_synced", "modified",
                                                                          "failed")}
        synced = [sup.ingestor.emit(r["node_id"], "agentmd.synced", {"project": r.get("project"), "actor": actor,
                                                                      "message": r.get("message")},
                                    project=r.get("project"), track=True)
                  for r in out if r.get("status") == "synced"]
        if synced:
            await sup.ingestor.stored(synced)
        return ok(out, meta={"total": len(out), **counts})

    try:
        mgr.start()
    except RuntimeError:  # no running loop (app built outside the supervisor): no watcher
        log.debug("no event loop: env manifest watcher not started")


def _worst(statuses: list[Any]) -> str:
    order = ["missing", "degraded", "ready"]
    present = [s for s in statuses if s in order]
    return min(present, key=order.index) if present else "unknown"
