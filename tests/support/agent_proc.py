"""Harness for the REAL `hal-agent` process (used by tests/integration/test_agent_*.py and
tests/e2e/test_stack_*.py); its fakes are self-tested in tests/integration/test_agent_fakes.py.

- :class:`AgentProc`: writes an agent config and runs ``python -m halswarm.agent.main`` as a child
  process; every stop is by PID (SIGTERM, then SIGKILL), and :meth:`AgentProc.cleanup` also ends an
  ``opencode serve`` the agent left behind (after a SIGKILL of the agent, its opencode lives on).
- :class:`FakeOpencode`: a loopback stand-in for ``opencode serve`` (attach mode) that speaks the
  routes the agent uses, with ``/global/event`` in the real wire format. Tests push events with
  :meth:`FakeOpencode.emit`: the honest way to make the real agent produce a known number of
  events without a real opencode (they travel the real path: SSE -> bridge -> outbox -> supervisor).
- :class:`TcpProxy`: a loopback TCP relay between agent and supervisor that can cut every connection
  and refuse new ones (a network partition without touching either process).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.supervisor_proc import REPO, SupervisorProc
from tests.support.waiting import wait_for

# ----------------------------------------------------------------------------------------------
# API and database reads
# ----------------------------------------------------------------------------------------------


def api_get(sup: SupervisorProc, path: str, **params: Any) -> Any:
    with sup.client() as c:
        r = c.get(path, params=params)
    r.raise_for_status()
    return r.json()["data"]


def node(sup: SupervisorProc, node_id: str) -> dict[str, Any] | None:
    with sup.client() as c:
        r = c.get(f"/api/v1/nodes/{node_id}")
    return r.json()["data"] if r.status_code == 200 else None


def node_status(sup: SupervisorProc, node_id: str) -> str | None:
    try:
        n = node(sup, node_id)
    except httpx.HTTPError:
        return None
    return n["status"] if n else None


def db_rows(sup: SupervisorProc, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the supervisor's database directly (WAL: safe next to the live writer)."""
    conn = sqlite3.connect(f"file:{sup.db_path}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def node_seqs(sup: SupervisorProc, node_id: str) -> list[int]:
    return [r[0] for r in db_rows(sup, "SELECT seq FROM events WHERE node_id=? AND seq IS NOT NULL ORDER BY seq",
                                  node_id)]


def assert_gap_free(sup: SupervisorProc, node_id: str) -> list[int]:
    """Every agent event of the node stored exactly once: seqs 1..N, event_ids unique."""
    seqs = node_seqs(sup, node_id)
    assert seqs == list(range(1, len(seqs) + 1)), f"seq gaps or duplicates for {node_id}: {seqs[:20]}..."
    dup = db_rows(sup, "SELECT event_id, COUNT(*) FROM events WHERE node_id=? AND seq IS NOT NULL "
                       "GROUP BY event_id HAVING COUNT(*) > 1", node_id)
    assert dup == [], f"duplicate event ids: {dup[:5]}"
    return seqs


# ----------------------------------------------------------------------------------------------
# the agent process
# ----------------------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class AgentProc:
    workdir: Path
    supervisor_url: str
    token: str
    node_id: str = "node-a"
    projects: list[tuple[str, str]] = field(default_factory=list)
    opencode_port: int = field(default_factory=free_port)
    manage: bool = False
    binary: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to (or, with clean_env, replacing) os.environ
    clean_env: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "agent.config.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "supervisor_url": self.supervisor_url,
            "auth_token": self.token,
            "node_id": self.node_id,
            "opencode_port": self.opencode_port,
            "opencode": {"manage": self.manage},
            "data_dir": str(self.data_dir),
            "projects": [{"name": n, "directory": d} for n, d in self.projects],
            "log": {"level": "info", "format": "text"},
        }
        if self.binary:
            cfg["opencode"]["binary"] = self.binary
        for key, value in self.extra.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        return cfg

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        self.config_path.chmod(0o600)

    def start(self) -> AgentProc:
        self.write_config()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} if self.clean_env else dict(os.environ)
        env.pop("HAL_AUTH_TOKEN", None)
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            log.write(f"---- start {time.strftime('%H:%M:%S')}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "halswarm.agent.main", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
            )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_online(self, sup: SupervisorProc, timeout: float = 30.0, *, sessions_available: bool = False) -> dict:
        def ready() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log_tail()}")
            n = node(sup, self.node_id)
            if not n or n["status"] != "online":
                return None
            if sessions_available and not n["capabilities"].get("sessions", {}).get("available"):
                return None
            return n

        try:
            return wait_for(ready, f"node {self.node_id} online", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- agent log tail:\n{self.log_tail()}") from None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case a test left it stopped
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def opencode_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "opencode.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if "opencode" in _cmdline(pid) else None

    def cleanup(self) -> None:
        """Stop the agent and any opencode it left running (by PID, from its pid file)."""
        self.stop()
        pid = self.opencode_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(AssertionError):  # best effort: the group got SIGKILL
                wait_for(lambda: not _cmdline(pid), f"opencode {pid} gone", 5, interval=0.05)

    def outbox_size(self) -> int:
        path = self.data_dir / "outbox.db"
        if not path.exists():
            return 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        finally:
            conn.close()


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProc]]:
    """``make_agent(sup, name, **AgentProc fields)``: not started; every one is cleaned up at teardown."""
    made: list[AgentProc] = []

    def factory(sup: SupervisorProc, name: str = "agent", **kw: Any) -> AgentProc:
        kw.setdefault("node_id", f"node-{name}")
        agent = AgentProc(tmp_path / name, kw.pop("supervisor_url", sup.ws_url), sup.agent_token, **kw)
        made.append(agent)
        return agent

    yield factory
    for agent in made:
        agent.cleanup()


