"""Env manifest and env checks on real project directories, with the real supervisor process and a real
agent-side NodeEnvService behind a real SupervisorConnection: the manifest is validated (both formats, bad ones
rejected with paths), pushed on registration and on change, each check category passes and fails, per-project
overrides apply, results are stored and `env.check.fail` / `env.drift.detected` events are routed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.support.agent_side import EnvAgent
from tests.support.api import aclient, events, wait_api
from tests.support.halctl import ahalctl
from tests.support.projects import make_repo, probed, stand_in_tool, tool_env
from tests.support.supervisor_proc import InstalledSupervisorProc

REMOTE = "https://git.example.invalid/team/alpha.git"
GO_EXAMPLE = (Path(__file__).resolve().parents[1] / "fixtures/configs/go/env-manifest.example.json").read_text()
HOOK = "#!/bin/sh\nexit 0\n"


def manifest() -> dict[str, Any]:
    """Spec 8.1 format: `defaults` for every project, `good`/`bad` override parts of it."""
    return {
        "version": "1.0",
        "templates": {"AGENT.md": "# {{project}}\n\nModel: {{model}}. Remote: {{git_remote}}.\n"},
        "defaults": {
            "runtime": {"python": ">=3.8"},
            "tools": {"haltool": ">=1.2", "git": ">=2.0"},
            "env_vars": {"HAL_TEST_TOKEN": "required", "HAL_TEST_OPTIONAL": "optional", "HAL_TEST_MODE": "ci"},
            "agent_config": {"AGENT.md": "AGENT.md", "context_dir": ".context/", "required_docs": ["README.md"],
                             "model": "model-x"},
            "git": {"remote": REMOTE, "branch": "main", "hooks": ["pre-commit", "commit-msg"],
                    "config": {"core.autocrlf": "input", "user.name": "required"}},
            "docs": {"recommended": ["ARCHITECTURE.md"]},
            "native_libs": ["c"],
            "disk": {"min_free_gb": 0.001},
        },
        "projects": {
            "good": {},
            "bad": {
                "runtime": {"python": ">=99"},
                "tools": {"missingtool": "", "haltool": ">=2.0"},
                "env_vars": {"HAL_TEST_MISSING": "required", "HAL_TEST_UNSET_OPT": "optional", "HAL_TEST_MODE": "prod"},
                "git": {"branch": "release"},
                "docs": {"required": ["SPEC.md"]},
                "native_libs": ["c", "halnosuchlib"],
                "disk": {"min_free_gb": 1e9},
            },
        },
    }


def good_agent_md() -> str:
    return f"# good\n\nModel: model-x. Remote: {REMOTE}.\n"


def _make_projects(tmp_path: Path) -> dict[str, str]:
    env = tool_env(tmp_path / "tools")
    stand_in_tool(tmp_path / "tools" / "bin", "haltool", "1.4.2")
    return env | {"HAL_TEST_TOKEN": "x-secret-value-x", "HAL_TEST_MODE": "ci", "HAL_TEST_OPTIONAL": "1"}


def _projects(tmp_path: Path, env: dict[str, str]) -> dict[str, Path]:
    good = make_repo(tmp_path / "projects" / "good", env, remote=REMOTE,
                     hooks={"pre-commit": HOOK, "commit-msg": HOOK}, config={"core.autocrlf": "input"},
                     files={"README.md": "# good\n", "ARCHITECTURE.md": "# arch\n", "AGENT.md": good_agent_md(),
                            ".context/CURRENT_TASK.md": "task\n", ".context/PROGRESS.md": "# Progress\n"})
    bad = make_repo(tmp_path / "projects" / "bad", env, remote="https://elsewhere.invalid/x.git",
                    hooks={"pre-commit": HOOK}, config={"core.autocrlf": "true"}, files={"notes.txt": "x\n"})
    (bad / ".git" / "hooks" / "pre-commit").chmod(0o644)  # present but not executable
    (bad / "AGENT.md").write_text("# bad\nhand written\n")
    return {"good": good, "bad": bad}


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    sups: list[InstalledSupervisorProc] = []
    agents: list[EnvAgent] = []
    made: dict[str, Any] = {}

    async def factory(*, start_agent: bool = True, sup: InstalledSupervisorProc | None = None,
                      **extra: Any) -> tuple[InstalledSupervisorProc, EnvAgent | None, dict[str, Path], dict[str, str]]:
        if sup is None:
            sup = InstalledSupervisorProc(tmp_path / "sup", extra=extra)
            sups.append(sup)
            sup.start()
        env, dirs = made.get("env") or _make_projects(tmp_path), made.get("dirs")
        if dirs is None:
            dirs = made["dirs"] = _projects(tmp_path, env)
        made["env"] = env
        agent = None
        if start_agent:
            agent = EnvAgent(sup, "env-node-1", tmp_path / "agent", {k: str(v) for k, v in dirs.items()}, env,
                             probe_tools=probed("haltool", "missingtool"))
            agents.append(agent)
            await agent.start()
        return sup, agent, dirs, env

    yield factory
    for a in agents:
        await a.stop()
    for s in sups:
        s.stop()


def by_key(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{i['category']}:{i['item']}": i for i in result["items"]}


async def test_bad_manifests_are_rejected_with_paths(stack: Callable[..., Any], tmp_path: Path) -> None:
    sup, _, _, _ = await stack(start_agent=False)
    async with aclient(sup) as c:
        r = await c.get("/env/manifest")
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
        go_bad = json.loads(GO_EXAMPLE)
        go_bad["version"] = "1.0.0"
        go_bad["requirements"]["tools"]["git"] = "latest"
        go_bad["requirements"]["env_vars"]["OPENAI_API_KEY"] = "maybe"
        go_bad["projects"]["my-project"]["requirements"]["runtime"]["node"] = "bad"
        r = await c.put("/env/manifest", json=go_bad)
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["code"] == "VALIDATION_ERROR"
        paths = [p.split(": ", 1)[0] for p in body["problems"]]
        assert paths == ["projects.my-project.requirements.runtime.node", "requirements.env_vars.OPENAI_API_KEY",
                         "requirements.tools.git", "version"]
        assert "version: must be in format X.Y (two numeric parts) (got '1.0.0')" in body["problems"]
        assert "requirements.tools.git: must be valid semver constraint" in body["error"]

        spec_bad = manifest()
        spec_bad["projects"]["bad"]["git"] = {"hooks": ["on-save"]}
        spec_bad["projects"]["good"]["agent_config"] = {"AGENT.md": "templates/nowhere/AGENT.md"}
        r = await c.put("/env/manifest", json=spec_bad)
        assert r.status_code == 400
        assert r.json()["problems"] == [
            "projects.bad.git.hooks[0]: must be a valid git hook name (got 'on-save')",
            "projects.good.agent_config[\"AGENT.md\"]: template 'templates/nowhere/AGENT.md' not found (not in "
            "templates, no such file on the supervisor)"]
        assert (await c.put("/env/manifest", content=b"[1, 2]")).json()["problems"] == [
            "(root): manifest must be a JSON object"]
        assert (await c.put("/env/manifest", content=b"{nope")).status_code == 400
        assert (await c.get("/env/manifest")).status_code == 404  # nothing stored

        # the Go example is accepted as it is (201 on the first store, 200 after)
        r = await c.put("/env/manifest", content=GO_EXAMPLE.encode())
        assert r.status_code == 201, r.text
        assert r.json()["data"]["format"] == "go" and r.json()["data"]["version"] == 1
        r = await c.put("/env/manifest", json=manifest())
        assert r.status_code == 200 and r.json()["data"]["format"] == "spec" and r.json()["data"]["version"] == 2
        r = await c.put("/env/manifest", json=manifest())
        assert r.json()["data"]["changed"] is False and r.json()["data"]["version"] == 2
        got = await c.get("/env/manifest")
        assert got.json()["data"] == manifest() and got.json()["meta"]["version"] == 2

    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("version: '1'\nrequirements:\n  docs: {}\n")
    out = await ahalctl(sup, "env", "manifest", "set", str(bad_file))
    assert out.returncode == 1
    assert "version: must be in format X.Y" in out.stderr and "requirements.docs: must have at least one" in out.stderr
    events_ = await events(sup, "env.manifest.updated")
    assert [e["data"]["version"] for e in events_] == [1, 2]


async def test_each_category_passes_and_fails(stack: Callable[..., Any]) -> None:
    sup, agent, _, _ = await stack()
    async with aclient(sup) as c:
        r = await c.put("/env/manifest", json=manifest())
        assert r.status_code == 201 and r.json()["data"]["pushed_to"] == ["env-node-1"]
    # pushed on change: the agent checks every project without being asked by an operator
    status = await wait_api(sup, "/env/status", lambda d: {r["project"]: r["status"] for r in d}
                            == {"bad": "missing", "good": "ready"})
    assert all(r["manifest_version"] == 1 and not r["stale"] for r in status)
    assert agent is not None and agent.of_type("env_check")[0].args["manifest_version"] == 1

    node = await wait_api(sup, "/env/status/env-node-1", lambda d: len(d["projects"]) == 2)
    res = {p["project"]: p for p in node["projects"]}
    good = by_key(res["good"])
    assert {k: i["status"] for k, i in good.items() if i["status"] != "pass"} == {}
    assert good["runtime:python"]["actual"].startswith("3.")
    assert good["tools:haltool"]["actual"] == "1.4.2"
    assert good["env_vars:HAL_TEST_TOKEN"]["actual"] == "set"  # values are never shown
    assert good["env_vars:HAL_TEST_MODE"]["status"] == "pass"
    assert good["agent_config:AGENT.md"]["actual"] == good["agent_config:AGENT.md"]["expected"]
    assert good["git:remote.origin"]["actual"] == REMOTE and good["git:branch"]["actual"] == "main"
    assert good["git:config.user.name"]["actual"] == "Test User"  # read with `git -C <project dir>`
    assert {"context:.context/", "context:.context/CURRENT_TASK.md", "docs:README.md", "docs:ARCHITECTURE.md",
            "native_libs:c", "disk:free_space", "git:hooks/commit-msg"} <= set(good)
    assert good["env_vars:HAL_TEST_OPTIONAL"]["status"] == "pass"

    bad = by_key(res["bad"])
    expect = {
        "runtime:python": ("fail", "risky"),
        "tools:haltool": ("fail", "risky"),  # 1.4.2 does not meet the project's override >=2.0
        "tools:missingtool": ("fail", "risky"),
        "env_vars:HAL_TEST_MISSING": ("fail", "manual"),
        "env_vars:HAL_TEST_UNSET_OPT": ("warn", "manual"),
        "env_vars:HAL_TEST_MODE": ("fail", "safe"),  # set, but not to the manifest's value
        "agent_config:AGENT.md": ("warn", "manual"),  # exists, differs from the rendered template: drift
        "context:.context/": ("fail", "safe"),
        "context:.context/PROGRESS.md": ("fail", "safe"),
        "context:.context/CURRENT_TASK.md": ("fail", "safe"),
        "git:remote.origin": ("fail", "manual"),
        "git:branch": ("fail", "manual"),
        "git:hooks/pre-commit": ("fail", "risky"),  # not executable: hooks are code, only after approval
        "git:hooks/commit-msg": ("fail", "risky"),  # missing
        "git:config.core.autocrlf": ("fail", "manual"),  # set to another value
        "docs:SPEC.md": ("fail", "safe"),
        "docs:ARCHITECTURE.md": ("warn", "manual"),
        "native_libs:halnosuchlib": ("fail", "risky"),
        "disk:free_space": ("fail", "risky"),
    }
    for key, (st, fix) in expect.items():
        assert (bad[key]["status"], bad[key]["fix"]) == (st, fix), (key, bad[key])
    assert bad["git:hooks/pre-commit"]["actual"] == "not executable"
    assert bad["git:branch"]["actual"] == "main" and bad["git:branch"]["expected"] == "release"
    assert bad["agent_config:AGENT.md"]["drift"] is True
    assert bad["native_libs:c"]["status"] == "pass" and bad["docs:README.md"]["status"] == "fail"
    assert bad["tools:git"]["status"] == "pass"  # the defaults still apply where the project says nothing

    # events: env.check.fail for bad only, env.drift.detected with the failing items
    fails = await events(sup, "env.check.fail", node_id="env-node-1")
    assert [e["project"] for e in fails] == ["bad"]
    assert "runtime:python" in fails[0]["data"]["failed"]
    drift = await events(sup, "env.drift.detected", node_id="env-node-1")
    assert [e["project"] for e in drift] == ["bad"]
    assert {f"{i['category']}:{i['item']}" for i in drift[0]["data"]["items"]} == set(expect) | {"docs:README.md"}

    # a second check with nothing changed: stored again, no new events
    async with aclient(sup) as c:
        r = await c.post("/env/check/env-node-1", json={"project": "bad"})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["status"] == "missing" and [x["project"] for x in data["results"]] == ["bad"]
        drift_list = (await c.get("/env/drift")).json()
    assert len(await events(sup, "env.check.fail")) == 1 and len(await events(sup, "env.drift.detected")) == 1
    assert {d["project"] for d in drift_list["data"]} == {"bad"} and drift_list["meta"]["nodes"] == ["env-node-1"]

    # the manifest travels only when the node may not have it; a node that lost it gets it again
    assert agent is not None and agent.service is not None
    assert "manifest" not in agent.of_type("env_check")[-1].args
    agent.service.manifest = agent.service.manifest_digest = None  # e.g. a wiped data_dir
    seen = len(agent.of_type("env_check"))
    async with aclient(sup) as c:
        r = await c.post("/env/check/env-node-1", json={"project": "good"})
    assert r.status_code == 200 and r.json()["data"]["status"] == "ready"
    # The operator's check goes out without the manifest, is refused (manifest_outdated) and is sent
    # again with it (other checks, e.g. a periodic one, may interleave under load).
    mine = [c for c in agent.of_type("env_check")[seen:] if c.args.get("project") == "good"]
    assert "manifest" not in mine[0].args and any(c.args.get("manifest") == manifest() for c in mine[1:])
    assert agent.service.manifest_version == 1

    # halctl views
    out = await ahalctl(sup, "-o", "table", "env", "status")
    assert out.returncode == 0, out.stderr
    lines = [ln.split() for ln in out.stdout.splitlines()]
    assert lines[1][:3] == ["env-node-1", "bad", "missing"] and lines[2][:3] == ["env-node-1", "good", "ready"]
    out = await ahalctl(sup, "env", "status")  # piped without --output: one key: value line per item
    assert [ln.split("  ")[:3] for ln in out.stdout.splitlines()] == [
        ["node: env-node-1", "project: bad", "status: missing"], ["node: env-node-1", "project: good", "status: ready"]]
    out = await ahalctl(sup, "env", "check", "--project", "good")
    assert out.returncode == 0 and "env-node-1/good: ready (pass" in out.stdout
    out = await ahalctl(sup, "env", "drift", "--project", "bad")
    assert out.returncode == 0 and "halnosuchlib" in out.stdout and "good" not in out.stdout
    out = await ahalctl(sup, "env", "check", "--node", "env-node-1", "-o", "json")
    data = json.loads(out.stdout)
    assert [r["status"] for r in data["results"]] == ["missing", "ready"]


async def test_manifest_pushed_on_registration_and_go_overrides(stack: Callable[..., Any], tmp_path: Path) -> None:
    sup, _, _, _ = await stack(start_agent=False)
    go = json.loads(GO_EXAMPLE)
    go["requirements"] = {"runtime": {"python": ">=3.8"}, "docs": {"required": ["README.md"]},
                          "git": {"config": {"user.email": "required"}}}
    go["projects"] = {"good": {"requirements": {"runtime": {"python": ">=99"}}}}
    async with aclient(sup) as c:
        assert (await c.put("/env/manifest", json=go)).status_code == 201
    # the agent registers afterwards: it gets the manifest with an env_check right away
    _, agent, _, _ = await stack(sup=sup)
    status = await wait_api(sup, "/env/status", lambda d: sum(1 for r in d if r["checked_at"]) == 2)
    assert {r["project"]: r["status"] for r in status} == {"bad": "missing", "good": "missing"}
    node = await wait_api(sup, "/env/status/env-node-1", lambda d: len(d["projects"]) == 2)
    res = {p["project"]: by_key(p) for p in node["projects"]}
    assert res["good"]["runtime:python"]["expected"] == ">=99"  # the project's override
    assert res["bad"]["runtime:python"]["expected"] == ">=3.8" and res["bad"]["runtime:python"]["status"] == "pass"
    assert res["good"]["git:config.user.email"]["status"] == "pass"  # "required" means set, not the literal
    assert agent is not None and agent.service is not None and agent.service.manifest_version == 1
    # the agent keeps the manifest for commands that come without one (Go's POST /commands)
    assert json.loads((tmp_path / "agent" / "env" / "manifest.json").read_text())["version"] == 1
    async with aclient(sup) as c:
        r = await c.post("/commands", json={"type": "check_env", "target": "good"})
        assert r.status_code == 200 and r.json()["data"]["output"]["status"] == "missing"
        assert r.json()["data"]["output"]["source"] == "supervisor"
    # `/env/status/{project}` (the Go path) answers per node
    d = await wait_api(sup, "/env/status/good", lambda d: d["nodes"])
    assert d["project"] == "good" and d["nodes"][0]["node_id"] == "env-node-1"
