"""The pure checkers and the planner: facts in, items / plan out (no I/O)."""

from __future__ import annotations

from halswarm.agent.env.checks import check_all
from halswarm.agent.env.facts import Facts, FileFact, GitFacts, Probe
from halswarm.agent.env.model import DEGRADED, MISSING, READY, overall
from halswarm.agent.env.plan import build_plan
from halswarm.core.manifest.requirements import requirements_for
from halswarm.core.manifest.risky import approval_token
from halswarm.core.manifest.templates import sha256_text

DOC = {
    "version": "1.0",
    "templates": {"AGENT.md": "# {{project}}\n"},
    "projects": {"p": {
        "runtime": {"node": ">=18"}, "tools": {"rg": "", "git": ">=2.30"},
        "env_vars": {"TOKEN": "required", "OPT": "optional", "MODE": "ci"},
        "agent_config": {"context_dir": ".context/", "required_docs": ["README.md"]},
        "git": {"remote": "https://x.invalid/p.git", "branch": "main", "hooks": ["pre-commit", "commit-msg"],
                "config": {"core.autocrlf": "input", "user.name": "required", "pull.rebase": "true"}},
        "docs": {"recommended": ["ARCH.md"]},
        "native_libs": ["ssl"], "runtime_extra": {},
        "disk": {"min_free_gb": 10},
    }},
}


def good_facts(req) -> Facts:  # type: ignore[no-untyped-def]
    f = Facts("/srv/p")
    f.probes = {"runtime:node": Probe(True, "20.11.1", "v20.11.1"), "tools:rg": Probe(True, "14.1.0", "ripgrep 14.1.0"),
                "tools:git": Probe(True, "2.39.5", "git version 2.39.5")}
    f.env_present = {"TOKEN": True, "OPT": True, "MODE": True}
    f.env_matches = {"MODE": True}
    f.files = {"AGENT.md": FileFact(True, True, sha256=sha256_text(req.agent_md_text), text=req.agent_md_text),
               ".context/": FileFact(True, is_dir=True), ".context/CURRENT_TASK.md": FileFact(True, True),
               ".context/PROGRESS.md": FileFact(True, True), "README.md": FileFact(True, True),
               "ARCH.md": FileFact(True, True)}
    f.git = GitFacts(True, hooks_dir="/srv/p/.git/hooks",
                     hooks={"pre-commit": FileFact(True, True, executable=True),
                            "commit-msg": FileFact(True, True, executable=True)},
                     config={"core.autocrlf": "input", "user.name": "Bot", "pull.rebase": "true"},
                     remotes={"origin": "https://x.invalid/p.git/"}, branch="main")
    f.libs = {"ssl": True}
    f.disk_free_gb = 50.0
    return f


def test_all_pass_is_ready_and_plans_nothing() -> None:
    req = requirements_for(DOC, "p")
    facts = good_facts(req)
    items = check_all(req, facts)
    assert [i.key for i in items if i.status != "pass"] == []
    assert overall(items) == READY
    plan = build_plan(req, facts, items)
    assert plan.to_dict() == {"actions": [], "pending": [], "conflicts": [], "manual": []}


