"""The agent's auth service: periodic detection, reporting, and the three auth commands.

Reporting: the whole ``auth_state`` list at start, on every (re)registration (``on_ready``), when
any tool's status or reason changes, every ``resend_every`` ticks (fresh ``checked_at``), and on
``auth_refresh``. ``credential_sync`` at start, on every registration and after every push.

Commands (each answers with exactly one result; nothing here logs a credential value):
- ``auth_refresh`` {tool?}: probe now, report, answer with the states;
- ``oauth_trigger`` {tool, provider?, method?}: device flow (answer = challenge as soon as it
  appears; the end of the flow is reported as an ``auth.oauth_completed`` event and fresh state),
  or the runbook's ``manual_required`` answer for tools without one (claude_code);
- ``credential_push`` {env_vars, version}: apply, persist (values included, 0600: they survive an
  agent restart), ``credential_sync``; a push older than the version held is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from halswarm.agent.auth.credentials import (
    CredentialState,
    CredentialStore,
    Push,
    PushRejected,
    StalePush,
    restored_version,
    validate_push,
)
from halswarm.agent.auth.device_flow import DeviceFlow, FlowResult
from halswarm.agent.auth.model import ToolAuth, one_line
from halswarm.agent.auth.opencode_api import PROVIDER_ENV, OpencodeAuthError, set_api_key
from halswarm.agent.auth.probes import Prober
from halswarm.agent.auth.runner import RunAs
from halswarm.agent.auth.toolenv import ToolEnv
from halswarm.core import auth_capability as caps
from halswarm.core.secret_values import SECRETS
from halswarm.protocol import AuthState, Command, CommandResult, CredentialSync, Message

log = logging.getLogger(__name__)

SendFrame = Callable[[Message], None]
EmitEvent = Callable[[str, dict[str, Any]], Awaitable[Any] | Any]
RestartOpencode = Callable[[dict[str, str]], Awaitable[Any]]
Handler = Callable[[Command], Awaitable[CommandResult]]
DEDUP_SIZE = 1000


class AuthService:
    def __init__(
        self,
        config: Any = None,
        send_frame: SendFrame | None = None,
        opencode_client_getter: Callable[[], Any] | None = None,
        *,
        emit_event: EmitEvent | None = None,
        restart_opencode: RestartOpencode | None = None,
        node_id: str | None = None,
        data_dir: str | None = None,
        tool_paths: Mapping[str, str] | None = None,
        opencode_binary: str | None = None,
        interval: float | None = None,
        resend_every: int = 10,
        run_as: RunAs | str | None = None,
        home: str | None = None,
        base_env: Mapping[str, str] | None = None,
        device_timeout: float = 900.0,
        challenge_timeout: float = 30.0,
    ) -> None:
        self.node_id = node_id or getattr(config, "node_id", None) or ""
        self.interval = float(interval or getattr(config, "auth_report_interval_sec", 30) or 30)
        self.resend_every = max(1, resend_every)
        if isinstance(run_as, str):
            run_as = RunAs.lookup(run_as)
        self.toolenv = ToolEnv(
            tool_paths=dict(tool_paths if tool_paths is not None else getattr(config, "tool_paths", {}) or {}),
            base_env=base_env,
            home=home,
            run_as=run_as,
            opencode_binary=opencode_binary or getattr(config, "opencode_binary", "opencode") or "opencode",
        )
        self._send_frame = send_frame
        self._emit_event = emit_event
        self._restart_opencode = restart_opencode
        self.opencode_client = opencode_client_getter or (lambda: None)
        self.prober = Prober(self.toolenv, opencode_client=self.opencode_client)
        self.store = CredentialStore(data_dir if data_dir is not None else getattr(config, "data_dir", None))
        self.credentials = CredentialState()
        self.credential_version = 0
        self._loaded = False
        self.device_timeout = device_timeout
        self.challenge_timeout = challenge_timeout
        self.states: dict[str, ToolAuth] = {}
        self._manual: dict[str, str] = {}
        self._flows: dict[str, DeviceFlow] = {}
        self._done: OrderedDict[str, CommandResult] = OrderedDict()
        self._probe_lock = asyncio.Lock()
        self._push_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self.first_report = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        """Restore the persisted push (values and version) once; the agent calls it before it starts
        opencode, so the restored values are in its environment from the first start."""
        if self._loaded:
            return
        self._loaded = True
        meta = self.store.load()
        try:
            held = self.store.load_values()
        except PushRejected as exc:
            log.warning("pushed credentials not restored: %s", exc)
            held = None
        if held is not None and held.version >= meta.version:
            SECRETS.add(*held.env_vars.values())  # restored values are redacted from the logs too
            self.toolenv.pushed = dict(held.env_vars)
            stored = meta.stored if meta.version == held.version else {}
            self.credentials = CredentialState(held.version, held.names, stored, meta.applied_at)
            self.credential_version = held.version
            log.info("restored pushed credentials version %d: %d variable(s) (%s)", held.version, len(held.names),
                     ", ".join(held.names))
            return
        self.credentials = meta
        self.credential_version = restored_version(meta)
        if meta.names and self.credential_version != meta.version:
            log.warning("pushed credential values (version %d, %d variables) were not kept on disk; reporting "
                        "version 0 until the supervisor pushes them again", meta.version, len(meta.names))

    def start(self) -> asyncio.Task[None]:
        """Load the persisted credentials (if not yet) and start the periodic detection."""
        if self._task is None or self._task.done():
            self.load()
            self._task = asyncio.create_task(self._loop(), name="auth-service")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for flow in list(self._flows.values()):
            await flow.cancel("agent shutting down")
        self._flows.clear()
        pending = list(self._bg)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)

    def on_ready(self, _registered: Any = None) -> None:
        """Call on every (re)registration: the supervisor gets the current picture at once."""
        self._send(CredentialSync(self.credential_version))
        if self.states:
            self._report()

    def handlers(self) -> dict[str, Handler]:
        return {
            "auth_refresh": self.handle_auth_refresh,
            "refresh_auth": self.handle_auth_refresh,
            "oauth_trigger": self.handle_oauth_trigger,
            "trigger_oauth": self.handle_oauth_trigger,
            "credential_push": self.handle_credential_push,
            "push_credentials": self.handle_credential_push,
        }

    def snapshot(self) -> dict[str, Any]:
        """Per tool, for the register frame's ``capabilities`` (no secrets)."""
        out: dict[str, Any] = {}
        for tool in caps.TOOL_IDS:
            cap = caps.CAPABILITIES[tool]
            st = self.states.get(tool)
            out[tool] = {
                "installed": st.installed if st else None,
                "version": st.version if st else None,
                "path": st.path if st else self.toolenv.binary(tool),
                "status": st.status if st else None,
                "reason": st.reason if st else None,
                "remote_oauth": cap.remote_oauth,
                "flows": list(cap.flows),
            }
        return {"tools": out, "credential_version": self.credential_version}

    # ------------------------------------------------------------------ detection and reporting

    async def _loop(self) -> None:
        ticks = 0
        while True:
            try:
                changed = await self.refresh()
                ticks += 1
                if changed or ticks % self.resend_every == 0 or ticks == 1:
                    self._report()
                if ticks == 1:
                    self._send(CredentialSync(self.credential_version))
                    self.first_report.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("auth detection failed")
            await asyncio.sleep(self.interval)

    async def refresh(self, tools: tuple[str, ...] = caps.TOOL_IDS) -> bool:
        """Probe ``tools`` now; returns whether any status or reason changed."""
        async with self._probe_lock:
            probed = await self.prober.probe_all(tools)
        changed = False
        for tool, st in probed.items():
            st = self._apply_manual(st)
            old = self.states.get(tool)
            if old is None or old.key() != st.key():
                changed = True
                if old is not None:
                    log.info("auth state of %s: %s -> %s (%s)", tool, old.status, st.status, st.reason)
            self.states[tool] = st
        return changed

    def _apply_manual(self, st: ToolAuth) -> ToolAuth:
        reason = self._manual.get(st.tool)
        if reason is None:
            return st
        if st.status == caps.UNAUTHENTICATED:
            return st.with_status(caps.MANUAL_REQUIRED, reason)
        if st.status == caps.AUTHENTICATED:
            self._manual.pop(st.tool, None)
        return st

    def _report(self) -> None:
        entries = [self.states[t].entry() for t in caps.TOOL_IDS if t in self.states]
        self._send(AuthState(entries))

    def _send(self, msg: Message) -> None:
        if self._send_frame is None:
            return
        try:
            self._send_frame(msg)
        except Exception as exc:
            log.warning("cannot queue %s frame: %s", type(msg).TYPE, exc)

    async def _emit(self, etype: str, data: dict[str, Any]) -> None:
        if self._emit_event is None:
            return
        try:
            res = self._emit_event(etype, data)
            if inspect.isawaitable(res):
                await res
        except Exception:
            log.exception("cannot emit %s event", etype)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    # ------------------------------------------------------------------ commands

    async def handle_auth_refresh(self, cmd: Command) -> CommandResult:
        tool = cmd.args.get("tool")
        if tool is not None and tool not in caps.CAPABILITIES:
            return CommandResult(cmd.command_id, "failure", error=f"unknown tool {str(tool)[:40]!r}")
        await self.refresh((tool,) if tool else caps.TOOL_IDS)
        self._report()
        self._send(CredentialSync(self.credential_version))
        return CommandResult(cmd.command_id, "success", output={
            "auth_states": {t: self.states[t].to_dict() for t in caps.TOOL_IDS if t in self.states},
            "credential_version": self.credential_version,
        })

    async def handle_oauth_trigger(self, cmd: Command) -> CommandResult:
        tool = cmd.args.get("tool")
        if not isinstance(tool, str) or not tool:
            return CommandResult(cmd.command_id, "failure", error="args.tool is required")
        result = await self.trigger_oauth(tool, provider=cmd.args.get("provider"), method=cmd.args.get("method"))
        status = result.get("status")
        if status == caps.FAILURE:
            return CommandResult(cmd.command_id, "failure", output=result, error=result.get("reason") or "failed")
        return CommandResult(cmd.command_id, "success", output=result)

    async def trigger_oauth(self, tool: str, *, provider: Any = None, method: Any = None) -> dict[str, Any]:
        cap = caps.capability(tool)
        if cap is None or not cap.remote_oauth:
            answer = caps.manual_required(tool, self.node_id)
            if cap is not None:
                self._manual[tool] = answer["reason"]  # reported as manual_required while logged out
                self._spawn(self._refresh_and_report((tool,), force=True))
            return answer
        running = self._flows.get(tool)
        if running is not None and running.final is None:
            return running.current().to_dict() | {"reason": "a device flow for this tool is already running"}
        path = self.toolenv.binary(tool)
        if path is None:
            return {"status": caps.FAILURE, "tool": tool, "reason": f"{cap.binary} is not installed on this node"}
        if tool == "opencode":
            args = caps.opencode_device_args(provider if isinstance(provider, str) else None,
                                              method if isinstance(method, str) else None)
            if args is None:
                return caps.manual_required(tool, self.node_id,
                                            f"opencode provider {str(provider)[:40]!r} has no device-code flow")
        else:
            args = cap.device_args or ()
        flow = DeviceFlow(
            tool, [path, *args], self.toolenv.env(), run_as=self.toolenv.run_as,
            cwd=str(self.toolenv.home_dir) if self.toolenv.home_dir.is_dir() else None,
            timeout=self.device_timeout, challenge_timeout=self.challenge_timeout, on_done=self._on_flow_done,
        )
        self._flows[tool] = flow
        result: FlowResult = await flow.start()
        log.info("oauth trigger for %s: %s", tool, result.status)
        return result.to_dict()

    def _on_flow_done(self, flow: DeviceFlow, result: FlowResult) -> None:
        if self._flows.get(flow.tool) is flow:
            del self._flows[flow.tool]
        self._spawn(self._flow_done(flow, result))

    async def _flow_done(self, flow: DeviceFlow, result: FlowResult) -> None:
        await self._emit("auth.oauth_completed", result.to_dict() | {"node_id": self.node_id})
        await self._refresh_and_report((flow.tool,), force=True)

    async def _refresh_and_report(self, tools: tuple[str, ...], force: bool = False) -> None:
        try:
            if await self.refresh(tools) or force:
                self._report()
        except Exception:
            log.exception("auth refresh failed")

    async def handle_credential_push(self, cmd: Command) -> CommandResult:
        if cmd.command_id in self._done:
            return self._done[cmd.command_id]
        try:
            push = validate_push(cmd.args)
        except PushRejected as exc:
            return CommandResult(cmd.command_id, "failure", error=f"credential push rejected: {exc}")
        async with self._push_lock:
            if not self._loaded:
                await asyncio.to_thread(self.load)
            if push.version < self.credential_version:
                stale = StalePush(push.version, self.credential_version)
                log.warning("credential push refused: %s", stale)
                return CommandResult(cmd.command_id, "failure", error=f"credential push rejected: {stale}")
            output = await self._apply(push)
        result = CommandResult(cmd.command_id, "success", output=output)
        self._done[cmd.command_id] = result
        while len(self._done) > DEDUP_SIZE:
            self._done.popitem(last=False)
        return result

    async def _apply(self, push: Push) -> dict[str, Any]:
        previous = set(self.toolenv.pushed)
        SECRETS.add(*push.env_vars.values())  # from now on redacted by value from this agent's logs
        self.toolenv.pushed = dict(push.env_vars)  # a push replaces the whole set (Go semantics)
        stored: dict[str, str] = {}
        warnings: list[str] = []
        client = self.opencode_client()
        for name in push.names:
            provider = PROVIDER_ENV.get(name)
            if provider is None or client is None:
                continue
            try:
                await set_api_key(client, provider, push.env_vars[name])
                stored[name] = f"opencode:{provider}"
            except OpencodeAuthError as exc:
                warnings.append(f"{name}: {exc}")
        others = [n for n in push.names if n not in stored]
        removed = sorted(previous - set(push.names))
        restarted = False
        if self._restart_opencode is not None and (others or removed):
            try:
                await self._restart_opencode(dict(push.env_vars))
                restarted = True
            except Exception as exc:
                warnings.append(f"opencode restart failed: {type(exc).__name__}")
                log.warning("opencode restart with pushed credentials failed: %s", type(exc).__name__)
        self.credentials = CredentialState(push.version, push.names, stored, time.time())
        try:
            await asyncio.to_thread(self.store.save, self.credentials, push.env_vars)
        except OSError as exc:
            warnings.append(f"cannot persist the pushed credentials (lost at the next agent restart): "
                            f"{exc.strerror or type(exc).__name__}")
        except StalePush as exc:  # another writer put a newer push on disk: it wins at the next start
            warnings.append(f"not persisted: {exc}")
        self.credential_version = push.version
        log.info("applied credential push version %d: %d variable(s) (%s)%s", push.version, len(push.names),
                 ", ".join(push.names), "; opencode restarted" if restarted else "")
        self._send(CredentialSync(push.version))
        await self._refresh_and_report(caps.TOOL_IDS, force=True)
        return {
            "credential_version": push.version,
            "applied": push.names,
            "removed": removed,
            "opencode": {"providers": sorted({v.split(":", 1)[1] for v in stored.values()}), "restarted": restarted},
            "warnings": [one_line(w) for w in warnings],
        }


class OpencodeRestarter:
    """A ``restart_opencode`` for the agent app: put the pushed env on the managed ``OpencodeProcess``
    (replacing the previous push's variables) and restart it. In attach mode (``manage`` false) the
    server is not ours to restart; nothing happens.

    ``pushed`` names the variables of the push now in the process env: the agent sets it when it
    starts opencode with restored credentials, so the next push removes the ones it drops."""

    def __init__(self, get_process: Callable[[], Any]) -> None:
        self.get_process = get_process
        self.pushed: set[str] = set()

    async def __call__(self, env: dict[str, str]) -> None:
        proc = self.get_process()
        if proc is None or not getattr(proc, "manage", False):
            return
        base = {k: v for k, v in proc.extra_env.items() if k not in self.pushed}
        proc.extra_env = base | env
        self.pushed = set(env)
        await proc.stop()
        await proc.start()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(60):
                await proc.wait_running()


def opencode_restarter(get_process: Callable[[], Any]) -> OpencodeRestarter:
    return OpencodeRestarter(get_process)
