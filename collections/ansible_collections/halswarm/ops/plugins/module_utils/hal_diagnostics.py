# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""The escalation bundle (runbook "Escalation: document the incident"): read-only collection on a
host, and the redaction every collected byte goes through before it leaves that host.

This file is the single implementation. The module hal_diagnostics imports it on the target (Ansible
ships it there), the module hal_diagnostics_bundle uses its scan on the controller, and halctl loads
this same file (halswarm/ops/diagnostics.py). Standard library only, Python 3.8 compatible.

Redaction has two layers, both always applied:
- by key: in JSON documents (configs, event data) every scalar under a key that names a secret
  (auth_token, bot_token, webhook_url, api_key, password, credentials, ...; not ``*_file``/``*_path``)
  and every scalar inside maps of secrets (``agent_tokens``, ``credentials``, ``env``) is masked; in
  free text (journal lines), ``key=value`` / ``"key": "value"`` pairs with such keys and
  ``Authorization: Bearer ...`` values are masked;
- by value: the values of the token files, of the configs' secret keys and any value given by the
  caller are masked wherever they appear (a daemon that logs its token, a token pasted into the wrong
  config field).
"""


import json
import os
import re
import sqlite3
import subprocess

MASK = "[REDACTED]"
MIN_SECRET_LEN = 6

_SECRET_MARKERS = ("token", "secret", "password", "passwd", "passphrase", "api_key", "apikey", "private_key",
                   "credential", "authorization", "cookie", "webhook", "admin_key", "access_key", "session_key")
_NOT_SECRET_SUFFIXES = ("_file", "_path", "_dir", "_version", "_id", "_at", "_count", "_seconds", "_sec")
_SECRET_MAPS = ("agent_tokens", "credentials", "env", "env_vars", "tokens", "secrets", "headers")

_KEY_CHARS = r"[A-Za-z0-9_.-]*"
# "auth_token": "abc" | auth_token=abc | api_key: abc (quoted or bare value), in free text.
_TEXT_PAIR = re.compile(
    r"""(?P<key>["']?(?P<name>""" + _KEY_CHARS + r"(?:" + "|".join(_SECRET_MARKERS) + r")" + _KEY_CHARS
    + r""")["']?\s*[:=]\s*)(?P<q>["']?)(?P<val>[^\s"',;{}\[\]&]+)""",
    re.IGNORECASE)
_BEARER = re.compile(r"(?P<key>\b(?:Bearer|Basic|Token)\s+)(?P<val>[A-Za-z0-9._~+/=-]{6,})")
_URL_USERINFO = re.compile(r"(?P<key>[a-z][a-z0-9+.-]*://[^/\s:@]+:)(?P<val>[^/\s@]+)(?=@)", re.IGNORECASE)

DEFAULT_UNITS = ("hal-supervisor.service", "hal-agent.service")
DEFAULT_CONFIGS = ("/etc/hal-o-swarm/supervisor.config.json", "/etc/hal-o-swarm/agent.config.json")
DEFAULT_TOKEN_FILES = ("/etc/hal-o-swarm/supervisor.token", "/etc/hal-o-swarm/agent.token")
DEFAULT_DATABASE = "/var/lib/hal-o-swarm/supervisor/supervisor.db"
UNIT_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "Result", "UnitFileState", "FragmentPath",
                   "DropInPaths", "MainPID", "ExecMainStatus", "ExecMainStartTimestamp", "ExecMainExitTimestamp",
                   "ActiveEnterTimestamp", "InactiveEnterTimestamp", "NRestarts", "MemoryCurrent", "MemoryPeak",
                   "MemoryMax", "MemoryHigh", "MemorySwapMax", "TasksCurrent", "CPUUsageNSec", "Restart",
                   "RestartUSec", "StartLimitBurst", "StartLimitIntervalUSec", "User", "Group")


# ----------------------------------------------------------------------------------------------
# redaction


def is_secret_key(key):
    k = str(key).lower()
    if k.endswith(_NOT_SECRET_SUFFIXES) or k in ("idempotency_key", "key_path", "cert_path"):
        return False
    return any(m in k for m in _SECRET_MARKERS) or k in ("key", "pass") or k.endswith(("_key", "-key"))


