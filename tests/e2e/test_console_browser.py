"""The web console (issue 19) in a real headless chromium, against the whole real stack: the supervisor,
hal-agent, `opencode serve` with `permission.bash=ask` and the loopback fake LLM (the set-up of
tests/e2e/test_stack_approvals.py). Selectors are those of the console contract
(the templates under halswarm/supervisor/features/console/).

An operator logs in, sees the node, starts a session from the sessions page, gets its permission request
on the session page, approves it and sees the tool's output and the session go idle, and sees a later
reply stream into the open page; another request is denied from the approvals page and the command never
runs; a viewer sees every page without a single action control and is refused by the API and the
console's actions; an open page survives a supervisor restart (its live indicator closes, reopens and new
events appear without a reload; its prompt form and kill button still work). The approval flow through the
API with a real opencode is here too (halctl's is in test_stack_approvals.py). Screenshots of every view
land in tests/output/console/.

No timing assertions: every step waits on a condition with explicit, generous timeouts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.fakes.fake_llm import FakeLLM, opencode_config_content
from tests.support.agent_proc import AgentProc, api_get, opencode_env, session_events, session_of, wait_status
from tests.support.browser import Browser, require_browser
from tests.support.supervisor_proc import ADMIN_NAME, SupervisorProc
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

NODE = "e2e-console"
PROJECT = "demo"
OPERATOR_NAME, VIEWER_NAME = "oncall", "dash"
OPERATOR_TOKEN = "o" * 8 + "0f1e2d3c4b5a6978" * 3
VIEWER_TOKEN = "v" * 8 + "8796a5b4c3d2e1f0" * 3
WAIT = 90.0  # browser waits that span a real opencode turn on 2 busy cores
VIEWS = ("fleet", "sessions", "approvals", "cost", "remediations", "audit")
ACTION_CONTROLS = ("form#start-session", "#start-submit", "button[data-action]", "#prompt-form", "#prompt-submit",
                   "#resume", "#kill", "#handover", "form#remediate", "#remediate-check", "#remediate-apply")


@dataclass
class Stack:
    sup: SupervisorProc
    fake: FakeLLM
    agent: AgentProc
    browser: Browser

    @property
    def ui(self) -> str:
        return self.sup.api + "/ui"

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.sup.api, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def start_waiting(self, prompt: str) -> tuple[str, dict[str, Any]]:
        """A session (started through the API) whose bash tool call waits for permission, and its request."""
        with self.api(OPERATOR_TOKEN) as c:
            r = c.post("/api/v1/sessions", json={"project": PROJECT, "node_id": NODE, "prompt": prompt})
        assert r.status_code in (200, 201, 202), r.text
        sid = r.json()["data"]["id"]
        wait_status(self.sup, sid, "waiting_input", timeout=WAIT)
        [req] = wait_for(lambda: api_get(self.sup, "/api/v1/approvals", session_id=sid), "the pending request", 30)
        return sid, req

    def tool_results(self, prompt: str) -> list[str]:
        return [str(m.get("content")) for r in self.fake.chat_requests() if r.last_user_text == prompt
                for m in r.body.get("messages", []) if m.get("role") == "tool"]

    def shot(self, name: str) -> None:
        """A screenshot of the view as a test artifact (tests/output/console/<name>.png)."""
        path = self.browser.screenshot(name)
        assert path.stat().st_size > 1000, path


@pytest.fixture(scope="module")
def stack(opencode_bin: str, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_browser()
    root = tmp_path_factory.mktemp("console")
    project = root / "projects" / PROJECT
    project.mkdir(parents=True)
    # An applied agent-crashed (listed in `auto`) runs the real `halctl remediate` on loopback (ansible's
    # local connection); a check is routed with its `--check` command.
    inventory = root / "inventory.ini"
    inventory.write_text(f"[hal_agents]\n{NODE} ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    sup = SupervisorProc(root / "sup", extra={"server": {"heartbeat_interval_sec": 1},
                                              "remediation": {"inventory": str(inventory), "auto": ["agent-crashed"]}})
    sup.extra["security"] = {"operators": [{"name": ADMIN_NAME, "role": "admin", "token": sup.token},
                                           {"name": OPERATOR_NAME, "role": "operator", "token": OPERATOR_TOKEN},
                                           {"name": VIEWER_NAME, "role": "viewer", "token": VIEWER_TOKEN}]}
    sup.start()
    env = opencode_env(root / "home", opencode_config_content(fake_llm.base_url, permission_ask_bash=True))
    agent = AgentProc(root / "agent", sup.ws_url, sup.agent_token, node_id=NODE, projects=[(PROJECT, str(project))],
                      manage=True, binary=opencode_bin, env=env, clean_env=True, opencode_port=0)
    browser = Browser(timeout=WAIT)
    try:
        agent.start()
        agent.wait_online(sup, timeout=60, sessions_available=True)
        browser.start()
        yield Stack(sup, fake_llm, agent, browser)
    finally:
        browser.quit()
        agent.cleanup()
        sup.stop()


# ----- page helpers ----------------------------------------------------------------------------------------


def login(s: Stack, token: str) -> None:
    """A fresh console login with ``token``: lands on the fleet page."""
    b = s.browser
    b.get(s.ui + "/login")  # on the origin first, so its cookies can be dropped
    b.d.delete_all_cookies()
    b.get(s.ui + "/login")
    b.fill("form#login input[name=token]", token)
    b.click("#login-submit")
    b.wait_css("body[data-page=fleet]")


def page(s: Stack, path: str, name: str) -> None:
    """Open ``/ui<path>`` and wait until it is the page ``name``, fully loaded."""
    s.browser.get(s.ui + path)
    s.browser.wait_css(f"body[data-page={name}]")
    s.browser.wait_ready()


def reveal(b: Browser, css: str) -> None:
    """Open the collapsed ``<details>`` around ``css`` the way a user does: a click on its summary."""
    b.wait_css(css)
    closed = b.js("const d = document.querySelector(arguments[0]).closest('details');"
                  "return d && !d.open;", css)
    if closed:
        b.js("document.querySelector(arguments[0]).closest('details').querySelector('summary')"
             ".setAttribute('data-reveal', '1')", css)
        b.click("summary[data-reveal='1']")
        b.wait_visible(css)


def set_field(b: Browser, css: str, value: str) -> None:
    """Set a form field that may be a ``<select>`` or an ``<input>``/``<textarea>``."""
    el = b.wait_css(css)
    if el.tag_name.lower() == "select":
        b.wait(lambda d: any(o.get_attribute("value") == value for o in Select(el).options),
               f"option {value!r} in {css}")
        Select(el).select_by_value(value)
    else:
        b.fill(css, value)


def msgs(b: Browser, role: str) -> list[str]:
    return [e.text for e in b.find_all(f"#conversation .msg[data-role={role}]")]


def wait_msg(b: Browser, role: str, needle: str, timeout: float = WAIT) -> str:
    return str(b.wait(lambda d: next((t for t in msgs(b, role) if needle in t), None),
                      f"a {role} message containing {needle!r}", timeout))


def mark_page(b: Browser) -> None:
    """Tag this document: if the tag is still there later, the page was updated live, not reloaded."""
    b.js("window.__halNoReload = 'kept'")


def page_kept(b: Browser) -> bool:
    return bool(b.js("return window.__halNoReload === 'kept'"))


def csrf_of(b: Browser) -> str | None:
    """The session's CSRF token as a page carries it (hidden input or meta tag)."""
    return b.js("const i = document.querySelector('input[name=csrf]');"
                "const m = document.querySelector('meta[name=csrf-token]');"
                "return i ? i.value : (m ? m.content : null);")


