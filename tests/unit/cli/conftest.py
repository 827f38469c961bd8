"""Fixtures for halctl tests: the fake supervisor installed through the client's transport seam, and a
runner that goes through `halswarm.cli.main.run` (the real error-to-exit-code mapping)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from halswarm.cli import client as client_mod
from halswarm.cli import output as output_mod
from halswarm.cli import sessions as sessions_mod
from halswarm.cli.main import run
from tests.fakes.supervisor_api import TOKEN, URL, FakeSupervisor, Result

_SET_LINE_MODE = output_mod.set_line_mode


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No real operator settings leak in: empty HOME, no HALCTL_* variables, no reconnect sleeps."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for name in ("HALCTL_SUPERVISOR_URL", "HALCTL_AUTH_TOKEN", "HALCTL_OUTPUT", "HALCTL_TIMEOUT", "HALCTL_DEBUG",
                 "HALCTL_ACTOR", "HAL_AUTH_TOKEN", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sessions_mod, "_sleep", lambda _s: None)
    return home


@pytest.fixture(autouse=True)
def table_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """CliRunner's stdout is not a terminal; most tests check the table view, so the pipe rule (lines)
    is off unless a test asks for it with the `pipe_lines` fixture (test_halctl_pipe_lines.py)."""
    monkeypatch.setattr(output_mod, "set_line_mode", lambda _on: _SET_LINE_MODE(False))


@pytest.fixture
def pipe_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output_mod, "set_line_mode", _SET_LINE_MODE)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSupervisor:
    supervisor = FakeSupervisor()
    monkeypatch.setattr(client_mod, "transport_factory", lambda: httpx.MockTransport(supervisor.handle))
    return supervisor


@pytest.fixture
def halctl() -> Callable[..., Result]:
    """Run halctl with the given args (global --supervisor-url/--auth-token added unless `bare=True`)."""

    def invoke(*args: str, bare: bool = False, env: dict[str, str] | None = None,
               input: str | None = None) -> Result:
        argv: Sequence[str] = list(args) if bare else ["--supervisor-url", URL, "--auth-token", TOKEN, *args]
        runner = CliRunner()
        with runner.isolation(input=input, env=env) as (out, errs, _):
            code = run(argv)
            sys.stdout.flush()
            sys.stderr.flush()
        return Result(code, out.getvalue().decode(), errs.getvalue().decode())

    return invoke


@pytest.fixture
def sse_stream() -> Callable[..., httpx.Response]:
    """Build an SSE response from event dicts (and optional raw lines)."""

    def build(*items: dict[str, Any] | str, fail_after: bool = False) -> httpx.Response:
        chunks: list[bytes] = []
        for item in items:
            if isinstance(item, str):
                chunks.append(item.encode())
            else:
                chunks.append(f"data: {json.dumps(item)}\n\n".encode())
        if not fail_after:
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(chunks))

        class Dropping(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                yield from chunks
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Dropping())

    return build
