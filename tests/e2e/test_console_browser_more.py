"""More of the web console (issue 19) in real headless chromium, on the same real stack as
tests/e2e/test_console_browser.py (its `stack` fixture: supervisor, hal-agent, `opencode serve` with the
loopback fake LLM): the sessions page's server-side paging and filters, and its live rows (a status change
and a new session show without a reload), with a simulated second node (tests/support/agentsim.py, the real
WebSocket protocol) holding enough sessions for two pages; Resume and Handover from a session page; the
remediations page's run form (apply refused before a check, then check, then apply) running a real
`halctl remediate` on loopback. Full-page screenshots land in tests/output/console/.

No timing assertions: every step waits on a condition with explicit, generous timeouts.
"""

# ruff: noqa: F811  (the tests take the shared `stack` fixture imported below)

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from tests.e2e.test_console_browser import (  # noqa: F401 (stack: the shared fixture)
    NODE,
    OPERATOR_NAME,
    OPERATOR_TOKEN,
    PROJECT,
    WAIT,
    Stack,
    login,
    mark_page,
    page,
    page_kept,
    set_field,
    stack,
    wait_msg,
)
from tests.support.agent_proc import api_get, session_of, wait_status
from tests.support.agentsim import SimAgent, session_state
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SIM_NODE, SIM_PROJECT = "sim-console", "simproj"
SIM_SESSIONS = 62  # two pages of 50
ERRORS = 4  # of them in status `error`
NEEDLE = "needle-in-the-titles"
T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a thread: the simulated agent keeps its connection while the browser blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sim-agent-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _sim_sessions() -> list[dict[str, Any]]:
    out = []
    for i in range(SIM_SESSIONS):
        status = "error" if i < ERRORS else ("running" if i % 2 else "idle")
        out.append(session_state(f"ses_sim{i:04d}", SIM_PROJECT, status, title=NEEDLE if i == 7 else f"task {i}"))
    return out


@pytest.fixture(scope="module")
def sim(stack: Stack) -> Iterator[tuple[SimAgent, LoopThread]]:
    loop = LoopThread()
    agent = SimAgent(stack.sup.ws_url, stack.sup.agent_token, SIM_NODE, [(SIM_PROJECT, "/srv/sim")])
    beat: concurrent.futures.Future[None] | None = None
    try:
        loop.run(agent.connect(sessions=_sim_sessions()))
        beat = asyncio.run_coroutine_threadsafe(_heartbeats(agent), loop.loop)  # the stack's interval is 1 s
        wait_for(lambda: len(api_get(stack.sup, "/api/v1/sessions", node_id=SIM_NODE, limit=500)) == SIM_SESSIONS,
                 "the simulated node's sessions stored", 60)
        yield agent, loop
    finally:
        if beat is not None:
            beat.cancel()
        loop.run(agent.close())
        loop.stop()


async def _heartbeats(agent: SimAgent) -> None:
    """Keep the simulated node online (else its sessions turn `unreachable`)."""
    while True:
        await agent.heartbeat()
        await asyncio.sleep(0.3)


def row_ids(stack: Stack) -> list[str]:
    return [str(v) for v in rows_of(stack, "id")]


def rows_of(stack: Stack, col: str) -> list[str]:
    """One column of the table's rows, read in one script: the live page may swap its rows at any time."""
    got = stack.browser.js(
        "const col = arguments[0];"
        "return Array.from(document.querySelectorAll('tr[data-testid=session-row]')).map(r => col === 'id'"
        " ? r.getAttribute('data-session-id') : r.querySelector('td[data-col=' + col + ']').textContent.trim())",
        col)
    return [str(v) for v in got]


def filter_sessions(stack: Stack, **fields: str) -> None:
    """Fill the sessions page's filter form like a user and submit it; wait for the new page."""
    b = stack.browser
    for name in ("q", "node_id", "project"):
        b.fill(f"form.filters [name={name}]", fields.get(name, ""))
    set_field(b, "form.filters [name=status]", fields.get("status", ""))
    b.js("window.__halBeforeFilter = 1")
    b.click("#filter-submit")
    b.wait(lambda d: d.execute_script("return window.__halBeforeFilter === undefined"), "the filtered page")
    page_ready(stack)


def page_ready(stack: Stack) -> None:
    stack.browser.wait_css("body[data-page=sessions]")
    stack.browser.wait_ready()


