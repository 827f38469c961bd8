"""The operator runbook, as typed (issue 23): every command in tests/fixtures/runbook/RUNBOOK.md that names
halctl, hal-supervisor, hal-agent or sqlite3 is either run here against a real supervisor (with protocol
agents and the fake cost providers on loopback) and its documented outcome checked, or run on the drill
fleet (systemd, journald, ps/ss, `ssh <host> "X"`: DRILL_RUN in tests/support/runbook.py, run by
tests/fleet/drills/test_drills_runbook.py), or listed in NOT_RUN with the reason. A runbook command
in none of the lists, or in two, fails the coverage test, so a runbook change cannot slip past.

Substitutions (what an operator's host has, mapped to the test's): the runbook paths under /etc, /var/lib
and /usr/local/bin; `ws://localhost:8420` -> `ws://127.0.0.1:<api port>` (halctl maps a ws URL on 8420 to
the API on 8421 and keeps any other port); `<agent-id>`/`<node-id>`/`<session-id>`. halctl without
--supervisor-url reads HALCTL_SUPERVISOR_URL, as an operator's config would give it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from halswarm.protocol import Command, CommandResult
from tests.fakes.fake_providers import ANTHROPIC_KEY, fake_providers
from tests.support.agentsim import SimAgent, session_state
from tests.support.runbook import DRILL_RUN, extract_commands
from tests.support.waiting import until

RUNBOOK = Path(__file__).resolve().parents[1] / "fixtures" / "runbook" / "RUNBOOK.md"
BIN = Path(sys.executable).parent
NODE, OTHER = "rb-node", "rb-other"
DB = "/var/lib/hal-o-swarm/supervisor.db"

# -- the commands run by this file (their checks are in the tests below) ------------------------------
HALCTL_WS = "halctl --supervisor-url ws://localhost:8420"
RUN = {
    f"{HALCTL_WS} sessions list | wc -l": "counts sessions (no header line)",
    f'{HALCTL_WS} sessions list | grep "node_id: <agent-id>"': "selects the node's sessions",
    f"{HALCTL_WS} sessions list --node-id <agent-id>": "lists the node's sessions",
    f"{HALCTL_WS} sessions kill <session-id>": "kills the session on its agent",
    f"{HALCTL_WS} sessions list": "lists sessions",
    f"{HALCTL_WS} cost today": "refreshes the providers, then reports",
    "halctl cost today": "same, URL from the environment",
    "halctl nodes list": "lists nodes, online",
    "halctl auth status <node-id>": "prints the Node:/Credential Sync: block",
    "halctl auth drift": "prints the drift summary",
    "/usr/local/bin/hal-supervisor --config /etc/hal-o-swarm/supervisor.config.json --validate": "exit 0",
    "/usr/local/bin/hal-agent --config /etc/hal-o-swarm/agent.config.json --validate": "exit 0",
    f'sqlite3 {DB} "PRAGMA integrity_check;"': "ok",
    f'sqlite3 {DB} "PRAGMA journal_mode=WAL;"': "wal",
    f'sqlite3 {DB} ".timer on"': "exit 0 (it only sets the CLI's own timer)",
    f'sqlite3 {DB} "SELECT COUNT(*) FROM sessions;"': "the number of sessions",
    f'sqlite3 {DB} "SELECT COUNT(*) FROM sessions WHERE timestamp > datetime(\'now\', \'-1 day\');"':
        "sessions active in the last day",
    f'sqlite3 {DB} "SELECT * FROM costs ORDER BY date DESC LIMIT 10;"': "newest cost rows",
    f'sqlite3 {DB} "DELETE FROM events WHERE timestamp < datetime(\'now\', \'-30 days\');"':
        "removes exactly the events older than 30 days",
    f'sqlite3 {DB} "VACUUM;"': "exit 0",
    f'sqlite3 {DB} "ANALYZE;"': "exit 0",
    f'sqlite3 {DB} ".recover" | sqlite3 {DB}.recovered': "a sound copy the supervisor starts on",
}

_INTERACTIVE = ("interactive (an editor, or a screen that never returns); the drill fleet runs what it "
                "leads to instead")
_WATCH = ("`watch` repeats its command forever; the command it repeats is run on the drill fleet "
          "(tests/fleet/drills/test_drills_runbook.py)")
NOT_RUN = {
    "sudo systemctl edit hal-supervisor": _INTERACTIVE + " (a MemoryMax drop-in and daemon-reload: the "
                                                         "high-memory drills)",
    "sudo systemctl edit hal-agent": _INTERACTIVE + " (a MemoryMax drop-in and daemon-reload: the high-memory "
                                                    "drills)",
    'sudo journalctl -u hal-supervisor | grep -i "cost"': ("the drill fleet is offline (no cost provider to poll, "
                                                           "so nothing to grep); the cost commands run above "
                                                           "against the fake providers"),
    "watch -n 5 'ps aux | grep hal-supervisor'": _WATCH,
    "watch -n 5 'ps aux | grep hal-agent'": _WATCH,
    "top -p $(pgrep -f hal-supervisor)": _INTERACTIVE + " (`ps aux | grep hal-supervisor` runs on the fleet)",
    "watch -n 5 'top -p $(pgrep -f hal-supervisor) -b -n 1'": _WATCH + " (`top` without `watch` is interactive)",
}


def test_every_runbook_command_is_run_or_listed_with_a_reason() -> None:
    commands = extract_commands(RUNBOOK.read_text())
    assert len(commands) > 40, "the extractor found too little: is the fixture the runbook?"
    lists = {"RUN": set(RUN), "DRILL_RUN (the drill fleet)": set(DRILL_RUN), "NOT_RUN": set(NOT_RUN)}
    unknown = [c for c in commands if not any(c in listed for listed in lists.values())]
    assert not unknown, "runbook commands neither run nor listed:\n" + "\n".join(unknown)
    stale = sorted(set().union(*lists.values()) - set(commands))
    assert not stale, "listed commands no longer in the runbook:\n" + "\n".join(stale)
    twice = [c for c in commands if sum(c in listed for listed in lists.values()) > 1]
    assert not twice, "runbook commands in more than one list:\n" + "\n".join(twice)


def test_extractor_joins_continuations_and_reads_inline_code() -> None:
    text = ("```bash\n# comment\nsqlite3 /x.db \\\n  \"VACUUM;\"\necho hal-supervisor-ish\n```\n"
            "Monitor: `halctl nodes list` and `halctl`\n```json\n{\"halctl\": 1}\n```\n")
    assert extract_commands(text) == ['sqlite3 /x.db "VACUUM;"', "halctl nodes list"]


# -- the live run ---------------------------------------------------------------------------------------
class Host:
    """The test's stand-in for the operator's host: runs a runbook line with its paths substituted."""

    def __init__(self, sup: Any, agent_config: Path, home: Path) -> None:
        self.sup, self.agent_config, self.home = sup, agent_config, home
        self.ids: dict[str, str] = {"<agent-id>": NODE, "<node-id>": NODE}
        self.ran: set[str] = set()

    def substitute(self, line: str) -> str:
        out = line.replace("ws://localhost:8420", f"ws://127.0.0.1:{self.sup.http_port}")
        out = out.replace("/usr/local/bin/", f"{BIN}/")
        out = out.replace("/etc/hal-o-swarm/supervisor.config.json", str(self.sup.config_path))
        out = out.replace("/etc/hal-o-swarm/agent.config.json", str(self.agent_config))
        out = out.replace(DB, str(self.sup.db_path))
        for placeholder, value in self.ids.items():
            out = out.replace(placeholder, value)
        return out

    async def run(self, line: str, timeout: float = 90) -> tuple[int, str, str]:
        assert line in RUN, f"not a runbook command listed in RUN: {line}"
        self.ran.add(line)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALCTL_")}
        env.update(HOME=str(self.home), PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
                   HALCTL_AUTH_TOKEN=self.sup.token, HALCTL_SUPERVISOR_URL=self.sup.api)
        proc = await asyncio.create_subprocess_exec("bash", "-o", "pipefail", "-c", self.substitute(line), env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, out.decode(), err.decode()

    async def ok(self, line: str) -> str:
        code, out, err = await self.run(line)
        assert code == 0, f"{line}\n-> exit {code}\n{out}\n{err}"
        return out


def cost_config(url: str) -> dict[str, Any]:
    return {"poll_interval_minutes": 60, "degraded_retry_seconds": 3600, "request_timeout_seconds": 2,
            "max_retries": 0, "backoff_base_ms": 10,
            "providers": {"anthropic": {"admin_api_key": ANTHROPIC_KEY, "base_url": url}}}


def db_rows(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def test_runbook_commands_do_what_the_runbook_says(make_supervisor: Any, tmp_path: Path) -> None:
    with fake_providers() as fake:
        today = dt.datetime.now(dt.UTC).date().isoformat()
        fake.anthropic_day(today, "claude-sonnet-4-5", 1000, 100, cents=42)
        sup = make_supervisor(cost=cost_config(fake.url)).start()
        agent_config = tmp_path / "agent.config.json"
        agent_config.write_text(json.dumps({"supervisor_url": sup.ws_url, "auth_token": sup.agent_token,
                                            "projects": [{"name": "alpha", "directory": str(tmp_path)}]}))
        agent_config.chmod(0o600)
        home = tmp_path / "home"
        home.mkdir()
        host = Host(sup, agent_config, home)

        agent = SimAgent(sup.ws_url, sup.agent_token, NODE, [("alpha", "/srv/alpha")])
        other = SimAgent(sup.ws_url, sup.agent_token, OTHER, [("beta", "/srv/beta")])

        def handler(cmd: Command) -> CommandResult:
            if cmd.type == "kill_session":
                return CommandResult(cmd.command_id, "success", session_state(cmd.target.session_id, "alpha",
                                                                               "killed"))
            return CommandResult(cmd.command_id, "success", {"ok": True})

        agent.handler = handler
        await agent.connect(sessions=[session_state("ses_rb_idle", "alpha", "idle"),
                                      session_state("ses_rb_busy", "alpha", "running")])
        await other.connect(sessions=[session_state("ses_other", "beta", "idle")])
        try:
            await live_checks(host, agent, fake)
        finally:
            await agent.close()
            await other.close()
        sup.stop()
        await offline_checks(host, make_supervisor)
    missing = set(RUN) - host.ran
    assert not missing, f"listed in RUN but not run: {missing}"


async def live_checks(host: Host, agent: SimAgent, fake: Any) -> None:
    sup = host.sup
    # Supervisor High Memory: `sessions list | wc -l` counts sessions, nothing else.
    assert (await host.ok(f"{HALCTL_WS} sessions list | wc -l")).strip() == "3"
    # Agent High Memory: the node's sessions, by grep and by filter.
    mine = (await host.ok(f'{HALCTL_WS} sessions list | grep "node_id: <agent-id>"')).splitlines()
    assert len(mine) == 2 and all(f"node_id: {NODE}" in ln for ln in mine)
    listed = await host.ok(f"{HALCTL_WS} sessions list --node-id <agent-id>")
    assert "id: ses_rb_idle" in listed and "id: ses_rb_busy" in listed and "ses_other" not in listed
    host.ids["<session-id>"] = "ses_rb_idle"
    await host.ok(f"{HALCTL_WS} sessions kill <session-id>")
    assert any(c.type == "kill_session" and c.target.session_id == "ses_rb_idle" for c in agent.commands)
    # Lost Session Data: verify.
    assert len((await host.ok(f"{HALCTL_WS} sessions list")).splitlines()) == 3
    # Nodes, auth.
    nodes = (await host.ok("halctl nodes list")).splitlines()
    assert len(nodes) == 2 and all("status: online" in ln for ln in nodes)
    status = await host.ok("halctl auth status <node-id>")
    assert f"Node: {NODE}" in status and "Credential Sync:" in status
    await host.ok("halctl auth drift")
    # Cost Data Discrepancy: "force cost update" polls the provider, then reports.
    for line in (f"{HALCTL_WS} cost today", "halctl cost today"):
        before = fake.count("anthropic")
        report = await host.ok(line)
        assert fake.count("anthropic") > before, f"{line} did not poll the provider"
        assert "period: today" in report and "provider: anthropic" in report
    # Configuration checks.
    assert "OK" in await host.ok(
        "/usr/local/bin/hal-supervisor --config /etc/hal-o-swarm/supervisor.config.json --validate")
    assert "OK" in await host.ok("/usr/local/bin/hal-agent --config /etc/hal-o-swarm/agent.config.json --validate")
    # sqlite3 on the live database.
    assert (await host.ok(f'sqlite3 {DB} "PRAGMA integrity_check;"')).strip() == "ok"
    assert (await host.ok(f'sqlite3 {DB} "PRAGMA journal_mode=WAL;"')).strip() == "wal"
    await host.ok(f'sqlite3 {DB} ".timer on"')
    assert (await host.ok(f'sqlite3 {DB} "SELECT COUNT(*) FROM sessions;"')).strip() == "3"
    recent = f'sqlite3 {DB} "SELECT COUNT(*) FROM sessions WHERE timestamp > datetime(\'now\', \'-1 day\');"'

    async def counted() -> bool:
        return (await host.ok(recent)).strip() == "3"

    await until(counted, "the three sessions counted as active in the last day", 15)  # the upsert is batched
    costs = await host.ok(f'sqlite3 {DB} "SELECT * FROM costs ORDER BY date DESC LIMIT 10;"')
    assert costs.splitlines()[0].startswith(f"anthropic|{today_iso()}|claude-sonnet-4-5"), costs
    assert sup.db_path.exists()


def today_iso() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


async def offline_checks(host: Host, make_supervisor: Any) -> None:
    """The database steps the runbook runs with the supervisor stopped (archive, VACUUM, .recover)."""
    db = host.sup.db_path
    total = db_rows(db, "SELECT COUNT(*) FROM events")[0][0]
    assert total >= 4
    # Make some events old, as weeks of operation would.
    now = time.time()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE events SET ts = ? WHERE id % 2 = 0", (now - 40 * 86400,))
        conn.execute("UPDATE events SET ts = ? WHERE id % 2 = 1 AND id % 3 = 0", (now - 29 * 86400,))
    conn.close()
    keep = {r[0] for r in db_rows(db, "SELECT id FROM events WHERE ts >= ?", (now - 30 * 86400,))}
    assert keep and len(keep) < total
    await host.ok(f'sqlite3 {DB} "DELETE FROM events WHERE timestamp < datetime(\'now\', \'-30 days\');"')
    assert {r[0] for r in db_rows(db, "SELECT id FROM events")} == keep
    await host.ok(f'sqlite3 {DB} "VACUUM;"')
    await host.ok(f'sqlite3 {DB} "ANALYZE;"')
    recover = f'sqlite3 {DB} ".recover" | sqlite3 {DB}.recovered'
    if not cli_can_recover(db.parent / "probe.db"):
        # Debian bookworm's sqlite3 3.40.1 fails `.recover` on every database ("SQL logic error"), the
        # schema aside: the same failure here, then the salvage path halctl uses instead.
        code, _, err = await host.run(recover)
        assert code != 0 and "SQL logic error" in err, err
        return
    await host.ok(recover)
    recovered = Path(f"{db}.recovered")
    assert db_rows(recovered, "PRAGMA integrity_check")[0][0] == "ok"
    assert {r[0] for r in db_rows(recovered, "SELECT id FROM events")} == keep
    # "If recovery succeeds, use recovered database", then start: the supervisor accepts it.
    swap_in(recovered, db)
    host.sup.start()
    assert (await host.run(f"{HALCTL_WS} sessions list"))[0] == 0


def swap_in(recovered: Path, db: Path) -> None:
    shutil.move(recovered, db)
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)


def cli_can_recover(probe: Path) -> bool:
    """Whether this host's sqlite3 CLI can `.recover` a trivial sound database at all."""
    import subprocess

    probe.unlink(missing_ok=True)
    conn = sqlite3.connect(probe)
    conn.execute("CREATE TABLE t(a)")
    conn.commit()
    conn.close()
    res = subprocess.run(["sqlite3", str(probe), ".recover"], capture_output=True, text=True, timeout=30)
    probe.unlink(missing_ok=True)
    return res.returncode == 0


