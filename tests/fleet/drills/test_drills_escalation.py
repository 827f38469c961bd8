"""Escalation drills on the real fleet (issue #6, SPEC 8/10): `halctl diagnostics collect -o FILE`, and a
repair that really fails -> `halctl remediate` escalates with a complete, secret-free bundle.

The fault: the fleet token pasted into the supervisor config's ``log.level`` and no valid config backup
left. The real hal-supervisor refuses the config and echoes the bad value (the token) into its journal on
every start attempt; the supervisor-crashed planner has no safe action (escalate). The bundle must still
hold that journal, with the token masked. The supervisor is down while halctl reports, so the escalated
report is queued and sent by the next `halctl remediate`, after the fleet was restored.
"""

from __future__ import annotations

import json
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from halswarm.ops import diagnostics
from tests.support.fleet.env import AUTH_TOKEN
from tests.support.fleet.fleet import AGENT_UNIT, SUP_CONFIG, SUP_UNIT, DrillFleet

pytestmark = pytest.mark.timeout(1500)
MASK = "[REDACTED]"
ASIDE = "/root/drill-escalation"
BACKUP_DIR = "/etc/hal-o-swarm/backups"


def _remediate(fleet: DrillFleet, incident: str, *args: str) -> tuple[int, dict]:
    return fleet.remediate(incident, *args)


def _extract(bundle: Path, dest: Path) -> Path:
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())
    return top


def _no_token_anywhere(tree: Path) -> None:
    leaks = [str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()
             and AUTH_TOKEN.encode() in p.read_bytes()]
    assert not leaks, f"the fleet token is in {leaks}"


def _check_hosts(top: Path, fleet: DrillFleet) -> None:
    sup, agent = top / "hosts" / fleet.sup, top / "hosts" / fleet.agent
    assert "Started hal-supervisor.service" in (sup / "journal" / f"{SUP_UNIT}.log").read_text()
    assert "hal-agent" in (agent / "journal" / f"{AGENT_UNIT}.log").read_text()
    for host, unit in ((sup, SUP_UNIT), (agent, AGENT_UNIT)):
        info = (host / "system" / "info.txt").read_text()
        assert "$ uname -a" in info and "$ df -h" in info and "$ free -h" in info and "$ uptime" in info
        show = (host / "system" / f"{unit}.show.txt").read_text()
        assert "NRestarts=" in show and "MemoryMax=" in show
    cfg = json.loads((sup / "config" / "supervisor.config.json").read_text())
    assert cfg["security"]["operators"][0]["token_file"] == "/etc/hal-o-swarm/supervisor.token"
    assert json.loads((agent / "config" / "agent.config.json").read_text())["node_id"] == fleet.agent
    db = json.loads((sup / "db" / "summary.json").read_text())
    assert db["integrity_check"] == ["ok"] and db["size_bytes"] > 0 and db["row_counts"]["nodes"] >= 1
    events = json.loads((sup / "db" / "recent_events.json").read_text())
    assert events and all("type" in e for e in events)


def test_diagnostics_collect_writes_one_secret_free_tarball(fleet: DrillFleet, tmp_path: Path) -> None:
    out = fleet.workdir / "collect" / "bundle.tar.gz"
    proc = fleet.halctl("diagnostics", "collect", "-o", str(out), "-i", str(fleet.inventory), "--state-dir",
                        str(fleet.state_dir), log=f"drill-{fleet.prefix}-diagnostics-collect.log")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    top = _extract(out, tmp_path / "x")
    assert top.name == "bundle"
    _check_hosts(top, fleet)
    manifest = json.loads((top / "MANIFEST.json").read_text())
    assert manifest["hosts"] == sorted(fleet.hosts)
    _no_token_anywhere(top)


@pytest.fixture
def broken_supervisor(fleet: DrillFleet) -> Iterator[DrillFleet]:
    """The token in log.level, config backups moved aside; afterwards the valid config back, restarted."""
    good = fleet.sha256(fleet.sup, SUP_CONFIG)[SUP_CONFIG]
    fleet.sh(fleet.sup, f"mkdir -p {ASIDE} && cp -a {SUP_CONFIG} {ASIDE}/supervisor.config.json && "
                        f"if [ -d {BACKUP_DIR} ]; then mv {BACKUP_DIR} {ASIDE}/backups; fi")
    try:
        fleet.sh(fleet.sup, f"""python3 - <<'EOF'
import json
p = "{SUP_CONFIG}"
d = json.load(open(p))
d.setdefault("log", {{}})["level"] = "{AUTH_TOKEN}"
json.dump(d, open(p, "w"))
EOF
! systemctl restart {SUP_UNIT}  # refused: Type=notify makes systemctl report the failed start""")
        # From here systemd retries it (Restart=on-failure): a crash loop, never `active`.
        assert fleet.active(fleet.sup, SUP_UNIT) != "active"
        yield fleet
    finally:
        fleet.sh(fleet.sup, f"cp -a {ASIDE}/supervisor.config.json {SUP_CONFIG} && if [ -d {ASIDE}/backups ]; "
                            f"then rm -rf {BACKUP_DIR} && mv {ASIDE}/backups {BACKUP_DIR}; fi && rm -rf {ASIDE} && "
                            f"systemctl reset-failed {SUP_UNIT}; systemctl restart {SUP_UNIT}")
        assert fleet.sha256(fleet.sup, SUP_CONFIG)[SUP_CONFIG] == good
        fleet.exec(fleet.agent, "systemctl", "restart", AGENT_UNIT)
        assert fleet.wait_node_online(120), "the fleet did not come back after the escalation drill"


