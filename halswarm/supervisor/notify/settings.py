"""`routes[]`, `channels.*` and `routing.*` of the supervisor config, typed and parsed once.

A route whose target cannot be resolved (a missing channel) is not a configuration error: it is kept,
disabled, and reported with its reason (`Route.error`), as before."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from halswarm.config.errors import ConfigError
from halswarm.config.fields import number, obj
from halswarm.config.problems import json_type
from halswarm.config.supervisor import SupervisorConfig
from halswarm.supervisor.notify.delivery import DeliverySettings


@dataclass(frozen=True)
class RouteSpec:
    match: str
    target: str


@dataclass(frozen=True)
class NotifySettings:
    routes: tuple[RouteSpec, ...] = ()
    channels: Mapping[str, Any] = field(default_factory=dict)  # as configured; each route resolves its target
    sweep_s: float = 15.0
    delivery: DeliverySettings = field(default_factory=DeliverySettings)

    @classmethod
    def from_config(cls, config: SupervisorConfig) -> NotifySettings:
        return cls.parse(config.section("routes"), config.section("channels"), config.section("routing"))

    @classmethod
    def parse(cls, routes: Any, channels: Any = None, routing: Any = None) -> NotifySettings:
        """ConfigError (one line) for a wrong value, defaults for missing ones."""
        if routes is None:
            routes = []
        if not isinstance(routes, list):
            raise ConfigError.single("routes", f"must be an array (got {json_type(routes)})")
        specs = []
        for i, r in enumerate(routes):
            r = obj(r, f"routes[{i}]")
            specs.append(RouteSpec(str(r.get("match", "")), str(r.get("target", ""))))
        r = obj(routing, "routing")
        delivery = DeliverySettings(
            queue_size=number(r, "queue_size", "routing", 1000, at_least=1),
            max_retries=number(r, "max_retries", "routing", 5, at_least=0),
            backoff_base_s=number(r, "backoff_base_ms", "routing", 500.0, at_least=1) / 1000,
            timeout_s=number(r, "timeout_seconds", "routing", 10.0, above=0))
        return cls(tuple(specs), obj(channels, "channels"), number(r, "sweep_seconds", "routing", 15.0, above=0),
                   delivery)
