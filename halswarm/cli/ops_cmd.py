"""`halctl deploy|upgrade|rollback`: run the halswarm.ops playbooks through ansible-runner.

    halctl deploy   [-i INVENTORY]... [--check] [--limit HOSTS] [-e K=V|@FILE]... [--wheel WHEEL [--wheelhouse DIR]]
                    [--batch-size N|PCT]
    halctl upgrade  (same options; backs the supervisor database up first)
    halctl rollback [-i INVENTORY]... [--to VERSION] [--batch-size N|PCT] [--check] [--limit HOSTS] [-e K=V|@FILE]...

``--batch-size`` sets ``hal_agent_batch_size`` as an extra variable: it drives the agent plays'
``serial:``, which Ansible computes before inventory variables exist (group_vars cannot set it).

Progress is one line per task and per changed/failed host, then a recap; the run's artifacts
(job events, stdout, the command) stay under the state directory (``--state-dir``, default
``$HALCTL_STATE_DIR`` or ``~/.local/state/halctl``) in ``runs/<id>/``. The exit code is the
playbook's outcome: 0 every host succeeded, 1 a host failed or was unreachable, 130 interrupted.

Nothing here imports Ansible at module import time (the remote halctl commands stay fast):
halswarm.ops.runner loads ansible-runner only when a playbook runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from halswarm.cli.errors import EXIT_OK, HalctlError, UsageProblem


def parse_extra_vars(items: tuple[str, ...]) -> dict[str, Any]:
    """``-e KEY=VALUE`` (VALUE kept as a string; ``true``/``false`` work with Ansible's ``| bool``),
    ``-e @vars.yml`` (a YAML or JSON file of variables) and ``-e '{"k": 1}'`` (inline JSON)."""
    out: dict[str, Any] = {}
    for item in items:
        if item.startswith("@"):
            import yaml

            path = Path(item[1:]).expanduser()
            try:
                data = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise UsageProblem(f"-e {item}: {exc}") from None
            if not isinstance(data, dict):
                raise UsageProblem(f"-e {item}: the file must hold a mapping of variables")
            out.update(data)
        elif item.lstrip().startswith("{"):
            try:
                data = json.loads(item)
            except ValueError as exc:
                raise UsageProblem(f"-e: invalid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise UsageProblem("-e: inline JSON must be an object")
            out.update(data)
        else:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UsageProblem(f"-e expects KEY=VALUE, @FILE or JSON, got {item!r}")
            out[key.strip()] = value
    return out


def _apply(options: list[Callable[[Any], Any]], func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(options):
        func = option(func)
    return func


def playbook_target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """-i/--limit/-e/-v/--timeout: what every halctl command that runs a collection playbook takes."""
    return _apply([
        click.option("-i", "--inventory", "inventories", multiple=True, metavar="INVENTORY",
                     help="Inventory file or directory (repeatable) [default: ansible.cfg's]."),
        click.option("--limit", "-l", metavar="HOSTS", help="Only these hosts or groups (Ansible pattern)."),
        click.option("-e", "--extra-vars", "extra_vars", multiple=True, metavar="K=V|@FILE",
                     help="Extra variables (repeatable): KEY=VALUE, @vars.yml or inline JSON."),
        click.option("-v", "--verbose", count=True, help="More output (-v shows every host result, -vvv Ansible's)."),
        click.option("--timeout", type=click.IntRange(min=1), metavar="SECONDS",
                     help="Stop the run after this long (exit 1)."),
    ], func)


def _common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return playbook_target_options(_apply([
        click.option("--check", is_flag=True, help="Dry run: show what would change (with diffs), change nothing."),
        click.option("--diff", is_flag=True, help="Show file and rule diffs (always on with --check)."),
        click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="HALCTL_STATE_DIR",
                     help="Where the run artifacts are kept [default: ~/.local/state/halctl; env HALCTL_STATE_DIR]."),
    ], func))


def _batch_size(value: str | None) -> str | None:
    """``N`` (>= 1) or ``P%`` (1..100): what Ansible's ``serial`` accepts."""
    if value is None:
        return None
    text = value.strip()
    number = text[:-1] if text.endswith("%") else text
    if not number.isdigit() or int(number) < 1 or (text.endswith("%") and int(number) > 100):
        raise UsageProblem(f"--batch-size expects a number >= 1 or a percentage like 25%, got {value!r}")
    return text


def _batch_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--batch-size", metavar="N|PCT",
                        help=f"Agents handled at a time [default: {default}]; a failed batch stops the run "
                             "(sets hal_agent_batch_size).")