def post_from_page(b: Browser, path: str, form: dict[str, str], csrf: str | None) -> int:
    """POST a form to ``path`` from the page (the browser's cookie), with or without a CSRF token; the status."""
    return int(b.js_async(
        "const [path, form, csrf, done] = arguments; const body = new URLSearchParams(form);"
        "const headers = csrf ? {'X-CSRF-Token': csrf} : {};"
        "fetch(path, {method: 'POST', body, headers, redirect: 'manual', credentials: 'same-origin'})"
        ".then(r => done(r.status), e => done(-1));", path, form, csrf))


# ----- tests ------------------------------------------------------------------------------------------------


def test_login_is_required_and_a_bad_token_is_refused(stack: Stack) -> None:
    b = stack.browser
    b.get(stack.ui + "/login")
    b.d.delete_all_cookies()
    b.get(stack.ui + "/sessions")
    b.wait_css("form#login")  # redirected: no page without a session
    assert b.url.split("?")[0].endswith("/ui/login"), b.url
    stack.shot("login")
    b.fill("form#login input[name=token]", "not-a-token-" + "x" * 40)
    b.click("#login-submit")
    assert b.wait_visible("#login-error").text.strip()
    assert not b.exists("body[data-page=fleet]") and not b.d.get_cookie("hal_console")
    stack.shot("login_error")

    login(stack, OPERATOR_TOKEN)
    cookie = b.d.get_cookie("hal_console")
    assert cookie is not None and cookie["httpOnly"] and cookie.get("sameSite") == "Strict", cookie
    assert cookie["path"] == "/ui" and OPERATOR_TOKEN not in cookie["value"]  # the cookie is not the token
    assert b.js("return document.cookie").find("hal_console") == -1  # HttpOnly: invisible to scripts


