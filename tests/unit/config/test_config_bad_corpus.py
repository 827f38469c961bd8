"""A corpus of bad documents: each must give exactly the expected error path and message."""

from __future__ import annotations

from typing import Any

import pytest

from halswarm.config import validate_data
from halswarm.config.loader import deep_merge
from tests.support.config_fixtures import OP_TOKEN, TOKEN

SUP: dict[str, Any] = {"server": {"auth_token": TOKEN},
                       "security": {"operators": [{"name": "admin", "role": "admin", "token": OP_TOKEN}]}}
AGENT: dict[str, Any] = {"supervisor_url": "ws://sup.example:8420/ws/agent", "auth_token": TOKEN}
MANIFEST: dict[str, Any] = {"version": "1.0", "requirements": {"runtime": {"node": ">=18"}}}
CLI: dict[str, Any] = {"supervisor_url": "http://sup:8421"}
BASES = {"supervisor": SUP, "agent": AGENT, "manifest": MANIFEST, "cli": CLI}


def sup(**patch: Any) -> dict[str, Any]:
    return deep_merge(SUP, patch)


def agent(**patch: Any) -> dict[str, Any]:
    return deep_merge(AGENT, patch)


def req(**patch: Any) -> dict[str, Any]:
    return deep_merge(MANIFEST, {"requirements": patch})


