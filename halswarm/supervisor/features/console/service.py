"""The console's own logic beside the ports: logins (``logins.LoginStore``), its audit rows (log in, log
out, a remediation asked for from the page) and the rule that a remediation is applied only after its
check ran from the same login."""

from __future__ import annotations

import logging
import time
from typing import Any

from halswarm.store.repos.audit import insert_audit
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.console.logins import Login, LoginStore
from halswarm.supervisor.features.console.ports import ConsolePorts
from halswarm.supervisor.features.console.settings import ConsoleSettings

log = logging.getLogger(__name__)

CLIENT = "console"  # the `client_actor` of every audit row the console causes
CHECK_VALID_SEC = 3600.0  # an apply must follow its check within this time
MAX_CHECKS = 10_000


class ConsoleService:
    def __init__(self, settings: ConsoleSettings, logins: LoginStore, ports: ConsolePorts, writer: Writer) -> None:
        self.settings = settings
        self.logins = logins
        self.ports = ports
        self.writer = writer
        self._checked: dict[tuple[str, str, str], float] = {}  # (login, incident, host) -> when checked
        self._flash: dict[str, str] = {}  # login -> the outcome of its last action, until shown

    def flash(self, login: Login, text: str) -> None:
        if len(self._flash) >= MAX_CHECKS:
            self._flash.pop(next(iter(self._flash)))
        self._flash[login.sid_hash] = text[:300]

    def take_flash(self, login: Login) -> str | None:
        return self._flash.pop(login.sid_hash, None)

    async def audit(self, actor: str, action: str, target: str, result: str, *, ip: str | None,
                    args: dict[str, Any] | None = None, error: str | None = None) -> None:
        row = {"timestamp": time.time(), "actor": actor, "action": action, "target": target, "args": args,
               "result": result, "error": error, "ip_address": ip, "client_actor": CLIENT}
        try:
            await self.writer.run(lambda c: insert_audit(c, row))
        except Exception as exc:  # the writer reports its own fault; the answer must not be lost
            log.warning("could not audit console %s: %s", action, exc)

    async def remediate(self, login: Login, incident: str, host: str | None, *, apply: bool,
                        ip: str | None) -> dict[str, Any]:
        """Run `incident` with `--check` (apply=False), or apply it: only after this login checked the same
        incident and host within CHECK_VALID_SEC (409 otherwise). Audited either way."""
        key = (login.sid_hash, incident, host or "")
        now = time.time()
        args = {"incident": incident, "host": host, "check": not apply}
        if apply and now - self._checked.get(key, -CHECK_VALID_SEC - 1) > CHECK_VALID_SEC:
            await self.audit(login.identity.name, "console_remediate", incident, "failure", ip=ip, args=args,
                             error="apply before check")
            raise ApiError("CONFLICT", f"run {incident} with check first (the Check button), then apply it")
        try:
            out = await self.ports.remediate.request(incident, host, check=not apply, actor=login.identity.name)
        except ApiError as exc:
            await self.audit(login.identity.name, "console_remediate", incident, "failure", ip=ip, args=args,
                             error=f"{exc.code}: {exc.message}")
            raise
        await self.audit(login.identity.name, "console_remediate", incident, "success", ip=ip,
                         args=args | {"action": out.get("action"), "command": out.get("command")})
        if apply:
            self._checked.pop(key, None)
        else:
            if len(self._checked) >= MAX_CHECKS:
                self._checked.pop(next(iter(self._checked)))
            self._checked[key] = now
        return out
