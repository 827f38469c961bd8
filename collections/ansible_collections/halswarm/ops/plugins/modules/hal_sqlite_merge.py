#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hal_sqlite_merge
short_description: Copy the rows a backup holds and the live HAL-O-SWARM database lost back into it
version_added: 0.2.0
description:
  - Repairs lost rows (deleted sessions, events) without overwriting the database with an older copy. A row of the
    backup is copied back only when it matches no row of the database on the primary key or on any UNIQUE key
    (C(INSERT OR IGNORE)), so every row the database has, newer ones included, is kept as it is.
  - Verifies the backup first and refuses it when its sha256 does not match its C(.sha256) sidecar, when the sidecar
    is missing (unless O(require_checksum=false)), or when it fails C(PRAGMA integrity_check).
  - Refuses a database that a process still holds open (stop the supervisor first, it keeps sessions in memory).
  - All tables are merged in one transaction; C(PRAGMA quick_check) runs afterwards. Files that SQLite creates beside
    the database (C(-wal), C(-shm)) get the database's owner.
options:
  src:
    description: The backup to copy rows from. It is only read.
    type: path
    required: true
  dest:
    description: The database to repair (the supervisor's C(database.path)).
    type: path
    required: true
  tables:
    description: Tables to merge; by default every table both have (C(schema_migrations) aside).
    type: list
    elements: str
  require_checksum:
    description: Refuse a backup without a C(.sha256) sidecar. A sidecar that does not match is always refused.
    type: bool
    default: true
  exclude_older_than:
    description:
      - Rows removed on purpose by retention are not copied back. Per table, V([column, cutoff]) where cutoff is
        in epoch seconds; rows of the backup whose column is older than the cutoff are neither counted missing
        nor merged (a NULL is never old). Tables not merged are ignored.
    type: dict
    version_added: 0.2.0
  archive:
    description:
      - A side database rows were archived into (M(halswarm.ops.hal_sqlite_archive)); it is attached read-only.
        Rows of the backup whose key its table of the same name holds are neither counted missing nor merged.
    type: path
    version_added: 0.2.0
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Verifies the backup and reports the rows that would be copied back; nothing is written.
  diff_mode:
    support: full
    details: Rows missing per table before and after.
  platform:
    platforms: posix
notes:
  - Take a snapshot of the database first (M(halswarm.ops.hal_sqlite_backup)); the C(lost-session-data)
    remediation does.
seealso:
  - module: halswarm.ops.hal_sqlite_facts
  - module: halswarm.ops.hal_sqlite_restore
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Stop the supervisor
  ansible.builtin.systemd_service:
    name: hal-supervisor.service
    state: stopped

- name: Copy lost sessions and events back from the newest backup
  halswarm.ops.hal_sqlite_merge:
    src: /var/backups/hal-o-swarm/supervisor-20260101T020000Z.db
    dest: /var/lib/hal-o-swarm/supervisor/supervisor.db
    tables: [sessions, events]
  register: merged

- name: The same, without undoing retention (events older than 30 days) and archiving
  halswarm.ops.hal_sqlite_merge:
    src: /var/backups/hal-o-swarm/supervisor-20260101T020000Z.db
    dest: /var/lib/hal-o-swarm/supervisor/supervisor.db
    tables: [sessions, events]
    exclude_older_than:
      events: [timestamp, "{{ now().timestamp() - 30 * 86400 }}"]
    archive: /var/lib/hal-o-swarm/supervisor/archive/events-archive.db
"""

RETURN = r"""
missing:
  description: Per table, rows of the backup the database lacked before.
  returned: success
  type: dict
  sample: {"events": 120, "sessions": 2}
inserted:
  description: Per table, rows copied back (empty in check mode).
  returned: success
  type: dict
missing_after:
  description: Per table, rows of the backup still missing afterwards (the same as RV(missing) in check mode).
  returned: success
  type: dict
skipped:
  description: Tables not merged because the database has a required column the backup lacks (rows left missing).
  returned: success
  type: dict
tables:
  description: The tables compared.
  returned: success
  type: list
  elements: str
quick_check:
  description: C(ok) after a merge that changed something, else null.
  returned: success
  type: str
archive:
  description: The archive rows were looked up in (O(archive)), null without one.
  returned: success
  type: str
  version_added: 0.2.0
exclude_older_than:
  description: The cutoffs applied, per table V([column, cutoff]) (empty without O(exclude_older_than)).
  returned: success
  type: dict
  version_added: 0.2.0
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_archive import (  # noqa: E402
    merge_from_backup,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (  # noqa: E402
    DataSafetyError,
)


def _lines(counts):
    return "".join(f"{t}: {n}\n" for t, n in sorted(counts.items()))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            tables=dict(type="list", elements="str"),
            require_checksum=dict(type="bool", default=True),
            exclude_older_than=dict(type="dict"),
            archive=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = merge_from_backup(p["src"], p["dest"], tables=p["tables"], check_mode=module.check_mode,
                                   require_checksum=p["require_checksum"],
                                   exclude_older_than=p["exclude_older_than"], archive=p["archive"])
    except DataSafetyError as exc:
        module.fail_json(msg=exc.message, kind=exc.kind)
    after = {t: 0 for t in result["missing"]} if module.check_mode else result["missing_after"]
    if module.check_mode:
        after.update(result["skipped"])
    result["diff"] = dict(before_header=f"{result['db']} (rows of the backup missing)",
                          after_header=f"{result['db']} (rows of the backup missing)",
                          before=_lines(result["missing"]), after=_lines(after))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
