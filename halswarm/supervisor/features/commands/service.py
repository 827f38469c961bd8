"""Any agent command by type: waited for, or started in the background; and their stored outcome."""

from __future__ import annotations

from typing import Any

from halswarm.core.roles import Identity, command_role
from halswarm.protocol import CommandTarget
from halswarm.store.reader import Reader
from halswarm.store.repos.commands import get_command
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.runtime.commands import CommandRunner
from halswarm.supervisor.runtime.dispatcher import CommandError, normalize_type


def target_of(t: str | dict[str, str] | None, args: dict[str, Any]) -> CommandTarget:
    """The body's `target` (a project name or {node_id, project, session_id}); without one, the
    `session_id` of the arguments."""
    if t is None:
        sid = args.get("session_id")
        return CommandTarget(session_id=sid) if isinstance(sid, str) and sid else CommandTarget()
    if isinstance(t, str):
        return CommandTarget(project=t)
    unknown = set(t) - {"node_id", "project", "session_id"}
    if unknown:
        raise ApiError("VALIDATION_ERROR", f"target: unknown keys {sorted(unknown)}")
    target = CommandTarget(node_id=t.get("node_id"), project=t.get("project"), session_id=t.get("session_id"))
    if not (target.node_id or target.project or target.session_id):
        return target_of(None, args)
    return target


class CommandsService:
    def __init__(self, commands: CommandRunner, reader: Reader) -> None:
        self.commands = commands
        self.reader = reader

    def check_role(self, identity: Identity, ctype: str) -> None:
        """Any type goes through one route: credential types need an admin like their own routes."""
        try:
            needed = command_role(normalize_type(ctype))
        except CommandError:
            return  # unknown type: the dispatcher refuses it with its own message
        if not identity.allows(needed):
            raise ApiError("FORBIDDEN",
                           f"{identity.name} has role {identity.role.name}; command {ctype} needs {needed.name}")

    async def run(self, identity: Identity, ctype: str, target: CommandTarget, args: dict[str, Any], *,
                  wait: bool, timeout: float | None, idempotency_key: str | None, actor: str,
                  ip: str | None) -> dict[str, Any]:
        self.check_role(identity, ctype)
        kw: dict[str, Any] = {"actor": actor, "ip": ip, "idempotency_key": idempotency_key, "timeout": timeout}
        if not wait:
            return {"command_id": await self.commands.background(ctype, target, args, **kw), "status": "pending"}
        return (await self.commands.run_and_apply(ctype, target, args, **kw)).to_api()

    async def get(self, command_id: str) -> dict[str, Any]:
        row = await self.reader.run(lambda c: get_command(c, command_id))
        if row is None:
            raise ApiError("NOT_FOUND", f"command {command_id} not found")
        return row
