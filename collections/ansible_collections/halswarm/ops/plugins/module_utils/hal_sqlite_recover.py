# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""Salvage of a corrupt supervisor database into a new file (no `.recover`, no sqlite_dbpage on
this platform).

Work on a private copy, never the original. Pass 1 reads each table through SQL by rowid ranges,
skipping what does not read (exponential skip-ahead + bisection). Pass 2 parses the raw b-tree
pages of the copy and takes rows from intact leaf pages the SQL pass could not reach (e.g. under a
damaged interior page, or everything when sqlite_master itself is unreadable, with the schema taken
from the migration files). Each table reports what was saved and what was lost.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import sqlite3
import stat
import struct
import tempfile
import time

from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (
    DIR_MODE,
    FILE_MODE,
    SQLITE_MAGIC,
    DataSafetyError,
    _quote_ident,
    _sqlite_error,
    _unlink_quiet,
    connect_ro,
    drop_clean_marker,
    fsync_dir,
    fsync_file,
    integrity_problems,
    os_error,
    sidecar_path,
    user_tables,
    write_sidecar,
)

MIN_INT64 = -(1 << 63)
MAX_INT64 = (1 << 63) - 1
# The bookkeeping table of halswarm.store.migrations (kept identical; a unit test compares them).
SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version TEXT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at REAL NOT NULL)"
)


# --------------------------------------------------------------------------------------------
# recover: raw page reader (pass 2)


class _BadPage(Exception):
    pass


def _varint(buf, pos):
    value = 0
    for i in range(8):
        byte = buf[pos + i]
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos + i + 1
    value = (value << 8) | buf[pos + 8]
    return value, pos + 9


def _signed64(value):
    return value - (1 << 64) if value >= (1 << 63) else value


