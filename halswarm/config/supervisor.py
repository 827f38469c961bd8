"""Typed hal-supervisor configuration."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from halswarm.config.errors import ConfigError
from halswarm.config.loader import deep_merge, read_config_file
from halswarm.config.problems import Problem
from halswarm.config.schemas import apply_defaults, load_schema
from halswarm.config.semantic import Secrets, operator_secret_key
from halswarm.config.validate import check_document
from halswarm.core.roles import LEGACY_OPERATOR_NAME, Identity, Role


@dataclass(frozen=True)
class SupervisorConfig:
    """Effective supervisor settings. `raw` is the whole document with defaults applied and
    `auto_intervention` folded into `policies`; the supervisor's features parse their own sections
    from it once, at start, through `section()` (cost, policies, routing, routes, channels,
    credentials, dependencies)."""

    host: str
    port: int
    http_port: int
    auth_token: str | None = field(repr=False)
    operator_token: str | None = field(repr=False)
    heartbeat_interval_sec: int = 30
    heartbeat_timeout_count: int = 3
    allowed_origins: tuple[str, ...] = ()
    origin_allowlist: tuple[str, ...] = ()
    database_path: str = "/var/lib/hal-o-swarm/supervisor.db"
    # `storage.url`: "" is SQLite at database_path (the zero-setup default); postgresql://... (issue 21).
    storage_url: str = ""
    storage_password: str | None = field(default=None, repr=False)
    events_retention_days: int = 30
    audit_retention_days: int = 90
    retention_batch_rows: int = 2000
    retention_batch_ms: float = 30.0
    integrity_check_hours: float = 24.0
    tls_enabled: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    agent_tokens: dict[str, str] = field(default_factory=dict, repr=False)
    operators: tuple[Identity, ...] = field(default=(), repr=False)
    alert_token: str | None = field(default=None, repr=False)  # `alerts.token(_file)`: may only post alerts
    allow_shared_agent_token: bool = True
    log_level: str = "info"
    log_format: str = "text"
    memory_warn_percent: int = 80
    max_frame_bytes: int = 1048576
    max_body_bytes: int = 1048576
    read_timeout_sec: float = 10.0
    command_timeout_sec: int = 30
    remediation_inventory: str | None = None
    remediation_auto: tuple[str, ...] = ()
    remediation_chat_check: tuple[str, ...] = ()
    remediation_window_minutes: int = 60
    remediation_offline_minutes: float = 2.0
    remediation_timeout_minutes: float = 15.0
    remediation_memory_percent: float = 80.0
    remediation_memory_heartbeats: int = 3
    remediation_cost_failures: int = 3
    remediation_supervisor_host: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    source_path: str | None = None

    @property
    def shared_agent_token(self) -> str | None:
        """The shared agent token when agents may still use it (explicit opt-in once agent_tokens exist)."""
        return self.auth_token if self.allow_shared_agent_token else None

    @property
    def uses_postgresql(self) -> bool:
        return self.storage_url.split("://", 1)[0].lower() in ("postgresql", "postgres")

    @property
    def storage_display(self) -> str:
        """Where the state is, for logs and errors (a URL never holds a password: validation refuses one)."""
        return self.storage_url or self.database_path

    @property
    def offline_after_sec(self) -> int:
        """Silence after which a node is offline (interval x count)."""
        return self.heartbeat_interval_sec * self.heartbeat_timeout_count

    def section(self, name: str) -> Any:
        """A copy of one top-level section of the normalized document (None when absent), for a
        feature's typed settings parser (`features/<f>/settings.py`), called once at start."""
        return copy.deepcopy(self.raw.get(name))


