"""The escalation bundle's pure parts: redaction by key and by known value, host collection from real
files and a real SQLite database, the tarball (layout, 0600, scan) and when halctl escalates."""

from __future__ import annotations

import io
import json
import sqlite3
import stat
import tarfile
from pathlib import Path

import pytest

from halswarm.cli import main as halctl_main
from halswarm.cli.remediate_cmd import should_escalate
from halswarm.core.remediation.planners import plan
from halswarm.ops import diagnostics as diag

TOKEN = "s3cr3t-fleet-token-0123456789abcdef0123456789"
AGENT_TOKEN = "agent-tok-9876543210fedcba9876543210"
MASK = "[REDACTED]"


def test_redact_config_by_key_keeps_paths_bools_and_structure() -> None:
    cfg = {"server": {"auth_token": TOKEN, "auth_token_file": "/etc/hal-o-swarm/supervisor.token", "port": 8420},
           "security": {"agent_tokens": {"n1": AGENT_TOKEN}, "operator_token": "op-token-xyz123",
                        "tls": {"enabled": True, "key_path": "/etc/k.pem"}},
           "channels": {"discord": {"webhook_url": "https://discord.com/api/webhooks/1/abcdef", "guild_id": "42"}},
           "cost": {"providers": {"anthropic": {"admin_api_key": "sk-ant-admin-xyz", "enabled": True}}},
           "credentials": {"version": 3, "auto_push": False, "env": {"ANTHROPIC_API_KEY": "sk-ant-123456"}},
           "log": {"level": "info"}}
    out = diag.redact_obj(cfg)
    assert out["server"] == {"auth_token": MASK, "auth_token_file": "/etc/hal-o-swarm/supervisor.token", "port": 8420}
    assert out["security"]["agent_tokens"] == {"n1": MASK} and out["security"]["operator_token"] == MASK
    assert out["security"]["tls"] == {"enabled": True, "key_path": "/etc/k.pem"}
    assert out["channels"]["discord"] == {"webhook_url": MASK, "guild_id": "42"}
    assert out["cost"]["providers"]["anthropic"] == {"admin_api_key": MASK, "enabled": True}
    assert out["credentials"]["auto_push"] is False and out["credentials"]["env"] == {"ANTHROPIC_API_KEY": MASK}
    assert out["log"] == {"level": "info"}
    dumped = json.dumps(out)
    for secret in (TOKEN, AGENT_TOKEN, "op-token-xyz123", "abcdef", "sk-ant-admin-xyz", "sk-ant-123456"):
        assert secret not in dumped
    assert diag.secret_values_in(cfg) >= {TOKEN, AGENT_TOKEN, "sk-ant-123456", "op-token-xyz123"}


def test_known_secret_value_in_a_journal_line_is_masked() -> None:
    journal = (f"2026-01-01T00:00:00 sup hal-supervisor[1]: log.level: must be one of debug, info (got '{TOKEN}')\n"
               f"2026-01-01T00:00:01 agent hal-agent[2]: connecting with {TOKEN[:12]} prefix only\n")
    out = diag.redact_text(journal, [TOKEN])
    assert TOKEN not in out and f"(got '{MASK}')" in out
    assert TOKEN[:12] in out  # only the known value (and pairs by key) is masked, not look-alikes
    assert diag.find_secrets(out, [TOKEN]) == 0 and diag.find_secrets(journal, [TOKEN]) == 1