# (id, kind, document, expected error path, message fragment)
CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("port-string", "supervisor", sup(server={"port": "8420"}), "server.port", "must be an integer (got string)"),
    ("port-zero", "supervisor", sup(server={"port": 0}), "server.port", "must be between 1 and 65535 (got 0)"),
    ("port-70000", "supervisor", sup(server={"port": 70000}), "server.port",
     "must be between 1 and 65535 (got 70000)"),
    ("port-bool", "supervisor", sup(server={"port": True}), "server.port", "must be an integer (got boolean)"),
    ("http-port-negative", "supervisor", sup(server={"http_port": -1}), "server.http_port",
     "must be between 0 and 65535 (got -1)"),
    ("http-port-clash", "supervisor", sup(server={"port": 9000, "http_port": 9000}), "server.http_port",
     "must differ from server.port"),
    ("heartbeat-zero", "supervisor", sup(server={"heartbeat_interval_sec": 0}), "server.heartbeat_interval_sec",
     "must be >= 1 (got 0)"),
    ("server-not-object", "supervisor", {"server": [8420], "auth_token": TOKEN}, "server",
     "must be an object (got array)"),
    ("token-short", "supervisor", sup(server={"auth_token": "s3cret"}), "server.auth_token",
     "token is too short (6 characters; at least 32 are required)"),
    ("token-change-me", "supervisor", sup(server={"auth_token": "CHANGE_ME_SHARED_TOKEN"}), "server.auth_token",
     "is a placeholder"),
    ("token-change-me-lower-long", "supervisor",
     sup(server={"auth_token": "change_me_" + "a" * 40}), "server.auth_token", "is a placeholder"),
    ("token-go-placeholder", "supervisor", sup(server={"auth_token": "your-shared-secret-here"}),
     "server.auth_token", "is a placeholder"),
    ("token-changeme", "supervisor", sup(server={"auth_token": "changeme"}), "server.auth_token",
     "is a placeholder"),
    ("token-missing", "supervisor", {"server": {"port": 8420}}, "server.auth_token",
     "is required (set server.auth_token, server.auth_token_file, env HAL_AUTH_TOKEN or security.agent_tokens)"),
    ("token-empty", "supervisor", sup(server={"auth_token": ""}), "server.auth_token", "is required"),
    ("token-top-level-short", "supervisor", {"auth_token": "short"}, "auth_token", "token is too short"),
    ("operator-token-placeholder", "supervisor", sup(security={"operator_token": "CHANGE_ME_OPERATOR"}),
     "security.operator_token", "is a placeholder"),
    ("agent-token-short", "supervisor", sup(security={"agent_tokens": {"node-1": "abc"}}),
     "security.agent_tokens.node-1", "token is too short (3 characters"),
    ("tls-without-cert", "supervisor", sup(security={"tls": {"enabled": True, "key_path": "/k.pem"}}),
     "security.tls.cert_path", "is required when security.tls.enabled is true"),
    ("tls-enabled-string", "supervisor", sup(security={"tls": {"enabled": "yes"}}), "security.tls.enabled",
     "must be a boolean (got string)"),
    ("provider-enabled-no-key", "supervisor", sup(cost={"providers": {"anthropic": {"enabled": True}}}),
     "cost.providers.anthropic.api_key", "is required when the provider is enabled"),
    ("negative-model-rate", "supervisor",
     sup(cost={"providers": {"openai": {"api_key": "k", "model_rates": {"o3": {"input": 1, "output": -0.5}}}}}),
     "cost.providers.openai.model_rates.o3.output", "must be >= 0 (got -0.5)"),
    ("model-rate-dotted-name", "supervisor",
     sup(cost={"providers": {"openai": {"api_key": "k", "model_rates": {"gpt-4.1": {"input": "x"}}}}}),
     'cost.providers.openai.model_rates["gpt-4.1"].input', "must be a number (got string)"),
    ("empty-model-name", "supervisor",
     sup(cost={"providers": {"openai": {"api_key": "k", "model_rates": {"": {"input": 1}}}}}),
     "cost.providers.openai.model_rates", "model names must not be empty"),
    ("cost-poll-zero", "supervisor", sup(cost={"poll_interval_minutes": 0}), "cost.poll_interval_minutes",
     "must be >= 1 (got 0)"),
    ("log-level", "supervisor", sup(log={"level": "verbose"}), "log.level",
     "must be one of debug, info, warning, error (got 'verbose')"),
    ("log-format", "supervisor", sup(log={"format": "xml"}), "log.format", "must be one of json, text (got 'xml')"),
    ("dependency-cycle", "supervisor", sup(dependencies={"a": ["b"], "b": {"depends_on": ["a"]}}),
     "dependencies.a", "cycle detected: a -> b -> a"),
    ("dependency-self", "supervisor", sup(dependencies={"rom": {"depends_on": ["rom"]}}), "dependencies.rom",
     "cycle detected: rom -> rom"),
    ("dependency-bad-type", "supervisor", sup(dependencies={"a": "b"}), "dependencies.a",
     "must be an array or an object (got string)"),
    ("policy-zero-retries", "supervisor", sup(policies={"resume_on_idle": {"max_retries": 0}}),
     "policies.resume_on_idle.max_retries", "must be >= 1 (got 0)"),
    ("policy-cost-zero", "supervisor", sup(policies={"kill_on_cost": {"cost_threshold_usd": 0}}),
     "policies.kill_on_cost.cost_threshold_usd", "must be greater than 0 (got 0)"),
    ("auto-intervention-alias-checked", "supervisor",
     sup(auto_intervention={"kill_on_cost": {"daily_limit_usd": -5}}),
     "auto_intervention.kill_on_cost.daily_limit_usd", "must be greater than 0 (got -5)"),
    ("credentials-empty-value", "supervisor", sup(credentials={"agents": {"n1": {"env": {"GITHUB_PAT": ""}}}}),
     "credentials.agents.n1.env.GITHUB_PAT", "must not be empty"),
    ("credentials-negative-version", "supervisor", sup(credentials={"version": -1}), "credentials.version",
     "must be >= 0 (got -1)"),
    ("retention-zero", "supervisor", sup(retention={"events_days": 0}), "retention.events_days",
     "must be >= 1 (got 0)"),
    ("remediation-unknown-incident", "supervisor", sup(remediation={"auto": ["agent-crashed", "reboot-all"]}),
     "remediation.auto[1]", "(got 'reboot-all')"),
    ("route-bad-target", "supervisor", sup(routes=[{"match": "session.error", "target": "email#ops"}]),
     "routes[0].target", "must be discord#<channel>, slack#<channel>, n8n or webhook:<http(s) url>"),
    ("route-missing-match", "supervisor", sup(routes=[{"target": "n8n"}]), "routes[0].match", "is required"),
    ("agent-url-http", "agent", agent(supervisor_url="http://sup:8420"), "supervisor_url",
     "must be a ws:// or wss:// URL with a host (got 'http://sup:8420')"),
    ("agent-url-no-host", "agent", agent(supervisor_url="ws://"), "supervisor_url", "must be a ws:// or wss://"),
    ("agent-url-missing", "agent", {"auth_token": TOKEN}, "supervisor_url", "is required"),
    ("agent-token-missing", "agent", {"supervisor_url": "wss://sup:8420"}, "auth_token",
     "is required (set auth_token, auth_token_file or env HAL_AUTH_TOKEN)"),
    ("agent-token-placeholder", "agent", agent(auth_token="CHANGE_ME_SHARED_TOKEN"), "auth_token",
     "is a placeholder"),
    ("agent-opencode-port", "agent", agent(opencode_port=70000), "opencode_port",
     "must be between 0 and 65535 (got 70000)"),
    ("agent-duplicate-projects", "agent",
     agent(projects=[{"name": "api", "directory": "/srv/a"}, {"name": "api", "directory": "/srv/b"}]),
     "projects[1].name", "duplicate project name 'api' (also projects[0])"),
    ("agent-project-no-directory", "agent", agent(projects=[{"name": "api"}]), "projects[0].directory",
     "is required"),
    ("agent-projects-object", "agent", agent(projects={"api": "/srv/a"}), "projects",
     "must be an array (got object)"),
    ("agent-manage-string", "agent", agent(opencode={"manage": "yes"}), "opencode.manage",
     "must be a boolean (got string)"),
    ("agent-node-id-space", "agent", agent(node_id="my node"), "node_id", "no spaces"),
    ("agent-outbox-zero", "agent", agent(outbox={"max_events": 0}), "outbox.max_events", "must be >= 1 (got 0)"),
    ("agent-log-level-warn", "agent", agent(log={"level": "WARN"}), "log.level", "(got 'WARN')"),
    ("agent-probe-tools-list", "agent", agent(env={"probe_tools": ["cmake"]}), "env.probe_tools",
     "must be an object (got array)"),
    ("agent-probe-tool-name", "agent", agent(env={"probe_tools": {"../x": ["x"]}}), "env.probe_tools",
     "key '../x' is not allowed"),
    ("agent-probe-tool-empty-argv", "agent", agent(env={"probe_tools": {"cmake": []}}), "env.probe_tools.cmake",
     "must not be empty"),
    ("agent-probe-tool-string", "agent", agent(env={"probe_tools": {"cmake": "cmake --version"}}),
     "env.probe_tools.cmake", "must be an array (got string)"),
    ("agent-probe-tool-argv0", "agent", agent(env={"probe_tools": {"cmake": ["../bin/cmake", "--version"]}}),
     "env.probe_tools.cmake[0]", "argv[0] must be a plain program name or an absolute path"),
    ("manifest-version", "manifest", deep_merge(MANIFEST, {"version": "1.0.0"}), "version",
     "must be in format X.Y"),
    ("manifest-no-requirements", "manifest", {"version": "1.0"}, "requirements", "is required"),
    ("manifest-null-requirements", "manifest", {"version": "1.0", "requirements": None}, "requirements",
     "must be an object (got null)"),
    ("manifest-constraint", "manifest", req(tools={"git": "latest"}), "requirements.tools.git",
     "must be valid semver constraint"),
    ("manifest-env-var", "manifest", req(env_vars={"API_KEY": "maybe"}), "requirements.env_vars.API_KEY",
     "must be 'required' or 'optional'"),
    ("manifest-temperature", "manifest", req(agent_config={"model": "m", "temperature": 1.5}),
     "requirements.agent_config.temperature", "must be between 0 and 1 (got 1.5)"),
    ("manifest-git-hook", "manifest", req(git={"hooks": ["pre-commit", "on-save"]}), "requirements.git.hooks[1]",
     "must be a valid git hook name"),
    ("manifest-git-config-dotted", "manifest", req(git={"config": {"user.name": ""}}),
     'requirements.git.config["user.name"]', "must not be empty"),
    ("manifest-empty-context", "manifest", req(context={"files": [], "directories": []}), "requirements.context",
     "must have at least one file or directory"),
    ("manifest-empty-docs", "manifest", req(docs={}), "requirements.docs",
     "must have at least one required or recommended document"),
    ("manifest-project-override", "manifest",
     deep_merge(MANIFEST, {"projects": {"my-project": {"requirements": {"runtime": {"node": "bad"}}}}}),
     "projects.my-project.requirements.runtime.node", "must be valid semver constraint"),
    ("cli-output", "cli", {"output": "xml"}, "output", "must be one of table, json, yaml (got 'xml')"),
    ("cli-url-scheme", "cli", {"supervisor_url": "ftp://sup"}, "supervisor_url", "must be an http(s):// URL"),
]


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("kind", sorted(BASES))
def test_bases_are_valid(kind: str) -> None:
    assert [p for p in validate_data(kind, BASES[kind]) if p.is_error] == []


