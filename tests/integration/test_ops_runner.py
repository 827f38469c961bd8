"""halswarm.ops.runner and `halctl deploy|upgrade|rollback` without containers: real ansible-runner
runs of small local playbooks (progress lines, recap, artifacts, exit codes, check mode diffs,
cancellation) and the CLI's argument handling."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from halswarm.cli.errors import UsageProblem
from halswarm.cli.ops_cmd import parse_extra_vars
from halswarm.ops.runner import PlaybookRun, ProgressFormatter, host_address, resolve_playbook, run_playbook
from tests.support.fleet.env import ROOT, ansible_env

pytestmark = pytest.mark.timeout(180)

LOCAL_INVENTORY = "localhost ansible_connection=local ansible_python_interpreter={python}\n"


def _inventory(tmp_path: Path) -> str:
    inv = tmp_path / "hosts"
    inv.write_text(LOCAL_INVENTORY.format(python=sys.executable))
    return str(inv)


def _playbook(tmp_path: Path, body: str) -> str:
    path = tmp_path / "play.yml"
    path.write_text(body)
    return str(path)


def test_successful_run_progress_recap_and_artifacts(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    book = _playbook(tmp_path, f"""
- name: Tiny play
  hosts: all
  gather_facts: false
  tasks:
    - name: Write a file
      ansible.builtin.copy:
        content: "{{{{ greeting }}}}\\n"
        dest: {target}
        mode: "0600"
""")
    lines: list[str] = []
    spec = PlaybookRun(playbook=book, inventories=[_inventory(tmp_path)], extravars={"greeting": "hello"},
                       state_dir=tmp_path / "state")
    result = run_playbook(spec, emit=lines.append)
    assert result.exit_code == 0 and result.status == "successful"
    assert target.read_text() == "hello\n"
    text = "\n".join(lines)
    assert "PLAY Tiny play" in text and "TASK Write a file" in text and "changed     localhost" in text
    assert lines[-2] == "RECAP" and "changed=1" in lines[-1]
    assert result.stats["localhost"].changed == 1
    assert (result.artifact_dir / "job_events").is_dir() and (result.artifact_dir / "rc").read_text() == "0"
    assert result.artifact_dir.parents[1].parent == tmp_path / "state" / "runs"

    # Check mode with a change pending: reported with its diff, nothing written.
    lines.clear()
    check = run_playbook(PlaybookRun(playbook=book, inventories=[_inventory(tmp_path)], check=True,
                                     extravars={"greeting": "bye"}, state_dir=tmp_path / "state"),
                         emit=lines.append)
    assert check.exit_code == 0 and target.read_text() == "hello\n"
    assert any(line.strip() == "-hello" for line in lines) and any(line.strip() == "+bye" for line in lines)


def test_failed_run_exit_code_and_failure(tmp_path: Path) -> None:
    book = _playbook(tmp_path, """
- name: Failing play
  hosts: all
  gather_facts: false
  tasks:
    - name: Fail on purpose
      ansible.builtin.fail:
        msg: broken on purpose
""")
    lines: list[str] = []
    result = run_playbook(PlaybookRun(playbook=book, inventories=[_inventory(tmp_path)],
                                      state_dir=tmp_path / "state"), emit=lines.append)
    assert result.exit_code == 1 and result.status == "failed"
    assert result.failures == [("localhost", "Fail on purpose", "broken on purpose")]
    assert any("FAILED      localhost: broken on purpose" in line for line in lines)


def test_cancel_stops_the_playbook(tmp_path: Path) -> None:
    marker = tmp_path / "slept"
    book = _playbook(tmp_path, f"""
- name: Slow play
  hosts: all
  gather_facts: false
  tasks:
    - name: Sleep
      ansible.builtin.command: sleep 60
      changed_when: false
    - name: Never reached
      ansible.builtin.file:
        path: {marker}
        state: touch
        mode: "0600"
