"""The ``credentials`` section of the supervisor config, typed and parsed once at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _env(value: Any, where: str) -> Mapping[str, str]:
    """``<where>.env``: variable name -> non-empty string value."""
    if value is None:
        return _EMPTY
    if not isinstance(value, Mapping):
        raise ConfigError.single(where, "must be an object")
    env = value.get("env")
    if env is None:
        return _EMPTY
    if not isinstance(env, Mapping):
        raise ConfigError.single(f"{where}.env", "must be an object of variable name -> value")
    out: dict[str, str] = {}
    for k, v in env.items():
        if not isinstance(k, str) or not k:
            raise ConfigError.single(f"{where}.env", "variable names must not be empty")
        if not isinstance(v, str) or not v:
            raise ConfigError.single(f"{where}.env.{k}", "value must be a non-empty string")  # names only, never values
        out[k] = v
    return MappingProxyType(out)


@dataclass(frozen=True)
class CredentialsSettings:
    """``version`` (None: the config has none, every node's sync is ``unknown``), ``auto_push`` (push the
    configured set to a node that drifts), and the configured env: ``defaults.env`` and
    ``agents.<node>.env``. Values are secrets: kept out of ``repr``."""

    version: int | None = None
    auto_push: bool = True
    defaults_env: Mapping[str, str] = field(default_factory=lambda: _EMPTY, repr=False)
    agents_env: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> CredentialsSettings:
        return cls.parse(config.raw.get("credentials"))

    @classmethod
    def parse(cls, section: Any) -> CredentialsSettings:
        if section is None:
            return cls()
        if not isinstance(section, Mapping):
            raise ConfigError.single("credentials", "must be an object")
        version = section.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
            raise ConfigError.single("credentials.version", f"must be a non-negative integer, not {version!r}")
        auto_push = section.get("auto_push", True)
        if not isinstance(auto_push, bool):
            raise ConfigError.single("credentials.auto_push", f"must be true or false, not {auto_push!r}")
        agents = section.get("agents")
        if agents is not None and not isinstance(agents, Mapping):
            raise ConfigError.single("credentials.agents", "must be an object of node id -> {env}")
        agents_env = {str(node): _env(part, f"credentials.agents.{node}") for node, part in (agents or {}).items()}
        return cls(version=version, auto_push=auto_push, defaults_env=_env(section.get("defaults"),
                                                                           "credentials.defaults"),
                   agents_env=MappingProxyType(agents_env))

    def env_for(self, node_id: str) -> dict[str, str]:
        """``defaults.env`` overlaid with ``agents.<node_id>.env``: what a push to ``node_id`` sends."""
        return {**self.defaults_env, **self.agents_env.get(node_id, _EMPTY)}
