"""A steady stream of opencode events from a fake opencode, for the failover and HA process tests."""

from __future__ import annotations

import threading

from tests.support.agent_proc import FakeOpencode


class Emitter:
    """Emits ``message.part.updated`` events every ``interval`` s until stopped; remembers their ids in order."""

    def __init__(self, fake: FakeOpencode, sid: str, directory: str, interval: float = 0.02) -> None:
        self.fake, self.sid, self.directory, self.interval = fake, sid, directory, interval
        self.sent: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="emitter")

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            eid = self.fake.emit("message.part.updated", {"sessionID": self.sid, "part": {"n": n}}, self.directory)
            with self._lock:
                self.sent.append(eid)
            n += 1
            self._stop.wait(self.interval)

    def start(self) -> Emitter:
        self._thread.start()
        return self

    def count(self) -> int:
        with self._lock:
            return len(self.sent)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        return list(self.sent)
