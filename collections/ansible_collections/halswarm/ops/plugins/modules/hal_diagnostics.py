#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)


DOCUMENTATION = r"""
---
module: hal_diagnostics
short_description: Collect the HAL-O-SWARM escalation diagnostics of one host, with secrets redacted
version_added: 0.1.0
description:
  - Reads, on the target, what the runbook's escalation step asks for (Escalation, document the incident) and
    returns it as text files in RV(files), ready for M(halswarm.ops.hal_diagnostics_bundle).
  - Journals of the units in O(units) that exist (C(journalctl -u UNIT -n O(journal_lines))), C(systemctl show) of
    each unit (state, C(NRestarts), C(Memory*)), system information (C(uname -a), C(uptime), C(df -h),
    C(free -h), failed units, os-release), the configs in O(config_files) with secrets redacted and, when
    O(database) exists, a read-only C(PRAGMA integrity_check), file sizes, row counts per table and the last
    O(events_limit) events.
  - Every file is redacted before it leaves the host, by key (C(auth_token), C(bot_token), C(webhook_url),
    C(api_key), passwords, credentials, C(agent_tokens), ...) and by value (the contents of O(token_files), the
    values of the configs' secret keys and O(secrets)), then scanned for those values (RV(summary.leak_scan)).
  - Read-only; problems reading one item are recorded in RV(summary.errors) instead of failing the task.
options:
  units:
    description: systemd units whose state and journal are collected (units that do not exist are skipped).
    type: list
    elements: str
    default: [hal-supervisor.service, hal-agent.service]
  journal_lines:
    description: Journal lines per unit (the newest).
    type: int
    default: 1000
  config_files:
    description: Config files to include, redacted (files that do not exist are skipped).
    type: list
    elements: path
    default: [/etc/hal-o-swarm/supervisor.config.json, /etc/hal-o-swarm/agent.config.json]
  token_files:
    description: Files holding secrets; their values are masked wherever they appear and never returned.
    type: list
    elements: path
    default: [/etc/hal-o-swarm/supervisor.token, /etc/hal-o-swarm/agent.token]
  database:
    description: The supervisor's SQLite database (opened read-only); skipped when it does not exist.
    type: path
    default: /var/lib/hal-o-swarm/supervisor/supervisor.db
  events_limit:
    description: How many of the newest events to include (C(0) for none).
    type: int
    default: 200
  secrets:
    description: More secret values to mask (for example the fleet token from the inventory).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads; check mode collects the same.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Needs root (or a member of C(systemd-journal) that can read the configs) for complete results.
seealso:
  - module: halswarm.ops.hal_diagnostics_bundle
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Collect the diagnostics of this host
  halswarm.ops.hal_diagnostics:
    journal_lines: 1000
    secrets:
      - "{{ hal_auth_token }}"
  become: true
  register: hal_diag
"""

RETURN = r"""
files:
  description: Redacted text files by relative name (C(journal/UNIT.log), C(system/info.txt), C(config/NAME),
    C(db/summary.json), C(db/recent_events.json), ...).
  returned: always
  type: dict
summary:
  description: Per-unit state, configs found, database integrity, RV(summary.errors) and RV(summary.leak_scan).
  returned: always
  type: dict
  contains:
    errors:
      description: Items that could not be read.
      type: list
      elements: str
    leak_scan:
      description: C(known_secrets) (how many values were masked), C(findings) (0 when clean), C(passed).
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.halswarm.ops.plugins.module_utils.hal_diagnostics import (  # noqa: E402
    DEFAULT_CONFIGS,
    DEFAULT_DATABASE,
    DEFAULT_TOKEN_FILES,
    DEFAULT_UNITS,
    collect,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            units=dict(type="list", elements="str", default=list(DEFAULT_UNITS)),
            journal_lines=dict(type="int", default=1000),
            config_files=dict(type="list", elements="path", default=list(DEFAULT_CONFIGS)),
            token_files=dict(type="list", elements="path", default=list(DEFAULT_TOKEN_FILES), no_log=False),
            database=dict(type="path", default=DEFAULT_DATABASE),
            events_limit=dict(type="int", default=200),
            secrets=dict(type="list", elements="str", default=[], no_log=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["journal_lines"] < 1 or p["events_limit"] < 0:
        module.fail_json(msg="journal_lines must be >= 1 and events_limit >= 0")
    files, summary = collect(units=p["units"], journal_lines=p["journal_lines"], config_files=p["config_files"],
                             token_files=p["token_files"], database=p["database"], events_limit=p["events_limit"],
                             secrets=p["secrets"])
    module.exit_json(changed=False, files=files, summary=summary)


if __name__ == "__main__":
    main()
