"""Metric labels chosen by agents are bounded: known event types plus `other`."""

from __future__ import annotations

from halswarm.core.metric_labels import OTHER, event_type_label


def test_event_type_labels_are_bounded() -> None:
    assert event_type_label("session.idle") == "session.idle"
    assert event_type_label("message.part.delta") == "message.part.delta"
    assert {event_type_label(f"made.up.{i}") for i in range(3000)} == {OTHER}


def test_node_labels_of_the_per_node_series_are_bounded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Node ids are chosen by agents: at most `max_nodes` of them are rendered, the online ones first, and a
    node's own figures (here its outbox) only while it is connected."""
    from halswarm.core.model import Node
    from halswarm.supervisor.runtime.live_metrics import LiveMetrics

    nodes = {f"node-{i}": Node(id=f"node-{i}", status="online" if i >= 5 else "offline",
                               resources={"outbox_pending": float(i), "outbox_max_events": 10.0})
             for i in range(10)}
    live = LiveMetrics(nodes, lambda: ["node-5", "node-6", "node-0"], {}, tmp_path / "x.db",
                       rss_fn=lambda: None, limit_fn=lambda: None, max_nodes=3)
    fams = {f.name: {s.labels["node"]: s.value for s in f.samples} for f in live.collect()
            if f.name.startswith("hal_o_swarm_node_") or f.name.startswith("hal_o_swarm_agent_outbox")}
    assert fams["hal_o_swarm_node_up"] == {"node-5": 1, "node-6": 1, "node-7": 1}
    assert fams["hal_o_swarm_node_connected"] == {"node-5": 1, "node-6": 1, "node-7": 0}
    assert fams["hal_o_swarm_agent_outbox_pending"] == {"node-5": 5, "node-6": 6}
