"""AGENT.md of a project: what a node has (``agentmd_show``), how it differs from the manifest's template
(``agentmd_diff``), the template itself, and writing it to the projects' nodes (``agentmd_sync``, reported as
``agentmd.synced``)."""

from __future__ import annotations

import asyncio
from typing import Any

from halswarm.core.manifest.requirements import requirements_for
from halswarm.core.manifest.templates import sha256_text
from halswarm.core.model import Node
from halswarm.protocol import CommandTarget
from halswarm.supervisor.apikit.commands import raise_for
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.env.manifests import EnvManifests
from halswarm.supervisor.runtime.ingest import Ingestor

AGENTMD_TIMEOUT = 60.0
SYNC_STATUSES = ("synced", "already_synced", "modified", "failed")


class AgentMdService:
    def __init__(self, manifests: EnvManifests, ingestor: Ingestor, nodes: dict[str, Node]) -> None:
        self.manifests, self.ingestor, self.nodes = manifests, ingestor, nodes

    async def read(self, ctype: str, project: str, node_id: str | None, *, actor: str,
                   ip: str | None) -> dict[str, Any]:
        """``agentmd_show`` or ``agentmd_diff`` on the node of ``project`` (or on ``node_id``)."""
        target_node = self.manifests.resolve(ctype, CommandTarget(node_id=node_id or None, project=project))
        res = await self.manifests.send(ctype, target_node, project, actor=actor, ip=ip, timeout=AGENTMD_TIMEOUT)
        raise_for(res)
        out = dict(res.output) if isinstance(res.output, dict) else {}
        return out | {"node_id": res.node_id, "command_id": res.command_id}

    async def template(self, project: str) -> dict[str, Any]:
        man = await self.manifests.current()
        req = requirements_for(man["document"] if man else {"projects": {}}, project)
        return {"project": project, "template": req.agent_md_template, "content": req.agent_md_text,
                "sha256": sha256_text(req.agent_md_text), "manifest_version": man["version"] if man else None}

    async def sync(self, project: str | None, node_id: str | None, *, force: bool, actor: str,
                   ip: str | None) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Write the template on every online node with the project (or ``node_id``); (rows, counts)."""
        nodes = [n for n in sorted(self.nodes.values(), key=lambda n: n.id) if n.status == "online"
                 and (node_id is None or n.id == node_id)
                 and (project is None or project in n.project_names) and n.project_names]
        if not nodes:
            what = f"project {project}" if project else "any project"
            raise ApiError("NOT_FOUND", f"no online node has {what}")
        out: list[dict[str, Any]] = []

        async def one(nid: str) -> None:
            res = await self.manifests.send("agentmd_sync", nid, project, actor=actor, ip=ip,
                                            timeout=AGENTMD_TIMEOUT, force=force)
            if res.status != "success" or not isinstance(res.output, dict):
                out.append({"node_id": nid, "project": project, "status": "failed",
                            "message": res.error or res.status, "command_id": res.command_id})
                return
            for r in res.output.get("results") or []:
                out.append({"node_id": nid, **r, "command_id": res.command_id})

        await asyncio.gather(*(one(n.id) for n in nodes))
        out.sort(key=lambda r: (r["node_id"], str(r.get("project"))))
        counts = {s: sum(1 for r in out if r.get("status") == s) for s in SYNC_STATUSES}
        synced = [self.ingestor.emit(r["node_id"], "agentmd.synced", {"project": r.get("project"), "actor": actor,
                                                                       "message": r.get("message")},
                                     project=r.get("project"), track=True)
                  for r in out if r.get("status") == "synced"]
        if synced:
            await self.ingestor.stored(synced)
        return out, counts