def test_failed_repair_escalates_with_a_complete_secret_free_bundle(broken_supervisor: DrillFleet,
                                                                     tmp_path: Path) -> None:
    fleet = broken_supervisor
    deadline = time.monotonic() + 60  # the real daemon echoes the pasted token into its journal
    while AUTH_TOKEN not in fleet.journal(fleet.sup, SUP_UNIT):
        assert time.monotonic() < deadline, "hal-supervisor never logged the bad config value"
        time.sleep(1)
    assert fleet.active(fleet.sup, SUP_UNIT) != "active"

    rc, report = _remediate(fleet, "supervisor-crashed", "-e", "hal_remediation_verify_timeout=10")
    assert rc == 1 and report["status"] == "escalated", report
    assert AUTH_TOKEN not in json.dumps(report), "the report quotes the token"
    esc = report["escalation"]
    bundle = Path(esc["bundle"])
    assert bundle.is_file() and bundle.parent == fleet.state_dir / "diagnostics"
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert esc["sha256"] == diagnostics.sha256(bundle) and esc["size"] == bundle.stat().st_size
    assert esc["collected_at"].endswith("Z") and esc["secret_scan"] == {"passed": True, "findings": 0}
    saved = sorted((fleet.state_dir / "remediations").glob(f"*-supervisor-crashed-{report['id'][:8]}.json"))
    assert saved and json.loads(saved[0].read_text())["status"] == "escalated"

    top = _extract(bundle, tmp_path / "x")
    _no_token_anywhere(top)
    _check_hosts(top, fleet)
    journal = (top / "hosts" / fleet.sup / "journal" / f"{SUP_UNIT}.log").read_text()
    assert f"(got '{MASK}')" in journal  # the token line is there, masked
    sup_cfg = json.loads((top / "hosts" / fleet.sup / "config" / "supervisor.config.json").read_text())
    assert sup_cfg["log"]["level"] == MASK
    (failed,) = list((top / "report").iterdir())
    failed_report = json.loads(failed.read_text())
    assert failed_report["id"] == report["id"] and failed_report["status"] == "failed"
    assert failed_report["incident"] == "supervisor-crashed" and failed_report["decision"] == "present"

    # The supervisor was down: the report is queued, then sent by the next run once the fleet is back.
    assert list((fleet.state_dir / "remediations" / "unsent").glob(f"*{report['id']}.json"))
    fleet.sh(fleet.sup, f"cp -a {ASIDE}/supervisor.config.json {SUP_CONFIG} && systemctl reset-failed {SUP_UNIT};"
                        f" systemctl restart {SUP_UNIT}")
    assert fleet.wait_node_online(120)
    rc, healthy = _remediate(fleet, "supervisor-crashed")
    assert rc == 0 and healthy["status"] == "not_present", healthy
    assert not list((fleet.state_dir / "remediations" / "unsent").glob("*.json"))
    runs = fleet.api("/api/v1/remediations?incident=supervisor-crashed&status=escalated")["body"]["data"]
    assert [r["id"] for r in runs][:1] == [report["id"]] and runs[0]["escalation"]["bundle"] == str(bundle)
    events = fleet.api("/api/v1/events?type=remediation.escalated")["body"]["data"]
    mine = [e for e in events if e["data"].get("id") == report["id"]]
    assert mine and mine[0]["data"]["status"] == "escalated"
    assert mine[0]["data"]["escalation"]["sha256"] == esc["sha256"]


def test_no_escalate_keeps_failed_without_bundle(broken_supervisor: DrillFleet) -> None:
    fleet = broken_supervisor
    before = set((fleet.state_dir / "diagnostics").glob("*.tar.gz"))
    rc, report = _remediate(fleet, "supervisor-crashed", "--no-escalate", "--no-send",
                                 "-e", "hal_remediation_verify_timeout=10")
    assert rc == 1 and report["status"] == "failed" and "escalation" not in report, report
    assert set((fleet.state_dir / "diagnostics").glob("*.tar.gz")) == before
