"""The agent's ``supervisor_url``: one WebSocket URL or a list of them (issue 21, agent failover).

Pure parsing and validation, shared by the config checks and the agent's connection: each URL must
be ``ws://`` or ``wss://`` with a host and, when given, a port in 1..65535; no credentials, query or
fragment (the agent authenticates with its token header, never with URL parts). A host that is a
DNS name may resolve to several addresses; the connection tries each (``halswarm.protocol.failover``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_SUPERVISOR_URLS = 16
_DEFAULT_PORTS = {"ws": 80, "wss": 443}


class SupervisorUrlError(ValueError):
    """A ``supervisor_url`` entry is not a usable WebSocket URL (the message is one line)."""


@dataclass(frozen=True, slots=True)
class SupervisorUrl:
    """One validated supervisor URL."""

    url: str
    scheme: str
    host: str  # without IPv6 brackets
    port: int  # explicit, or the scheme's default
    path: str = "/"

    @property
    def host_is_ip(self) -> bool:
        """An address literal: nothing to resolve."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def parse_supervisor_url(raw: object) -> SupervisorUrl:
    """Validate one URL; ``SupervisorUrlError`` says what is wrong with it."""
    if not isinstance(raw, str) or not raw.strip():
        raise SupervisorUrlError("must be a non-empty ws:// or wss:// URL")
    text = raw.strip()
    if any(c.isspace() for c in text):
        raise SupervisorUrlError(f"{text!r} contains whitespace")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise SupervisorUrlError(f"{text!r} must use ws:// or wss:// (got {parts.scheme or 'no'} scheme)")
    if parts.username is not None or parts.password is not None:
        raise SupervisorUrlError(f"{text!r} must not carry credentials (the agent sends its token in a header)")
    if parts.query or parts.fragment:
        raise SupervisorUrlError(f"{text!r} must not have a query or fragment")
    host = parts.hostname
    if not host:
        raise SupervisorUrlError(f"{text!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise SupervisorUrlError(f"{text!r} has an invalid port (1..65535)") from None
    if port is None:
        if parts.netloc.endswith(":"):
            raise SupervisorUrlError(f"{text!r} has an empty port")
        port = _DEFAULT_PORTS[scheme]
    elif port == 0:
        raise SupervisorUrlError(f"{text!r} has an invalid port (1..65535)")
    return SupervisorUrl(url=text, scheme=scheme, host=host, port=port, path=parts.path or "/")


def parse_supervisor_urls(value: object) -> tuple[SupervisorUrl, ...]:
    """``supervisor_url`` as configured (a string or a list of strings) -> validated URLs, in order.

    A duplicate entry is an error (it would only make the agent try the same supervisor twice per round).
    """
    items: Sequence[object]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise SupervisorUrlError("must be a ws:// or wss:// URL or a list of them")
    if not items:
        raise SupervisorUrlError("the list is empty: give at least one ws:// or wss:// URL")
    if len(items) > MAX_SUPERVISOR_URLS:
        raise SupervisorUrlError(f"at most {MAX_SUPERVISOR_URLS} URLs (got {len(items)})")
    out: list[SupervisorUrl] = []
    seen: set[tuple[str, str, int, str]] = set()
    for index, item in enumerate(items):
        try:
            url = parse_supervisor_url(item)
        except SupervisorUrlError as exc:
            raise SupervisorUrlError(f"[{index}]: {exc}" if len(items) > 1 else str(exc)) from None
        key = (url.scheme, url.host.lower(), url.port, url.path)
        if key in seen:
            raise SupervisorUrlError(f"[{index}]: {url.url!r} is listed twice")
        seen.add(key)
        out.append(url)
    return tuple(out)
