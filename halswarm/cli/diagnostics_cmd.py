"""`halctl diagnostics collect [-o FILE] [-i INV] [--limit HOSTS]` (SPEC 7; runbook "Escalation").

Runs the collection playbook ``halswarm.ops.remediate_collect_diagnostics`` through halctl's ops runner
(live per-task progress) and prints the path of the ONE tarball it writes (mode 0600; default
``<state dir>/diagnostics/hal-diagnostics-<UTC time>.tar.gz``): journals of hal-supervisor and hal-agent,
system info, ``systemctl show`` of the units, configs with secrets redacted, DB integrity, sizes, row counts
and recent events, plus ``--report FILE`` (e.g. a failed remediation report). Read-only on the hosts. The
run's own report is saved under ``<state dir>/remediations/`` like every remediation, but not sent.
Exit 0 when the tarball was written and passed the secret scans, 1 otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from halswarm.cli.context import app
from halswarm.cli.errors import HalctlError
from halswarm.cli.ops_cmd import parse_extra_vars, playbook_target_options


@click.group("diagnostics")
def diagnostics() -> None:
    """The escalation bundle: everything the runbook asks to attach to an incident ticket."""


@diagnostics.command("collect")
@click.option("-o", "--out", "output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Tarball to write [default: <state dir>/diagnostics/hal-diagnostics-<time>.tar.gz].")
@playbook_target_options
@click.option("--report", "reports", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              metavar="FILE", help="A (failed) remediation report to include in the bundle.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="HALCTL_STATE_DIR",
              help="Where reports, bundles and run artifacts are kept [env HALCTL_STATE_DIR].")
def collect_cmd(output: Path | None, inventories: tuple[str, ...], limit: str | None, reports: Path | None,
                extra_vars: tuple[str, ...], verbose: int, timeout: int | None, state_dir: Path | None) -> None:
    """Collect the diagnostics bundle of the fleet (or --limit HOSTS) into one tarball and print its path."""
    from halswarm.cli.remediate_cmd import collect_diagnostics, save_report
    from halswarm.ops.diagnostics import default_output
    from halswarm.ops.runner import default_state_dir

    sdir = (state_dir or default_state_dir()).expanduser()
    out = output or default_output(sdir)
    if out.exists() and out.is_dir():
        raise HalctlError(f"{out} is a directory; give a file name with -o")
    report, block = collect_diagnostics(inventories=inventories, limit=limit, extravars=parse_extra_vars(extra_vars),
                                        verbose=verbose, timeout=timeout, state_dir=sdir, output=out,
                                        failed_report=reports.resolve() if reports else None)
    saved = save_report(report | ({"escalation": block} if block else {}), sdir)
    if block is None:
        why = report.get("error") or "the tarball was not written or did not pass the secret scan"
        raise HalctlError(f"diagnostics not collected: {why} (report: {saved})")
    if app().output == "json":
        click.echo(json.dumps(block | {"report": str(saved), "status": report["status"]}, indent=2))
    else:
        if report["status"] != "verified":
            click.echo(f"warning: incomplete bundle ({report.get('error') or report['status']}); see {saved}",
                       err=True)
        click.echo(block["bundle"])
    raise click.exceptions.Exit(0 if report["status"] == "verified" else 1)