@pytest.mark.parametrize(("line", "leaked"), [
    ('{"msg": "hello", "auth_token": "abcdef123456"}', "abcdef123456"),
    ("POST /x Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
    ("retrying with password=hunter22 on host", "hunter22"),
    ("api_key: sk-live-123456 in env", "sk-live-123456"),
    ("webhook https://user:pa55word@hooks.example.com/x failed", "pa55word"),
])
def test_secret_pairs_in_free_text_are_masked_by_key(line: str, leaked: str) -> None:
    out = diag.redact_text(line)
    assert leaked not in out and MASK in out


def test_paths_short_values_and_plain_text_are_kept() -> None:
    line = 'auth_token_file=/etc/hal-o-swarm/agent.token node n1 registered ("level": "info")'
    assert diag.redact_text(line, ["abc"]) == line  # "abc" is too short to be masked everywhere


def _db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, node_id TEXT, seq INTEGER, event_id TEXT NOT NULL,
            session_id TEXT, project TEXT, type TEXT NOT NULL, data TEXT, timestamp REAL NOT NULL,
            received_at REAL NOT NULL);
        CREATE TABLE nodes (id TEXT PRIMARY KEY);
        INSERT INTO nodes VALUES ('n1');
    """)
    for i in range(5):
        data = {"i": i, "token": AGENT_TOKEN} if i == 4 else {"i": i, "note": f"pasted {TOKEN} here"}
        conn.execute("INSERT INTO events(node_id, seq, event_id, type, data, timestamp, received_at) "
                     "VALUES ('n1', ?, ?, 'session.idle', ?, ?, ?)", (i, f"e{i}", json.dumps(data), i, i))
    conn.commit()
    conn.close()


def _host_tree(tmp_path: Path) -> dict:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "supervisor.token").write_text(TOKEN + "\n")
    (etc / "supervisor.config.json").write_text(json.dumps(
        {"server": {"auth_token_file": str(etc / "supervisor.token")}, "log": {"level": TOKEN},
         "security": {"agent_tokens": {"n1": AGENT_TOKEN}}}))
    (etc / "agent.config.json").write_text("{ not json: auth_token=" + AGENT_TOKEN + "\n")
    _db(tmp_path / "sup.db")
    return {"units": [], "journal_lines": 10, "events_limit": 3, "database": str(tmp_path / "sup.db"),
            "config_files": [str(etc / "supervisor.config.json"), str(etc / "agent.config.json"),
                             str(etc / "missing.json")],
            "token_files": [str(etc / "supervisor.token"), str(etc / "agent.token")]}


def test_collect_on_a_host_redacts_everything_and_reads_the_db(tmp_path: Path) -> None:
    files, summary = diag.core().collect(**_host_tree(tmp_path))
    assert sorted(files) == ["config/agent.config.json", "config/supervisor.config.json", "db/recent_events.json",
                             "db/summary.json", "system/info.txt"]
    blob = "\n".join(files.values())
    assert TOKEN not in blob and AGENT_TOKEN not in blob
    sup = json.loads(files["config/supervisor.config.json"])
    assert sup["log"]["level"] == MASK and sup["security"]["agent_tokens"]["n1"] == MASK  # by value / by key
    assert files["config/agent.config.json"].startswith("{ not json: auth_token=" + MASK)
    db = json.loads(files["db/summary.json"])
    assert db["integrity_ok"] is True and db["row_counts"] == {"events": 5, "nodes": 1} and db["size_bytes"] > 0
    events = json.loads(files["db/recent_events.json"])
    assert [e["seq"] for e in events] == [4, 3, 2] and events[0]["data"]["token"] == MASK
    assert events[1]["data"]["note"] == f"pasted {MASK} here"
    assert "uname -a" in files["system/info.txt"]
    assert summary["leak_scan"] == {"known_secrets": 2, "findings": 0, "passed": True}
    assert summary["database"]["integrity_ok"] is True and summary["errors"] == []


def test_corrupt_database_is_reported_not_raised(tmp_path: Path) -> None:
    tree = _host_tree(tmp_path)
    raw = bytearray((tmp_path / "sup.db").read_bytes())
    raw[4096:4096 + 8] = b"\xff" * 8  # smash the header of a b-tree page
    (tmp_path / "sup.db").write_bytes(bytes(raw))
    files, summary = diag.core().collect(**tree)
    db = json.loads(files["db/summary.json"])
    assert db["integrity_ok"] is False and summary["database"]["integrity_ok"] is False


def test_bundle_layout_mode_report_and_scan(tmp_path: Path) -> None:
    files, summary = diag.core().collect(**_host_tree(tmp_path))
    report = tmp_path / "failed-report.json"
    report.write_text(json.dumps({"status": "failed", "facts": {"h": {"config_errors": [f"got '{TOKEN}'"]}},
                                  "auth_token": TOKEN}))
    dest = tmp_path / "out" / "hal-diagnostics-x.tar.gz"
    res = diag.write_bundle(dest, {"sup": {"files": files, "summary": summary},
                                   "agent": {"files": {"journal/../../evil.log": "x"}, "summary": {}}},
                            include=[report], secrets=[TOKEN], metadata={"incident": "supervisor-crashed"})
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600 and res["scan"]["passed"] is True
    assert res["sha256"] == diag.sha256(dest) and res["size"] == dest.stat().st_size
    lay = diag.layout(dest)
    assert lay["top"] == "hal-diagnostics-x" and lay["report"] == ["failed-report.json"]
    assert lay["hosts"]["sup"] == {"config": ["config/agent.config.json", "config/supervisor.config.json"],
                                   "db": ["db/recent_events.json", "db/summary.json"], "system": ["system/info.txt"],
                                   "summary.json": ["summary.json"]}
    assert lay["hosts"]["agent"]["journal"] == ["journal/evil.log"]  # no path escapes the host directory
    assert lay["manifest"]["incident"] == "supervisor-crashed" and lay["manifest"]["hosts"] == ["agent", "sup"]
    with tarfile.open(dest) as tar:
        blob = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
    assert TOKEN.encode() not in blob and AGENT_TOKEN.encode() not in blob and b"supervisor-crashed" in blob
    assert diag.escalation_block(dest, secrets=[TOKEN])["secret_scan"] == {"passed": True, "findings": 0}


def test_scan_finds_a_secret_in_any_member(tmp_path: Path) -> None:
    dest = tmp_path / "leaky.tar.gz"
    with tarfile.open(dest, "w:gz") as tar:
        for name, text in (("b/ok.txt", "fine"), ("b/leak.log", f"x {TOKEN} y {TOKEN}")):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    assert diag.scan_tarball(dest, [TOKEN]) == {"passed": False, "findings": 2, "members": ["b/leak.log"],
                                                "known_secrets": 1}


def test_redact_values_masks_quoted_token_in_report_facts_only() -> None:
    report = {"facts": {"h": {"config_errors": [f"log.level: got '{TOKEN}'"], "credential_sync": "in_sync"}}}
    assert diag.redact_values(report, [TOKEN]) == {
        "facts": {"h": {"config_errors": [f"log.level: got '{MASK}'"], "credential_sync": "in_sync"}}}


def _result(decision_facts: dict, verified: bool | None = False) -> dict:
    return {"hosts": {"h": {"plan": plan("supervisor-crashed", decision_facts).to_dict(), "verified": verified}}}


DEAD = {"supervisor": {"load_state": "loaded", "active_state": "failed", "sub_state": "failed", "n_restarts": 1}}


def test_should_escalate_only_failed_repairs() -> None:
    failed = {"status": "failed", "check": False, "incident": "supervisor-crashed"}
    assert should_escalate(failed, _result(DEAD)) is True
    assert should_escalate(failed, _result(DEAD | {"config_valid": False, "config_backup": None})) is True  # escalate
    assert should_escalate(failed | {"check": True}, _result(DEAD)) is False
    assert should_escalate(failed | {"status": "verified"}, _result(DEAD, True)) is False
    assert should_escalate(failed | {"incident": "collect-diagnostics"}, _result(DEAD)) is False
    assert should_escalate(failed, None) is False  # nothing was decided (no host answered): nothing attempted
    facts = {"node_id": "n1", "node_status": "online", "auth_states": {"claude": {"status": "unauthenticated"}}}
    manual = {"hosts": {"h": {"plan": plan("manual-auth-required", facts).to_dict()}}}
    assert manual["hosts"]["h"]["plan"]["decision"] == "manual"
    assert should_escalate(failed | {"incident": "manual-auth-required"}, manual) is False


def test_halctl_diagnostics_collect_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    assert halctl_main.run(["diagnostics", "collect", "--help"]) == 0
    out = capsys.readouterr().out
    assert "-o, --out FILE" in out and "--limit" in out and "--report FILE" in out
    assert halctl_main.run(["remediate", "run", "--help"]) == 0
    assert "--no-escalate" in capsys.readouterr().out


def test_default_output_is_under_the_state_dir(tmp_path: Path) -> None:
    p = diag.default_output(tmp_path, "agent-crashed")
    assert p.parent == tmp_path / "diagnostics" and p.name.startswith("hal-diagnostics-agent-crashed-")
    assert p.name.endswith(".tar.gz")
