"""Operator identities and roles of the HTTP API (issue 14): who may call what.

Three roles, each including the ones below it: `viewer` reads and streams, `operator` controls sessions
and runs, `admin` changes what the fleet runs (env manifest, installs, credentials). Pure logic, no I/O.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from enum import IntEnum


class Role(IntEnum):
    viewer = 1
    operator = 2
    admin = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown role {name!r} (one of: {', '.join(r.name for r in cls)})") from None


ROLE_NAMES = tuple(r.name for r in Role)

# The name under which the legacy `security.operator_token` authenticates (an admin).
LEGACY_OPERATOR_NAME = "operator"


@dataclass(frozen=True)
class Identity:
    """A named operator credential; `token` never appears in repr."""

    name: str
    role: Role
    token: str = field(repr=False)

    def allows(self, needed: Role) -> bool:
        return self.role >= needed


def identify(token: str | None, identities: tuple[Identity, ...]) -> Identity | None:
    """The identity whose token equals `token` (constant-time per comparison, every entry compared)."""
    if not token:
        return None
    given = token.encode()
    found = None
    for ident in identities:
        if hmac.compare_digest(given, ident.token.encode()) and found is None:
            found = ident
    return found


# Command types of the generic `POST /api/v1/commands` that change credentials need an admin, like
# their dedicated routes; every other type needs an operator (unknown types are refused later anyway).
ADMIN_COMMANDS = frozenset({"credential_push", "oauth_trigger", "auth_refresh"})


def command_role(canonical_type: str) -> Role:
    return Role.admin if canonical_type in ADMIN_COMMANDS else Role.operator