""")
    cancel = threading.Event()
    threading.Timer(4, cancel.set).start()
    started = time.monotonic()
    result = run_playbook(PlaybookRun(playbook=book, inventories=[_inventory(tmp_path)],
                                      state_dir=tmp_path / "state"), emit=lambda _line: None, cancel=cancel)
    assert result.status == "canceled" and result.exit_code == 130
    assert time.monotonic() - started < 40
    assert not marker.exists()
    assert subprocess.run(["pgrep", "-f", "sleep 60"], capture_output=True, check=False).returncode != 0


def test_progress_formatter_lines() -> None:
    lines: list[str] = []
    fmt = ProgressFormatter(lines.append)
    fmt({"event": "playbook_on_task_start", "event_data": {"task": "Install"}})
    fmt({"event": "runner_on_ok", "event_data": {"host": "h1", "task": "Install", "res": {"changed": False}}})
    fmt({"event": "runner_on_unreachable", "event_data": {"host": "h2", "task": "Install", "res": {"msg": "no route"}}})
    fmt({"event": "playbook_on_stats", "event_data": {"ok": {"h1": 3}, "dark": {"h2": 1}}})
    assert any(line.endswith("TASK Install") for line in lines)
    assert not any("ok" in line and "h1" in line for line in lines)  # plain ok only with -v
    assert any("UNREACHABLE h2: no route" in line for line in lines)
    assert fmt.failures == [("h2", "Install", "unreachable: no route")]
    recap = fmt.recap()
    assert recap[0] == "RECAP" and "ok=3" in recap[1] and "unreachable=1" in recap[2]


def test_playbook_names_and_extra_vars() -> None:
    assert resolve_playbook("deploy") == "halswarm.ops.deploy"
    assert resolve_playbook("backup.yml") == "halswarm.ops.backup"
    assert resolve_playbook("halswarm.ops.rollback") == "halswarm.ops.rollback"
    assert resolve_playbook(str(ROOT / "playbooks" / "deploy.yml")) == str(ROOT / "playbooks" / "deploy.yml")
    assert parse_extra_vars(("a=1", "b=x=y", '{"c": [1]}')) == {"a": "1", "b": "x=y", "c": [1]}
    with pytest.raises(UsageProblem):
        parse_extra_vars(("novalue",))


def _halctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.support.fleet.halctl", *args], cwd=ROOT,
                          env=ansible_env(), capture_output=True, text=True, timeout=120, check=False)


def test_halctl_usage_errors_and_lazy_ansible() -> None:
    bad = _halctl("deploy", "-e", "novalue")
    assert bad.returncode == 2 and bad.stderr.startswith("error: -e expects KEY=VALUE")
    wheel = _halctl("deploy", "--wheel", str(ROOT / "pyproject.toml"))
    assert wheel.returncode == 2 and "hal_o_swarm-<version>" in wheel.stderr
    # Importing the ops commands must not import Ansible (remote halctl commands stay fast).
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, halswarm.cli.ops_cmd, halswarm.ops.runner; "
                               "print(any(m == 'ansible' or m.startswith(('ansible.', 'ansible_runner')) "
                               "for m in sys.modules))"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    assert probe.stdout.strip() == "False"


def test_halctl_rollback_check_against_nothing_fails_cleanly(tmp_path: Path) -> None:
    """An inventory without the groups: the playbook has no hosts, ansible-playbook succeeds, and
    halctl reports it (exit 0) with its artifacts under --state-dir."""
    inv = tmp_path / "empty.yml"
    inv.write_text("all:\n  hosts: {}\n")
    proc = _halctl("rollback", "-i", str(inv), "--check", "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rollback succeeded" in proc.stdout and str(tmp_path / "state" / "runs") in proc.stdout


_SERIAL_PLAY = """\
- name: Agents in batches
  hosts: hal_agents
  gather_facts: false
  serial: "{{ hal_agent_batch_size | default('100%') }}"
  tasks:
    - name: Show the batch
      ansible.builtin.debug:
        msg: "batch={{ ansible_play_batch | join(',') }}"
