"""Data drills on the real fleet (real systemd, real SQLite, real ansible through ``halctl remediate``):

- supervisor-db-corruption: garbage over the pages of an index while the supervisor is stopped; the
  supervisor then refuses to start (its start-up quick_check, issue #5); ``--check`` changes nothing;
  the remediation salvages every row (the tables are intact) and the supervisor is ready again.
  A second drill trashes table pages too, so the recovery is incomplete: the newest valid backup is
  restored and the recovered rows it lacks are merged back.
- lost-session-data: rows written, backed up (``halctl backup create``), then deleted from the live
  database; the remediation copies exactly the missing rows back and keeps what was written since.
- high-latency: a deterministic, real cause: old session-output events with large payloads. The API's
  default events page (oldest first, 100 rows) then carries ~100 x 256 KiB, so the median GET takes
  hundreds of ms on this machine against a few ms on a healthy fleet; the drill sets the threshold to
  150 ms (x5-10 margin each way, robust to the shared 2-core host) and the archive age to 7 days (the
  events are 10-20 days old, so the supervisor's own 30-day retention job never races the drill).

``FAULTS`` maps each incident to the function that injects its fault (bench/drills measures MTTR with them).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.fleet.fleet import SUP_CONFIG, SUP_DB, SUP_UNIT, DrillFleet

pytestmark = pytest.mark.timeout(2400)

SVC_USER = "hal-supervisor"
BACKUP_DIR = "/var/backups/hal-o-swarm"
ARCHIVE = "/var/lib/hal-o-swarm/supervisor/archive/events-archive.db"
LATENCY_VARS = ("-e", "hal_remediation_latency_threshold_ms=150", "-e", "hal_remediation_archive_days=7")
OLD_EVENTS, OLD_EVENT_BYTES = 150, 256 * 1024
SEED_EVENTS, SEED_SESSIONS = 200, 4

_QUERY = """
import json, sqlite3, sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
print(json.dumps([list(r) for r in c.execute(sys.argv[2]).fetchall()]))
"""
_WRITE = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
c.executescript(sys.argv[2])
c.commit()
"""
_SEED = """
import json, sqlite3, sys, time
n_sessions, n_events, old, size = (int(x) for x in sys.argv[2:6])
c = sqlite3.connect(sys.argv[1], timeout=30)
now = time.time()
node = c.execute("SELECT id FROM nodes ORDER BY id LIMIT 1").fetchone()[0]
with c:
    for i in range(n_sessions):
        c.execute("INSERT OR REPLACE INTO sessions(id, node_id, project, status, model, started_at, last_activity)"
                  " VALUES (?, ?, 'drill', 'completed', 'drill-model', ?, ?)", (f"drill-s{i}", node, now - 3600, now))
    for i in range(n_events):
        ts = now - (10 + 10 * i / max(n_events, 1)) * 86400 if old else now - 60 + i / 1000
        data = json.dumps({"output": ("%06d " % i) * (size // 7)}) if size else json.dumps({"i": i})
        c.execute("INSERT INTO events(node_id, seq, event_id, session_id, project, type, data, ts, received_at)"
                  " VALUES (NULL, NULL, ?, ?, 'drill', 'session.output', ?, ?, ?)",
                  (f"drill-{'old' if old else 'e'}-{i}", f"drill-s{i % max(n_sessions, 1)}", data, ts, ts))
"""
# Overwrite the pages of the named b-trees (an index, or a table's leaves) with garbage, past page 1.
_CORRUPT = """
import os, random, sqlite3, sys
db, names = sys.argv[1], sys.argv[2].split(",")
c = sqlite3.connect("file:" + db + "?mode=ro", uri=True)
size = c.execute("PRAGMA page_size").fetchone()[0]
pages = set()
for name in names:
    root = c.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (name,)).fetchone()[0]
    pages.add(root)
    try:
        pages.update(r[0] for r in c.execute("SELECT pageno FROM dbstat WHERE name=?", (name,)))
    except sqlite3.Error:
        pass
c.close()
rnd = random.Random(6)
with open(db, "r+b") as f:
    for p in sorted(pages):
        if p > 1:
            f.seek((p - 1) * size + 8)
            f.write(bytes(rnd.randrange(256) for _ in range(size - 8)))
    f.flush()
    os.fsync(f.fileno())
print(len(pages))
"""


