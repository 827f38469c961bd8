"""Render a session's forwarded opencode events as a readable transcript (pure, no I/O).

Events come as the API returns them (``{"type", "data", ...}`` where ``data`` is opencode's
``properties``).  opencode re-sends a part every time it changes (``message.part.updated``) and
streams text as ``message.part.delta``; the renderer keeps the latest version of each part by id and
prints it once, when it is complete:

- text/reasoning parts when they carry ``time.end``, their message completes, or the session goes idle;
- user prompt parts at once (they arrive whole);
- tool parts when their state is ``completed`` or ``error`` (or at idle/flush, with the status they had);
- permission requests and replies, session errors and idle transitions as they come.

:class:`TranscriptRenderer` is incremental (``feed`` one event, get the lines it completes; ``flush``
at the end); :func:`render` does a whole list.  Control characters are stripped from everything
printed, so event data cannot drive the operator's terminal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

OUTPUT_LINES = 10  # tool output lines shown
LINE_WIDTH = 200  # characters per tool output line / summary
TOOL_DONE = frozenset({"completed", "error"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_INPUT_KEYS = ("command", "filePath", "path", "pattern", "url", "query", "description")


def clean(text: str) -> str:
    """Strip terminal control characters (ESC sequences, CR...) but keep newlines and tabs."""
    return _CONTROL.sub("", text.replace("\r\n", "\n"))


def _short(text: str, width: int = LINE_WIDTH) -> str:
    text = clean(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def input_summary(tool_input: Any) -> str:
    """One line saying what a tool was asked to do (its command/path/pattern, else compact JSON)."""
    data = _map(tool_input)
    for key in _INPUT_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return _short(" ".join(value.split()))
    if not data:
        return ""
    return _short(json.dumps(data, ensure_ascii=False, sort_keys=True, default=str))


def output_lines(output: str, max_lines: int = OUTPUT_LINES) -> list[str]:
    """Tool output, indented, at most ``max_lines`` lines of at most LINE_WIDTH characters."""
    lines = clean(output).rstrip("\n").split("\n") if output.strip() else []
    shown = [f"    | {_short(line)}" for line in lines[:max_lines]]
    if len(lines) > max_lines:
        shown.append(f"    | ... ({len(lines) - max_lines} more lines)")
    return shown


def error_text(error: Any) -> str:
    err = _map(error)
    name = err.get("name") if isinstance(err.get("name"), str) else "error"
    message = _map(err.get("data")).get("message") or err.get("message")
    text = f"{name}: {message}" if isinstance(message, str) and message else str(name)
    return _short(text.strip().split("\n", 1)[0])


class TranscriptRenderer:
    """Incremental event -> transcript lines; each part is printed once, in its final known version."""

    def __init__(self) -> None:
        self._roles: dict[str, str] = {}  # message id -> user/assistant
        self._parts: dict[str, dict[str, Any]] = {}  # part id -> latest part, insertion = first seen
        self._printed: set[str] = set()
        self._status = "idle"  # a transcript starts quiet: only a change to idle is worth a line

    # -- input ------------------------------------------------------------------------------------
    def feed(self, event: Mapping[str, Any]) -> list[str]:
        etype = event.get("type")
        data = _map(event.get("data"))
        handler = _HANDLERS.get(etype) if isinstance(etype, str) else None
        return handler(self, data) if handler else []

    def flush(self) -> list[str]:
        """Everything not printed yet (end of a past transcript)."""
        return self._emit_where(lambda _part: True)

    # -- handlers ---------------------------------------------------------------------------------
    def _on_message(self, data: Mapping[str, Any]) -> list[str]:
        info = _map(data.get("info"))
        mid, role = info.get("id"), info.get("role")
        if isinstance(mid, str) and isinstance(role, str):
            self._roles[mid] = role
        if isinstance(mid, str) and _map(info.get("time")).get("completed"):
            return self._emit_where(lambda part: part.get("messageID") == mid)
        return []

    def _on_part(self, data: Mapping[str, Any]) -> list[str]:
        part = _map(data.get("part"))
        pid = part.get("id")
        if not isinstance(pid, str) or pid in self._printed:
            return []
        self._parts[pid] = dict(part)
        self._status = "busy"  # a turn is under way, even if its busy status was not in the window
        if self._complete(part):
            return self._emit(pid)
        return []

    def _on_delta(self, data: Mapping[str, Any]) -> list[str]:
        pid, delta = data.get("partID"), data.get("delta")
        if not isinstance(pid, str) or not isinstance(delta, str) or pid in self._printed:
            return []
        if data.get("field", "text") != "text":
            return []
        part = self._parts.setdefault(pid, {"id": pid, "type": "text", "messageID": data.get("messageID")})
        part["text"] = str(part.get("text") or "") + delta
        return []

    def _on_status(self, data: Mapping[str, Any]) -> list[str]:
        status = _map(data.get("status"))
        kind = status.get("type")
        if kind == "idle":
            return self._idle()
        if kind == "retry":
            self._status = "retry"
            message = status.get("message")
            return [f"-- retrying (attempt {status.get('attempt', '?')}): {_short(str(message or ''))} --"]
        if isinstance(kind, str):
            self._status = kind
        return []

    def _on_idle(self, _data: Mapping[str, Any]) -> list[str]:
        return self._idle()

    def _on_error(self, data: Mapping[str, Any]) -> list[str]:
        return [f"-- error: {error_text(data.get('error'))} --"]

    def _on_permission_asked(self, data: Mapping[str, Any]) -> list[str]:
        what = data.get("permission") or data.get("type") or "permission"
        detail = data.get("patterns") or data.get("title") or data.get("pattern") or ""
        if isinstance(detail, list):
            detail = ", ".join(str(d) for d in detail)
        text = f"?? permission asked: {what}"
        if detail:
            text += f" {detail}"
        return [_short(f"{text} (id {data.get('id') or '-'})")]

    def _on_permission_replied(self, data: Mapping[str, Any]) -> list[str]:
        pid = data.get("requestID") or data.get("permissionID") or data.get("id") or "-"
        reply = data.get("reply") or data.get("response") or "-"
        return [_short(f"?? permission {pid} replied: {reply}")]

    def _on_state(self, data: Mapping[str, Any]) -> list[str]:
        status = data.get("status")
        if status in ("waiting_input", "error", "unreachable", "completed", "killed") and status != self._status:
            self._status = str(status)
            return [f"-- session {status} --"]
        return []

    # -- output -----------------------------------------------------------------------------------
    def _idle(self) -> list[str]:
        lines = self._emit_where(lambda _part: True)
        if self._status != "idle":
            self._status = "idle"
            lines.append("-- idle --")
        return lines

    def _complete(self, part: Mapping[str, Any]) -> bool:
        ptype = part.get("type")
        if ptype == "tool":
            return _map(part.get("state")).get("status") in TOOL_DONE
        if ptype in ("text", "reasoning"):
            return bool(_map(part.get("time")).get("end")) or self._roles.get(str(part.get("messageID"))) == "user"
        return ptype not in ("step-start", "step-finish")  # files, patches... print when seen

    def _emit_where(self, wanted: Any) -> list[str]:
        lines: list[str] = []
        for pid in [p for p, part in self._parts.items() if wanted(part)]:
            lines.extend(self._emit(pid))
        return lines

    def _emit(self, pid: str) -> list[str]:
        part = self._parts.pop(pid)
        self._printed.add(pid)
        if len(self._printed) > 50_000:  # bound memory of a very long --follow
            self._printed.clear()
        return self._lines(part)

    def _lines(self, part: Mapping[str, Any]) -> list[str]:
        ptype = part.get("type")
        if ptype == "text":
            text = clean(str(part.get("text") or "")).strip("\n")
            if not text.strip() or part.get("synthetic"):
                return []
            if self._roles.get(str(part.get("messageID"))) == "user":
                return [f"> {line}" for line in text.split("\n")]
            return text.split("\n")
        if ptype == "reasoning":
            text = " ".join(clean(str(part.get("text") or "")).split())
            return [f"(thinking) {_short(text)}"] if text else []
        if ptype == "tool":
            state = _map(part.get("state"))
            status = state.get("status") or "pending"
            head = f"[tool {clean(str(part.get('tool') or '?'))} {status}]"
            summary = input_summary(state.get("input"))
            lines = [f"{head} {summary}".rstrip()]
            if status == "error":
                lines.extend(output_lines(str(state.get("error") or "")))
            else:
                output = state.get("output")
                if not isinstance(output, str):
                    output = _map(state.get("metadata")).get("output")
                lines.extend(output_lines(output if isinstance(output, str) else ""))
            return lines
        if ptype in ("step-start", "step-finish", None):
            return []
        return [f"[{clean(str(ptype))}]"]


_HANDLERS = {
    "message.updated": TranscriptRenderer._on_message,
    "message.part.updated": TranscriptRenderer._on_part,
    "message.part.delta": TranscriptRenderer._on_delta,
    "session.status": TranscriptRenderer._on_status,
    "session.idle": TranscriptRenderer._on_idle,
    "session.error": TranscriptRenderer._on_error,
    "permission.asked": TranscriptRenderer._on_permission_asked,
    "permission.updated": TranscriptRenderer._on_permission_asked,
    "permission.replied": TranscriptRenderer._on_permission_replied,
    "session.state": TranscriptRenderer._on_state,
}


def render(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """A whole transcript: every event fed in order, then what is still pending."""
    renderer = TranscriptRenderer()
    lines: list[str] = []
    for event in events:
        lines.extend(renderer.feed(event))
    lines.extend(renderer.flush())
    return lines