def test_fleet_shows_the_node(stack: Stack) -> None:
    login(stack, OPERATOR_TOKEN)
    b = stack.browser
    row = f"tr[data-testid=node-row][data-node-id={NODE}]"
    b.wait_css(row)
    b.wait_text(f"{row} td[data-col=status]", lambda t: "online" in t.lower())
    stack.shot("fleet")


def test_start_approve_and_watch_the_reply_stream_in(stack: Stack) -> None:
    login(stack, OPERATOR_TOKEN)
    b, prompt = stack.browser, "TOOLCALL approve from the browser"
    page(stack, "/sessions", "sessions")
    with stack.api(OPERATOR_TOKEN) as c:
        before = {x["id"] for x in c.get("/api/v1/sessions", params={"limit": 500}).json()["data"]}
    reveal(b, "form#start-session")
    set_field(b, "form#start-session [name=node_id]", NODE)
    set_field(b, "form#start-session [name=project]", PROJECT)
    b.fill("form#start-session textarea[name=prompt]", prompt)
    stack.shot("sessions_start_form")
    b.click("#start-submit")

    def new_session() -> str | None:
        with stack.api(OPERATOR_TOKEN) as c:
            ids = [x["id"] for x in c.get("/api/v1/sessions", params={"limit": 500}).json()["data"]]
        fresh = [i for i in ids if i not in before]
        return fresh[0] if len(fresh) == 1 else None

    sid = wait_for(new_session, "the session started from the page", WAIT)
    if f"/ui/sessions/{sid}" not in b.url:
        page(stack, f"/sessions/{sid}", "session")
    b.wait_css("body[data-page=session]")
    wait_msg(b, "user", prompt)

    # The request reaches the page; nothing ran while it waits.
    perm = b.wait_css("#conversation .msg[data-role=permission][data-approval-id]", WAIT)
    approval_id = str(perm.get_attribute("data-approval-id"))
    b.wait_text("#session-status", "waiting_input")
    [req] = api_get(stack.sup, "/api/v1/approvals", session_id=sid)
    assert req["id"] == approval_id and req["node_id"] == NODE
    assert "echo hi-from-tool" in perm.text  # the command asked for is shown to the operator
    assert stack.tool_results(prompt) == []
    stack.shot("session_waiting")

    b.click(f".msg[data-role=permission][data-approval-id='{approval_id}'] button[data-action=once]")
    b.wait_text("#session-status", "idle", WAIT)
    wait_msg(b, "tool", "hi-from-tool")
    wait_msg(b, "assistant", "TOOL-RESULT-SEEN")
    assert any("hi-from-tool" in t for t in stack.tool_results(prompt))  # the command really ran
    replied = wait_for(lambda: session_events(stack.sup, sid, "permission.replied"), "opencode's reply stored", 30)
    assert replied[0]["data"]["reply"] == "once"
    audit = api_get(stack.sup, "/api/v1/audit", limit=100)
    assert [a["actor"] for a in audit if a["action"] == "permission_reply" and approval_id in str(a["args"])] == [
        OPERATOR_NAME]  # the reply is audited with the operator's identity
    stack.shot("session_idle")

    # A later reply streams into the open page, without a reload.
    mark_page(b)
    follow = "plain follow-up from the api"
    with stack.api(OPERATOR_TOKEN) as c:
        r = c.post(f"/api/v1/sessions/{sid}/prompt", json={"message": follow})
    assert r.status_code in (200, 202), r.text
    wait_msg(b, "user", follow)
    wait_msg(b, "assistant", f"FAKE-REPLY: {follow}")
    b.wait_text("#session-status", "idle", WAIT)
    assert page_kept(b), "the page reloaded instead of updating live"
    assert b.wait_attr("#live", "data-state", "open")
    stack.shot("session_streamed")