# ----------------------------------------------------------------------------------------------
# a fake opencode serve (attach mode)
# ----------------------------------------------------------------------------------------------


class FakeOpencode:
    """Loopback stand-in for ``opencode serve``: health, session list/status/get/create/prompt/abort/delete
    and ``/global/event`` (``data: {"directory","project","payload":{...}}`` records, no replay)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.prompts: list[tuple[str, str]] = []
        self._streams: list[queue.Queue[bytes | None]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.stream_connects = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- control ----------------------------------------------------------------------------
    def start(self) -> FakeOpencode:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                fake._handle(self, method, url.path, query, body)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fake-opencode")
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for q in self._streams:
                q.put(None)
            self._streams.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def add_session(self, directory: str, sid: str | None = None, title: str = "fake") -> dict[str, Any]:
        sid = sid or f"ses_fake{next(self._ids):04d}"
        info = {"id": sid, "directory": directory, "projectID": "global", "title": title,
                "time": {"created": int(time.time() * 1000), "updated": int(time.time() * 1000)},
                "tokens": {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}, "cost": 0}
        self.sessions[sid] = info
        return info

    def connected(self) -> int:
        with self._lock:
            return len(self._streams)

    def emit(self, etype: str, properties: dict[str, Any], directory: str | None = None) -> str:
        """Send one event to every connected ``/global/event`` stream; returns its id."""
        eid = f"evt_fake{next(self._ids):06d}"
        record = {"directory": directory, "project": "global",
                  "payload": {"id": eid, "type": etype, "properties": properties}}
        line = b"data: " + json.dumps(record).encode() + b"\n\n"
        with self._lock:
            for q in self._streams:
                q.put(line)
        return eid

    # -- routes -------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str, path: str, query: dict[str, str], body: Any) -> None:
        j = h._json  # type: ignore[attr-defined]
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/global/health":
            j(200, {"healthy": True, "version": "0.0.0-fake"})
        elif method == "GET" and path == "/global/event":
            self._stream(h)
        elif method == "GET" and path == "/experimental/session":
            j(200, list(self.sessions.values()))
        elif method == "GET" and path == "/session/status":
            j(200, {})
        elif method == "POST" and path == "/session":
            info = self.add_session(query.get("directory", "/"), title=body.get("title") or "New session")
            self.emit("session.created", {"sessionID": info["id"], "info": info}, info["directory"])
            j(200, info)
        elif len(parts) == 2 and parts[0] == "session" and method in ("GET", "DELETE"):
            info = self.sessions.get(parts[1])
            if info is None:
                j(404, {"name": "NotFoundError", "data": {"message": f"Session not found: {parts[1]}"}})
            elif method == "GET":
                j(200, info)
            else:
                del self.sessions[parts[1]]
                self.emit("session.deleted", {"sessionID": info["id"], "info": info}, info["directory"])
                j(200, True)
        elif len(parts) == 3 and parts[0] == "session" and method == "POST" and parts[2] in ("prompt_async", "abort"):
            info = self.sessions.get(parts[1])
            if info is None:
                j(404, {"name": "NotFoundError", "data": {"message": f"Session not found: {parts[1]}"}})
                return
            if parts[2] == "abort":
                j(200, True)
                return
            text = "".join(p.get("text", "") for p in body.get("parts", []))
            self.prompts.append((parts[1], text))
            h.send_response(204)
            h.end_headers()
            d = info["directory"]
            self.emit("session.status", {"sessionID": info["id"], "status": {"type": "busy"}}, d)
            self.emit("session.status", {"sessionID": info["id"], "status": {"type": "idle"}}, d)
            self.emit("session.idle", {"sessionID": info["id"]}, d)
        else:
            j(404, {"name": "NotFoundError", "data": {"message": f"no route {method} {path}"}})

    def _stream(self, h: BaseHTTPRequestHandler) -> None:
        q: queue.Queue[bytes | None] = queue.Queue()
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.end_headers()
        hello = {"payload": {"id": f"evt_hello{next(self._ids)}", "type": "server.connected", "properties": {}}}
        # Subscribe before saying hello, as opencode does: an event emitted the moment a client sees
        # server.connected must reach that client.
        with self._lock:
            self._streams.append(q)
            self.stream_connects += 1
        try:
            h.wfile.write(b"data: " + json.dumps(hello).encode() + b"\n\n")
            h.wfile.flush()
            while True:
                try:
                    line = q.get(timeout=5.0)
                except queue.Empty:
                    line = b'data: {"payload":{"type":"server.heartbeat","properties":{}}}\n\n'
                if line is None:
                    return
                h.wfile.write(line)
                h.wfile.flush()
        except OSError:
            pass
        finally:
            with self._lock:
                if q in self._streams:
                    self._streams.remove(q)


# ----------------------------------------------------------------------------------------------
# a cuttable TCP relay (network partition)
# ----------------------------------------------------------------------------------------------


class TcpProxy:
    """Relay 127.0.0.1:<port> -> 127.0.0.1:<target_port>. ``cut()`` drops every relayed connection and
    refuses new ones (accept + immediate close) until ``restore()``."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._refusing = False
        self._closed = False
        self.accepted = 0

    def start(self) -> TcpProxy:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept_loop, daemon=True, name="tcp-proxy").start()
        return self

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/agent"

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.accepted += 1
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)

    def cut(self) -> None:
        self._refusing = True
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._refusing = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        if self._listener is not None:
            self._listener.close()


