#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)


DOCUMENTATION = r"""
---
module: hal_diagnostics_bundle
short_description: Write the HAL-O-SWARM escalation bundle (one tarball) and scan it for secrets
version_added: 0.1.0
description:
  - Writes O(dest), a gzip tarball with one top directory named after it, holding C(MANIFEST.json), the files
    M(halswarm.ops.hal_diagnostics) collected per host under C(hosts/HOST/) and each file of O(include) (for
    example the failed remediation report) under C(report/).
  - Every member is redacted again by value (O(secrets)) and JSON files of O(include) also by key; the written
    tarball is then re-read and scanned for the values of O(secrets) (RV(scan)).
  - The file is written atomically (temporary file and rename) with mode O(mode). Meant to run on the controller
    (C(delegate_to=localhost)).
options:
  dest:
    description: The tarball to write (C(.tar.gz)); its directory is created (0700) when missing.
    type: path
    required: true
  hosts:
    description: Per host, the RV(halswarm.ops.hal_diagnostics#module:files) and
      RV(halswarm.ops.hal_diagnostics#module:summary) of M(halswarm.ops.hal_diagnostics), as C({files, summary}).
    type: dict
    required: true
  include:
    description: Files of the controller to add under C(report/) (redacted).
    type: list
    elements: path
    default: []
  secrets:
    description: Secret values that must not appear in the bundle (masked, then scanned for).
    type: list
    elements: str
    default: []
  metadata:
    description: Added to C(MANIFEST.json) (for example the incident id and who collected it).
    type: dict
    default: {}
  mode:
    description: Mode of the tarball.
    type: raw
    default: "0600"
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Returns the members that would be written; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: halswarm.ops.hal_diagnostics
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Bundle what every host collected
  halswarm.ops.hal_diagnostics_bundle:
    dest: /var/tmp/hal-diagnostics.tar.gz
    hosts: "{{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars, 'hal_diag'))) }}"
    include:
      - /var/tmp/failed-report.json
    secrets:
      - "{{ hal_auth_token }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
path:
  description: The tarball.
  returned: success
  type: str
members:
  description: Member names (in check mode, those that would be written).
  returned: always
  type: list
  elements: str
size:
  description: Size in bytes.
  returned: success and not check mode
  type: int
sha256:
  description: SHA-256 of the tarball.
  returned: success and not check mode
  type: str
scan:
  description: C(passed), C(findings) (secret values found in the written members), C(members) (where).
  returned: success and not check mode
  type: dict
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.text.converters import to_native  # noqa: E402
from ansible_collections.halswarm.ops.plugins.module_utils.hal_diagnostics import (  # noqa: E402
    bundle_members,
    write_bundle,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            hosts=dict(type="dict", required=True),
            include=dict(type="list", elements="path", default=[]),
            secrets=dict(type="list", elements="str", default=[], no_log=True),
            metadata=dict(type="dict", default={}),
            mode=dict(type="raw", default="0600"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        mode = int(str(p["mode"]), 8)
    except ValueError:
        module.fail_json(msg="mode must be an octal string such as 0600, got {!r}".format(p["mode"]))
    for path in p["include"]:
        if not os.path.isfile(path):
            module.fail_json(msg=f"include: {path} is not a file")
    if module.check_mode:
        module.exit_json(changed=True, path=p["dest"], members=bundle_members(p["hosts"], p["include"]))
    try:
        result = write_bundle(p["dest"], p["hosts"], include=p["include"], secrets=p["secrets"],
                              metadata=p["metadata"], mode=mode)
    except (OSError, ValueError) as exc:
        module.fail_json(msg="cannot write {}: {}".format(p["dest"], to_native(exc)))
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
