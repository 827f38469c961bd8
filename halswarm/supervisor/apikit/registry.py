"""The services an app serves, by type: the composition root fills it, request dependencies read it."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


class Services:
    def __init__(self) -> None:
        self._by_type: dict[type, Any] = {}

    def add(self, service: Any, as_type: type | None = None) -> None:
        key = as_type or type(service)
        if key in self._by_type:
            raise ValueError(f"service {key.__name__} registered twice")
        self._by_type[key] = service

    def has(self, cls: type) -> bool:
        return cls in self._by_type

    def get(self, cls: type[T]) -> T:
        try:
            found: T = self._by_type[cls]  # registered under its own type
            return found
        except KeyError:
            raise LookupError(f"no {cls.__name__} in this app (not composed in supervisor/app.py)") from None