# ----------------------------------------------------------------------------------------------
# end-to-end stacks: real supervisor + real agent managing a real opencode (tests/e2e/test_stack_*.py)
# ----------------------------------------------------------------------------------------------

def opencode_env(home: Path, config_content: str) -> dict[str, str]:
    """What the agent (and so the opencode it starts) runs with: its own HOME and XDG dirs, the fake
    LLM as the only provider, nothing from the developer's environment."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "OPENCODE_CONFIG_CONTENT": config_content,
        "OPENCODE_DISABLE_SHARE": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    }


def session_of(sup: SupervisorProc, sid: str) -> dict[str, Any]:
    return api_get(sup, f"/api/v1/sessions/{sid}")


def wait_status(sup: SupervisorProc, sid: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        s = session_of(sup, sid)
        return s if s["status"] in statuses else None

    try:
        return wait_for(check, f"session {sid} in {statuses}", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; now: {session_of(sup, sid)}") from None


def session_events(sup: SupervisorProc, sid: str, etype: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"session_id": sid, "limit": 10000}
    if etype:
        params["type"] = etype
    return api_get(sup, "/api/v1/events", **params)


def reply_text(sup: SupervisorProc, sid: str) -> str:
    """The assistant text streamed so far, from the (coalesced) delta events the agent forwarded."""
    return "".join(e["data"].get("delta", "") for e in session_events(sup, sid, "message.part.delta")
                   if e["data"].get("field") == "text")