def q(fleet: DrillFleet, sql: str, db: str = SUP_DB) -> list[list]:
    return json.loads(fleet.exec(fleet.sup, "python3", "-c", _QUERY, db, sql))


def write(fleet: DrillFleet, sql: str) -> None:
    """SQL as the service user on the live database (the supervisor may be running: WAL, busy timeout)."""
    fleet.exec(fleet.sup, "runuser", "-u", SVC_USER, "--", "python3", "-c", _WRITE, SUP_DB, sql)


def seed(fleet: DrillFleet, sessions: int, events: int, old: bool = False, size: int = 0) -> None:
    fleet.exec(fleet.sup, "runuser", "-u", SVC_USER, "--", "python3", "-c", _SEED, SUP_DB, str(sessions),
               str(events), "1" if old else "0", str(size), timeout=300)


def backup_create(fleet: DrillFleet) -> None:
    proc = fleet.halctl("backup", "create", "-i", str(fleet.inventory), log=f"drill-{fleet.prefix}-backup.log")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def clean_drill_rows(fleet: DrillFleet) -> None:
    write(fleet, "DELETE FROM events WHERE event_id LIKE 'drill-%'; DELETE FROM sessions WHERE id LIKE 'drill-%';")


# ----- faults -----

def _corrupt(fleet: DrillFleet, names: str) -> None:
    fleet.exec(fleet.sup, "systemctl", "stop", SUP_UNIT)
    # fold the write-ahead log into the file first, or its newer copies of the pages would hide the damage
    write(fleet, "PRAGMA wal_checkpoint(TRUNCATE);")
    fleet.exec(fleet.sup, "python3", "-c", _CORRUPT, SUP_DB, names)
    fleet.exec(fleet.sup, "systemctl", "start", SUP_UNIT, check=False)


def corrupt_index(fleet: DrillFleet) -> None:
    """Stop the supervisor, write garbage over the pages of two events indexes, try to start it (refused)."""
    _corrupt(fleet, "idx_events_ts,idx_events_type_ts")


def corrupt_tables(fleet: DrillFleet) -> None:
    """Like corrupt_index, plus garbage over the pages of the sessions table (rows are lost)."""
    _corrupt(fleet, "idx_events_ts,sessions")


def lose_session_data(fleet: DrillFleet) -> None:
    """Sessions and events written, backed up, then deleted from the live database (supervisor running)."""
    seed(fleet, SEED_SESSIONS, SEED_EVENTS)
    backup_create(fleet)
    write(fleet, "DELETE FROM events WHERE event_id LIKE 'drill-e-%'; DELETE FROM sessions WHERE id LIKE 'drill-s%';")


def slow_down(fleet: DrillFleet) -> list[str]:
    """Old (10-20 days) session-output events with 256 KiB payloads at the head of the default events page.
    Returns the halctl arguments the drill runs with (threshold 150 ms, archive age 7 days)."""
    seed(fleet, 0, OLD_EVENTS, old=True, size=OLD_EVENT_BYTES)
    return list(LATENCY_VARS)


FAULTS: dict[str, Callable[[DrillFleet], list[str] | None]] = {
    "supervisor-db-corruption": corrupt_index,
    "lost-session-data": lose_session_data,
    "high-latency": slow_down,
}


# ----- helpers -----

def remediate(fleet: DrillFleet, incident: str, *args: str) -> tuple[int, dict]:
    return fleet.remediate(incident, *args)


