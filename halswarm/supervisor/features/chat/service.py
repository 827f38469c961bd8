"""Discord interactions: verify, authorize, answer (or defer and follow up), audit.

Every request must carry Discord's Ed25519 signature of timestamp + body under the configured public key;
a stale timestamp or a signature seen before is refused too (401). PING answers PONG. With
`channels.discord.guild_id` set, anything from another guild (or a DM) is refused. A slash command runs
when the user (or one of their Discord roles) is granted the command's role in `chatops.discord.users` /
`roles`, else an ephemeral refusal; every command, refused or not, is audited as `discord:<user id>` and
the commands that act pass that actor to the services, whose own audit rows carry it too. Commands that
wait for an agent are answered "thinking" at once (type 5) and completed through Discord's REST API in
the background, so a slow agent or a slow Discord never holds a request or the event loop.

A button press (a message component, type 3) is the slash command its custom_id stands for
(core/chatops/components.py): same role check, handler and audit. It is acknowledged at once (type 6,
DEFERRED_UPDATE_MESSAGE); once done, the message the button is on is edited (`@original`) to say who
decided what, without buttons; a failure goes only to the presser (an ephemeral follow-up)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from halswarm.core.chatops.access import ReplayGuard, chat_role
from halswarm.core.chatops.commands import BY_NAME, ChatCommand, flatten_options
from halswarm.core.chatops.components import decided, parse_custom_id
from halswarm.core.chatops.embeds import EPHEMERAL, error_colour, error_text, refusal, reply
from halswarm.core.chatops.embeds import embed as make_embed
from halswarm.store.writer import Writer
from halswarm.supervisor.apikit.envelope import ApiError
from halswarm.supervisor.features.chat.audit import audit_chat
from halswarm.supervisor.features.chat.followup import DiscordRest
from halswarm.supervisor.features.chat.handlers import HANDLERS
from halswarm.supervisor.features.chat.ports import ChatPorts
from halswarm.supervisor.features.chat.settings import DiscordSettings
from halswarm.supervisor.features.chat.signature import load_key, verified

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024  # Discord's interaction payloads are a few KiB
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT = 1, 2, 3
# Interaction responses: PONG; "thinking" (a message follows); a component's ack (its message is edited later).
PONG, DEFERRED, DEFERRED_UPDATE = {"type": 1}, {"type": 5}, {"type": 6}
MAX_BACKGROUND = 32  # deferred commands in flight; more are answered "busy" at once


class DiscordInteractions:
    def __init__(self, settings: DiscordSettings, ports: ChatPorts, writer: Writer,
                 rest: DiscordRest | None = None) -> None:
        self.settings = settings
        self.ports = ports
        self.writer = writer
        self.rest = rest or DiscordRest(settings.api_base, settings.followup_timeout_sec)
        self.key = load_key(settings.public_key) if settings.public_key else None
        self.replays = ReplayGuard(settings.max_skew_sec)
        self._tasks: set[asyncio.Task[None]] = set()

    # ----- the request -----

    def admit(self, body: bytes, signature: str | None, timestamp: str | None, now: float) -> dict[str, Any]:
        """The verified interaction, or AUTH_REQUIRED (401) with the reason."""
        if self.key is None:
            raise ApiError("AUTH_REQUIRED", "discord interactions are not configured (chatops.discord.public_key)")
        if len(body) > MAX_BODY_BYTES:
            raise ApiError("PAYLOAD_TOO_LARGE", f"interaction exceeds {MAX_BODY_BYTES} bytes")
        if not signature or not timestamp or not verified(self.key, signature, timestamp, body):
            raise ApiError("AUTH_REQUIRED", "missing or invalid Discord request signature")
        why = self.replays.refuse(timestamp, signature, now)
        if why is not None:
            raise ApiError("AUTH_REQUIRED", why)
        try:
            doc = json.loads(body)
        except ValueError:
            raise ApiError("BAD_REQUEST", "body must be JSON (a Discord interaction)") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("type"), int):
            raise ApiError("BAD_REQUEST", "not a Discord interaction (no type)")
        return doc

    async def answer(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The interaction response of a verified interaction."""
        if doc["type"] == PING:
            return PONG
        if doc["type"] not in (APPLICATION_COMMAND, MESSAGE_COMPONENT):
            return refusal("This interaction is not supported here.")
        guild = self.settings.guild_id
        if guild is not None and str(doc.get("guild_id") or "") != guild:
            return refusal("This supervisor answers only in its own Discord server (channels.discord.guild_id).")
        raw = doc.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        user_id, role_ids = _user(doc)
        actor = f"discord:{user_id or 'unknown'}"
        if doc["type"] == MESSAGE_COMPONENT:
            press = parse_custom_id(data.get("custom_id"))
            if press is None:
                return refusal("This button is not one the supervisor made; nothing was done.")
            key, opts = press.command, dict(press.options)
        else:
            sub, opts = flatten_options(data.get("options"))
            name = str(data.get("name") or "")
            key = f"{name} {sub}" if sub else name
        command = BY_NAME.get(key.split(" ", 1)[0])
        if command is None or key not in HANDLERS:
            return refusal(f"Unknown command /{key}.")
        role = chat_role(user_id, role_ids, self.settings.users, self.settings.roles)
        if role is None or role < command.role:
            held = role.name if role else "no role"
            await self._audit(actor, key, opts, "denied", f"{held}; /{key} needs {command.role.name}", 0.0)
            return refusal(f"You are not allowed to run /{key}: it needs the {command.role.name} role "
                           f"(you have {held}).")
        if not command.deferred and doc["type"] == APPLICATION_COMMAND:
            return reply([(await self._run(command, key, opts, actor))[0]])
        application_id, token = str(doc.get("application_id") or ""), str(doc.get("token") or "")
        if not application_id.isdigit() or not token:
            raise ApiError("BAD_REQUEST", "a command interaction needs application_id and token")
        if len(self._tasks) >= MAX_BACKGROUND:
            return refusal("The supervisor is busy with other chat commands; try again shortly.")
        if doc["type"] == MESSAGE_COMPONENT:
            message = doc.get("message") if isinstance(doc.get("message"), dict) else None
            work = self._press(command, key, opts, actor, application_id, token, message)
        else:
            work = self._follow_up(command, key, opts, actor, application_id, token)
        task = asyncio.create_task(work, name=f"discord-{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return DEFERRED_UPDATE if doc["type"] == MESSAGE_COMPONENT else DEFERRED

    # ----- running a command -----

    async def _run(self, command: ChatCommand, key: str, opts: dict[str, Any],
                   actor: str) -> tuple[dict[str, Any], bool]:
        """The command's embed (and whether it succeeded); an error becomes a red (or orange, timeout) embed.
        Audited either way."""
        started = time.monotonic()
        try:
            out = await HANDLERS[key](self.ports, opts, actor)
            result, error = "success", None
        except ApiError as exc:
            out = make_embed(f"/{key} failed", error_text(exc.code, exc.message), error_colour(exc.code))
            result, error = "failure", f"{exc.code}: {exc.message}"
        except Exception as exc:  # a bug must still answer the user (the Go bot's "Internal Error")
            log.exception("discord /%s failed", key)
            out = make_embed("Internal Error", error_text("INTERNAL_ERROR", ""), error_colour("INTERNAL_ERROR"))
            result, error = "failure", f"{type(exc).__name__}: {exc}"
        await self._audit(actor, key, opts, result, error, time.monotonic() - started)
        return out, error is None

    async def _follow_up(self, command: ChatCommand, key: str, opts: dict[str, Any], actor: str,
                         application_id: str, token: str) -> None:
        message = {"embeds": [(await self._run(command, key, opts, actor))[0]]}
        await self.rest.edit_original(application_id, token, message)

    async def _press(self, command: ChatCommand, key: str, opts: dict[str, Any], actor: str, application_id: str,
                     token: str, message: dict[str, Any] | None) -> None:
        """A button press, run as its command. Done: the notification is edited in place to say who decided
        what, without its buttons. Failed (e.g. already answered): an ephemeral follow-up to the presser,
        and the message keeps its buttons."""
        out, done = await self._run(command, key, opts, actor)
        if not done:
            await self.rest.follow_up(application_id, token, {"embeds": [out], "flags": EPHEMERAL})
            return
        outcome = str(out.get("description") or out.get("title") or "done")
        if key == "remediate":
            outcome = f"{out.get('title')}: {outcome} (by <@{actor.split(':', 1)[1]}>)"
        edited = decided(message, outcome, int(out.get("color") or 0))
        if key == "remediate" and opts.get("check") is True and isinstance(message, dict):
            edited["components"] = message.get("components") or []  # a check changes nothing: Run stays
        await self.rest.edit_original(application_id, token, edited)

    async def _audit(self, actor: str, key: str, opts: dict[str, Any], result: str, error: str | None,
                     seconds: float) -> None:
        await audit_chat(self.writer, "discord", actor, "chat_command", f"/{key}", opts, result, error, seconds)

    # ----- lifecycle -----

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        """Let follow-ups in flight finish briefly, then cancel them; close the REST client."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=5)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        await self.rest.close()


def _user(doc: dict[str, Any]) -> tuple[str | None, list[str]]:
    """(user id, role ids): `member` in a guild, `user` in a direct message."""
    member = doc.get("member") if isinstance(doc.get("member"), dict) else None
    user = (member or {}).get("user") if member else doc.get("user")
    uid = str(user.get("id")) if isinstance(user, dict) and user.get("id") is not None else None
    roles = member.get("roles") if member else []
    return uid, [str(r) for r in roles] if isinstance(roles, list) else []
