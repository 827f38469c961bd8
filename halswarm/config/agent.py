"""Typed hal-agent configuration."""

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
from halswarm.config.semantic import Secrets
from halswarm.config.validate import check_document


@dataclass(frozen=True)
class Project:
    name: str
    directory: str


@dataclass(frozen=True)
class AgentConfig:
    """Effective agent settings; `raw` is the whole document with defaults applied.

    `supervisor_url` is the first (or only) configured URL; `supervisor_urls` all of them, in failover order.
    """

    supervisor_url: str
    auth_token: str = field(repr=False)
    node_id: str
    opencode_port: int = 4096  # 0: managed opencode picks a free port (read from its stdout)
    auth_report_interval_sec: int = 30
    tool_paths: dict[str, str] = field(default_factory=dict)
    opencode_manage: bool = True
    opencode_binary: str = "opencode"
    opencode_password: str | None = field(default=None, repr=False)
    data_dir: str = "/var/lib/hal-o-swarm/agent"
    projects: tuple[Project, ...] = ()
    log_level: str = "info"
    log_format: str = "text"
    memory_warn_percent: int = 80
    resume_message: str = "continue"
    outbox_max_events: int = 100000
    # env.probe_tools: tool name -> fixed argv env checks may run for its version (node-local, trusted)
    probe_tools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    supervisor_urls: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    source_path: str | None = None

    def project(self, name: str) -> Project | None:
        return next((p for p in self.projects if p.name == name), None)


def build_agent_config(
    data: Mapping[str, Any], secrets: Secrets, source_path: str | os.PathLike[str] | None = None
) -> AgentConfig:
    """Typed config from an already validated document and its resolved secrets."""
    doc = apply_defaults(load_schema("agent"), copy.deepcopy(dict(data)))
    token = secrets["auth_token"].value
    if token is None:
        raise ConfigError.single("auth_token", "is required")
    opencode = doc["opencode"]
    port = opencode.get("port", doc["opencode_port"])
    if port == 0 and not opencode["manage"]:
        key = "opencode.port" if "port" in opencode else "opencode_port"
        raise ConfigError.single(key, "0 (a free port) needs opencode.manage: true; set the attached server's port")
    node_id = doc.get("node_id")
    if not node_id:
        import socket

        node_id = socket.gethostname()
    configured = doc["supervisor_url"]
    urls = (configured,) if isinstance(configured, str) else tuple(configured)
    return AgentConfig(
        supervisor_url=urls[0],
        supervisor_urls=urls,
        auth_token=token,
        node_id=node_id,
        opencode_port=port,
        auth_report_interval_sec=doc["auth_report_interval_sec"],
        tool_paths={k: v for k, v in doc.get("tool_paths", {}).items() if isinstance(v, str) and v},
        opencode_manage=opencode["manage"],
        opencode_binary=opencode["binary"],
        opencode_password=secrets["opencode_password"].value,
        data_dir=doc["data_dir"],
        projects=tuple(Project(p["name"], p["directory"]) for p in doc["projects"]),
        log_level=doc["log"]["level"],
        log_format=doc["log"]["format"],
        memory_warn_percent=doc["log"]["memory_warn_percent"],
        resume_message=doc["resume_message"],
        outbox_max_events=doc["outbox"]["max_events"],
        probe_tools={k: tuple(v) for k, v in doc.get("env", {}).get("probe_tools", {}).items()},
        raw=doc,
        source_path=os.fspath(source_path) if source_path is not None else None,
    )


def parse_agent_config(
    data: Mapping[str, Any],
    *,
    strict: bool = False,
    env: Mapping[str, str] | None = None,
    source_path: str | os.PathLike[str] | None = None,
) -> tuple[AgentConfig, list[Problem]]:
    """Validate an in-memory document; `ConfigError` on any error, else (config, warnings)."""
    problems, secrets = check_document("agent", data, strict=strict, source_path=source_path, env=env)
    if any(p.is_error for p in problems):
        raise ConfigError(problems)
    return build_agent_config(data, secrets, source_path), problems


def load_agent_config(
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    env: Mapping[str, str] = os.environ,
    overrides: dict[str, Any] | None = None,
) -> tuple[AgentConfig, list[Problem]]:
    """Read, validate and type an agent config file (token: env `HAL_AUTH_TOKEN` >
    `auth_token_file` > `auth_token`; `node_id` defaults to the host name)."""
    data = read_config_file(path)
    if overrides:
        data = deep_merge(data, overrides)
    return parse_agent_config(data, strict=strict, env=env, source_path=path)
