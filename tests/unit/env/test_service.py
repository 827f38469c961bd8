"""NodeEnvService on real directories (git repos in tmp), without a supervisor: fact gathering, the Go
fallback manifest, timeouts of version probes, the AGENT.md commands, failures as one-line errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from halswarm.agent.env import NodeEnvService
from halswarm.agent.env.facts import ndk_probe, probe_version, run
from halswarm.agent.env.service import node_probes
from halswarm.core.manifest.requirements import VersionReq
from halswarm.core.probe_rules import NOT_KNOWN
from halswarm.protocol import Command, CommandTarget
from tests.support.projects import make_repo, stand_in_tool, tool_env

pytestmark = pytest.mark.process  # runs git and probe processes


def cmd(ctype: str, project: str | None = None, **args: object) -> Command:
    return Command(f"c-{ctype}-{time.monotonic_ns()}", ctype, CommandTarget(project=project), dict(args))


async def test_probe_timeout_kills_the_process(tmp_path: Path) -> None:
    env = tool_env(tmp_path)
    slow = tmp_path / "bin" / "slowtool"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    started = time.monotonic()
    probe = await probe_version(VersionReq("tools", "slowtool", ">=1"), env, timeout=0.5,
                                probes=node_probes({"slowtool": ["slowtool", "--version"]}))
    assert time.monotonic() - started < 5
    assert not probe.found and probe.error == "slowtool: timed out after 0.5 s"
    rc, out = await run(["definitely-not-a-program-xyz"], env=env)
    assert rc == 127 and "not found" in out


async def test_probe_never_runs_the_manifests_command_and_reads_exit_status(tmp_path: Path) -> None:
    env = tool_env(tmp_path)
    stand_in_tool(tmp_path / "bin", "mytool", "3.2.1")
    probes = node_probes({"mytool": ["mytool", "--version"], "broken": ["broken", "--version"]})
    marker = tmp_path / "PWNED"
    evil = VersionReq("tools", "mytool", command=("sh", "-c", f"touch {marker}"))
    p = await probe_version(evil, env, 5, None, probes)
    assert not p.found and p.skipped and "approval" in p.skipped and not marker.exists()
    p = await probe_version(VersionReq("tools", "../bin/mytool"), env, 5, None, probes)  # not a name it knows
    assert not p.found and p.skipped and "not a known tool" in p.skipped
    p = await probe_version(VersionReq("tools", "mytool"), env, 5, None, probes)
    assert p.found and p.version == "3.2.1"
    failing = tmp_path / "bin" / "broken"
    failing.write_text("#!/bin/sh\necho 'broken 1.0'\nexit 2\n")
    failing.chmod(0o755)
    p = await probe_version(VersionReq("tools", "broken"), env, 5, None, probes)
    assert p.found and p.version == "1.0.0" and p.error is not None and "exited 2" in p.error


async def test_a_tool_the_node_does_not_list_is_never_run(tmp_path: Path) -> None:
    """A plain name on the node's PATH (a stand-in for `reboot`) is not run because a manifest names it;
    the node's env.probe_tools (or the built-in table) decides, with a fixed argv."""
    env = tool_env(tmp_path)
    marker = tmp_path / "RAN"
    tool = tmp_path / "bin" / "halreboot"
    tool.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\necho 'halreboot 1.0.0'\n")
    tool.chmod(0o755)
    p = await probe_version(VersionReq("tools", "halreboot"), env, 5)
    assert not p.found and p.skipped == NOT_KNOWN and not marker.exists()
    p = await probe_version(VersionReq("tools", "halreboot"), env, 5, None, node_probes({"git": ["git", "--version"]}))
    assert p.skipped == NOT_KNOWN and not marker.exists()
    p = await probe_version(VersionReq("tools", "halreboot"), env, 5, None,
                            node_probes({"halreboot": ["halreboot", "-V"]}))
    assert p.found and p.version == "1.0.0" and marker.read_text() == "-V\n"  # the node's argv, exactly
    assert node_probes({})["claude_code"] == ("claude", "--version")
    assert node_probes({}, {"claude": "/opt/claude"})["claude"] == ("/opt/claude", "--version")


def test_ndk_probe(tmp_path: Path) -> None:
    sdk = tmp_path / "sdk"
    for version in ("25.2.9519653", "26.1.10909125"):
        d = sdk / "ndk" / version
        d.mkdir(parents=True)
        (d / "source.properties").write_text(f"Pkg.Desc = Android NDK\nPkg.Revision = {version}\n")
    p = ndk_probe({"ANDROID_HOME": str(sdk)})
    assert p.found and p.version == "26.1.10909125" and p.output.endswith("26.1.10909125")
    assert not ndk_probe({}).found