class RawPages:
    """Reads pages of a database file by number, with the header's page size (or a guessed one)."""

    def __init__(self, path):
        self.path = path
        self.size = os.path.getsize(path)
        self.fd = os.open(path, os.O_RDONLY)
        head = os.pread(self.fd, 100, 0)
        self.header_ok = len(head) == 100 and head[:16] == SQLITE_MAGIC
        page_size = reserved = 0
        if self.header_ok:
            page_size = struct.unpack(">H", head[16:18])[0]
            page_size = 65536 if page_size == 1 else page_size
            reserved = head[20]
        if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
            self.header_ok = False
            page_size, reserved = self._guess_page_size(), 0
        self.page_size = page_size
        self.usable = page_size - reserved
        self.encoding = "utf-8"
        if self.header_ok:
            enc = struct.unpack(">I", head[56:60])[0]
            self.encoding = {2: "utf-16-le", 3: "utf-16-be"}.get(enc, "utf-8")
        self.page_count = self.size // page_size

    def close(self):
        os.close(self.fd)

    def page(self, pgno):
        if pgno < 1 or pgno > self.page_count:
            raise _BadPage(f"page {pgno} outside the file")
        data = os.pread(self.fd, self.page_size, (pgno - 1) * self.page_size)
        if len(data) != self.page_size:
            raise _BadPage(f"short page {pgno}")
        return data

    def _guess_page_size(self):
        """The page size of a file whose header is gone: at the right size every page starts with a
        b-tree page header. Every multiple of it scores as well, so take the smallest size that
        scores close to the best."""
        scores = {}
        for size in (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
            count = min(self.size // size, 4000)
            if count < 2:
                continue
            good = 0
            for n in range(2, count + 1):
                data = os.pread(self.fd, 12, (n - 1) * size)
                if len(data) == 12 and data[0] in (2, 5, 10, 13):
                    cells = struct.unpack(">H", data[3:5])[0]
                    start = struct.unpack(">H", data[5:7])[0] or 65536
                    if cells * 2 < size and start <= size:
                        good += 1
            scores[size] = good / float(count - 1)
        if not scores or max(scores.values()) == 0:
            return 4096
        best = max(scores.values())
        return min(size for size, score in scores.items() if score >= 0.8 * best)

    def header_of(self, pgno):
        data = self.page(pgno)
        offset = 100 if pgno == 1 else 0
        return data, offset, data[offset]

    def interior_children(self, pgno):
        data, off, kind = self.header_of(pgno)
        if kind != 0x05:
            raise _BadPage(f"page {pgno} is not an interior table page")
        cells = struct.unpack(">H", data[off + 3:off + 5])[0]
        right = struct.unpack(">I", data[off + 8:off + 12])[0]
        children = []
        base = off + 12
        if base + cells * 2 > self.usable:
            raise _BadPage(f"page {pgno}: cell count out of range")
        for i in range(cells):
            ptr = struct.unpack(">H", data[base + 2 * i:base + 2 * i + 2])[0]
            if ptr < base + 2 * cells or ptr + 4 > self.usable:
                raise _BadPage(f"page {pgno}: cell pointer out of range")
            children.append(struct.unpack(">I", data[ptr:ptr + 4])[0])
        children.append(right)
        for child in children:
            if child < 2 or child > self.page_count:
                raise _BadPage(f"page {pgno}: child page {child} out of range")
        return children

    def leaf_cells(self, pgno):
        """[(rowid, payload bytes or None when unreadable)] of a table leaf page."""
        data, off, kind = self.header_of(pgno)
        if kind != 0x0D:
            raise _BadPage(f"page {pgno} is not a table leaf page")
        cells = struct.unpack(">H", data[off + 3:off + 5])[0]
        base = off + 8
        if base + cells * 2 > self.usable:
            raise _BadPage(f"page {pgno}: cell count out of range")
        out = []
        usable = self.usable
        max_local = usable - 35
        min_local = ((usable - 12) * 32 // 255) - 23
        for i in range(cells):
            ptr = struct.unpack(">H", data[base + 2 * i:base + 2 * i + 2])[0]
            if ptr < base + 2 * cells or ptr >= usable:
                raise _BadPage(f"page {pgno}: cell pointer out of range")
            try:
                size, pos = _varint(data, ptr)
                rowid, pos = _varint(data, pos)
            except IndexError:
                raise _BadPage(f"page {pgno}: truncated cell") from None
            rowid = _signed64(rowid)
            if size <= max_local:
                local = size
            else:
                k = min_local + ((size - min_local) % (usable - 4))
                local = k if k <= max_local else min_local
            if pos + local > usable:
                raise _BadPage(f"page {pgno}: cell overflows the page")
            payload = data[pos:pos + local]
            if local < size:
                payload = self._overflow(data, pos + local, payload, size)
            out.append((rowid, payload))
        return out

    def _overflow(self, data, at, payload, size):
        if at + 4 > len(data):
            return None
        nxt = struct.unpack(">I", data[at:at + 4])[0]
        parts = [payload]
        have = len(payload)
        seen = set()
        while have < size:
            if nxt < 2 or nxt > self.page_count or nxt in seen:
                return None
            seen.add(nxt)
            try:
                page = self.page(nxt)
            except _BadPage:
                return None
            take = min(size - have, self.usable - 4)
            parts.append(page[4:4 + take])
            have += take
            nxt = struct.unpack(">I", page[:4])[0]
        return b"".join(parts)

    def freelist(self):
        """Page numbers on the freelist (empty when the header is unreadable)."""
        if not self.header_ok:
            return set()
        head = os.pread(self.fd, 100, 0)
        trunk = struct.unpack(">I", head[32:36])[0]
        pages = set()
        while trunk and trunk not in pages and len(pages) <= self.page_count:
            pages.add(trunk)
            try:
                data = self.page(trunk)
            except _BadPage:
                break
            nxt, count = struct.unpack(">II", data[:8])
            count = min(count, (self.usable - 8) // 4)
            for i in range(count):
                pages.add(struct.unpack(">I", data[8 + 4 * i:12 + 4 * i])[0])
            trunk = nxt
        return pages

    def walk_table(self, root):
        """(leaf pages, complete) of the table b-tree at `root`."""
        leaves, stack, seen, complete = [], [root], set(), True
        while stack:
            pgno = stack.pop()
            if pgno in seen:
                complete = False
                continue
            seen.add(pgno)
            try:
                _data, _off, kind = self.header_of(pgno)
                if kind == 0x0D:
                    leaves.append(pgno)
                elif kind == 0x05:
                    stack.extend(reversed(self.interior_children(pgno)))
                else:
                    complete = False
            except _BadPage:
                complete = False
        return leaves, complete


def decode_record(payload, encoding="utf-8"):
    """Values of an SQLite record; raises ValueError when the bytes do not form a valid record."""
    if payload is None:
        raise ValueError("unreadable payload")
    try:
        header_size, pos = _varint(payload, 0)
        if header_size < 1 or header_size > len(payload):
            raise ValueError("bad record header size")
        types = []
        while pos < header_size:
            serial, pos = _varint(payload, pos)
            types.append(serial)
    except IndexError:
        raise ValueError("truncated record header") from None
    if pos != header_size:
        raise ValueError("record header overrun")
    values = []
    body = header_size
    for serial in types:
        if serial == 0:
            values.append(None)
        elif 1 <= serial <= 6:
            width = (1, 2, 3, 4, 6, 8)[serial - 1]
            raw = payload[body:body + width]
            if len(raw) != width:
                raise ValueError("truncated integer")
            values.append(int.from_bytes(raw, "big", signed=True))
            body += width
        elif serial == 7:
            raw = payload[body:body + 8]
            if len(raw) != 8:
                raise ValueError("truncated real")
            values.append(struct.unpack(">d", raw)[0])
            body += 8
        elif serial in (8, 9):
            values.append(serial - 8)
        elif serial in (10, 11):
            raise ValueError("reserved serial type")
        else:
            length = (serial - 12) // 2 if serial % 2 == 0 else (serial - 13) // 2
            raw = payload[body:body + length]
            if len(raw) != length:
                raise ValueError("truncated text/blob")
            if serial % 2 == 0:
                values.append(bytes(raw))
            else:
                values.append(raw.decode(encoding))
            body += length
    if body != len(payload):
        raise ValueError("record length mismatch")
    return values


class _TableShape:
    """Columns of a table in the new database, to judge whether a raw record belongs to it."""

    def __init__(self, conn, name, info=None, exact=False):
        self.name = name
        self.exact = exact
        if info is None:
            info = conn.execute(f"PRAGMA table_info({_quote_ident(name)})").fetchall()
        self.columns = [r[1] for r in info]
        self.types = [(r[2] or "").upper() for r in info]
        self.notnull = [bool(r[3]) for r in info]
        self.has_default = [r[4] is not None for r in info]
        pks = [r for r in info if r[5]]
        self.alias = None
        if len(pks) == 1 and (pks[0][2] or "").upper() == "INTEGER":
            self.alias = self.columns.index(pks[0][1])

    def accepts(self, values):
        if not values or len(values) > len(self.columns) or (self.exact and len(values) != len(self.columns)):
            return False
        for i, col_type in enumerate(self.types):
            if i >= len(values):  # a column added later (ALTER TABLE ADD COLUMN): its default applies
                if self.notnull[i] and not self.has_default[i]:
                    return False
                continue
            value = values[i]
            if i == self.alias:
                if value is not None:
                    return False
                continue
            if value is None:
                if self.notnull[i]:
                    return False
                continue
            if "INT" in col_type:
                ok = isinstance(value, (int, float))
            elif "CHAR" in col_type or "CLOB" in col_type or "TEXT" in col_type:
                ok = isinstance(value, (str, bytes))
            elif "REAL" in col_type or "FLOA" in col_type or "DOUB" in col_type:
                ok = isinstance(value, (int, float))
            else:
                ok = True
            if not ok:
                return False
        return True

    def row(self, rowid, values):
        """Full row (padded), the rowid alias filled in."""
        full = list(values) + [None] * (len(self.columns) - len(values))
        if self.alias is not None:
            full[self.alias] = rowid
        return full


# --------------------------------------------------------------------------------------------
# recover


def copy_salvage(src, dst, chunk=1 << 16):
    """Byte copy of `src` that survives read errors: unreadable blocks become zeros.

    Returns the number of bytes that could not be read. `src` is opened read-only.
    """
    bad = 0
    try:
        src_fd = os.open(src, os.O_RDONLY)
    except OSError as exc:
        raise os_error(exc, src, "read") from None
    try:
        size = os.fstat(src_fd).st_size
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            offset = 0
            while offset < size:
                want = min(chunk, size - offset)
                try:
                    data = os.pread(src_fd, want, offset)
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    data = b"\x00" * want
                    bad += want
                if not data:
                    break
                os.write(dst_fd, data)
                offset += len(data)
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return bad


def load_migrations(directory):
    """[(name, sql)] of the `NNN_*.sql` files in `directory`, in order."""
    try:
        names = sorted((n for n in os.listdir(directory) if re.match(r"^\d+_.*\.sql$", n)),
                       key=lambda n: int(n.split("_", 1)[0]))
    except OSError as exc:
        raise os_error(exc, directory, "read") from None
    out = []
    for name in names:
        with open(os.path.join(directory, name)) as handle:
            out.append((name, handle.read()))
    if not out:
        raise DataSafetyError(f"{directory}: no migration files (NNN_name.sql)", "missing")
    return out


def _read_master(conn):
    rows = conn.execute("SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master").fetchall()
    return [{"type": r[0], "name": r[1], "tbl_name": r[2], "rootpage": r[3], "sql": r[4]} for r in rows]


def _expected_count(conn, table, indexes):
    """Rows the table had, read through the table b-tree or any index that still reads."""
    counts = []
    for clause in ["NOT INDEXED"] + [f"INDEXED BY {_quote_ident(i)}" for i in indexes]:
        try:
            counts.append(conn.execute(f"SELECT count(*) FROM {_quote_ident(table)} {clause}").fetchone()[0])
        except sqlite3.Error:
            continue
    return max(counts) if counts else None


class _Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds if seconds else None

    def passed(self):
        return self.end is not None and time.monotonic() > self.end


def _salvage_sql(src, dst, table, shape, report, batch, deadline):
    """Pass 1: copy the rows of `table` that read through SQL, rowid range by rowid range."""
    cols = ", ".join(_quote_ident(c) for c in shape.columns)
    qt = _quote_ident(table)
    select = f"SELECT _rowid_, {cols} FROM {qt} NOT INDEXED WHERE _rowid_ >= ? ORDER BY _rowid_ LIMIT ?"
    probe = f"SELECT _rowid_ FROM {qt} NOT INDEXED WHERE _rowid_ >= ? ORDER BY _rowid_ LIMIT 1"
    if shape.alias is not None:
        insert = "INSERT OR IGNORE INTO {} ({}) VALUES ({})".format(qt, cols, ", ".join("?" * len(shape.columns)))
    else:
        insert = "INSERT OR IGNORE INTO {} (_rowid_, {}) VALUES ({})".format(
            qt, cols, ", ".join("?" * (len(shape.columns) + 1)))

    def fetch(start, limit):
        try:
            return src.execute(select, (start, limit)).fetchall()
        except sqlite3.DatabaseError as exc:
            if len(report["errors"]) < 5:
                report["errors"].append(str(exc))
            return None

    def first_rowid(start):
        """(True, rowid or None at end) when navigation from `start` works, else (False, None)."""
        try:
            row = src.execute(probe, (start,)).fetchone()
        except sqlite3.DatabaseError:
            return False, None
        return True, (row[0] if row else None)

    def store(rows):
        for row in rows:
            values = list(row[1:]) if shape.alias is not None else list(row)
            cur = dst.execute(insert, values)
            if cur.rowcount == 1:
                report["saved_sql"] += 1
                report["_rowids"].add(row[0])
            else:
                report["rejected"] += 1

    cursor = MIN_INT64
    slow = 0
    while cursor <= MAX_INT64:
        if deadline.passed():
            report["complete"] = False
            report["errors"].append("stopped: time limit reached")
            return
        rows = fetch(cursor, 1 if slow else batch)
        if rows is not None:
            if not rows:
                return
            store(rows)
            slow = max(0, slow - len(rows))
            cursor = rows[-1][0] + 1
            continue
        report["complete"] = False
        if not slow:
            slow = batch  # read the next rows one by one to save those before the bad spot
            continue
        works, rowid = first_rowid(cursor)
        if works:
            if rowid is None:
                return
            report["lost_rows"].append(rowid)  # this row's content does not read
            cursor = rowid + 1
            continue
        # Navigation fails from here: skip ahead exponentially, then bisect back to the first start
        # that reads again. Everything in between is an unreadable range.
        step, good = 1, None
        while True:
            target = min(MAX_INT64, cursor + step)
            if first_rowid(target)[0]:
                good = target
                break
            if target == MAX_INT64:
                break
            step *= 2
        if good is None:
            report["skipped_ranges"].append([cursor, MAX_INT64])
            return
        lo, hi = cursor, good
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if first_rowid(mid)[0]:
                hi = mid
            else:
                lo = mid
        report["skipped_ranges"].append([cursor, hi - 1])
        cursor = hi


def _create_schema_from_master(dst, master):
    created = []
    for entry in master:
        if entry["type"] != "table" or not entry["sql"] or entry["name"].startswith("sqlite_"):
            continue
        dst.execute(entry["sql"])
        created.append(entry["name"])
    return created


def _create_schema_from_migrations(dst, migrations):
    for _name, sql in migrations:
        dst.executescript(sql)
    dst.execute(SCHEMA_MIGRATIONS_DDL)
    stamp = time.time()
    for name, sql in migrations:
        dst.execute(
            "INSERT OR REPLACE INTO schema_migrations(version, name, checksum, applied_at) VALUES (?,?,?,?)",
            (name.split("_", 1)[0], name, hashlib.sha256(sql.encode("utf-8")).hexdigest(), stamp))
    return user_tables(dst)


def recover_database(src, dest, migrations=None, batch=500, max_seconds=None, force=False, progress=None):
    """Salvage what still reads from the (corrupt) database `src` into a new database `dest`.

    `src` is never opened for writing: the work happens on a private copy. The schema comes from
    the copy's sqlite_master, or from `migrations` ([(name, sql)]) when that is unreadable (then
    `schema_migrations` is filled in as halswarm's migrator would). The result is 0600, passes
    integrity_check and gets a `.sha256` sidecar, so `restore_database(dest, db)` accepts it.

    Returns schema_source, tables {name: saved, saved_sql, saved_pages, expected, lost,
    lost_rows, skipped_ranges, complete, errors}, totals, integrity and notes.
    """
    started = time.monotonic()
    src = os.path.abspath(src)
    dest = os.path.abspath(dest)
    deadline = _Deadline(max_seconds)
    try:
        st = os.stat(src)
    except OSError as exc:
        raise os_error(exc, src, "read") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataSafetyError(f"{src}: not a regular file", "invalid")
    if st.st_size == 0:
        raise DataSafetyError(f"{src}: empty file, not an SQLite database", "not_sqlite")
    if os.path.exists(dest) and not force:
        raise DataSafetyError(f"{dest} already exists (choose another destination)", "exists")
    dest_dir = os.path.dirname(dest)
    if not os.path.isdir(dest_dir):
        raise DataSafetyError(f"{dest_dir}: destination directory does not exist", "missing")
    notes = []
    try:
        work = tempfile.mkdtemp(prefix=".hal-recover-", dir=dest_dir)
    except OSError as exc:
        raise os_error(exc, dest_dir, "write") from None
    tmp = None
    source = None
    linked = False
    try:
        os.chmod(work, DIR_MODE)
        copy = os.path.join(work, "work.db")
        unread = copy_salvage(src, copy)
        if unread:
            notes.append(f"{unread} bytes of {src} could not be read (I/O errors) and were zero-filled")
        for suffix in ("-wal", "-journal"):
            if os.path.exists(src + suffix) and os.path.getsize(src + suffix) > 0:
                copy_salvage(src + suffix, copy + suffix)
        wal_applied = _fold_journal(copy, notes)
        with open(copy, "rb") as handle:
            header_ok = handle.read(16) == SQLITE_MAGIC
        if not header_ok:
            if not _has_table_pages(copy):
                raise DataSafetyError(f"{src}: not an SQLite database (no SQLite header and no table pages)",
                                      "not_sqlite")
            notes.append("the file header is damaged (no SQLite magic); rows come from raw pages only")
        source, master, master_source = _open_schema(copy, header_ok, notes)
        tmp_fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix="." + os.path.basename(dest) + ".", suffix=".tmp")
        os.fchmod(tmp_fd, FILE_MODE)
        os.close(tmp_fd)
        result = _recover_into(copy, source, master, master_source, tmp, migrations, batch, deadline, notes,
                               progress)
        result["wal_applied"] = wal_applied
        fsync_file(tmp)
        drop_clean_marker(dest)
        if force and os.path.exists(dest):
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    raise DataSafetyError(f"{dest} already exists (choose another destination)", "exists") from None
                raise
        linked = True
        fsync_dir(dest_dir)
        result["sha256"] = write_sidecar(dest)
    except sqlite3.Error as exc:
        if linked:
            _unlink_quiet(dest)
        raise _sqlite_error(exc, dest, "write the recovered database") from None
    except OSError as exc:
        if linked:
            _unlink_quiet(dest)
        raise os_error(exc, dest_dir, "write the recovered database") from None
    except DataSafetyError:
        if linked:
            _unlink_quiet(dest)
        raise
    finally:
        if tmp:
            _unlink_quiet(tmp)
        if source is not None:
            source.close()
        shutil.rmtree(work, ignore_errors=True)
    result.update({"src": src, "dest": dest, "notes": notes, "duration": round(time.monotonic() - started, 3),
                   "checksum_file": sidecar_path(dest)})
    return result


def _has_table_pages(path):
    """Whether a file without the SQLite header still holds table pages with readable records."""
    try:
        pager = RawPages(path)
    except OSError:
        return False
    try:
        return any(_decoded(pager, pgno) for pgno in range(2, min(pager.page_count, 4000) + 1))
    finally:
        pager.close()


def _fold_journal(copy, notes):
    """Apply the copy's WAL (or roll back its hot journal) and make it a DELETE-mode file."""
    if not (os.path.exists(copy + "-wal") or os.path.exists(copy + "-journal")):
        return None
    try:
        conn = sqlite3.connect(copy, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            conn.execute("PRAGMA journal_mode=DELETE").fetchall()
        finally:
            conn.close()
        return True
    except sqlite3.Error as exc:
        notes.append(f"the write-ahead log could not be applied ({exc}); its changes are not recovered")
        return False


def _open_schema(copy, header_ok, notes):
    """(SQL connection or None, sqlite_master entries or None, how they were read).

    Tried in turn: plain SQL; SQL with writable_schema (tolerates a schema that points at missing
    pages, e.g. a truncated file); the raw b-tree of page 1 (no SQL access to the tables then).
    """
    if header_ok:
        for writable in (False, True):
            conn = None
            try:
                conn = connect_ro(copy)
                conn.execute("PRAGMA cell_size_check=ON")
                if writable:
                    conn.execute("PRAGMA writable_schema=ON")
                master = _read_master(conn)
                conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()
                if writable:
                    notes.append("the schema only reads with writable_schema (it points at damaged or missing pages)")
                return conn, master, "sqlite_master"
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                if not writable:
                    notes.append(f"sqlite_master is unreadable through SQL ({exc})")
    try:
        pager = RawPages(copy)
    except OSError:
        return None, None, None
    try:
        entries = []
        leaves, _complete = pager.walk_table(1) if pager.header_ok else ([], False)
        for pgno in leaves:
            for _rowid, values in _decoded(pager, pgno):
                if (len(values) == 5 and values[0] in ("table", "index", "view", "trigger")
                        and isinstance(values[1], str) and isinstance(values[2], str)
                        and isinstance(values[3], int) and (values[4] is None or isinstance(values[4], str))):
                    entries.append({"type": values[0], "name": values[1], "tbl_name": values[2],
                                    "rootpage": values[3], "sql": values[4]})
    finally:
        pager.close()
    if any(e["type"] == "table" and e["sql"] for e in entries):
        notes.append("the schema was read from the raw pages of sqlite_master")
        return None, entries, "sqlite_master (raw pages)"
    return None, None, None


def _recover_into(copy, source, master, master_source, tmp, migrations, batch, deadline, notes, progress):
    dst = sqlite3.connect(tmp, isolation_level=None)
    try:
        dst.execute("PRAGMA journal_mode=DELETE")
        dst.execute("PRAGMA synchronous=OFF")
        if master is not None:
            schema_source = master_source
            tables = _create_schema_from_master(dst, master)
        elif migrations:
            schema_source = "migrations"
            tables = _create_schema_from_migrations(dst, migrations)
        else:
            raise DataSafetyError(f"{copy}: sqlite_master is unreadable and no schema (migration files) was given",
                                  "corrupt")
        shapes = dict((t, _TableShape(dst, t)) for t in tables)
        reports = {}
        for table in tables:
            reports[table] = {"saved": 0, "saved_sql": 0, "saved_pages": 0, "expected": None, "lost": None,
                              "lost_rows": [], "skipped_ranges": [], "complete": True, "errors": [],
                              "rejected": 0, "_rowids": set()}
        # Pass 1: SQL, table by table.
        if master is not None and source is not None:
            index_names = {}
            for entry in master:
                if entry["type"] == "index":
                    index_names.setdefault(entry["tbl_name"], []).append(entry["name"])
            for n, table in enumerate(tables):
                rep = reports[table]
                rep["expected"] = _expected_count(source, table, index_names.get(table, []))
                dst.execute("BEGIN")
                try:
                    _salvage_sql(source, dst, table, shapes[table], rep, batch, deadline)
                finally:
                    dst.execute("COMMIT")
                if progress is not None:
                    progress("sql", n + 1, len(tables))
        else:
            for rep in reports.values():
                rep["complete"] = False
        # Pass 2: raw pages, for the tables the SQL pass could not read completely.
        incomplete = [t for t in tables if not reports[t]["complete"]]
        if schema_source == "migrations" and "schema_migrations" in incomplete:
            incomplete.remove("schema_migrations")  # rebuilt from the migration files
            reports["schema_migrations"]["complete"] = True
            reports["schema_migrations"]["saved_sql"] = dst.execute(
                "SELECT count(*) FROM schema_migrations").fetchone()[0]
        pages_report = {"scanned": 0, "orphan_leaves": 0, "assigned": 0, "unassigned": 0, "empty": 0}
        if incomplete:
            _salvage_pages(copy, master, dst, shapes, reports, incomplete, pages_report, deadline, notes)
        # Sequences, indexes, views, triggers.
        if source is not None and master is not None:
            _copy_sequences(source, dst, notes)
            for entry in master:
                if entry["type"] in ("index", "view", "trigger") and entry["sql"]:
                    try:
                        dst.execute(entry["sql"])
                    except sqlite3.Error as exc:
                        notes.append("could not recreate {} {}: {}".format(entry["type"], entry["name"], exc))
        problems = integrity_problems(dst)
        if problems:
            raise DataSafetyError(f"{tmp}: the recovered database fails integrity_check: {problems[0]}",
                                  "corrupt")
        try:
            fk = len(dst.execute("PRAGMA foreign_key_check").fetchall())
        except sqlite3.Error:
            fk = None
        totals = {"saved": 0, "lost": 0, "lost_unknown_tables": []}
        out_tables = {}
        for table in tables:
            rep = reports[table]
            rowids = rep.pop("_rowids")
            rep["saved"] = dst.execute(f"SELECT count(*) FROM {_quote_ident(table)}").fetchone()[0]
            if rep["expected"] is not None and rep["expected"] >= rep["saved"]:
                rep["lost"] = rep["expected"] - rep["saved"]
            elif rep["complete"] and not rep["lost_rows"] and not rep["skipped_ranges"]:
                rep["lost"] = 0
            elif shapes[table].alias is not None and rowids:
                # AUTOINCREMENT-style ids: ids missing between the lowest and highest saved one.
                rep["lost_estimate_from_id_gaps"] = (max(rowids) - min(rowids) + 1) - len(rowids)
            rep["lost_rows"] = rep["lost_rows"][:100]
            rep["skipped_ranges"] = [[None if lo == MIN_INT64 else lo, None if hi == MAX_INT64 else hi]
                                     for lo, hi in rep["skipped_ranges"][:100]]  # None: open end
            totals["saved"] += rep["saved"]
            if rep["lost"] is None:
                totals["lost_unknown_tables"].append(table)
            else:
                totals["lost"] += rep["lost"]
            out_tables[table] = rep
        dst.execute("PRAGMA journal_mode=DELETE")
        return {"schema_source": schema_source, "tables": out_tables, "totals": totals, "pages": pages_report,
                "integrity": "ok", "foreign_key_violations": fk, "changed": True}
    finally:
        dst.close()


def _copy_sequences(source, dst, notes):
    try:
        rows = source.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
    except sqlite3.Error as exc:
        if "no such table" not in str(exc):
            notes.append(f"sqlite_sequence is unreadable ({exc}); AUTOINCREMENT counters restart from the saved rows")
        return
    for name, seq in rows:
        try:
            cur = dst.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, name))
            if cur.rowcount == 0:
                dst.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (name, seq))
        except sqlite3.Error:
            continue


def _salvage_pages(copy, master, dst, shapes, reports, incomplete, pages_report, deadline, notes):
    """Pass 2: rows from intact table leaf pages (walked from each table's root, or orphans
    attributed by the shape of their records)."""
    try:
        pager = RawPages(copy)
    except OSError as exc:
        notes.append(f"raw page scan impossible: {exc}")
        return
    try:
        roots = {}
        if master is not None:
            for entry in master:
                if entry["type"] == "table" and entry["rootpage"]:
                    roots[entry["name"]] = entry["rootpage"]
            roots.setdefault("sqlite_master", 1)
        owned = {}
        for name, root in roots.items():
            leaves, _complete = pager.walk_table(root)
            for leaf in leaves:
                owned[leaf] = name
        free = pager.freelist()
        orphans = []
        for pgno in range(1, pager.page_count + 1):
            if deadline.passed():
                notes.append("raw page scan stopped: time limit reached")
                break
            if pgno in owned or pgno in free:
                continue
            try:
                data = pager.page(pgno)
            except _BadPage:
                continue
            if data[100 if pgno == 1 else 0] == 0x0D:
                orphans.append(pgno)
        pages_report["scanned"] = pager.page_count
        pages_report["orphan_leaves"] = len(orphans)
        # An orphan page goes to a table only when its records fit that table and no other one
        # (complete tables and sqlite_master's own shape included), so rows never land in the wrong table.
        everyone = [*shapes.values(), _MASTER_SHAPE]
        work = [(pgno, owned[pgno]) for pgno in sorted(owned) if owned[pgno] in incomplete]
        ambiguous = set()
        for pgno in orphans:
            rows = _decoded(pager, pgno)
            if not rows:
                pages_report["empty"] += 1
                continue
            fits = [s for s in everyone if all(s.accepts(values) for _rowid, values in rows)]
            if len(fits) == 1 and fits[0].name in incomplete:
                pages_report["assigned"] += 1
                work.append((pgno, fits[0].name))
            else:
                pages_report["unassigned"] += 1
                if len(fits) > 1:
                    ambiguous.add(" / ".join(sorted(s.name for s in fits)))
        for names in sorted(ambiguous):
            notes.append(f"leaf pages whose rows fit several tables were left out ({names})")
        dst.execute("BEGIN")
        try:
            for pgno, table in work:
                shape = shapes[table]
                rep = reports[table]
                qt = _quote_ident(table)
                cols = ", ".join(_quote_ident(c) for c in shape.columns)
                marks = ", ".join("?" * len(shape.columns))
                for rowid, values in _decoded(pager, pgno, keep_bad=True):
                    if values is None or not shape.accepts(values):
                        continue
                    if rowid in rep["_rowids"]:
                        continue
                    if shape.alias is not None:
                        sql = f"INSERT OR IGNORE INTO {qt} ({cols}) VALUES ({marks})"
                        params = shape.row(rowid, values)
                    else:
                        sql = f"INSERT OR IGNORE INTO {qt} (_rowid_, {cols}) VALUES (?, {marks})"
                        params = [rowid, *shape.row(rowid, values)]
                    try:
                        cur = dst.execute(sql, params)
                    except sqlite3.Error:
                        continue
                    if cur.rowcount == 1:
                        rep["saved_pages"] += 1
                        rep["_rowids"].add(rowid)
                    else:
                        rep["rejected"] += 1
        finally:
            dst.execute("COMMIT")
    finally:
        pager.close()


# The shape of sqlite_master's records (type, name, tbl_name, rootpage, sql), so that its pages are
# never mistaken for a table's.
_MASTER_SHAPE = _TableShape(None, "sqlite_master", info=[
    (0, "type", "TEXT", 1, None, 0), (1, "name", "TEXT", 1, None, 0), (2, "tbl_name", "TEXT", 1, None, 0),
    (3, "rootpage", "INTEGER", 0, None, 0), (4, "sql", "TEXT", 0, None, 0)], exact=True)


def _decoded(pager, pgno, keep_bad=False):
    try:
        cells = pager.leaf_cells(pgno)
    except _BadPage:
        return []
    out = []
    for rowid, payload in cells:
        try:
            out.append((rowid, decode_record(payload, pager.encoding)))
        except (ValueError, UnicodeDecodeError):
            if keep_bad:
                out.append((rowid, None))
    return out
