"""sd_notify on real Unix datagram sockets (a path and the abstract namespace), and its no-op cases."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from halswarm.sdnotify import notify

pytestmark = pytest.mark.process  # a datagram socket


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def test_sends_one_datagram_of_lines(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify("READY=1", "STATUS=serving: a\nb", env={"NOTIFY_SOCKET": path})
    # one datagram; a newline inside a value would start a bogus assignment, so it becomes a space
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving: a b"


def test_abstract_namespace_address() -> None:
    name = f"halswarm-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert notify("STOPPING=1", env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"
    finally:
        sock.close()


@pytest.mark.parametrize("value", ["", "vsock:2:1234", "relative/notify.sock"])
def test_nothing_to_tell_is_a_no_op(value: str) -> None:
    assert notify("READY=1", env={"NOTIFY_SOCKET": value} if value else {}) is False


def test_a_dead_socket_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False
    assert "could not notify the service manager" in caplog.text
