"""Env checks and provisions of a node, and what their results become: stored rows (``env_status``,
``env_runs``, ``env_pending``) and routed events (``env.check.fail`` when a project's failing items change
and it is ``missing``; ``env.drift.detected`` for items that newly deviate; ``env.provisioned``;
``provision.manual_required`` when a new risky item waits for approval)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from halswarm.core.manifest.risky import approval_token
from halswarm.store.reader import Reader
from halswarm.store.repos import env as repo
from halswarm.store.writer import Writer
from halswarm.supervisor.features.env.manifests import EnvManifests
from halswarm.supervisor.runtime.dispatcher import Result
from halswarm.supervisor.runtime.ingest import Ingestor

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 120.0
PROVISION_TIMEOUT = 300.0


@dataclass
class _Seen:
    status: str
    non_pass: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)


def non_pass(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The items of a check result that did not pass, by ``category:item``."""
    items = (result.get("details") or {}).get("drift") or []
    return {f"{i.get('category')}:{i.get('item')}": i for i in items
            if isinstance(i, dict) and i.get("status") != "pass"}


class EnvChecks:
    def __init__(self, manifests: EnvManifests, reader: Reader, writer: Writer, ingestor: Ingestor) -> None:
        self.manifests, self.reader, self.writer, self.ingestor = manifests, reader, writer, ingestor
        self._seen: dict[tuple[str, str], _Seen] | None = None  # last check per (node, project), for events

    async def check(self, node_id: str, project: str | None, *, actor: str, ip: str | None = None) -> Result:
        res = await self.manifests.send("env_check", node_id, project, actor=actor, ip=ip, timeout=CHECK_TIMEOUT)
        if res.status == "success" and isinstance(res.output, dict):
            await self.record_checks(node_id, res.output.get("results") or [], actor, res.command_id,
                                     full=project is None)
        else:
            await self.writer.run(lambda c: repo.add_run(c, node_id, project, "check", res.status,
                                                         {"error": res.error}, actor, res.command_id))
        return res

    async def provision(self, node_id: str, project: str | None, *, dry_run: bool, force: bool, actor: str,
                        ip: str | None = None) -> Result:
        res = await self.manifests.send("env_provision", node_id, project, actor=actor, ip=ip,
                                        timeout=PROVISION_TIMEOUT, dry_run=dry_run, force=force)
        if res.status == "success" and isinstance(res.output, dict):
            await self.record_provision(node_id, res.output, actor, res.command_id)
        else:
            await self.writer.run(lambda c: repo.add_run(c, node_id, project, "provision", res.status,
                                                         {"error": res.error}, actor, res.command_id))
        return res

    # ----- recording -----

    async def _seen_map(self) -> dict[tuple[str, str], _Seen]:
        if self._seen is None:
            rows = await self.reader.run(repo.status_rows)
            self._seen = {}
            for r in rows:
                np = non_pass(r["result"])
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
            for p in [p for (n, p) in list(seen) if n == node_id and p not in keep]:
                seen.pop((node_id, p), None)
            await self.writer.run(lambda c: repo.forget_status(c, node_id, keep))
        if rows:
            await self.writer.run(lambda c: repo.store_checks(c, node_id, rows, actor, command_id, now))
        ids = [e for r in rows for e in self._events_for(node_id, r, seen, command_id)]
        if ids:
            await self.ingestor.stored(ids)

    def _events_for(self, node_id: str, r: dict[str, Any], seen: dict[tuple[str, str], _Seen],
                    command_id: str | None) -> list[str]:
        """Emit (tracked) the events this check result causes; their event ids."""
        project, status = r["project"], str(r.get("status") or "unknown")
        np = non_pass(r)
        failing = {k for k, i in np.items() if i.get("status") == "fail"}
        prev = seen.get((node_id, project))
        new = sorted(set(np) - (prev.non_pass if prev else set()))
        base = {"project": project, "status": status, "manifest_version": r.get("manifest_version"),
                "command_id": command_id}
        ids = []
        if status == "missing" and (prev is None or prev.failing != failing or prev.status != status):
            ids.append(self.ingestor.emit(node_id, "env.check.fail", base | {"failed": sorted(failing)},
                                          project=project, track=True))
        if new:
            items = [{k: np[key].get(k) for k in ("category", "item", "expected", "actual", "status", "drift")}
                     for key in new]
            ids.append(self.ingestor.emit(node_id, "env.drift.detected", base | {"items": items},
                                          project=project, track=True))
        seen[(node_id, project)] = _Seen(status, set(np), failing)
        return ids

    async def _trusted_pending(self, node_id: str, project: str, p: dict[str, Any]) -> dict[str, Any]:
        """A reported pending item with its command, become, check and chdir replaced by the rebuilt ones."""
        category, item = str(p.get("category")), str(p.get("item"))
        built = await self.manifests.rebuild(node_id, project, category, item, missing=bool(p.get("check")))
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
        new_pending: list[Mapping[str, Any]] = []

        def job(c: Any) -> None:
            for r in results:
                repo.add_run(c, node_id, r["project"], "provision_dry_run" if dry else "provision",
                             str(r.get("status")), r, actor, command_id)
                if dry:
                    continue
                pending = [trusted[(r["project"], p["id"])] for p in (r.get("details") or {}).get("pending") or []
                           if isinstance(p, dict) and (r["project"], p.get("id")) in trusted]
                new_pending.extend(repo.offer_pending(c, node_id, r["project"], pending, now))

        if results:
            await self.writer.run(job)
        if checks:
            await self.record_checks(node_id, checks, actor, command_id)
        ids = []
        for r in results:
            if not dry and r.get("changes"):
                ids.append(self.ingestor.emit(node_id, "env.provisioned", {
                    "project": r["project"], "status": r.get("status"), "changes": r.get("changes"),
                    "actor": actor, "command_id": command_id}, project=r["project"], track=True))
        for p in new_pending:
            ids.append(self.ingestor.emit(node_id, "provision.manual_required", {
                "project": p.get("project"), "item": p.get("id"), "category": p.get("category"),
                "approval_token": p.get("token"), "command": p.get("command"), "reason": p.get("reason"),
                "approve": f"halctl env approve {node_id} {p.get('id')}"}, project=p.get("project"), track=True))
        if ids:
            await self.ingestor.stored(ids)
