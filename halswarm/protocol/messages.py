"""Typed payloads of every message in SPEC section 4.

Each class knows its wire `TYPE`, how to build itself from a decoded JSON payload
(`from_payload`, raising ProtocolError on a bad shape) and how to turn itself back into
JSON-ready data (`to_payload`). Field names are the wire names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from halswarm.core.agent_vitals import parse_vitals
from halswarm.protocol.errors import BAD_PAYLOAD, ProtocolError

RESOURCE_KEYS = ("cpu_percent", "ram_used_mb", "ram_total_mb", "disk_used_gb", "disk_total_gb")
COMMAND_STATUSES = frozenset({"success", "failure", "timeout"})


def _obj(payload: Any, type_name: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ProtocolError(BAD_PAYLOAD, f"{type_name}: payload must be an object")
    return payload


def _str(d: dict[str, Any], key: str, type_name: str, *, required: bool = True) -> str | None:
    value = d.get(key)
    if value is None:
        if required:
            raise ProtocolError(BAD_PAYLOAD, f"{type_name}: '{key}' is required")
        return None
    if not isinstance(value, str):
        raise ProtocolError(BAD_PAYLOAD, f"{type_name}: '{key}' must be a string")
    if required and not value:
        raise ProtocolError(BAD_PAYLOAD, f"{type_name}: '{key}' must not be empty")
    return value


def _int(d: dict[str, Any], key: str, type_name: str, *, default: int | None = None, minimum: int = 0) -> int:
    value = d.get(key, default)
    if value is None:
        raise ProtocolError(BAD_PAYLOAD, f"{type_name}: '{key}' is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(BAD_PAYLOAD, f"{type_name}: '{key}' must be an integer")
    if value < minimum:
        raise ProtocolError(BAD_PAYLOAD, f"{type_name}: '{key}' must be >= {minimum}")
    return value


def _num(d: dict[str, Any], key: str, type_name: str, default: float | None = None) -> float | None:
    value = d.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(BAD_PAYLOAD, f"{type_name}: '{key}' must be a number")
    return float(value)


def _resources(value: Any, type_name: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(BAD_PAYLOAD, f"{type_name}: 'resources' must be an object")
    out: dict[str, float] = {}
    for key in RESOURCE_KEYS:
        num = _num(value, key, f"{type_name}.resources")
        if num is not None:
            out[key] = num
    return out


@dataclass(slots=True, frozen=True)
class ProjectRef:
    name: str
    directory: str


@dataclass(slots=True)
class Register:
    TYPE: ClassVar[str] = "register"
    node_id: str
    hostname: str = ""
    version: str = ""
    projects: list[ProjectRef] = field(default_factory=list)
    capabilities: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    last_acked_seq: int = 0

    @classmethod
    def from_payload(cls, payload: Any) -> Register:
        d = _obj(payload, cls.TYPE)
        projects_raw = d.get("projects") or []
        if not isinstance(projects_raw, list):
            raise ProtocolError(BAD_PAYLOAD, "register: 'projects' must be a list")
        projects = []
        for i, p in enumerate(projects_raw):
            if not isinstance(p, dict):
                raise ProtocolError(BAD_PAYLOAD, f"register: projects[{i}] must be an object")
            name = _str(p, "name", f"register.projects[{i}]")
            directory = _str(p, "directory", f"register.projects[{i}]", required=False) or ""
            projects.append(ProjectRef(name or "", directory))
        sessions = d.get("sessions") or []
        if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
            raise ProtocolError(BAD_PAYLOAD, "register: 'sessions' must be a list of objects")
        for i, s in enumerate(sessions):
            sid = s.get("id", s.get("session_id"))
            if not isinstance(sid, str) or not sid:
                raise ProtocolError(BAD_PAYLOAD, f"register: sessions[{i}] needs a string 'id'")
        caps = d.get("capabilities") or {}
        if isinstance(caps, list):  # tolerate a plain list of tool names
            caps = {str(c): True for c in caps}
        if not isinstance(caps, dict):
            raise ProtocolError(BAD_PAYLOAD, "register: 'capabilities' must be an object")
        return cls(
            node_id=_str(d, "node_id", cls.TYPE) or "",
            hostname=_str(d, "hostname", cls.TYPE, required=False) or "",
            version=_str(d, "version", cls.TYPE, required=False) or "",
            projects=projects,
            capabilities=caps,
            resources=_resources(d.get("resources"), cls.TYPE),
            sessions=sessions,
            last_acked_seq=_int(d, "last_acked_seq", cls.TYPE, default=0),
        )

    def to_payload(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "hostname": self.hostname,
            "version": self.version,
            "projects": [{"name": p.name, "directory": p.directory} for p in self.projects],
            "capabilities": self.capabilities,
            "resources": self.resources,
            "sessions": self.sessions,
            "last_acked_seq": self.last_acked_seq,
        }


@dataclass(slots=True)
class Registered:
    TYPE: ClassVar[str] = "registered"
    node_id: str
    resume_from_seq: int
    heartbeat_interval_sec: int
    credential_version: int | None = None

    @classmethod
    def from_payload(cls, payload: Any) -> Registered:
        d = _obj(payload, cls.TYPE)
        cv = d.get("credential_version")
        if cv is not None and (isinstance(cv, bool) or not isinstance(cv, int)):
            raise ProtocolError(BAD_PAYLOAD, "registered: 'credential_version' must be an integer")
        return cls(
            node_id=_str(d, "node_id", cls.TYPE) or "",
            resume_from_seq=_int(d, "resume_from_seq", cls.TYPE),
            heartbeat_interval_sec=_int(d, "heartbeat_interval_sec", cls.TYPE, minimum=1),
            credential_version=cv,
        )

    def to_payload(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "resume_from_seq": self.resume_from_seq,
            "heartbeat_interval_sec": self.heartbeat_interval_sec,
            "credential_version": self.credential_version,
        }


@dataclass(slots=True, frozen=True)
class OutboxStats:
    """The agent's outbox in a heartbeat: events waiting for an ack, the bound, events refused so far
    (since the agent started; refused = never stored, never sent)."""

    pending: int
    max_events: int
    refused_total: int = 0

    @classmethod
    def from_payload(cls, value: Any) -> OutboxStats:
        where = "heartbeat.outbox"
        if not isinstance(value, dict):
            raise ProtocolError(BAD_PAYLOAD, "heartbeat: 'outbox' must be an object")
        return cls(
            pending=_int(value, "pending", where),
            max_events=_int(value, "max_events", where, minimum=1),
            refused_total=_int(value, "refused_total", where, default=0),
        )

    def to_payload(self) -> dict[str, int]:
        return {"pending": self.pending, "max_events": self.max_events, "refused_total": self.refused_total}


@dataclass(slots=True)
class Heartbeat:
    TYPE: ClassVar[str] = "heartbeat"
    resources: dict[str, float] = field(default_factory=dict)
    outbox: OutboxStats | None = None  # optional: agents before it send none
    # Optional: the agent's own figures (halswarm.core.agent_vitals.VITAL_KEYS). Lenient on purpose: a bad
    # or unknown value is dropped, never an error, so the heartbeat (liveness) always counts.
    process: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: Any) -> Heartbeat:
        d = _obj(payload if payload is not None else {}, cls.TYPE)
        ob = d.get("outbox")
        return cls(
            resources=_resources(d.get("resources"), cls.TYPE),
            outbox=OutboxStats.from_payload(ob) if ob is not None else None,
            process=parse_vitals(d.get("process")),
        )

    def to_payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resources": self.resources}
        if self.outbox is not None:
            out["outbox"] = self.outbox.to_payload()
        if self.process:
            out["process"] = dict(self.process)
        return out


@dataclass(slots=True)
class Event:
    TYPE: ClassVar[str] = "event"
    seq: int
    event_id: str
    type: str
    session_id: str | None = None
    project: str | None = None
    data: Any = None
    timestamp: float = 0.0

    @classmethod
    def from_payload(cls, payload: Any) -> Event:
        # Hot path (every agent event): one pass of plain type checks, the general helpers only
        # when something is off, so their error messages stay the same.
        if type(payload) is dict:
            seq = payload.get("seq")
            eid = payload.get("event_id")
            typ = payload.get("type")
            sid = payload.get("session_id")
            proj = payload.get("project")
            ts = payload.get("timestamp", 0.0)
            if (
                type(seq) is int and seq >= 1 and type(eid) is str and eid and type(typ) is str and typ
                and (sid is None or type(sid) is str) and (proj is None or type(proj) is str)
                and (type(ts) is float or type(ts) is int)
            ):
                return cls(seq, eid, typ, sid, proj, payload.get("data"), float(ts))
        d = _obj(payload, cls.TYPE)
        ts = _num(d, "timestamp", cls.TYPE, default=0.0)
        return cls(
            seq=_int(d, "seq", cls.TYPE, minimum=1),
            event_id=_str(d, "event_id", cls.TYPE) or "",
            type=_str(d, "type", cls.TYPE) or "",
            session_id=_str(d, "session_id", cls.TYPE, required=False),
            project=_str(d, "project", cls.TYPE, required=False),
            data=d.get("data"),
            timestamp=ts or 0.0,
        )

    def to_payload(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "session_id": self.session_id,
            "project": self.project,
            "type": self.type,
            "data": self.data,
            "timestamp": self.timestamp,
        }


@dataclass(slots=True)
class Ack:
    TYPE: ClassVar[str] = "ack"
    seq: int

    @classmethod
    def from_payload(cls, payload: Any) -> Ack:
        return cls(seq=_int(_obj(payload, cls.TYPE), "seq", cls.TYPE))

    def to_payload(self) -> dict[str, Any]:
        return {"seq": self.seq}


@dataclass(slots=True, frozen=True)
class CommandTarget:
    node_id: str | None = None
    project: str | None = None
    session_id: str | None = None

    def to_payload(self) -> dict[str, str]:
        out = {}
        if self.node_id:
            out["node_id"] = self.node_id
        if self.project:
            out["project"] = self.project
        if self.session_id:
            out["session_id"] = self.session_id
        return out


@dataclass(slots=True)
class Command:
    TYPE: ClassVar[str] = "command"
    command_id: str
    type: str
    target: CommandTarget = field(default_factory=CommandTarget)
    args: dict[str, Any] = field(default_factory=dict)
    timeout_ms: int = 30_000

    @classmethod
    def from_payload(cls, payload: Any) -> Command:
        d = _obj(payload, cls.TYPE)
        target_raw = d.get("target") or {}
        if not isinstance(target_raw, dict):
            raise ProtocolError(BAD_PAYLOAD, "command: 'target' must be an object")
        args = d.get("args") or {}
        if not isinstance(args, dict):
            raise ProtocolError(BAD_PAYLOAD, "command: 'args' must be an object")
        return cls(
            command_id=_str(d, "command_id", cls.TYPE) or "",
            type=_str(d, "type", cls.TYPE) or "",
            target=CommandTarget(
                node_id=_str(target_raw, "node_id", "command.target", required=False),
                project=_str(target_raw, "project", "command.target", required=False),
                session_id=_str(target_raw, "session_id", "command.target", required=False),
            ),
            args=args,
            timeout_ms=_int(d, "timeout_ms", cls.TYPE, default=30_000, minimum=1),
        )

    def to_payload(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "type": self.type,
            "target": self.target.to_payload(),
            "args": self.args,
            "timeout_ms": self.timeout_ms,
        }


@dataclass(slots=True)
class CommandResult:
    TYPE: ClassVar[str] = "command_result"
    command_id: str
    status: str
    output: Any = None
    error: str | None = None

    @classmethod
    def from_payload(cls, payload: Any) -> CommandResult:
        d = _obj(payload, cls.TYPE)
        status = _str(d, "status", cls.TYPE) or ""
        if status not in COMMAND_STATUSES:
            raise ProtocolError(BAD_PAYLOAD, f"command_result: unknown status {status!r}")
        return cls(
            command_id=_str(d, "command_id", cls.TYPE) or "",
            status=status,
            output=d.get("output"),
            error=_str(d, "error", cls.TYPE, required=False),
        )

    def to_payload(self) -> dict[str, Any]:
        return {"command_id": self.command_id, "status": self.status, "output": self.output, "error": self.error}


@dataclass(slots=True, frozen=True)
class AuthStateEntry:
    tool: str
    status: str
    reason: str = ""
    checked_at: float | str | None = None


@dataclass(slots=True)
class AuthState:
    TYPE: ClassVar[str] = "auth_state"
    states: list[AuthStateEntry] = field(default_factory=list)

    @classmethod
    def from_payload(cls, payload: Any) -> AuthState:
        if not isinstance(payload, list):
            raise ProtocolError(BAD_PAYLOAD, "auth_state: payload must be a list")
        states = []
        for i, item in enumerate(payload):
            if not isinstance(item, dict):
                raise ProtocolError(BAD_PAYLOAD, f"auth_state[{i}] must be an object")
            checked = item.get("checked_at")
            if checked is not None and (isinstance(checked, bool) or not isinstance(checked, int | float | str)):
                raise ProtocolError(BAD_PAYLOAD, f"auth_state[{i}]: 'checked_at' must be a number or string")
            states.append(
                AuthStateEntry(
                    tool=_str(item, "tool", f"auth_state[{i}]") or "",
                    status=_str(item, "status", f"auth_state[{i}]") or "",
                    reason=_str(item, "reason", f"auth_state[{i}]", required=False) or "",
                    checked_at=checked,
                )
            )
        return cls(states=states)

    def to_payload(self) -> list[dict[str, Any]]:
        return [
            {"tool": s.tool, "status": s.status, "reason": s.reason, "checked_at": s.checked_at}
            for s in self.states
        ]


@dataclass(slots=True)
class CredentialSync:
    TYPE: ClassVar[str] = "credential_sync"
    credential_version: int

    @classmethod
    def from_payload(cls, payload: Any) -> CredentialSync:
        return cls(credential_version=_int(_obj(payload, cls.TYPE), "credential_version", cls.TYPE))

    def to_payload(self) -> dict[str, Any]:
        return {"credential_version": self.credential_version}


@dataclass(slots=True)
class ErrorMsg:
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    request_id: str | None = None

    @classmethod
    def from_payload(cls, payload: Any) -> ErrorMsg:
        d = _obj(payload, cls.TYPE)
        return cls(
            code=_str(d, "code", cls.TYPE) or "",
            message=_str(d, "message", cls.TYPE, required=False) or "",
            request_id=_str(d, "request_id", cls.TYPE, required=False),
        )

    def to_payload(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "request_id": self.request_id}


Message = (
    Register | Registered | Heartbeat | Event | Ack | Command | CommandResult | AuthState | CredentialSync | ErrorMsg
)

_ALL = (Register, Registered, Heartbeat, Event, Ack, Command, CommandResult, AuthState, CredentialSync, ErrorMsg)
MESSAGE_TYPES: dict[str, type[Message]] = {cls.TYPE: cls for cls in _ALL}


@dataclass(slots=True)
class Envelope:
    type: str
    payload: Any
    request_id: str | None
    timestamp: float
    version: int = 1
