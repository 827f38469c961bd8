# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
"""Filter ``halswarm.ops.remediation_plan``: the decide phase of every remediation playbook.

The rules live in one place, the pure planners of the hal-o-swarm package
(``halswarm.core.remediation.planners``), which are fixture-tested without hosts; playbooks gather facts
read-only and hand them to this filter, so YAML never re-implements a decision. The collection carries
a generated copy of those planners in ``plugin_utils`` (scripts/vendor_collection.py), so a controller
with only the collection (AWX / Automation Platform) runs every remediation.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.halswarm.ops.plugins.plugin_utils.remediation_catalog import UnknownIncident
from ansible_collections.halswarm.ops.plugins.plugin_utils.remediation_planners import plan as _plan


def remediation_plan(facts, incident):
    """Facts (dict) in, plan (dict: incident, decision, present, reasons, actions, verify, guidance) out."""
    if not isinstance(facts, dict):
        raise AnsibleFilterError(f"remediation_plan expects a dict of facts, got {type(facts).__name__}")
    try:
        return _plan(str(incident), facts).to_dict()
    except UnknownIncident as exc:
        raise AnsibleFilterError(to_native(exc)) from None


class FilterModule:
    def filters(self):
        return {"remediation_plan": remediation_plan}
