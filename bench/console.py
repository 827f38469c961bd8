"""Web console benchmark (issue 19 point 3): the fleet and sessions views at 2,000 nodes / 20,000 sessions
in the real headless chromium, and event -> visible-in-page latency.

1. Seeds a fresh store with the project's own migrations and repos (``--nodes`` nodes, ``--sessions``
   sessions spread over them, 20 projects, every session status represented), then starts the real
   ``hal-supervisor`` on it.
2. Logs into the console in headless chromium (tests/support/browser.py: Debian's chromium + chromedriver,
   nothing downloaded) and loads each view ``--reps`` times. Per load it reads the Navigation Timing entry
   and the paint entries of the page itself: time to first byte, first paint, first contentful paint,
   DOM interactive, DOMContentLoaded end (when the page's scripts have run: "interactive") and load end,
   plus the rows rendered and the bytes of the document.
3. A simulated agent (tests/support/agentsim.py, the real WebSocket protocol) joins with a running session;
   the session's page is open; the agent sends ``--events`` text parts one after the other. A
   MutationObserver in the page stamps (``performance.timeOrigin + performance.now()``, the wall clock) the
   moment each part's text is in the DOM; latency = that stamp - the wall-clock time just before the
   agent's frame was written. Both clocks are this machine's. A second EventSource in the page stamps when
   the event itself arrives on the stream, which separates delivery from the page's fetch-and-swap.
   First ``--events`` parts each sent as soon as the previous one is visible (a burst: the page's refresh
   throttle paces it), then ``--lone-events`` parts each after ``--quiet-ms`` of silence (a lone event,
   refreshed at once). Prints p50/p90/p99/max.

Prints figures only; no pass/fail (the contract's target is a first paint under 1 s).

    PYTHONPATH=$PWD .venv/bin/python bench/console.py [--nodes 2000] [--sessions 20000] [--reps 10] [--events 200]
        [--lone-events 50] [--quiet-ms 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from halswarm.core.model import SESSION_STATUSES, Node, Session  # noqa: E402
from halswarm.store.db import connect  # noqa: E402
from halswarm.store.migrations import migrate  # noqa: E402
from halswarm.store.repos.nodes import upsert_node  # noqa: E402
from halswarm.store.repos.sessions import upsert_sessions  # noqa: E402
from tests.support.agentsim import SimAgent, session_state  # noqa: E402
from tests.support.browser import Browser, browser_missing  # noqa: E402
from tests.support.supervisor_proc import SupervisorProc  # noqa: E402

PROJECTS = 20
MODELS = ("fake/fake-model", "anthropic/claude-sonnet-4", "openai/gpt-5")
LIVE_NODE, LIVE_SESSION, LIVE_PROJECT = "bench-live", "ses_bench_live_0001", "bench"
T = TypeVar("T")

NAV_JS = """
const n = performance.getEntriesByType('navigation')[0];
const paint = Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]));
return {ttfb: n.responseStart, fp: paint['first-paint'] ?? null, fcp: paint['first-contentful-paint'] ?? null,
        dom_interactive: n.domInteractive, interactive: n.domContentLoadedEventEnd, load: n.loadEventEnd,
        bytes: n.decodedBodySize, rows: document.querySelectorAll(arguments[0]).length};
