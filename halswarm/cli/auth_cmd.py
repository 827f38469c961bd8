"""`halctl auth status NODE | drift | push NODE --env K=V ... --version N | login NODE TOOL [--ssh ...]`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from halswarm.cli.completion import complete_node_ids
from halswarm.cli.context import app
from halswarm.cli.errors import CommandFailed, UsageProblem

TOOLS = ("claude_code", "codex", "opencode")
WAIT_POLL = 2.0


# ----- rendering (the runbook's text layout) -----

def render_status(data: Mapping[str, Any]) -> str:
    lines = [
        f"Node: {data.get('node_id', '-')}",
        f"Credential Sync: {data.get('credential_sync') or 'unknown'}",
        f"Credential Version: {data.get('credential_version') if data.get('credential_version') is not None else '-'}",
        "",
    ]
    states = data.get("auth_states") or {}
    if not states:
        lines.append("(no auth states reported)")
        return "\n".join(lines)
    lines.append(f"{'Tool':<16}{'Status':<20}Reason")
    lines.append(f"{'----':<16}{'------':<20}------")
    for tool in sorted(states):
        st = states[tool] if isinstance(states[tool], Mapping) else {"status": states[tool]}
        lines.append(f"{tool:<16}{st.get('status') or '-'!s:<20}{st.get('reason') or ''}".rstrip())
    return "\n".join(lines)


def render_drift(rows: Sequence[Mapping[str, Any]]) -> str:
    w = max([16] + [len(str(r.get("node_id"))) + 2 for r in rows])
    lines = [f"{'Node ID':<{w}}{'Sync Status':<18}Version", f"{'-------':<{w}}{'-----------':<18}-------"]
    for r in rows:
        version = r.get("credential_version")
        lines.append(f"{r.get('node_id')!s:<{w}}{r.get('credential_sync')!s:<18}"
                     f"{version if version is not None else '-'}")
    drifting = sum(1 for r in rows if r.get("credential_sync") == "drift_detected")
    lines.append("")
    lines.append(f"Total: {drifting} nodes with credential drift")
    return "\n".join(lines)


def render_guidance(answer: Mapping[str, Any]) -> str:
    g = answer.get("manual_guidance") or {}
    lines = [f"manual login required: {answer.get('reason') or g.get('reason') or ''}".rstrip()]
    for i, step in enumerate(g.get("steps") or [], 1):
        lines.append(f"  {i}. {step}")
    return "\n".join(lines)


def parse_env(pairs: Sequence[str], env_file: str | None) -> dict[str, str]:
    """`K=V` pairs, `K` alone (value from halctl's own environment), and a KEY=VALUE file."""
    out: dict[str, str] = {}
    if env_file:
        try:
            text = open(env_file, encoding="utf-8").read()  # noqa: SIM115 - small file, read at once
        except OSError as exc:
            raise UsageProblem(f"--env-file {env_file}: {exc.strerror or exc}") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.removeprefix("export ").partition("=")
            if not sep:
                raise UsageProblem(f"--env-file {env_file}:{n}: expected KEY=VALUE")
            out[key.strip()] = value.strip().strip('"').strip("'")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            if key not in os.environ:
                raise UsageProblem(f"--env {key}: not KEY=VALUE and not set in the environment")
            value = os.environ[key]
        if not key:
            raise UsageProblem(f"--env {pair.split('=')[0]!r}: empty name")
        out[key] = value
    for key, value in out.items():
        if not value:
            raise UsageProblem(f"--env {key}: empty value")
    return out


# ----- commands -----

@click.group("auth")
def auth() -> None:
    """Tool authentication on the nodes: status, credential drift and push, logins."""


@auth.command("status")
@click.argument("node_id", metavar="NODE", shell_complete=complete_node_ids)
def status(node_id: str) -> None:
    """Auth state of every tool on NODE, with its credential sync."""
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit

    ctx = app()
    data = ctx.client().get(f"/nodes/{path_id(node_id)}/auth", what=f"node {node_id}").data or {}
    emit(ctx.output, data, lambda: click.echo(render_status(data)))


@auth.command("drift")
@click.option("--all", "show_all", is_flag=True, help="List every node, not only the drifting ones.")
def drift(show_all: bool) -> None:
    """Nodes whose credential version differs from the supervisor's."""
    from halswarm.cli.output import emit

    ctx = app()
    rows = ctx.client().get("/auth/drift", {"all": True} if show_all else None).data or []
    emit(ctx.output, rows, lambda: click.echo(render_drift(rows)))


@auth.command("push")
@click.argument("node_id", metavar="NODE", shell_complete=complete_node_ids)
@click.option("--env", "pairs", multiple=True, metavar="K=V",
              help="Variable to push (repeatable). `K` alone takes the value from halctl's environment.")
@click.option("--env-file", type=click.Path(dir_okay=False), help="KEY=VALUE lines to push.")
@click.option("--version", "version", type=click.IntRange(min=0), help="Credential version [default: the "
              "supervisor's credentials.version].")
@click.option("--idempotency-key", help="Replay the earlier successful push with this key.")
def push(node_id: str, pairs: tuple[str, ...], env_file: str | None, version: int | None,
         idempotency_key: str | None) -> None:
    """Push env credentials to NODE (without --env: the supervisor's configured credentials)."""
    from halswarm.cli.output import emit
    from halswarm.cli.results import COMMAND_WAIT

    ctx = app()
    env = parse_env(pairs, env_file)
    body: dict[str, Any] = {"target_node": node_id}
    if env:
        body["env_vars"] = env
    if version is not None:
        body["version"] = version
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    data = ctx.client().post("/commands/credentials/push", body, what=f"node {node_id}",
                             timeout=max(ctx.timeout, COMMAND_WAIT + 30)).data or {}

    def table() -> None:
        out = o if isinstance(o := data.get("output"), Mapping) else {}
        names = out.get("applied") or sorted(env)
        click.echo(f"credential push to {node_id}: ok (version {out.get('credential_version', version)}, "
                   f"{len(names)} variable(s): {', '.join(names)})")
        click.echo(f"Credential Sync: {data.get('credential_sync', 'unknown')}")
        for w in out.get("warnings") or []:
            click.echo(f"warning: {w}", err=True)

    emit(ctx.output, data, table)


@auth.command("login")
@click.argument("node_id", metavar="NODE", shell_complete=complete_node_ids)
@click.argument("tool", type=click.Choice(TOOLS))
@click.option("--ssh", "use_ssh", is_flag=True, help="Log in over SSH (the runbook's manual flow) right away.")
@click.option("--ssh-host", help="Host to SSH to [default: the node's hostname].")
@click.option("--ssh-user", envvar="HALCTL_SSH_USER", help="Your own user on the node [default: `ssh_user` "
              "of the halctl config, else the local user name].")
@click.option("--run-as", envvar="HALCTL_RUN_AS", help="The agent's service user the login runs as, through "
              "`sudo -u USER -H` (no sudo when it is the SSH user) [default: `run_as` of the halctl config, "
              "else hal-agent].")
@click.option("--ssh-port", type=click.IntRange(1, 65535), default=22, show_default=True)
@click.option("--ssh-key", type=click.Path(dir_okay=False), help="Private key file [default: agent, ~/.ssh/id_*].")
@click.option("--ask-pass", is_flag=True, help="Prompt for the SSH password.")
@click.option("--known-hosts", type=click.Path(dir_okay=False), help="known_hosts file [default: ~/.ssh/known_hosts].")
@click.option("--insecure-host-key", is_flag=True, help="Do not check the node's host key (not recommended).")
@click.option("--method", help="Login method: codex device|browser|api-key, claude_code browser|console, "
              "opencode interactive (SSH); opencode provider for the device flow (e.g. openai).")
@click.option("--tool-path", help="Path of the tool on the node [default: what the agent reported].")
@click.option("--wait/--no-wait", default=None, help="Wait for a device flow to finish [default: yes in table mode].")
@click.option("--wait-timeout", type=click.FloatRange(min=1), default=900, show_default=True)
def login(node_id: str, tool: str, use_ssh: bool, ssh_host: str | None, ssh_user: str | None,
          run_as: str | None, ssh_port: int,
          ssh_key: str | None, ask_pass: bool, known_hosts: str | None, insecure_host_key: bool,
          method: str | None, tool_path: str | None, wait: bool | None, wait_timeout: float) -> None:
    """Log TOOL in on NODE: device flow where the tool has one, else (or with --ssh) over SSH."""
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit

    ctx = app()
    client = ctx.client()
    ssh_opts = {"host": ssh_host, "user": ssh_user, "run_as": run_as, "port": ssh_port, "key": ssh_key,
                "ask_pass": ask_pass,
                "known_hosts": known_hosts, "insecure": insecure_host_key, "method": method,
                "tool_path": tool_path}
    if use_ssh:
        _login_over_ssh(node_id, tool, ssh_opts)
        return
    body = {"node_id": node_id, "tool": tool}
    if method and tool == "opencode":
        body["provider"] = method
    answer = client.post("/oauth/trigger", body, what=f"node {node_id}", timeout=max(ctx.timeout, 120)).data or {}
    st = answer.get("status")
    if st == "manual_required":
        if ctx.output != "table":
            emit(ctx.output, answer, lambda: None)
            return
        click.echo(render_guidance(answer))
        if sys.stdin.isatty():
            user, service = _ssh_identity(ssh_user, run_as)
            sudo = f" as {service} via sudo" if service != user else ""
            click.echo(f"\nlogging in over SSH ({user}@{ssh_host or node_id}{sudo}) ...")
            _login_over_ssh(node_id, tool, ssh_opts)
        else:
            click.echo(f"\nrun `halctl auth login {node_id} {tool} --ssh` to do it over SSH from here")
        return
    if st == "failure":
        if ctx.output != "table":
            emit(ctx.output, answer, lambda: None)
        raise CommandFailed(f"login of {tool} on {node_id} failed: {answer.get('reason') or 'no reason given'}")
    if st != "challenge":
        emit(ctx.output, answer, lambda: click.echo(f"login of {tool} on {node_id}: {st}"))
        return
    if ctx.output != "table":
        emit(ctx.output, answer, lambda: None)
    else:
        click.echo(f"To log {tool} in on {node_id}:\n  1. open {answer.get('challenge_url')}\n"
                   f"  2. enter the code {answer.get('user_code')}")
    if wait is False or (wait is None and ctx.output != "table"):
        return
    final = _wait_flow(client, node_id, tool, answer.get("flow_id"), wait_timeout)
    data = client.get(f"/nodes/{path_id(node_id)}/auth", what=f"node {node_id}").data or {}
    if ctx.output == "table":
        click.echo(f"\ndevice flow {final.get('status')}: {final.get('reason') or ''}".rstrip())
        click.echo(render_status(data))
    if final.get("status") != "success":
        raise CommandFailed(f"login of {tool} on {node_id}: {final.get('status')}: {final.get('reason') or ''}")


def _ssh_identity(ssh_user: str | None, run_as: str | None) -> tuple[str, str | None]:
    """(SSH user, service user): flag/env > halctl config (`ssh_user`, `run_as`) > local user / hal-agent."""
    from halswarm.ops.ssh_login import DEFAULT_RUN_AS, local_user

    raw: Any = None
    if ssh_user is None or run_as is None:
        raw = app()._file_value("raw")
    raw = raw if isinstance(raw, Mapping) else {}
    user = ssh_user or (raw.get("ssh_user") if isinstance(raw.get("ssh_user"), str) else None) or local_user()
    service = run_as or (raw.get("run_as") if isinstance(raw.get("run_as"), str) else None) or DEFAULT_RUN_AS
    return user, service


def _wait_flow(client: Any, node_id: str, tool: str, flow_id: Any, timeout: float) -> dict[str, Any]:
    """The ``auth.oauth_completed`` event of this flow (polled), or a timeout answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = client.get("/events", {"node_id": node_id, "type": "auth.oauth_completed", "order": "desc",
                                        "limit": 20}).data or []
        for ev in events:
            data = ev.get("data") if isinstance(ev, Mapping) else None
            if isinstance(data, Mapping) and data.get("tool") == tool and (flow_id is None
                                                                          or data.get("flow_id") == flow_id):
                return dict(data)
        time.sleep(WAIT_POLL)
    return {"status": "timeout", "reason": f"no result within {timeout:g} s (the flow may still complete)"}


def _login_over_ssh(node_id: str, tool: str, opts: Mapping[str, Any]) -> None:
    from halswarm.cli.client import path_id
    from halswarm.cli.output import emit
    from halswarm.ops.ssh_login import SshLoginError, SshTarget, run_manual_login

    ctx = app()
    client = ctx.client()
    node = client.get(f"/nodes/{path_id(node_id)}", what=f"node {node_id}").data or {}
    reported = ((node.get("capabilities") or {}).get("auth") or {}).get("tools", {}).get(tool, {})
    tool_path = opts.get("tool_path") or (reported.get("path") if isinstance(reported, Mapping) else None)
    password = click.prompt("SSH password", hide_input=True, err=True) if opts.get("ask_pass") else None
    user, service = _ssh_identity(opts.get("user"), opts.get("run_as"))
    target = SshTarget(host=opts.get("host") or node.get("hostname") or node_id, user=user,
                       run_as=service, port=opts["port"], known_hosts=opts.get("known_hosts"),
                       insecure_host_key=bool(opts.get("insecure")), key_filename=opts.get("key"), password=password)
    stdin_fd = sys.stdin.fileno() if _has_fileno(sys.stdin) else None
    try:
        outcome = run_manual_login(target, tool, method=opts.get("method"), tool_path=tool_path, stdin_fd=stdin_fd,
                                   out=_binary_stdout())
    except SshLoginError as exc:
        raise CommandFailed(str(exc)) from None
    if outcome.verified:
        click.echo(f"\n{tool} on {node_id} (verified over SSH): {outcome.status} - {outcome.reason}", err=True)
    else:
        click.echo(f"\n{tool} on {node_id}: {outcome.reason}; asking the agent", err=True)
    # make the agent report at once, then show what the supervisor now knows
    client.post("/commands", {"type": "auth_refresh", "target": {"node_id": node_id}, "args": {"tool": tool}},
                timeout=max(ctx.timeout, 60))
    data = client.get(f"/nodes/{path_id(node_id)}/auth", what=f"node {node_id}").data or {}
    if not outcome.verified:  # the agent's own probe is the verification
        st = (data.get("auth_states") or {}).get(tool) or {}
        outcome.status = str(st.get("status") or "unknown")
        outcome.reason = str(st.get("reason") or "no state reported by the agent")
        click.echo(f"{tool} on {node_id} (reported by the agent): {outcome.status} - {outcome.reason}", err=True)
    emit(ctx.output, data | {"login": {"tool": tool, "exit_status": outcome.login_exit, "status": outcome.status,
                                       "reason": outcome.reason}},
         lambda: click.echo(render_status(data)))
    if not outcome.authenticated:
        raise CommandFailed(f"{tool} on {node_id} is still {outcome.status}: {outcome.reason}")


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _binary_stdout() -> Any:
    return getattr(sys.stdout, "buffer", None) or _TextAsBinary(sys.stdout)


class _TextAsBinary:
    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        self.stream.write(data.decode("utf-8", "replace"))
        return len(data)

    def flush(self) -> None:
        self.stream.flush()
