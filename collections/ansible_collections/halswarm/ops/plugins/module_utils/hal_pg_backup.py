# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""Backup, restore and restore test of a supervisor store on PostgreSQL, with PostgreSQL's own tools
(`pg_dump -Fc`, `pg_restore`, `psql`); also the command line that the supervisor role's timers run
(`python3 hal_pg_backup.py backup|restore-test ...`).

Same directory layout as the SQLite backups: `<prefix>-<UTC timestamp>.pgdump`, mode 0600, with a
`<file>.sha256` sidecar in sha256sum format, retention by count and age (the newest is never removed).

Credentials: the URL never holds a password (refused, as the supervisor refuses one in storage.url). The
password is read from a file (the supervisor's storage.password_file) or given by the caller, written to a
private libpq passfile (0600 in a 0700 temp directory, removed afterwards) and named by PGPASSFILE in the
environment of the tools: it is never on a command line. Every message is redacted by the password's value.

Restore goes into an empty database; a database holding any relation is refused unless forced (then
`pg_restore --clean --if-exists` drops and replaces the objects the dump holds). Always one transaction
(`--single-transaction --exit-on-error`) without owners and grants (`--no-owner --no-privileges`), so
the restoring role owns what it restores.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from urllib.parse import unquote, urlsplit

if __package__:  # imported: shipped by Ansible with a module, or loaded by the tests
    from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_backup import (
        DEFAULT_HIGH,
        DEFAULT_LOW,
        DEFAULT_MIN_HISTORY,
        DEFAULT_WINDOW,
        apply_retention,
        backup_status,
        list_backups,
        parse_backup_name,
        size_anomaly,
        write_status,
    )
    from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (
        DIR_MODE,
        FILE_MODE,
        DataSafetyError,
        _iso,
        _ts,
        _unlink_quiet,
        count_changes,
        fsync_dir,
        fsync_file,
        os_error,
        read_sidecar,
        sha256_file,
        sidecar_path,
        utcnow,
        write_sidecar,
    )
    from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_restore_test import (
        DEFAULT_APPEND_ONLY,
        RESULT_VERSION,
        compare_counts,
        counts_table,
        write_result,
    )
else:  # run as a script by the timers: the sibling files installed beside it
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from hal_sqlite_backup import (
        DEFAULT_HIGH,
        DEFAULT_LOW,
        DEFAULT_MIN_HISTORY,
        DEFAULT_WINDOW,
        apply_retention,
        backup_status,
        list_backups,
        parse_backup_name,
        size_anomaly,
        write_status,
    )
    from hal_sqlite_common import (
        DIR_MODE,
        FILE_MODE,
        DataSafetyError,
        _iso,
        _ts,
        _unlink_quiet,
        count_changes,
        fsync_dir,
        fsync_file,
        os_error,
        read_sidecar,
        sha256_file,
        sidecar_path,
        utcnow,
        write_sidecar,
    )
    from hal_sqlite_restore_test import (
        DEFAULT_APPEND_ONLY,
        RESULT_VERSION,
        compare_counts,
        counts_table,
        write_result,
    )

PG_SUFFIX = ".pgdump"
PG_SCHEMES = ("postgresql", "postgres")
# <prefix>-<UTC YYYYmmddTHHMMSSZ>[-<n>].pgdump
PG_BACKUP_NAME_RE = re.compile(r"^(?P<prefix>.+)-(?P<ts>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?\.pgdump$")
DEFAULT_TIMEOUT = 3600
# pg_dump's custom format starts with these five bytes.
PGDMP_MAGIC = b"PGDMP"

# Rows per table of the current schema, counted server-side (identifiers quoted by format(%I)).
_COUNT_SQL = (
    "SELECT c.relname, (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', "
    "n.nspname, c.relname), false, true, '')))[1]::text FROM pg_class c JOIN pg_namespace n "
    "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() ORDER BY 1"
)
# Every user relation in any schema: a database holding one is not empty.
_RELATIONS_SQL = (
    "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' ORDER BY 1"
)


# --------------------------------------------------------------------------------------------
# the target: URL without a password, the password from a file or the caller


def parse_pg_url(url, what="url"):
    """Check a postgresql:// URL (no password, a database name); returns (url, display) or raises."""
    text = str(url or "").strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in PG_SCHEMES:
        raise DataSafetyError(f"{what}: not a postgresql:// URL", "input")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise DataSafetyError(f"{what}: {exc}", "input") from None
    if parts.password is not None:
        raise DataSafetyError(f"{what} must not contain a password: give a password file", "input")
    if not parts.path.strip("/"):
        raise DataSafetyError(f"{what}: postgresql://... needs a database name (postgresql://user@host/db)", "input")
    user = f"{unquote(parts.username)}@" if parts.username else ""
    display = f"postgresql://{user}{parts.hostname or '(socket)'}{f':{port}' if port else ''}{parts.path}"
    return text, display


def database_identity(url):
    """(host, port, dbname) of a URL, to tell two databases apart."""
    parts = urlsplit(url)
    return ((parts.hostname or "").lower(), parts.port or 5432, unquote(parts.path.strip("/")))


def read_password_file(path):
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    if not value:
        raise DataSafetyError(f"{path}: the password file is empty", "input")
    return value


def _pgpass_escape(value):
    return value.replace("\\", "\\\\").replace(":", "\\:")


class PgTools:
    """Runs pg_dump / pg_restore / psql with a private passfile; use as a context manager."""

    def __init__(self, password=None, bindir=None, timeout=DEFAULT_TIMEOUT):
        self.password = password or None
        self.bindir = bindir or None
        self.timeout = timeout
        self._dir = None
        self.env = None

    def __enter__(self):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "PGCONNECT_TIMEOUT": "10",
               "HOME": os.environ.get("HOME", "/nonexistent")}
        for key in ("PGSSLROOTCERT", "PGSSLMODE", "PGAPPNAME"):
            if os.environ.get(key):
                env[key] = os.environ[key]
        if self.password is not None:
            self._dir = tempfile.mkdtemp(prefix="hal-pgpass-")  # 0700
            passfile = os.path.join(self._dir, "pgpass")
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(f"*:*:*:*:{_pgpass_escape(self.password)}\n")
            env["PGPASSFILE"] = passfile
        self.env = env
        return self

    def __exit__(self, *exc):
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def redact(self, text):
        text = str(text)
        if self.password:
            text = text.replace(self.password, "********")
        return text

    def tool(self, name):
        if self.bindir:
            path = os.path.join(self.bindir, name)
        else:
            path = shutil.which(name, path=self.env["PATH"]) if self.env else shutil.which(name)
        if not path or not os.access(path, os.X_OK):
            raise DataSafetyError(f"{name} not found (install the postgresql-client package)", "missing")
        return path

    def run(self, name, args, what):
        argv = [self.tool(name), *args]
        try:
            proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=self.timeout,
                                  check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DataSafetyError(f"{what}: {name} took longer than {self.timeout} s", "timeout") from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
            detail = "; ".join(lines[-3:]) or f"exit code {proc.returncode}"
            raise DataSafetyError(self.redact(f"{what} failed: {detail}")[:800], "pg")
        return proc.stdout

    def query(self, url, sql, what):
        out = self.run("psql", ["-X", "-w", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                                f"--dbname={url}", "-c", sql], what)
        return [line.split("\t") for line in out.splitlines() if line]

    def row_counts(self, url, display):
        rows = self.query(url, _COUNT_SQL, f"{display}: counting rows")
        return {name: int(n) if n.isdigit() else None for name, n in ((r[0], r[1] if len(r) > 1 else "") for r in rows)}

    def relations(self, url, display):
        return [r[0] for r in self.query(url, _RELATIONS_SQL, f"{display}: listing relations")]


