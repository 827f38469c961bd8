"""A slash command typed as one line of text (Slack: `/hal inject ses_1 carry on`), parsed against the
command table Discord's options come from, so both front-ends take the same arguments.

The first word names the command (`env` takes its sub-command next). Arguments follow in the order of the
command's options, or as `name=value` anywhere before free text; `message` and `prompt` take the rest of
the line as typed. Booleans take true/false/yes/no or their own name (`check`)."""

from __future__ import annotations

import re
from typing import Any

from halswarm.core.chatops.commands import BOOLEAN, BY_NAME, COMMANDS, INTEGER, SUB_COMMAND, ChatCommand, Option

REST_OPTIONS = frozenset({"message", "prompt"})
_TRUE, _FALSE = frozenset({"true", "yes", "on", "1"}), frozenset({"false", "no", "off", "0"})
_WORD = re.compile(r"\S+")


class TextError(ValueError):
    """The line does not make a command; the message is shown to the user as is."""


def unescape(text: str) -> str:
    """Slack escapes &, < and > in the text it sends (and only those)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def usage(command: ChatCommand) -> str:
    """One line per form of the command, e.g. `logs <session_id> [limit]`."""
    subs = [o for o in command.options if o.type == SUB_COMMAND]
    if subs:
        return "\n".join(f"{command.name} {s.name} {_args(s.options)}".rstrip() for s in subs)
    return f"{command.name} {_args(command.options)}".rstrip()


def _args(options: tuple[Option, ...]) -> str:
    return " ".join(f"<{o.name}>" if o.required else f"[{o.name}]" for o in options)


def help_text() -> str:
    return "\n".join(f"`{usage(c)}` - {c.description}" for c in COMMANDS)


def parse_text(text: str) -> tuple[ChatCommand, str | None, dict[str, Any]]:
    """(command, sub-command or None, {option: value}) of a line; TextError saying what is wrong."""
    text = unescape(text).strip()
    words = [(m.start(), m.group()) for m in _WORD.finditer(text)]
    if not words:
        raise TextError("Say which command to run (try `help`).")
    name = words[0][1].lstrip("/").lower()
    command = BY_NAME.get(name)
    if command is None:
        raise TextError(f"Unknown command {name[:40]!r}; one of: {', '.join(BY_NAME)} (or `help`).")
    options, sub, i = command.options, None, 1
    subs = {o.name: o for o in options if o.type == SUB_COMMAND}
    if subs:
        if len(words) < 2 or words[1][1].lower() not in subs:
            raise TextError(f"Usage: {usage(command)}")
        sub = words[1][1].lower()
        options, i = subs[sub].options, 2
    by_name = {o.name: o for o in options}
    opts: dict[str, Any] = {}
    while i < len(words):
        start, word = words[i]
        key, eq, value = word.partition("=")
        if eq and key in by_name:
            if key in REST_OPTIONS:  # `message=...` takes the rest of the line too
                opts[key] = text[start + len(key) + 1:].strip()
                break
            opts[key] = _value(by_name[key], value)
            i += 1
            continue
        flag = by_name.get(word.lower())
        if flag is not None and flag.type == BOOLEAN and flag.name not in opts:  # `check` alone: a flag
            opts[flag.name] = True
            i += 1
            continue
        option = next((o for o in options if o.name not in opts), None)
        if option is None:
            raise TextError(f"Unexpected {word[:40]!r}. Usage: {usage(command)}")
        if option.name in REST_OPTIONS:
            opts[option.name] = text[start:]
            break
        opts[option.name] = _value(option, word)
        i += 1
    return command, sub, opts


def _value(option: Option, word: str) -> Any:
    if option.type == INTEGER:
        try:
            return int(word)
        except ValueError:
            raise TextError(f"{option.name} must be a whole number (got {word[:40]!r})") from None
    if option.type == BOOLEAN:
        low = word.lower()
        if low in _TRUE or low == option.name:
            return True
        if low in _FALSE:
            return False
        raise TextError(f"{option.name} must be true or false (got {word[:40]!r})")
    if option.choices and word not in option.choices:
        raise TextError(f"{option.name} must be one of {', '.join(option.choices)} (got {word[:40]!r})")
    return word
