"""Free loopback ports for the processes a test starts."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_on(host: str) -> int:
    """A free TCP port on another loopback address (127.0.0.2 for the test sshd)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