def _release_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Release wheel to install (pip wheel --no-deps -w dist .); sets hal_release_wheel."),
        click.option("--wheelhouse", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Dependency wheels for hosts without index access; sets hal_release_wheelhouse."),
        click.option("--version", "release_version", metavar="VERSION",
                     help="Release to install from the package index; sets hal_release_version."),
        click.option("--index-url", metavar="URL", help="Package index for --version; sets hal_release_index_url."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(playbook: str, *, inventories: tuple[str, ...], limit: str | None, check: bool, diff: bool,
         extravars: dict[str, Any], verbose: int, timeout: int | None, state_dir: Path | None) -> int:
    try:
        from halswarm.ops.runner import PlaybookRun, run_playbook
    except ImportError as exc:  # the 'ops' extra is missing
        raise HalctlError(f"ops commands need ansible-runner and ansible-core "
                          f"(pip install 'hal-o-swarm[ops]'): {exc}") from None
    try:
        import ansible_runner  # noqa: F401
    except ImportError:
        raise HalctlError("ops commands need ansible-runner and ansible-core "
                          "(pip install 'hal-o-swarm[ops]')") from None

    spec = PlaybookRun(playbook=playbook, inventories=inventories, limit=limit, check=check, diff=diff,
                       extravars=extravars, verbosity=verbose, timeout=timeout, state_dir=state_dir)
    result = run_playbook(spec)
    where = f"artifacts: {result.artifact_dir.parents[1]}"
    if result.exit_code == EXIT_OK:
        mode = " (check mode: nothing changed)" if check else ""
        click.echo(f"{playbook} succeeded in {result.duration:.1f}s{mode}; {where}")
        return EXIT_OK
    if result.status == "canceled":
        click.echo(f"error: {playbook} interrupted; {where}", err=True)
        return result.exit_code
    if result.failures:
        host, task, msg = result.failures[-1]
        detail = f"{host}: {task}: {msg}" if task else f"{host}: {msg}"
        more = f" (+{len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
        click.echo(f"error: {playbook} failed on {detail}{more}; {where}", err=True)
    elif result.errors:  # Ansible stopped before any task: its own first error line says why
        click.echo(f"error: {playbook} failed: {result.errors[0].strip()}; {where}", err=True)
    else:
        click.echo(f"error: {playbook} {result.status} (ansible-playbook rc={result.rc}); {where}", err=True)
    return result.exit_code


def _release_vars(wheel: Path | None, wheelhouse: Path | None, release_version: str | None,
                  index_url: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if wheel is not None:
        if not wheel.name.startswith("hal_o_swarm-") or wheel.suffix != ".whl":
            raise UsageProblem(f"--wheel must be a hal_o_swarm-<version>-*.whl file, got {wheel.name}")
        out["hal_release_wheel"] = str(wheel.resolve())
    if wheelhouse is not None:
        out["hal_release_wheelhouse"] = str(wheelhouse.resolve())
    if release_version:
        out["hal_release_version"] = release_version
    if index_url:
        out["hal_release_index_url"] = index_url
    return out


def _batch_vars(batch_size: str | None) -> dict[str, Any]:
    checked = _batch_size(batch_size)
    return {} if checked is None else {"hal_agent_batch_size": checked}


@click.command("deploy")
@_common_options
@_release_options
@_batch_option("all agents at once")
def deploy(inventories: tuple[str, ...], limit: str | None, check: bool, diff: bool, extra_vars: tuple[str, ...],
           verbose: int, timeout: int | None, state_dir: Path | None, wheel: Path | None, wheelhouse: Path | None,
           release_version: str | None, index_url: str | None, batch_size: str | None) -> None:
    """Deploy the supervisor and the agents (playbook halswarm.ops.deploy).

    Installs the release beside the old one, validates configs with the daemons' own --validate,
    switches `current`, restarts, checks /readyz and that every agent registered; a host that fails
    verification is rolled back to its previous release by the playbook itself.
    """
    extravars = _release_vars(wheel, wheelhouse, release_version, index_url) | _batch_vars(batch_size) \
        | parse_extra_vars(extra_vars)
    raise click.exceptions.Exit(_run("deploy", inventories=inventories, limit=limit, check=check, diff=diff,
                                     extravars=extravars, verbose=verbose, timeout=timeout, state_dir=state_dir))


@click.command("upgrade")
@_common_options
@_release_options
@_batch_option("all agents at once")
def upgrade(inventories: tuple[str, ...], limit: str | None, check: bool, diff: bool, extra_vars: tuple[str, ...],
            verbose: int, timeout: int | None, state_dir: Path | None, wheel: Path | None, wheelhouse: Path | None,
            release_version: str | None, index_url: str | None, batch_size: str | None) -> None:
    """Back up the supervisor database, then deploy the new release (playbook halswarm.ops.upgrade)."""
    extravars = _release_vars(wheel, wheelhouse, release_version, index_url) | _batch_vars(batch_size) \
        | parse_extra_vars(extra_vars)
    raise click.exceptions.Exit(_run("upgrade", inventories=inventories, limit=limit, check=check, diff=diff,
                                     extravars=extravars, verbose=verbose, timeout=timeout, state_dir=state_dir))


@click.command("rollback")
@_common_options
@click.option("--to", "to_version", metavar="VERSION",
              help="Release to return to (must still be installed) [default: each host's previous release].")
@_batch_option("1")
def rollback(inventories: tuple[str, ...], limit: str | None, check: bool, diff: bool, extra_vars: tuple[str, ...],
             verbose: int, timeout: int | None, state_dir: Path | None, to_version: str | None,
             batch_size: str | None) -> None:
    """Return to the previous (or --to) release and the config it ran with (playbook halswarm.ops.rollback).

    The supervisor first, then the agents in batches, stopping at the first batch that fails.
    """
    extravars: dict[str, Any] = {}
    if to_version:
        extravars["rollback_to"] = to_version
    extravars |= _batch_vars(batch_size) | parse_extra_vars(extra_vars)
    raise click.exceptions.Exit(_run("rollback", inventories=inventories, limit=limit, check=check, diff=diff,
                                     extravars=extravars, verbose=verbose, timeout=timeout, state_dir=state_dir))


# Their output is progress lines, not a table: no -o/--output.
for _cmd in (deploy, upgrade, rollback):
    _cmd.plain_output = True  # type: ignore[attr-defined]

COMMANDS: tuple[click.Command, ...] = (deploy, upgrade, rollback)
