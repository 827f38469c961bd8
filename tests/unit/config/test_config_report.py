"""run_validate: the `--validate` report (`PATH: message` lines, OK line, exit 0/1)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from halswarm.config import run_validate
from tests.support.config_fixtures import NO_OPERATOR, TOKEN


def _run(path: Path, kind: str | None = None, **kw) -> tuple[int, list[str], list[str]]:
    out, err = io.StringIO(), io.StringIO()
    code = run_validate(path, kind, out=out, err=err, env=kw.pop("env", {}), **kw)
    return code, out.getvalue().splitlines(), err.getvalue().splitlines()


def test_valid_file(write) -> None:
    path = write("supervisor.config.json", {"server": {"auth_token": TOKEN}})
    # A Go-era file (one shared token) is valid; --validate says in one line that the API needs an operator.
    assert _run(path, "supervisor") == (0, [f"{NO_OPERATOR} (warning)", f"OK: {path} is a valid supervisor config"], [])


def test_invalid_file_lists_problems_and_exits_1(write) -> None:
    path = write("s.json", {"server": {"port": 70000, "auth_token": TOKEN, "extra": 1}})
    code, out, err = _run(path, "supervisor")
    assert code == 1
    assert out == ["server.port: must be between 1 and 65535 (got 70000)", f"{NO_OPERATOR} (warning)",
                   "server.extra: unknown key (warning)"]
    assert err == [f"error: {path} is not a valid supervisor config (1 error)"]


def test_warnings_alone_are_valid_and_strict_makes_them_errors(write) -> None:
    path = write("a.json", {"supervisor_url": "ws://s:8420", "auth_token": TOKEN, "colour": "red"})
    assert _run(path) == (0, ["colour: unknown key (warning)", f"OK: {path} is a valid agent config"], [])
    code, out, err = _run(path, strict=True)
    assert (code, out) == (1, ["colour: unknown key"])
    assert err == [f"error: {path} is not a valid agent config (1 error)"]


@pytest.mark.parametrize(
    ("name", "content", "mode", "expected"),
    [
        ("s.yaml", f"server:\n  auth_token: {TOKEN}\n  port: 8420\n", 0o600, "OK: {p} is a valid supervisor config"),
        ("s.json", '{"server": {"port": 8420,}}', 0o600,
         "{p}: invalid JSON at line 1, column 26: Expecting property name enclosed in double quotes"),
        ("empty.json", "", 0o600, "{p}: file is empty"),
        ("list.json", "[]", 0o600, "{p}: top level must be an object, got array"),
        ("x.json", '{"whatever": 1}', 0o600,
         "(root): cannot tell which kind of config this is (supervisor, agent, cli or manifest)"),
        ("g.json", f'{{"server": {{"auth_token": "{TOKEN}"}}}}', 0o644,
         "(file): readable by group/others and holds secrets; chmod 600 (warning)"),
        ("m.json", '{"version": "1", "requirements": {}}', 0o644,
         "version: must be in format X.Y (two numeric parts) (got '1')"),
    ],
    ids=["yaml", "broken-json", "empty", "array", "undetectable", "group-readable", "manifest"],
)
def test_file_level_cases(write, name: str, content: str, mode: int, expected: str) -> None:
    path = write(name, content, mode=mode)
    _, out, _ = _run(path)
    assert expected.format(p=path) in out


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    assert _run(path, "agent") == (1, [f"{path}: file not found"], [f"error: {path} is not a valid config"])


def test_hal_auth_token_env_satisfies_a_file_without_token(write) -> None:
    path = write("agent.config.json", {"supervisor_url": "ws://s:8420"})
    assert _run(path, env={"HAL_AUTH_TOKEN": TOKEN})[0] == 0
    code, out, _ = _run(path, env={})
    assert code == 1
    assert out == ["auth_token: is required (set auth_token, auth_token_file or env HAL_AUTH_TOKEN)"]


def test_kind_from_file_name_when_keys_say_nothing(write) -> None:
    path = write("supervisor.config.json", {})
    code, out, _ = _run(path)
    assert (code, out) == (1, [
        "server.auth_token: is required (set server.auth_token, server.auth_token_file, env HAL_AUTH_TOKEN or "
        "security.agent_tokens)", f"{NO_OPERATOR} (warning)",
    ])


def test_detects_each_kind(copy_fixture) -> None:
    for name, kind in [
        ("go/supervisor.config.example.json", "supervisor"),
        ("go/agent.config.example.json", "agent"),
        ("go/env-manifest.example.json", "manifest"),
        ("go/halctl.config.json", "cli"),
    ]:
        path = copy_fixture(name)
        code, out, _ = _run(path)
        assert (code, out[-1]) == (0, f"OK: {path} is a valid {kind} config")


def test_unknown_kind_is_a_programming_error(write) -> None:
    with pytest.raises(ValueError):
        run_validate(write("s.json", {}), "daemon")
