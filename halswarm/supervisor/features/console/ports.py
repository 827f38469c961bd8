"""What the console reads and acts on, as typed ports: the composition root passes the very services the
HTTP API uses (a feature never imports another), so a button and its API route share one path, its
checks and its audit row."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from halswarm.core.model import Node, Session
from halswarm.core.paging import Page, PageRequest


class SessionsPort(Protocol):
    async def page(self, project: str | None, status: str | None, node_id: str | None, req: PageRequest, *,
                   q: str | None = None) -> tuple[Page[Session], int]: ...

    async def get(self, session_id: str) -> Session: ...

    async def create(self, project: str, prompt: str | None, model: str | None, node_id: str | None,
                     idempotency_key: str | None, *, actor: str, ip: str | None) -> dict[str, Any]: ...

    async def prompt(self, session_id: str, message: str, idempotency_key: str | None, *, actor: str,
                     ip: str | None) -> dict[str, Any]: ...

    async def act(self, session_id: str, action: str, *, actor: str, ip: str | None) -> dict[str, Any]: ...


class NodesPort(Protocol):
    async def page(self, status: str | None, project: str | None, req: PageRequest) -> tuple[Page[Node], int]: ...


class EventsPort(Protocol):
    async def page(self, filters: dict[str, Any], req: PageRequest,
                   order: str) -> tuple[Page[dict[str, Any]], int, bool]: ...

    def stream(self, filters: dict[str, Any], last_seen: int | None = None) -> AsyncIterator[bytes]: ...


class ApprovalsPort(Protocol):
    async def page(self, req: PageRequest, *, node_id: str | None = None, session_id: str | None = None,
                   project: str | None = None) -> tuple[Page[dict[str, Any]], int, float]: ...

    async def reply(self, approval_id: str, reply: str, message: str | None, *, actor: str,
                    ip: str | None = None) -> dict[str, Any]: ...


class CostPort(Protocol):
    async def report(self, period: str) -> tuple[dict[str, Any], dict[str, Any]]: ...


class RemediationsPort(Protocol):
    async def history(self, *, incident: str | None, status: str | None, host: str | None, since: float | None,
                      limit: int, offset: int) -> tuple[list[dict[str, Any]], int]: ...


class RemediatePort(Protocol):
    async def request(self, incident: str, host: str | None, *, check: bool, actor: str) -> dict[str, Any]: ...


class AuditPort(Protocol):
    async def page(self, actor: str | None, action: str | None, since: float | None,
                   req: PageRequest) -> tuple[Page[dict[str, Any]], int, bool]: ...


class EnvPort(Protocol):
    async def drift(self, node_id: str | None, project: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        ...


@dataclass(frozen=True)
class ConsolePorts:
    sessions: SessionsPort
    nodes: NodesPort
    events: EventsPort
    approvals: ApprovalsPort
    cost: CostPort
    remediations: RemediationsPort
    remediate: RemediatePort
    audit: AuditPort
    env: EnvPort
