"""Checks the JSON Schema cannot express: secrets, cross-field rules, uniqueness and cycles.

Every check tolerates ill-typed input (the schema pass reports that) and only inspects what it can.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

from halswarm.config.problems import Problem, format_path, join_path
from halswarm.config.schemas import defaults
from halswarm.config.secrets import (
    ENV_TOKEN,
    SecretResult,
    check_token,
    read_secret_file,
    resolve_secret,
    token_weakness,
)
from halswarm.protocol.supervisor_urls import SupervisorUrlError, parse_supervisor_url

CLI_ENV_TOKEN = "HALCTL_AUTH_TOKEN"
NO_OPERATOR = ("none configured: /api/v1 answers 401 to every request (auth_token is an agent token and never "
               "opens it); add an operator token with a role (docs/security.md)")

Secrets = dict[str, SecretResult]
SourcePath = str | os.PathLike[str] | None
Result = tuple[list[Problem], Secrets]


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _nonempty(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


def _required_token(result: SecretResult, path: str, alternatives: str) -> list[Problem]:
    if result.value is None and not result.problems:
        return [Problem(path, f"is required (set {alternatives})")]
    return result.problems + check_token(result)


# --------------------------------------------------------------------------- supervisor


def supervisor_checks(data: Mapping[str, Any], env: Mapping[str, str], source: SourcePath) -> Result:
    server = _obj(data.get("server"))
    security = _obj(data.get("security"))
    problems: list[Problem] = []

    token = resolve_secret(
        data, inline=("server.auth_token", "auth_token"), files=("server.auth_token_file", "auth_token_file"),
        env_var=ENV_TOKEN, env=env, source_path=source,
    )
    agent_tokens = security.get("agent_tokens")
    per_node = isinstance(agent_tokens, Mapping) and bool(agent_tokens)
    if not (per_node and token.value is None and not token.problems):  # per-node tokens alone suffice
        problems += _required_token(
            token, "server.auth_token",
            f"server.auth_token, server.auth_token_file, env {ENV_TOKEN} or security.agent_tokens",
        )
    inline, top = server.get("auth_token"), data.get("auth_token")
    if _nonempty(inline) and _nonempty(top) and inline.strip() != top.strip():
        problems.append(Problem("auth_token", "ignored: server.auth_token is also set", "warning"))
    allow_shared = security.get("allow_shared_agent_token")
    if token.value is not None and per_node and allow_shared is not True:
        problems.append(Problem(token.where or "server.auth_token", "is not accepted from agents: "
                                "security.agent_tokens is set (set security.allow_shared_agent_token: true to "
                                "keep the shared agent token)", "warning"))

    operator = resolve_secret(
        data, inline=("security.operator_token",), files=("security.operator_token_file",),
        env_var=None, env=env, source_path=source,
    )
    problems += operator.problems + check_token(operator)

    if isinstance(agent_tokens, Mapping):
        for node_id, value in agent_tokens.items():
            why = token_weakness(value) if isinstance(value, str) else None
            if why:
                problems.append(Problem(format_path(["security", "agent_tokens", node_id]), f"token {why}"))

    operator_problems, operator_secrets = _operator_checks(security, operator, token, source)
    problems += operator_problems
    alert = resolve_secret(data, inline=("alerts.token",), files=("alerts.token_file",), env_var=None, env=env,
                           source_path=source)
    problems += alert.problems + check_token(alert)
    if alert.value is not None and alert.value in _identity_tokens(token, operator, operator_secrets, agent_tokens):
        problems.append(Problem(alert.where or "alerts.token", "equals an agent or operator token: the alert "
                                "token must be a credential of its own"))
    tls = _obj(security.get("tls"))
    if tls.get("enabled") is True:
        for key in ("cert_path", "key_path"):
            if not _nonempty(tls.get(key)):
                problems.append(Problem(f"security.tls.{key}", "is required when security.tls.enabled is true"))

    server_defaults = defaults("supervisor")["server"]
    port = server.get("port", server_defaults["port"])
    http_port = server.get("http_port", server_defaults["http_port"])
    if isinstance(port, int) and isinstance(http_port, int) and http_port and port == http_port:
        problems.append(Problem("server.http_port", f"must differ from server.port (both are {port})"))

    problems += _cost_checks(_obj(_obj(data.get("cost")).get("providers")))
    problems += dependency_cycles(data.get("dependencies"))

    if isinstance(data.get("auto_intervention"), Mapping) and isinstance(data.get("policies"), Mapping):
        problems.append(Problem("auto_intervention", "ignored: policies is also set (same settings)", "warning"))

    remediation = _obj(data.get("remediation"))
    if remediation.get("auto") and not _nonempty(remediation.get("inventory")):
        problems.append(Problem("remediation.inventory", "is not set: the automatic runs of remediation.auto "
                                "will fail until it is", "warning"))

    storage_problems, storage_password = _storage_checks(data, env, source)
    problems += storage_problems
    return problems, {"auth_token": token, "operator_token": operator, "alert_token": alert,
                      "storage_password": storage_password, **operator_secrets}


def missing_pg_driver() -> str | None:
    """The first module of the PostgreSQL driver this Python cannot import (None: all there). Asked by
    `--validate` too, so a deploy refuses a release without it before switching to it."""
    from importlib import import_module

    for module in ("psycopg", "psycopg_pool"):
        try:
            import_module(module)  # imported, not only found: a driver without its libpq fails here
        except ImportError:
            return module
    return None


def _storage_checks(data: Mapping[str, Any], env: Mapping[str, str], source: SourcePath
                    ) -> tuple[list[Problem], SecretResult]:
    """`storage`: a URL the supervisor can use, never with a password in it (it would reach logs, `ps`
    and config backups), and the password from its file or environment variable."""
    from urllib.parse import urlsplit

    storage = _obj(data.get("storage"))
    url = storage.get("url")
    problems: list[Problem] = []
    env_name = storage.get("password_env")
    password = resolve_secret(data, inline=(), files=("storage.password_file",),
                              env_var=env_name if isinstance(env_name, str) else None, env=env, source_path=source)
    problems += password.problems
    if not isinstance(url, str) or not url.strip():
        return problems, password
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urlsplit(url)
            has_password = parts.password is not None
            _ = parts.port  # a port that is not a number raises here
        except ValueError as exc:
            return [*problems, Problem("storage.url", f"is not a valid URL ({exc})")], password
        if has_password:
            problems.append(Problem("storage.url", "must not contain a password: use storage.password_file or "
                                    "storage.password_env (or ~/.pgpass)"))
        if not parts.path.strip("/"):
            problems.append(Problem("storage.url", "needs a database name (postgresql://user@host/db)"))
        missing = missing_pg_driver()
        if missing:
            problems.append(Problem("storage.url", f"is PostgreSQL but {missing} is not installed in this release: "
                                    "install it with the `postgres` extra (hal-o-swarm[postgres])"))
        if isinstance(env_name, str) and password.value is None and not password.problems \
                and not storage.get("password_file"):
            problems.append(Problem("storage.password_env", f"the environment variable {env_name} is not set",
                                    "warning"))
    elif scheme not in ("", "sqlite"):
        problems.append(Problem("storage.url", f"unknown engine {scheme!r} (a SQLite path or postgresql://...)"))
    return problems, password


def _identity_tokens(token: SecretResult, operator: SecretResult, operators: Secrets, agent_tokens: Any) -> set[str]:
    """Every other credential's value (agent, per-node, legacy operator, named operators)."""
    values = {r.value for r in (token, operator, *operators.values()) if r.value}
    if isinstance(agent_tokens, Mapping):
        values |= {v.strip() for v in agent_tokens.values() if isinstance(v, str) and v.strip()}
    return values


