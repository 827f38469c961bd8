"""How to write a command of this installation so that it works when the user types it as printed.

After ``pipx install`` or ``pip install`` into an active venv the console script is on PATH
(``halctl``); otherwise (a checkout's ``.venv`` driven by ``make``) its absolute path, which works
from any other shell and directory. ``command_for`` is pure: the caller passes what it found.
"""

from __future__ import annotations

import shlex
from pathlib import Path


def command_for(name: str, *, script: Path, script_exists: bool, path_hit: Path | None, python: str) -> str:
    """The shortest spelling of console script ``name`` that runs this installation's copy.

    ``script``: where pip put it (beside the running interpreter); ``path_hit``: what
    ``shutil.which(name)`` found, resolved; ``python``: the running interpreter, for the last resort.
    """
    if script_exists:
        if path_hit is not None and path_hit == script.resolve():
            return name
        return shlex.quote(str(script.absolute()))
    if path_hit is not None:
        return name
    return f"{shlex.quote(python)} -m halswarm.cli.main" if name == "halctl" else name


def local_command(name: str) -> str:
    """``command_for`` with this process's interpreter and PATH."""
    import shutil
    import sys

    script = Path(sys.executable).parent / name
    found = shutil.which(name)
    return command_for(name, script=script, script_exists=script.is_file(),
                       path_hit=Path(found).resolve() if found else None, python=sys.executable)