@pytest.mark.parametrize(("kind", "doc", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_document(kind: str, doc: dict[str, Any], path: str, fragment: str) -> None:
    errors = [p for p in validate_data(kind, doc) if p.is_error]
    assert [p.path for p in errors] == [path], [str(p) for p in errors]
    assert fragment in errors[0].message
    assert str(errors[0]) == f"{path}: {errors[0].message}"


def test_all_errors_are_collected_not_just_the_first() -> None:
    doc = sup(server={"port": 0, "http_port": "x"}, log={"level": "loud"}, retention={"audit_days": -1})
    paths = [p.path for p in validate_data("supervisor", doc) if p.is_error]
    assert paths == ["log.level", "retention.audit_days", "server.http_port", "server.port"]


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        (sup(server={"prot": 1}), "server.prot", "unknown key (did you mean 'port'?)"),
        (sup(colour="blue"), "colour", "unknown key"),
        (agent(projects=[{"name": "a", "directory": "/srv/a", "dir": "x"}]), "projects[0].dir",
         "unknown key (did you mean 'directory'?)"),
        (sup(cost={"providers": {"google": {"api_key": "k"}}}), "cost.providers.google", "unknown key"),
    ],
)
def test_unknown_key_is_a_warning_and_an_error_with_strict(doc: dict[str, Any], path: str, message: str) -> None:
    kind = "agent" if "supervisor_url" in doc else "supervisor"
    lenient = validate_data(kind, doc)
    assert [(p.path, p.message, p.severity) for p in lenient if p.path == path] == [(path, message, "warning")]
    assert not any(p.is_error for p in lenient)
    strict = validate_data(kind, doc, strict=True)
    assert [(p.path, p.message, p.severity) for p in strict if p.is_error] == [(path, message, "error")]


def test_open_maps_take_any_key_even_strict() -> None:
    doc = sup(
        channels={"discord": {"channels": {"releases": "123"}}},
        credentials={"agents": {"any-node": {"env": {"ANY_NAME": "v"}}}},
        dependencies={"x": []},
        security={"agent_tokens": {"node-9": "n" * 40}, "allow_shared_agent_token": True},
    )
    assert validate_data("supervisor", doc, strict=True) == []


def test_both_policies_and_alias_warns() -> None:
    problems = validate_data("supervisor", sup(policies={}, auto_intervention={}))  # SUP has an operator
    assert [(p.path, p.severity) for p in problems] == [("auto_intervention", "warning")]


def test_root_must_be_an_object() -> None:
    assert [str(p) for p in validate_data("supervisor", ["x"])] == ["(root): top level must be an object, got array"]