def test_deny_from_the_approvals_page_rejects_the_tool(stack: Stack) -> None:
    prompt = "TOOLCALL deny from the browser"
    sid, req = stack.start_waiting(prompt)
    login(stack, OPERATOR_TOKEN)
    b = stack.browser
    page(stack, "/approvals", "approvals")
    row = f"tr[data-testid=approval-row][data-approval-id='{req['id']}']"
    b.wait_css(row)
    for action in ("once", "always", "reject"):
        assert b.exists(f"{row} button[data-action={action}]"), action
    stack.shot("approvals")
    b.click(f"{row} button[data-action=reject]")
    b.wait_gone(row, WAIT)

    replied = wait_for(lambda: session_events(stack.sup, sid, "permission.replied"), "opencode's reply stored", 60)
    assert replied[0]["data"]["reply"] == "reject"
    wait_status(stack.sup, sid, "idle", timeout=WAIT)  # opencode ends the turn; not an error
    assert not any("hi-from-tool" in t for t in stack.tool_results(prompt))  # the command never ran
    assert api_get(stack.sup, "/api/v1/approvals", session_id=sid) == []
    page(stack, f"/sessions/{sid}", "session")
    b.wait_text("#session-status", "idle")
    assert not b.exists(f".msg[data-approval-id='{req['id']}'] button[data-action]:not([disabled])")
    asked = f"#conversation .msg[data-role=permission][data-approval-id='{req['id']}']"
    b.wait_text(asked, lambda t: "reject" in t.lower())  # the page says the request was rejected
    stack.shot("session_denied")

    page(stack, "/audit", "audit")
    b.wait(lambda d: any("permission_reply" in r.text and OPERATOR_NAME in r.text
                         for r in d.find_elements(By.CSS_SELECTOR, "tr[data-testid=audit-row]")),
           "the reply in the audit view")
    stack.shot("audit")


