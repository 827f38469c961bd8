"""Secrets never leave (issue 14): tokens only in the Authorization header, every configured secret
redacted by value from the log (debug level, third-party loggers included), stored rows and API answers,
and the supervisor's files readable by its user only."""

from __future__ import annotations

import asyncio
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.fakes.fake_providers import ANTHROPIC_KEY, OPENAI_KEY, fake_providers
from tests.support.agentsim import SimAgent, new_session_id, session_state
from tests.support.ports import free_port
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
NODE_TOKEN = "n0de" * 10


def _cost(url: str) -> dict:
    return {"poll_interval_minutes": 60, "degraded_retry_seconds": 60, "request_timeout_seconds": 2,
            "max_retries": 0, "backoff_base_ms": 10,
            "providers": {"anthropic": {"admin_api_key": ANTHROPIC_KEY, "base_url": url},
                          "openai": {"org_api_key": OPENAI_KEY, "base_url": url}}}


async def test_token_in_the_url_is_refused_even_when_valid(supervisor):  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"{supervisor.ws_url}?token={supervisor.agent_token}", open_timeout=10):
            pass
    assert info.value.response.status_code == 401
    assert b"Authorization: Bearer" in info.value.response.body
    # Header and query together: still refused (the URL already leaked it).
    with pytest.raises(InvalidStatus):
        async with connect(f"{supervisor.ws_url}?token={supervisor.agent_token}", open_timeout=10,
                           additional_headers={"Authorization": f"Bearer {supervisor.agent_token}"}):
            pass


async def test_secrets_absent_from_debug_log_db_and_api_answers(make_supervisor):  # type: ignore[no-untyped-def]
    with fake_providers() as fake:
        fake.echo_key = {"anthropic", "openai"}  # their 401 bodies repeat the key, as real providers do
        sup = make_supervisor(cost=_cost(fake.url), security={"agent_tokens": {"node-s": NODE_TOKEN},
                                                              "allow_shared_agent_token": True}).start()
        secrets = {"operator token": sup.token, "shared agent token": sup.agent_token, "node token": NODE_TOKEN,
                   "anthropic key": ANTHROPIC_KEY, "openai key": OPENAI_KEY}
        # Agents on the shared and the per-node token (websockets logs the upgrade headers at debug).
        for node, token in (("node-shared", sup.agent_token), ("node-s", NODE_TOKEN)):
            agent = SimAgent(sup.ws_url, token, node, projects=[("p", "/srv/p")])
            await agent.connect(sessions=[session_state(new_session_id(), "p")])
            if node == "node-s":  # an agent echoing secrets in its event data (a tool's output, say)
                await agent.send_event(1, "tool.output", data={"stdout": f"ANTHROPIC_API_KEY={ANTHROPIC_KEY}",
                                                               "argv": ["curl", "-H", f"X-Token: {NODE_TOKEN}"]})
                await agent.wait_acked(1)
            await agent.close()
        with pytest.raises(InvalidStatus):  # a token in the URL is refused and logged: its value never is
            async with connect(f"{sup.ws_url}?token={sup.agent_token}", open_timeout=10):
                pass

        def api() -> list[str]:
            with sup.client() as c:
                r = c.post("/api/v1/cost/refresh", json={})
                assert r.status_code == 200, r.text
                assert set(r.json()["data"]["results"].values()) == {False}
                return [r.text] + [c.get(p).text for p in ("/api/v1/cost/status", "/api/v1/cost", "/api/v1/audit",
                                                           "/api/v1/events?type=tool.output")]

        answers = await asyncio.to_thread(api)
        assert "Incorrect API key provided" in answers[1]  # the provider's reason is served, minus the key
        assert "ANTHROPIC_API_KEY=[REDACTED]" in answers[4]  # the event is stored and served, minus the key
        assert fake.count() >= 2
        wait_for(lambda: "Incorrect API key provided" in sup.log_path.read_text(), what="the provider failure logged")
        log_text = sup.log_path.read_text()
        files = {p.name: p.read_bytes() for p in sup.db_path.parent.glob("supervisor.db*")}
        for what, value in secrets.items():
            for i, body in enumerate(answers):
                assert value not in body, f"{what} in API answer {i}"
            assert value not in log_text, f"{what} in the supervisor's debug log"
            for name, data in files.items():
                assert value.encode() not in data, f"{what} in {name}"
        assert "Authorization: Bearer [REDACTED]" in log_text or "Bearer [REDACTED]" in log_text
        assert "Incorrect API key provided: [REDACTED]" in log_text


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_local_mode_state_is_private(tmp_path):  # type: ignore[no-untyped-def]
    state = tmp_path / "state"
    ws, http = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "halswarm.supervisor.main", "--local", "--state-dir", str(state),
                             "--port", str(ws), "--http-port", str(http)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**_env(), "HAL_LOCAL_AGENT": "0"})
    try:
        wait_for(lambda: _ready(f"http://127.0.0.1:{http}/readyz"), timeout=30, what="supervisor ready")
        token = (state / "operator.token").read_text().strip()
        r = httpx.post(f"http://127.0.0.1:{http}/api/v1/cost/refresh", json={},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)  # writes an audit row
        assert r.status_code < 500, r.text
        wait_for(lambda: (state / "supervisor.db-wal").exists(), what="WAL file")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [state, *state.iterdir()]}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert modes.pop("state") == 0o700, modes
    assert {n: m for n, m in modes.items() if m & 0o077} == {}, modes
    assert {"operator.token", "agent.token", "supervisor.db", "supervisor.db-wal", "supervisor.db-shm"} <= set(modes)


def test_existing_world_readable_database_is_tightened(tmp_path, make_supervisor):  # type: ignore[no-untyped-def]
    sup = make_supervisor()
    sup.workdir.mkdir(parents=True)
    sup.db_path.write_bytes(b"")
    sup.db_path.chmod(0o644)
    sup.start()
    try:
        assert stat.S_IMODE(sup.db_path.stat().st_mode) == 0o600
        for suffix in ("-wal", "-shm"):
            extra = sup.db_path.with_name(sup.db_path.name + suffix)
            if extra.exists():
                assert stat.S_IMODE(extra.stat().st_mode) == 0o600, suffix
    finally:
        sup.stop()


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "HAL_AUTH_TOKEN"}


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
