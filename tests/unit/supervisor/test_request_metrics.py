"""The request histogram's labels: the route template, a known method, the status class."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from halswarm.supervisor.http.request_metrics import UNMATCHED, route_label, status_class


@pytest.mark.parametrize(("status", "cls"), [(200, "2xx"), (201, "2xx"), (304, "3xx"), (404, "4xx"), (503, "5xx"),
                                             (99, "other"), (600, "other")])
def test_status_class(status: int, cls: str) -> None:
    assert status_class(status) == cls


def test_route_label_is_the_template_or_unmatched() -> None:
    assert route_label({"route": SimpleNamespace(path="/api/v1/nodes/{node_id}"),
                        "path": "/api/v1/nodes/abc"}) == "/api/v1/nodes/{node_id}"
    assert route_label({"path": "/whatever/the/client/sent"}) == UNMATCHED
    assert route_label({"route": object()}) == UNMATCHED