def _mask_leaves(value):
    if isinstance(value, dict):
        return dict((k, _mask_leaves(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_mask_leaves(v) for v in value]
    if value is None or isinstance(value, bool) or value == "":
        return value
    return MASK


def secret_values_in(value, _secret=False):
    """The values a document holds under secret keys (to mask them anywhere else too)."""
    found = set()
    if isinstance(value, dict):
        for k, v in value.items():
            found |= secret_values_in(v, _secret or is_secret_key(k) or str(k).lower() in _SECRET_MAPS)
    elif isinstance(value, list):
        for v in value:
            found |= secret_values_in(v, _secret)
    elif _secret and isinstance(value, str) and len(value.strip()) >= MIN_SECRET_LEN:
        found.add(value.strip())
    return found


def _usable(secrets):
    return sorted({str(s).strip() for s in secrets or () if s is not None and len(str(s).strip()) >= MIN_SECRET_LEN},
                  key=len, reverse=True)


def redact_values_only(text, secrets=()):
    """Only the by-value layer (for JSON text that was redacted by key already: stays valid JSON)."""
    for s in _usable(secrets):
        text = text.replace(s, MASK)
    return text


def redact_text(text, secrets=()):
    """Free text with known secret values and secret-looking ``key=value`` pairs masked."""
    if not text:
        return text
    text = redact_values_only(text, secrets)
    text = _BEARER.sub(lambda m: m.group("key") + _mask_value(m.group("val")), text)
    text = _TEXT_PAIR.sub(lambda m: m.group(0) if not is_secret_key(m.group("name")) else
                          m.group("key") + m.group("q") + _mask_value(m.group("val")), text)
    return _URL_USERINFO.sub(lambda m: m.group("key") + MASK, text)


def _redact_member(name, text, secrets):
    """JSON members (already redacted by key) get the by-value layer only, so they stay valid JSON."""
    return redact_values_only(text, secrets) if name.endswith(".json") else redact_text(text, secrets)


def _mask_value(value):
    # already masked, or a path (auth_token_file=/etc/...): kept
    return value if value.startswith(("[REDACTED", "/")) else MASK


def redact_obj(value, secrets=(), _key=""):
    """A JSON-like document with secrets masked by key (recursively) and by value (in every string)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            ks = str(k)
            if (ks.lower() in _SECRET_MAPS and isinstance(v, (dict, list))) or is_secret_key(ks):
                out[k] = _mask_leaves(v)
            else:
                out[k] = redact_obj(v, secrets, ks)
        return out
    if isinstance(value, list):
        return [redact_obj(v, secrets, _key) for v in value]
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def find_secrets(text, secrets):
    """How many times known secret values occur in ``text`` (the scan: 0 means clean)."""
    return sum(text.count(s) for s in _usable(secrets))


# ----------------------------------------------------------------------------------------------
# collection on a host (read-only)


def _run(argv, timeout=60):
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              check=False, text=True, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "{}: {}".format(" ".join(argv), exc)
    return proc.returncode, proc.stdout


def _read(path):
    with open(path, errors="replace") as f:
        return f.read()


def unit_props(unit):
    rc, out = _run(["systemctl", "show", unit, "--no-pager"] + ["-p" + p for p in UNIT_PROPERTIES])
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line) if rc == 0 else {}
    return rc, out, props


def system_info():
    parts = []
    for title, argv in (("uname -a", ["uname", "-a"]), ("hostname", ["hostname"]), ("date -u", ["date", "-u"]),
                        ("uptime", ["uptime"]), ("df -h", ["df", "-h"]), ("free -h", ["free", "-h"]),
                        ("systemctl --failed", ["systemctl", "--failed", "--no-pager", "--no-legend"])):
        rc, out = _run(argv)
        status = "" if rc == 0 else f"  (exit {rc})"
        parts.append(f"$ {title}{status}\n{out.rstrip()}")
    if os.path.exists("/etc/os-release"):
        parts.append("$ cat /etc/os-release\n" + _read("/etc/os-release").rstrip("\n"))
    return "\n\n".join(parts) + "\n"


def _sqlite_ro(path):
    """A read-only connection; ``immutable`` when the read-only open fails (e.g. no -shm access)."""
    uri = f"file:{path}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn, "ro"
    except sqlite3.Error:
        conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True, timeout=5)
        return conn, "immutable"


def database_report(path, events_limit, secrets):
    """(summary dict, recent events list) of the supervisor DB, read-only."""
    summary = {"path": path, "exists": os.path.exists(path)}
    if not summary["exists"]:
        return summary, []
    summary["size_bytes"] = os.path.getsize(path)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            summary["size{}_bytes".format(suffix.replace("-", "_"))] = os.path.getsize(path + suffix)
    events = []
    try:
        conn, mode = _sqlite_ro(path)
    except sqlite3.Error as exc:
        summary["error"] = f"cannot open: {exc}"
        return summary, []
    summary["open_mode"] = mode
    try:
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
            summary["integrity_check"] = [r[0] for r in rows][:100]
            summary["integrity_ok"] = [r[0] for r in rows] == ["ok"]
        except sqlite3.Error as exc:
            summary["integrity_check"] = [f"error: {exc}"]
            summary["integrity_ok"] = False
        for pragma in ("page_count", "page_size", "freelist_count", "journal_mode", "user_version"):
            try:
                summary[pragma] = conn.execute(f"PRAGMA {pragma}").fetchone()[0]
            except sqlite3.Error:
                pass
        counts = {}
        try:
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        except sqlite3.Error as exc:
            tables = []
            summary["tables_error"] = str(exc)
        for t in tables:
            try:
                counts[t] = conn.execute('SELECT count(*) FROM "{}"'.format(t.replace('"', '""'))).fetchone()[0]
            except sqlite3.Error as exc:
                counts[t] = f"error: {exc}"
        summary["row_counts"] = counts
        if "events" in tables and events_limit > 0:
            try:
                conn.row_factory = sqlite3.Row
                for r in conn.execute("SELECT id, node_id, seq, event_id, session_id, project, type, data, timestamp,"
                                      " received_at FROM events ORDER BY id DESC LIMIT ?", (int(events_limit),)):
                    ev = dict(r)
                    try:
                        ev["data"] = json.loads(ev["data"]) if ev["data"] else None
                    except ValueError:
                        pass
                    events.append(redact_obj(ev, secrets))
            except sqlite3.Error as exc:
                summary["events_error"] = str(exc)
    finally:
        conn.close()
    return summary, events


def collect(units=DEFAULT_UNITS, journal_lines=1000, config_files=DEFAULT_CONFIGS, token_files=DEFAULT_TOKEN_FILES,
            database=DEFAULT_DATABASE, events_limit=200, secrets=()):
    """Everything for one host as ``{relative name: text}`` (already redacted) plus a summary.

    Returns (files, summary). Nothing is written anywhere; every problem is recorded in the summary
    instead of raised, so a half-broken host still yields what can be read.
    """
    known = set(s for s in (secrets or ()) if s)
    errors = []
    for path in token_files or ():
        try:
            value = _read(path).strip()
        except OSError as exc:
            if os.path.exists(path):
                errors.append(f"{path}: {exc}")
            continue
        if value:
            known.add(value)
    configs = {}
    for path in config_files or ():
        if not os.path.exists(path):
            continue
        try:
            text = _read(path)
        except OSError as exc:
            errors.append(f"{path}: {exc}")
            continue
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, (dict, list)):
            known |= secret_values_in(doc)
        configs[path] = (text, doc)

    files = {}
    summary = {"units": {}, "configs": {}, "database": None, "errors": errors}
    for unit in units or ():
        rc, out, props = unit_props(unit)
        exists = props.get("LoadState", "not-found") not in ("not-found", "")
        keys = ("LoadState", "ActiveState", "SubState", "NRestarts", "MemoryCurrent", "MemoryMax")
        summary["units"][unit] = {k: props.get(k) for k in keys}
        if not exists:
            continue
        files[f"system/{unit}.show.txt"] = out
        rc, journal = _run(["journalctl", "-u", unit, "-n", str(int(journal_lines)), "--no-pager",
                            "-o", "short-iso-precise"], timeout=120)
        files[f"journal/{unit}.log"] = journal if rc == 0 else f"journalctl exit {rc}\n{journal}"
        summary["units"][unit]["journal_lines"] = journal.count("\n")
    files["system/info.txt"] = system_info()
    for path, (text, doc) in configs.items():
        name = "config/" + os.path.basename(path)
        if isinstance(doc, (dict, list)):
            files[name] = json.dumps(redact_obj(doc, known), indent=2, sort_keys=True) + "\n"
            summary["configs"][path] = "json"
        else:
            files[name] = redact_text(text, known)
            summary["configs"][path] = "not JSON: redacted as text"
    if database and os.path.exists(database):
        db, events = database_report(database, events_limit, known)
        files["db/summary.json"] = json.dumps(db, indent=2, sort_keys=True, default=str) + "\n"
        files["db/recent_events.json"] = json.dumps(events, indent=2, sort_keys=True, default=str) + "\n"
        summary["database"] = {k: db.get(k) for k in ("path", "size_bytes", "integrity_ok", "error")}
    files = dict((k, _redact_member(k, v, known)) for k, v in files.items())
    leaks = sum(find_secrets(v, known) for v in files.values())
    summary["leak_scan"] = {"known_secrets": len(_usable(known)), "findings": leaks, "passed": leaks == 0}
    return files, summary


# ----------------------------------------------------------------------------------------------
# the bundle (on the controller): one tarball, every member redacted again and scanned


def _safe(name):
    name = re.sub(r"[^A-Za-z0-9_.@-]+", "_", str(name)).strip("._") or "_"
    return name


def bundle_members(hosts, include=()):
    """Member names (relative to the bundle's top directory) for the per-host files and extra files."""
    names = ["MANIFEST.json"]
    for host in sorted(hosts):
        names.append(f"hosts/{_safe(host)}/summary.json")
        for rel in sorted((hosts[host] or {}).get("files") or {}):
            parts = [_safe(p) for p in str(rel).split("/") if p not in ("", ".", "..")]
            names.append("hosts/{}/{}".format(_safe(host), "/".join(parts)))
    for path in include or ():
        names.append("report/" + _safe(os.path.basename(path)))
    return names


def _add(tar, name, text, mtime):
    import io
    import tarfile

    data = text.encode("utf-8", "replace")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def write_bundle(dest, hosts, include=(), secrets=(), metadata=None, mode=0o600):
    """Write ``dest`` (a .tar.gz) atomically: ``<top>/MANIFEST.json``, ``<top>/hosts/<host>/...`` and
    ``<top>/report/<file>`` for each path of ``include`` (JSON files are redacted by key, everything by
    value). Returns {path, top, members, size, sha256, scan}; the scan re-reads the written tarball."""
    import hashlib
    import tarfile
    import tempfile
    import time

    now = time.time()
    top = os.path.basename(dest)
    for ext in (".tar.gz", ".tgz", ".tar"):
        if top.endswith(ext):
            top = top[:-len(ext)]
            break
    top = _safe(top) or "hal-diagnostics"
    known = set(s for s in secrets or () if s)
    members = bundle_members(hosts, include)
    manifest = dict(metadata or {})
    manifest.update(collected_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), hosts=sorted(hosts),
                    members=members, summaries=dict((h, (hosts[h] or {}).get("summary") or {}) for h in hosts))
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{top}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add(tar, top + "/MANIFEST.json", redact_values_only(json.dumps(
                    redact_obj(manifest, known), indent=2, sort_keys=True, default=str) + "\n", known), now)
                for host in sorted(hosts):
                    entry = hosts[host] or {}
                    _add(tar, f"{top}/hosts/{_safe(host)}/summary.json", json.dumps(
                        redact_obj(entry.get("summary") or {}, known), indent=2, sort_keys=True, default=str) + "\n",
                        now)
                    for rel in sorted(entry.get("files") or {}):
                        parts = [_safe(p) for p in str(rel).split("/") if p not in ("", ".", "..")]
                        _add(tar, "{}/hosts/{}/{}".format(top, _safe(host), "/".join(parts)),
                             _redact_member(rel, str(entry["files"][rel]), known), now)
                for path in include or ():
                    text = _read(path)
                    try:
                        text = json.dumps(redact_obj(json.loads(text), known), indent=2, sort_keys=True) + "\n"
                    except ValueError:
                        text = redact_text(text, known)
                    else:
                        text = redact_values_only(text, known)
                    _add(tar, f"{top}/report/{_safe(os.path.basename(path))}", text, now)
            raw.flush()
            os.fsync(raw.fileno())
        scan = scan_tarball(tmp, known)
        os.rename(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    digest = hashlib.sha256()
    with open(dest, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": dest, "top": top, "members": [top + "/" + m for m in members], "size": os.path.getsize(dest),
            "sha256": digest.hexdigest(), "scan": scan}


def scan_tarball(path, secrets):
    """Known secret values found in the members of a tarball: {passed, findings, members: [names]}."""
    import tarfile

    usable = _usable(secrets)
    hits = {}
    with tarfile.open(path, "r:*") as tar:
        for info in tar:
            if not info.isfile():
                continue
            f = tar.extractfile(info)
            text = f.read().decode("utf-8", "replace") if f is not None else ""
            n = find_secrets(text, usable)
            if n:
                hits[info.name] = n
    return {"passed": not hits, "findings": sum(hits.values()), "members": sorted(hits),
            "known_secrets": len(usable)}
