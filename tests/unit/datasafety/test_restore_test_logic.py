"""Pure logic of the restore test and the backup size check (collection module_utils, loaded as halctl
loads them): the size anomaly against the median of the previous backups, and the row-count comparison
of a restored backup with the live database."""

from __future__ import annotations

import pytest

from halswarm.ops import datasafety

BACKUP = datasafety.core("backup")
RT = datasafety.load_file_module(
    "ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_restore_test",
    datasafety.core_dir() / "hal_sqlite_restore_test.py")


def test_median_odd_even_and_empty() -> None:
    assert BACKUP.median([3, 1, 2]) == 2.0
    assert BACKUP.median([4, 1, 3, 2]) == 2.5
    with pytest.raises(ValueError):
        BACKUP.median([])


@pytest.mark.parametrize(("size", "anomaly"), [(100, False), (50, False), (200, False), (49, True), (201, True),
                                               (0, True), (10_000, True)])
def test_size_anomaly_bounds(size: int, anomaly: bool) -> None:
    out = BACKUP.size_anomaly(size, [100, 100, 100, 100, 100])
    assert out["anomaly"] is anomaly and out["median"] == 100.0
    assert (out["reason"] is not None) is anomaly


def test_size_anomaly_uses_the_window_of_newest_previous_backups() -> None:
    previous = [100, 100, 100, 1000, 1000, 1000, 1000]  # newest first: the old big ones fall outside
    assert BACKUP.size_anomaly(600, previous, window=3)["anomaly"] is True  # 6x the median 100
    assert BACKUP.size_anomaly(600, previous, window=7)["anomaly"] is False  # 0.6x the median 1000


def test_size_anomaly_needs_history_and_valid_limits() -> None:
    out = BACKUP.size_anomaly(10_000, [100, 100])
    assert out["anomaly"] is False and "not enough history" in out["reason"]
    assert BACKUP.size_anomaly(10, [0, 0, 0])["anomaly"] is True
    assert BACKUP.size_anomaly(0, [0, 0, 0])["anomaly"] is False
    for low, high in ((0, 2), (1.5, 2), (0.5, 1), (-1, 3)):
        with pytest.raises(ValueError):
            BACKUP.size_anomaly(1, [1, 1, 1], low=low, high=high)
    with pytest.raises(ValueError):
        BACKUP.size_anomaly(1, [1], window=0)


def test_compare_counts_tolerates_growth_and_pruning() -> None:
    live = {"events": 500, "audit_log": 3, "schema_migrations": 12, "nodes": 2}
    backup = {"events": 700, "audit_log": 5, "schema_migrations": 12, "nodes": 1}  # retention pruned live since
    assert RT.compare_counts(backup, live) == []
    assert RT.compare_counts({**backup, "events": 100}, live) == []


def test_compare_counts_failures() -> None:
    live = {"events": 500, "schema_migrations": 12, "costs": 4}
    assert RT.compare_counts({"events": 1, "schema_migrations": 13, "costs": 4}, live) == [
        "append-only table schema_migrations has more rows in the backup (13) than live (12)"]
    assert RT.compare_counts({"events": 10, "schema_migrations": 12}, live) == [
        "table costs (4 rows live) is missing from the backup"]
    assert RT.compare_counts({"events": 10, "schema_migrations": 12, "costs": None}, live) == [
        "table costs: cannot count its rows in the backup"]
    empty = RT.compare_counts({"events": 0, "schema_migrations": 0, "costs": 0}, live)
    assert empty == ["the backup holds no rows while the live database holds 516"]
    assert RT.compare_counts({"events": 0}, {"events": 0, "extra": 0}) == []  # both empty, new empty table
    assert RT.compare_counts({"x": 5}, {"x": 3}, append_only=("x",))[0].startswith("append-only table x")


def test_counts_table_is_the_union() -> None:
    assert RT.counts_table({"a": 1}, {"b": 2}) == {"a": {"backup": 1, "live": None}, "b": {"backup": None, "live": 2}}
