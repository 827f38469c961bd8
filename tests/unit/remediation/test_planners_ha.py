"""Planner fixtures of the HA topology (issue 21): several supervisors on one PostgreSQL store. Facts in,
commands out, no hosts: supervisor-crashed restarts only the dead supervisor while the others carry on, and
escalates to the database when the shared store does not answer; supervisor-db-corruption on PostgreSQL
never plans SQLite file surgery and names PostgreSQL's own tools and the pg_dump backups."""

from __future__ import annotations

from typing import Any

from halswarm.core.remediation.planners import plan

ACTIVE = {"load_state": "loaded", "active_state": "active", "sub_state": "running", "n_restarts": 0}
FAILED = {"load_state": "loaded", "active_state": "failed", "sub_state": "failed", "n_restarts": 5}
URL = "postgresql://halswarm@hal-db-1:5432/halswarm"
PG = {"engine": "postgresql", "url": URL, "reachable": True}
BACKUP = "/var/backups/hal-o-swarm/supervisor-20261207T020000Z.pgdump"
SQLITE_ACTIONS = {"keep_corrupt_copy", "recover_db", "install_recovered", "restore_db", "merge_recovered"}


def fleet(states: dict[str, dict[str, Any]], storage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each supervisor's facts as the playbook collects them: its own unit, the others as peers."""
    out = {}
    for host, state in states.items():
        out[host] = {"host": host, "supervisor": state, "config_valid": True,
                     "peers": [{"host": h, "active_state": s["active_state"], "sub_state": s["sub_state"]}
                               for h, s in states.items() if h != host],
                     **({"storage": storage} if storage else {})}
    return out


def test_only_the_dead_supervisor_is_restarted_while_the_others_carry_on() -> None:
    plans = {h: plan("supervisor-crashed", f) for h, f in
             fleet({"sup-a": ACTIVE, "sup-b": FAILED, "sup-c": ACTIVE}, PG).items()}
    assert plans["sup-a"].decision == plans["sup-c"].decision == "not_present"
    assert plans["sup-a"].actions == plans["sup-c"].actions == []
    b = plans["sup-b"]
    assert b.decision == "present" and [a.name for a in b.actions] == ["restart_service"]
    assert b.actions[0].params == {"unit": "hal-supervisor.service", "host": "sup-b"}
    assert b.actions[0].description == ("systemctl reset-failed hal-supervisor.service; "
                                        "systemctl restart hal-supervisor.service")
    assert any("2 other supervisor(s) running (sup-a, sup-c)" in r and "only sup-b is restarted" in r
               for r in b.reasons)


def test_all_supervisors_down_restarts_each_and_says_the_fleet_is_blind() -> None:
    plans = {h: plan("supervisor-crashed", f) for h, f in fleet({"sup-a": FAILED, "sup-b": FAILED}, PG).items()}
    for host, p in plans.items():
        assert p.decision == "present" and p.actions[0].params["host"] == host
        assert any("no other supervisor is running" in r for r in p.reasons)


def test_unreachable_shared_store_escalates_to_postgresql_instead_of_restarting() -> None:
    storage = {**PG, "reachable": False, "error": "connection refused", "pgpass": "/etc/hal-o-swarm/db.pgpass"}
    p = plan("supervisor-crashed", fleet({"sup-a": FAILED, "sup-b": FAILED}, storage)["sup-a"])
    assert p.decision == "escalate" and p.actions == []
    assert any("does not answer: connection refused" in r for r in p.reasons)
    assert any("the other supervisors are down too: sup-b" in r for r in p.reasons)
    assert f"pg_isready -d '{URL}'" in p.guidance
    assert f"PGPASSFILE='/etc/hal-o-swarm/db.pgpass' psql -X -w -d '{URL}' -c 'SELECT 1'" in p.guidance
    assert not any("password" in g.lower() and "=" in g and "PGPASSFILE" not in g for g in p.guidance)


def test_single_supervisor_on_sqlite_is_unchanged() -> None:
    p = plan("supervisor-crashed", {"supervisor": FAILED, "config_valid": True})
    assert p.decision == "present" and [a.name for a in p.actions] == ["restart_service"]
    assert p.actions[0].params == {"unit": "hal-supervisor.service"} and p.guidance == []


def test_db_corruption_on_postgresql_never_plans_sqlite_file_surgery() -> None:
    # Even with SQLite-shaped facts of a stray file beside it, PostgreSQL decides.
    facts = {"storage": {**PG, "integrity": "pg_amcheck: btree index \"events_pkey\" is corrupt"},
             "pg_backup": BACKUP, "db": {"exists": True, "integrity": "malformed"}}
    p = plan("supervisor-db-corruption", facts)
    assert p.decision == "manual" and p.actions == []
    assert not SQLITE_ACTIONS & {a.name for a in p.actions}
    assert any("events_pkey" in r for r in p.reasons) and f"newest pg_dump backup: {BACKUP}" in p.reasons
    assert any(g.startswith("on the database host, as the postgres OS user: pg_amcheck --install-missing "
                            "--heapallindexed") for g in p.guidance)
    restore = ("ansible-playbook -i INVENTORY halswarm.ops.restore "
               "-e hal_restore_backup='supervisor-20261207T020000Z.pgdump'")
    assert any(restore in g and "hal_restore_pg_url=postgresql://ROLE@HOST:5432/DB_restored" in g
               and "createdb" in g for g in p.guidance)
    in_place = ("or in place (stops every supervisor, replaces what the backup holds): "
                f"{restore} -e hal_restore_force=true")
    assert in_place in p.guidance


def test_db_corruption_on_postgresql_unreachable_is_manual_with_the_commands() -> None:
    p = plan("supervisor-db-corruption", {"storage": {**PG, "reachable": False, "error": "timeout expired"}})
    assert p.decision == "manual" and p.actions == []
    assert p.reasons[0] == f"{URL} does not answer: timeout expired"
    assert any("no pg_dump backup found" in r for r in p.reasons)
    assert any("hal_restore_backup=latest" in g for g in p.guidance)
    assert p.guidance[0] == f"pg_isready -d '{URL}'"


def test_db_corruption_on_a_healthy_postgresql_is_not_present() -> None:
    p = plan("supervisor-db-corruption", {"storage": PG, "pg_backup": BACKUP})
    assert p.decision == "not_present" and p.actions == []
    assert "pg_amcheck" in p.reasons[0]
    p = plan("supervisor-db-corruption", {"storage": {"engine": "postgresql", "url": URL}})
    assert p.decision == "unknown"


def test_db_corruption_on_sqlite_keeps_its_file_recovery() -> None:
    p = plan("supervisor-db-corruption", {"db": {"exists": True, "integrity": "malformed"}})
    assert p.decision == "present" and "recover_db" in [a.name for a in p.actions]


def test_a_quote_in_the_url_cannot_break_out_of_the_command() -> None:
    p = plan("supervisor-db-corruption", {"storage": {"engine": "postgresql", "url": "postgresql://a'b@h/db",
                                                      "reachable": False}})
    assert p.guidance[0] == "pg_isready -d 'postgresql://a'\\''b@h/db'"
