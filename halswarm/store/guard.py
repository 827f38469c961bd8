"""Watching the database file under a running writer: still there, still the same file, still writable.

SQLite keeps writing to an open file after it was deleted or replaced, and COMMIT succeeds; every
event acked from then on is lost at the next start. So the writer asks `StorageGuard.check` before
each COMMIT (two or three `stat` calls, microseconds beside the fsync that follows).
"""

from __future__ import annotations

import os
from pathlib import Path

# Kinds of storage fault; `recoverable` ones clear by themselves when the cause goes away.
DELETED, REPLACED, READ_ONLY, CORRUPT = "deleted", "replaced", "read_only", "corrupt"
RECOVERABLE = frozenset({READ_ONLY})


class StorageFault(RuntimeError):
    """The database cannot be trusted with a commit now; `kind` is one of the constants above."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def mode_writable(st_mode: int, root: bool) -> bool:
    """Whether permission bits allow writing: root ignores them, so for root "no write bit at all"
    is what read-only means (an operator's `chmod a-w`)."""
    return bool(st_mode & 0o222) if root else bool(st_mode & 0o200)


class StorageGuard:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.wal = Path(f"{path}-wal")
        self._p, self._w = str(self.path), str(self.wal)  # stat on str: no Path conversion per commit
        st = os.stat(self._p)
        self._ident = (st.st_dev, st.st_ino)
        self._wal_ident: tuple[int, int] | None = None
        self._root = os.geteuid() == 0

    def check(self) -> StorageFault | None:
        """None while the file opened is the one at the path and writable, else the fault."""
        p = self._p
        try:
            st = os.stat(p)
        except FileNotFoundError:
            return StorageFault(DELETED, f"database file {p} was deleted under the running supervisor")
        except OSError as exc:
            return StorageFault(READ_ONLY, f"database file {p} cannot be checked: {exc.strerror}")
        if (st.st_dev, st.st_ino) != self._ident:
            return StorageFault(REPLACED, f"database file {p} was replaced by another file")
        if not mode_writable(st.st_mode, self._root) or (not self._root and not os.access(p, os.W_OK)):
            return StorageFault(READ_ONLY, f"database file {p} was made read-only")
        # The WAL holds committed pages not yet copied into the main file: it must not go either.
        try:
            wst = os.stat(self._w)
        except FileNotFoundError:
            if self._wal_ident is not None:
                return StorageFault(DELETED, f"database WAL file {self.wal} was deleted under the running supervisor")
            return None
        except OSError:
            return None
        wid = (wst.st_dev, wst.st_ino)
        if self._wal_ident is None:
            self._wal_ident = wid
        elif wid != self._wal_ident:
            return StorageFault(REPLACED, f"database WAL file {self.wal} was replaced by another file")
        return None


def startup_problem(path: str | Path) -> str | None:
    """Why the database at `path` cannot be written, judged from the file system before opening it
    (SQLite would open a read-only file read-only and fail only at the first write, and root passes
    every permission check), else None."""
    p = Path(path)
    root = os.geteuid() == 0
    d = p.parent
    try:
        dst = os.stat(d)
    except FileNotFoundError:
        return None  # created by connect()
    except OSError as exc:
        return f"database directory {d} cannot be read: {exc.strerror}"
    if not dst.st_mode & (0o111 if root else 0o100) or (not root and not os.access(d, os.X_OK)):
        return f"database directory {d} cannot be searched (permissions {oct(dst.st_mode & 0o777)})"
    if not mode_writable(dst.st_mode, root) or (not root and not os.access(d, os.W_OK)):
        return f"database directory {d} is not writable (the WAL files live beside the database)"
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"database file {p} cannot be read: {exc.strerror}"
    if not os.path.isfile(p):
        return f"database path {p} is not a regular file"
    if not mode_writable(st.st_mode, root) or (not root and not os.access(p, os.W_OK)):
        return f"database file {p} is read-only"
    if not st.st_mode & (0o444 if root else 0o400) or (not root and not os.access(p, os.R_OK)):
        return f"database file {p} is not readable"
    return None
