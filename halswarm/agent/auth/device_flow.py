"""Device-code logins run by the agent without blocking it (go-original.md 9.3, fixed).

``DeviceFlow.start()`` spawns the tool's device login and returns as soon as the verification URL
and user code appear in its output (or the process ends, or ``challenge_timeout`` passes); the
process keeps running in the background until the operator completes the login in a browser, it
fails, or ``timeout`` (15 min, the codes' lifetime) ends it. ``on_done`` then gets the final result.

Output formats parsed (recorded in tests/unit/auth/recorded/):
- codex: "1. Open this link ...\\n   https://auth.openai.com/codex/device\\n 2. Enter this one-time
  code (expires in 15 minutes)\\n   ABCD-EFGH";
- opencode: "●  Go to: https://auth.openai.com/codex/device" / "●  Enter code: ABCD-EFGH".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from halswarm.agent.auth.model import one_line
from halswarm.agent.auth.runner import RunAs, _kill_group, spawn
from halswarm.core.auth_capability import CHALLENGE, FAILURE, SUCCESS
from halswarm.core.auth_status.cli_output import clean_output

log = logging.getLogger(__name__)

URL_RE = re.compile(r"https?://[^\s\"'<>]+")
_CODE = r"([A-Z0-9]{3,}(?:-[A-Z0-9]{3,})+|[A-Z0-9]{6,})"
_CODE_INLINE = (
    re.compile(r"(?i)(?:user\s*code|device\s*code|one-time\s*code|code)\s*[:=]\s*" + _CODE.replace("A-Z", "A-Za-z")),
    re.compile(r"(?i)enter\s+(?:the\s+)?code\s+" + _CODE),
)
_CODE_PROMPT = re.compile(r"(?i)(one-time code|enter (?:the |this )?code|user code)")
_CODE_ALONE = re.compile(r"^\s*" + _CODE + r"\s*$")

DEFAULT_TIMEOUT = 900.0
CHALLENGE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Challenge:
    url: str
    code: str


def parse_challenge(text: str) -> Challenge | None:
    """The verification URL and user code in a device flow's output, once both are there."""
    clean = clean_output(text)
    url_m = URL_RE.search(clean)
    if url_m is None:
        return None
    url = url_m.group(0).rstrip(".,;)")
    for rx in _CODE_INLINE:
        m = rx.search(clean)
        if m:
            return Challenge(url, m.group(1))
    lines = clean.splitlines()
    for i, line in enumerate(lines):
        if _CODE_PROMPT.search(line):
            for nxt in lines[i + 1:i + 3]:
                m = _CODE_ALONE.match(nxt)
                if m:
                    return Challenge(url, m.group(1))
    return None


def failure_reason(text: str, returncode: int | None) -> str:
    lines = [ln for ln in clean_output(text).splitlines() if ln.strip(" │┌└◇●◆")]
    errors = [ln for ln in lines if re.search(r"(?i)error|fail|denied|expired|timed out", ln)]
    pick = (errors or lines or [f"exited {returncode}"])[-1]
    return one_line(pick.strip(" │┌└◇●◆"))


@dataclass
class FlowResult:
    status: str
    tool: str
    flow_id: str
    challenge_url: str | None = None
    user_code: str | None = None
    reason: str | None = None
    expires_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "tool": self.tool, "flow_id": self.flow_id}
        for key in ("challenge_url", "user_code", "reason", "expires_at"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


DoneCallback = Callable[["DeviceFlow", FlowResult], Awaitable[None] | None]


@dataclass
class DeviceFlow:
    tool: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(repr=False)
    run_as: RunAs | None = None
    cwd: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    challenge_timeout: float = CHALLENGE_TIMEOUT
    on_done: DoneCallback | None = None
    flow_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    output: str = ""
    challenge: Challenge | None = None
    final: FlowResult | None = None
    started_at: float = 0.0
    _proc: asyncio.subprocess.Process | None = None
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> FlowResult:
        """Spawn the flow; return the challenge (or the early end) without waiting for the login."""
        self.started_at = time.time()
        try:
            self._proc = await spawn(self.argv, self.env, cwd=self.cwd, run_as=self.run_as)
        except (OSError, ValueError) as exc:
            self.final = FlowResult(FAILURE, self.tool, self.flow_id, reason=f"cannot start device flow: {exc}")
            return self.final
        self._task = asyncio.create_task(self._supervise(), name=f"device-flow-{self.tool}")
        deadline = time.monotonic() + self.challenge_timeout
        while self.challenge is None and self.final is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        if self.final is not None and self.challenge is None:
            return self.final
        if self.challenge is not None:
            return self.current()
        await self.cancel(f"no verification URL and code within {self.challenge_timeout:g} s")
        assert self.final is not None
        return self.final

    def current(self) -> FlowResult:
        if self.final is not None:
            return self.final
        ch = self.challenge
        return FlowResult(CHALLENGE, self.tool, self.flow_id, ch.url if ch else None, ch.code if ch else None,
                          expires_at=self.started_at + self.timeout)

    async def cancel(self, reason: str = "cancelled") -> None:
        if self._proc is not None and self._proc.returncode is None:
            _kill_group(self._proc.pid)
        if self.final is None:
            self.final = FlowResult(FAILURE, self.tool, self.flow_id, reason=reason)
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=5)

    async def _read(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while True:
            chunk = await stream.read(4096)
            if not chunk:
                return
            if len(self.output) < 64 * 1024:
                self.output += chunk.decode("utf-8", "replace")
            if self.challenge is None:
                self.challenge = parse_challenge(self.output)
                if self.challenge is not None:
                    log.info("%s device flow %s: challenge ready", self.tool, self.flow_id)
            self._changed.set()

    async def _supervise(self) -> None:
        proc = self._proc
        assert proc is not None
        readers = asyncio.gather(self._read(proc.stdout), self._read(proc.stderr))
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), self.timeout)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            if self.final is None:
                self.final = FlowResult(FAILURE, self.tool, self.flow_id,
                                        reason=f"device flow timed out after {self.timeout:g} s")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(readers, 5)
            _kill_group(proc.pid)
        if self.final is None:
            if proc.returncode == 0:
                self.final = FlowResult(SUCCESS, self.tool, self.flow_id, reason="login completed")
            else:
                self.final = FlowResult(FAILURE, self.tool, self.flow_id,
                                        reason=failure_reason(self.output, proc.returncode))
        log.info("%s device flow %s ended: %s", self.tool, self.flow_id, self.final.status)
        self._changed.set()
        if self.on_done is not None:
            try:
                res = self.on_done(self, self.final)
                if asyncio.iscoroutine(res):
                    await res
            except Exception:
                log.exception("device flow completion callback failed")
