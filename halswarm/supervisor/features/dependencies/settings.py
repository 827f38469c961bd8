"""`dependencies` and `dependencies_autostart` of the supervisor config, typed and parsed once (cycles
are rejected at config load, config/semantic.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from halswarm.config.fields import boolean, obj
from halswarm.config.problems import ROOT
from halswarm.config.semantic import dependency_edges
from halswarm.config.supervisor import SupervisorConfig


@dataclass(frozen=True)
class DependencySettings:
    edges: dict[str, list[str]] = field(default_factory=dict)  # project -> the projects it depends on
    autostart: bool = False

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> DependencySettings:
        return cls.parse(config.section("dependencies"), config.section("dependencies_autostart"))

    @classmethod
    def parse(cls, dependencies: Any, autostart: Any = None) -> DependencySettings:
        """ConfigError (one line) for a section that is not an object or a flag that is not a boolean."""
        return cls(dependency_edges(obj(dependencies, "dependencies")),
                   boolean({"dependencies_autostart": autostart}, "dependencies_autostart", ROOT, False))
