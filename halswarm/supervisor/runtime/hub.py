"""The agents' WebSocket hub: authentication, registration, liveness and frame routing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sqlite3
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from halswarm.core.model import Node
from halswarm.protocol import (
    Ack,
    AuthState,
    CommandResult,
    CredentialSync,
    ErrorMsg,
    Event,
    Heartbeat,
    ProtocolError,
    Register,
    Registered,
    decode,
    encode,
)
from halswarm.protocol import errors as perr
from halswarm.protocol.codec import encode_raw
from halswarm.protocol.hub_link import ACCEPTED, DUPLICATE, GAP, HubLinkCore, Liveness, gap_message, rewind_message
from halswarm.store.guard import StorageFault
from halswarm.store.repos.events import max_seq
from halswarm.store.repos.leases import release_lease, renew_lease, take_lease
from halswarm.store.repos.nodes import update_node_auth, update_node_liveness, upsert_node
from halswarm.store.repos.sessions import upsert_sessions
from halswarm.store.writer import Writer, WriterStopped
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.runtime.ingest import Ingestor
from halswarm.supervisor.runtime.leases import LeaseSettings
from halswarm.supervisor.runtime.tracker import (
    STATE_EVENT,
    SessionTracker,
    claimed_session_ids,
    snapshot_session_id,
)
from halswarm.supervisor.security import FailureThrottle, bearer, origin_allowed, token_matches

log = logging.getLogger(__name__)
FOREIGN_LOG_EVERY_S = 60  # at most one "foreign session" warning per node in this many seconds

REGISTER_TIMEOUT = 10.0
# websockets refuses frames above this outright; between max_frame_bytes and this we answer with
# an `error` frame and keep the connection, as the protocol asks.
HARD_FRAME_LIMIT = 16 * 1024 * 1024
# What is stored instead of an event that claimed another node's session (its seq is consumed).
REFUSED_EVENT = "session.foreign_refused"


@dataclass
class HubSettings:
    host: str
    port: int
    token: str | None  # the shared agent token; None when agents must use their own (agent_tokens)
    agent_tokens: dict[str, str] = field(default_factory=dict)
    heartbeat_interval_sec: int = 30
    heartbeat_timeout_count: int = 3
    max_frame_bytes: int = 1024 * 1024
    origin_allowlist: list[str] = field(default_factory=list)
    ssl: ssl.SSLContext | None = None
    credential_version: int | None = None
    open_timeout: float = 10.0  # the opening handshake (HTTP upgrade request) must arrive within it
    api_port: int | None = None  # named in the plain-HTTP answer of this port


AGENT_PATH = "/ws/agent"


def hub_info_text(api_port: int | None, tls: bool) -> str:
    """What a plain HTTP request to the agent port is told (runbook: `curl -v ws://host:8420`)."""
    scheme, api = ("wss", "https") if tls else ("ws", "http")
    lines = [
        "hal-supervisor agent hub: this port takes WebSocket connections from hal-agent only.",
        f"Agents connect to {scheme}://HOST:PORT{AGENT_PATH} with 'Authorization: Bearer <agent token>'.",
    ]
    if api_port:
        lines.append(f"Operators: the HTTP API (and halctl) is on port {api_port}, e.g. {api}://HOST:{api_port}/readyz.")
    return "\n".join(lines)


def is_upgrade(headers: Headers) -> bool:
    """A WebSocket upgrade request (as opposed to a plain GET from curl or a browser)."""
    upgrade = (headers.get("Upgrade") or "").lower()
    return "websocket" in {p.strip() for p in upgrade.split(",")}


@dataclass
class AgentLink:
    node_id: str
    ws: ServerConnection
    last_frame: float = field(default_factory=time.monotonic)


class Hub:
    def __init__(self, settings: HubSettings, nodes: dict[str, Node], tracker: SessionTracker, ingestor: Ingestor,
                 writer: Writer, metrics: Metrics) -> None:
        self.s = settings
        self.nodes = nodes
        self.tracker = tracker
        self.ingestor = ingestor
        self.writer = writer
        self.metrics = metrics
        self.links: dict[str, AgentLink] = {}
        self.vitals: dict[str, dict[str, float]] = {}  # node -> its last heartbeat `process` figures
        self._foreign_logged: dict[str, float] = {}  # node id -> when its last foreign-claim warning was logged
        self.throttle = FailureThrottle()
        self.dispatcher: Any = None  # set by the app (command results are routed to it)
        self.on_credential_sync: Callable[[str], None] | None = None  # set by app.py: the drift watcher
        self._server: Server | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self.frames_rejected = 0
        self.listener_error: str | None = None  # set once when the listening socket itself fails
        # PostgreSQL shared by several supervisors: node leases (runtime/leases.py); None on SQLite.
        self.leases: LeaseSettings | None = None

    # ----- lifecycle -----

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving() and self.listener_error is None

    def take_accept_failure(self, context: dict[str, Any]) -> bool:
        """Claim an event-loop exception raised by accept() on our listening socket.

        A listening socket that the kernel destroyed (``ss -K``) or shut down stays readable and every
        accept() fails: asyncio reports it once per loop iteration (thousands of tracebacks a second).
        Taking the socket off the selector stops that; the hub then reports one error and /readyz turns
        503 so that the runbook's supervisor-unreachable remediation (a restart) is what brings it back.
        Returns False for anything else, which goes to the default handler."""
        exc, handle = context.get("exception"), context.get("handle")
        if not isinstance(exc, OSError) or handle is None or self._server is None:
            return False
        ours = {s.fileno() for s in self._server.sockets}
        dead = [a for a in getattr(handle, "_args", ()) if isinstance(a, socket.socket) and a.fileno() in ours]
        if not dead:
            return False
        loop = asyncio.get_running_loop()
        for sock in dead:
            loop.remove_reader(sock.fileno())
        if self.listener_error is None:
            self.listener_error = f"agent listener failed: {exc.strerror or exc}"
            log.error("agent listener on %s:%d failed (%s): agents cannot connect until the supervisor restarts "
                      "(/readyz reports websocket_hub; runbook: halctl remediate supervisor-unreachable)",
                      self.s.host, self.s.port, exc.strerror or exc)
        return True

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.s.host,
            self.s.port,
            process_request=self._process_request,
            max_size=HARD_FRAME_LIMIT,
            ssl=self.s.ssl,
            ping_interval=20,
            ping_timeout=20,
            # Event frames are small and many: deflate costs more supervisor CPU than it saves.
            compression=None,
            server_header="hal-supervisor",
            open_timeout=self.s.open_timeout,
        )
        self._monitor = asyncio.create_task(self._liveness_loop())
        log.info("agent hub listening on %s:%d%s", self.s.host, self.bound_port, " (wss)" if self.s.ssl else "")

    def stop_accepting(self) -> None:
        """Stop taking new agent connections; existing ones keep flowing until close()."""
        if self._server is not None:
            self._server.close(close_connections=False)

    async def close(self) -> None:
        if self._monitor:
            self._monitor.cancel()
        # Persist every node as offline now, while the writer still runs: a connection handler that
        # finishes its closing handshake later (an agent slow to answer the close frame) would find the
        # writer stopped and lose the state.
        for node_id in list(self.links):
            await self._mark_offline(node_id, "supervisor shutting down")
        if self._server is not None:
            self._server.close(close_connections=True)
            # Server.close() is idempotent: after stop_accepting() the call above closes nothing, and
            # wait_closed() would wait out its timeout for the open agent links. Close them here.
            conns = list(self._server.connections)
            if conns:
                await asyncio.wait([asyncio.ensure_future(c.close(1001, "supervisor shutting down"))
                                    for c in conns], timeout=5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        for t in list(self._bg):
            t.cancel()

    # ----- upgrade: auth and origin -----

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        addr = _peer(conn)
        if not is_upgrade(request.headers):
            # curl / a browser / a health probe: say what this port is instead of a handshake error.
            return _plain(HTTPStatus.OK, hub_info_text(self.s.api_port, self.s.ssl is not None))
        if not origin_allowed(request.headers.get("Origin"), self.s.origin_allowlist):
            self.metrics.connections_total.labels("forbidden").inc()
            self.metrics.connection_failed("origin_forbidden")
            return _plain(HTTPStatus.FORBIDDEN, "origin not allowed")
        if "token" in parse_qs(urlsplit(request.path).query):
            # A token in the URL ends up in proxies' and libraries' logs: refused even when valid.
            self.throttle.failed(addr)
            self.metrics.connections_total.labels("unauthorized").inc()
            self.metrics.connection_failed("token_in_url")
            log.warning("agent connection from %s refused: token in the URL query string", addr)
            return _plain(HTTPStatus.UNAUTHORIZED,
                          "token in the URL refused: send it as Authorization: Bearer <token>")
        token = bearer(request.headers.get("Authorization"))
        if not token:
            # No credential at all guesses nothing: not a failed authentication (so the runbook's
            # `curl ws://host:8420` probe from an agent host never throttles that host's agent).
            self.metrics.connections_total.labels("unauthorized").inc()
            self.metrics.connection_failed("no_token")
            return _plain(HTTPStatus.UNAUTHORIZED, "unauthorized: no agent token.\n"
                          + hub_info_text(self.s.api_port, self.s.ssl is not None))
        owner = self._token_owner(token)
        if owner is None:
            # Only failures are throttled: a valid token is never locked out by others' bad ones (issue 14).
            if self.throttle.blocked(addr):
                self.metrics.connections_total.labels("throttled").inc()
                self.metrics.connection_failed("throttled")
                return _plain(HTTPStatus.TOO_MANY_REQUESTS, "too many failed authentications; retry later")
            self.throttle.failed(addr)
            self.metrics.connections_total.labels("unauthorized").inc()
            self.metrics.connection_failed("bad_token")
            log.warning("agent connection from %s refused: bad or missing token", addr)
            return _plain(HTTPStatus.UNAUTHORIZED, "unauthorized")
        self.throttle.succeeded(addr)
        conn.token_owner = owner  # type: ignore[attr-defined]
        return None

    def _token_owner(self, token: str | None) -> str | None:
        """'*' for the shared token, the node id for a per-node token, None when invalid."""
        if token_matches(token, self.s.token):
            return "*"
        for node_id, t in self.s.agent_tokens.items():
            if token_matches(token, t):
                return node_id
        return None

    # ----- connection -----

    async def _handle(self, ws: ServerConnection) -> None:
        self.metrics.connections_total.labels("accepted").inc()
        self.metrics.connections_active.inc()
        link: AgentLink | None = None
        try:
            link = await self._await_register(ws)
            if link is None:
                return
            async for frame in ws:
                link.last_frame = time.monotonic()
                await self._on_frame(link, frame)
                await self.ingestor.room()  # before reading more: bounded memory for uncommitted events
        except ConnectionClosed:
            pass
        except (StorageFault, WriterStopped, sqlite3.Error) as exc:  # registration not stored: no traceback
            log.warning("closing the connection of %s: %s", link.node_id if link else _peer(ws), exc)
            with contextlib.suppress(Exception):
                await ws.close(1011, "database unavailable")
        finally:
            self.metrics.connections_active.dec()
            if link is not None and self.links.get(link.node_id) is link:
                await self._mark_offline(link.node_id, "connection closed")

    async def _await_register(self, ws: ServerConnection) -> AgentLink | None:
        deadline = time.monotonic() + REGISTER_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.metrics.connection_failed("register_timeout")
                await self._send_error(ws, perr.NOT_REGISTERED, "no register frame within 10 s")
                await ws.close(1008, "register timeout")
                return None
            try:
                frame = await asyncio.wait_for(ws.recv(), remaining)
            except TimeoutError:
                continue
            try:
                env = decode(frame, max_bytes=self.s.max_frame_bytes)
            except ProtocolError as exc:
                await self._reject(ws, exc)
                continue
            if not isinstance(env.payload, Register):
                self.metrics.connection_failed("not_registered")
                await self._send_error(ws, perr.NOT_REGISTERED, f"first frame must be register, got {env.type}",
                                       env.request_id)
                continue
            reg = env.payload
            owner = getattr(ws, "token_owner", "*")
            if owner != "*" and owner != reg.node_id:
                self.metrics.connection_failed("token_node_mismatch")
                await self._send_error(ws, perr.NOT_REGISTERED, "this token belongs to another node")
                await ws.close(1008, "token does not match node_id")
                return None
            if owner == "*" and reg.node_id in self.s.agent_tokens:
                # A node with its own token cannot be impersonated with the shared (opt-in) token.
                self.metrics.connections_total.labels("forbidden").inc()
                self.metrics.connection_failed("shared_token_refused")
                log.warning("agent connection from %s refused: the shared token cannot register node %s, "
                            "which has its own token", _peer(ws), reg.node_id)
                await self._send_error(ws, perr.NOT_REGISTERED, f"node {reg.node_id} must use its own token")
                await ws.close(1008, "node has its own token")
                return None
            return await self._register(ws, reg, env.request_id)

    async def _register(self, ws: ServerConnection, reg: Register, request_id: str | None,
                        current: AgentLink | None = None) -> AgentLink:
        """Register a node; `current` is the link of a re-register on an open connection (kept, not replaced)."""
        claimed = [sid for sid in map(snapshot_session_id, reg.sessions) if sid is not None]
        # One read off the loop for the sessions memory does not hold, before anything changes: the rest
        # of the registration runs without yielding up to its write.
        await self.tracker.resolve(claimed)
        now = time.time()
        old = self.links.get(reg.node_id)
        link = current if current is not None else AgentLink(reg.node_id, ws)
        self.links[reg.node_id] = link
        if old is not None and old.ws is not ws:
            log.info("node %s reconnected; closing its previous connection", reg.node_id)
            self._spawn(old.ws.close(4000, "replaced by a newer connection"))
        node = self.nodes.get(reg.node_id)
        if node is None:
            node = self.nodes[reg.node_id] = Node(id=reg.node_id, first_seen_at=now)
        node.hostname = reg.hostname or node.hostname or reg.node_id
        node.version = reg.version
        node.projects = [{"name": p.name, "directory": p.directory} for p in reg.projects]
        node.capabilities = reg.capabilities
        if reg.resources:
            node.resources = reg.resources
        node.connected_at = now
        node.last_heartbeat = now
        came_online = node.set_status("online")
        foreign = set(self.tracker.foreign(reg.node_id, claimed))
        own = [st for st in reg.sessions if snapshot_session_id(st) not in foreign]
        changed = self.tracker.apply_snapshot(reg.node_id, own, at=now)

        leases = self.leases

        def job(conn: Any) -> tuple[int, str | None]:
            previous = take_lease(conn, node.id, leases.owner, now, leases.ttl) if leases else None
            upsert_node(conn, node)
            if changed:
                upsert_sessions(conn, changed)
            return max_seq(conn, node.id), previous

        stored, previous = await self.writer.run(job)
        if previous is not None:
            log.warning("node %s registered here while supervisor %s still held its lease: taken over (the newer "
                        "connection wins; %s drops its link at its next heartbeat)", node.id, previous, previous)
        st = self.ingestor.reset_node(node.id, stored)
        node.last_seq = st.committed
        self.metrics.nodes_online.set(sum(1 for n in self.nodes.values() if n.status == "online"))
        await ws.send(encode(Registered(node.id, st.committed, self.s.heartbeat_interval_sec,
                                        self.s.credential_version), request_id=request_id))
        if foreign:
            await self._refuse_foreign(link, sorted(foreign), "register", "its register snapshot")
        if came_online:
            self.ingestor.emit(node.id, "node.online", {"hostname": node.hostname, "projects": node.project_names})
        log.info("node %s registered (%d projects, resume_from_seq=%d)", node.id, len(node.projects), st.committed)
        return link

    async def _on_frame(self, link: AgentLink, frame: str | bytes) -> None:
        try:
            env = decode(frame, max_bytes=self.s.max_frame_bytes)
        except ProtocolError as exc:
            await self._reject(link.ws, exc)
            return
        msg = env.payload
        node = self.nodes[link.node_id]
        if isinstance(msg, Event):
            if msg.type == STATE_EVENT or (msg.session_id and msg.session_id not in self.tracker.sessions):
                # a session memory does not hold: read off the loop now, not synchronously by the rule below
                await self.tracker.resolve(claimed_session_ids(msg.type, msg.session_id, msg.data))
            claimed, foreign = self.tracker.event_claims(link.node_id, msg.type, msg.session_id, msg.data)
            if foreign and self.ingestor.link.expects(link.node_id, msg.seq):
                # Refused, but its seq is consumed (a hole would stall the node's stream): what is stored
                # is only the refusal, under this node and no session.
                await self._refuse_foreign(link, foreign, "event", f"event seq {msg.seq} ({msg.type[:100]})",
                                           env.request_id)
                msg = Event(msg.seq, msg.event_id, REFUSED_EVENT, None, msg.project,
                            {"claimed_session_ids": foreign[:10], "event_type": msg.type[:200]}, msg.timestamp)
            verdict, seq = self.ingestor.offer(link.node_id, msg, link.last_frame)
            if verdict == ACCEPTED and claimed and not foreign:
                self.tracker.claim(link.node_id, claimed)
            if verdict == DUPLICATE and HubLinkCore.acks_duplicate(seq, msg.seq):
                self._send(link, encode_raw("ack", {"seq": seq}))
            elif verdict == GAP:
                self.metrics.errors_total.labels("hub", perr.SEQ_GAP).inc()
                await self._send_error(link.ws, perr.SEQ_GAP, gap_message(seq, msg.seq), env.request_id)
        elif isinstance(msg, Heartbeat):
            node.last_heartbeat = time.time()
            if msg.resources:
                node.resources = msg.resources
            if msg.outbox is not None:  # optional (older agents): shown as resources.outbox_*
                ob = msg.outbox
                node.resources = {**node.resources, "outbox_pending": float(ob.pending),
                                  "outbox_max_events": float(ob.max_events),
                                  "outbox_refused_total": float(ob.refused_total)}
            # The latest report replaces the last (a figure no longer sent is no longer shown); the codec
            # kept only known keys with bounded numbers (halswarm.core.agent_vitals).
            self.vitals[node.id] = msg.process
            self._spawn(self._store_heartbeat(link, node))
        elif isinstance(msg, CommandResult):
            if self.dispatcher is not None:
                self.dispatcher.on_result(link.node_id, msg)
        elif isinstance(msg, AuthState):
            changed = False
            for st in msg.states:
                entry = {"tool": st.tool, "status": st.status, "reason": st.reason, "checked_at": st.checked_at}
                if node.auth_states.get(st.tool, {}).get("status") != st.status:
                    changed = True
                node.auth_states[st.tool] = entry
            self._spawn(self.writer.run(lambda c: update_node_auth(c, node)))
            if changed:
                self.ingestor.emit(node.id, "auth.changed", {"auth": node.auth_summary()})
        elif isinstance(msg, CredentialSync):
            node.credential_version = msg.credential_version
            self._spawn(self.writer.run(lambda c: update_node_auth(c, node)))
            if self.on_credential_sync is not None:
                self.on_credential_sync(node.id)
        elif isinstance(msg, Register):
            # A re-register on a live connection refreshes projects and the session snapshot on the same
            # link (the connection loop keeps its liveness). Another node_id on this connection is refused
            # with an `error` frame; the connection stays open for the node it registered as.
            if msg.node_id != link.node_id:
                self.metrics.errors_total.labels("hub", perr.BAD_PAYLOAD).inc()
                await self._send_error(link.ws, perr.BAD_PAYLOAD,
                                       f"this connection is registered as {link.node_id}; register as "
                                       f"{msg.node_id} on a new connection", env.request_id)
                return
            await self._register(link.ws, msg, env.request_id, current=link)
        elif isinstance(msg, ErrorMsg):
            log.warning("node %s reported error %s: %s", link.node_id, msg.code, msg.message)
        else:
            self.metrics.errors_total.labels("hub", perr.UNEXPECTED_TYPE).inc()
            await self._send_error(link.ws, perr.UNEXPECTED_TYPE, f"{env.type} is not sent by agents",
                                   env.request_id)

    async def _store_heartbeat(self, link: AgentLink, node: Node) -> None:
        """The node's liveness, and on a shared store its lease renewed; a lease another supervisor took
        means the agent is there now: this link is dropped without writing the node's state."""
        leases, now = self.leases, time.time()
        vitals = json.dumps(self.vitals.get(node.id) or {}) if leases is not None else None

        def job(c: Any) -> bool:
            if leases is not None and not renew_lease(c, node.id, leases.owner, now, leases.ttl, vitals):
                return False
            update_node_liveness(c, node.id, node.status, node.last_heartbeat, node.resources)
            return True

        if not await self.writer.run(job) and self.links.get(node.id) is link:
            log.warning("node %s: its lease is held by another supervisor now; dropping this connection", node.id)
            self._forget(node.id)
            await link.ws.close(4002, "node taken over by another supervisor")

    async def _refuse_foreign(self, link: AgentLink, foreign: list[str], via: str, what: str,
                              request_id: str | None = None) -> None:
        """A node claimed sessions of another node: `error` frame, counter, warning; nothing applied."""
        self.metrics.foreign_sessions_refused.labels(via).inc(len(foreign))
        shown = ", ".join(f"{sid[:80]} (node {self.tracker.owner(sid)})" for sid in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        # One warning per node a minute: a node that keeps naming foreign sessions must not turn the log
        # (and the loop that writes it) into its amplifier; the counter has every refusal.
        now = time.monotonic()
        if now - self._foreign_logged.get(link.node_id, -FOREIGN_LOG_EVERY_S) >= FOREIGN_LOG_EVERY_S:
            if len(self._foreign_logged) >= 10_000:
                self._foreign_logged.clear()
            self._foreign_logged[link.node_id] = now
            log.warning("node %s claimed sessions of other nodes in %s: %s%s; refused (further refusals of this "
                        "node for %d s are only counted in hal_o_swarm_foreign_session_refused_total)",
                        link.node_id, what, shown, more, FOREIGN_LOG_EVERY_S)
        await self._send_error(link.ws, perr.BAD_PAYLOAD,
                               f"session(s) {', '.join(s[:80] for s in foreign[:5])}{more} belong to another "
                               f"node; {what} not applied to them", request_id)

    # ----- liveness -----

    async def _liveness_loop(self) -> None:
        rule = Liveness(self.s.heartbeat_interval_sec, self.s.heartbeat_timeout_count)
        timeout = rule.timeout
        while True:
            await asyncio.sleep(rule.tick)
            now = time.monotonic()
            for node_id, link in list(self.links.items()):
                if rule.silent(link.last_frame, now):
                    log.warning("node %s silent for %.0f s: marking offline", node_id, now - link.last_frame)
                    await self._mark_offline(node_id, f"no frame for {timeout} s")
                    self._spawn(link.ws.close(4001, "heartbeat timeout"))

    def _forget(self, node_id: str) -> tuple[Node, list[Any]] | None:
        """The node is no longer connected here: in memory only (link, vitals, status, its sessions)."""
        self.links.pop(node_id, None)
        self.vitals.pop(node_id, None)  # a node's own figures are only shown while it is connected
        node = self.nodes.get(node_id)
        if node is None or node.status == "offline":
            return None
        node.set_status("offline")
        if self.dispatcher is not None:
            self.dispatcher.node_gone(node_id)
        sessions = self.tracker.mark_node_unreachable(node_id)
        self.metrics.nodes_online.set(sum(1 for n in self.nodes.values() if n.status == "online"))
        return node, sessions

    async def _mark_offline(self, node_id: str, reason: str) -> None:
        gone_here = self._forget(node_id)
        if gone_here is None:
            return
        node, sessions = gone_here
        leases = self.leases

        def job(conn: Any) -> bool:
            # On a shared store: only the lease holder writes the node's state (another supervisor that
            # took the node over has it online, with its sessions).
            if leases is not None and not release_lease(conn, node_id, leases.owner):
                return False
            update_node_liveness(conn, node_id, "offline", node.last_heartbeat, None)
            if sessions:
                upsert_sessions(conn, sessions)
            return True

        try:
            if not await self.writer.run(job):
                log.info("node %s: connection closed here; another supervisor holds it now", node_id)
                return
        except Exception as exc:
            log.error("could not persist offline state of %s: %s", node_id, exc)
        gone = [s.id for s in sessions]
        self.ingestor.emit(node_id, "node.offline", {"reason": reason, "unreachable_sessions": gone})

    # ----- sending -----

    def send_ack(self, node_id: str, seq: int) -> None:
        link = self.links.get(node_id)
        if link is not None:
            self._send(link, encode(Ack(seq)))

    def send_rewind(self, node_id: str, expected: int) -> None:
        """Ask an agent to resend from `expected` (after the supervisor failed to store its events)."""
        link = self.links.get(node_id)
        if link is not None:
            self._spawn(self._send_error(link.ws, perr.SEQ_GAP, rewind_message(expected)))

    async def send_command(self, node_id: str, frame: str) -> bool:
        link = self.links.get(node_id)
        if link is None:
            return False
        try:
            await link.ws.send(frame)
        except ConnectionClosed:
            return False
        return True

    def _send(self, link: AgentLink, frame: str) -> None:
        self._spawn(link.ws.send(frame))

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._bg.add(t)
        t.add_done_callback(_reap(self._bg))

    async def _reject(self, ws: ServerConnection, exc: ProtocolError) -> None:
        self.frames_rejected += 1
        self.metrics.errors_total.labels("hub", exc.code).inc()
        self.metrics.connection_failed(exc.code)
        log.warning("rejected frame from %s: %s", _peer(ws), exc.message[:200])
        await self._send_error(ws, exc.code, exc.message[:500], exc.request_id)

    async def _send_error(self, ws: ServerConnection, code: str, message: str, request_id: str | None = None) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode(ErrorMsg(code, message, request_id), request_id=request_id))


def _reap(bg: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(t: asyncio.Task[Any]) -> None:
        bg.discard(t)
        if not t.cancelled() and t.exception() is not None and not isinstance(t.exception(), ConnectionClosed):
            log.debug("background send failed: %s", t.exception())
    return done


def _peer(conn: ServerConnection) -> str:
    addr = conn.remote_address
    return str(addr[0]) if addr else "?"


def _plain(status: HTTPStatus, text: str) -> Response:
    body = (text + "\n").encode()
    headers = Headers([("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)
