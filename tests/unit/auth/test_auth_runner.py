"""run_cli's timeout kills the whole process group; restored_version after a restart; sudo wrapping of
the SSH login commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from halswarm.agent.auth.credentials import CredentialState, CredentialStore, restored_version
from halswarm.agent.auth.probes import Prober
from halswarm.agent.auth.toolenv import ToolEnv
from halswarm.core.auth_status.cli_output import CliResult
from halswarm.ops.ssh_login import as_service_user, login_command, sudo_refused

pytestmark = pytest.mark.process  # runs stand-in CLIs as processes

SLOW_CODEX = """#!/bin/sh
[ "$1" = --version ] && { echo "codex-cli 0.171.0"; exit 0; }
sleep 30 &
echo $! > "$PIDS/child"
echo $$ > "$PIDS/shell"
sleep 30
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose (its parent, the killed shell, is gone; init reaps it)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def test_status_timeout_is_error_and_kills_the_group(tmp_path: Path) -> None:
    bin_dir, pids = tmp_path / "bin", tmp_path / "pids"
    bin_dir.mkdir()
    pids.mkdir()
    (bin_dir / "codex").write_text(SLOW_CODEX)
    (bin_dir / "codex").chmod(0o755)
    toolenv = ToolEnv(base_env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "PIDS": str(pids)})
    st = await Prober(toolenv, timeout=2.0).probe("codex")  # ample for the stand-in to start on a busy host
    assert st.status == "error"
    assert "timed out" in st.reason
    shell, child = (int((pids / n).read_text()) for n in ("shell", "child"))
    assert not _alive(shell), "the CLI itself survived the timeout"
    assert not _alive(child), "a child of the CLI (same process group) survived the timeout"


def test_restored_version_keeps_stored_entries(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    # every value also lives in opencode's store: the version survives the restart
    store.save(CredentialState(4, ["ANTHROPIC_API_KEY"], {"ANTHROPIC_API_KEY": "opencode:anthropic"}, 1.0))
    assert restored_version(store.load()) == 4
    # one value lived in memory only: lost, report 0 so the supervisor pushes again
    store.save(CredentialState(4, ["ANTHROPIC_API_KEY", "GITHUB_TOKEN"],
                               {"ANTHROPIC_API_KEY": "opencode:anthropic"}, 1.0))
    assert restored_version(store.load()) == 0
    store.save(CredentialState(4, ["GITHUB_TOKEN"], {}, 1.0))
    assert restored_version(store.load()) == 0
    assert restored_version(CredentialState(0, [], {})) == 0


@pytest.mark.parametrize(("user", "run_as", "expected"), [
    ("alice", "hal-agent", "sudo -u hal-agent -H -- /opt/bin/codex login --device-auth"),
    ("hal-agent", "hal-agent", "/opt/bin/codex login --device-auth"),
    ("alice", None, "/opt/bin/codex login --device-auth"),
])
def test_login_runs_as_the_service_user(user: str, run_as: str | None, expected: str) -> None:
    assert as_service_user(login_command("codex", "device", "/opt/bin/codex"), user, run_as) == expected


def test_sudo_refusal_is_recognised() -> None:
    assert sudo_refused(CliResult(1, "", "sudo: a password is required\n"))
    assert sudo_refused(CliResult(127, "", "sh: 1: sudo: not found\n"))
    assert not sudo_refused(CliResult(1, "", "Not logged in\n"))
    assert not sudo_refused(CliResult(0, "", ""))
