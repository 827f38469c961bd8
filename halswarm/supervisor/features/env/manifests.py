"""The current manifest and the env commands that carry it.

Every env command names the current manifest (``args.manifest_version`` + ``args.manifest_digest``) and
carries the document itself (``args.manifest``) unless the node is known to hold it (its last answer, or
the ``env`` capabilities it registered with); an agent that holds another one answers
``manifest_outdated`` and gets it resent once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from halswarm.core.manifest.requirements import detect_format, digest, requirements_for
from halswarm.core.manifest.risky import RiskyCommand, risky_command
from halswarm.core.model import Node
from halswarm.protocol import CommandTarget
from halswarm.store.reader import Reader
from halswarm.store.repos import env as repo
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.runtime.dispatcher import CommandError, Dispatcher, Result


class EnvManifests:
    def __init__(self, reader: Reader, writer: Writer, dispatcher: Dispatcher, nodes: dict[str, Node]) -> None:
        self.reader, self.writer, self.dispatcher, self.nodes = reader, writer, dispatcher, nodes
        self._manifest: dict[str, Any] | None = None
        self._loaded = False
        self._node_digest: dict[str, Any] = {}  # node -> digest of the manifest it last said it holds
        self._lock = asyncio.Lock()

    async def current(self) -> dict[str, Any] | None:
        """The stored manifest record (version, document, format, digest, actor, created_at), or None."""
        if not self._loaded:
            self._manifest = await self.reader.run(repo.latest_manifest)
            self._loaded = True
        return self._manifest

    async def store(self, doc: dict[str, Any], actor: str) -> tuple[dict[str, Any], bool]:
        """Store ``doc`` (already validated) unless it is the current one; (record, changed)."""
        fmt, dg = detect_format(doc), digest(doc)
        async with self._lock:
            current = await self.current()
            if current is not None and current["digest"] == dg:
                return current, False
            record = await self.writer.run(lambda c: repo.add_manifest(c, doc, fmt, dg, actor))
            self._manifest, self._loaded = record, True
        assert record is not None
        return record, True

    def forget_node(self, node_id: str) -> None:
        """The node may hold anything now (it went away, or registered again): send it the manifest."""
        self._node_digest.pop(node_id, None)

    async def args_for(self, node_id: str, **extra: Any) -> dict[str, Any]:
        """Command args for ``node_id``: the manifest's version and digest always, the manifest itself only
        when the node is not known to hold it (its last answer, or its registration's capabilities)."""
        man = await self.current()
        args = {k: v for k, v in extra.items() if v is not None}
        if man is None:
            return args
        args |= {"manifest_version": man["version"], "manifest_digest": man["digest"]}
        known = self._node_digest.get(node_id)
        if known is None:
            node = self.nodes.get(node_id)
            caps = node.capabilities.get("env") if node is not None and isinstance(node.capabilities, dict) else None
            known = caps.get("manifest_digest") if isinstance(caps, dict) else None
        if known != man["digest"]:
            args["manifest"] = man["document"]
        return args

    async def dispatch(self, ctype: str, target: CommandTarget, args: dict[str, Any], *, actor: str,
                       ip: str | None = None, timeout: float) -> Result:
        try:
            return await self.dispatcher.dispatch(ctype, target, args, actor=actor, ip=ip, timeout=timeout)
        except CommandError as exc:
            raise ApiError(exc.code, exc.message) from None

    def resolve(self, ctype: str, target: CommandTarget) -> str:
        """The node a command of ``ctype`` to ``target`` would go to (or the API error why none)."""
        try:
            return self.dispatcher.resolve(ctype, target)
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
            man = await self.current()
            self._node_digest.pop(node_id, None)
            if man is not None:
                res = await self.dispatch(ctype, target, args | {"manifest": man["document"]}, actor=actor, ip=ip,
                                          timeout=timeout)
        if res.status == "success" and isinstance(res.output, dict) and "manifest_digest" in res.output:
            self._node_digest[node_id] = res.output["manifest_digest"]
        return res

    async def rebuild(self, node_id: str, project: str, category: str, item: str, *,
                      missing: bool) -> RiskyCommand | None:
        """The command for a risky item from the supervisor's OWN stored manifest (never the agent's text)."""
        man = await self.current()
        if man is None or not isinstance(man.get("document"), dict):
            return None
        node = self.nodes.get(node_id)
        directory = next((str(p.get("directory") or "") for p in (node.projects if node else [])
                          if p.get("name") == project), "")
        return risky_command(requirements_for(man["document"], project), category, item, directory=directory,
                             missing=missing)