"""


@pytest.mark.parametrize("command", ["deploy", "upgrade", "rollback"])
def test_halctl_batch_size_reaches_serial(tmp_path: Path, command: str) -> None:
    """`--batch-size` becomes the extra var `hal_agent_batch_size` that the agent plays' `serial:` reads
    (group_vars cannot: serial is computed before inventory variables exist). A stand-in collection
    first on HALCTL_COLLECTIONS_PATH holds a `<command>` playbook with the same serial expression."""
    playbooks = tmp_path / "coll" / "ansible_collections" / "halswarm" / "ops" / "playbooks"
    playbooks.mkdir(parents=True)
    (playbooks / f"{command}.yml").write_text(_SERIAL_PLAY)
    inv = tmp_path / "hosts"
    inv.write_text("[hal_agents]\n" + "".join(
        f"a{i} ansible_connection=local ansible_python_interpreter={sys.executable}\n" for i in range(3)))
    env = ansible_env(HALCTL_COLLECTIONS_PATH=str(tmp_path / "coll"))
    state = tmp_path / "state"

    def halctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tests.support.fleet.halctl", command, "-i", str(inv),
                               "--state-dir", str(state), "-v", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    batched = halctl("--batch-size", "2")
    assert batched.returncode == 0, batched.stdout + batched.stderr
    # Two batches: a0,a1 then a2 (one play start per batch).
    assert batched.stdout.count("PLAY Agents in batches") == 2, batched.stdout
    out = "".join(p.read_text() for p in state.glob("runs/*/artifacts/run/stdout"))
    assert '"batch=a0,a1"' in out and '"batch=a2"' in out, out
    at_once = halctl()
    assert at_once.returncode == 0, at_once.stdout + at_once.stderr
    assert at_once.stdout.count("PLAY Agents in batches") == 1, at_once.stdout
    bad = halctl("--batch-size", "0")
    assert bad.returncode == 2 and "--batch-size expects a number >= 1" in bad.stderr


@pytest.mark.parametrize(("operator_env", "expected"), [(None, "True"), ("False", "False")])
def test_host_key_checking_stays_on_unless_the_operator_turns_it_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operator_env: str | None, expected: str) -> None:
    """ansible-runner would switch host key checking off by itself; halctl keeps ansible's default."""
    if operator_env is None:
        monkeypatch.delenv("ANSIBLE_HOST_KEY_CHECKING", raising=False)
    else:
        monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", operator_env)
    out = tmp_path / "hkc.txt"
    book = _playbook(tmp_path, f"""
- name: Effective config
  hosts: all
  gather_facts: false
  tasks:
    - name: Write what ansible uses
      ansible.builtin.copy:
        content: "{{{{ lookup('ansible.builtin.config', 'HOST_KEY_CHECKING') }}}}"
        dest: {out}
        mode: "0600"
""")
    result = run_playbook(PlaybookRun(playbook=book, inventories=[_inventory(tmp_path)], state_dir=tmp_path / "s"))
    assert result.exit_code == 0
    assert out.read_text() == expected


def test_host_address_follows_the_resolved_inventory(tmp_path: Path) -> None:
    """The address an approval report names comes from ansible-inventory, group_vars included."""
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("ansible_user: operator\n")
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    node-a:\n      ansible_host: 127.0.0.2\n      ansible_port: 2222\n"
                   "    node-b: {}\n")
    assert host_address(str(inv), "node-a") == "operator@127.0.0.2:2222"
    assert host_address(str(inv), "node-b") == "operator@node-b"
    assert host_address(str(inv), "node-c") is None  # not in the inventory
    assert host_address(str(tmp_path / "missing.yml"), "node-a") is None


def test_ansible_errors_before_any_task_are_shown_without_verbose() -> None:
    """Ansible's own error block (plain output, no task) reaches the operator without -v; the next
    warning ends it; no empty RECAP when no play ran."""
    lines: list[str] = []
    fmt = ProgressFormatter(lines.append)
    for text in ("/venv/x.py:18: SomeDeprecationWarning: noise", "[ERROR]: Error loading tasks: bad quotes",
                 "Origin: /tmp/play.yml:3:7", "", "3     - name: x", "[WARNING]: unrelated", "later noise"):
        fmt({"event": "verbose", "stdout": text})
    assert lines == ["[ERROR]: Error loading tasks: bad quotes", "Origin: /tmp/play.yml:3:7", "", "3     - name: x"]
    assert fmt.errors[0] == "[ERROR]: Error loading tasks: bad quotes"
    assert fmt.recap() == []


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_halctl_says_why_a_playbook_could_not_start(tmp_path: Path, verbose: list[str]) -> None:
    """A playbook Ansible cannot parse: halctl prints Ansible's error, its origin and the artifacts
    path, with or without -v (it used to print only an empty RECAP and the rc)."""
    playbooks = tmp_path / "coll" / "ansible_collections" / "halswarm" / "ops" / "playbooks"
    playbooks.mkdir(parents=True)
    (playbooks / "deploy.yml").write_text(
        "- name: Broken\n  hosts: all\n  tasks:\n    - name: x\n      ansible.builtin.debug: msg={{\n")
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-m", "tests.support.fleet.halctl", "deploy", "-i", _inventory(tmp_path),
                           "--state-dir", str(state), *verbose], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False, env=ansible_env(HALCTL_COLLECTIONS_PATH=str(tmp_path / "coll")))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[ERROR]: Error loading tasks" in done.stdout and "Origin: " in done.stdout, done.stdout
    assert "RECAP" not in done.stdout
    assert "error: deploy failed: [ERROR]: Error loading tasks" in done.stderr, done.stderr
    assert f"artifacts: {state / 'runs'}" in done.stderr
    assert done.stdout.count("[ERROR]: Error loading tasks") == 1  # -v does not print it twice
