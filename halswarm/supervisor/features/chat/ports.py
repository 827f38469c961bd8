"""What chat commands act on, as typed ports: the composition root passes the same services the HTTP
features use (a feature never imports another), so a chat command and its HTTP route share one path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from halswarm.core.model import Node, Session
from halswarm.core.paging import Page, PageRequest


class SessionsPort(Protocol):
    async def page(self, project: str | None, status: str | None, node_id: str | None,
                   req: PageRequest) -> tuple[Page[Session], int]: ...

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


class CostPort(Protocol):
    async def report(self, period: str) -> tuple[dict[str, Any], dict[str, Any]]: ...


class EnvPort(Protocol):
    async def drift(self, node_id: str | None, project: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        ...


class RemediatePort(Protocol):
    async def request(self, incident: str, host: str | None, *, check: bool, actor: str) -> dict[str, Any]: ...


class ApprovalsPort(Protocol):
    async def page(self, req: PageRequest, *, node_id: str | None = None, session_id: str | None = None,
                   project: str | None = None) -> tuple[Page[dict[str, Any]], int, float]: ...

    async def reply(self, approval_id: str, reply: str, message: str | None, *, actor: str,
                    ip: str | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ChatPorts:
    sessions: SessionsPort
    nodes: NodesPort
    events: EventsPort
    cost: CostPort
    env: EnvPort
    remediate: RemediatePort
    approvals: ApprovalsPort
    connected: Callable[[], int]  # agents connected to the hub now
