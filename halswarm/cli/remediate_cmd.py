"""`halctl remediate list|show ID|ID [-i INV] [--limit] [--check] [-e K=V]|history` (SPEC 7/8).

``halctl remediate ID`` runs the collection playbook ``halswarm.ops.remediate_<id>`` through
halswarm.ops.runner (live per-task progress). The playbook writes its facts, decision, actions and
verification per host to ``hal_remediation_result_file``; halctl turns that into the JSON report
(halswarm.core.remediation.result_report, pure), saves it under ``<state dir>/remediations/`` and POSTs it to the
supervisor (``/api/v1/remediations``; a supervisor that cannot be reached only warns). Exit 0 when the
repair is verified, the symptom is not present, or ``--check`` showed the plan; 1 otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from halswarm.cli.completion import complete_incident_ids
from halswarm.cli.context import app
from halswarm.cli.errors import HalctlError, UsageProblem
from halswarm.cli.ops_cmd import parse_extra_vars, playbook_target_options
from halswarm.core.remediation import catalog
from halswarm.core.remediation.result_report import report_from_result


class _RemediateGroup(click.Group):
    """``halctl remediate INCIDENT ...`` is ``halctl remediate run INCIDENT ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("remediate", cls=_RemediateGroup)
def remediate() -> None:
    """Runbook remediations: diagnose, decide, resolve, verify (one playbook per incident).

    \b
    halctl remediate list | show INCIDENT | history
    halctl remediate INCIDENT [-i INVENTORY] [--limit HOSTS] [--check] [-e K=V]
    """


def _incident(incident_id: str) -> catalog.Incident:
    try:
        return catalog.get(incident_id)
    except catalog.UnknownIncident as exc:
        raise UsageProblem(str(exc)) from None


@remediate.command("list")
def list_cmd() -> None:
    """Incidents with severity and response time (runbook classification)."""
    from halswarm.cli.output import emit, print_table

    rows = catalog.listing()
    emit(app().output, rows, lambda: print_table(
        ("ID", "SEVERITY", "RESPONSE TIME", "RUNBOOK SECTION"),
        ((r["id"], r["severity"], r["response_time"], r["section"]) for r in rows)))


@remediate.command("show")
@click.argument("incident_id", metavar="INCIDENT", shell_complete=complete_incident_ids)
def show_cmd(incident_id: str) -> None:
    """One incident: runbook section, severity, response time, playbook, what it does."""
    from halswarm.cli.output import emit, print_fields

    d = _incident(incident_id).to_dict()
    d["playbook_available"] = playbook_path(d["id"]) is not None
    emit(app().output, d, lambda: print_fields([
        ("ID", d["id"]), ("Section", d["section"]), ("Severity", d["severity"]),
        ("Response time", f"{d['response']} ({d['response_time']})"), ("Hosts", d["hosts"]),
        ("Playbook", d["playbook"] + ("" if d["playbook_available"] else " (not available yet)")),
        ("Automatic fix", "yes" if d["auto_fixable"] else "no (prints the runbook's guidance)"),
        ("Description", d["description"])]))


@remediate.command("history")
@click.option("--incident", help="Only this incident id.", shell_complete=complete_incident_ids)
@click.option("--status", type=click.Choice(("verified", "not_present", "failed", "escalated", "check")))
@click.option("--host", help="Only runs that touched this host.")
@click.option("--limit", type=click.IntRange(1, 10_000), help="At most this many (server default 100).")
def history_cmd(incident: str | None, status: str | None, host: str | None, limit: int | None) -> None:
    """Remediation runs recorded in the supervisor, newest first."""
    from halswarm.cli.output import emit, fmt_time, fmt_value, note, print_table

    ctx = app()
    params = {"incident": _incident(incident).id if incident else None, "status": status, "host": host,
              "limit": limit}
    env = ctx.client().get("/remediations", params)
    items = env.data or []

    def table() -> None:
        print_table(("FINISHED", "INCIDENT", "SEVERITY", "STATUS", "HOSTS", "DURATION"),
                    ((fmt_time(r.get("finished_at")), fmt_value(r.get("incident")), fmt_value(r.get("severity")),
                      fmt_value(r.get("status")), ",".join(r.get("hosts") or []), f"{r.get('duration_s', 0):.1f}s")
                     for r in items))
        total = env.meta.get("total")
        if isinstance(total, int) and total > len(items):
            note(f"showing {len(items)} of {total} runs (use --limit)")

    emit(ctx.output, items, table)