"""

OBSERVER_JS = """
window.__latSeen = {};
// The page swaps the live fragment (status + #conversation) as a whole: observe its container.
const root = document.getElementById(document.getElementById('live').dataset.target) || document.body;
const scan = () => {
  const now = performance.timeOrigin + performance.now();
  const conv = document.getElementById('conversation');
  if (!conv) return;
  for (const m of conv.textContent.matchAll(/LAT-(\\d+)\\./g)) {
    if (!(m[1] in window.__latSeen)) window.__latSeen[m[1]] = now;
  }
};
new MutationObserver(scan).observe(root, {childList: true, subtree: true, characterData: true});
scan();
// A second reader of the page's own stream: when the event itself reaches the browser (before the page
// fetches and swaps its fragment).
window.__latSse = {};
const es = new EventSource(document.getElementById('live').dataset.stream);
es.onmessage = (ev) => {
  const now = performance.timeOrigin + performance.now();
  for (const m of ev.data.matchAll(/LAT-(\\d+)\\./g)) {
    if (!(m[1] in window.__latSse)) window.__latSse[m[1]] = now;
  }
};
window.__latEs = es;
"""


def seed(db: Path, nodes: int, sessions: int) -> float:
    """A migrated store with ``nodes`` nodes and ``sessions`` sessions; seconds taken."""
    t0 = time.monotonic()
    now = time.time()
    conn = connect(db)
    migrate(conn)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    for i in range(nodes):
        upsert_node(conn, Node(id=f"node-{i:04d}", hostname=f"node-{i:04d}.bench", status="offline", version="bench",
                               projects=[{"name": f"project-{(i + k) % PROJECTS:02d}", "directory": f"/srv/p{k}"}
                                         for k in range(3)],
                               resources={"cpu_percent": float(i % 100), "ram_used_mb": 1000.0 + i,
                                          "ram_total_mb": 16000.0, "disk_used_gb": 20.0, "disk_total_gb": 100.0},
                               last_heartbeat=now - i, first_seen_at=now - 86400))
    batch: list[Session] = []
    for i in range(sessions):
        started = now - 30 * 86400 + 30 * 86400 * i / sessions
        batch.append(Session(id=f"ses_{i:07d}", node_id=f"node-{i % nodes:04d}", project=f"project-{i % PROJECTS:02d}",
                             status=SESSION_STATUSES[i % len(SESSION_STATUSES)], model=MODELS[i % len(MODELS)],
                             tokens_input=1000 + i % 977, tokens_output=300 + i % 311,
                             tokens_total=1300 + i % 977 + i % 311, cost_usd=0.01 * (i % 50),
                             title=f"task {i}", current_task=f"step {i % 7}", started_at=started,
                             last_activity=started + 600))
        if len(batch) >= 10_000:
            upsert_sessions(conn, batch)
            batch = []
    upsert_sessions(conn, batch)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.monotonic() - t0


class LoopThread:
    """An asyncio loop in a thread, for the simulated agent next to the blocking browser."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-agent-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def login(b: Browser, ui: str, token: str) -> None:
    b.get(ui + "/login")
    b.fill("form#login input[name=token]", token)
    b.click("#login-submit")
    b.wait_css("body[data-page=fleet]")