async def test_check_provision_and_agent_md_commands(tmp_path: Path) -> None:
    env = tool_env(tmp_path / "tools")
    repo = make_repo(tmp_path / "alpha", env)
    other = make_repo(tmp_path / "beta", env)
    # the Go fallback: a manifest in the project directory (no supervisor manifest yet)
    (other / "env-manifest.json").write_text(json.dumps({"version": "1.0", "requirements": {
        "docs": {"required": ["CONTRIBUTING.md"]}}}))
    svc = NodeEnvService(projects=lambda: {"alpha": str(repo), "beta": str(other)}, data_dir=tmp_path / "data",
                     node_id="n1", base_env=env)
    h = svc.handlers()
    assert set(h) >= {"env_check", "check_env", "env_provision", "provision_env", "agentmd_show", "agentmd_diff",
                      "agentmd_sync", "sync_agentmd", "diff_agentmd", "show_agentmd"}
    r = await h["check_env"](cmd("check_env"))
    assert r.status == "success"
    by = {x["project"]: x for x in r.output["results"]}
    assert by["alpha"]["source"] == "none" and by["alpha"]["status"] == "ready" and not by["alpha"]["managed"]
    assert by["beta"]["source"] == "project_file" and by["beta"]["status"] == "missing"
    assert "project" not in r.output  # several projects: no Go single-project shape

    doc = {"version": "1.0", "templates": {"AGENT.md": "# {{project}}\n"}, "projects": {"alpha": {
        "agent_config": {"context_dir": ".ctx"}, "env_vars": {"HAL_X": "1"}}}}
    r = await h["env_check"](cmd("env_check", "alpha", manifest=doc, manifest_version=7))
    assert r.output["project"] == "alpha" and r.output["status"] == "missing" and r.output["manifest_version"] == 7
    saved = json.loads((tmp_path / "data" / "env" / "manifest.json").read_text())
    assert saved["version"] == 7 and saved["manifest"] == doc
    # a fresh service picks the kept manifest up
    svc2 = NodeEnvService(projects=lambda: {"alpha": str(repo)}, data_dir=tmp_path / "data", base_env=env)
    assert svc2.manifest_version == 7 and svc2.manifest == doc

    r = await h["env_provision"](cmd("env_provision", "alpha", dry_run="true"))
    assert r.output["status"] == "planned" and not (repo / "AGENT.md").exists()
    r = await h["env_provision"](cmd("env_provision", "alpha"))
    assert r.output["status"] == "completed", r.output
    assert (repo / "AGENT.md").read_text() == "# alpha\n" and (repo / ".ctx" / "PROGRESS.md").is_file()
    assert r.output["check"]["status"] == "ready" and svc.managed_env() == {"HAL_X": "1"}
    assert svc.snapshot()["status"]["alpha"] == "ready"

    show = (await h["agentmd_show"](cmd("agentmd_show", "alpha"))).output
    assert show["in_sync"] and show["content"] == "# alpha\n" and show["sha256"] == show["template_sha256"]
    (repo / "AGENT.md").write_text("# alpha\nmine\n")
    diff = (await h["agentmd_diff"](cmd("agentmd_diff", "alpha"))).output
    assert diff["status"] == "modified" and "-mine\n" in diff["diff"]
    sync = (await h["agentmd_sync"](cmd("agentmd_sync", "alpha"))).output
    assert sync["status"] == "modified" and (repo / "AGENT.md").read_text() == "# alpha\nmine\n"
    sync = (await h["agentmd_sync"](cmd("agentmd_sync", "alpha", force=True))).output
    assert sync["status"] == "synced" and (repo / "AGENT.md").read_text() == "# alpha\n"
    sync = (await h["agentmd_sync"](cmd("agentmd_sync", "alpha"))).output
    assert sync["status"] == "already_synced"


@pytest.mark.parametrize(("ctype", "project", "error"), [
    ("agentmd_diff", None, "agentmd_diff: a project is required (target.project or args.project)"),
    ("env_check", "nope", "project nope is not configured on this node"),
    ("env_provision", "nope", "project nope is not configured on this node"),
])
async def test_failures_are_one_line(tmp_path: Path, ctype: str, project: str | None, error: str) -> None:
    svc = NodeEnvService(projects=lambda: {}, data_dir=tmp_path, base_env={})
    r = await svc.handlers()[ctype](cmd(ctype, project))
    assert r.status == "failure" and r.error == error


