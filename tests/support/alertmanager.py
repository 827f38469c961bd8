"""A real Prometheus Alertmanager (Debian ``prometheus-alertmanager``) on loopback, for the receiver tests.

Its one receiver is the supervisor's ``POST /api/v1/alerts`` webhook, authorised with the alert token read
from a 0600 file (``http_config.authorization.credentials_file``), as docs/monitoring.md tells operators to
set it up. Alerts are put in through Alertmanager's API v2 (``POST /api/v2/alerts``), the way Prometheus
delivers them; a resolved alert is the same alert again with ``endsAt`` in the past. Clustering is off
(``--cluster.listen-address=``), so nothing listens beyond the web port.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.ports import free_port
from tests.support.waiting import wait_for

BINARY = os.environ.get("HAL_ALERTMANAGER", "/usr/bin/prometheus-alertmanager")


def require() -> None:
    """Skip when no Alertmanager is installed here; in CI (``CI`` set) fail instead, since
    scripts/ci-setup.sh installs it."""
    if Path(BINARY).is_file() or shutil.which(BINARY):
        return
    why = f"{BINARY} not installed (Debian package prometheus-alertmanager, scripts/ci-setup.sh)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"missing in CI: {why}")
    pytest.skip(why)


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def receiver_config(webhook_url: str, token_file: Path, *, group_by: Sequence[str], ca_file: Path | None = None,
                    group_wait: str = "1s", group_interval: str = "2s") -> dict[str, Any]:
    """The documented receiver (docs/monitoring.md), with short group timers for a test."""
    http_config: dict[str, Any] = {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}
    if ca_file is not None:
        http_config["tls_config"] = {"ca_file": str(ca_file)}
    return {
        "route": {"receiver": "hal-supervisor", "group_by": list(group_by), "group_wait": group_wait,
                  "group_interval": group_interval, "repeat_interval": "1h"},
        "receivers": [{"name": "hal-supervisor", "webhook_configs": [
            {"url": webhook_url, "send_resolved": True, "max_alerts": 100, "http_config": http_config}]}],
    }


@dataclass
class Alertmanager:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def post(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Put alerts in through API v2 (what Prometheus does at every evaluation)."""
        r = httpx.post(self.url + "/api/v2/alerts", json=list(alerts), timeout=10)
        assert r.status_code == 200, f"alertmanager refused the alerts: {r.status_code} {r.text}"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def alert(labels: Mapping[str, str], *, starts: float, ends: float | None = None,
          summary: str = "") -> dict[str, Any]:
    doc: dict[str, Any] = {"labels": dict(labels), "annotations": {"summary": summary or labels["alertname"]},
                           "startsAt": rfc3339(starts), "generatorURL": "http://prometheus.invalid/graph"}
    if ends is not None:
        doc["endsAt"] = rfc3339(ends)
    return doc


@contextmanager
def running(workdir: Path, config: Mapping[str, Any], timeout: float = 60) -> Iterator[Alertmanager]:
    """Start Alertmanager with `config` on a free loopback port; stopped (by PID) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "alertmanager.yml"
    cfg.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    port = free_port()
    log = workdir / "alertmanager.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [BINARY, f"--config.file={cfg}", f"--storage.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=debug"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    am = Alertmanager(f"http://127.0.0.1:{port}", proc, log)
    try:
        def ready() -> bool:
            assert proc.poll() is None, f"alertmanager exited {proc.returncode}:\n{am.log_tail()}"
            try:
                return httpx.get(am.url + "/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, "alertmanager ready", timeout, interval=0.2)
        yield am
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)

