"""Route conditions (pure): `stuck > 5m`, `cost.daily > 20`, `cost.session >= 5`, `errors >= 3 in 10m`.

    condition := METRIC OP NUMBER[UNIT] ["in" NUMBER UNIT]
    OP        := > | >= | < | <= | == | !=          UNIT := s | m | h | d (durations)

Metrics:
    stuck         seconds since the session's last activity (sessions that are not completed/killed)
    cost.daily    USD spent today (UTC) across the fleet, as in `GET /api/v1/cost/today`
    cost.session  USD of the event's session (reported, else estimated from model_rates)
    errors        error events (`*.error`, `*.failed`, `*_failed`) of the subject (the session, else the
                  project, else the node) within the window (`in 10m`, the default)
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}
METRICS = ("stuck", "cost.daily", "cost.session", "errors")
DURATION_METRICS = frozenset({"stuck"})
DEFAULT_ERROR_WINDOW_S = 600.0

_COND = re.compile(
    r"^(?P<metric>[a-z_][a-z0-9_.]*)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>[smhd])?"
    r"(?:\s+in\s+(?P<window>\d+(?:\.\d+)?)\s*(?P<wunit>[smhd]))?$"
)
_LOOKS_LIKE_CONDITION = re.compile(r"[<>=!]")


class ConditionError(ValueError):
    pass


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    value: float  # seconds for durations, USD for costs, a count for errors
    window: float | None  # errors only
    text: str

    @property
    def scope(self) -> str:
        """global (one verdict for the fleet), session, or subject (session, else project, else node)."""
        return {"cost.daily": "global", "errors": "subject"}.get(self.metric, "session")

    def holds(self, observed: float | None) -> bool:
        return observed is not None and OPS[self.op](observed, self.value)


def is_condition(clause: str) -> bool:
    return bool(_LOOKS_LIKE_CONDITION.search(clause))


def parse_condition(clause: str) -> Condition:
    text = " ".join(clause.split())
    m = _COND.match(text)
    if m is None:
        raise ConditionError(f"cannot read condition {text!r} (expected e.g. 'stuck > 5m', 'cost.daily > 20',"
                             " 'errors >= 3 in 10m')")
    metric = m["metric"]
    if metric not in METRICS:
        raise ConditionError(f"unknown metric {metric!r} in {text!r} (known: {', '.join(METRICS)})")
    value = float(m["value"])
    if m["unit"]:
        if metric not in DURATION_METRICS:
            raise ConditionError(f"{metric} takes no time unit ({text!r})")
        value *= UNITS[m["unit"]]  # without a unit a duration is in seconds
    window = None
    if m["window"]:
        if metric != "errors":
            raise ConditionError(f"only errors take a window ('in ...'), not {metric} ({text!r})")
        window = float(m["window"]) * UNITS[m["wunit"]]
    elif metric == "errors":
        window = DEFAULT_ERROR_WINDOW_S
    return Condition(metric, m["op"], value, window, text)


@dataclass(frozen=True)
class Facts:
    """What the conditions look at, for one subject at one moment."""

    daily_cost: float = 0.0
    session_cost: float | None = None
    stuck_seconds: float | None = None
    errors_in: Callable[[float], int] | None = None


def observe(cond: Condition, facts: Facts) -> float | None:
    if cond.metric == "cost.daily":
        return facts.daily_cost
    if cond.metric == "cost.session":
        return facts.session_cost
    if cond.metric == "stuck":
        return facts.stuck_seconds
    if cond.metric == "errors":
        return float(facts.errors_in(cond.window or DEFAULT_ERROR_WINDOW_S)) if facts.errors_in else 0.0
    return None


def evaluate(conds: tuple[Condition, ...], facts: Facts) -> tuple[bool, dict[str, float | None]]:
    """All conditions hold? Plus the observed values (shown in the notification)."""
    values = {c.text: observe(c, facts) for c in conds}
    return all(c.holds(values[c.text]) for c in conds), values