async def test_missing_directory_is_reported(tmp_path: Path) -> None:
    svc = NodeEnvService(projects=lambda: {"gone": str(tmp_path / "gone")}, data_dir=tmp_path, base_env={})
    r = await svc.handlers()["env_check"](cmd("env_check"))
    assert r.output["results"][0]["status"] == "missing" and "does not exist" in r.output["results"][0]["error"]
    r = await svc.handlers()["env_provision"](cmd("env_provision", "gone"))
    assert r.status == "failure" and "does not exist" in (r.error or "")


async def test_manifest_outdated_when_the_kept_manifest_differs(tmp_path: Path) -> None:
    svc = NodeEnvService(projects=lambda: {"a": str(tmp_path)}, data_dir=tmp_path / "data", base_env={})
    h = svc.handlers()
    r = await h["env_check"](cmd("env_check", "a", manifest_digest="abc", manifest_version=3))
    assert r.status == "failure" and (r.error or "").startswith("manifest_outdated: this node has manifest none")
    doc = {"version": "1.0", "projects": {"a": {}}}
    r = await h["env_check"](cmd("env_check", "a", manifest=doc, manifest_version=3))
    assert r.status == "success" and r.output["manifest_digest"] == svc.manifest_digest
    r = await h["env_check"](cmd("env_check", "a", manifest_digest=svc.manifest_digest, manifest_version=3))
    assert r.status == "success" and svc.snapshot()["manifest_digest"] == svc.manifest_digest


SYNC_CHILD = """
import asyncio, json, resource, signal, sys, time
from halswarm.agent.env import NodeEnvService
from halswarm.protocol import Command, CommandTarget
repo, data = sys.argv[1], sys.argv[2]
doc = {"version": "1.0", "templates": {"AGENT.md": "# alpha\\n" + "x" * 4096}, "projects": {"alpha": {}}}
svc = NodeEnvService(projects=lambda: {"alpha": repo}, data_dir=data, base_env={})
svc.adopt({"manifest": doc, "manifest_version": 1})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))  # writes past 1 KiB fail with EFBIG, even as root
cmd = Command("c1", "agentmd_sync", CommandTarget(project="alpha"), {"force": True})
r = asyncio.run(svc.handlers()["agentmd_sync"](cmd))
print(json.dumps({"status": r.status, "error": r.error, "output": r.output}))
"""


def test_forced_sync_that_cannot_write_fails(tmp_path: Path) -> None:
    """A failed write is a command failure with a one-line reason, never ``synced`` (a real EFBIG from a
    file size limit in a child process: works as root, where a read-only directory would not stop it)."""
    import subprocess
    import sys

    from tests.support.supervisor_proc import REPO

    repo = tmp_path / "alpha"
    repo.mkdir()
    (repo / "AGENT.md").write_text("# alpha\nmine\n")
    out = subprocess.run([sys.executable, "-c", SYNC_CHILD, str(repo), str(tmp_path / "data")], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["status"] == "failure" and res["output"] is None, res
    assert res["error"].startswith(f"project alpha: cannot write {repo / 'AGENT.md'}: File too large")
    assert "\n" not in res["error"]
    assert (repo / "AGENT.md").read_text() == "# alpha\nmine\n"  # untouched
    assert [p.name for p in repo.iterdir()] == ["AGENT.md"]  # no temporary file left behind


async def test_sync_onto_a_directory_fails(tmp_path: Path) -> None:
    repo = tmp_path / "alpha"
    (repo / "AGENT.md").mkdir(parents=True)
    svc = NodeEnvService(projects=lambda: {"alpha": str(repo)}, data_dir=tmp_path / "data", base_env={})
    h = svc.handlers()
    doc = {"version": "1.0", "templates": {"AGENT.md": "# alpha\n"}, "projects": {"alpha": {}}}
    for force in (False, True):
        r = await h["agentmd_sync"](cmd("agentmd_sync", "alpha", force=force, manifest=doc, manifest_version=1))
        assert r.status == "failure" and r.output is None
        assert r.error == f"project alpha: {repo / 'AGENT.md'} is not a regular file; AGENT.md not written"
    assert (repo / "AGENT.md").is_dir()