def repair(fleet: DrillFleet) -> None:
    """Leave the fleet healthy even when a drill failed half-way (corrupt database: remediate it).

    Runs in ``finally``: it must not raise over the drill's own failure. What it cannot mend is left to
    the ``fleet`` fixture, which fails the next drill loudly with the supervisor's journal."""
    if fleet.active(fleet.sup, SUP_UNIT) != "active":  # Type=notify: active means it passed its check
        remediate(fleet, "supervisor-db-corruption")
    if fleet.active(fleet.sup, SUP_UNIT) == "active":
        try:
            clean_drill_rows(fleet)
        except AssertionError as exc:  # podman_exec's failure
            print(f"repair: drill rows not removed: {exc}", file=sys.stderr)


def refused_to_start(fleet: DrillFleet, since: float, timeout: float = 30) -> bool:
    """The supervisor's start-up quick_check refused the database (issue #5), it is not running, and
    systemd never counted one of its attempts as started (Type=notify: no READY=1 before the check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = fleet.journal(fleet.sup, SUP_UNIT, since=since)
        if "failed its integrity check" in log:
            time.sleep(2)
            log = fleet.journal(fleet.sup, SUP_UNIT, since=since)
            started = [line for line in log.splitlines() if "Started " in line and "HAL-O-SWARM supervisor" in line]
            assert not started, f"systemd counted a refused start as started: {started}"
            return fleet.active(fleet.sup, SUP_UNIT) != "active"
        time.sleep(1)
    return False


def snapshot(fleet: DrillFleet) -> dict[str, str]:
    return fleet.sha256(fleet.sup, SUP_DB, SUP_CONFIG)


def ids(fleet: DrillFleet, table: str, col: str = "id") -> set:
    return {r[0] for r in q(fleet, f"SELECT {col} FROM {table}")}


def data_files(fleet: DrillFleet) -> list[str]:
    """The backup and data directories' files, without SQLite's -wal/-shm/-journal: systemd's restart
    attempts of a supervisor that refuses its database open it for the check and so create and remove
    them on their own, whatever a --check run does."""
    out = fleet.sh(fleet.sup, f"ls -1 {BACKUP_DIR} /var/lib/hal-o-swarm/supervisor 2>/dev/null; true")
    return [n for n in out.splitlines() if not n.endswith(("-wal", "-shm", "-journal"))]


def assert_check_changes_nothing(fleet: DrillFleet, incident: str, *extra: str, db_stable: bool = True) -> dict:
    before = snapshot(fleet)
    files = data_files(fleet)
    rc, report = remediate(fleet, incident, "--check", *extra)
    assert rc == 0 and report["status"] == "check", report
    assert report["decision"] == "present", report
    after = snapshot(fleet)
    assert after[SUP_CONFIG] == before[SUP_CONFIG]
    if db_stable:
        assert after[SUP_DB] == before[SUP_DB], "--check changed the database"
    assert data_files(fleet) == files, "--check created or removed files"
    return report


@pytest.fixture(autouse=True)
def _drop_drill_backups(fleet: DrillFleet) -> Iterator[None]:
    """Backups a drill takes hold its drill rows; left behind, they would make the next drill's healthy
    fleet look like it lost data. Remove the files a drill added to the backup directory."""
    ls = f"ls -1 {BACKUP_DIR} 2>/dev/null; true"
    before = set(fleet.sh(fleet.sup, ls).split())
    yield
    added = set(fleet.sh(fleet.sup, ls).split()) - before
    if added:
        fleet.sh(fleet.sup, "rm -f " + " ".join(f"{BACKUP_DIR}/{n}" for n in sorted(added)), check=False)


# ----- drills -----

def test_db_corruption_refused_start_then_recovered(fleet: DrillFleet) -> None:
    rc, report = remediate(fleet, "supervisor-db-corruption")
    assert rc == 0 and report["status"] == "not_present", report
    seed(fleet, SEED_SESSIONS, SEED_EVENTS)
    events, sessions, nodes = ids(fleet, "events"), ids(fleet, "sessions"), ids(fleet, "nodes")
    try:
        started = time.time()
        corrupt_index(fleet)
        assert refused_to_start(fleet, started), "the supervisor started on a corrupt database"
        report = assert_check_changes_nothing(fleet, "supervisor-db-corruption")
        assert fleet.active(fleet.sup, SUP_UNIT) != "active"

        rc, report = remediate(fleet, "supervisor-db-corruption")
        assert rc == 0 and report["status"] == "verified", report
        ver = report["verification"]["details"][fleet.sup]
        assert ver["integrity"] == "ok" and int(ver["readyz_status"]) == 200, ver
        assert ver["source"].strip() == "recovered", ver
        assert fleet.active(fleet.sup, SUP_UNIT) == "active"
        # every row is back (the tables were intact, only index pages were trashed)
        assert events <= ids(fleet, "events") and sessions <= ids(fleet, "sessions") and nodes <= ids(fleet, "nodes")
        assert q(fleet, "PRAGMA integrity_check") == [["ok"]]
        kept = fleet.exec(fleet.sup, "sh", "-c", f"ls {SUP_DB}.corrupt.*").split()
        assert kept, "the corrupt file was not kept"
        assert fleet.wait_node_online(90)
    finally:
        repair(fleet)


def test_db_corruption_with_lost_rows_restores_backup_and_merges_recovered(fleet: DrillFleet) -> None:
    seed(fleet, SEED_SESSIONS, 50)
    backup_create(fleet)
    write(fleet, "INSERT INTO events(node_id, seq, event_id, project, type, data, ts, received_at) "
                 "VALUES (NULL, NULL, 'drill-after-backup', 'drill', 'drill.marker', '{}', "
                 "strftime('%s','now'), strftime('%s','now'));")
    sessions = ids(fleet, "sessions")
    try:
        started = time.time()
        corrupt_tables(fleet)
        assert refused_to_start(fleet, started)
        rc, report = remediate(fleet, "supervisor-db-corruption")
        assert rc == 0 and report["status"] == "verified", report
        ver = report["verification"]["details"][fleet.sup]
        assert ver["source"].strip() == "backup + recovered rows", ver
        assert ver["integrity"] == "ok" and int(ver["readyz_status"]) == 200
        # the sessions (trashed leaves) come from the backup; the event written after the backup from
        # the recovered file (merged), so nothing the two together hold is lost
        assert sessions <= ids(fleet, "sessions")
        assert q(fleet, "SELECT count(*) FROM events WHERE event_id='drill-after-backup'") == [[1]]
        assert fleet.wait_node_online(90)
    finally:
        repair(fleet)


def test_lost_session_data_merged_back_from_backup(fleet: DrillFleet) -> None:
    backup_create(fleet)
    rc, report = remediate(fleet, "lost-session-data")
    assert rc == 0 and report["status"] == "not_present", report
    try:
        lose_session_data(fleet)
        expected = {f"drill-e-{i}" for i in range(SEED_EVENTS)}
        assert not expected & ids(fleet, "events", "event_id")
        write(fleet, "INSERT INTO events(node_id, seq, event_id, project, type, data, ts, received_at) "
                     "VALUES (NULL, NULL, 'drill-newer', 'drill', 'drill.marker', '{}', "
                     "strftime('%s','now'), strftime('%s','now'));")
        report = assert_check_changes_nothing(fleet, "lost-session-data", db_stable=False)
        assert not expected & ids(fleet, "events", "event_id"), "--check put rows back"

        rc, report = remediate(fleet, "lost-session-data")
        assert rc == 0 and report["status"] == "verified", report
        ver = report["verification"]["details"][fleet.sup]
        assert ver["missing_before"]["events"] >= SEED_EVENTS and ver["missing_before"]["sessions"] >= SEED_SESSIONS
        assert all(int(n) == 0 for n in ver["missing_after"].values()), ver
        now = ids(fleet, "events", "event_id")
        assert expected <= now and "drill-newer" in now  # lost rows back, newer row kept
        assert {f"drill-s{i}" for i in range(SEED_SESSIONS)} <= ids(fleet, "sessions")
        assert fleet.active(fleet.sup, SUP_UNIT) == "active" and fleet.wait_node_online(90)
        rc, report = remediate(fleet, "lost-session-data")
        assert rc == 0 and report["status"] == "not_present", report
    finally:
        repair(fleet)


def test_high_latency_old_events_archived(fleet: DrillFleet) -> None:
    rc, report = remediate(fleet, "high-latency", *LATENCY_VARS)
    assert rc == 0 and report["status"] == "not_present", report
    try:
        slow_down(fleet)
        report = assert_check_changes_nothing(fleet, "high-latency", *LATENCY_VARS, db_stable=False)
        assert q(fleet, "SELECT count(*) FROM events WHERE event_id LIKE 'drill-old-%'") == [[OLD_EVENTS]]

        rc, report = remediate(fleet, "high-latency", *LATENCY_VARS)
        assert rc == 0 and report["status"] == "verified", report
        ver = report["verification"]["details"][fleet.sup]
        assert float(ver["api_latency_ms_before"]) > 150 > float(ver["api_latency_ms"]), ver
        assert int(ver["archived"]) == OLD_EVENTS and int(ver["old_events"]) == 0, ver
        assert int(ver["db_size"]) < int(ver["db_size_before"]), ver
        assert q(fleet, "SELECT count(*) FROM events WHERE event_id LIKE 'drill-old-%'") == [[0]]
        assert q(fleet, "SELECT count(*) FROM events WHERE event_id LIKE 'drill-old-%'", ARCHIVE) == [[OLD_EVENTS]]
        assert fleet.active(fleet.sup, SUP_UNIT) == "active" and fleet.wait_node_online(90)
        print("high-latency drill:", json.dumps({k: ver[k] for k in ("api_latency_ms_before", "api_latency_ms",
                                                                       "query_ms_before", "query_ms")}))
    finally:
        repair(fleet)


_LAUNCH = """
import dataclasses, pathlib, sys
from halswarm.config.supervisor import load_supervisor_config
from halswarm.supervisor.features.remediations.db_launch import launch_db_remediation
from halswarm.supervisor.features.remediations.settings import AutoConfig
cfg, _ = load_supervisor_config(sys.argv[1])
cfg = dataclasses.replace(cfg, remediation_inventory=sys.argv[2], database_path=sys.argv[3])
auto = dataclasses.replace(AutoConfig.from_config(cfg), request_dir=pathlib.Path(sys.argv[4]))
print(launch_db_remediation(auto))
"""
# The supervisor launches supervisor-db-corruption only when its `remediation.auto` lists it, and the root
# runner checks the same list in the same file: a deployment that wants the launch lists it there.
_SET_INVENTORY = """
import json, sys
doc = json.load(open(sys.argv[1]))
rem = doc.setdefault("remediation", {})
rem["inventory"] = sys.argv[2]
rem["auto"] = sorted(set(rem.get("auto") or []) | {"supervisor-db-corruption"})
open(sys.argv[1], "w").write(json.dumps(doc, indent=2))
"""
REQUESTS = "/var/lib/hal-o-swarm/supervisor/remediation-requests"
REQUEST_UNIT = "hal-supervisor-remediate.service"


def test_db_corruption_start_up_launch_through_the_root_path_unit(fleet: DrillFleet) -> None:
    """The supervisor's start-up launch of `supervisor-db-corruption` (issue 23 point 7) with the
    privileges the deployed daemon has (a service as the supervisor's user, NoNewPrivileges, which cannot
    start a root unit): it writes a request; the role's root hal-supervisor-remediate.path starts the
    oneshot service, which validates it and runs the fixed `halctl remediate` command line with the
    config's inventory (here a missing one: the run fails fast, touching nothing). A forged request (an
    incident off the allowlist) is refused and removed, and runs nothing."""
    work = "/run/hal-drill-launch"
    inventory = f"{work}/no-such-inventory.yml"
    assert fleet.active(fleet.sup, "hal-supervisor-remediate.path") == "active"
    assert fleet.sh(fleet.sup, f"stat -c %U:%a {REQUESTS}").strip() == f"{SVC_USER}:700"
    runs_dir = "/var/lib/hal-o-swarm/supervisor/remediation-runs"
    had_runs_dir = fleet.sh(fleet.sup, f"test -d {runs_dir} && echo yes || true").strip() == "yes"
    config = fleet.exec(fleet.sup, "cat", SUP_CONFIG)
    fleet.sh(fleet.sup, f"install -d -o {SVC_USER} -m 0700 {work}")
    since = time.time() - 1
    try:
        # The root runner takes the inventory from the supervisor's config, never from the request.
        fleet.exec(fleet.sup, "python3", "-c", _SET_INVENTORY, SUP_CONFIG, inventory)
        started = time.monotonic()
        out = fleet.exec(fleet.sup, "systemd-run", "--wait", "--pipe", "--quiet", "-p", f"User={SVC_USER}",
                         "-p", "NoNewPrivileges=yes", "/opt/hal-o-swarm/current/bin/python", "-c", _LAUNCH,
                         SUP_CONFIG, inventory, f"{work}/supervisor.db", REQUESTS, timeout=180).strip()
        assert out.startswith(f"auto remediation requested ({REQUESTS}/supervisor-db-corruption-"), out
        assert f"{REQUEST_UNIT} runs `halctl remediate supervisor-db-corruption -i {inventory}" in out, out
        stamp = json.loads(fleet.exec(fleet.sup, "cat", f"{work}/supervisor.db.auto-remediation.json"))
        assert stamp["unit"] == REQUEST_UNIT
        deadline = time.monotonic() + 120
        while "halctl remediate exited" not in (log := fleet.journal(fleet.sup, REQUEST_UNIT, since=since)):
            assert time.monotonic() < deadline, f"{REQUEST_UNIT} never ran the request:\n{log}"
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        assert ": accepted (supervisor-db-corruption)" in log, log
        assert f"running `halctl remediate supervisor-db-corruption -i {inventory} --limit" in log, log
        assert fleet.exec(fleet.sup, "ls", "-A", REQUESTS).strip() == ""  # consumed

        # A forged request (the supervisor's user can write anything there): refused, removed, nothing run.
        since = time.time() - 1
        forged = json.dumps({"schema": 1, "incident": "agent-crashed", "requested_at": int(time.time())})
        fleet.exec(fleet.sup, "setpriv", f"--reuid={SVC_USER}", f"--regid={SVC_USER}", "--clear-groups", "sh", "-c",
                   f"printf '%s' '{forged}' > {work}/f.json && mv {work}/f.json {REQUESTS}/forged-1.json")
        deadline = time.monotonic() + 60
        while "forged-1.json: refused" not in (log := fleet.journal(fleet.sup, REQUEST_UNIT, since=since)):
            assert time.monotonic() < deadline, f"{REQUEST_UNIT} never looked at the forged request:\n{log}"
            time.sleep(0.5)
        # Judge only the runner process that took the forged request: `since` has second granularity, so
        # the slice can still hold the end of the valid request's run a moment earlier.
        refused = next(line for line in log.splitlines() if "forged-1.json: refused" in line)
        runner = refused.split("hal-supervisor-remediate[", 1)[1].split("]", 1)[0]
        mine = [line for line in log.splitlines() if f"hal-supervisor-remediate[{runner}]" in line]
        assert "is not one a request may start" in refused, log
        assert not any("running `" in line for line in mine), log
        assert fleet.exec(fleet.sup, "ls", "-A", REQUESTS).strip() == ""
        assert fleet.active(fleet.sup, SUP_UNIT) == "active"
        print("db-corruption start-up request drill:", json.dumps({"request_to_run_s": round(elapsed, 1)}))
    finally:
        fleet.exec(fleet.sup, "python3", "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                   SUP_CONFIG, config, check=False)
        fleet.sh(fleet.sup, f"rm -rf {work}; find {REQUESTS} -mindepth 1 -delete", check=False)
        if not had_runs_dir:
            fleet.sh(fleet.sup, f"rm -rf {runs_dir}", check=False)