def operator_secret_key(index: int) -> str:
    """Key of `security.operators[index]`'s resolved token in the secrets of a supervisor document."""
    return f"operators[{index}]"


def _operator_checks(security: Mapping[str, Any], legacy: SecretResult, shared: SecretResult,
                     source: SourcePath) -> tuple[list[Problem], Secrets]:
    """Resolve `security.operators` tokens; names unique, no token shared with another identity or agent."""
    problems: list[Problem] = []
    secrets: Secrets = {}
    operators = security.get("operators")
    entries = operators if isinstance(operators, list) else []
    names: dict[str, str] = {}
    if legacy.value is not None:
        names["operator"] = "security.operator_token"
    owners: dict[str, str] = {}  # token value -> path of its first owner
    if shared.value is not None:
        owners[shared.value] = "server.auth_token"
    agent_tokens = security.get("agent_tokens")
    if isinstance(agent_tokens, Mapping):
        for node_id, value in agent_tokens.items():
            if isinstance(value, str) and value.strip():
                owners.setdefault(value.strip(), format_path(["security", "agent_tokens", node_id]))
    agent_values = set(owners)
    resolved: list[SecretResult] = [legacy] if legacy.value is not None else []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            continue
        path = format_path(["security", "operators", i])
        name = entry.get("name")
        if isinstance(name, str) and name:
            if name in names:
                problems.append(Problem(f"{path}.name", f"duplicate operator name {name!r} (also {names[name]})"))
            names.setdefault(name, path)
        inline, file = entry.get("token"), entry.get("token_file")
        if _nonempty(inline) and _nonempty(file):
            problems.append(Problem(path, "set token or token_file, not both"))
        if _nonempty(file):
            result = read_secret_file(file, f"{path}.token_file", source)
        elif _nonempty(inline):
            result = SecretResult(value=inline.strip(), where=f"{path}.token")
        else:
            problems.append(Problem(f"{path}.token", "is required (set token or token_file)"))
            continue
        problems += result.problems + check_token(result)
        secrets[operator_secret_key(i)] = result
        resolved.append(result)
    for result in resolved:
        if result.value is None:
            continue
        owner = owners.get(result.value)
        if owner is not None:
            what = "an agent token" if result.value in agent_values else "another operator token"
            problems.append(Problem(result.where or "security.operators",
                                    f"equals {what} ({owner}): operators and agents never share a credential"
                                    if what == "an agent token" else f"equals {what} ({owner})"))
        else:
            owners[result.value] = result.where or "security.operators"
    if not resolved and not any(p.path.startswith("security.operators") for p in problems):
        problems.append(Problem("security.operators", NO_OPERATOR, "warning"))
    return problems, secrets


