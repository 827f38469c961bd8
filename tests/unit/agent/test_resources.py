"""sample_resources: exactly the SPEC keys, numeric, sane, non-blocking."""

from __future__ import annotations

import time

from halswarm.agent.resources import RESOURCE_KEYS, sample_resources
from halswarm.protocol import Heartbeat, decode, encode

SPEC_KEYS = {"cpu_percent", "ram_used_mb", "ram_total_mb", "disk_used_gb", "disk_total_gb"}


def test_exact_keys_and_types() -> None:
    res = sample_resources()
    assert set(res) == SPEC_KEYS == set(RESOURCE_KEYS)
    assert all(type(v) is float for v in res.values())


def test_sane_ranges() -> None:
    res = sample_resources("/")
    assert 0.0 <= res["cpu_percent"] <= 100.0
    assert res["ram_total_mb"] > 16  # any real machine or container
    assert 0.0 < res["ram_used_mb"] <= res["ram_total_mb"]
    assert res["disk_total_gb"] > 0.0
    assert 0.0 <= res["disk_used_gb"] <= res["disk_total_gb"]


def test_non_blocking() -> None:
    sample_resources()
    start = time.monotonic()
    for _ in range(20):
        sample_resources()
    assert time.monotonic() - start < 0.9  # cpu_percent(interval=None) never sleeps


def test_missing_disk_path_falls_back_to_root() -> None:
    res = sample_resources("/definitely/not/here")
    assert res["disk_total_gb"] == sample_resources("/")["disk_total_gb"]


def test_survives_the_heartbeat_codec() -> None:
    res = sample_resources()
    assert decode(encode(Heartbeat(resources=res))).payload.resources == res
