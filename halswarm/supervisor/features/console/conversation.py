"""A session's stored events as a readable conversation (pure): prompts, assistant text, tool calls with
their output, permission requests (with their approval state) and errors, in the order first seen.

opencode re-sends a part each time it changes (``message.part.updated``) and streams text as
``message.part.delta``: the latest version of each part wins, in the position it first appeared. Text is
returned as data, never markup: the templates escape it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

OUTPUT_CHARS = 4000  # tool output shown per call (the rest is counted, not sent to the page)
TEXT_CHARS = 20_000  # characters of one text part
_INPUT_KEYS = ("command", "filePath", "path", "pattern", "url", "query", "description")


@dataclass
class Message:
    role: str  # user | assistant | tool | permission | system
    text: str = ""
    tool: str = ""
    status: str = ""
    output: str = ""
    approval_id: str = ""
    patterns: list[str] = field(default_factory=list)
    reply: str = ""
    timestamp: str | None = None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"


def input_summary(tool_input: Any) -> str:
    data = _map(tool_input)
    for key in _INPUT_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return _cut(value.strip(), 500)
    return _cut(json.dumps(data, ensure_ascii=False, sort_keys=True, default=str), 500) if data else ""


class Conversation:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._roles: dict[str, str] = {}  # message id -> user/assistant
        self._parts: dict[str, Message] = {}  # part id -> its message (updated in place)
        self._deltas: dict[str, str] = {}
        self._asks: dict[str, Message] = {}
        self._part_mid: dict[str, str] = {}  # part id -> its message id

    def feed(self, event: Mapping[str, Any]) -> None:
        etype, data, ts = event.get("type"), _map(event.get("data")), event.get("timestamp")
        ts = ts if isinstance(ts, str) else None
        if etype == "message.updated":
            info = _map(data.get("info"))
            if isinstance(info.get("id"), str) and isinstance(info.get("role"), str):
                self._roles[info["id"]] = info["role"]
                if info["role"] == "user":  # parts seen before their message said whose it is
                    for m_pid, m in self._parts.items():
                        if m.role == "assistant" and self._part_mid.get(m_pid) == info["id"]:
                            m.role = "user"
        elif etype == "message.part.updated":
            self._part(_map(data.get("part")), ts)
        elif etype == "message.part.delta":
            self._delta(data, ts)
        elif etype in ("permission.asked", "permission.updated"):
            self._ask(data, ts)
        elif etype in ("permission.replied", "approval.replied"):
            rid = data.get("requestID") or data.get("permissionID") or data.get("id")
            ask = self._asks.get(str(rid)) if rid else None
            if ask is not None:
                ask.reply = str(data.get("reply") or data.get("response") or ask.reply or "answered")
                if etype == "approval.replied" and data.get("actor"):
                    ask.status = f"by {data['actor']}"
        elif etype == "session.error":
            err = _map(data.get("error"))
            msg = _map(err.get("data")).get("message") or err.get("message") or err.get("name") or "error"
            self.messages.append(Message("system", text=f"error: {msg}", timestamp=ts))

    def _message_role(self, mid: Any) -> str:
        return "user" if self._roles.get(str(mid)) == "user" else "assistant"

    def _part(self, part: Mapping[str, Any], ts: str | None) -> None:
        pid, ptype = part.get("id"), part.get("type")
        if not isinstance(pid, str) or ptype in ("step-start", "step-finish", None):
            return
        msg = self._parts.get(pid)
        if msg is None:
            msg = Message("assistant", timestamp=ts)
            self._parts[pid] = msg
            self._part_mid[pid] = str(part.get("messageID"))
            self.messages.append(msg)
        if ptype == "tool":
            state = _map(part.get("state"))
            msg.role, msg.tool = "tool", str(part.get("tool") or "?")
            msg.status = str(state.get("status") or "pending")
            msg.text = input_summary(state.get("input"))
            out = state.get("error") if msg.status == "error" else state.get("output")
            if not isinstance(out, str):
                out = _map(state.get("metadata")).get("output")
            msg.output = _cut(out, OUTPUT_CHARS) if isinstance(out, str) else ""
        elif ptype in ("text", "reasoning"):
            text = part.get("text")
            msg.role = self._message_role(part.get("messageID"))
            msg.status = "thinking" if ptype == "reasoning" else ""
            if isinstance(text, str):
                msg.text = _cut(text, TEXT_CHARS)
            if part.get("synthetic"):
                msg.text = ""
        else:
            msg.text = f"[{ptype}]"

    def _delta(self, data: Mapping[str, Any], ts: str | None) -> None:
        pid, delta = data.get("partID"), data.get("delta")
        if not isinstance(pid, str) or not isinstance(delta, str) or data.get("field", "text") != "text":
            return
        msg = self._parts.get(pid)
        if msg is None:
            msg = Message(self._message_role(data.get("messageID")), timestamp=ts)
            self._parts[pid] = msg
            self._part_mid[pid] = str(data.get("messageID"))
            self.messages.append(msg)
        msg.text = _cut(msg.text + delta, TEXT_CHARS)

    def _ask(self, data: Mapping[str, Any], ts: str | None) -> None:
        rid = data.get("id")
        if not isinstance(rid, str) or rid in self._asks:
            return
        patterns = data.get("patterns")
        pats = [str(p) for p in patterns] if isinstance(patterns, list) else []
        meta = _map(data.get("metadata"))
        text = str(meta.get("command") or data.get("title") or ", ".join(pats) or "")
        msg = Message("permission", text=_cut(text, 2000), tool=str(data.get("permission") or data.get("type") or ""),
                      approval_id=rid, patterns=pats, timestamp=ts)
        self._asks[rid] = msg
        self.messages.append(msg)


def build(events: Iterable[Mapping[str, Any]]) -> list[Message]:
    conv = Conversation()
    for ev in events:
        conv.feed(ev)
    return [m for m in conv.messages if m.text or m.role in ("tool", "permission")]