def test_sessions_page_pages_and_filters_server_side(stack: Stack, sim: tuple[SimAgent, LoopThread]) -> None:
    login(stack, OPERATOR_TOKEN)
    b = stack.browser
    page(stack, "/sessions", "sessions")
    filter_sessions(stack, node_id=SIM_NODE)
    assert f"node_id={SIM_NODE}" in b.url
    first = row_ids(stack)
    assert len(first) == 50 and set(rows_of(stack, "node_id")) == {SIM_NODE}, (len(first), rows_of(stack, "node_id"))
    stack.shot("sessions_page1")

    b.js("window.__halBeforeFilter = 1")
    b.click("a[data-testid=next-page]")
    b.wait(lambda d: d.execute_script("return window.__halBeforeFilter === undefined"), "the second page")
    page_ready(stack)
    second = row_ids(stack)
    assert f"node_id={SIM_NODE}" in b.url and "after=" in b.url  # the filter carries over to the next page
    assert len(second) == SIM_SESSIONS - 50 and not set(first) & set(second)
    assert set(first) | set(second) == {s["id"] for s in _sim_sessions()}
    assert not b.exists("a[data-testid=next-page]") and b.exists("a[data-testid=prev-page]")
    stack.shot("sessions_page2")

    filter_sessions(stack, node_id=SIM_NODE, status="error")
    assert sorted(row_ids(stack)) == [f"ses_sim{i:04d}" for i in range(ERRORS)], (
        b.url, row_ids(stack), [(x["id"], x["status"]) for x in api_get(stack.sup, "/api/v1/sessions", node_id=SIM_NODE,
                                                                       limit=5)])
    assert set(rows_of(stack, "status")) == {"error"}
    stack.shot("sessions_filter_status")

    filter_sessions(stack, q=NEEDLE)
    assert row_ids(stack) == ["ses_sim0007"] and rows_of(stack, "title") == [NEEDLE]
    filter_sessions(stack, project=PROJECT)
    assert SIM_NODE not in rows_of(stack, "node_id") and set(rows_of(stack, "project")) <= {PROJECT}
    filter_sessions(stack, project="no-such-project")
    assert row_ids(stack) == [] and b.exists("table#sessions td.empty")
    stack.shot("sessions_filter_empty")


