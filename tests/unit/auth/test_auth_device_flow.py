"""DeviceFlow: the challenge comes back at once, the end of the login later, nothing blocks."""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path

import pytest

from halswarm.agent.auth.device_flow import DeviceFlow, FlowResult

pytestmark = pytest.mark.process  # runs stand-in CLIs as processes

REC = Path(__file__).parent / "recorded"
ENV = {"PATH": "/usr/bin:/bin"}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "flow.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


async def test_challenge_returned_before_the_flow_ends(tmp_path: Path) -> None:
    recorded = REC / "codex_device_auth_challenge.stdout.txt"
    argv = [script(tmp_path, f"cat {shlex.quote(str(recorded))}; sleep 3; echo 'Successfully logged in'; exit 0")]
    done: list[FlowResult] = []
    flow = DeviceFlow("codex", argv, ENV, on_done=lambda _f, r: done.append(r))
    started = time.monotonic()
    res = await flow.start()
    assert time.monotonic() - started < 2.5  # the flow itself runs 3 s
    assert res.status == "challenge"
    assert (res.challenge_url, res.user_code) == ("https://auth.openai.com/codex/device", "K7QH-2XWPM")
    assert res.expires_at is not None and flow.running and not done
    for _ in range(200):
        if done:
            break
        await asyncio.sleep(0.05)
    assert done and done[0].status == "success" and done[0].flow_id == res.flow_id


async def test_output_arriving_in_pieces(tmp_path: Path) -> None:
    argv = [script(tmp_path, "echo 'Go to: https://auth.openai.com/codex/device'; sleep 0.3; "
                             "printf 'Enter code: '; sleep 0.2; echo 'AB12-CD34'; sleep 5")]
    flow = DeviceFlow("opencode", argv, ENV)
    res = await flow.start()
    assert (res.status, res.user_code) == ("challenge", "AB12-CD34")
    await flow.cancel()
    assert flow.final is not None and flow.final.status == "failure"


async def test_early_failure_is_returned_directly(tmp_path: Path) -> None:
    offline = REC / "codex_device_auth_offline.stderr.txt"
    argv = [script(tmp_path, f"cat {shlex.quote(str(offline))} >&2; exit 1")]
    res = await DeviceFlow("codex", argv, ENV).start()
    assert res.status == "failure"
    assert res.reason is not None and res.reason.startswith("Error logging in: error sending request")


async def test_flow_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    argv = [script(tmp_path, f"echo 'Go to: https://x.test/device'; echo 'Enter code: ZZZZ-9999'; "
                             f"sleep 30 & echo $! > {pidfile}; wait")]
    done: list[FlowResult] = []
    flow = DeviceFlow("codex", argv, ENV, timeout=1.0, on_done=lambda _f, r: done.append(r))
    assert (await flow.start()).status == "challenge"
    for _ in range(100):
        if done:
            break
        await asyncio.sleep(0.05)
    assert done and done[0].status == "failure" and "timed out" in (done[0].reason or "")
    child = int(pidfile.read_text())
    await asyncio.sleep(0.1)
    assert not _alive(child)


async def test_no_challenge_in_time(tmp_path: Path) -> None:
    flow = DeviceFlow("codex", [script(tmp_path, "sleep 30")], ENV, challenge_timeout=0.5)
    res = await flow.start()
    assert res.status == "failure" and "no verification URL" in (res.reason or "")
    assert not flow.running


async def test_missing_binary(tmp_path: Path) -> None:
    res = await DeviceFlow("codex", [str(tmp_path / "nope")], ENV).start()
    assert res.status == "failure" and "cannot start device flow" in (res.reason or "")
