"""Manual tool login over SSH (RUNBOOK "Manual Authentication Procedures", SPEC 8).

A paramiko session to the node as the operator's own user (the role's service user has the shell
``/usr/sbin/nologin`` and no authorized_keys), with a PTY: the tool's login command runs there as
the agent's service user through ``sudo -u <run_as> -H --`` (no sudo when the SSH user is that user),
its output (sudo's password prompt, URL, device code, prompts) is relayed to the operator's terminal
and the operator's keystrokes go back. Then the tool's status command (no PTY, ``sudo -n``) verifies
the result with the same parsers the agent uses; when sudo wants a password there, the verification
is left to the agent (``verified`` false). The caller (``halctl auth login --ssh``) then asks the
agent to re-report (``auth_refresh``) so the supervisor shows the new state at once.

Host keys are checked against known_hosts (``RejectPolicy``) unless ``insecure_host_key`` is set.
Nothing typed by the operator is logged or kept.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import select
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from halswarm.core.auth_capability import CAPABILITIES, ERROR
from halswarm.core.auth_status import claude, codex, opencode
from halswarm.core.auth_status.cli_output import CliResult

DEFAULT_RUN_AS = "hal-agent"
LOGIN_TIMEOUT = 900.0
STATUS_TIMEOUT = 30.0
_SUDO_ERROR = re.compile(r"^sudo: |sudo: (command )?not found|is not in the sudoers file|is not allowed to execute",
                         re.M)
DEFAULT_METHODS = {"claude_code": "browser", "codex": "device", "opencode": "interactive"}


class SshLoginError(Exception):
    """Connecting or running the login failed; one line for the operator."""


def local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "root"


@dataclass
class SshTarget:
    host: str
    user: str = field(default_factory=local_user)
    port: int = 22
    run_as: str | None = DEFAULT_RUN_AS  # the agent's service user; None or == user: no sudo
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts (and the system's)
    insecure_host_key: bool = False
    key_filename: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = 15.0


@dataclass
class LoginOutcome:
    tool: str
    login_exit: int
    status: str
    reason: str
    status_exit: int
    verified: bool = True  # False: the status command could not run over SSH (sudo wanted a password)

    @property
    def authenticated(self) -> bool:
        return self.status == "authenticated"


def _tool_cmd(tool: str, tool_path: str | None) -> str:
    cap = CAPABILITIES.get(tool)
    if cap is None:
        raise SshLoginError(f"unknown tool {tool!r} (known: {', '.join(CAPABILITIES)})")
    return tool_path or cap.binary


def login_command(tool: str, method: str | None = None, tool_path: str | None = None) -> str:
    """The remote shell command for ``tool``'s login by ``method`` (see ``CAPABILITIES[..].login_methods``)."""
    binary = _tool_cmd(tool, tool_path)
    cap = CAPABILITIES[tool]
    method = method or DEFAULT_METHODS[tool]
    args = cap.login_methods.get(method)
    if args is None:
        raise SshLoginError(f"{tool} has no login method {method!r} (methods: {', '.join(cap.login_methods)})")
    if tool == "codex" and method == "api-key":
        # codex refuses a terminal on stdin for --with-api-key: read the key with echo off, pipe it in.
        script = ('stty -echo 2>/dev/null; printf "OpenAI API key: "; IFS= read -r k; stty echo 2>/dev/null; '
                  'echo; printf "%s" "$k" | "$0" login --with-api-key')
        return f"sh -c {shlex.quote(script)} {shlex.quote(binary)}"
    return shlex.join([binary, *args])


def status_command(tool: str, tool_path: str | None = None) -> str:
    return shlex.join([_tool_cmd(tool, tool_path), *CAPABILITIES[tool].status_args])


def as_service_user(command: str, ssh_user: str, run_as: str | None, *, non_interactive: bool = False) -> str:
    """``command`` (one simple shell command) run as ``run_as`` through sudo, unless that is ``ssh_user``."""
    if not run_as or run_as == ssh_user:
        return command
    return shlex.join(["sudo", *(["-n"] if non_interactive else []), "-u", run_as, "-H", "--"]) + " " + command


def sudo_refused(result: CliResult) -> bool:
    """``sudo -n`` did not run the command (a password is required, not allowed, sudo missing)."""
    return result.returncode != 0 and bool(_SUDO_ERROR.search(result.stderr))


def interpret_status(tool: str, result: CliResult) -> tuple[str, str]:
    if tool == "claude_code":
        status, reason, _ = claude.interpret(result)
    elif tool == "codex":
        status, reason, _ = codex.interpret(result)
    else:
        status, reason, _ = opencode.interpret_list(result)
    return status, reason


