"""The headless-browser harness (tests/support/browser.py) against a page the supervisor already serves:
``/docs`` (Swagger UI from the wheel's assets). It renders with JS, every request stays on loopback, a
screenshot lands under tests/output/console/, a wait names what it waited for, and quitting leaves no
chromedriver/chromium process behind."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By

from tests.support.browser import ARTIFACTS, Browser, require_browser
from tests.support.supervisor_proc import SupervisorProc

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead for our purpose
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _group(pgid: int) -> list[int]:
    """PIDs whose process group is ``pgid`` (chromedriver and the chromium it started)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def test_renders_a_js_page_offline_and_cleans_up(supervisor: SupervisorProc) -> None:
    require_browser()
    b = Browser()
    try:
        b.start()
        assert b.driver_pid is not None and _alive(b.driver_pid)
        assert len(_group(b.driver_pid)) >= 2  # chromedriver + chromium (and its helpers) in our group
        b.get(supervisor.api + "/docs")
        b.wait_ready()
        # Swagger UI builds its DOM in JS after fetching /openapi.json: the page's script really ran.
        b.wait_css("#swagger-ui .swagger-ui svg.svg-assets")
        urls = b.wait(lambda d: [u for u in d.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)") if u.endswith("/openapi.json")]
                      and d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"),
                      "the spec fetched by the page")
        assert {urlsplit(u).hostname for u in urls} == {"127.0.0.1"}, urls  # nothing from another host
        shot = b.screenshot("harness docs")
        assert shot == ARTIFACTS / "harness_docs.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with pytest.raises(AssertionError, match=r"element '#no-such-thing'.*/docs"):
            b.wait_css("#no-such-thing", timeout=0.5)
        pgid = b.driver_pid
        profile = b.profile
    finally:
        b.quit()
    assert b.driver is None and b.driver_pid is None
    assert _group(pgid) == []  # nothing of the browser outlives quit()
    assert profile is not None and not profile.exists()


def test_docs_renders_the_operations(supervisor: SupervisorProc) -> None:
    """Found by the harness: with Swagger UI 4.15 (swagger-ui-bundle) a real browser showed an error instead
    of the API, since 4.15 cannot read OpenAPI 3.1; Swagger UI 5 (swagger-ui-py) renders the operations."""
    require_browser()
    with Browser(timeout=30) as b:
        b.get(supervisor.api + "/docs")
        b.wait_css("#swagger-ui .swagger-ui svg.svg-assets")
        b.wait(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock, .swagger-ui .version-pragma"),
               "operations or an error")
        b.screenshot("docs_operations")
        assert b.exists(".swagger-ui .opblock"), b.text(".swagger-ui")[:300]