# ----- running one remediation -----

def playbook_path(incident_id: str) -> Path | None:
    """The playbook file of an incident in the collection, if it exists (checkout or collections path)."""
    from halswarm.ops.runner import collections_paths

    name = catalog.get(incident_id).playbook + ".yml"
    for base in collections_paths():
        p = Path(base) / "ansible_collections" / "halswarm" / "ops" / "playbooks" / name
        if p.is_file():
            return p
    return None


def save_report(report: Mapping[str, Any], state_dir: Path | None, path: Path | None = None) -> Path:
    """Write the report (0600) under ``<state dir>/remediations/``, or over ``path`` (the same run's file)."""
    from halswarm.ops.runner import default_state_dir

    if path is None:
        d = (state_dir or default_state_dir()).expanduser() / "remediations"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{time.strftime('%Y%m%dT%H%M%S')}-{report['incident']}-{report['id'][:8]}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def _unsent_dir(state_dir: Path | None) -> Path:
    from halswarm.ops.runner import default_state_dir

    return (state_dir or default_state_dir()).expanduser() / "remediations" / "unsent"


def flush_unsent(state_dir: Path | None) -> list[str]:
    """POST the reports queued while the supervisor was unreachable (oldest first); return their ids.

    A report the supervisor already has (409) is dropped from the queue; any other failure keeps it
    (and the rest) for the next run.
    """
    from halswarm.cli.errors import SupervisorRefused

    sent: list[str] = []
    d = _unsent_dir(state_dir)
    for path in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        try:
            app().client().post("/remediations", report, what="queued remediation report")
        except SupervisorRefused as exc:
            if exc.status != 409:
                break
        except HalctlError:
            break
        path.unlink(missing_ok=True)
        sent.append(str(report.get("id")))
    return sent


def send_report(report: Mapping[str, Any], state_dir: Path | None = None) -> str | None:
    """POST the report; when the supervisor cannot be reached (an escalation of a supervisor that is down),
    queue it under ``<state dir>/remediations/unsent/`` for the next run and return a warning instead of
    failing the run."""
    flush_unsent(state_dir)
    try:
        app().client().post("/remediations", dict(report), what="remediation report")
    except HalctlError as exc:
        d = _unsent_dir(state_dir)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        save_report(report, None, d / f"{time.strftime('%Y%m%dT%H%M%S')}-{report['id']}.json")
        return (f"report not recorded in the supervisor ({exc}); queued, it is sent by the next "
                "`halctl remediate`")
    return None


def _print_summary(report: Mapping[str, Any], saved: Path) -> None:
    click.echo(f"{report['incident']} [{report['severity']}, respond {report['response_time']}]: "
               f"{report['status']} (decision: {report['decision']}, {report['duration_s']:.1f}s)")
    for r in report.get("reasons", []):
        click.echo(f"  why: {r}")
    for a in report.get("actions", []):
        click.echo(f"  {a.get('result', '?'):8} {a.get('host', '')}: {a.get('name')}: {a.get('description', '')}")
    for g in report.get("guidance", []):
        click.echo(f"  guide: {g}")
    if report.get("error"):
        click.echo(f"  error: {report['error']}")
    esc = report.get("escalation") or {}
    if esc.get("bundle"):
        click.echo(f"  escalated: diagnostics bundle {esc['bundle']} ({esc.get('size')} bytes, "
                   f"sha256 {str(esc.get('sha256'))[:16]}...)")
    elif esc.get("error"):
        click.echo(f"  escalation failed: {esc['error']}")
    click.echo(f"report: {saved}")


