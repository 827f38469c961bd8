"""Saving the database a running writer still has open after its file was deleted or replaced."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

from halswarm.store.guard import DELETED


def rescue_copy(conn: sqlite3.Connection, path: Path, kind: str) -> Path:
    """Copy the open database (`conn`, every committed page) next to `path` and return where it is.

    After a deletion the copy takes the database's place, unless something appeared at the path
    meanwhile (linking never overwrites); after a replacement it stays beside the new file.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    tmp = path.with_name(f"{path.name}.rescued-{stamp}")
    dst = sqlite3.connect(tmp)
    try:
        conn.backup(dst)
    finally:
        dst.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    target = tmp
    if kind == DELETED and not path.exists() and not Path(f"{path}-wal").exists():
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        else:
            os.unlink(tmp)
            target = path
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return target
