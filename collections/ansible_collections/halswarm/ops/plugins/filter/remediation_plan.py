# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""Filter ``halswarm.ops.remediation_plan``: the decide phase of every remediation playbook.

The rules live in one place, the pure planners of the hal-o-swarm package
(``halswarm.ops.remediation.planners``), which are fixture-tested without hosts; playbooks gather facts
read-only and hand them to this filter, so YAML never re-implements a decision. Runs on the controller,
where ``halctl remediate`` (and so the package) is installed.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_native

try:
    from halswarm.ops.remediation.catalog import UnknownIncident
    from halswarm.ops.remediation.planners import plan as _plan
except ImportError as _exc:  # the collection without the package: a clear error at use, not at load
    _plan = None
    UnknownIncident = KeyError
    _IMPORT_ERROR = to_native(_exc)
else:
    _IMPORT_ERROR = None


def remediation_plan(facts, incident):
    """Facts (dict) in, plan (dict: incident, decision, present, reasons, actions, verify, guidance) out."""
    if _plan is None:
        raise AnsibleFilterError("halswarm.ops.remediation_plan needs the hal-o-swarm package on the controller "
                                 "(pip install 'hal-o-swarm[ops]'): " + _IMPORT_ERROR)
    if not isinstance(facts, dict):
        raise AnsibleFilterError(f"remediation_plan expects a dict of facts, got {type(facts).__name__}")
    try:
        return _plan(str(incident), facts).to_dict()
    except UnknownIncident as exc:
        raise AnsibleFilterError(to_native(exc)) from None


class FilterModule:
    def filters(self):
        return {"remediation_plan": remediation_plan}
