"""Pure role rules of the HTTP API (issue 14)."""

from __future__ import annotations

import pytest

from halswarm.core.roles import Identity, Role, command_role, identify

IDS = (Identity("root", Role.admin, "a" * 40), Identity("dash", Role.viewer, "b" * 40))


def test_roles_are_ordered_and_include_the_lower_ones() -> None:
    admin, viewer = IDS
    assert admin.allows(Role.viewer) and admin.allows(Role.operator) and admin.allows(Role.admin)
    assert viewer.allows(Role.viewer) and not viewer.allows(Role.operator)


def test_identify_by_token() -> None:
    assert identify("a" * 40, IDS) is IDS[0]
    assert identify("b" * 40, IDS) is IDS[1]
    assert identify("c" * 40, IDS) is None and identify(None, IDS) is None and identify("", IDS) is None
    assert "a" * 40 not in repr(IDS[0])


def test_parse_and_command_roles() -> None:
    assert Role.parse("operator") is Role.operator
    with pytest.raises(ValueError, match="unknown role 'root'"):
        Role.parse("root")
    assert command_role("credential_push") is Role.admin and command_role("kill_session") is Role.operator
