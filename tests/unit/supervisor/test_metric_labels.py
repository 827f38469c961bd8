"""Metric labels chosen by agents are bounded: known event types plus `other`."""

from __future__ import annotations

from halswarm.core.metric_labels import OTHER, event_type_label


def test_event_type_labels_are_bounded() -> None:
    assert event_type_label("session.idle") == "session.idle"
    assert event_type_label("message.part.delta") == "message.part.delta"
    assert {event_type_label(f"made.up.{i}") for i in range(3000)} == {OTHER}


def test_node_labels_of_the_outbox_gauges_are_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from halswarm.supervisor import metrics as metrics_mod

    monkeypatch.setattr(metrics_mod, "MAX_NODE_LABELS", 3)
    m = metrics_mod.Metrics()
    for i in range(10):
        m.set_agent_outbox(f"node-{i}", 1, 10, 0)
    m.set_agent_outbox("node-0", 5, 10, 0)  # a node already labelled keeps being updated
    samples = {s.labels["node"]: s.value for s in next(iter(m.agent_outbox_pending.collect())).samples}
    assert samples == {"node-0": 5, "node-1": 1, "node-2": 1}
