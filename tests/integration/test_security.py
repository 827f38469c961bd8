"""TLS really served on both ports, origin allowlist, separate operator token."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.agentsim import SimAgent

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")


@pytest.fixture
def cert(tmp_path):  # type: ignore[no-untyped-def]
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return crt, key


async def test_tls_on_agent_and_api_ports(make_supervisor, cert):
    crt, key = cert
    sup = make_supervisor(security={"tls": {"enabled": True, "cert_path": str(crt), "key_path": str(key)}})
    sup.tls_ca = crt
    await asyncio.to_thread(sup.start)
    ctx = sup.verify
    base = sup.api
    assert base.startswith("https://")
    r = await asyncio.to_thread(httpx.get, base + "/api/v1/nodes", verify=ctx,
                                headers={"Authorization": f"Bearer {sup.token}"})
    assert r.status_code == 200
    # Plain http on the TLS port does not work.
    with pytest.raises(httpx.HTTPError):
        await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{sup.http_port}/healthz", timeout=2)
    async with connect(sup.ws_url, ssl=ctx,
                       additional_headers={"Authorization": f"Bearer {sup.agent_token}"}) as ws:
        from halswarm.protocol import Register, decode, encode

        await ws.send(encode(Register(node_id="tls-node")))
        assert decode(await ws.recv()).type == "registered"


async def test_origin_allowlist_allows_agents_without_origin(make_supervisor):
    sup = make_supervisor(security={"origin_allowlist": ["https://ops.example.test"]}).start()
    agent = SimAgent(sup.ws_url, sup.agent_token, "no-origin")
    await agent.connect()  # agents send no Origin header: never locked out
    await agent.close()
    hdr = {"Authorization": f"Bearer {sup.agent_token}"}
    with pytest.raises(InvalidStatus) as info:
        async with connect(sup.ws_url, additional_headers=hdr, origin="https://evil.example.test"):
            pass
    assert info.value.response.status_code == 403
    async with connect(sup.ws_url, additional_headers=hdr, origin="https://ops.example.test"):
        pass


async def test_operator_token_is_separate_from_agent_token(make_supervisor):
    op = "o" * 48  # the legacy single operator token: an admin named "operator"
    sup = make_supervisor(security={"operator_token": op}).start()
    async with httpx.AsyncClient(base_url=sup.api) as c:
        assert (await c.get("/api/v1/nodes", headers={"Authorization": f"Bearer {op}"})).status_code == 200
        r = await c.get("/api/v1/nodes", headers={"Authorization": f"Bearer {sup.agent_token}"})
        assert r.status_code == 401
    with pytest.raises(InvalidStatus):
        async with connect(sup.ws_url, additional_headers={"Authorization": f"Bearer {op}"}):
            pass
