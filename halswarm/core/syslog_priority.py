"""Python log levels as syslog priorities, and the `<N>` line prefix journald reads (sd-daemon(3)).

journald strips a leading `<N>` from each line of a stream it collects and files the line at that
priority, so `journalctl -p err` selects errors while the line itself (JSON or text) is unchanged.
"""

from __future__ import annotations

import logging

EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a Python level (custom levels fall to the nearest lower standard one)."""
    if levelno >= logging.CRITICAL:
        return CRIT
    if levelno >= logging.ERROR:
        return ERR
    if levelno >= logging.WARNING:
        return WARNING
    if levelno >= logging.INFO:
        return INFO
    return DEBUG


def prefix_lines(text: str, priority: int) -> str:
    """`<N>` before every line: journald reads each line as its own entry, so a traceback printed in
    text format keeps its priority on every line."""
    return "\n".join(f"<{priority}>{line}" for line in text.split("\n"))


def journal_stream_matches(journal_stream: str | None, st_dev: int, st_ino: int) -> bool:
    """True when $JOURNAL_STREAM ("DEV:INODE", set by systemd for a unit whose stdout/stderr is the
    journal) names the stream with this device and inode, i.e. our stderr really is that journal stream."""
    if not journal_stream:
        return False
    dev, sep, ino = journal_stream.partition(":")
    if not sep:
        return False
    try:
        return int(dev) == st_dev and int(ino) == st_ino
    except ValueError:
        return False
