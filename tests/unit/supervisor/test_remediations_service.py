"""RemediationsService without HTTP: a posted report is validated, stored with its audit row, routed by
the one routing rule, refused when repeated; the history filters. Real SQLite, a recording event sink."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from halswarm.core.remediation.report import build_report
from halswarm.store.db import connect
from halswarm.store.migrations import migrate
from halswarm.store.reader import Reader
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.remediations.service import MAX_REPORT_BYTES, RemediationsService


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str | None, str, dict[str, Any]]] = []

    async def emit_stored(self, node_id: str | None, ev_type: str, data: Any = None) -> bool:
        self.events.append((node_id, ev_type, data))
        return True


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[tuple[RemediationsService, Sink]]:
    conn = connect(tmp_path / "s.db")
    migrate(conn)
    writer = Writer(conn)
    writer.start(asyncio.get_running_loop())
    reader = Reader(tmp_path / "s.db")
    sink = Sink()
    yield RemediationsService(writer, reader, sink), sink  # type: ignore[arg-type]
    await writer.stop()
    reader.close()
    conn.close()


def _raw(status: str, hosts: list[str]) -> bytes:
    r = build_report("agent-crashed", hosts=hosts, facts={"n1": {"token": "s3cret"}}, plan={"decision": "present"},
                     status=status, started=1.0, finished=2.0)
    return json.dumps(r).encode()


async def test_record_stores_routes_and_refuses_a_repeat(svc: Any) -> None:
    service, sink = svc
    raw = _raw("failed", ["n1"])
    stored = await service.record(raw, actor="ops", ip="127.0.0.1", client_actor="me@host")
    assert stored["actor"] == "ops" and stored["facts"]["n1"]["token"] == "***"
    assert [(n, t, d["status"]) for n, t, d in sink.events] == [("n1", "remediation.escalated", "failed")]
    with pytest.raises(ApiError) as exc:
        await service.record(raw, actor="ops", ip=None, client_actor=None)
    assert exc.value.code == "CONFLICT" and len(sink.events) == 1
    await service.record(_raw("verified", ["n1", "n2"]), actor="ops", ip=None, client_actor=None)
    assert sink.events[-1][:2] == (None, "remediation.completed")
    items, total = await service.history(incident=None, status=None, host="n2", since=None, limit=10, offset=0)
    assert total == 1 and items[0]["status"] == "verified"


@pytest.mark.parametrize(("raw", "code"), [
    (b"x" * (MAX_REPORT_BYTES + 1), "BAD_REQUEST"),
    (b"{not json", "BAD_REQUEST"),
    (b'{"id": "x"}', "VALIDATION_ERROR"),
])
async def test_bad_reports_are_refused_and_nothing_is_stored(svc: Any, raw: bytes, code: str) -> None:
    service, sink = svc
    with pytest.raises(ApiError) as exc:
        await service.record(raw, actor="ops", ip=None, client_actor=None)
    assert exc.value.code == code and sink.events == []
    assert (await service.history(incident=None, status=None, host=None, since=None, limit=10, offset=0))[1] == 0


async def test_unknown_status_filter_is_a_validation_error(svc: Any) -> None:
    with pytest.raises(ApiError, match="status must be one of"):
        await svc[0].history(incident=None, status="nope", host=None, since=None, limit=10, offset=0)
