"""`hal-supervisor` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("halswarm.supervisor")

DEFAULT_CONFIG = "/etc/hal-o-swarm/supervisor.config.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hal-supervisor", description="HAL-O-SWARM supervisor (agent hub + HTTP API)")
    p.add_argument("--config", "-c", help=f"config file (JSON, or YAML by extension); default {DEFAULT_CONFIG}")
    p.add_argument("--validate", action="store_true", help="check the config file and exit 0 (valid) or 1")
    p.add_argument("--strict", action="store_true", help="with --validate: unknown keys are errors")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="overrides log.level")
    p.add_argument("--log-format", choices=["json", "text"], help="overrides log.format")
    p.add_argument("--local", action="store_true",
                   help="run on embedded defaults: loopback, SQLite and a generated token under --state-dir")
    p.add_argument("--state-dir", default=os.environ.get("HAL_STATE_DIR", ".state"),
                   help="with --local: where the token and database live (default ./.state)")
    p.add_argument("--host", help="bind address (overrides server.host)")
    p.add_argument("--port", type=int, help="agent WebSocket port (overrides server.port)")
    p.add_argument("--http-port", type=int, help="HTTP API port (overrides server.http_port)")
    p.add_argument("--database", help="SQLite file (overrides database.path)")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


OPERATOR_TOKEN_FILE = "operator.token"  # --local: the admin operator token (halctl, the HTTP API)
AGENT_TOKEN_FILE = "agent.token"  # --local: the local agent's own token (never opens the HTTP API)
LOCAL_OPERATOR = "local-admin"


def local_token(state_dir: Path, name: str = OPERATOR_TOKEN_FILE) -> Path:
    """A generated token of --local mode (`name` under the state dir), created once (0600) and reused;
    the state dir is 0700."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if state_dir.stat().st_mode & 0o077:
        state_dir.chmod(0o700)
    path = state_dir / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return path


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if args.host:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    if args.http_port is not None:
        server["http_port"] = args.http_port
    out: dict[str, Any] = {"server": server} if server else {}
    if args.database:
        out["database"] = {"path": args.database}
    log_over = {}
    if args.log_level:
        log_over["level"] = args.log_level
    if args.log_format:
        log_over["format"] = args.log_format
    if log_over:
        out["log"] = log_over
    return out