def test_sessions_page_rows_follow_the_live_stream(stack: Stack, sim: tuple[SimAgent, LoopThread]) -> None:
    agent, loop = sim
    login(stack, OPERATOR_TOKEN)
    b = stack.browser
    page(stack, f"/sessions?node_id={SIM_NODE}", "sessions")
    b.wait_attr("#live", "data-state", "open")
    shown = row_ids(stack)
    target = next(i for i in shown if session_of(stack.sup, i)["status"] == "running")
    mark_page(b)
    seq = 0  # the agent's event sequence: consecutive from 1

    def send(state: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        loop.run(agent.send_event(seq, "session.state", session_id=state["id"], project=SIM_PROJECT, data=state))

    send(session_state(target, SIM_PROJECT, "waiting_input"))
    cell = f"tr[data-testid=session-row][data-session-id={target}] td[data-col=status]"
    b.wait_text(cell, "waiting_input", WAIT)
    fresh = "ses_simnew0001"
    send(session_state(fresh, SIM_PROJECT, "running", title="arrived while the page was open"))
    b.wait_css(f"tr[data-testid=session-row][data-session-id={fresh}]", WAIT)
    assert len(row_ids(stack)) == 50  # still one page: the page's rows, not the whole table
    assert page_kept(b), "the page reloaded instead of updating its rows live"
    stack.shot("sessions_live")
    send(session_state(target, SIM_PROJECT, "idle"))
    b.wait_text(cell, "idle", WAIT)
    assert b.find("form.filters [name=node_id]").get_attribute("value") == SIM_NODE  # the filter stays


def test_resume_and_handover_from_the_session_page(stack: Stack) -> None:
    with stack.api(OPERATOR_TOKEN) as c:
        r = c.post("/api/v1/sessions", json={"project": PROJECT, "node_id": NODE, "prompt": "plan from the page"})
    assert r.status_code in (200, 201, 202), r.text
    old = r.json()["data"]["id"]
    wait_status(stack.sup, old, "idle", timeout=WAIT)
    login(stack, OPERATOR_TOKEN)
    b = stack.browser
    page(stack, f"/sessions/{old}", "session")
    wait_msg(b, "assistant", "FAKE-REPLY: plan from the page")

    b.click("#resume")
    b.wait_css("body[data-page=session]")
    b.wait_text("#flash", lambda t: "resume" in t)
    wait_msg(b, "assistant", "FAKE-REPLY: continue")  # resume sends opencode "continue"
    b.wait_text("#session-status", "idle", WAIT)
    stack.shot("session_resumed")

    b.click("#handover")
    new = b.wait_url(lambda u: "/ui/sessions/" in u and old not in u, "the successor's page", WAIT)
    new_id = new.split("/ui/sessions/", 1)[1].split("?")[0]
    b.wait_css("body[data-page=session]")
    b.wait_text("#flash", lambda t: "handover" in t and new_id in t)
    wait_status(stack.sup, old, "killed", timeout=WAIT)
    assert session_of(stack.sup, new_id)["project"] == PROJECT
    wait_for(lambda: any(r.last_user_text and "read .context/PROGRESS.md" in r.last_user_text
                         for r in stack.fake.chat_requests()), "the successor's first prompt at the LLM", WAIT)
    stack.shot("session_handed_over")


def test_remediation_form_checks_first_then_applies(stack: Stack) -> None:
    incident = "agent-crashed"
    login(stack, OPERATOR_TOKEN)
    b = stack.browser
    before = {r["id"] for r in api_get(stack.sup, "/api/v1/remediations", limit=500)}
    page(stack, "/remediations", "remediations")
    set_field(b, "form#remediate select[name=incident]", incident)
    b.fill("form#remediate input[name=host]", NODE)
    stack.shot("remediations_form")

    b.click("#remediate-apply")  # before any check: refused
    err = b.wait_visible("#action-error")
    assert "check" in err.text.lower(), err.text
    stack.shot("remediations_apply_refused")

    page(stack, "/remediations", "remediations")
    set_field(b, "form#remediate select[name=incident]", incident)
    b.fill("form#remediate input[name=host]", NODE)
    b.click("#remediate-check")
    result = b.wait_css("#remediate-result[data-mode=check]")
    # agent-crashed is in remediation.auto: the supervisor runs the real check (`halctl remediate --check`,
    # ansible's local connection) and the page shows its stored report's outcome.
    assert result.get_attribute("data-action") == "checked", result.get_attribute("outerHTML")
    command = b.text("#remediate-command")
    assert incident in command and "--check" in command and NODE in command, command
    outcome = b.wait_css("#remediate-status")
    check_id = outcome.get_attribute("data-report-id")
    stack.shot("remediations_checked")
    [checked] = [r for r in api_get(stack.sup, "/api/v1/remediations", limit=500) if r["id"] not in before]
    assert str(checked["id"]) == check_id and checked["status"] == outcome.get_attribute("data-status"), checked
    assert checked["actor"] == OPERATOR_NAME, checked
    before.add(checked["id"])

    b.click("#remediate-apply")  # the result page's own button, for the incident and host just checked
    result = b.wait_css("#remediate-result[data-mode=apply]")
    assert result.get_attribute("data-action") == "started", result.get_attribute("outerHTML")
    command = b.text("#remediate-command")
    assert incident in command and "--check" not in command, command
    stack.shot("remediations_applied")

    # The apply really ran (ansible's local connection): its report is stored when the run ends, and it is in
    # the page's history with its report.
    def finished() -> list[dict[str, Any]] | None:
        runs = [r for r in api_get(stack.sup, "/api/v1/remediations", limit=500) if r["id"] not in before]
        return runs or None

    [run] = wait_for(finished, "the applied remediation to finish", 240)
    assert run["incident"] == incident and run["hosts"] == [NODE] and run["status"], json.dumps(run)[:3000]
    page(stack, "/remediations", "remediations")
    row = f"tr[data-testid=remediation-row][data-remediation-id='{run['id']}']"
    assert incident in b.wait_css(row).text
    b.click(f"#report-{run['id']} summary")
    b.wait_visible(f"#report-{run['id']} pre")
    audit = api_get(stack.sup, "/api/v1/audit", action="console_remediate", limit=100)
    assert [(a["actor"], a["result"]) for a in audit[:3]] == [(OPERATOR_NAME, "success"), (OPERATOR_NAME, "success"),
                                                             (OPERATOR_NAME, "failure")], audit[:3]
    stack.shot("remediations_history")
