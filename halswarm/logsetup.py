"""Process-wide logging for the daemons: JSON lines (default under systemd) or plain text."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from halswarm.core.secret_values import SECRETS, SecretValues

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


class RedactFilter(logging.Filter):
    """Handler filter: every record, whatever its logger (ours, websockets, uvicorn, httpx), leaves
    with the configured secrets, bearer credentials and `token=` query values replaced.

    The message is rendered here (args merged) and the traceback pre-formatted, so the formatter
    only sees scrubbed text."""

    def __init__(self, secrets: SecretValues = SECRETS) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        scrub = self.secrets.scrub
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw parts, still scrubbed
            message = f"{record.msg} {record.args}"
        record.msg, record.args = scrub(message), None
        if record.exc_info:
            record.exc_text = scrub(_PLAIN.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


_PLAIN = logging.Formatter()


def setup_logging(level: str = "info", fmt: str = "json", stream: TextIO = sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter())
    from halswarm.journald import PriorityPrefixFormatter, stream_is_journal

    if stream_is_journal(stream):  # under systemd: `<N>` prefixes so `journalctl -p err` works
        handler.setFormatter(PriorityPrefixFormatter(handler.formatter or logging.Formatter()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level, logging.INFO))
    # Third-party chatter stays at warning unless we debug.
    for noisy in ("websockets", "uvicorn", "uvicorn.error", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
