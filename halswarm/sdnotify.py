"""systemd's readiness protocol (``sd_notify``): one datagram of ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET``.

The supervisor's unit is ``Type=notify``: systemd counts it ``active`` only after ``READY=1``, which it
sends once the database passed its integrity check and both listeners are bound. With ``Type=simple``
every doomed restart attempt (a corrupt database, a port in use) showed ``active`` for the second
Python took to fail, so ``systemctl is-active`` and ``systemctl start`` said nothing about whether the
supervisor was serving.

The protocol is a single ``sendto`` on a Unix datagram socket; the libraries that wrap it either
need libsystemd headers to build (systemd-python) or are unmaintained, so it lives here. Outside
systemd (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` (e.g. ``"READY=1"``, ``"STATUS=serving"``) to the service manager.

    Returns True when the datagram was sent, False when there is no manager to tell (no
    ``NOTIFY_SOCKET``, an address family other than a Unix socket) or the send failed; a failure is
    logged, never raised: readiness reporting must not take the service down."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.debug("NOTIFY_SOCKET %r is not a Unix socket path; readiness not reported", address)
        return False
    payload = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
    except OSError as exc:
        log.warning("could not notify the service manager (%s): %s", address.lstrip("\0"), exc)
        return False
    return True
