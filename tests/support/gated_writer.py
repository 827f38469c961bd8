"""A real batching `Writer` whose jobs can be held back and made to fail, for commit-path tests."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Any

from halswarm.store.writer import Writer


class GatedWriter(Writer):
    """Every job first waits for `gate` (at most 5 s); while `fail_jobs` > 0 a job raises instead of running."""

    def __init__(self, conn: sqlite3.Connection, *, fail_jobs: int = 0) -> None:
        super().__init__(conn)
        self.gate = threading.Event()
        self.fail_jobs = fail_jobs

    def submit(self, job: Any) -> asyncio.Future[Any]:
        fail = self.fail_jobs > 0
        if fail:
            self.fail_jobs -= 1

        def gated(conn: sqlite3.Connection) -> Any:
            self.gate.wait(5)
            if fail:
                raise sqlite3.OperationalError("disk I/O error")
            return job(conn)

        return super().submit(gated)