# --------------------------------------------------------------------------------------------
# names, listing, retention


def pg_backup_name(prefix, moment=None, n=0):
    return f"{prefix}-{_ts(moment)}{f'-{n}' if n else ''}{PG_SUFFIX}"


def parse_pg_backup_name(name):
    return parse_backup_name(name, PG_BACKUP_NAME_RE)


def list_pg_backups(directory, prefix=None):
    """pg_dump backups in `directory` (newest first): name, path, created, size, has_checksum."""
    return list_backups(directory, prefix, parse_pg_backup_name)


def apply_pg_retention(directory, prefix, keep=0, max_age_days=0, now=None, protect=(), dry_run=False):
    return apply_retention(directory, prefix, keep, max_age_days, now, protect, dry_run, parse_pg_backup_name)


def _ensure_dir(directory):
    try:
        os.makedirs(directory, mode=DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, directory, "create") from None


def _link_no_clobber(tmp, directory, prefix, moment):
    for n in range(0, 1000):
        final = os.path.join(directory, pg_backup_name(prefix, moment, n))
        try:
            os.link(tmp, final)
            return final
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    raise DataSafetyError(f"{directory}: no free backup name for {prefix}", "exists")


# --------------------------------------------------------------------------------------------
# backup


def archive_tables(tools, path):
    """Tables whose data the archive holds (`pg_restore --list`); also proves the archive is readable."""
    listing = tools.run("pg_restore", ["--list", path], f"{path}: reading the archive")
    tables = []
    for line in listing.splitlines():
        if line.startswith(";") or " TABLE DATA " not in line:
            continue
        # "<id>; <oid> <oid> TABLE DATA <schema> <name> <owner>"
        fields = line.split(" TABLE DATA ", 1)[1].split()
        if len(fields) >= 2:
            tables.append(fields[1])
    return sorted(tables)