def normalize_supervisor(data: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of `data` with defaults applied, the `auto_intervention` alias folded into `policies`
    and the spec's `idle_threshold_minutes` turned into `idle_threshold_seconds` (when that is unset),
    so consumers read one key. `compaction_threshold` and `daily_limit_usd` mean other things than
    the Go keys and stay as they are; a section using only them gets no Go-key default."""
    doc = copy.deepcopy(dict(data))
    alias = doc.pop("auto_intervention", None)
    if isinstance(alias, Mapping) and not isinstance(doc.get("policies"), Mapping):
        doc["policies"] = alias
    policies = doc.get("policies")
    idle = policies.get("resume_on_idle") if isinstance(policies, Mapping) else None
    if isinstance(idle, dict) and "idle_threshold_minutes" in idle and "idle_threshold_seconds" not in idle:
        idle["idle_threshold_seconds"] = max(1, round(idle["idle_threshold_minutes"] * 60))
    # A section written in the spec form (only `compaction_threshold` / `daily_limit_usd`) does not get
    # the Go keys' defaults (`token_threshold` 180000, `cost_threshold_usd` 10): they would add a trigger
    # the operator did not ask for and could not turn off. `null` turns either one off explicitly.
    for section, spec_key, go_key in (("restart_on_compaction", "compaction_threshold", "token_threshold"),
                                      ("kill_on_cost", "daily_limit_usd", "cost_threshold_usd")):
        sec = policies.get(section) if isinstance(policies, Mapping) else None
        if isinstance(sec, dict) and sec.get(spec_key) is not None and go_key not in sec:
            sec[go_key] = None
    return apply_defaults(load_schema("supervisor"), doc)


def _audit_days(data: Mapping[str, Any], doc: Mapping[str, Any]) -> int:
    """`retention.audit_days`, else the Go key `security.audit.retention_days`, else the default."""
    given = data.get("retention")
    if isinstance(given, Mapping) and "audit_days" in given:
        return int(given["audit_days"])
    security = data.get("security")
    audit = security.get("audit") if isinstance(security, Mapping) else None
    if isinstance(audit, Mapping) and isinstance(audit.get("retention_days"), int):
        return audit["retention_days"]
    return int(doc["retention"]["audit_days"])


def operator_identities(security: Mapping[str, Any], secrets: Secrets) -> tuple[Identity, ...]:
    """Named operator credentials: `security.operators`, plus the legacy `operator_token` as an admin
    named "operator". The shared agent token is never one of them."""
    out = []
    legacy = secrets["operator_token"].value
    if legacy:
        out.append(Identity(LEGACY_OPERATOR_NAME, Role.admin, legacy))
    for i, entry in enumerate(security.get("operators") or []):
        found = secrets.get(operator_secret_key(i))
        if found is not None and found.value:
            out.append(Identity(entry["name"], Role.parse(entry["role"]), found.value))
    return tuple(out)


def _storage_url(doc: Mapping[str, Any]) -> str:
    storage = doc.get("storage")
    return str((storage or {}).get("url") or "").strip() if isinstance(storage, Mapping) else ""


def _pg_url(doc: Mapping[str, Any]) -> str:
    """`storage.url` when it names PostgreSQL, else "" (SQLite)."""
    url = _storage_url(doc)
    return url if url.split("://", 1)[0].lower() in ("postgresql", "postgres") else ""


def _sqlite_path(doc: Mapping[str, Any]) -> str:
    """The SQLite file: `storage.url` when it is a path (or sqlite:///path), else `database.path`. With
    PostgreSQL it still anchors the supervisor's state directory (remediation runs, markers)."""
    url = _storage_url(doc)
    if url and not _pg_url(doc):
        return url.removeprefix("sqlite://")
    return str(doc["database"]["path"])


def _opt(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def build_supervisor_config(
    data: Mapping[str, Any], secrets: Secrets, source_path: str | os.PathLike[str] | None = None
) -> SupervisorConfig:
    """Typed config from an already validated document and its resolved secrets."""
    doc = normalize_supervisor(data)
    server, security, remediation = doc["server"], doc["security"], doc["remediation"]
    token = secrets["auth_token"].value
    agent_tokens = {k: v.strip() for k, v in security["agent_tokens"].items()}
    if token is None and not agent_tokens:  # validation guarantees one; keep the invariant explicit
        raise ConfigError.single("server.auth_token", "is required")
    allow_shared = security.get("allow_shared_agent_token")
    return SupervisorConfig(
        host=server["host"],
        port=server["port"],
        http_port=server["http_port"],
        auth_token=token,
        operator_token=secrets["operator_token"].value,
        heartbeat_interval_sec=server["heartbeat_interval_sec"],
        heartbeat_timeout_count=server["heartbeat_timeout_count"],
        allowed_origins=tuple(server["allowed_origins"]),
        origin_allowlist=tuple(security["origin_allowlist"]),
        database_path=_sqlite_path(doc),
        storage_url=_pg_url(doc),
        storage_password=secrets["storage_password"].value if "storage_password" in secrets else None,
        events_retention_days=doc["retention"]["events_days"],
        audit_retention_days=_audit_days(data, doc),
        retention_batch_rows=doc["retention"]["batch_rows"],
        retention_batch_ms=float(doc["retention"]["batch_ms"]),
        integrity_check_hours=float(doc["database"]["integrity_check_hours"]),
        tls_enabled=security["tls"]["enabled"],
        tls_cert=_opt(security["tls"].get("cert_path")),
        tls_key=_opt(security["tls"].get("key_path")),
        agent_tokens=agent_tokens,
        operators=operator_identities(security, secrets),
        alert_token=secrets["alert_token"].value if "alert_token" in secrets else None,
        allow_shared_agent_token=allow_shared if isinstance(allow_shared, bool) else not agent_tokens,
        log_level=doc["log"]["level"],
        log_format=doc["log"]["format"],
        memory_warn_percent=doc["log"]["memory_warn_percent"],
        max_frame_bytes=server["max_frame_bytes"],
        max_body_bytes=server["max_body_bytes"],
        read_timeout_sec=float(server["read_timeout_sec"]),
        command_timeout_sec=doc["commands"]["default_timeout_sec"],
        remediation_inventory=_opt(remediation.get("inventory")),
        remediation_auto=tuple(remediation["auto"]),
        remediation_chat_check=tuple(remediation["chat_check"]),
        remediation_window_minutes=int(remediation["window_minutes"]),
        remediation_offline_minutes=float(remediation["offline_minutes"]),
        remediation_timeout_minutes=float(remediation["timeout_minutes"]),
        remediation_memory_percent=float(remediation["memory_percent"]),
        remediation_memory_heartbeats=int(remediation["memory_heartbeats"]),
        remediation_cost_failures=int(remediation["cost_failures"]),
        remediation_supervisor_host=_opt(remediation.get("supervisor_host")),
        raw=doc,
        source_path=os.fspath(source_path) if source_path is not None else None,
    )


def parse_supervisor_config(
    data: Mapping[str, Any],
    *,
    strict: bool = False,
    env: Mapping[str, str] | None = None,
    source_path: str | os.PathLike[str] | None = None,
) -> tuple[SupervisorConfig, list[Problem]]:
    """Validate an in-memory document; `ConfigError` on any error, else (config, warnings)."""
    problems, secrets = check_document("supervisor", data, strict=strict, source_path=source_path, env=env)
    if any(p.is_error for p in problems):
        raise ConfigError(problems)
    return build_supervisor_config(data, secrets, source_path), problems


def load_supervisor_config(
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    env: Mapping[str, str] = os.environ,
    overrides: dict[str, Any] | None = None,
) -> tuple[SupervisorConfig, list[Problem]]:
    """Read, validate and type a supervisor config file.

    `overrides` (e.g. from command-line flags) is deep-merged over the file before validation.
    The shared token comes from env `HAL_AUTH_TOKEN`, else `server.auth_token_file` /
    `auth_token_file`, else `server.auth_token` / `auth_token`.
    """
    data = read_config_file(path)
    if overrides:
        data = deep_merge(data, overrides)
    return parse_supervisor_config(data, strict=strict, env=env, source_path=path)