def test_every_view_renders_with_its_nav_and_no_script_errors(stack: Stack) -> None:
    login(stack, OPERATOR_TOKEN)
    b = stack.browser
    b.console_errors()  # drop what earlier pages logged
    for view in VIEWS:
        b.click(f"a[data-nav={view}]")
        b.wait_css(f"body[data-page={view}]")
        b.wait_ready()
        assert b.exists(f"a[data-nav={view}]")
        stack.shot(view)
    page(stack, "/sessions", "sessions")
    b.wait_css("tr[data-testid=session-row]")
    assert b.exists("form#start-session") and b.exists("#start-submit")
    page(stack, "/remediations", "remediations")
    assert b.exists("form#remediate #remediate-check") and b.exists("form#remediate #remediate-apply")
    page(stack, "/cost", "cost")
    assert b.exists("svg")  # the chart is inline SVG
    errors = b.console_errors()
    assert errors == [], errors
    # Assets come from the supervisor itself: the console works offline.
    urls = b.js("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(stack.sup.api) for u in urls), urls


def test_a_viewer_sees_pages_but_no_actions_and_is_refused(stack: Stack) -> None:
    prompt = "TOOLCALL answered through the api"
    sid, req = stack.start_waiting(prompt)
    login(stack, VIEWER_TOKEN)
    b = stack.browser
    for view in VIEWS:
        page(stack, "/" if view == "fleet" else f"/{view}", view)
        present = [c for c in ACTION_CONTROLS if b.exists(c)]
        assert present == [], (view, present)
        stack.shot(f"viewer_{view}")
    page(stack, "/approvals", "approvals")
    b.wait_css(f"tr[data-testid=approval-row][data-approval-id='{req['id']}']")  # seen, not answerable
    assert not b.exists("button[data-action]")
    page(stack, f"/sessions/{sid}", "session")
    b.wait_css(f".msg[data-role=permission][data-approval-id='{req['id']}']")
    present = [c for c in ACTION_CONTROLS if b.exists(c)]
    assert present == [], present
    stack.shot("viewer_session")

    # The console refuses a viewer's forged action even with the session's valid CSRF token (the logout form's).
    csrf = csrf_of(b)
    assert csrf, "no CSRF token on the page"
    for path, form in ((f"/ui/approvals/{req['id']}", {"reply": "once", "csrf": csrf}),
                       ("/ui/sessions", {"node_id": NODE, "project": PROJECT, "prompt": "x", "csrf": csrf}),
                       (f"/ui/sessions/{sid}/kill", {"csrf": csrf})):
        assert post_from_page(b, path, form, csrf) == 403, path
    # The API refuses the viewer too, and the request is still pending.
    with stack.api(VIEWER_TOKEN) as c:
        assert c.post(f"/api/v1/approvals/{req['id']}", json={"reply": "once"}).status_code == 403
        assert c.post("/api/v1/sessions", json={"project": PROJECT, "prompt": "x"}).status_code == 403
        assert c.get("/api/v1/approvals").status_code == 200
    assert [a["id"] for a in api_get(stack.sup, "/api/v1/approvals", session_id=sid)] == [req["id"]]

    # The same request answered through the API by an operator unblocks the real opencode.
    with stack.api(OPERATOR_TOKEN) as c:
        r = c.post(f"/api/v1/approvals/{req['id']}", json={"reply": "once"})
    assert r.status_code == 200, r.text
    wait_status(stack.sup, sid, "idle", timeout=WAIT)
    assert any("hi-from-tool" in t for t in stack.tool_results(prompt))
    b.wait_text("#session-status", "idle")  # the viewer's open page follows along
    with stack.api(OPERATOR_TOKEN) as c:
        again = c.post(f"/api/v1/approvals/{req['id']}", json={"reply": "once"})
    assert again.status_code in (404, 409), again.text  # answered once only

    # Logout ends the session server-side: the old cookie no longer opens a page.
    old = b.d.get_cookie("hal_console")
    b.click("form#logout #logout-submit")
    b.wait_css("form#login")
    assert old is not None
    r = httpx.get(stack.ui + "/", cookies={"hal_console": old["value"]}, follow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["location"].endswith("/ui/login"), (r.status_code, r.headers)


def test_csrf_is_required_for_console_actions(stack: Stack) -> None:
    sid, req = stack.start_waiting("TOOLCALL csrf probe")
    login(stack, OPERATOR_TOKEN)
    b = stack.browser
    page(stack, "/approvals", "approvals")
    # One script reads the form of the row as it is now: the live table may swap its rows between two
    # WebDriver calls (a found element then goes stale).
    selector = f"tr[data-approval-id='{req['id']}'] button[data-action=reject]"
    path = b.wait(lambda d: d.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.closest('form').getAttribute('action')",
        selector), "the reject button's form")
    assert path == f"/ui/approvals/{req['id']}", path
    for bad in (None, "0" * 43):
        status = post_from_page(b, path, {"reply": "reject"}, bad)
        assert status == 403, (path, bad, status)
    assert [a["id"] for a in api_get(stack.sup, "/api/v1/approvals", session_id=sid)] == [req["id"]]
    # Answered properly so the module leaves nothing waiting.
    with stack.api(OPERATOR_TOKEN) as c:
        assert c.post(f"/api/v1/approvals/{req['id']}", json={"reply": "reject"}).status_code == 200
    wait_status(stack.sup, sid, "idle", timeout=WAIT)


def test_an_open_page_survives_a_supervisor_restart(stack: Stack) -> None:
    with stack.api(OPERATOR_TOKEN) as c:
        r = c.post("/api/v1/sessions", json={"project": PROJECT, "node_id": NODE, "prompt": "before the restart"})
    assert r.status_code in (200, 201, 202), r.text
    sid = r.json()["data"]["id"]
    wait_status(stack.sup, sid, "idle", timeout=WAIT)
    login(stack, OPERATOR_TOKEN)
    b = stack.browser
    page(stack, f"/sessions/{sid}", "session")
    wait_msg(b, "assistant", "FAKE-REPLY: before the restart")
    b.wait_attr("#live", "data-state", "open")
    mark_page(b)

    stack.sup.stop()
    b.wait_attr("#live", "data-state", "closed", WAIT)
    stack.shot("session_live_closed")
    stack.sup.start(timeout=60)
    stack.agent.wait_online(stack.sup, timeout=90, sessions_available=True)
    b.wait_attr("#live", "data-state", "open", WAIT)

    after = "after the restart"
    with stack.api(OPERATOR_TOKEN) as c:
        r = c.post(f"/api/v1/sessions/{sid}/prompt", json={"message": after})
    assert r.status_code in (200, 202), r.text
    wait_msg(b, "assistant", f"FAKE-REPLY: {after}")
    assert page_kept(b), "the page reloaded instead of reconnecting its stream"
    assert session_of(stack.sup, sid)["status"] in ("idle", "running")
    stack.shot("session_after_restart")

    # The page's own forms still work with the login and CSRF token from before the restart.
    typed = "typed into the page"
    b.wait_text("#session-status", "idle", WAIT)
    b.fill("#prompt-form textarea[name=prompt]", typed)
    b.click("#prompt-submit")
    b.wait_css("body[data-page=session]")
    wait_msg(b, "user", typed)
    wait_msg(b, "assistant", f"FAKE-REPLY: {typed}")
    b.wait_text("#session-status", "idle", WAIT)
    b.click("#kill")
    b.wait_text("#session-status", "killed", WAIT)
    assert session_of(stack.sup, sid)["status"] == "killed"
    stack.shot("session_killed")

