"""Metric labels chosen by agents are bounded: known event types plus `other`."""

from __future__ import annotations

from halswarm.core.metric_labels import OTHER, event_type_label


def test_event_type_labels_are_bounded() -> None:
    assert event_type_label("session.idle") == "session.idle"
    assert event_type_label("message.part.delta") == "message.part.delta"
    assert {event_type_label(f"made.up.{i}") for i in range(3000)} == {OTHER}
