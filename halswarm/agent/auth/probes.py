"""Detection per tool: installed? version? authenticated? (states in ``capability.STATUSES``).

``Prober.probe(tool)`` never raises: a CLI that times out or crashes is ``error`` with a reason.
Versions are cached per binary path (``--version`` is cheap but the answer does not change).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from halswarm.agent.auth.model import ToolAuth
from halswarm.agent.auth.opencode_api import get_providers
from halswarm.agent.auth.runner import run_cli
from halswarm.agent.auth.tool_files import claude_credentials, codex_auth_file, opencode_auth_file
from halswarm.agent.auth.toolenv import ToolEnv
from halswarm.core.auth_capability import CAPABILITIES, ERROR, NOT_INSTALLED, TOOL_IDS, capability
from halswarm.core.auth_status import claude, codex, opencode
from halswarm.core.auth_status.cli_output import CliResult

log = logging.getLogger(__name__)

STATUS_TIMEOUT = 20.0
OPENCODE_LIST_TIMEOUT = 45.0  # a Bun binary: ~1.5 s warm, much more on a cold cache or a busy host
VERSION_TIMEOUT = 20.0

OpencodeClientGetter = Callable[[], Any]


class Prober:
    def __init__(
        self,
        toolenv: ToolEnv,
        *,
        opencode_client: OpencodeClientGetter | None = None,
        timeout: float = STATUS_TIMEOUT,
        versions: dict[str, str | None] | None = None,
    ) -> None:
        self.toolenv = toolenv
        self.opencode_client = opencode_client or (lambda: None)
        self.timeout = timeout
        self._versions: dict[str, str | None] = versions if versions is not None else {}

    async def run(self, argv: list[str], *, timeout: float | None = None, input_data: bytes | None = None,
                  extra_env: dict[str, str] | None = None) -> CliResult:
        env = self.toolenv.env()
        if extra_env:
            env.update(extra_env)
        return await run_cli(argv, env, timeout=timeout or self.timeout, input_data=input_data,
                             cwd=str(self.toolenv.home_dir) if self.toolenv.home_dir.is_dir() else None,
                             run_as=self.toolenv.run_as)

    async def version(self, path: str) -> str | None:
        if path not in self._versions:
            res = await self.run([path, "--version"], timeout=VERSION_TIMEOUT)
            lines = res.text.splitlines()
            self._versions[path] = lines[0][:100] if res.ok and lines else None
        return self._versions[path]

    async def probe_all(self, tools: tuple[str, ...] = TOOL_IDS) -> dict[str, ToolAuth]:
        results = await asyncio.gather(*(self.probe(t) for t in tools))
        return {r.tool: r for r in results}

    async def probe(self, tool: str) -> ToolAuth:
        started = time.monotonic()
        try:
            result = await self._probe(tool)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a parser must not stop the others
            log.exception("auth probe of %s failed", tool)
            result = ToolAuth(tool, ERROR, f"auth check failed: {type(exc).__name__}")
        log.debug("auth probe %s: %s (%.0f ms)", tool, result.status, (time.monotonic() - started) * 1000)
        return result

    async def _probe(self, tool: str) -> ToolAuth:
        cap = capability(tool)
        if cap is None:
            return ToolAuth(tool, ERROR, f"unknown tool {tool!r}", installed=False)
        path = self.toolenv.binary(tool)
        if path is None:
            where = self.toolenv.tool_paths.get(cap.path_key) or cap.binary
            return ToolAuth(tool, NOT_INSTALLED, f"{where} not found (tool_paths, PATH, /usr/local/bin, /usr/bin)",
                            installed=False)
        version = await self.version(path)
        probe: Callable[[str], Awaitable[tuple[str, str, dict[str, Any]]]] = {
            "claude_code": self._claude, "codex": self._codex, "opencode": self._opencode,
        }[tool]
        status, reason, detail = await probe(path)
        return ToolAuth(tool, status, reason, installed=True, version=version, path=path, detail=detail)

    async def _claude(self, path: str) -> tuple[str, str, dict[str, Any]]:
        res = await self.run([path, *CAPABILITIES["claude_code"].status_args])
        env = self.toolenv.env()
        creds = await asyncio.to_thread(claude_credentials, self.toolenv.claude_config_dir())
        return claude.interpret(res, env, creds)

    async def _codex(self, path: str) -> tuple[str, str, dict[str, Any]]:
        res = await self.run([path, *CAPABILITIES["codex"].status_args])
        auth_file = await asyncio.to_thread(codex_auth_file, self.toolenv.codex_home())
        return codex.interpret(res, self.toolenv.env(), auth_file)

    async def _opencode(self, path: str) -> tuple[str, str, dict[str, Any]]:
        client = self.opencode_client()
        if client is not None:
            try:
                doc = await asyncio.wait_for(get_providers(client), self.timeout)
            except Exception as exc:
                log.debug("opencode GET /provider failed (%s); falling back to opencode auth list", exc)
            else:
                return opencode.interpret_providers(doc)
        res = await self.run([path, *CAPABILITIES["opencode"].status_args], timeout=OPENCODE_LIST_TIMEOUT,
                             extra_env={"OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1"})
        auth_file = await asyncio.to_thread(opencode_auth_file, self.toolenv.opencode_auth_file())
        return opencode.interpret_list(res, auth_file)
