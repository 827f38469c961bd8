"""A real headless browser for tests and benchmarks: Debian's ``chromium`` driven by its ``chromedriver``
through selenium.

Nothing is downloaded at run time: the driver's path goes to selenium's ``Service`` (so Selenium Manager is
skipped), the browser's path to ``binary_location``, and ``SE_OFFLINE`` forbids the manager any network
use should a later selenium consult it anyway. Chromium gets a private profile in a temp directory, a fixed
window size and no background networking (no component updates, sync or field trials).

Bounded: page loads and scripts time out, every wait is an explicit ``WebDriverWait``, and :meth:`Browser.quit`
ends the session, then kills chromedriver's process group (chromium runs inside it) by the PID this harness
started. Screenshots go under ``tests/output/console/`` (gitignored) as test artifacts.

Missing chromium/chromedriver: :func:`require_browser` skips with the reason (fails under CI, where
scripts/ci-setup.sh installs them).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "output" / "console"
CHROMIUM = os.environ.get("HAL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HAL_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 60.0  # default explicit wait: generous, CI runs on 2 busy cores
WINDOW = (1280, 900)

# Flags that keep chromium quiet, local and deterministic: no network of its own, no first-run UI.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root in CI containers, where the setuid sandbox is unavailable
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def browser_missing() -> str | None:
    """Why a browser cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found; install Debian's chromium and chromium-driver (scripts/ci-setup.sh)"
    return None


def require_browser() -> None:
    """Skip (locally) or fail (CI) when chromium/chromedriver are not installed."""
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI installs them, so this is a broken install step)")
    pytest.skip(reason)


