"""Slack: slash commands and Block Kit buttons, verified, authorized, answered, audited (docs/chatops.md).

Every request must carry Slack's v0 signature of timestamp + raw body under the signing secret; a stale
timestamp or a signature seen before is refused too (401). A slash command (`/hal status alpha`, or one
Slack command per name) is parsed against the table Discord's commands come from and run by the same
handlers; one that waits for an agent is acknowledged at once and its result posted to the request's
response_url from a bounded set of background tasks. A press on the buttons of the messages
`slack_notify` posts comes back on the interactivity route, is authorized (approve: operator, remediate:
admin), carried out in the background, and the message is replaced with who decided and the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl

from halswarm.core.chatops.access import ReplayGuard, chat_role
from halswarm.core.chatops.commands import BY_NAME, ChatCommand
from halswarm.core.chatops.embeds import embed as make_embed
from halswarm.core.chatops.embeds import error_colour, error_text
from halswarm.core.chatops.text_args import TextError, help_text, parse_text
from halswarm.core.roles import Role
from halswarm.protocol import is_permission_id
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.chat import slack_blocks as blocks
from halswarm.supervisor.features.chat.audit import audit_chat
from halswarm.supervisor.features.chat.handlers import HANDLERS, remediate_outcome
from halswarm.supervisor.features.chat.ports import ChatPorts
from halswarm.supervisor.features.chat.slack_notify import SlackNotifier
from halswarm.supervisor.features.chat.slack_settings import SlackSettings
from halswarm.supervisor.features.chat.slack_signature import verified
from halswarm.supervisor.features.chat.slack_web import SlackWeb

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # a slash command is < 1 KiB, a block_actions payload a few KiB
MAX_BACKGROUND = 32  # commands and presses in flight; more are answered "busy" at once
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")


class ApprovalReplies(Protocol):
    async def reply(self, approval_id: str, reply: str, message: str | None, *, actor: str,
                    ip: str | None = None) -> dict[str, Any]: ...


class SlackChat:
    def __init__(self, settings: SlackSettings, ports: ChatPorts, approvals: ApprovalReplies, writer: Writer,
                 web: SlackWeb | None = None) -> None:
        self.settings = settings
        self.ports = ports
        self.approvals = approvals
        self.writer = writer
        self.web = web or SlackWeb(settings.api_base, settings.bot_token, settings.response_base,
                                   settings.http_timeout_sec)
        self.replays = ReplayGuard(settings.max_skew_sec)
        self.group_members: dict[str, frozenset[str]] = {}  # user group id -> member user ids (refreshed)
        self.notifier = SlackNotifier(settings, self.web)
        self._tasks: set[asyncio.Task[None]] = set()
        self._workers: list[asyncio.Task[None]] = []

    # ----- the request -----

    def admit(self, body: bytes, signature: str | None, timestamp: str | None, now: float) -> dict[str, str]:
        """The verified request's form fields, or AUTH_REQUIRED (401) with the reason."""
        if self.settings.signing_secret is None:
            raise ApiError("AUTH_REQUIRED", "slack is not configured (chatops.slack.signing_secret_file)")
        if len(body) > MAX_BODY_BYTES:
            raise ApiError("PAYLOAD_TOO_LARGE", f"request exceeds {MAX_BODY_BYTES} bytes")
        if not signature or not timestamp or not verified(self.settings.signing_secret, signature, timestamp, body):
            raise ApiError("AUTH_REQUIRED", "missing or invalid Slack request signature")
        why = self.replays.refuse(timestamp, signature, now)
        if why is not None:
            raise ApiError("AUTH_REQUIRED", why)
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body),
                                  max_num_fields=50))
        except (UnicodeDecodeError, ValueError):
            raise ApiError("BAD_REQUEST", "body must be application/x-www-form-urlencoded") from None

    def role_of(self, user_id: str | None) -> Role | None:
        groups = [g for g, members in self.group_members.items() if user_id in members]
        return chat_role(user_id, groups, self.settings.users, self.settings.groups)

    # ----- slash commands -----

    async def command(self, form: dict[str, str]) -> dict[str, Any]:
        """The answer of a slash command: its result now, or an acknowledgement now and the result later."""
        user_id = form.get("user_id") or None
        actor = f"slack:{user_id or 'unknown'}"
        slash = (form.get("command") or "").lstrip("/").lower()
        text = form.get("text") or ""
        line = f"{slash} {text}" if slash in BY_NAME else text  # `/status alpha` or `/hal status alpha`
        if form.get("ssl_check") == "1":  # Slack checking the certificate of the URL: nothing to run
            return {"response_type": "ephemeral", "text": "ok"}
        if line.strip().lower() in ("", "help"):
            return {"response_type": "ephemeral", "text": blocks.escape(help_text())}
        try:
            command, sub, opts = parse_text(line)
        except TextError as exc:
            return blocks.ephemeral(str(exc))
        key = f"{command.name} {sub}" if sub else command.name
        if key not in HANDLERS:
            return blocks.ephemeral(f"/{key} is not available in Slack yet.")
        role = self.role_of(user_id)
        if role is None or role < command.role:
            held = role.name if role else "no role"
            await self._audit(actor, "chat_command", f"/{key}", opts, "denied",
                              f"{held}; /{key} needs {command.role.name}", 0.0)
            return blocks.ephemeral(f"You are not allowed to run /{key}: it needs the {command.role.name} role "
                                    f"(you have {held}).")
        if not command.deferred:
            return blocks.embed_message(await self._run(command, key, opts, actor))
        response_url = form.get("response_url") or ""
        if not self.web.response_url_ok(response_url):
            raise ApiError("BAD_REQUEST", "a slash command needs Slack's response_url")
        if not self._spawn(self._follow_up(command, key, opts, actor, response_url), f"slack-{key}"):
            return blocks.ephemeral("The supervisor is busy with other chat commands; try again shortly.")
        return {"response_type": "in_channel", "text": blocks.escape(f":hourglass_flowing_sand: /{key} ...")}

    async def _run(self, command: ChatCommand, key: str, opts: dict[str, Any], actor: str) -> dict[str, Any]:
        """The command's embed; an error becomes a red (or orange, timeout) one. Audited either way."""
        started = time.monotonic()
        try:
            out = await HANDLERS[key](self.ports, opts, actor)
            result, error = "success", None
        except ApiError as exc:
            out = make_embed(f"/{key} failed", error_text(exc.code, exc.message), error_colour(exc.code))
            result, error = "failure", f"{exc.code}: {exc.message}"
        except Exception as exc:  # a bug must still answer the user
            log.exception("slack /%s failed", key)
            out = make_embed("Internal Error", error_text("INTERNAL_ERROR", ""), error_colour("INTERNAL_ERROR"))
            result, error = "failure", f"{type(exc).__name__}: {exc}"
        await self._audit(actor, "chat_command", f"/{key}", opts, result, error, time.monotonic() - started)
        return out

    async def _follow_up(self, command: ChatCommand, key: str, opts: dict[str, Any], actor: str,
                         response_url: str) -> None:
        await self.web.respond(response_url, blocks.embed_message(await self._run(command, key, opts, actor)))

    # ----- buttons -----

    async def interaction(self, form: dict[str, str]) -> None:
        """A `block_actions` payload: the press is checked now and carried out in the background (Slack wants
        its 200 within 3 s; the answer goes to the payload's response_url)."""
        try:
            payload = json.loads(form.get("payload") or "")
        except ValueError:
            raise ApiError("BAD_REQUEST", "an interaction needs a JSON payload field") from None
        if not isinstance(payload, dict) or payload.get("type") != "block_actions":
            return None  # other interaction types (shortcuts, modals) are not used: acknowledged, ignored
        actions = payload.get("actions")
        action = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}
        user = blocks.as_dict(payload.get("user"))
        user_id = str(user.get("id") or "") or None
        response_url = str(payload.get("response_url") or "")
        if not self.web.response_url_ok(response_url):
            raise ApiError("BAD_REQUEST", "an interaction needs Slack's response_url")
        message = blocks.as_dict(payload.get("message"))
        original = [b for b in message.get("blocks") or [] if isinstance(b, dict)]
        work = self._press(str(action.get("action_id") or ""), str(action.get("value") or ""), user_id,
                           response_url, original)
        if work is not None and not self._spawn(work, "slack-press"):  # the button stays: pressed again later
            log.warning("slack: a button press was dropped: %d chat actions already in flight", MAX_BACKGROUND)
        return None

    def _press(self, action_id: str, value: str, user_id: str | None, response_url: str,
               original: list[dict[str, Any]]) -> Awaitable[None] | None:
        actor = f"slack:{user_id or 'unknown'}"
        if action_id.startswith(blocks.APPROVE_PREFIX):
            reply = action_id[len(blocks.APPROVE_PREFIX):]
            if reply not in blocks.REPLIES or not is_permission_id(value):
                raise ApiError("BAD_REQUEST", "not an approval button of this supervisor")
            return self._decide(actor, user_id, Role.operator, f"approve:{value}", {"reply": reply}, response_url,
                                original, lambda: self._approve(value, reply, actor))
        if action_id.startswith(blocks.REMEDIATE_PREFIX):
            mode = action_id[len(blocks.REMEDIATE_PREFIX):]
            try:
                target = json.loads(value)
            except ValueError:
                target = None
            if mode not in ("check", "run") or not isinstance(target, dict) \
                    or not isinstance(target.get("incident"), str) or not isinstance(target.get("host"), str | None):
                raise ApiError("BAD_REQUEST", "not a remediation button of this supervisor")
            incident, host = target["incident"], target["host"]
            return self._decide(actor, user_id, Role.admin, f"remediate:{incident[:64]}", {"host": host, "check":
                                mode == "check"}, response_url, original,
                                lambda: self._remediate(incident, host, mode == "check", actor))
        return None  # a button of another app or a link button: nothing to do

    async def _decide(self, actor: str, user_id: str | None, needs: Role, target: str, args: dict[str, Any],
                      response_url: str, original: list[dict[str, Any]],
                      act: Callable[[], Awaitable[tuple[str, bool]]]) -> None:
        role = self.role_of(user_id)
        if role is None or role < needs:
            held = role.name if role else "no role"
            await self._audit(actor, "chat_action", target, args, "denied", f"{held}; needs {needs.name}", 0.0)
            await self.web.respond(response_url, {**blocks.ephemeral(
                f"You are not allowed to do that: it needs the {needs.name} role (you have {held})."),
                "replace_original": False})
            return
        started = time.monotonic()
        if target.startswith("approve:"):
            self.notifier.forget(target.split(":", 1)[1])  # this press updates the message, not the event
        try:
            outcome, done = await act()
            result, error = "success", None
        except ApiError as exc:
            outcome = f":red_circle: {blocks.escape(error_text(exc.code, exc.message))}"
            done = exc.code == "CONFLICT"
            result, error = "failure", f"{exc.code}: {exc.message}"
        except Exception as exc:
            log.exception("slack %s failed", target)
            outcome, done = f":red_circle: {error_text('INTERNAL_ERROR', '')}", False
            result, error = "failure", f"{type(exc).__name__}: {exc}"
        await self._audit(actor, "chat_action", target, args, result, error, time.monotonic() - started)
        who = f"<@{user_id}>" if user_id and _USER_ID.fullmatch(user_id) else "someone"
        text = f"{outcome} · {who} at {time.strftime('%H:%M:%S', time.gmtime())} UTC"
        message = {"replace_original": True, "text": blocks.escape(outcome)[:300],
                   "blocks": blocks.decided(original, text, keep_buttons=not done)}
        await self.web.respond(response_url, message)

    async def _approve(self, approval_id: str, reply: str, actor: str) -> tuple[str, bool]:
        await self.approvals.reply(approval_id, reply, None, actor=actor)
        emoji = ":no_entry:" if reply == "reject" else ":white_check_mark:"
        return f"{emoji} {blocks.DONE_REPLY[reply]}", True

    async def _remediate(self, incident: str, host: str | None, check: bool, actor: str) -> tuple[str, bool]:
        data = await self.ports.remediate.request(incident, host, check=check, actor=actor)
        mode = "Check" if check else "Run"
        what = blocks.escape(remediate_outcome(data).rstrip("."))
        return f":gear: {mode}: {what} (`{blocks.escape(str(data.get('command')))}`)", not check

    # ----- user groups -----

    async def _refresh_groups(self) -> None:
        """Members of the configured user groups (usergroups.users.list), every `group_refresh_sec`; a failed
        refresh keeps the last members."""
        while True:
            for group in self.settings.groups:
                doc = await self.web.call("usergroups.users.list", {"usergroup": group}, form=True)
                if doc is not None and isinstance(doc.get("users"), list):
                    self.group_members[group] = frozenset(str(u) for u in doc["users"])
                    log.debug("slack: user group %s has %d members", group, len(self.group_members[group]))
            await asyncio.sleep(self.settings.group_refresh_sec)

    # ----- plumbing -----

    def _spawn(self, work: Awaitable[None], name: str) -> bool:
        if len(self._tasks) >= MAX_BACKGROUND:
            if asyncio.iscoroutine(work):
                work.close()
            return False
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _audit(self, actor: str, action: str, target: str, args: dict[str, Any], result: str,
                     error: str | None, seconds: float) -> None:
        await audit_chat(self.writer, "slack", actor, action, target, args, result, error, seconds)

    async def start(self) -> None:
        if self.settings.posts:
            self.notifier.start()
        if self.settings.groups and self.settings.bot_token:
            self._workers.append(asyncio.create_task(self._refresh_groups(), name="slack-groups"))

    async def stop(self) -> None:
        """Let work in flight finish briefly, then cancel it; close the HTTP client."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=5)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(BaseException):
                await w
        self._workers.clear()
        await self.notifier.stop()
        await self.web.close()
