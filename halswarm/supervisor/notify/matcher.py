"""Route match expressions (pure).

    match   := clause ("&&" clause)*          ("and" works too)
    clause  := PATTERNS | condition            (conditions: see conditions.py)
    PATTERNS:= glob ("|" glob)*                glob on the event type: `session.error`, `node.*`, `env.*`, `*`

Examples: `session.error`, `node.*`, `session.error|node.offline`, `session.idle && stuck > 5m`,
`session.error && errors >= 3 in 10m`, `cost.daily > 20` (a condition alone: checked periodically).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from halswarm.supervisor.notify.conditions import Condition, ConditionError, is_condition, parse_condition

_SPLIT = re.compile(r"\s*(?:&&|\band\b)\s*")


class MatchError(ValueError):
    pass


@dataclass(frozen=True)
class MatchExpr:
    text: str
    patterns: tuple[str, ...]  # empty: condition-only route
    conditions: tuple[Condition, ...]
    regex: re.Pattern[str] | None

    def matches_type(self, event_type: str) -> bool:
        return self.regex is not None and self.regex.match(event_type) is not None

    @property
    def stuck(self) -> Condition | None:
        return next((c for c in self.conditions if c.metric == "stuck"), None)

    @property
    def instant(self) -> tuple[Condition, ...]:
        """Conditions judged at the moment an event arrives (all but `stuck`)."""
        return tuple(c for c in self.conditions if c.metric != "stuck")

    @property
    def scope(self) -> str:
        scopes = {c.scope for c in self.conditions}
        if not scopes or scopes == {"global"}:
            return "global"
        return "session" if "session" in scopes else "subject"


def parse_match(text: str) -> MatchExpr:
    if not isinstance(text, str) or not text.strip():
        raise MatchError("match must be a non-empty string")
    patterns: list[str] = []
    conditions: list[Condition] = []
    for clause in _SPLIT.split(text.strip()):
        if not clause:
            raise MatchError(f"empty clause in {text!r}")
        if is_condition(clause):
            try:
                conditions.append(parse_condition(clause))
            except ConditionError as exc:
                raise MatchError(str(exc)) from None
            continue
        alts = [a.strip() for a in clause.split("|")]
        if any(not a or " " in a for a in alts):
            raise MatchError(f"cannot read event pattern {clause!r} (expected e.g. 'session.error' or 'node.*')")
        patterns.extend(alts)
    regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)) if patterns else None
    return MatchExpr(" ".join(text.split()), tuple(patterns), tuple(conditions), regex)
