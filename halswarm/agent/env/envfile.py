"""Provisioned env vars for the agent's processes: ``<data_dir>/env/<project>.env`` (0600).

Lines are ``NAME="value"`` (double-quoted, backslash escapes), readable by systemd's
``EnvironmentFile=`` and by ``sh``'s ``set -a; . FILE``. Only variables whose value the manifest gives
are written here; secrets come through ``credential_push`` and are never written by this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

_LINE = re.compile(r'^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(".*"|[^"\s]*)\s*$')
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False).replace("$", "\\$").replace("`", "\\`")


def _unquote(raw: str) -> str:
    if raw.startswith('"'):
        try:
            return str(json.loads(raw.replace("\\$", "$").replace("\\`", "`")))
        except ValueError:
            return raw.strip('"')
    return raw


class EnvFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return {}
        out: dict[str, str] = {}
        for line in text.splitlines():
            m = _LINE.match(line.strip())
            if m:
                out[m.group(1)] = _unquote(m.group(2))
        return out

    def set(self, name: str, value: str) -> bool:
        """Set one variable; returns whether the file changed."""
        if not NAME.match(name):
            raise ValueError(f"not an env var name: {name!r}")
        current = self.load()
        if current.get(name) == value:
            return False
        current[name] = value
        self._write(current)
        return True

    def _write(self, values: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = "# hal-o-swarm managed: env vars of the agent's processes (env manifest)\n"
        body += "".join(f"{k}={_quote(v)}\n" for k, v in sorted(values.items()))
        fd, tmp = tempfile.mkstemp(prefix=".env-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