def _cost_checks(providers: Mapping[str, Any]) -> list[Problem]:
    """Go rule: a provider is enabled by its explicit flag, else by having a key; enabled needs a key."""
    problems = []
    for name, provider in providers.items():
        if not isinstance(provider, Mapping):
            continue
        has_key = any(_nonempty(provider.get(k)) for k in ("api_key", "admin_api_key", "org_api_key"))
        enabled = provider.get("enabled")
        if (enabled if isinstance(enabled, bool) else has_key) and not has_key:
            path = format_path(["cost", "providers", name, "api_key"])
            problems.append(Problem(path, "is required when the provider is enabled (or admin_api_key/org_api_key)"))
    return problems


def dependency_edges(deps: Any) -> dict[str, list[str]]:
    """`{project: [deps]}` or `{project: {depends_on: [deps]}}` (Go `null` = none) -> adjacency lists."""
    edges: dict[str, list[str]] = {}
    if not isinstance(deps, Mapping):
        return edges
    for project, value in deps.items():
        if isinstance(value, Mapping):
            value = value.get("depends_on")
        edges[project] = [d for d in value if isinstance(d, str)] if isinstance(value, list) else []
    return edges


def dependency_cycles(deps: Any) -> list[Problem]:
    """One problem per distinct cycle, reported at the cycle's alphabetically first project."""
    edges = dependency_edges(deps)
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    stack: list[str] = []
    seen: set[frozenset[str]] = set()
    problems: list[Problem] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    start = cycle.index(min(cycle))
                    ordered = cycle[start:] + cycle[:start]
                    chain = " -> ".join([*ordered, ordered[0]])
                    problems.append(Problem(format_path(["dependencies", ordered[0]]), f"cycle detected: {chain}"))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for project in sorted(edges):
        if project not in state:
            visit(project)
    return problems


# --------------------------------------------------------------------------- agent


def agent_checks(data: Mapping[str, Any], env: Mapping[str, str], source: SourcePath) -> Result:
    problems: list[Problem] = []
    token = resolve_secret(
        data, inline=("auth_token",), files=("auth_token_file",), env_var=ENV_TOKEN, env=env, source_path=source,
    )
    problems += _required_token(token, "auth_token", f"auth_token, auth_token_file or env {ENV_TOKEN}")

    password = resolve_secret(
        data, inline=("opencode.password",), files=("opencode.password_file",), env_var=None, env=env,
        source_path=source,
    )
    problems += password.problems

    opencode = _obj(data.get("opencode"))
    if "port" in opencode and "opencode_port" in data and opencode["port"] != data["opencode_port"]:
        problems.append(Problem("opencode_port", "ignored: opencode.port is also set", "warning"))

    for tool, path in _obj(data.get("tool_paths")).items():
        if _nonempty(path) and not os.path.isabs(path):
            problems.append(Problem(format_path(["tool_paths", tool]), "should be an absolute path", "warning"))

    problems += _supervisor_url_checks(data.get("supervisor_url"))
    problems += _project_checks(data.get("projects"))
    return problems, {"auth_token": token, "opencode_password": password}