class Browser:
    """One headless chromium session. Use as a context manager, or call :meth:`start` / :meth:`quit`."""

    def __init__(self, *, artifacts: Path = ARTIFACTS, timeout: float = WAIT, window: tuple[int, int] = WINDOW,
                 page_load_timeout: float = 60.0) -> None:
        self.artifacts = artifacts
        self.timeout = timeout
        self.window = window
        self.page_load_timeout = page_load_timeout
        self.driver: webdriver.Chrome | None = None
        self.driver_pid: int | None = None
        self.profile: Path | None = None
        self.log_path: Path | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> Browser:
        missing = browser_missing()
        if missing is not None:
            raise RuntimeError(missing)
        # Selenium Manager must never fetch a driver or a browser: both paths are given explicitly, and
        # offline mode makes the manager refuse the network should anything still invoke it.
        os.environ["SE_OFFLINE"] = "true"
        os.environ.pop("SE_DRIVER_MIRROR_URL", None)
        self.profile = Path(tempfile.mkdtemp(prefix="hal-chromium-"))
        self.log_path = self.profile.parent / f"{self.profile.name}.chromedriver.log"
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            opts.add_argument(flag)
        opts.add_argument(f"--user-data-dir={self.profile}")
        opts.add_argument(f"--window-size={self.window[0]},{self.window[1]}")
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        opts.page_load_strategy = "normal"
        # Its own process group: teardown kills chromedriver and the chromium it started in one signal.
        service = Service(executable_path=CHROMEDRIVER, port=free_port(), log_output=str(self.log_path),
                          popen_kw={"start_new_session": True})
        try:
            self.driver = webdriver.Chrome(service=service, options=opts)
        except BaseException:
            proc = getattr(service, "process", None)
            self.driver_pid = proc.pid if proc is not None else None
            self.quit()
            raise
        proc = service.process
        self.driver_pid = proc.pid if proc is not None else None
        self.driver.set_page_load_timeout(self.page_load_timeout)
        self.driver.set_script_timeout(self.timeout)
        self.driver.set_window_size(*self.window)
        return self

    def quit(self) -> None:
        """End the session, then kill whatever of chromedriver's process group is left, by our PID."""
        if self.driver is not None:
            with contextlib.suppress(Exception):
                self.driver.quit()
            self.driver = None
        if self.driver_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.driver_pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(self.driver_pid, os.WNOHANG)
            self.driver_pid = None
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path = None

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.quit()

    @property
    def d(self) -> webdriver.Chrome:
        if self.driver is None:
            raise RuntimeError("browser not started")
        return self.driver

    # -- navigation and reading ----------------------------------------------------------------------------

    def get(self, url: str) -> None:
        self.d.get(url)

    @property
    def url(self) -> str:
        return str(self.d.current_url)

    def js(self, script: str, *args: Any) -> Any:
        return self.d.execute_script(script, *args)

    def js_async(self, script: str, *args: Any) -> Any:
        """Run ``script`` with a callback (``arguments[arguments.length - 1]``); bounded by the script timeout."""
        return self.d.execute_async_script(script, *args)

    def find(self, css: str) -> WebElement:
        return self.d.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return list(self.d.find_elements(By.CSS_SELECTOR, css))

    def exists(self, css: str) -> bool:
        return bool(self.find_all(css))

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    # -- explicit waits ------------------------------------------------------------------------------------

    def wait(self, cond: Callable[[webdriver.Chrome], Any], what: str, timeout: float | None = None) -> Any:
        """Poll ``cond(driver)`` until truthy; stale/missing elements count as "not yet". Names ``what`` and
        the page's URL on timeout."""
        waiter = WebDriverWait(self.d, timeout or self.timeout, poll_frequency=0.1,
                               ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        try:
            return waiter.until(cond)
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout or self.timeout:g} s waiting for {what} "
                                 f"(at {self.safe_url()})") from None

    def wait_css(self, css: str, timeout: float | None = None) -> WebElement:
        """The first element matching ``css`` once it is present."""
        return self.wait(lambda d: d.find_element(By.CSS_SELECTOR, css), f"element {css!r}", timeout)

    def wait_visible(self, css: str, timeout: float | None = None) -> WebElement:
        def visible(d: webdriver.Chrome) -> WebElement | None:
            el = d.find_element(By.CSS_SELECTOR, css)
            return el if el.is_displayed() else None

        return self.wait(visible, f"visible element {css!r}", timeout)

    def wait_gone(self, css: str, timeout: float | None = None) -> None:
        self.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, css), f"no element {css!r}", timeout)

    def wait_text(self, css: str, expected: str | Callable[[str], bool], timeout: float | None = None) -> str:
        """Wait until the text of the element at ``css`` equals ``expected`` (or satisfies it); returns it."""
        check = expected if callable(expected) else (lambda t: t == expected)

        def holds(d: webdriver.Chrome) -> str | None:
            text = d.find_element(By.CSS_SELECTOR, css).text.strip()
            return text or " " if check(text) else None

        return str(self.wait(holds, f"text of {css!r} to be {expected!r}", timeout)).strip()

    def wait_attr(self, css: str, attr: str, value: str, timeout: float | None = None) -> WebElement:
        def holds(d: webdriver.Chrome) -> WebElement | None:
            el = d.find_element(By.CSS_SELECTOR, css)
            return el if el.get_attribute(attr) == value else None

        return self.wait(holds, f"{css!r}[{attr}={value!r}]", timeout)

    def wait_url(self, pred: Callable[[str], bool], what: str, timeout: float | None = None) -> str:
        return str(self.wait(lambda d: d.current_url if pred(d.current_url) else None, what, timeout))

    def wait_ready(self, timeout: float | None = None) -> None:
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete",
                  "document.readyState == complete", timeout)

    def click(self, css: str, timeout: float | None = None) -> None:
        """Click the element at ``css`` once it is visible and enabled."""
        def ready(d: webdriver.Chrome) -> WebElement | None:
            el = d.find_element(By.CSS_SELECTOR, css)
            return el if el.is_displayed() and el.is_enabled() else None

        el: WebElement = self.wait(ready, f"clickable {css!r}", timeout)
        el.click()

    def fill(self, css: str, value: str, timeout: float | None = None) -> None:
        el = self.wait_visible(css, timeout)
        el.clear()
        el.send_keys(value)

    # -- artifacts -----------------------------------------------------------------------------------------

    def screenshot(self, name: str) -> Path:
        """Save a PNG of the whole page (beyond the viewport: DevTools ``Page.captureScreenshot`` with
        ``captureBeyondViewport``) as ``tests/output/console/<name>.png`` and return its path."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / f"{_SAFE_NAME.sub('_', name).strip('_') or 'page'}.png"
        shot = self.d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def console_errors(self) -> list[str]:
        """SEVERE messages of the page's console since the last call (JS errors, failed loads)."""
        try:
            logs = self.d.get_log("browser")
        except WebDriverException:
            return []
        return [str(e.get("message")) for e in logs if e.get("level") == "SEVERE"]

    def safe_url(self) -> str:
        try:
            return self.url
        except Exception:  # only for an error message
            return "?"


@contextlib.contextmanager
def browser(**kw: Any) -> Iterator[Browser]:
    """A started :class:`Browser`, quit (and killed) on exit."""
    b = Browser(**kw)
    try:
        yield b.start()
    finally:
        b.quit()
