"""Auth against a REAL `opencode serve` (providers, PUT /auth) and the REAL device-flow commands."""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from halswarm.agent.auth import AuthService, opencode_restarter
from halswarm.agent.opencode_client import OpencodeClient
from halswarm.agent.opencode_process import OpencodeProcess
from halswarm.protocol import Command

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "npm" / "node_modules" / ".bin"
SECRET = "sk-ant-api03-E2ESECRET-5b1d0c"


@pytest.fixture
def home() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="hal-auth-oc-", dir="/var/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def tool_env(home: Path) -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "npm_config_offline": "true"}


def environ_names(pid: int) -> set[str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return {item.split(b"=", 1)[0].decode() for item in raw.split(b"\0") if item}


async def test_providers_push_and_restart(opencode_factory: Callable[..., OpencodeProcess], home: Path,
                                          tmp_path: Path) -> None:
    proc = opencode_factory(home, None)
    await proc.start()
    client: OpencodeClient | None = None
    svc: AuthService | None = None
    try:
        async with asyncio.timeout(60):
            url = await proc.wait_running()
        client = OpencodeClient(url, timeout=15.0)
        frames: list[Any] = []
        svc = AuthService(None, frames.append, lambda: client, node_id="e2e", data_dir=str(tmp_path / "data"),
                          base_env=tool_env(home), restart_opencode=opencode_restarter(lambda: proc))
        await svc.refresh(("opencode",))
        st = svc.states["opencode"]
        assert (st.status, st.detail.get("source")) == ("unauthenticated", "server")

        # a provider key goes to opencode's own store through its API: no restart needed
        res = await svc.handle_credential_push(Command("p1", "credential_push", args={
            "env_vars": {"ANTHROPIC_API_KEY": SECRET}, "version": 2}))
        assert res.status == "success", res.error
        assert res.output["opencode"] == {"providers": ["anthropic"], "restarted": False}
        assert svc.states["opencode"].reason == "providers connected: anthropic"
        auth_file = home / ".local" / "share" / "opencode" / "auth.json"
        assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600  # opencode's file, opencode's mode

        # an external edit of auth.json shows without a restart (peers.md 2)
        doc = json.loads(auth_file.read_text())
        doc["openai"] = {"type": "api", "key": "sk-ext"}
        auth_file.write_text(json.dumps(doc))
        await asyncio.sleep(1.5)
        await svc.refresh(("opencode",))
        assert svc.states["opencode"].reason == "providers connected: anthropic, openai"

        # a variable opencode only reads from its environment: the managed server is restarted with it
        old_pid = proc.pid
        res = await svc.handle_credential_push(Command("p2", "credential_push", args={
            "env_vars": {"ANTHROPIC_API_KEY": SECRET, "GITHUB_TOKEN": "ghp_E2E_SECRET"}, "version": 3}))
        assert res.status == "success" and res.output["opencode"]["restarted"] is True
        async with asyncio.timeout(60):
            new_url = await proc.wait_running()
        assert proc.pid != old_pid and "GITHUB_TOKEN" in environ_names(proc.pid)  # type: ignore[arg-type]
        await client.aclose()
        client = OpencodeClient(new_url, timeout=15.0)
        await svc.refresh(("opencode",))
        assert svc.states["opencode"].status == "authenticated"
        # Pushed values persist in one 0600 file (they survive an agent restart); nowhere else.
        holders = {p.name for p in (tmp_path / "data").rglob("*")
                   if p.is_file() and SECRET in p.read_text(errors="replace")}
        assert holders <= {"credentials.values.json"}, holders
        for p in (tmp_path / "data").rglob("credentials.values.json"):
            assert p.stat().st_mode & 0o077 == 0, oct(p.stat().st_mode)
    finally:
        if svc is not None:
            await svc.stop()
        if client is not None:
            await client.aclose()
        await proc.stop()


@pytest.mark.parametrize("tool", ["codex", "opencode"])
async def test_real_device_flow_commands(home: Path, tool: str) -> None:
    """The real device logins start without blocking; offline they end with the CLI's own error."""
    if not (BIN / tool).exists():
        pytest.skip(f"{tool} not installed")
    svc = AuthService(None, None, node_id="e2e", data_dir=None, base_env=tool_env(home), challenge_timeout=60)
    try:
        res = await svc.trigger_oauth(tool)
        if res["status"] == "challenge":  # a machine with internet access: a real code came back
            assert res["challenge_url"].startswith("https://") and res["user_code"]
        else:
            assert res["status"] == "failure", res
            expected = "Error logging in" if tool == "codex" else "Failed to authorize"
            assert expected in res["reason"], res
    finally:
        await svc.stop()  # cancels a flow still waiting for its login