def test_failures_become_actions_pending_conflicts_and_manual() -> None:
    req = requirements_for(DOC, "p")
    f = good_facts(req)
    f.probes["runtime:node"] = Probe(True, "16.20.0", "v16.20.0")
    f.probes["tools:rg"] = Probe(False, error="not found: rg")
    f.env_present.update(TOKEN=False, OPT=False)
    f.env_matches["MODE"] = False
    f.files["AGENT.md"] = FileFact(True, True, sha256="0" * 64, text="# p\nlocal edit\n")
    f.files[".context/"] = FileFact()
    f.files[".context/PROGRESS.md"] = FileFact()
    f.files["README.md"] = FileFact()
    f.files["ARCH.md"] = FileFact()
    assert f.git is not None
    f.git.hooks["pre-commit"] = FileFact(True, True, executable=False)
    f.git.hooks["commit-msg"] = FileFact()
    f.git.config.update({"core.autocrlf": None, "user.name": None, "pull.rebase": "false"})
    f.git.remotes["origin"] = None
    f.git.branch = "dev"
    f.libs["ssl"] = False
    f.disk_free_gb = 1.5
    items = check_all(req, f)
    status = {i.key: (i.status, i.fix) for i in items if i.status != "pass"}
    assert status == {
        "runtime:node": ("fail", "risky"), "tools:rg": ("fail", "risky"),
        "env_vars:TOKEN": ("fail", "manual"), "env_vars:OPT": ("warn", "manual"), "env_vars:MODE": ("fail", "safe"),
        "agent_config:AGENT.md": ("warn", "manual"), "context:.context/": ("fail", "safe"),
        "context:.context/PROGRESS.md": ("fail", "safe"), "docs:README.md": ("fail", "safe"),
        "docs:ARCH.md": ("warn", "manual"), "git:remote.origin": ("fail", "safe"), "git:branch": ("fail", "manual"),
        "git:hooks/pre-commit": ("fail", "risky"), "git:hooks/commit-msg": ("fail", "risky"),
        "git:config.core.autocrlf": ("fail", "safe"), "git:config.user.name": ("fail", "manual"),
        "git:config.pull.rebase": ("fail", "manual"), "native_libs:ssl": ("fail", "risky"),
        "disk:free_space": ("fail", "risky"),
    }
    assert overall(items) == MISSING
    assert next(i for i in items if i.key == "tools:rg").actual == "not found: rg"

    plan = build_plan(req, f, items, node_id="n1")
    assert [(a.change, a.path) for a in plan.actions] == [
        ("env_vars:MODE:env_set", ""),
        ("context:.context/:mkdir", "/srv/p/.context"),
        ("context:.context/PROGRESS.md:create", "/srv/p/.context/PROGRESS.md"),
        ("git:remote.origin:git_remote_add", "/srv/p"),
        ("git:config.core.autocrlf:git_config", "/srv/p"),
        ("docs:README.md:create", "/srv/p/README.md"),
    ]
    create = {a.item: a for a in plan.actions}
    assert create[".context/PROGRESS.md"].content == "# Progress\n" and create["README.md"].content == "# README\n"
    # hooks are code: installed or made executable only after approval, never as a safe action
    hooks = {p.id: p for p in plan.pending if p.category == "git"}
    assert set(hooks) == {"p:git:hooks/pre-commit", "p:git:hooks/commit-msg"}
    assert "commit-msg hook - hal-o-swarm managed" in hooks["p:git:hooks/commit-msg"].command
    assert hooks["p:git:hooks/commit-msg"].check == ["test", "-x", "/srv/p/.git/hooks/commit-msg"]
    assert {p.id: (p.command, p.become, p.check) for p in plan.pending if p.category != "git"} == {
        "p:runtime:node": ("apt-get install -y nodejs", True, []),
        "p:tools:rg": ("apt-get install -y rg", True, ["rg", "--version"]),
        "p:native_libs:ssl": ("apt-get install -y libssl-dev", True, []),
        "p:disk:free_space": ("git -C /srv/p gc --prune=now --quiet", False, []),
    }
    tok = next(p for p in plan.pending if p.item == "node").token
    assert tok == approval_token("p", "runtime", "node", "apt-get install -y nodejs") and len(tok) == 21
    conflicts = {c.item: c for c in plan.conflicts}
    assert set(conflicts) == {"AGENT.md", "config.pull.rebase"}
    assert conflicts["AGENT.md"].diff.splitlines()[:2] == ["--- a/AGENT.md (local)", "+++ b/AGENT.md (template)"]
    assert "-local edit" in conflicts["AGENT.md"].diff
    assert conflicts["config.pull.rebase"].diff == "-pull.rebase = false\n+pull.rebase = true\n"
    assert {(m.item, m.suggestion) for m in plan.manual} == {
        ("TOKEN", "halctl auth push n1 --env TOKEN=<value>"), ("OPT", "halctl auth push n1 --env OPT=<value>"),
        ("branch", "git -C /srv/p switch main"), ("config.user.name", "git -C /srv/p config user.name <value>")}

    forced = build_plan(req, f, items, force=True)
    changes = [a.change for a in forced.actions]
    assert "agent_config:AGENT.md:overwrite" in changes and "git:config.pull.rebase:git_config" in changes
    assert [c.item for c in forced.conflicts] == []


def test_warn_only_is_degraded_and_not_a_repo_is_manual() -> None:
    req = requirements_for(DOC, "p")
    f = good_facts(req)
    f.files["ARCH.md"] = FileFact()
    assert overall(check_all(req, f)) == DEGRADED
    f.git = GitFacts(False, error="fatal: not a git repository")
    items = check_all(req, f)
    git_items = [i for i in items if i.category == "git"]
    assert [(i.item, i.actual, i.fix) for i in git_items] == [("repository", "fatal: not a git repository", "manual")]
    plan = build_plan(req, f, items)
    assert [(m.item, m.suggestion) for m in plan.manual] == [("repository", "git -C /srv/p init")]


def test_version_output_without_a_version_and_android() -> None:
    doc = {"version": "1", "projects": {"a": {"tools": {"weird": ">=1"}, "runtime": {
        "android_sdk": {"compile_sdk": 34, "build_tools": "34.0.0"}}}}}
    req = requirements_for(doc, "a")
    f = Facts("/a", probes={"tools:weird": Probe(True, None, "weird tool (dev build)")})
    f.android_root = "/opt/sdk"
    f.android_present = {"platforms/android-34": True, "build-tools/34.0.0": False}
    items = {i.key: i for i in check_all(req, f)}
    assert items["tools:weird"].status == "fail" and items["tools:weird"].actual == "weird tool (dev build)"
    assert items["android_sdk:platforms/android-34"].status == "pass"
    assert items["android_sdk:build-tools/34.0.0"].status == "fail"
    plan = build_plan(req, f, list(items.values()))
    assert {p.item: p.command for p in plan.pending} == {"weird": "apt-get install -y weird",
                                                          "build-tools/34.0.0": "sdkmanager 'build-tools;34.0.0'"}
    f.android_root = None
    items2 = check_all(req, f)
    assert [i.key for i in items2 if i.category == "android_sdk"] == ["android_sdk:sdk_root"]
