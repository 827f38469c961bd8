"""JSON columns: how the repos write and (forgivingly) read them back."""

from __future__ import annotations

import json
from typing import Any


def _j(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _load_json(text: Any, default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):  # an odd stored row renders as the default
        return default
