"""/api/v1/remediations against a real supervisor process, plus `halctl remediate history`.

The process is the real supervisor entry point, started through runpy like the other harnesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from halswarm.core.remediation.planners import plan
from halswarm.core.remediation.report import build_report
from tests.support.supervisor_proc import REPO, SupervisorProc
from tests.support.waiting import wait_for

BOOT = "import runpy\nrunpy.run_module('halswarm.supervisor.main', run_name='__main__')\n"


class RemediationSupervisor(SupervisorProc):
    def start(self, timeout: float = 30.0) -> SupervisorProc:
        self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        env = dict(os.environ)
        env.pop("HAL_AUTH_TOKEN", None)
        self.proc = subprocess.Popen([sys.executable, "-c", BOOT, "--config", str(self.config_path)],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        log.close()
        self.wait_ready(timeout)
        return self


@pytest.fixture
def sup(tmp_path: Path) -> Iterator[SupervisorProc]:
    s = RemediationSupervisor(tmp_path / "sup")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _report(status: str, host: str = "sup-1", incident: str = "supervisor-crashed") -> dict:
    facts = {"supervisor": {"active_state": "failed", "load_state": "loaded"}, "cfg": {"auth_token": "abc123"}}
    return build_report(incident, hosts=[host], facts=facts, plan=plan(incident, facts).to_dict(), status=status,
                        started=100.0, finished=101.0)


def _events(client, ev_type: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return client.get("/api/v1/events", params={"type": ev_type}).json()["data"]


def test_post_list_filter_events_and_errors(sup: SupervisorProc) -> None:

    with sup.client() as c:
        ok = _report("verified")
        r = c.post("/api/v1/remediations", json=ok)
        assert r.status_code == 201, r.text
        assert r.json()["data"]["id"] == ok["id"]
        assert "abc123" not in r.text
        assert c.post("/api/v1/remediations", json=ok).status_code == 409
        bad = _report("failed", host="sup-2", incident="agent-crashed")
        assert c.post("/api/v1/remediations", json=bad).status_code == 201
        v = c.post("/api/v1/remediations", json={"incident": "supervisor-crashed"})
        assert v.status_code == 400 and v.json()["code"] == "VALIDATION_ERROR"
        assert c.post("/api/v1/remediations", content=b"{nope").json()["code"] == "BAD_REQUEST"

        body = c.get("/api/v1/remediations").json()
        assert body["meta"] == {"total": 2, "limit": 100, "offset": 0}
        assert [x["id"] for x in body["data"]] == [bad["id"], ok["id"]]  # newest first
        assert c.get("/api/v1/remediations", params={"status": "verified"}).json()["meta"]["total"] == 1
        assert c.get("/api/v1/remediations", params={"host": "sup-2"}).json()["data"][0]["incident"] == "agent-crashed"
        assert c.get("/api/v1/remediations", params={"incident": "nope"}).json()["meta"]["total"] == 0
        page = c.get("/api/v1/remediations", params={"limit": 1, "offset": 1}).json()
        assert [x["id"] for x in page["data"]] == [ok["id"]] and page["meta"]["total"] == 2
        assert c.get("/api/v1/remediations", params={"status": "bogus"}).status_code == 400
        assert c.get("/api/v1/remediations", params={"limit": 0}).status_code == 400

        def both() -> tuple[list[dict], list[dict]] | None:
            done, esc = _events(c, "remediation.completed"), _events(c, "remediation.escalated")
            return (done, esc) if done and esc else None

        done, esc = wait_for(both, "remediation.completed and remediation.escalated", 10, interval=0.2)
        assert done[0]["data"]["id"] == ok["id"] and done[0]["node_id"] == "sup-1"
        assert esc[0]["data"]["incident"] == "agent-crashed" and esc[0]["data"]["status"] == "failed"
        audit = c.get("/api/v1/audit", params={"action": "remediation"}).json()["data"]
        assert {a["target"] for a in audit} == {"supervisor-crashed", "agent-crashed"}

    import httpx

    assert httpx.get(sup.api + "/api/v1/remediations", timeout=10).status_code == 401


def test_halctl_history(sup: SupervisorProc) -> None:
    with sup.client() as c:
        assert c.post("/api/v1/remediations", json=_report("verified")).status_code == 201
    code = (
        "import sys\n"
        "from halswarm.cli import main as m\n"
        "from halswarm.cli.remediate_cmd import remediate\n"
        "if 'remediate' not in m.cli.commands:\n"
        "    m.cli.add_command(remediate); m.add_output_option(m.cli)\n"
        "sys.exit(m.run(sys.argv[1:]))\n"
    )
    env = dict(os.environ, HALCTL_AUTH_TOKEN=sup.token, HOME=str(sup.workdir))
    out = subprocess.run([sys.executable, "-c", code, "--supervisor-url", sup.api, "--output", "json",
                          "remediate", "history", "--status", "verified"],
                         capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 1 and rows[0]["incident"] == "supervisor-crashed" and rows[0]["severity"] == "Critical"
