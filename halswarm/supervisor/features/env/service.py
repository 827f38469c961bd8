"""What the env routes ask for: the manifest (read, validate and store, then push), the stored status and
drift, and a check, provision or approval of one node."""

from __future__ import annotations

from typing import Any

from halswarm.core.manifest.requirements import project_names
from halswarm.core.model import Node
from halswarm.core.timeutil import iso
from halswarm.store.reader import Reader
from halswarm.store.repos import env as repo
from halswarm.supervisor.apikit.commands import raise_for
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.env.approvals import EnvApprovals
from halswarm.supervisor.features.env.checks import EnvChecks, non_pass
from halswarm.supervisor.features.env.manifests import EnvManifests
from halswarm.supervisor.features.env.settings import EnvSettings
from halswarm.supervisor.features.env.validation import manifest_problems
from halswarm.supervisor.features.env.watcher import EnvWatcher
from halswarm.supervisor.runtime.ingest import Ingestor

MANIFEST_META = ("version", "format", "digest", "actor")
DRIFT_FIELDS = ("category", "item", "expected", "actual", "status", "fix", "drift", "detail")


class InvalidManifest(Exception):
    """The manifest was refused; ``problems`` are its ``PATH: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid manifest: " + "; ".join(problems))
        self.problems = problems


def status_row(r: dict[str, Any], current: int | None, node_status: str | None) -> dict[str, Any]:
    res = r["result"]
    return {"node_id": r["node_id"], "project": r["project"], "status": r["status"],
            "checked_at": iso(r["checked_at"]), "manifest_version": r["manifest_version"],
            "stale": current is not None and r["manifest_version"] != current,
            "summary": res.get("summary") or {}, "node_status": node_status, "error": res.get("error")}


def drift_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per item that did not pass, of every stored check."""
    out = []
    for r in rows:
        for item in non_pass(r["result"]).values():
            out.append({"node_id": r["node_id"], "project": r["project"], **{k: item.get(k) for k in DRIFT_FIELDS},
                        "checked_at": iso(r["checked_at"])})
    return out


def worst(statuses: list[Any]) -> str:
    order = ["missing", "degraded", "ready"]
    present = [s for s in statuses if s in order]
    return min(present, key=order.index) if present else "unknown"


