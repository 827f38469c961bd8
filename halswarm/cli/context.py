"""Per-invocation state of halctl: global options, their precedence, and the lazily built API client.

Precedence for every global setting: command-line flag > environment variable > CLI config file
(`~/.config/halctl/config.yaml`, or the Go `~/.halctl/config.json`) > built-in default. Click already
merges flag and env var; the config file is only read when a value is still missing and a command needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import click

from halswarm.cli.errors import HalctlError, UsageProblem

if TYPE_CHECKING:
    from halswarm.cli.client import ApiClient

DEFAULT_SUPERVISOR_URL = "http://localhost:8421"
DEFAULT_OUTPUT = "table"
DEFAULT_TIMEOUT = 30.0
OUTPUT_FORMATS = ("table", "json", "yaml")

WS_PORT = 8420
HTTP_PORT = 8421


def normalize_supervisor_url(raw: str) -> str:
    """Return the HTTP API base URL for what the operator typed.

    `ws://host:8420[/ws/agent]` (the runbook's form, i.e. the agents' URL) becomes `http://host:8421`,
    `wss://` becomes `https://`. A ws URL without a port, or with 8420, targets the API port 8421; any
    other explicit port is kept (the supervisor also accepts agents on its HTTP port). http(s) URLs keep
    their path (reverse-proxy prefixes), minus a trailing `/` or `/api/v1`.
    """
    text = raw.strip()
    if not text:
        raise UsageProblem("--supervisor-url must not be empty")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss"):
        raise UsageProblem(f"--supervisor-url: unsupported scheme {parts.scheme!r} (use http(s):// or ws(s)://)")
    host = parts.hostname
    if not host:
        raise UsageProblem(f"--supervisor-url: no host in {raw!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise UsageProblem(f"--supervisor-url: bad port in {raw!r}") from exc
    netloc_host = f"[{host}]" if ":" in host else host
    userinfo = parts.netloc.rpartition("@")[0]
    if scheme in ("ws", "wss"):
        scheme = "http" if scheme == "ws" else "https"
        if port in (None, WS_PORT):
            port = HTTP_PORT
        path = ""
    else:
        path = parts.path.rstrip("/")
        if path.endswith("/api/v1"):
            path = path[: -len("/api/v1")]
    netloc = netloc_host if port is None else f"{netloc_host}:{port}"
    if userinfo:
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((scheme, netloc, path, "", ""))


def default_actor() -> str:
    """`<local user>@<hostname>`: who runs halctl, for the supervisor's audit log."""
    import getpass
    import os
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry and no LOGNAME/USER (some containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname() or 'localhost'}"


def _load_cli_file() -> Any:
    """The CLI config file's settings object (`supervisor_url`, `auth_token`, `output`), or None.

    Warnings (unknown keys, a weak token) are left to `halctl config validate`; errors end the command.
    """
    from halswarm.config.cli import load_cli_config

    try:
        loaded = load_cli_config()
    except Exception as exc:  # a broken config file must not become a traceback
        problems = getattr(exc, "problems", None)
        detail = "; ".join(str(p) for p in problems) if problems else " ".join(str(exc).split())
        raise HalctlError(f"halctl config file: {detail}") from exc
    return loaded[0] if isinstance(loaded, tuple) else loaded


class AppContext:
    """What the root group stores in `ctx.obj`."""

    def __init__(
        self,
        *,
        supervisor_url: str | None = None,
        auth_token: str | None = None,
        output: str | None = None,
        timeout: float | None = None,
        actor: str | None = None,
    ) -> None:
        if actor is not None and not actor.strip():
            raise UsageProblem("--actor must not be empty")
        self._flag_actor = actor.strip() if actor else None
        self._flag_url = supervisor_url
        self._flag_token = auth_token or None
        self._flag_output = output.lower() if output else None
        self._flag_timeout = timeout
        self._file: Any = None
        self._file_loaded = False
        self._client: ApiClient | None = None

    def set_output(self, value: str) -> None:
        """`--output` given after the sub-command (`halctl sessions list -o json`) wins like the global flag."""
        self._flag_output = value.lower()

    # -- config file ---------------------------------------------------------------------------
    def _file_value(self, name: str) -> Any:
        if not self._file_loaded:
            self._file_loaded = True
            self._file = _load_cli_file()
        if self._file is None:
            return None
        value = getattr(self._file, name, None)
        return value if value not in ("", None) else None

    # -- resolved settings ---------------------------------------------------------------------
    @property
    def explicit_supervisor_url(self) -> str | None:
        """The URL given by flag or env var, if any (config file and default not consulted)."""
        return normalize_supervisor_url(self._flag_url) if self._flag_url else None

    @property
    def explicit_auth_token(self) -> str | None:
        return self._flag_token

    @property
    def supervisor_url(self) -> str:
        raw = self._flag_url or self._file_value("supervisor_url") or DEFAULT_SUPERVISOR_URL
        return normalize_supervisor_url(str(raw))

    @property
    def auth_token(self) -> str | None:
        if self._flag_token:
            return self._flag_token
        value = self._file_value("auth_token")
        return str(value) if value else None

    @property
    def output(self) -> str:
        """The format: --output / HALCTL_OUTPUT > config file `output` > table. Unless --output or
        HALCTL_OUTPUT chose it, `table` on a stdout that is not a terminal prints lines instead
        (see halswarm.cli.output.print_table)."""
        value = self._flag_output
        if value is None:
            from_file = self._file_value("output")
            value = str(from_file).lower() if from_file else DEFAULT_OUTPUT
        if value not in OUTPUT_FORMATS:
            raise UsageProblem(f"unsupported output format {value!r} (use one of: {', '.join(OUTPUT_FORMATS)})")
        # Nothing chose a format and stdout is a pipe: tables become one `key: value` line per item.
        from halswarm.cli import output as output_mod

        output_mod.set_line_mode(self._flag_output is None and value == DEFAULT_OUTPUT
                                 and not output_mod.stdout_is_tty())
        return value

    @property
    def actor(self) -> str:
        """Who is acting (audit log): --actor / HALCTL_ACTOR > config file `actor` > user@host."""
        if self._flag_actor:
            return self._flag_actor
        try:
            self._file_value("actor")  # loads the file once
        except HalctlError:  # a broken file is reported by the settings that need it, not by the actor
            return default_actor()
        raw = getattr(self._file, "raw", None) if self._file is not None else None
        value = raw.get("actor") if isinstance(raw, dict) else None
        if isinstance(value, str) and value.strip():
            return value.strip()
        return default_actor()

    @property
    def timeout(self) -> float:
        return self._flag_timeout if self._flag_timeout is not None else DEFAULT_TIMEOUT

    # -- client ----------------------------------------------------------------------------------
    def client(self) -> ApiClient:
        if self._client is None:
            from halswarm.cli.client import ApiClient

            self._client = ApiClient(self.supervisor_url, self.auth_token, timeout=self.timeout, actor=self.actor)
            click.get_current_context().call_on_close(self._client.close)
        return self._client


def app(ctx: click.Context | None = None) -> AppContext:
    """The AppContext of the current invocation."""
    ctx = ctx or click.get_current_context()
    obj = ctx.find_object(AppContext)
    if obj is None:  # a sub-group invoked on its own (tests): defaults + env only
        obj = ctx.ensure_object(AppContext)
    return obj
