"""Which coding-agent CLIs this node has: binary found + ``--version``.

Resolution follows the Go agent (go-original.md 9.1): the configured ``tool_paths.<tool>`` wins,
else ``PATH``, else the first executable of ``/usr/local/bin``, ``/usr/bin``, ``/snap/bin``.
Authentication state is not probed here (a later issue adds the auth probes).

Tool ids are the Go ones (``opencode``, ``claude_code``, ``codex``); the ``tool_paths`` keys are
``opencode``, ``claude``, ``codex``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Mapping

from halswarm.core.capabilities import TOOLS, ToolInfo

FALLBACK_DIRS = ("/usr/local/bin", "/usr/bin", "/snap/bin")
VERSION_TIMEOUT = 10.0


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def resolve_binary(name_or_path: str, configured: str | None = None) -> str | None:
    """Absolute path of the binary, or None. ``configured`` (tool_paths) wins when set."""
    for candidate in (configured, name_or_path):
        if not candidate:
            continue
        if os.sep in candidate:
            path = os.path.abspath(os.path.expanduser(candidate))
            if _executable(path):
                return path
            if candidate is configured:
                return None  # an explicit path that is wrong is an answer, not a hint
            continue
        found = shutil.which(candidate)
        if found:
            return os.path.abspath(found)
        for d in FALLBACK_DIRS:
            path = os.path.join(d, candidate)
            if _executable(path):
                return path
    return None


async def tool_version(path: str, timeout: float = VERSION_TIMEOUT) -> tuple[str | None, str | None]:
    """``(version, None)`` from the first line of ``<path> --version``, or ``(None, reason)``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            path,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return None, f"cannot run {path}: {exc.strerror or exc}"
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None, f"{path} --version timed out after {timeout:g} s"
    text = (out or b"").decode("utf-8", "replace").strip() or (err or b"").decode("utf-8", "replace").strip()
    first = text.splitlines()[0][:200] if text else ""
    if proc.returncode != 0:
        return None, f"{path} --version exited {proc.returncode}" + (f": {first}" if first else "")
    return (first or None), None


async def probe_tool(tool: str, binary: str, configured: str | None) -> ToolInfo:
    path = resolve_binary(binary, configured)
    if path is None:
        where = configured or binary
        return ToolInfo(tool, False, reason=f"{where} not found (tool_paths, PATH, {', '.join(FALLBACK_DIRS)})")
    version, problem = await tool_version(path)
    if problem is not None:
        return ToolInfo(tool, False, path=path, reason=problem)
    return ToolInfo(tool, True, path=path, version=version)


async def detect_tools(
    tool_paths: Mapping[str, str], *, opencode_binary: str = "opencode"
) -> dict[str, ToolInfo]:
    """Probe every known tool concurrently."""
    names = list(TOOLS)
    probes = []
    for tool in names:
        key, default = TOOLS[tool]
        binary = opencode_binary if tool == "opencode" else default
        probes.append(probe_tool(tool, binary, tool_paths.get(key) or None))
    results = await asyncio.gather(*probes)
    return dict(zip(names, results, strict=True))
