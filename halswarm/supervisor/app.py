"""The supervisor process: wires store, hub, dispatcher and API together and runs them on one loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
import ssl
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn

from halswarm.config.errors import ConfigError
from halswarm.config.supervisor import SupervisorConfig
from halswarm.core.model import Node, Session
from halswarm.core.remediation.triggers import CostProviderFacts
from halswarm.memwatch import MemoryWatch
from halswarm.store.checkpoint import WalCheckpointer
from halswarm.store.clean_marker import take_marker, write_marker
from halswarm.store.db import (
    CorruptDatabase,
    DatabaseError,
    FileCheck,
    connect,
    final_checkpoint,
    quick_check,
    schema_problem,
)
from halswarm.store.dialect import POSTGRESQL, SQLITE
from halswarm.store.engine import open_connection, open_reader, parse_storage_url
from halswarm.store.guard import CORRUPT, RECOVERABLE, StorageFault, StorageGuard, startup_problem
from halswarm.store.migrations import bundled_migrations, migrate
from halswarm.store.premigrate import backup_before_migrate
from halswarm.store.probes import write_probe
from halswarm.store.reader import Reader
from halswarm.store.repos.events import fill_event_timestamps
from halswarm.store.repos.leases import drop_owner_leases, live_leases
from halswarm.store.repos.nodes import mark_all_offline
from halswarm.store.repos.sessions import (
    get_session,
    get_sessions,
    project_counts_held_elsewhere,
    sessions_held_elsewhere,
    upsert_sessions,
)
from halswarm.store.repos.state import load_state
from halswarm.store.rescue import rescue_copy
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.deps import OperatorGate, alert_poster
from halswarm.supervisor.apikit.registry import Services
from halswarm.supervisor.features.alerts.service import AlertsService
from halswarm.supervisor.features.alerts.settings import AlertSettings
from halswarm.supervisor.features.approvals.policy import ApprovalTimeoutPolicy
from halswarm.supervisor.features.approvals.service import ApprovalsService, approvals_stage
from halswarm.supervisor.features.approvals.settings import ApprovalSettings
from halswarm.supervisor.features.audit.service import AuditService
from halswarm.supervisor.features.backups.service import BackupWatch
from halswarm.supervisor.features.backups.service import register as register_backup_metrics
from halswarm.supervisor.features.backups.settings import BackupSettings
from halswarm.supervisor.features.chat.ports import ChatPorts
from halswarm.supervisor.features.chat.service import DiscordInteractions
from halswarm.supervisor.features.chat.settings import DiscordSettings
from halswarm.supervisor.features.chat.slack_service import SlackChat
from halswarm.supervisor.features.chat.slack_settings import SlackSettings
from halswarm.supervisor.features.commands.service import CommandsService
from halswarm.supervisor.features.console.logins import LoginStore
from halswarm.supervisor.features.console.ports import ConsolePorts
from halswarm.supervisor.features.console.service import ConsoleService
from halswarm.supervisor.features.console.settings import ConsoleSettings
from halswarm.supervisor.features.cost.aggregator import CostAggregator
from halswarm.supervisor.features.cost.service import CostService
from halswarm.supervisor.features.cost.settings import CostSettings
from halswarm.supervisor.features.dependencies.service import DependencyManager
from halswarm.supervisor.features.dependencies.settings import DependencySettings
from halswarm.supervisor.features.env.agentmd import AgentMdService
from halswarm.supervisor.features.env.approvals import EnvApprovals
from halswarm.supervisor.features.env.checks import EnvChecks
from halswarm.supervisor.features.env.manifests import EnvManifests
from halswarm.supervisor.features.env.service import EnvService
from halswarm.supervisor.features.env.settings import EnvSettings
from halswarm.supervisor.features.env.watcher import EnvWatcher
from halswarm.supervisor.features.events.service import EventsService
from halswarm.supervisor.features.health.service import HealthService
from halswarm.supervisor.features.integrity.service import IntegrityWatch, is_busy
from halswarm.supervisor.features.integrity.settings import IntegritySettings
from halswarm.supervisor.features.nodes.service import NodesService, SharedFleet
from halswarm.supervisor.features.policies.engine import PolicyEngine
from halswarm.supervisor.features.policies.settings import PolicyConfig
from halswarm.supervisor.features.remediations.db_launch import launch_db_remediation
from halswarm.supervisor.features.remediations.engine import AutoRemediation
from halswarm.supervisor.features.remediations.metrics import RemediationMetrics
from halswarm.supervisor.features.remediations.service import RemediationsService
from halswarm.supervisor.features.remediations.settings import DB_CORRUPTION, AutoConfig
from halswarm.supervisor.features.retention.service import RetentionJob
from halswarm.supervisor.features.retention.settings import RetentionSettings
from halswarm.supervisor.features.sessions.memory import SessionMemory
from halswarm.supervisor.features.sessions.service import SessionsService
from halswarm.supervisor.features.sessions.settings import SessionSettings
from halswarm.supervisor.features.tool_auth.service import ToolAuthService
from halswarm.supervisor.features.tool_auth.settings import CredentialsSettings
from halswarm.supervisor.features.tool_auth.watcher import CredentialDriftWatcher
from halswarm.supervisor.http.read_timeout import read_timeout_protocol
from halswarm.supervisor.lifecycle import Lifecycle
from halswarm.supervisor.metrics import Metrics
from halswarm.supervisor.notify import EventFeed, NotifySettings, Router
from halswarm.supervisor.runtime.commands import CommandRunner
from halswarm.supervisor.runtime.dispatcher import Dispatcher, Result
from halswarm.supervisor.runtime.event_tail import EventTail
from halswarm.supervisor.runtime.hub import Hub, HubSettings
from halswarm.supervisor.runtime.ingest import Ingestor
from halswarm.supervisor.runtime.leadership import EngineSet, Leadership
from halswarm.supervisor.runtime.leases import FleetView, FleetVitals, LeaseSettings, LeaseSweep, supervisor_id
from halswarm.supervisor.runtime.live_metrics import LiveMetrics
from halswarm.supervisor.runtime.looplag import LoopLagProbe
from halswarm.supervisor.runtime.tracker import SessionTracker
from halswarm.supervisor.secrets_registry import register_config_secrets
from halswarm.systemd_restarts import read_own_nrestarts

log = logging.getLogger(__name__)


FAULT_EXIT_DELAY_SEC = 5.0  # not ready, then exit 1, after the database file was deleted or replaced
CLEAN_START_CHECK_DELAY_SEC = 5.0  # after a start that skipped quick_check (clean-shutdown marker)


class StartupError(RuntimeError):
    """The supervisor cannot start; the message is one line for the operator."""


class DatabaseIntegrityError(DatabaseError):
    """The database failed its integrity check at start (incident supervisor-db-corruption)."""


def integrity_message(path: str, problem: str) -> str:
    """The one line for a database that failed its integrity check (at start or in the background)."""
    return (f"database {path} failed its integrity check ({problem}); restore a backup with "
            "`halctl restore BACKUP` or run `halctl remediate supervisor-db-corruption`")


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the supervisor owns SIGTERM and shuts down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Supervisor:
    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        register_config_secrets(config)  # redacted by value from logs, stored rows and answers
        self.operators = config.operators  # named operator credentials of the HTTP API (issue 14)
        self.metrics = Metrics()
        self.remediation_metrics = RemediationMetrics(self.metrics.registry)
        self.nodes: dict[str, Node] = {}
        self.tracker = SessionTracker(note=lambda f, why: self.metrics.values_normalised.labels(f, why).inc())
        self.gate = OperatorGate(self.operators, alert_poster=alert_poster(config.alert_token))
        self.services = Services()
        self.recovery_errors: list[str] = []
        self.exit_code = 0
        self.abandon_database = False  # the open database file is no longer the one at its path
        self.fatal_error: str | None = None  # why the supervisor stopped itself (main prints it as `error:`)
        self.integrity: IntegrityWatch | None = None
        self.startup_full_check = True  # False: the clean-shutdown marker let start-up skip quick_check
        self.storage_engine = SQLITE  # POSTGRESQL with `storage.url: postgresql://...`
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._api: _ApiServer | None = None
        self._api_task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.lifecycle = Lifecycle()  # what start() started, stopped in reverse by shutdown()
        # The leader-only engines; with PostgreSQL several supervisors share the store and `leadership`
        # runs these on one of them at a time (None on SQLite: this supervisor is the only one).
        self.leader_engines = EngineSet()
        self.leadership: Leadership | None = None
        self.leases: LeaseSettings | None = None  # PostgreSQL: node ownership among supervisors
        # What the leader's engines take for the fleet: on SQLite exactly `nodes`; on PostgreSQL nodes other
        # supervisors hold count as online (refreshed by the lease sweep).
        self.fleet_view = FleetView(self.nodes)
        # PostgreSQL: the one LISTEN connection (halswarm.store.pg_listen.PgListener) of the event tail and
        # command forwarding, and the leader's lease sweep (its count is `hal_o_swarm_fleet_nodes_held`).
        self.pg_listener: Any = None
        self.lease_sweep: LeaseSweep | None = None
        self.metrics.leader.set(1)
        self.writer: Writer
        self.reader: Reader
        self.hub: Hub
        self.ingestor: Ingestor
        self.dispatcher: Dispatcher
        self.retention: RetentionJob
        self.credential_settings: CredentialsSettings
        self.tool_auth: ToolAuthService
        self.drift_watcher: CredentialDriftWatcher

    @property
    def read_timeout_sec(self) -> float:
        """`server.read_timeout_sec`: a request (HTTP) or opening handshake (WebSocket) must arrive in full
        within it, or the connection is closed."""
        return self.config.read_timeout_sec

    def _parse_settings(self) -> None:
        """Every feature's typed settings, parsed once from the config (a wrong value stops the start with
        one line naming the key)."""
        cfg = self.config
        try:
            self.cost_settings = CostSettings.from_config(cfg)
            self.notify_settings = NotifySettings.from_config(cfg)
            self.policy_settings = PolicyConfig.from_config(cfg)
            self.dependency_settings = DependencySettings.from_config(cfg)
            self.retention_settings = RetentionSettings.from_config(cfg)
            self.remediation_settings = AutoConfig.from_config(cfg)
            self.credential_settings = CredentialsSettings.from_config(cfg)
            self.integrity_settings = IntegritySettings.from_config(cfg)
            self.alert_settings = AlertSettings.from_config(cfg)
            self.session_settings = SessionSettings.from_config(cfg)
            self.backup_settings = BackupSettings.from_config(cfg)
            self.approval_settings = ApprovalSettings.from_config(cfg)
            self.discord_settings = DiscordSettings.from_config(cfg)
            self.slack_settings = SlackSettings.from_config(cfg)
            self.console_settings = ConsoleSettings.from_config(cfg)
        except ConfigError as exc:
            raise StartupError(f"invalid configuration: {exc}") from None

    # ----- start-up -----

    def open_database(self) -> None:
        """Open, check and migrate the database; raises DatabaseError with an operator-facing line.

        Whatever makes the database unusable (read-only, locked, not a database, an unreadable
        directory, an unreadable schema, a failed `quick_check`) is found here, before anything reports
        ready: a damaged file must refuse the start (the runbook's supervisor-db-corruption path).
        IntegrityWatch repeats the check in the background while the supervisor runs.

        The full `quick_check` (seconds at millions of events) is skipped only when the clean-shutdown
        marker proves the file untouched since the supervisor's own clean stop; the marker is taken
        (removed) here, before the file is opened for writing, and the background check then runs soon
        after start instead of one interval later.
        """
        if self.config.uses_postgresql:
            self._open_postgresql()
            return
        path = self.config.database_path
        problem = startup_problem(path)
        if problem is not None:
            raise DatabaseError(problem)
        verdict = take_marker(path)
        self.startup_full_check = not verdict.skip_full_check
        if verdict.skip_full_check:
            log.info("start-up integrity check: full quick_check skipped (%s); it runs in the background "
                     "in %g s", verdict.reason, CLEAN_START_CHECK_DELAY_SEC)
        else:
            log.info("start-up integrity check: running the full quick_check (%s)", verdict.reason)
        try:
            conn = connect(path)
            problem = schema_problem(conn) or (quick_check(conn) if self.startup_full_check else None)
        except CorruptDatabase as exc:
            conn, problem = None, str(exc).split(": ", 1)[-1]
        if problem is not None and "locked" in problem:
            if conn is not None:
                conn.close()
            raise DatabaseError(f"database {path} is locked by another process ({problem})")
        if problem is not None:
            if conn is not None:
                conn.close()
            raise DatabaseIntegrityError(integrity_message(path, problem))
        assert conn is not None  # no connection only for a corrupt file, which has a problem (raised above)
        try:
            saved = backup_before_migrate(conn, path, bundled_migrations())
        except DatabaseError:
            conn.close()
            raise
        if saved is not None:
            log.info("database backed up before migrating: %s", saved)
        self._prepare_schema(conn, path)
        self.writer = Writer(conn, guard=StorageGuard(path), on_fault=self._on_storage_fault,
                             checkpointer=WalCheckpointer(path))
        self.reader = Reader(path)

    def _open_postgresql(self) -> None:
        """PostgreSQL (`storage.url`): no file to guard, mark or quick_check (PostgreSQL checks its own
        pages, and its backups are pg_dump's); the same migrations concept, writer and restart load."""
        cfg = self.config
        target = dataclasses.replace(parse_storage_url(cfg.storage_url), password=cfg.storage_password)
        log.info("storage: PostgreSQL at %s", target.display)
        conn = open_connection(target)
        self._prepare_schema(conn, target.display)
        self.storage_engine = POSTGRESQL
        self._pg_target = target  # the LISTEN connection of the event tail and command forwarding (issue 21)
        self.metrics.shared_store(lambda: self.lease_sweep.held if self.lease_sweep is not None else None)
        self.writer = Writer(conn)
        from halswarm.store.leader_lock import PgLeaderLock  # psycopg: loaded only for PostgreSQL

        self.leases = LeaseSettings(supervisor_id(cfg.port),
                                    float(cfg.heartbeat_interval_sec * cfg.heartbeat_timeout_count))
        self.metrics.leader.set(0)  # a follower until the lock is taken
        self.leadership = Leadership(PgLeaderLock(target.conninfo, password=target.password),
                                     self.leader_engines, on_change=self._on_leadership, name=self.leases.owner)
        try:
            self.reader = open_reader(target)
        except Exception as exc:
            conn.close()
            raise DatabaseError(f"database {target.display}: readers cannot connect ({exc})") from None

    def _prepare_schema(self, conn: Any, where: str) -> None:
        """Migrate, fill what another tool left out, prove writes work, and load nodes and sessions."""
        try:
            applied = migrate(conn)
            fill_event_timestamps(conn)
            write_probe(conn)
            report = load_state(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise DatabaseError(f"database {where} cannot be written: {exc}") from None
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        for n in report.nodes:
            self.nodes[n.id] = n
        self.tracker.load(report.sessions)
        self.recovery_errors = report.bad_rows
        for bad in report.bad_rows:
            log.warning("skipped unreadable row at start-up: %s", bad)
        self._conn = conn

    # ----- storage watch -----

    def _on_storage_fault(self, fault: StorageFault) -> None:
        """From the writer (any thread): a fault the supervisor cannot clear in place ends the process."""
        if fault.kind in RECOVERABLE or fault.kind == CORRUPT or self._loop is None:
            return  # corruption: _on_integrity_failure has it
        with contextlib.suppress(RuntimeError):  # loop closed: shutting down anyway
            self._loop.call_soon_threadsafe(self._fatal_storage_fault, fault)

    def _fatal_storage_fault(self, fault: StorageFault) -> None:
        if self.abandon_database:
            return
        self.abandon_database = True
        self.exit_code = 1
        task = asyncio.ensure_future(self._rescue_and_stop(fault))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _rescue_and_stop(self, fault: StorageFault) -> None:
        """Copy what was committed (the open file still has every acked event) to where the next
        start finds it, then stop with exit code 1 for the service manager to restart us."""
        path = Path(self.config.database_path)
        try:
            saved = await self.writer.run_raw(lambda c: rescue_copy(c, path, fault.kind))
        except Exception as exc:
            log.error("could not save the database that was in use: %s", exc)
        else:
            where = "at its path, where the next start opens it" if saved == path else (
                f"as {saved} (the new file at {path} was left as it is)")
            log.warning("storage fault (%s): saved the database in use %s; exiting with code 1 in %g s for a "
                        "restart", fault.kind, where, FAULT_EXIT_DELAY_SEC)
        # Meanwhile /readyz answers 503 with the cause, so probes and operators see why it went.
        await asyncio.sleep(FAULT_EXIT_DELAY_SEC)
        self.request_stop()

    def _on_integrity_failure(self, problem: str) -> None:
        """The background check found damage: the corruption path of a failed start-up check, later.
        Nothing commits from now on (no ack for a write into a damaged file; agents keep their events),
        /readyz answers 503 naming the cause, supervisor-db-corruption is launched when automatic, and
        the process exits 1 with the same one-line error as at start."""
        message = integrity_message(self.config.database_path, problem)
        self.writer.report_fault(StorageFault(CORRUPT, message))
        self.exit_code = 1
        task = asyncio.ensure_future(self._corruption_path(message))
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _corruption_path(self, message: str) -> None:
        auto = self.remediation_settings
        note = await asyncio.to_thread(launch_db_remediation, auto) if DB_CORRUPTION in auto.auto else None
        self.fatal_error = message + (f"; {note}" if note else "")
        log.error("%s; exiting with code 1 in %g s", self.fatal_error, FAULT_EXIT_DELAY_SEC)
        await asyncio.sleep(FAULT_EXIT_DELAY_SEC)  # meanwhile /readyz answers 503 with the cause
        self.request_stop()

    async def start(self) -> None:
        """Build and start every part in dependency order; each is registered with the lifecycle as it
        starts, so shutdown (or a start that fails half-way) stops them in reverse."""
        try:
            await self._start()
        except BaseException:
            await self.lifecycle.stop()
            raise
        self.lifecycle.running()

    async def _start(self) -> None:
        cfg = self.config
        lc = self.lifecycle
        self._parse_settings()
        self.open_database()
        reader = self.reader
        self.tracker.loader = lambda sid: reader.run_sync(lambda c: get_session(c, sid))
        self.tracker.batch_loader = lambda ids: reader.run(partial(get_sessions, ids=ids))
        loop = self._loop = asyncio.get_running_loop()
        await lc.start("database writer", lambda: self.writer.start(loop), self._close_store)
        # Persist the restart verdict: every node offline, live sessions unreachable.
        nodes = list(self.nodes.values())
        held_elsewhere = await self._held_elsewhere() if self.leases is not None else set()
        sessions = [s for s in self.tracker.sessions.values()
                    if s.status == "unreachable" and s.node_id not in held_elsewhere]

        def job(c: Any) -> None:
            mark_all_offline(c, keep=held_elsewhere)
            upsert_sessions(c, sessions)

        if nodes or sessions:
            await self.writer.run(job)
        self.ingestor = Ingestor(self.writer, self.tracker, self.metrics, self._send_ack,
                                 lambda node_id, seq: self.hub.send_rewind(node_id, seq))
        self.ingestor.add_stage(approvals_stage)  # pending permission requests, stored with their events
        for n in nodes:
            self.ingestor.reset_node(n.id, n.last_seq)
        self.event_tail = self._event_tail()
        if self.event_tail is not None:  # streams show every supervisor's events (before the API serves them)
            await lc.start("event stream tail", self.event_tail.start, self.event_tail.stop)
            # Subscribers: the tail (above) and command forwarding (when it starts); stopped before both.
            await lc.start("LISTEN connection", self.pg_listener.start, self.pg_listener.stop)
        ssl_ctx = self._ssl_context()
        self.hub = Hub(
            HubSettings(
                host=cfg.host, port=cfg.port, token=cfg.shared_agent_token, agent_tokens=dict(cfg.agent_tokens),
                heartbeat_interval_sec=cfg.heartbeat_interval_sec,
                heartbeat_timeout_count=cfg.heartbeat_timeout_count, max_frame_bytes=cfg.max_frame_bytes,
                origin_allowlist=list(cfg.origin_allowlist or cfg.allowed_origins), ssl=ssl_ctx,
                credential_version=self.credential_settings.version,
                open_timeout=self.read_timeout_sec,
                api_port=cfg.http_port,
            ),
            self.nodes, self.tracker, self.ingestor, self.writer, self.metrics,
        )
        self.dispatcher = Dispatcher(self.hub, self.nodes, self.tracker, self.writer, self.metrics,
                                     default_timeout=float(cfg.command_timeout_sec))
        self.hub.dispatcher = self.dispatcher
        self.hub.leases = self.leases
        self.commands = CommandRunner(self.dispatcher, self.tracker, self.writer)
        live = LiveMetrics(self.nodes, lambda: self.hub.links.keys(), self.hub.vitals, Path(cfg.database_path))
        self.metrics.registry.register(live)
        live.restarts = await asyncio.to_thread(read_own_nrestarts)  # fixed while this process lives
        self.health = HealthService(self.writer, self.reader, self.hub, self.dispatcher, self.metrics, self.tracker,
                                    self.nodes)
        self.health.leadership = self.leadership
        self.health.listener = self.pg_listener
        # Observers of stored events start before the hub, so they still see its last events at shutdown.
        await self._start_observers()
        await lc.start("agent hub", self.hub.start, self._close_hub, timeout=30)
        if self.leases is not None:  # after the hub (it sends through it), stopped before it
            await self._start_forwarding()
        loop.set_exception_handler(self._loop_exception)
        # Actors (they send commands through the hub) start after it and stop before it.
        await self._start_actors()
        self._compose_services()
        discord = self.services.get(DiscordInteractions)  # stops after the API: follow-ups in flight finish
        await lc.start("discord interactions", discord.start, discord.stop)
        slack = self.services.get(SlackChat)  # its notifications come from the event feed (started above)
        if slack.settings.posts:
            self.feed.add(slack.notifier.on_event)
            self.feed.start()
        await lc.start("slack", slack.start, slack.stop)
        # Started here, not by the HTTP app: the watcher runs (and auto-pushes) with the API disabled too.
        # An actor (it pushes through the hub): it starts after the hub and stops before it.
        await lc.start("tool auth", lambda: None, self.tool_auth.stop)
        self.drift_watcher = CredentialDriftWatcher(self.credential_settings, self.nodes, self.ingestor,
                                                    self.tool_auth)
        self.hub.on_credential_sync = self.drift_watcher.on_sync
        await lc.start("credential drift watcher", self.drift_watcher.start, self.drift_watcher.stop)
        # The manifest push is a service of its own: it runs (and stops) with or without the HTTP API.
        watcher = self.services.get(EnvWatcher)
        await lc.start("env watcher", watcher.start, watcher.stop)
        if cfg.http_port:
            await lc.start("HTTP API", self._start_api, self._stop_api)
        self.refresh_gauges()
        if self.storage_engine == POSTGRESQL:
            await lc.start("event-loop lag probe", *self._looplag())
            return
        self.integrity = IntegrityWatch(FileCheck(cfg.database_path), self.integrity_settings,
                                        self._on_integrity_failure,
                                        first_delay_sec=None if self.startup_full_check
                                        else CLEAN_START_CHECK_DELAY_SEC)
        # The full check runs once ready, never on the start path; stopped first (it interrupts a check).
        await lc.start("integrity check", self.integrity.start, self.integrity.stop)
        # Last: it measures stalls of the running supervisor, not the building of its parts.
        await lc.start("event-loop lag probe", *self._looplag())

    async def _start_forwarding(self) -> None:
        """PostgreSQL: a command for a node another supervisor holds goes to it through the
        `command_forwards` table (issue 21); this supervisor runs the ones forwarded for its nodes."""
        from halswarm.store.repos.forwards import held_nodes
        from halswarm.supervisor.runtime.forwarding import Forwarder

        assert self.leases is not None
        reader = self.reader

        async def leases() -> dict[str, tuple[str, frozenset[str]]]:
            now = time.time()
            held: dict[str, tuple[str, frozenset[str]]] = await reader.run(lambda c: held_nodes(c, now))
            return held

        self.forwarder = Forwarder(self.writer, reader, owner=self.leases.owner, linked=lambda: self.hub.links.keys(),
                                   listener=self.pg_listener, metrics=self.metrics)
        self.dispatcher.enable_forwarding(self.forwarder, self.leases.owner, leases)
        await self.lifecycle.start("command forwarding", self.forwarder.start, self.forwarder.stop)

    def _event_tail(self) -> EventTail | None:
        """PostgreSQL: the streams read every supervisor's events from the store (runtime/event_tail.py),
        woken by this one's commits, the others' NOTIFYs and a poll; None on SQLite (nothing changes)."""
        if self.storage_engine != POSTGRESQL:
            return None
        from halswarm.store.pg_listen import PgListener  # psycopg: loaded only for PostgreSQL

        target = self._pg_target
        listener = self.pg_listener = PgListener(target.conninfo, password=target.password)
        listener.on_change = self.metrics.listen_changed
        tail = EventTail(self.reader, self.ingestor.broadcast, listener, metrics=self.metrics)
        self.ingestor.on_commit = tail.committed
        return tail

    async def _held_elsewhere(self) -> set[str]:
        """PostgreSQL: the nodes another supervisor holds a live lease of (left online by the restart
        verdict). Leases under this supervisor's own id are its previous run's: dropped first."""
        assert self.leases is not None
        owner, now = self.leases.owner, time.time()

        def job(c: Any) -> dict[str, str]:
            dropped = drop_owner_leases(c, owner)
            if dropped:
                log.info("dropped %d node leases of this supervisor's previous run", len(dropped))
            return live_leases(c, now)

        held: dict[str, str] = await self.writer.run(job)
        return set(held)

    def _looplag(self) -> tuple[Callable[[], Any], Callable[[], Any]]:
        self.looplag = LoopLagProbe(self.metrics.loop_lag_max, self.metrics.loop_lag)
        return self.looplag.start, self.looplag.stop

    async def _start_api(self) -> None:
        from halswarm.supervisor.http.app import build_app

        cfg = self.config
        app = build_app(self.services, max_body=cfg.max_body_bytes,
                        on_internal=lambda: self.metrics.errors_total.labels("api", "internal").inc(),
                        request_duration=self.metrics.http_request_duration)
        uv = uvicorn.Config(
            app, host=cfg.host, port=cfg.http_port, log_config=None, access_log=False,
            lifespan="off", ssl_certfile=cfg.tls_cert if cfg.tls_enabled else None,
            ssl_keyfile=cfg.tls_key if cfg.tls_enabled else None, timeout_graceful_shutdown=5,
            server_header=False, http=read_timeout_protocol(self.read_timeout_sec),
        )
        self._api = _ApiServer(uv)
        self._api_task = asyncio.create_task(self._api.serve())
        while not self._api.started:
            if self._api_task.done():
                self._api_task.result()
                raise OSError(f"HTTP API could not listen on {cfg.host}:{cfg.http_port}")
            await asyncio.sleep(0.02)
        log.info("HTTP API listening on %s:%d", cfg.host, cfg.http_port)
        self._api_task.add_done_callback(self._api_ended)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The hub claims a failing accept() on its listener (one error, not one per loop turn)."""
        if not self.hub.take_accept_failure(context):
            loop.default_exception_handler(context)

    def _api_ended(self, task: asyncio.Task[None]) -> None:
        """The HTTP server stopped on its own (not by shutdown): a supervisor that runs but no longer
        listens is the runbook's worst "unreachable" case, so exit with code 1 for systemd to restart it."""
        if self._stop.is_set() or self._stopping:
            return
        why = "it stopped serving"
        if not task.cancelled() and task.exception() is not None:
            why = f"{type(task.exception()).__name__}: {task.exception()}"
        log.error("HTTP API on %s:%d is no longer listening (%s); exiting with code 1 for a restart",
                  self.config.host, self.config.http_port, why)
        self.exit_code = 1
        self.request_stop()

    async def _stop_api(self) -> None:
        if self._api is not None:
            self._api.should_exit = True
        if self._api_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._api_task, 10)

    async def _close_hub(self) -> None:
        """No new commands, flush what agents sent, then close their connections (marked offline)."""
        self.dispatcher.running = False
        await self.commands.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ingestor.drain(), 10)
        await self.hub.close()

    async def _close_store(self) -> None:
        await self.writer.stop()
        self.reader.close()
        if self.storage_engine == POSTGRESQL:
            self._conn.close()  # no file to checkpoint or vouch for
            return
        if self.abandon_database:
            # Closing would checkpoint and then delete `<path>-wal` by name: the WAL of whatever file
            # is at the path now. The process exits without closing (main uses os._exit).
            return
        clean = self._clean_stop() and final_checkpoint(self._conn)
        self._conn.close()
        if clean:
            why_not = write_marker(self.config.database_path)
            if why_not is None:
                log.info("clean-shutdown marker written: the next start skips the full quick_check")
            else:
                log.warning("no clean-shutdown marker (%s): the next start runs the full quick_check", why_not)

    def _clean_stop(self) -> bool:
        """A stop that may vouch for the file: exit code 0, no storage fault, and the file was checked in
        full during this run (at start, or by a background check that passed), so a start that skipped
        the check and stopped before its background check never hands the marker on unchecked."""
        watch = self.integrity
        checked = self.startup_full_check or (watch is not None and watch.passed > 0)
        damaged = watch is not None and watch.last_problem is not None and not is_busy(watch.last_problem)
        return self.exit_code == 0 and self.writer.fault is None and checked and not damaged

    def _compose_services(self) -> None:
        """What the HTTP features serve, by type (see supervisor/http/app.py)."""
        self.tool_auth = ToolAuthService(self.credential_settings, self.nodes, self.commands, self.ingestor)
        add = self.services.add
        add(self.gate)
        add(self.health)
        # PostgreSQL: the API answers the same from every supervisor (nodes and sessions held elsewhere
        # as stored, streams with every supervisor's events).
        linked = lambda: self.hub.links.keys()  # noqa: E731
        shared = SharedFleet(self.leases.owner, linked) if self.leases is not None else None
        nodes = NodesService(self.nodes, self.reader, self.credential_settings.version, shared)
        sessions = SessionsService(self.tracker, self.commands, self.reader,
                                   (lambda n: n in self.hub.links) if shared is not None else None)
        events = EventsService(self.reader, self.ingestor, self.event_tail)
        costs = CostService(self.costs, self.writer, self.ingestor)
        alerts = AlertsService(self.alert_settings, self.auto_remediation, self.ingestor, self.writer,
                               self.remediation_metrics)
        add(nodes)
        add(sessions)
        add(events)
        add(CommandsService(self.commands, self.reader))
        audit = AuditService(self.reader)
        add(audit)
        add(costs)
        add(self.policies)
        add(self.dependencies)
        remediations = RemediationsService(self.writer, self.reader, self.ingestor, self.remediation_metrics)
        add(remediations)
        add(alerts)
        add(self.tool_auth)
        add(self.approvals)
        env = self._compose_env()
        # ChatOps (issue 20): the same services as the HTTP routes, so a chat command and its route share a path.
        ports = ChatPorts(sessions=sessions, nodes=nodes, events=events, cost=costs, env=env, remediate=alerts,
                          approvals=self.approvals, connected=lambda: len(self.hub.links))
        add(DiscordInteractions(self.discord_settings, ports, self.writer))
        add(SlackChat(self.slack_settings, ports, self.approvals, self.writer))
        if self.console_settings.enabled:  # the web console (issue 19): the same services again, as HTML
            console = ConsolePorts(sessions=sessions, nodes=nodes, events=events, approvals=self.approvals, cost=costs,
                                   remediations=remediations, remediate=alerts, audit=audit, env=env)
            logins = LoginStore(self.console_settings, self.gate, self.reader, self.writer)
            add(ConsoleService(self.console_settings, logins, console, self.writer))

    def _compose_env(self) -> EnvService:
        """The env manifest, checks, approvals, AGENT.md and the manifest push watcher (issue 9)."""
        settings = EnvSettings.from_config(self.config)
        manifests = EnvManifests(self.reader, self.writer, self.dispatcher, self.nodes)
        checks = EnvChecks(manifests, self.reader, self.writer, self.ingestor)
        approvals = EnvApprovals(manifests, checks, self.reader, self.writer, self.ingestor, self.nodes, settings)
        watcher = EnvWatcher(manifests, checks, self.dispatcher, self.nodes, watch_interval=settings.watch_interval,
                             recheck_interval=settings.recheck_interval)
        add = self.services.add
        env = EnvService(manifests, checks, approvals, watcher, self.reader, self.ingestor, self.nodes, settings)
        add(watcher)
        add(env)
        add(AgentMdService(manifests, self.ingestor, self.nodes))
        return env

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if not cfg.tls_enabled:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot load TLS certificate/key: {exc}") from None
        return ctx

    # ----- cost, routing, dependencies, policies (issue 8) -----

    async def _start_observers(self) -> None:
        """Parts that watch stored events and the clock: cost polling, notifications, retention, memory."""
        lc, registry = self.lifecycle, self.metrics.registry
        self.costs = CostAggregator(self.cost_settings, self.tracker, self.writer, self.reader, registry)
        if self.leadership is None:
            await lc.start("cost aggregator", self.costs.start, self.costs.stop)  # stop: last sample of usage
        else:  # every supervisor samples its own sessions; the leader polls the providers
            await lc.start("cost aggregator", lambda: self.costs.start(poll=False), self.costs.stop)
            await self._leader_engine("cost polling", self.costs.start_polling, self.costs.stop_polling)
        self.router = Router(self.notify_settings, self.tracker, registry, daily_cost=lambda: self.costs.today_cost,
                             session_cost=self.costs.session_cost)
        await lc.start("notification router", self.router.start, self.router.stop)  # stop: short flush
        self.dependencies = DependencyManager(self.dependency_settings, self.tracker, self.dispatcher, self.ingestor,
                                              self.writer, self.reader, apply_output=self.apply_command_output,
                                              **self._fleet_reads("active_elsewhere", self._active_elsewhere))
        self.feed = EventFeed(self.ingestor, registry)  # subscribes only when someone consumes
        if self.router.active:
            self.feed.add(self.router.on_event)
        if self.dependencies.wants_events:
            self.feed.add(self.dependencies.on_event)
        await lc.start("event feed", self.feed.start, self.feed.stop)
        self.retention = RetentionJob(self.writer, self.retention_settings)
        await self._leader_engine("retention", self.retention.start, self.retention.stop)
        self.session_memory = SessionMemory(self.tracker, self.reader, self.session_settings)
        await lc.start("session memory", self.session_memory.start, self.session_memory.stop)
        self.memwatch = MemoryWatch(self.config.memory_warn_percent)
        await lc.start("memory watch", self.memwatch.start, self.memwatch.stop)
        if self.leases is not None:
            sweep = self.lease_sweep = LeaseSweep(self.writer, self.nodes, self.ingestor.emit,
                                                  min(10.0, self.leases.ttl / 3), owner=self.leases.owner,
                                                  view=self.fleet_view, linked=lambda: self.hub.links.keys())
            await self._leader_engine("lease sweep", sweep.start, sweep.stop)
        self.backups = BackupWatch(self.backup_settings, lambda kind, data: self.ingestor.emit(None, kind, data))
        register_backup_metrics(self.backups, registry)
        await self._leader_engine("backup watch", self.backups.start, self.backups.stop)

    def _fleet_reads(self, name: str, read: Callable[..., Any]) -> dict[str, Any]:
        """PostgreSQL: what the leader's policies and dependency autostart read of the nodes other supervisors
        hold (`read` as `name`) and which nodes are connected here; nothing on SQLite (memory only, as before)."""
        if self.leases is None:
            return {}
        return {name: read, "here": lambda node_id: node_id in self.hub.links}

    async def _sessions_elsewhere(self, statuses: frozenset[str]) -> list[Session]:
        assert self.leases is not None
        owner, now = self.leases.owner, time.time()
        found: list[Session] = await self.reader.run(lambda c: sessions_held_elsewhere(c, statuses, owner, now))
        return found

    async def _active_elsewhere(self, projects: list[str], statuses: frozenset[str]) -> dict[str, int]:
        assert self.leases is not None
        owner, now = self.leases.owner, time.time()
        counts: dict[str, int] = await self.reader.run(
            lambda c: project_counts_held_elsewhere(c, projects, statuses, owner, now))
        return counts

    async def _leader_engine(self, name: str, start: Callable[[], Any], stop: Callable[[], Any]) -> None:
        """A periodic engine that runs on one supervisor at a time: started here on SQLite (the one
        supervisor of its file), by the leadership on PostgreSQL when this supervisor holds the lock."""
        if self.leadership is None:
            await self.lifecycle.start(name, start, stop)
        else:
            self.leader_engines.add(name, start, stop)

    def _on_leadership(self, leader: bool) -> None:
        self.metrics.leader.set(1 if leader else 0)

    def _cost_state(self) -> list[CostProviderFacts]:
        """The cost aggregator's poll state, for the cost-data-discrepancy trigger."""
        return [CostProviderFacts(name, st.failures, st.degraded_since) for name, st in self.costs.state.items()]

    async def _start_actors(self) -> None:
        """Parts that act on sessions through commands. Policies start last so they stop first: no new
        intervention begins while the others finish theirs."""
        lc = self.lifecycle
        await self._leader_engine("dependencies", self.dependencies.start, self.dependencies.stop)
        self.auto_remediation = AutoRemediation(self.remediation_settings, self.fleet_view, self.ingestor, self.writer,
                                                self.reader, cost_state=self._cost_state, cost_health=self.costs.health,
                                                vitals=FleetVitals(self.hub.vitals, self.fleet_view),
                                                metrics=self.remediation_metrics)
        await self._leader_engine("auto remediation", self.auto_remediation.start, self.auto_remediation.stop)
        self.policies = PolicyEngine(self.policy_settings, self.tracker, self.dispatcher, self.ingestor, self.writer,
                                     self.reader, session_cost=self.costs.session_cost,
                                     daily_cost=self.costs.daily_cost, apply_output=self.apply_command_output,
                                     **self._fleet_reads("fleet", self._sessions_elsewhere))
        await self._leader_engine("policies", self.policies.start, self.policies.stop)
        if self.leadership is not None:  # where the policies start on SQLite: they stop first
            await lc.start("leadership", self.leadership.start, self.leadership.stop)
        self.approvals = ApprovalsService(self.reader, self.writer, self.commands, self.tracker, self.ingestor)
        self.approval_policy = ApprovalTimeoutPolicy(self.approval_settings, self.approvals, self.writer,
                                                     self.ingestor, self._node_online)
        await lc.start("approvals timeout", self.approval_policy.start, self.approval_policy.stop)

    # ----- running -----

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> None:
        """Graceful stop: refuse new work at once, then stop every part in reverse order of start (API,
        policies and the other actors, the hub after flushing what agents sent, observers, the store)."""
        log.info("shutting down: no new connections, flushing events")
        self._stopping = True
        if getattr(self, "hub", None) is not None:
            self.hub.stop_accepting()
        if self._api is not None:
            self._api.should_exit = True
        await self.lifecycle.stop()
        if self.abandon_database:
            log.info("supervisor stopped (database left unclosed)")
            return
        log.info("supervisor stopped")

    # ----- helpers used by the API -----

    def _send_ack(self, node_id: str, seq: int) -> None:
        self.hub.send_ack(node_id, seq)

    def refresh_gauges(self) -> None:
        self.health.refresh_gauges()

    async def readiness(self) -> dict[str, dict[str, Any]]:
        return await self.health.readiness()

    def _node_online(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.status == "online"

    async def apply_command_output(self, res: Result) -> Session | None:
        """Fold a session object returned by a command into the tracker right away."""
        return await self.commands.apply_output(res)
