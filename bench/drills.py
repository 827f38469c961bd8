"""Remediation drills benchmark: MTTR per incident and the overhead of `halctl remediate`.

On a fleet deployed for the purpose (supervisor + agent under real systemd in podman, the drill harness
of tests/support/fleet/fleet.py), for every incident with a fault injector (the ``FAULTS`` of the drill
modules tests/fleet/drills/test_drills_*.py):

1. MTTR: inject the real fault, run `halctl remediate ID`; time from injection to the verified report.
2. Overhead: the same playbook on the healthy fleet (diagnose + decide + report, `not_present`), run
   `--repeat` times through `halctl remediate` and through plain `ansible-playbook` with the same
   inventory and variables, alternating; ratio of the medians (target <= 1.15).

Needs root and podman (scripts/ci-setup.sh). Prints one row per incident, then `overhead_max=<ratio>`.

  python bench/drills.py [--only ID[,ID...]] [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.fleet.env import ARTIFACTS, host_ready, run  # noqa: E402
from tests.support.fleet.fleet import DrillFleet  # noqa: E402

DRILL_DIR = REPO / "tests" / "integration" / "drills"
PLAYBOOKS = REPO / "collections" / "ansible_collections" / "halswarm" / "ops" / "playbooks"


def _cost_stale(fleet: DrillFleet) -> None:
    """Stale cost data: the provider was down (degraded, nothing polled), and is back now."""
    from tests.fleet.drills import test_drills_cost_auth as ca

    ca.FAULTS["cost-data-discrepancy"](fleet)
    ca.start_fake(fleet)


def _credential_drift(fleet: DrillFleet) -> None:
    """Credentials configured and pushed, then rotated on the supervisor: the agent drifts."""
    from tests.fleet.drills import test_drills_cost_auth as ca

    ca.patch_sup_config(fleet, {"credentials": {"version": 5, "auto_push": False,
                                                "agents": {fleet.agent: {"env": {"ANTHROPIC_API_KEY": ca.DRILL_KEY}}}}})
    ca.restart_sup(fleet)
    fleet.wait_node_online(90)
    fleet.api("/api/v1/commands/credentials/push", "POST", {"target_node": fleet.agent})
    ca.FAULTS["credential-drift"](fleet)


def _restore_supervisor_config(fleet: DrillFleet) -> None:
    from tests.fleet.drills import test_drills_cost_auth as ca

    ca.stop_fake(fleet)
    ca.restore_sup_config(fleet)


def _restore_credentials(fleet: DrillFleet) -> None:
    from tests.fleet.drills import test_drills_cost_auth as ca

    _restore_supervisor_config(fleet)
    ca.reset_agent_credentials(fleet)  # pushed credentials persist on the agent
    fleet.wait_node_online(90)


# The drills set these up around their FAULTS entry (a provider that comes back, credentials to push);
# the benchmark does the same in one injector, and puts the supervisor's config back afterwards.
BENCH_INJECTORS: dict[str, Callable[[DrillFleet], Any]] = {
    "cost-data-discrepancy": _cost_stale,
    "credential-drift": _credential_drift,
}
AFTER: dict[str, Callable[[DrillFleet], Any]] = {
    "cost-data-discrepancy": _restore_supervisor_config,
    "credential-drift": _restore_credentials,
}
# manual-auth-required is manual by design (never "verified" by a machine) and drilled on loopback.
NOT_BENCHED = {"manual-auth-required": "manual by design: the report guides, a human logs in"}


def collect_faults() -> dict[str, Callable[..., Any]]:
    """Every drill module's FAULTS, merged (incident id -> injector), with the benchmark's wrappers."""
    faults: dict[str, Callable[..., Any]] = {}
    for path in sorted(DRILL_DIR.glob("test_drills_*.py")):
        mod = importlib.import_module(f"tests.fleet.drills.{path.stem}")
        faults.update(getattr(mod, "FAULTS", {}) or {})
    faults.update(BENCH_INJECTORS)
    return {k: v for k, v in faults.items() if k not in NOT_BENCHED}


def inject(fault: Callable[..., Any], fleet: DrillFleet) -> list[str]:
    """Run an injector; one that returns a list gives extra halctl arguments (e.g. a low threshold)."""
    extra = fault(fleet)
    return [str(a) for a in extra] if isinstance(extra, list | tuple) else []


def timed_halctl(fleet: DrillFleet, incident: str, args: list[str]) -> tuple[float, int, dict[str, Any]]:
    t0 = time.monotonic()
    rc, report = fleet.remediate(incident, "--no-send", *args)
    return time.monotonic() - t0, rc, report


def timed_plain(fleet: DrillFleet, incident: str, args: list[str], workdir: Path) -> float:
    """The same playbook with plain ansible-playbook (same inventory, variables and result file)."""
    book = PLAYBOOKS / f"remediate_{incident.replace('-', '_')}.yml"
    result = workdir / f"plain-{incident}.json"
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(fleet.inventory), str(book),
           "-e", f"hal_remediation_result_file={result}", *args]
    t0 = time.monotonic()
    run(cmd, env=fleet.env(), timeout=600, log=ARTIFACTS / f"bench-plain-{incident}.log", check=False)
    elapsed = time.monotonic() - t0
    hosts = json.loads(result.read_text())["hosts"] if result.exists() else {}
    if not hosts:
        raise SystemExit(f"plain ansible-playbook of {incident} wrote no result (see {ARTIFACTS})")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="Comma-separated incident ids (default: every one with a fault injector).")
    ap.add_argument("--repeat", type=int, default=3, help="Healthy runs per tool for the overhead ratio.")
    ap.add_argument("--keep", action="store_true", help="Keep the fleet afterwards (prefix hal-bench).")
    args = ap.parse_args()
    reason = host_ready()
    if reason:
        print(f"cannot run the drills here: {reason}", file=sys.stderr)
        return 2
    faults = collect_faults()
    if args.only:
        wanted = [i.strip() for i in args.only.split(",") if i.strip()]
        unknown = sorted(set(wanted) - set(faults))
        if unknown:
            print(f"no fault injector for: {', '.join(unknown)} (have: {', '.join(sorted(faults))})",
                  file=sys.stderr)
            return 2
        faults = {k: faults[k] for k in wanted}
    work = Path(tempfile.mkdtemp(prefix="hal-bench-drills-"))
    fleet = DrillFleet("hal-bench", work)
    rows: list[tuple[str, str, float, float, float, float]] = []
    try:
        t0 = time.monotonic()
        fleet.create()
        fleet.deploy()
        print(f"fleet deployed in {time.monotonic() - t0:.1f}s; incidents: {', '.join(faults)}", flush=True)
        for incident, fault in faults.items():
            healthy = {"halctl": [], "plain": []}
            for _ in range(args.repeat):
                elapsed, rc, report = timed_halctl(fleet, incident, [])
                if report.get("status") != "not_present":
                    raise SystemExit(f"{incident}: healthy fleet reported {report.get('status')} (rc={rc})")
                healthy["halctl"].append(elapsed)
                healthy["plain"].append(timed_plain(fleet, incident, [], work))
            t_inject = time.monotonic()
            extra = inject(fault, fleet)
            _, rc, report = timed_halctl(fleet, incident, extra)
            mttr = time.monotonic() - t_inject
            med_h, med_p = statistics.median(healthy["halctl"]), statistics.median(healthy["plain"])
            rows.append((incident, str(report.get("status")), mttr, med_h, med_p, med_h / med_p))
            print(f"{incident:26} status={report.get('status'):10} mttr={mttr:6.1f}s  "
                  f"halctl={med_h:5.1f}s plain={med_p:5.1f}s overhead={med_h / med_p:.3f}x", flush=True)
            if incident in AFTER:
                AFTER[incident](fleet)
            if not fleet.wait_node_online(120):
                raise SystemExit(f"{incident}: the fleet did not recover (node offline)")
    finally:
        if not args.keep:
            fleet.destroy()
    print()
    print(f"{'incident':26} {'status':10} {'MTTR s':>7} {'halctl s':>9} {'plain s':>8} {'ratio':>6}")
    for inc, status, mttr, h, p, ratio in rows:
        print(f"{inc:26} {status:10} {mttr:7.1f} {h:9.2f} {p:8.2f} {ratio:6.3f}")
    if rows:
        print(f"mttr_max={max(r[2] for r in rows):.1f}s overhead_max={max(r[5] for r in rows):.3f} "
              f"(target <= 1.15) verified={sum(r[1] == 'verified' for r in rows)}/{len(rows)}")
    return 0 if rows and all(r[1] == "verified" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
