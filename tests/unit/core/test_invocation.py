"""The supervisor's banner prints halctl the way this installation can run it."""

from __future__ import annotations

from pathlib import Path

from halswarm.core.invocation import command_for

REPO = Path("/src/hal")


def _cmd(**kw) -> str:
    args = {"script": REPO / ".venv/bin/halctl", "script_exists": True, "path_hit": None,
            "python": str(REPO / ".venv/bin/python")} | kw
    return command_for("halctl", **args)


def test_checkout_venv_not_on_path_is_absolute():  # works from another shell in any directory
    assert _cmd() == "/src/hal/.venv/bin/halctl"


def test_script_on_path_is_the_bare_name():  # pipx, or pip in an activated venv
    pipx = Path("/home/u/.local/share/pipx/venvs/hal-o-swarm/bin/halctl")
    assert _cmd(script=pipx, path_hit=pipx) == "halctl"


def test_another_halctl_first_on_path_is_not_trusted():
    assert _cmd(path_hit=Path("/usr/bin/halctl")) == "/src/hal/.venv/bin/halctl"


def test_no_script_uses_path_or_the_module():
    assert _cmd(script_exists=False, path_hit=Path("/usr/local/bin/halctl")) == "halctl"
    assert _cmd(script_exists=False, python="/opt/py 3/bin/python") == "'/opt/py 3/bin/python' -m halswarm.cli.main"