_WS_URL = re.compile(r"^wss?://[^\s/?#]+(/\S*)?$")  # the schema's pattern: what it already refused is not repeated


def _supervisor_url_checks(value: Any) -> list[Problem]:
    """What the schema's pattern cannot see in each URL: the port's range, credentials, query, repeats."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    problems = []
    seen: dict[tuple[str, str, int, str], int] = {}
    for index, raw in enumerate(items):
        if not isinstance(raw, str) or not _WS_URL.match(raw) or raw in items[:index]:
            continue  # the schema reported it (pattern, uniqueItems)
        where = "supervisor_url" if isinstance(value, str) else format_path(["supervisor_url", index])
        try:
            url = parse_supervisor_url(raw)
        except SupervisorUrlError as exc:
            problems.append(Problem(where, str(exc)))
            continue
        key = (url.scheme, url.host.lower(), url.port, url.path)
        if key in seen:
            problems.append(Problem(where, f"{raw!r} is the same supervisor as supervisor_url[{seen[key]}]"))
        else:
            seen[key] = index
    return problems


def _project_checks(projects: Any) -> list[Problem]:
    if not isinstance(projects, list):
        return []
    problems = []
    first_seen: dict[str, int] = {}
    for index, project in enumerate(projects):
        if not isinstance(project, Mapping):
            continue
        name, directory = project.get("name"), project.get("directory")
        if _nonempty(name):
            if name in first_seen:
                problems.append(Problem(
                    format_path(["projects", index, "name"]),
                    f"duplicate project name {name!r} (also projects[{first_seen[name]}])",
                ))
            else:
                first_seen[name] = index
        if _nonempty(directory):
            where = format_path(["projects", index, "directory"])
            if not os.path.isabs(os.path.expanduser(directory)):
                problems.append(Problem(where, "should be an absolute path", "warning"))
            elif not Path(os.path.expanduser(directory)).is_dir():
                problems.append(Problem(where, "is not a directory on this host", "warning"))
    return problems


# --------------------------------------------------------------------------- cli


def cli_checks(data: Mapping[str, Any], env: Mapping[str, str], source: SourcePath) -> Result:
    token = resolve_secret(
        data, inline=("auth_token",), files=("auth_token_file",), env_var=CLI_ENV_TOKEN, env=env, source_path=source,
    )
    # The supervisor is the judge of the operator token; here a weak one is only a warning.
    problems = token.problems + check_token(token, "warning")
    if "output" in data and "format" in data and data["output"] != data["format"]:
        problems.append(Problem("format", "ignored: output is also set", "warning"))
    return problems, {"auth_token": token}


# --------------------------------------------------------------------------- manifest


def manifest_checks(data: Mapping[str, Any], env: Mapping[str, str], source: SourcePath) -> Result:
    """Go format rules of go-original 5.3 that need 'at least one of' across two lists."""
    problems: list[Problem] = []
    if "requirements" in data:
        problems += _requirement_checks(data.get("requirements"), "requirements")
        for name, project in _obj(data.get("projects")).items():
            if isinstance(project, Mapping):
                base = format_path(["projects", name, "requirements"])
                problems += _requirement_checks(project.get("requirements"), base)
    return problems, {}


def _requirement_checks(req: Any, base: str) -> list[Problem]:
    if not isinstance(req, Mapping):
        return []
    problems = []
    rules = (
        ("context", ("files", "directories"), "must have at least one file or directory"),
        ("docs", ("required", "recommended"), "must have at least one required or recommended document"),
    )
    for key, lists, message in rules:
        section = req.get(key)
        if isinstance(section, Mapping):
            count = sum(len(section[k]) for k in lists if isinstance(section.get(k), list))
            if count == 0:
                problems.append(Problem(join_path(base, key), message))
    return problems


CHECKS = {
    "supervisor": supervisor_checks,
    "agent": agent_checks,
    "cli": cli_checks,
    "manifest": manifest_checks,
}
