"""Discord embeds in the colours of the Go bot, and the one-line text shown for a failed command."""

from __future__ import annotations

from typing import Any

SUCCESS, FAILURE, TIMEOUT, INFO = 0x00CC66, 0xCC3333, 0xFF9900, 0x3399FF
EPHEMERAL = 64  # message flag: only the user who ran the command sees it

# Discord's limits (an embed over them is refused, and the user sees nothing).
TITLE_MAX, DESCRIPTION_MAX, FIELDS_MAX, FIELD_NAME_MAX, FIELD_VALUE_MAX = 256, 4096, 25, 256, 1024

# API error code -> what the chat user reads (the Go bot's wording); the message follows for the codes
# that describe the user's own input.
_FRIENDLY = {
    "NOT_FOUND": "The requested resource was not found.",
    "SERVICE_UNAVAILABLE": "Target node is not connected.",
    "TIMEOUT": "The command timed out. Please try again.",
    "RATE_LIMITED": "Target node is busy. Please try again later.",
    "DISPATCH_ERROR": "The agent could not carry out the command.",
    "VALIDATION_ERROR": "Invalid input.",
    "BAD_REQUEST": "Invalid input.",
    "CONFLICT": "Conflict with the current state.",
}
_SHOW_MESSAGE = {"NOT_FOUND", "VALIDATION_ERROR", "BAD_REQUEST", "CONFLICT", "DISPATCH_ERROR",
                 "SERVICE_UNAVAILABLE"}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def embed(title: str, description: str = "", colour: int = INFO,
          fields: list[tuple[str, str, bool]] | None = None) -> dict[str, Any]:
    """One embed within Discord's limits; fields are (name, value, inline)."""
    out: dict[str, Any] = {"title": _cut(title, TITLE_MAX), "color": colour}
    if description:
        out["description"] = _cut(description, DESCRIPTION_MAX)
    if fields:
        out["fields"] = [{"name": _cut(n, FIELD_NAME_MAX) or "-", "value": _cut(v, FIELD_VALUE_MAX) or "-",
                          "inline": inline} for n, v, inline in fields[:FIELDS_MAX]]
    return out


def error_text(code: str, message: str) -> str:
    """What a chat user reads for an API error: a fixed sentence, plus the message when it is about their
    input (internal details never reach the channel)."""
    friendly = _FRIENDLY.get(code, "An internal error occurred. Please check the supervisor logs.")
    return f"{friendly} {message}" if code in _SHOW_MESSAGE and message else friendly


def error_colour(code: str) -> int:
    return TIMEOUT if code == "TIMEOUT" else FAILURE


def reply(embeds: list[dict[str, Any]], *, ephemeral: bool = False) -> dict[str, Any]:
    """An interaction response of type 4 (a message now)."""
    data: dict[str, Any] = {"embeds": embeds}
    if ephemeral:
        data["flags"] = EPHEMERAL
    return {"type": 4, "data": data}


def refusal(text: str) -> dict[str, Any]:
    """An ephemeral plain-text answer (type 4, flags 64)."""
    return {"type": 4, "data": {"content": _cut(text, 2000), "flags": EPHEMERAL}}