class EnvService:
    def __init__(self, manifests: EnvManifests, checks: EnvChecks, approvals: EnvApprovals, watcher: EnvWatcher,
                 reader: Reader, ingestor: Ingestor, nodes: dict[str, Node], settings: EnvSettings) -> None:
        self.manifests, self.checks, self.approvals, self.watcher = manifests, checks, approvals, watcher
        self.reader, self.ingestor, self.nodes, self.settings = reader, ingestor, nodes, settings

    def _node(self, node_id: str) -> Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise ApiError("NOT_FOUND", f"node {node_id} not found")
        return node

    def _node_status(self, node_id: str) -> str | None:
        return getattr(self.nodes.get(node_id), "status", None)

    # ----- manifest -----

    async def manifest(self) -> tuple[Any, dict[str, Any]]:
        """(document, meta) of the current manifest."""
        man = await self.manifests.current()
        if man is None:
            raise ApiError("NOT_FOUND", "no environment manifest stored yet (PUT /api/v1/env/manifest)")
        return man["document"], {k: man[k] for k in MANIFEST_META} | {"updated_at": iso(man["created_at"])}

    async def put_manifest(self, doc: Any, actor: str) -> tuple[dict[str, Any], bool]:
        """Validate and store ``doc`` (templates it names by file inlined), report it and push it to every
        online node if it changed; (answer, created: there was no manifest before)."""
        errors, warnings, inlined = manifest_problems(doc, self.settings.template_dir)
        if errors:
            raise InvalidManifest(errors)
        if inlined:
            doc = {**doc, "templates": {**(doc.get("templates") or {}), **inlined}}
        existed = await self.manifests.current() is not None
        record, changed = await self.manifests.store(doc, actor)
        if changed:
            await self.ingestor.emit_stored(None, "env.manifest.updated", {
                "version": record["version"], "format": record["format"], "digest": record["digest"],
                "actor": actor, "projects": project_names(doc)})
            self.watcher.push_all("manifest_changed")
        pushed = sorted(n.id for n in self.nodes.values() if n.status == "online") if changed else []
        data = {k: record[k] for k in MANIFEST_META} | {
            "updated_at": iso(record["created_at"]), "changed": changed, "pushed_to": pushed, "warnings": warnings}
        return data, not existed

    # ----- status, drift -----

    async def status(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every node and project: its last check, or ``unknown``; (rows, meta)."""
        man = await self.manifests.current()
        current = man["version"] if man else None
        rows = await self.reader.run(repo.status_rows)
        out = [status_row(r, current, self._node_status(r["node_id"])) for r in rows]
        have = {(r["node_id"], r["project"]) for r in rows}
        for node in sorted(self.nodes.values(), key=lambda n: n.id):
            for p in node.project_names:
                if (node.id, p) not in have:
                    out.append({"node_id": node.id, "project": p, "status": "unknown", "checked_at": None,
                                "manifest_version": None, "stale": current is not None, "summary": {},
                                "node_status": node.status, "error": None})
        out.sort(key=lambda r: (r["node_id"], r["project"]))
        pending = await self.reader.run(lambda c: repo.pending_rows(c, statuses=("pending", "failed")))
        return out, {"total": len(out), "manifest_version": current, "pending": len(pending)}

    async def status_of(self, node_id: str) -> dict[str, Any]:
        """One node's checks, pending items and recent runs; or, when no node has that id, the project of
        that name on every node."""
        man = await self.manifests.current()
        current = man["version"] if man else None
        node = self.nodes.get(node_id)
        if node is None:
            rows = await self.reader.run(lambda c: repo.status_rows(c, project=node_id))
            if not rows and not any(node_id in n.project_names for n in self.nodes.values()):
                raise ApiError("NOT_FOUND", f"node {node_id} not found (nor a project of that name)")
            return {"project": node_id, "nodes": [status_row(r, current, self._node_status(r["node_id"])) | {
                "items": r["result"].get("details", {}).get("drift", [])} for r in rows]}
        rows = await self.reader.run(lambda c: repo.status_rows(c, node_id))
        pending = await self.reader.run(lambda c: repo.pending_rows(c, node_id))
        runs = await self.reader.run(lambda c: repo.runs(c, node_id, 10))
        projects = [status_row(r, current, node.status) | {"items": r["result"].get("details", {}).get("drift", [])}
                    for r in rows]
        return {"node_id": node_id, "node_status": node.status, "manifest_version": current,
                "projects": projects, "pending": pending, "recent_runs": runs}

    async def drift(self, node_id: str | None, project: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rows = await self.reader.run(lambda c: repo.status_rows(c, node_id, project))
        drift = drift_rows(rows)
        pending = await self.reader.run(lambda c: repo.pending_rows(c, node_id, ("pending", "failed", "running")))
        if project:
            pending = [p for p in pending if p["project"] == project]
        nodes = sorted({d["node_id"] for d in drift})
        return drift, {"total": len(drift), "nodes": nodes, "pending": pending}

    # ----- commands -----

    async def check(self, node_id: str, project: str | None, *, actor: str, ip: str | None) -> dict[str, Any]:
        self._node(node_id)
        res = await self.checks.check(node_id, project, actor=actor, ip=ip)
        raise_for(res)
        out = res.output if isinstance(res.output, dict) else {}
        results = out.get("results") or []
        return {"node_id": node_id, "command_id": res.command_id, "manifest_version": out.get("manifest_version"),
                "status": worst([r.get("status") for r in results]), "results": results}

    async def provision(self, node_id: str, project: str | None, *, dry_run: bool, force: bool, actor: str,
                        ip: str | None) -> dict[str, Any]:
        self._node(node_id)
        res = await self.checks.provision(node_id, project, dry_run=dry_run, force=force, actor=actor, ip=ip)
        raise_for(res)
        out = res.output if isinstance(res.output, dict) else {}
        return {"node_id": node_id, "command_id": res.command_id, "dry_run": dry_run,
                "manifest_version": out.get("manifest_version"), "results": out.get("results") or []}

    async def approve(self, node_id: str, item: str, actor: str, *, dry_run: bool) -> dict[str, Any]:
        self._node(node_id)
        return await self.approvals.approve(node_id, item, actor, dry_run=dry_run)
