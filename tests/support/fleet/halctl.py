"""Run halctl with the ops commands registered (``python -m tests.support.fleet.halctl deploy ...``).

The ops commands live in halswarm/cli/ops_cmd.py; this entry point adds them to the root group when
halctl's main module does not register them (yet), so the tests exercise the real CLI either way.
"""

from __future__ import annotations

from halswarm.cli.main import cli, main
from halswarm.cli.ops_cmd import COMMANDS

for _command in COMMANDS:
    if _command.name not in cli.commands:
        cli.add_command(_command)

if __name__ == "__main__":
    main()
