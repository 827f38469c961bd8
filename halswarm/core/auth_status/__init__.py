"""Tool authentication status from the CLIs' answers (pure): ``claude auth status``, ``codex login
status``, ``opencode auth list`` and the opencode server's ``GET /provider`` body, each turned into
``(status, reason, detail)`` with the statuses of ``core.auth_capability``.

The agent runs the commands and reads the tools' credential files (never their values) around these;
``halctl auth login --ssh`` (``halswarm.ops.ssh_login``) runs the same commands over SSH.
"""