def should_escalate(report: Mapping[str, Any], result: Mapping[str, Any] | None) -> bool:
    """A repair that was attempted (or that the planner itself escalated) and not verified escalates;
    ``--check``, "not present", a manual step with guidance (decision ``manual``) and the escalation step
    itself do not."""
    if report.get("status") != "failed" or report.get("check") or report.get("incident") == "collect-diagnostics":
        return False
    plans = [h.get("plan") or {} for h in ((result or {}).get("hosts") or {}).values()]
    decisions = {str(p.get("decision")) for p in plans}
    return bool(decisions & {"present", "escalate"}) and "manual" not in decisions


def _runner() -> Any:
    try:
        from halswarm.ops import runner
    except ImportError as exc:
        raise HalctlError(f"remediate needs ansible-runner and ansible-core (pip install 'hal-o-swarm[ops]'): "
                          f"{exc}") from None
    return runner


def run_remediation(incident_id: str, *, inventories: tuple[str, ...], limit: str | None, check: bool,
                    extravars: Mapping[str, Any], verbose: int, timeout: int | None,
                    state_dir: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Run one remediation playbook and build its report: (report, the playbook's per-host result)."""
    inc = catalog.get(incident_id)
    book = playbook_path(inc.id)
    if book is None:
        raise HalctlError(f"no playbook for {inc.id} yet ({inc.fqcn}); see `halctl remediate show {inc.id}`")
    runner = _runner()
    result_file = state_dir / "remediations" / f".result-{inc.id}-{time.time_ns()}.json"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    res = runner.run_playbook(runner.PlaybookRun(
        playbook=str(book), inventories=inventories, limit=limit, check=check, diff=check,
        extravars=dict(extravars) | {"hal_remediation_result_file": str(result_file)}, verbosity=verbose,
        timeout=timeout, state_dir=state_dir))
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):
        result = None
    finally:
        result_file.unlink(missing_ok=True)
    report = report_from_result(inc.id, result, check=check, started=started, finished=time.time(),
                                run_ok=res.exit_code == 0,
                                run_info={"ident": res.ident, "rc": res.rc, "status": res.status,
                                          "artifacts": str(res.artifact_dir)})
    return scrub(report), result


def scrub(report: dict[str, Any]) -> dict[str, Any]:
    """Mask the secret values halctl knows (its operator token) wherever the report quotes them: facts may
    carry what a daemon printed (e.g. a validation error echoing a token pasted into the wrong field).
    The report builder already masks values under secret-looking keys."""
    token = app().auth_token
    if not token:
        return report
    from halswarm.ops.diagnostics import redact_values

    return dict(redact_values(report, [token]))


def collect_diagnostics(*, inventories: tuple[str, ...], limit: str | None, extravars: Mapping[str, Any],
                        verbose: int, timeout: int | None, state_dir: Path, output: Path,
                        failed_report: Path | None = None,
                        incident: str | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Run collect-diagnostics into ``output``: (its report, the ``escalation`` block or None).

    The block is built from the tarball itself (sha256, size) after a last scan for the operator token
    this halctl holds; a tarball in which a known secret is found is deleted, never kept.
    """
    from halswarm.ops import diagnostics

    output = output.expanduser().resolve()
    output.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    ev = dict(extravars) | {"hal_diagnostics_output": str(output)}
    if failed_report is not None:
        ev["hal_diagnostics_failed_report"] = str(failed_report)
    if incident:
        ev["hal_diagnostics_incident"] = incident
    report, _result = run_remediation("collect-diagnostics", inventories=inventories, limit=limit, check=False,
                                      extravars=ev, verbose=verbose, timeout=timeout, state_dir=state_dir)
    if not output.is_file():
        return report, None
    output.chmod(0o600)
    operator = app().auth_token
    block = diagnostics.escalation_block(output, secrets=[operator] if operator else [])
    bundle_scan = {h: ((report.get("verification") or {}).get("details") or {}).get(h, {}).get("bundle_scan")
                   for h in report.get("hosts", [])}
    if not block["secret_scan"]["passed"] or any(s and not s.get("passed", True) for s in bundle_scan.values()):
        output.unlink(missing_ok=True)
        return report, None
    block["verified"] = report.get("status") == "verified"
    block["report_id"] = report.get("id")
    return report, block


def escalate(report: dict[str, Any], *, saved: Path, inventories: tuple[str, ...], limit: str | None,
             extravars: Mapping[str, Any], verbose: int, timeout: int | None, state_dir: Path) -> dict[str, Any]:
    """Collect the diagnostics bundle with the failed report in it; the report becomes ``escalated`` (with
    its ``escalation`` block) when the bundle was written, else stays ``failed`` with the reason."""
    from halswarm.ops import diagnostics

    click.echo(f"{report['incident']}: verification failed; escalating: collecting the diagnostics bundle",
               err=app().output == "json")
    output = diagnostics.default_output(state_dir, report["incident"])
    try:
        diag, block = collect_diagnostics(inventories=inventories, limit=limit, extravars=extravars,
                                          verbose=verbose, timeout=timeout, state_dir=state_dir, output=output,
                                          failed_report=saved, incident=report["incident"])
    except HalctlError as exc:
        return report | {"escalation": {"error": str(exc)}}
    save_report(diag, state_dir)
    if block is None:
        why = diag.get("error") or "the tarball was not written or did not pass the secret scan"
        return report | {"escalation": {"error": f"diagnostics bundle not collected: {why}",
                                        "diagnostics_report": diag.get("id")}}
    return report | {"status": "escalated", "escalation": block}


@remediate.command("run")
@click.argument("incident_id", metavar="INCIDENT", shell_complete=complete_incident_ids)
@playbook_target_options
@click.option("--check", is_flag=True, help="Diagnose and print the plan; change nothing.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), envvar="HALCTL_STATE_DIR",
              help="Where reports and run artifacts are kept [env HALCTL_STATE_DIR].")
@click.option("--no-send", is_flag=True, help="Do not POST the report to the supervisor.")
@click.option("--no-escalate", is_flag=True,
              help="When verification fails, do not collect the diagnostics bundle (status stays failed).")
def run_cmd(incident_id: str, inventories: tuple[str, ...], limit: str | None, check: bool,
            extra_vars: tuple[str, ...], verbose: int, timeout: int | None, state_dir: Path | None,
            no_send: bool, no_escalate: bool) -> None:
    """Run the remediation of INCIDENT (diagnose, decide, resolve unless --check, verify).

    When a repair is not verified, the run escalates (unless --no-escalate): collect-diagnostics runs on the
    same hosts, the bundle (with the failed report) is kept under the state dir, the report's status becomes
    `escalated` and the supervisor routes `remediation.escalated`. Exit 0 only when verified, not present
    or --check.
    """
    from halswarm.core.remediation.report import exit_code
    from halswarm.ops.runner import default_state_dir

    inc = _incident(incident_id)
    extravars = parse_extra_vars(extra_vars)
    sdir = (state_dir or default_state_dir()).expanduser()
    if inc.id == "collect-diagnostics" and "hal_diagnostics_output" not in extravars:
        from halswarm.ops.diagnostics import default_output

        extravars["hal_diagnostics_output"] = str(default_output(sdir))
    report, result = run_remediation(inc.id, inventories=inventories, limit=limit, check=check,
                                     extravars=extravars, verbose=verbose, timeout=timeout, state_dir=sdir)
    saved = save_report(report, sdir)
    if not no_escalate and should_escalate(report, result):
        report = escalate(report, saved=saved, inventories=inventories, limit=limit, extravars=extravars,
                          verbose=verbose, timeout=timeout, state_dir=sdir)
        save_report(report, sdir, saved)
    if app().output == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        _print_summary(report, saved)
    if not no_send:
        warning = send_report(report, sdir)
        if warning:
            click.echo(f"warning: {warning}", err=True)
    raise click.exceptions.Exit(exit_code(report))