def check_archive_file(path):
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(PGDMP_MAGIC))
        size = os.path.getsize(path)
    except OSError as exc:
        raise os_error(exc, path, "read") from None
    if head != PGDMP_MAGIC:
        raise DataSafetyError(f"{path}: not a pg_dump custom-format archive", "not_a_backup")
    return size


def backup_pg(url, dest_dir, prefix="supervisor", password=None, bindir=None, timeout=DEFAULT_TIMEOUT):
    """`pg_dump -Fc` of the database at `url` into `dest_dir` (0600, sha256 sidecar, no-clobber name).

    pg_dump reads one consistent snapshot (a repeatable-read transaction) while the supervisors keep
    writing. Returns path, name, size, sha256, checksum_file, tables (with data in the archive), duration,
    created, source (the URL without password).
    """
    url, display = parse_pg_url(url)
    started = time.monotonic()
    _ensure_dir(dest_dir)
    moment = utcnow()
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{prefix}-", suffix=".pgdump.tmp")
    os.close(fd)
    final = None
    try:
        os.chmod(tmp, FILE_MODE)
        with PgTools(password, bindir, timeout) as tools:
            tools.run("pg_dump", ["-w", "-Fc", f"--dbname={url}", "-f", tmp], f"{display}: pg_dump")
            check_archive_file(tmp)
            tables = archive_tables(tools, tmp)
        fsync_file(tmp)
        final = _link_no_clobber(tmp, dest_dir, prefix, moment)
        _unlink_quiet(tmp)
        fsync_dir(dest_dir)
        digest = write_sidecar(final)
        size = os.path.getsize(final)
    except OSError as exc:
        _discard(tmp, final)
        raise os_error(exc, dest_dir, "write") from None
    except BaseException:
        _discard(tmp, final)
        raise
    return {"path": final, "name": os.path.basename(final), "prefix": prefix, "source": display, "size": size,
            "sha256": digest, "checksum_file": sidecar_path(final), "tables": tables, "format": "custom",
            "duration": round(time.monotonic() - started, 3), "created": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _discard(tmp, final):
    _unlink_quiet(tmp)
    if final:
        _unlink_quiet(final)
        _unlink_quiet(sidecar_path(final))


# --------------------------------------------------------------------------------------------
# verify and restore


def verify_pg_backup(path, tools, require_checksum=True):
    """Header, sha256 against the sidecar, readable table of contents; raises DataSafetyError."""
    size = check_archive_file(path)
    expected = read_sidecar(path)
    digest = sha256_file(path)
    if expected is None:
        if require_checksum:
            raise DataSafetyError(f"{path}: no checksum file {os.path.basename(sidecar_path(path))}; "
                                  "cannot tell whether the backup is intact", "checksum")
    elif expected != digest:
        raise DataSafetyError(f"{path}: checksum mismatch (expected {expected[:12]}, found {digest[:12]}): "
                              "the file changed after the backup was taken", "checksum")
    tables = archive_tables(tools, path)
    return {"path": path, "size": size, "sha256": digest, "checksum": "ok" if expected else "missing",
            "tables": tables}


def restore_pg(src, url, password=None, force=False, require_checksum=True, check_only=False, bindir=None,
               timeout=DEFAULT_TIMEOUT):
    """Restore a `pg_dump -Fc` backup into the database at `url`.

    The database must be empty (no user relation in any schema); a non-empty one is refused unless
    `force`, which drops and replaces every object the dump holds (`--clean --if-exists`). With
    `check_only` nothing changes: the backup is verified and the refusal (if any) raised.
    Returns verified backup facts, `before`/`after` row counts, `changes`, `forced`, `replaced_relations`.
    """
    url, display = parse_pg_url(url)
    started = time.monotonic()
    with PgTools(password, bindir, timeout) as tools:
        verified = verify_pg_backup(src, tools, require_checksum)
        existing = tools.relations(url, display)
        if existing and not force:
            shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
            raise DataSafetyError(
                f"{display} is not empty ({len(existing)} relations: {shown}): restoring into it would mix "
                "the backup with the rows it holds, so nothing was restored. Restore into a new empty database "
                "(createdb -O <role> <name>), or force it (hal_restore_force=true / force: true), which drops "
                "and replaces every object the backup holds.", "not_empty")
        before = tools.row_counts(url, display) if existing else {}
        result = {"backup": verified, "target": display, "forced": bool(existing and force),
                  "replaced_relations": len(existing) if force else 0, "before": before}
        if check_only:
            result.update(after=None, changes=count_changes(before, None), duration=0.0)
            return result
        args = ["-w", "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
                f"--dbname={url}"]
        if existing:
            args[1:1] = ["--clean", "--if-exists"]
        tools.run("pg_restore", [*args, src], f"{display}: pg_restore of {os.path.basename(src)}")
        after = tools.row_counts(url, display)
    result.update(after=after, changes=count_changes(before, after),
                  duration=round(time.monotonic() - started, 3))
    return result


# --------------------------------------------------------------------------------------------
# restore test into a scratch database


def restore_test_pg(backup_dir, live_url, scratch_url, prefix=None, password=None, bindir=None,
                    append_only=DEFAULT_APPEND_ONLY, window=DEFAULT_WINDOW, low=DEFAULT_LOW, high=DEFAULT_HIGH,
                    min_history=DEFAULT_MIN_HISTORY, now=None, timeout=DEFAULT_TIMEOUT):
    """Restore the newest checksummed backup into the scratch database (emptied of what a previous test
    restored: `--clean --if-exists`), compare its row counts with the live database; the verdict has the
    shape of the SQLite restore test's (restore-test.json). Never raises for a bad backup."""
    started = time.monotonic()
    moment = time.time() if now is None else now
    result = {"version": RESULT_VERSION, "time": _iso(moment), "timestamp": round(moment, 3), "backup": None,
              "backup_size": None, "backup_created": None, "ok": False, "status": "failed", "reasons": [],
              "duration": 0.0, "counts": {}, "size_anomaly": None, "engine": "postgresql"}
    reasons = result["reasons"]
    try:
        live_url, live_display = parse_pg_url(live_url, "live database URL")
        scratch_url, scratch_display = parse_pg_url(scratch_url, "scratch database URL")
        if database_identity(live_url) == database_identity(scratch_url):
            raise DataSafetyError(f"the scratch database {scratch_display} is the live database: refused", "input")
        backups = [b for b in list_pg_backups(backup_dir, prefix) if b["has_checksum"]]
        if not backups:
            reasons.append(f"{backup_dir}: no pg_dump backup with a checksum file to test")
        else:
            newest = backups[0]
            result.update(backup=newest["name"], backup_size=newest["size"], backup_created=newest["created"],
                          scratch=scratch_display)
            result["size_anomaly"] = size_anomaly(newest["size"], [b["size"] for b in backups[1:]], window, low,
                                                  high, min_history)
            with PgTools(password, bindir, timeout) as tools:
                verify_pg_backup(newest["path"], tools)
                tools.run("pg_restore", ["-w", "--no-owner", "--no-privileges", "--single-transaction",
                                         "--exit-on-error", "--clean", "--if-exists", f"--dbname={scratch_url}",
                                         newest["path"]], f"{scratch_display}: pg_restore of {newest['name']}")
                counts = tools.row_counts(scratch_url, scratch_display)
                live = tools.row_counts(live_url, live_display)
            result["counts"] = counts_table(counts, live)
            reasons.extend(compare_counts(counts, live, append_only))
    except DataSafetyError as exc:
        reasons.append(exc.message)
    except Exception as exc:  # a restore test reports, it never dies with a traceback
        reasons.append(f"{type(exc).__name__}: {exc}")
    if password:
        result["reasons"] = [r.replace(password, "********") for r in reasons]
    result["reasons"] = [" ".join(str(r).split())[:500] for r in result["reasons"]]
    result["ok"] = not result["reasons"]
    result["status"] = "ok" if result["ok"] else "failed"
    result["duration"] = round(time.monotonic() - started, 3)
    return result


# --------------------------------------------------------------------------------------------
# command line (the supervisor role's timers run this file with the host's python3)


def _cli(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="hal_pg_backup.py", description="HAL-O-SWARM PostgreSQL backup")
    sub = parser.add_subparsers(dest="command")

    def common(p):
        p.add_argument("--url", required=True, help="the live database (postgresql://user@host/db, no password)")
        p.add_argument("--password-file", help="file holding the password (never on the command line)")
        p.add_argument("--prefix", default="supervisor")
        p.add_argument("--anomaly-window", type=int, default=DEFAULT_WINDOW)
        p.add_argument("--anomaly-min-history", type=int, default=DEFAULT_MIN_HISTORY)
        p.add_argument("--anomaly-low", type=float, default=DEFAULT_LOW)
        p.add_argument("--anomaly-high", type=float, default=DEFAULT_HIGH)

    b = sub.add_parser("backup", help="pg_dump -Fc with checksum and retention")
    common(b)
    b.add_argument("--dest-dir", required=True)
    b.add_argument("--keep", type=int, default=0)
    b.add_argument("--max-age-days", type=float, default=0)
    r = sub.add_parser("restore-test",
                       help="restore the newest backup into a scratch database, write restore-test.json")
    common(r)
    r.add_argument("--backup-dir", required=True)
    r.add_argument("--scratch-url", required=True)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        size_anomaly(1, [1], args.anomaly_window, args.anomaly_low, args.anomaly_high, args.anomaly_min_history)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    try:
        password = read_password_file(args.password_file) if args.password_file else None
        if args.command == "backup":
            previous = list_pg_backups(args.dest_dir, args.prefix)
            result = backup_pg(args.url, args.dest_dir, args.prefix, password)
            status = backup_status(result, [p["size"] for p in previous if p["has_checksum"]], args.anomaly_window,
                                   args.anomaly_low, args.anomaly_high, args.anomaly_min_history)
            write_status(args.dest_dir, status)
            result["size_anomaly"] = status["size_anomaly"]
            result["removed"] = apply_pg_retention(args.dest_dir, args.prefix, args.keep, args.max_age_days,
                                                   protect=(result["name"],))
            if status["size_anomaly"]["anomaly"]:
                sys.stderr.write(f"warning: {status['size_anomaly']['reason']}\n")
            sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
            return 0
        result = restore_test_pg(args.backup_dir, args.url, args.scratch_url, args.prefix, password,
                                 window=args.anomaly_window, low=args.anomaly_low, high=args.anomaly_high,
                                 min_history=args.anomaly_min_history)
        try:
            write_result(args.backup_dir, result)
        except OSError as exc:
            sys.stderr.write(f"error: {args.backup_dir}: cannot write restore-test.json: {exc.strerror or exc}\n")
            return 1
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
        if not result["ok"]:
            sys.stderr.write("error: restore test failed: {}\n".format("; ".join(result["reasons"])))
            return 1
        return 0
    except DataSafetyError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 1


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        raise SystemExit(_cli())
