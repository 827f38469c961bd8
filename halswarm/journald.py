"""Log lines carry their syslog priority when stderr is a journald stream (`journalctl -p err`)."""

from __future__ import annotations

import logging
import os
from typing import IO

from halswarm.core.syslog_priority import journal_stream_matches, prefix_lines, syslog_priority


class PriorityPrefixFormatter(logging.Formatter):
    """Wraps another formatter and prefixes `<N>` (the record's syslog priority) to every line."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return prefix_lines(self.inner.format(record), syslog_priority(record.levelno))


def stream_is_journal(stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """Whether `stream` is the journal stream systemd connected (and told us about in $JOURNAL_STREAM)."""
    env = os.environ if environ is None else environ
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return journal_stream_matches(env.get("JOURNAL_STREAM"), st.st_dev, st.st_ino)
