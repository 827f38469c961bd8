"""Approved risky env items run on the node through the Ansible collection (module
``halswarm.ops.hal_env_item``) with ansible-runner in a worker thread, against the inventory
``remediation.inventory`` (host = node id; how it is reached, e.g. ``ansible_connection: ssh`` with
``ansible_host``/``ansible_user``/a key, comes from the inventory). The command, ``become`` and ``check`` are
rebuilt from the supervisor's own manifest; the result is stored, reported (``env.approval.*``) and the
node's project is checked again.

SSH host keys are checked: ansible-runner turns that off unless ``ANSIBLE_HOST_KEY_CHECKING`` is set, so we
set it unless the supervisor's environment does; an inventory host opts out explicitly with
``ansible_host_key_checking: false``."""

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
from pathlib import Path
from typing import Any

from halswarm.core.model import Node
from halswarm.store.reader import Reader
from halswarm.store.repos import env as repo
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.env.checks import EnvChecks
from halswarm.supervisor.features.env.manifests import EnvManifests
from halswarm.supervisor.features.env.settings import EnvSettings
from halswarm.supervisor.runtime.ingest import Ingestor

log = logging.getLogger(__name__)

APPROVAL_TIMEOUT = 900
OUTPUT_TAIL = 4000
MODULE = "halswarm.ops.hal_env_item"
_SHELL_CHARS = re.compile(r"[|&;<>()$`\\*?\[\]{}~\n]")


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


def module_result(artifact_dir: Path) -> tuple[str, str, dict[str, Any]] | None:
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


class EnvApprovals:
    def __init__(self, manifests: EnvManifests, checks: EnvChecks, reader: Reader, writer: Writer,
                 ingestor: Ingestor, nodes: dict[str, Node], settings: EnvSettings) -> None:
        self.manifests, self.checks, self.reader, self.writer = manifests, checks, reader, writer
        self.ingestor, self.nodes, self.settings = ingestor, nodes, settings
        self._approving: set[tuple[str, str]] = set()  # (node, item) runs in flight

    async def approve(self, node_id: str, ref: str, actor: str, *, dry_run: bool = False) -> dict[str, Any]:
        """Run an approved item (``dry_run``: only show what would run where). The command, ``become`` and
        ``check`` are rebuilt from the supervisor's current manifest; what the agent reported is ignored."""
        rows = await self.reader.run(lambda c: repo.pending_rows(c, node_id))
        row = next((r for r in rows if ref in (r["id"], r["token"])), None)
        if row is None:
            raise ApiError("NOT_FOUND", f"no pending env item {ref!r} on node {node_id} (see `halctl env drift`)")
        if row["status"] == "succeeded" and not dry_run:
            return {"node_id": node_id, "item": row, "status": "succeeded", "result": row["result"], "replayed": True,
                    "run": (row["result"] or {}).get("run")}
        if row["status"] not in ("pending", "failed", "succeeded") or (node_id, row["id"]) in self._approving:
            raise ApiError("CONFLICT", f"env item {row['id']} on {node_id} is {row['status']}")
        built = await self.manifests.rebuild(node_id, row["project"], row["category"], row["item"],
                                             missing=bool(row["check"]))
        if built is None:
            raise ApiError("CONFLICT", f"env item {row['id']} is not in the supervisor's manifest: nothing to run "
                                       "(the supervisor runs only commands its own manifest defines)")
        row = row | {"command": built.command, "become": built.become, "check": built.check, "chdir": built.chdir}
        inventory = self.settings.inventory
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
            await self.ingestor.emit_stored(node_id, "env.approval.started", {
                "item": row["id"], "project": row["project"], "command": row["command"], "become": row["become"],
                "host": node_id, "actor": actor}, project=row["project"])
            result = await self._run_item(node_id, row, inventory)
            result["run"] = run
        finally:
            self._approving.discard((node_id, row["id"]))
        status = "succeeded" if result.get("ok") else "failed"
        await self._set_pending(node_id, row["id"], status, result)
        await self.writer.run(lambda c: repo.add_run(c, node_id, row["project"], "approval", status,
                                                     {"item": row["id"], **result}, actor, None))
        await self.ingestor.emit_stored(node_id, f"env.approval.{status}", {
            "item": row["id"], "project": row["project"], "category": row["category"], "command": row["command"],
            "rc": result.get("rc"), "changed": result.get("changed"), "message": result.get("msg"), "actor": actor},
            project=row["project"])
        check = None
        node = self.nodes.get(node_id)
        if status == "succeeded" and node is not None and node.status == "online":
            with contextlib.suppress(ApiError):
                res = await self.checks.check(node_id, row["project"], actor=actor)
                if res.status == "success" and isinstance(res.output, dict):
                    check = {k: res.output.get(k) for k in ("project", "status", "summary")}
        after = await self.reader.run(lambda c: repo.pending_rows(c, node_id))
        item = next((r for r in after if r["id"] == row["id"]), row)
        return {"node_id": node_id, "item": item, "status": status, "result": result, "check": check, "run": run}

    async def _set_pending(self, node_id: str, item_id: str, status: str, result: Any) -> None:
        await self.writer.run(lambda c: repo.set_pending(c, node_id, item_id, status, result))

    async def _run_item(self, node_id: str, row: dict[str, Any], inventory: str) -> dict[str, Any]:
        from halswarm.ops.runner import PlaybookRun, arun_playbook, host_address  # ansible-runner: only when used

        state = self.settings.approvals_dir
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
        task = await asyncio.to_thread(module_result, run.artifact_dir)
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