def main(argv: list[str] | None = None) -> int:
    # Everything the supervisor creates (database, -wal/-shm, --local state, backups, bundles) is the
    # service user's alone: it holds the audit log, session contents and secrets.
    os.umask(0o077)
    args = _parser().parse_args(argv)
    if args.version:
        from halswarm import __version__

        print(f"hal-supervisor {__version__}")
        return 0
    from halswarm.config.errors import ConfigError

    if args.validate:
        from halswarm.config.report import run_validate

        return run_validate(args.config or DEFAULT_CONFIG, "supervisor", strict=args.strict)

    from halswarm.config.loader import deep_merge
    from halswarm.config.supervisor import load_supervisor_config, parse_supervisor_config

    try:
        if args.local:
            state = Path(args.state_dir).resolve()
            # Two credentials (issue 14): an admin operator token for halctl, and the local agent's own
            # per-node token, which never opens the HTTP API.
            operator_file = local_token(state, OPERATOR_TOKEN_FILE)
            agent_token = local_token(state, AGENT_TOKEN_FILE).read_text().strip()
            doc: dict[str, Any] = {
                "server": {"host": "127.0.0.1", "port": 8420, "http_port": 8421},
                "security": {"operators": [{"name": LOCAL_OPERATOR, "role": "admin", "token_file": str(operator_file)}],
                             "agent_tokens": {local_node_id(): agent_token}},
                "database": {"path": str(state / "supervisor.db")},
                "log": {"format": "text"},
            }
            if args.config:
                from halswarm.config.loader import read_config_file

                doc = deep_merge(doc, read_config_file(args.config))
            doc = deep_merge(doc, _overrides(args))
            cfg, warnings = parse_supervisor_config(doc, source_path=args.config)
        else:
            cfg, warnings = load_supervisor_config(args.config or DEFAULT_CONFIG, overrides=_overrides(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        print(f"error: invalid configuration ({args.config or DEFAULT_CONFIG if not args.local else 'local'})",
              file=sys.stderr)
        return 1

    from halswarm.logsetup import setup_logging
    from halswarm.supervisor.secrets_registry import register_config_secrets

    register_config_secrets(cfg)  # before the first log line: every configured secret is redacted by value
    setup_logging(cfg.log_level, cfg.log_format)
    for w in warnings:
        log.warning("config: %s", w)
    return asyncio.run(_serve(cfg, local=args.local, state_dir=Path(args.state_dir).resolve()))


async def _serve(cfg: Any, *, local: bool, state_dir: Path) -> int:
    import sqlite3

    from halswarm.sdnotify import notify
    from halswarm.store.db import DatabaseError
    from halswarm.supervisor.app import DatabaseIntegrityError, StartupError, Supervisor

    sup = Supervisor(cfg)
    # Handlers before start-up: /readyz answers 200 inside start(), so a SIGTERM right after it (systemd,
    # a test) must already mean "stop in order", not the default action that skips the flush.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sup.request_stop)
    notify("STATUS=starting: checking the database")  # `systemctl status` shows it during a long check
    try:
        await sup.start()
    except DatabaseIntegrityError as exc:
        from halswarm.supervisor.features.remediations.db_launch import launch_db_remediation
        from halswarm.supervisor.features.remediations.settings import DB_CORRUPTION, AutoConfig

        auto = AutoConfig.from_config(cfg)
        note = await asyncio.to_thread(launch_db_remediation, auto) if DB_CORRUPTION in auto.auto else None
        print(f"error: {exc}" + (f"; {note}" if note else ""), file=sys.stderr)
        return 1
    except (DatabaseError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:  # a write at start-up failed after the checks passed
        print(f"error: database {cfg.storage_display}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot listen on {cfg.host} ports {cfg.port}/{cfg.http_port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    # Type=notify: only now (database checked, both listeners bound) does systemd count the unit active.
    notify("READY=1", f"STATUS=serving: agents on {cfg.host}:{sup.hub.bound_port}"
           + (f", HTTP API on {cfg.host}:{cfg.http_port}" if cfg.http_port else ""))
    agent = None
    if local:
        _print_local_banner(cfg, state_dir)
        agent = _start_local_agent(state_dir, sup.hub.bound_port)
    await sup.wait_stopped()
    notify("STOPPING=1", "STATUS=shutting down: flushing events")
    if agent is not None:
        await asyncio.to_thread(_stop_local_agent, agent)
    await sup.shutdown()
    # Everything is flushed. When the loop closes, asyncio gives SIGTERM back its default action, and a
    # second SIGTERM (systemd's stop after a signal, a test's stop) would end the process by the signal in
    # its last steps instead of with its exit code: from here on the process ignores it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    if sup.fatal_error:  # e.g. the background integrity check found damage: the start-up error, later
        print(f"error: {sup.fatal_error}", file=sys.stderr)
    if sup.abandon_database:
        # The open database is not the file at its path any more: exit without closing it (see
        # Supervisor.shutdown), so SQLite does not delete the WAL now at that path.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(sup.exit_code)
    return sup.exit_code


# ----- --local: a local agent beside the supervisor -----------------------------------------------

REPO_OPENCODE = Path(__file__).resolve().parents[2] / ".tools" / "npm" / "node_modules" / ".bin" / "opencode"


def _local_opencode() -> str | None:
    """opencode on PATH, else the pinned test install of this checkout (scripts/install-test-clis.sh)."""
    import shutil

    found = shutil.which("opencode")
    if found:
        return found
    if REPO_OPENCODE.is_file() and os.access(REPO_OPENCODE, os.X_OK):
        return str(REPO_OPENCODE)
    return None


def _start_local_agent(state_dir: Path, ws_port: int) -> Any:
    """Start `hal-agent` as a child: loopback, the state dir's token file, data and a demo project under
    the state dir. `HAL_LOCAL_AGENT=0` turns it off. Returns the Popen (or None)."""
    import json
    import socket
    import subprocess

    if os.environ.get("HAL_LOCAL_AGENT", "1").lower() in ("0", "false", "no", "off"):
        return None
    demo = state_dir / "projects" / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    opencode = _local_opencode()
    with socket.socket() as s:  # a free loopback port for opencode serve (4096 may be the operator's own)
        s.bind(("127.0.0.1", 0))
        opencode_port = s.getsockname()[1]
    doc = {
        "supervisor_url": f"ws://127.0.0.1:{ws_port}/ws/agent",
        "node_id": local_node_id(),
        "auth_token_file": str(state_dir / AGENT_TOKEN_FILE),
        "data_dir": str(state_dir / "agent"),
        "opencode_port": opencode_port,
        "opencode": {"manage": True, "binary": opencode or "opencode"},
        "projects": [{"name": "demo", "directory": str(demo)}],
        "log": {"format": "text"},
    }
    path = state_dir / "agent.config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
    # The agent uses its own token file: a HAL_AUTH_TOKEN in the environment would override it.
    env = {k: v for k, v in os.environ.items() if k != "HAL_AUTH_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "halswarm.agent.main", "--config", str(path)],
                            stdin=subprocess.DEVNULL, env=env)
    where = opencode or "not found: the node registers and reports why it has no sessions"
    print(f"  local agent        pid {proc.pid}, project demo at {demo}\n"
          f"  opencode           {where}\n", flush=True)
    log.info("local agent started (pid %d, config %s)", proc.pid, path)
    return proc


def _stop_local_agent(proc: Any, grace: float = 15.0) -> None:
    """SIGTERM the local agent by PID, SIGKILL after `grace` seconds."""
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("local agent pid %d ignored SIGTERM; killing it", proc.pid)
            proc.kill()
            proc.wait(5)
    log.info("local agent exited with %s", proc.returncode)


def local_node_id() -> str:
    """Node id of the --local agent (its host name, the agent's own default)."""
    import socket

    return socket.gethostname() or "local"


def _print_local_banner(cfg: Any, state_dir: Path) -> None:
    from halswarm.core.invocation import local_command

    url = f"http://{cfg.host}:{cfg.http_port}"
    halctl = local_command("halctl")  # as typed: `halctl` when on PATH (pipx, active venv), else its full path
    print(
        "\nhal-supervisor is running on embedded defaults\n"
        f"  agents connect to  ws://{cfg.host}:{cfg.port}/ws/agent\n"
        f"  HTTP API           {url}  (OpenAPI: {url}/docs)\n"
        f"  database           {cfg.storage_display}\n"
        f"  operator token     {state_dir / OPERATOR_TOKEN_FILE} (0600, admin {LOCAL_OPERATOR})\n"
        f"  agent token        {state_dir / AGENT_TOKEN_FILE} (0600, node {local_node_id()} only)\n\n"
        "Point halctl at it from another shell:\n"
        f"  export HALCTL_SUPERVISOR_URL={url}\n"
        f"  export HALCTL_AUTH_TOKEN=\"$(cat {state_dir / OPERATOR_TOKEN_FILE})\"\n"
        f"  {halctl} nodes list\n\n"
        "Stop with Ctrl-C.\n",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