def connect(target: SshTarget) -> Any:
    """An authenticated ``paramiko.SSHClient`` (raises SshLoginError)."""
    import paramiko

    client = paramiko.SSHClient()
    try:
        if target.known_hosts:
            if os.path.exists(target.known_hosts):
                client.load_host_keys(target.known_hosts)
            elif not target.insecure_host_key:
                raise SshLoginError(f"known_hosts file {target.known_hosts} does not exist")
        else:
            client.load_system_host_keys()
        client.set_missing_host_key_policy(paramiko.WarningPolicy() if target.insecure_host_key
                                           else paramiko.RejectPolicy())
        client.connect(
            target.host, port=target.port, username=target.user, password=target.password,
            key_filename=target.key_filename, timeout=target.connect_timeout,
            banner_timeout=target.connect_timeout, auth_timeout=target.connect_timeout,
            allow_agent=True, look_for_keys=target.key_filename is None,
        )
    except SshLoginError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise SshLoginError(f"host key of {target.host} does not match known_hosts: {exc}") from None
    except paramiko.SSHException as exc:
        client.close()
        msg = str(exc)
        if "not found in known_hosts" in msg:
            msg += " (add it with ssh-keyscan, pass --known-hosts, or --insecure-host-key)"
        raise SshLoginError(f"ssh {target.user}@{target.host}:{target.port}: {msg}") from None
    except OSError as exc:
        client.close()
        raise SshLoginError(f"ssh {target.host}:{target.port}: {exc.strerror or exc}") from None
    return client


@contextlib.contextmanager
def _raw_terminal(fd: int | None) -> Iterator[None]:
    """Raw mode on the operator's terminal while relaying (keys such as Ctrl-C go to the remote)."""
    if fd is None or not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def relay(chan: Any, stdin_fd: int | None, out: IO[bytes], *, timeout: float = LOGIN_TIMEOUT,
          on_output: Callable[[bytes], None] | None = None) -> int:
    """Pump the channel's output to ``out`` and ``stdin_fd`` to the channel until the command exits."""
    deadline = time.monotonic() + timeout
    stdin_open = stdin_fd is not None
    while True:
        while chan.recv_ready():
            data = chan.recv(32768)
            if not data:
                break
            out.write(data)
            out.flush()
            if on_output is not None:
                on_output(data)
        while chan.recv_stderr_ready():
            data = chan.recv_stderr(32768)
            out.write(data)
            out.flush()
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            return int(chan.recv_exit_status())
        if time.monotonic() > deadline:
            chan.close()
            raise SshLoginError(f"login did not finish within {timeout:g} s")
        watch = [chan] + ([stdin_fd] if stdin_open else [])
        readable, _, _ = select.select(watch, [], [], 0.2)
        if stdin_open and stdin_fd in readable:
            data = os.read(stdin_fd, 4096)  # type: ignore[arg-type]
            if data:
                chan.sendall(data)
            else:
                stdin_open = False


def run_remote(client: Any, command: str, timeout: float = STATUS_TIMEOUT) -> CliResult:
    """Run ``command`` without a PTY; stdout and stderr apart (status commands)."""
    chan = client.get_transport().open_session(timeout=timeout)
    chan.settimeout(timeout)
    chan.exec_command(command)
    chan.shutdown_write()
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    try:
        while not (chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()):
            if time.monotonic() > deadline:
                return CliResult(-1, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), timed_out=True)
            if chan.recv_ready():
                out += chan.recv(32768)
            elif chan.recv_stderr_ready():
                err += chan.recv_stderr(32768)
            else:
                select.select([chan], [], [], 0.2)
        return CliResult(int(chan.recv_exit_status()), out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    finally:
        chan.close()


def run_manual_login(
    target: SshTarget,
    tool: str,
    *,
    method: str | None = None,
    tool_path: str | None = None,
    stdin_fd: int | None = None,
    out: IO[bytes] | None = None,
    timeout: float = LOGIN_TIMEOUT,
    on_output: Callable[[bytes], None] | None = None,
) -> LoginOutcome:
    """Log ``tool`` in on ``target`` interactively, then verify with its status command."""
    command = as_service_user(login_command(tool, method, tool_path), target.user, target.run_as)
    verify = as_service_user(status_command(tool, tool_path), target.user, target.run_as, non_interactive=True)
    out = out if out is not None else sys.stdout.buffer
    client = connect(target)
    try:
        chan = client.get_transport().open_session(timeout=target.connect_timeout)
        size = shutil.get_terminal_size((100, 30))
        chan.get_pty(term=os.environ.get("TERM", "xterm"), width=size.columns, height=size.lines)
        chan.exec_command(command)
        with _raw_terminal(stdin_fd):
            try:
                login_exit = relay(chan, stdin_fd, out, timeout=timeout, on_output=on_output)
            finally:
                chan.close()
        result = run_remote(client, verify)
    finally:
        client.close()
    if result.timed_out:
        return LoginOutcome(tool, login_exit, ERROR, f"{verify} timed out", result.returncode)
    if target.run_as and target.run_as != target.user and sudo_refused(result):
        reason = result.stderr.strip().splitlines()[0] if result.stderr.strip() else "sudo -n failed"
        return LoginOutcome(tool, login_exit, ERROR, f"not verified over SSH: {reason}", result.returncode,
                            verified=False)
    status, reason = interpret_status(tool, result)
    return LoginOutcome(tool, login_exit, status, reason, result.returncode)
