"""Fixture tests of the data planners: supervisor-db-corruption, lost-session-data, high-latency."""

from __future__ import annotations

from halswarm.core.remediation import planners
from halswarm.core.remediation.planners import plan


def names(p: planners.Plan) -> list[str]:
    return [a.name for a in p.actions]


def whens(p: planners.Plan) -> dict[str, str | None]:
    return {a.name: a.when for a in p.actions}


# ----- supervisor-db-corruption -----

def test_corruption_unknown_and_not_present() -> None:
    assert plan("supervisor-db-corruption", {}).decision == planners.UNKNOWN
    assert plan("supervisor-db-corruption", {"db": {"exists": False}}).decision == planners.NOT_PRESENT
    healthy = {"db": {"exists": True, "integrity": "ok"}}
    assert plan("supervisor-db-corruption", healthy).decision == planners.NOT_PRESENT
    assert plan("supervisor-db-corruption", {"db": {"exists": True, "integrity": ""}}).decision == planners.UNKNOWN


def test_corruption_with_backup_recovers_then_falls_back() -> None:
    p = plan("supervisor-db-corruption", {"db": {"integrity": "row 3 missing from index idx_events_ts"},
                                          "db_backup": "/var/backups/hal-o-swarm/supervisor-20260101T000000Z.db"})
    assert p.present and p.decision == planners.PRESENT
    assert names(p) == ["stop_service", "keep_corrupt_copy", "recover_db", "install_recovered", "restore_db",
                        "merge_recovered", "start_service"]
    w = whens(p)
    assert w["install_recovered"] == "recover_db complete"
    assert w["restore_db"] == "recover_db failed or incomplete" and w["merge_recovered"] == "recover_db incomplete"
    assert p.actions[4].params["backup"].endswith("Z.db")
    assert any("idx_events_ts" in r for r in p.reasons)
    assert "PRAGMA integrity_check = ok" in p.verify


def test_corruption_without_backup_installs_whatever_recovers() -> None:
    p = plan("supervisor-db-corruption", {"db": {"integrity": "database disk image is malformed"}})
    assert "restore_db" not in names(p) and "merge_recovered" not in names(p)
    assert whens(p)["install_recovered"] == "recover_db succeeded"
    assert any("no valid backup" in r for r in p.reasons)


# ----- lost-session-data -----

LIVE = {"sessions": 5, "events": 10}
BACKUP = {"sessions": 6, "events": 90}


def test_lost_not_present_cases() -> None:
    assert plan("lost-session-data", {}).decision == planners.UNKNOWN
    assert plan("lost-session-data", {"live_counts": LIVE, "backup_counts": None}).decision == planners.NOT_PRESENT
    # more rows than the backup but some of its keys missing: present (counts alone would miss it)
    p = plan("lost-session-data", {"live_counts": {"sessions": 9, "events": 900}, "backup_counts": BACKUP,
                                   "missing_rows": 3, "missing_by_table": {"events": 3, "sessions": 0}})
    assert p.present and p.reasons == ["events: 3 rows of the backup missing from the live database"]
    # fewer rows than the backup but every key present (retention): not present
    p = plan("lost-session-data", {"live_counts": LIVE, "backup_counts": BACKUP, "missing_rows": 0})
    assert p.decision == planners.NOT_PRESENT


def test_lost_corrupt_live_database_is_the_corruption_incident() -> None:
    p = plan("lost-session-data", {"db": {"integrity": "malformed"}, "live_counts": LIVE, "backup_counts": BACKUP,
                                   "missing_rows": 80})
    assert p.decision == planners.NOT_PRESENT and "supervisor-db-corruption" in p.reasons[0]


def test_lost_plan_merges_the_configured_tables() -> None:
    p = plan("lost-session-data", {"db": {"integrity": "ok"}, "live_counts": LIVE, "backup_counts": BACKUP,
                                   "missing_rows": 81, "missing_by_table": {"sessions": 1, "events": 80},
                                   "db_backup": "/b/x.db", "tables": ["sessions", "events", "session_usage"]})
    assert names(p) == ["stop_service", "snapshot_db", "merge_from_backup", "start_service"]
    merge = p.actions[2]
    assert merge.params == {"backup": "/b/x.db", "tables": ["sessions", "events", "session_usage"]}
    assert p.verify[0] == "no row of the backup missing from the live DB"


# ----- high-latency -----

def test_latency_threshold_is_configurable() -> None:
    facts = {"api_latency_ms": 400, "query_ms": 20, "old_events": 150}
    assert plan("high-latency", facts).decision == planners.NOT_PRESENT  # runbook default: 5000 ms
    p = plan("high-latency", facts | {"threshold_ms": 150})
    assert p.present and p.reasons[0] == "api latency 400 ms > 150 ms"
    assert plan("high-latency", {}).decision == planners.UNKNOWN
    assert plan("high-latency", {"api_latency_ms": None, "query_ms": 3}).decision == planners.NOT_PRESENT


def test_latency_backs_up_before_archiving_with_the_configured_age() -> None:
    p = plan("high-latency", {"api_latency_ms": 900, "query_ms": 20, "old_events": 150, "threshold_ms": 150,
                              "archive_days": 7})
    assert names(p) == ["backup_db", "stop_service", "archive_events", "optimize_db", "start_service"]
    assert p.actions[2].params == {"older_than_days": 7}
    assert "150 events older than 7 days" in p.reasons
    p = plan("high-latency", {"api_latency_ms": 900, "query_ms": 20, "old_events": 0, "threshold_ms": 150})
    assert "archive_events" not in names(p) and names(p)[0] == "backup_db"
    assert plan("high-latency", {"query_ms": 6000, "old_events": 1}).actions[2].params == {
        "older_than_days": planners.ARCHIVE_DAYS}
