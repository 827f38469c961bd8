"""The runbook's manual login driven over SSH, for real: an sshd on 127.0.0.2 with a throwaway host key,
a service user like the role's (shell /usr/sbin/nologin, no authorized_keys; the agent probes as it, in
its HOME), an operator user with a key and a sudoers drop-in (created and removed by the test) allowing
it to run commands as the service user, the real codex CLI. `halctl auth login NODE codex --ssh
--ssh-user OPERATOR --run-as SERVICE --method api-key` logs in through a PTY as the service user via
`sudo -u SERVICE -H` (sudo's password prompt and the key prompt relayed, both answered as operator
input), verifies with `codex login status` (or leaves that to the agent when sudo wants a password),
makes the agent re-report, and the supervisor's view flips to authenticated."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.agent_side import AuthAgent
from tests.support.api import aclient, wait_api
from tests.support.halctl import ahalctl, halctl_argv
from tests.support.ssh_host import SshHost
from tests.support.supervisor_proc import InstalledSupervisorProc

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "npm" / "node_modules" / ".bin"
API_KEY = "sk-test-SSHLOGIN-0123456789abcdef"


def _requirements() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root (useradd, sshd)")
    if not Path("/usr/sbin/sshd").exists():
        problems.append("sshd not installed (apt-get install -y openssh-server)")
    if shutil.which("sudo") is None or shutil.which("visudo") is None:
        problems.append("sudo not installed (apt-get install -y sudo)")
    if not (BIN / "codex").exists():
        problems.append("codex not installed (scripts/install-test-clis.sh)")
    if problems:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("; ".join(problems))
        pytest.skip("; ".join(problems))


SUDO_PASSWORD = "op-Passw0rd-for-sudo"


@pytest_asyncio.fixture
async def env(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    _requirements()
    workdir = Path(tempfile.mkdtemp(prefix="hal-ssh-", dir="/var/tmp"))
    tag = uuid.uuid4().hex[:6]
    host = SshHost(workdir, user=f"halop{tag}", service=f"halsvc{tag}",
                   password=SUDO_PASSWORD if getattr(request, "param", "") == "password" else None)
    sup = InstalledSupervisorProc(tmp_path / "sup")
    agent: AuthAgent | None = None
    try:
        host.start()
        sup.start()
        agent = AuthAgent(sup, "agent-node-1", tmp_path / "agent", service_kwargs={
            "base_env": {"PATH": f"{BIN}:/usr/bin:/bin", "npm_config_offline": "true"},
            "run_as": host.run_as(), "tool_paths": {"claude": "/nonexistent/claude",
                                                    "opencode": "/nonexistent/opencode"}})
        await agent.start()
        yield {"sup": sup, "host": host, "agent": agent}
    finally:
        if agent is not None:
            await agent.stop()
        sup.stop()
        host.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def ssh_args(host: SshHost, *extra: str) -> list[str]:
    return ["--ssh", "--ssh-host", host.host, "--ssh-port", str(host.port), "--ssh-user", host.user,
            "--run-as", str(host.service), "--ssh-key", str(host.client_key), *extra]


@pytest.mark.parametrize("env", ["nopasswd", "password"], indirect=True)
async def test_codex_login_over_ssh_flips_the_supervisor_view(env: dict[str, Any]) -> None:
    sup: InstalledSupervisorProc = env["sup"]
    host: SshHost = env["host"]
    with_password = host.password is not None
    # like the role: the service user has no shell and no key; the operator SSHes in as itself
    assert host.run_as().name == host.service and pwd.getpwnam(str(host.service)).pw_shell == "/usr/sbin/nologin"
    node = await wait_api(sup, "/nodes/agent-node-1/auth", lambda d: "codex" in d["auth_states"])
    assert node["auth_states"]["codex"]["status"] == "unauthenticated"  # probed as the test user, in its HOME
    caps = await wait_api(sup, "/nodes/agent-node-1", lambda d: True)
    assert caps["capabilities"]["auth"]["tools"]["codex"]["path"] == str(BIN / "codex")

    proc = await asyncio.create_subprocess_exec(
        *halctl_argv(sup, "auth", "login", "agent-node-1", "codex",
                     *ssh_args(host, "--known-hosts", str(host.known_hosts), "--method", "api-key")),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    seen = b""

    async def read_until(marker: bytes) -> None:
        nonlocal seen
        async with asyncio.timeout(60):
            while marker not in seen:
                chunk = await proc.stdout.read(1024)  # type: ignore[union-attr]
                assert chunk, f"halctl ended before {marker!r}: {seen!r} {await proc.stderr.read()!r}"  # type: ignore[union-attr]
                seen += chunk

    try:
        if with_password:
            await read_until(f"password for {host.user}".encode())  # sudo's prompt, relayed from the PTY
            proc.stdin.write(SUDO_PASSWORD.encode() + b"\n")
            await proc.stdin.drain()
        await read_until(b"OpenAI API key:")
        proc.stdin.write(API_KEY.encode() + b"\n")  # the operator types the key
        await proc.stdin.drain()
        proc.stdin.close()
        async with asyncio.timeout(120):
            rest, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = (seen + rest).decode(errors="replace")
    assert proc.returncode == 0, f"stdout: {out}\nstderr: {err.decode(errors='replace')}\nsshd: {host.log_tail()}"
    assert API_KEY not in out and SUDO_PASSWORD not in out  # the remote terminal echoed neither
    if with_password:  # `sudo -n` cannot verify without the password: the agent's re-report does
        assert "not verified over SSH: sudo: " in err.decode(), err.decode()
        assert "codex on agent-node-1 (reported by the agent): authenticated" in err.decode()
    else:
        assert "codex on agent-node-1 (verified over SSH): authenticated" in err.decode()
    assert "codex           authenticated       API key configured (codex login)" in out
    # the real state changed in the service user's HOME ...
    assert (host.home / ".codex" / "auth.json").stat().st_uid == host.run_as().uid
    # ... and the supervisor knows at once (the agent's periodic probe is hours away: auth_refresh did it)
    async with aclient(sup, prefix="") as c:
        data = (await c.get("/api/v1/nodes/agent-node-1/auth")).json()["data"]
    assert data["auth_states"]["codex"]["status"] == "authenticated"
    assert data["auth_states"]["codex"]["reason"] == "API key configured (codex login)"
    assert API_KEY.encode() not in sup.log_path.read_bytes()


async def test_unknown_host_key_is_refused(env: dict[str, Any], tmp_path: Path) -> None:
    sup: InstalledSupervisorProc = env["sup"]
    host: SshHost = env["host"]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    res = await ahalctl(sup, "auth", "login", "agent-node-1", "codex", *ssh_args(host, "--known-hosts", str(empty)))
    assert res.returncode == 1
    assert "not found in known_hosts" in res.stderr and "--insecure-host-key" in res.stderr
    # a different key under the right name is a mismatch, also refused
    other = tmp_path / "other_key"
    await asyncio.to_thread(subprocess.run, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                            check=True)
    pub = (tmp_path / "other_key.pub").read_text().split()
    empty.write_text(f"[{host.host}]:{host.port} {pub[0]} {pub[1]}\n")
    res = await ahalctl(sup, "auth", "login", "agent-node-1", "codex", *ssh_args(host, "--known-hosts", str(empty)))
    assert res.returncode == 1 and "does not match" in res.stderr, res.stderr