def measure_view(b: Browser, url: str, page: str, rows: str, reps: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(reps):
        b.get(url)
        b.wait_css(f"body[data-page={page}]")
        b.wait_ready()
        # Paint entries are queued after the frame is presented: wait for first-contentful-paint.
        b.wait(lambda d: d.execute_script(
            "return performance.getEntriesByName('first-contentful-paint').length > 0"), "first-contentful-paint")
        out.append(b.js(NAV_JS, rows))
    return out


def report_views(results: dict[str, list[dict[str, Any]]]) -> None:
    keys = ("ttfb", "fp", "fcp", "dom_interactive", "interactive", "load")
    print(f"\n{'view':<34}" + "".join(f"{k:>18}" for k in keys) + f"{'rows':>6}{'KiB':>7}")
    print(f"{'':<34}" + "".join(f"{'p50 / max ms':>18}" for _ in keys))
    for view, runs in results.items():
        cells = []
        for k in keys:
            vals = [float(r[k]) for r in runs if r.get(k) is not None]
            cells.append(f"{statistics.median(vals):8.0f} / {max(vals):6.0f}" if vals else f"{'n/a':>15}")
        print(f"{view:<34}" + "".join(f"{c:>18}" for c in cells)
              + f"{runs[-1]['rows']:>6}{runs[-1]['bytes'] / 1024:>7.0f}")


def seen_at(b: Browser, i: int, where: str = "__latSeen") -> float:
    """When the page first saw part ``i`` (wall-clock ms): in its DOM (``__latSeen``) or on the stream
    (``__latSse``)."""
    key = str(i)
    return float(b.wait(lambda d: d.execute_script(f"return window.{where}[arguments[0]]", key),
                        f"LAT-{i} in the page ({where})"))


def measure_latency(b: Browser, sup: SupervisorProc, loop: LoopThread, events: int, lone: int,
                    quiet_ms: float) -> tuple[list[float], list[float], list[float]]:
    """Latencies of ``events`` parts sent one at a time, each as soon as the previous one is visible (a
    burst, paced by the page's refresh throttle), then of ``lone`` parts each sent after ``quiet_ms`` of
    silence (a lone event: a permission request, a status change)."""
    agent = SimAgent(sup.ws_url, sup.agent_token, LIVE_NODE, projects=[(LIVE_PROJECT, "/srv/bench")])
    loop.run(agent.connect(sessions=[session_state(LIVE_SESSION, LIVE_PROJECT, "running")]))
    try:
        b.get(f"{sup.api}/ui/sessions/{LIVE_SESSION}")
        b.wait_css("body[data-page=session]")
        b.wait_attr("#live", "data-state", "open")
        b.js(OBSERVER_JS)
        sent: dict[int, float] = {}

        async def send(i: int) -> None:
            data = {"part": {"id": f"prt_lat_{i:05d}", "messageID": f"msg_lat_{i:05d}", "sessionID": LIVE_SESSION,
                             "type": "text", "text": f"LAT-{i}. event {i} from the simulated agent"}}
            sent[i] = time.time() * 1000
            await agent.send_event(i, "message.part.updated", session_id=LIVE_SESSION, project=LIVE_PROJECT,
                                   data=data)

        b.wait(lambda d: d.execute_script("return window.__latEs.readyState === 1"), "the bench's stream open")
        visible, streamed, alone = [], [], []
        for i in range(1, events + 1):
            loop.run(send(i))
            visible.append(seen_at(b, i) - sent[i])
            streamed.append(seen_at(b, i, "__latSse") - sent[i])
        for i in range(events + 1, events + lone + 1):
            time.sleep(quiet_ms / 1000)
            loop.run(send(i))
            alone.append(seen_at(b, i) - sent[i])
        b.js("window.__latEs.close()")
        return visible, streamed, alone
    finally:
        loop.run(agent.close())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=10, help="loads of each view")
    ap.add_argument("--events", type=int, default=200, help="events for the latency figure")
    ap.add_argument("--lone-events", type=int, default=50, help="events each sent after a quiet period")
    ap.add_argument("--quiet-ms", type=float, default=600, help="silence before each lone event")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    args = ap.parse_args()
    missing = browser_missing()
    if missing:
        print(f"console bench: {missing}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="hal-bench-console-") as tmp:
        sup = SupervisorProc(Path(tmp) / "sup")
        sup.workdir.mkdir(parents=True)
        took = seed(sup.db_path, args.nodes, args.sessions)
        print(f"seeded {args.nodes} nodes / {args.sessions} sessions in {took:.1f} s")
        sup.start(timeout=120)
        loop = LoopThread()
        try:
            with Browser(timeout=120) as b:
                ui = sup.api + "/ui"
                login(b, ui, sup.token)
                views = {
                    "fleet /ui/": (ui + "/", "fleet", "tr[data-testid=node-row]"),
                    "sessions /ui/sessions": (ui + "/sessions", "sessions", "tr[data-testid=session-row]"),
                    "sessions ?status=completed": (ui + "/sessions?status=completed", "sessions",
                                                       "tr[data-testid=session-row]"),
                    "sessions ?q=task 1999": (ui + "/sessions?q=task%201999", "sessions",
                                              "tr[data-testid=session-row]"),
                    "sessions ?project=project-07": (ui + "/sessions?project=project-07", "sessions",
                                                     "tr[data-testid=session-row]"),
                }
                measure_view(b, ui + "/", "fleet", "tr", 1)  # warm the server's caches and the browser
                results = {name: measure_view(b, url, page, rows, args.reps)
                           for name, (url, page, rows) in views.items()}
                print(f"\nviews ({args.reps} loads each, ms from navigation start; headless chromium, "
                      f"{args.nodes} nodes / {args.sessions} sessions)")
                report_views(results)
                lat, sse, alone = measure_latency(b, sup, loop, args.events, args.lone_events, args.quiet_ms)
                print(f"\n{len(lat)} events from a simulated agent, each sent once the previous one is visible, "
                      f"then {len(alone)} each after {args.quiet_ms:.0f} ms of silence (wall clock, ms):")
                for name, vals in (("event -> visible in the session page", lat),
                                   ("event -> on the page's SSE stream", sse),
                                   ("lone event -> visible", alone)):
                    if not vals:
                        continue
                    print(f"  {name:<38} p50 {pct(vals, .5):7.1f}  p90 {pct(vals, .9):7.1f}  "
                          f"p99 {pct(vals, .99):7.1f}  max {max(vals):7.1f}")
                if args.json:
                    args.json.write_text(json.dumps({"views": results, "latency_ms": lat, "sse_ms": sse,
                                                       "lone_ms": alone}, indent=1))
        finally:
            loop.stop()
            sup.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
