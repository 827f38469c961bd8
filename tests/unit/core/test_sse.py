"""SSE framing and `Last-Event-ID` parsing (pure)."""

from __future__ import annotations

import pytest

from halswarm.core.sse import LastEventIdError, parse_last_event_id, sse_frame


def test_a_frame_carries_the_event_id_then_one_data_line() -> None:
    assert sse_frame(42, b'{"a":1}') == b'id: 42\ndata: {"a":1}\n\n'


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("  ", None), ("0", 0),
                                                 (" 17 ", 17), (str(2**63 - 1), 2**63 - 1)])
def test_last_event_id_is_an_event_id_or_nothing(value: str | None, expected: int | None) -> None:
    assert parse_last_event_id(value) == expected


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "1e3", str(2**63), "٣", "12a", "9" * 40])
def test_anything_else_is_refused_with_one_line(value: str) -> None:
    with pytest.raises(LastEventIdError) as exc:
        parse_last_event_id(value)
    assert "\n" not in str(exc.value)
