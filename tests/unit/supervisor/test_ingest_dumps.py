"""The `data` column's JSON text: what every stored event's payload is turned into."""

from __future__ import annotations

import datetime as dt
import json

from halswarm.supervisor.runtime.ingest import _dumps


def test_round_trips_event_data_compactly() -> None:
    data = {"delta": "héllo ✓", "n": [1, 2.5, None, True], "nested": {"k": "v"}}
    text = _dumps(data)
    assert json.loads(text) == data
    assert " " not in text.replace("héllo ✓", "")  # compact separators
    assert "héllo ✓" in text  # UTF-8 text, not \\u escapes


def test_what_orjson_refuses_still_serializes() -> None:
    big = 2**70  # beyond 64 bits: orjson raises, the stdlib writes it exactly
    assert json.loads(_dumps({"big": big})) == {"big": big}


def test_non_str_keys_and_unknown_types() -> None:
    assert json.loads(_dumps({1: "a", "b": 2})) == {"1": "a", "b": 2}
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert json.loads(_dumps({"t": when}))["t"].startswith("2026-01-02")
    assert json.loads(_dumps({"o": object()}))["o"].startswith("<object object")  # default=str, never an error


def test_nan_is_stored_as_valid_json() -> None:
    assert json.loads(_dumps({"x": float("nan")})) == {"x": None}  # the stdlib wrote NaN, which is not JSON


def test_stored_rows_have_secret_values_redacted_from_their_data(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from halswarm.core.secret_values import REDACTED, SecretValues
    from halswarm.supervisor.runtime import ingest

    reg = SecretValues()
    monkeypatch.setattr(ingest, "SECRETS", reg)
    rows = [("n", i, f"e{i}", "s", "p", "t", _dumps({"delta": f"part {i}"}), 1.0, 1.0) for i in range(1, 6)]
    assert ingest._scrubbed(rows) is rows
    reg.add("tok-0123456789abcdef")
    leaky = [*rows, ("n", 6, "e6", "s", "p", "t", _dumps({"out": "tok-0123456789abcdef"}), 2.0, 2.0)]
    out = ingest._scrubbed(leaky)
    assert out[:5] == rows and json.loads(out[5][6]) == {"out": REDACTED}
    assert out[5][:6] == leaky[5][:6] and out[5][7:] == leaky[5][7:]