@pytest.mark.parametrize("line", sorted(NOT_RUN))
def test_not_run_entries_have_reasons(line: str) -> None:
    assert len(NOT_RUN[line]) > 20


def test_supervisor_start_migrates_an_old_database_after_a_checked_backup(make_supervisor: Any) -> None:
    """A database of the schema before 012 (what main wrote until now), given to the real supervisor: it
    backs the file up, migrates, serves it, and the runbook's archive query then keeps the recent rows."""
    import subprocess

    from halswarm.store.db import connect
    from halswarm.store.migrations import bundled_migrations, migrate

    sup = make_supervisor()
    sup.workdir.mkdir(parents=True)
    conn = connect(sup.db_path)
    migrate(conn, [m for m in bundled_migrations() if int(m.version) < 12])
    now = time.time()
    conn.execute("INSERT INTO nodes(id) VALUES ('old-node')")
    conn.executemany("INSERT INTO events(node_id, seq, event_id, type, data, timestamp, received_at)"
                     " VALUES ('old-node', ?, ?, 't', '{}', ?, ?)",
                     [(i, f"e{i}", now - age, now - age) for i, age in enumerate((45 * 86400, 3600.0), 1)])
    conn.close()
    sup.start()
    backups = list(sup.workdir.glob("supervisor.db.pre-migrate-*"))
    assert len(backups) == 1, list(sup.workdir.iterdir())
    assert db_rows(backups[0], "SELECT COUNT(*) FROM events")[0][0] == 2
    with sup.client() as c:
        events = c.get("/api/v1/events", params={"node_id": "old-node"}).json()["data"]
    assert [e["event_id"] for e in events] == ["e1", "e2"]  # the API still sorts and renders the epoch
    sup.stop()
    res = subprocess.run(["sqlite3", str(sup.db_path),
                          "DELETE FROM events WHERE timestamp < datetime('now', '-30 days');"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert [r[0] for r in db_rows(sup.db_path, "SELECT event_id FROM events WHERE node_id='old-node'")] == ["e2"]


def test_supervisor_start_fills_the_runbook_text_of_rows_written_without_it(make_supervisor: Any) -> None:
    """Schema 013 writes `events.timestamp` with each event; a row another tool wrote with `ts` only (a
    restore, a salvage) gets its text at the next start, so the runbook's archive query sees it."""
    import subprocess

    from halswarm.store.db import connect
    from halswarm.store.migrations import migrate

    sup = make_supervisor()
    sup.workdir.mkdir(parents=True)
    conn = connect(sup.db_path)
    migrate(conn)
    old = time.time() - 45 * 86400
    conn.execute("INSERT INTO events(node_id, seq, event_id, type, data, ts, received_at)"
                 " VALUES (NULL, NULL, 'restored', 't', '{}', ?, ?)", (old, old))
    conn.close()
    sup.start()
    sup.stop()
    assert db_rows(sup.db_path, "SELECT timestamp = datetime(ts, 'unixepoch') FROM events"
                   " WHERE event_id='restored'") == [(1,)]
    res = subprocess.run(["sqlite3", str(sup.db_path),
                          "DELETE FROM events WHERE timestamp < datetime('now', '-30 days');"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert db_rows(sup.db_path, "SELECT COUNT(*) FROM events WHERE event_id='restored'") == [(0,)]
