"""The supervisor's HTTP API from async tests (a blocking client would stall the loop the test's agent
side runs on)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from tests.support.supervisor_proc import SupervisorProc
from tests.support.waiting import until


def aclient(sup: SupervisorProc, timeout: float = 120.0, prefix: str = "/api/v1") -> httpx.AsyncClient:
    """An async client authenticated as the admin operator; paths are relative to ``prefix``."""
    return httpx.AsyncClient(base_url=sup.api + prefix, headers={"Authorization": f"Bearer {sup.token}"},
                             timeout=timeout)


async def wait_api(sup: SupervisorProc, path: str, pred: Callable[[Any], bool], timeout: float = 30.0,
                   params: Mapping[str, Any] | None = None) -> Any:
    """Poll ``GET /api/v1<path>`` until ``pred(data)`` holds; returns that ``data``."""
    last: list[Any] = [None]
    async with aclient(sup, 10) as c:
        async def met() -> Any:
            r = await c.get(path, params=params)
            last[0] = r.json()
            return r.status_code == 200 and pred(last[0].get("data")) and [last[0]["data"]]

        try:
            return (await until(met, f"GET {path} to meet the condition", timeout, interval=0.2))[0]
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last: {last[0]}") from None


async def events(sup: SupervisorProc, etype: str, **params: Any) -> list[dict[str, Any]]:
    async with aclient(sup, 10) as c:
        r = await c.get("/events", params={"type": etype, "limit": 1000, **params})
        assert r.status_code == 200, r.text
        return r.json()["data"]
