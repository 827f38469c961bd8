#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hal_sqlite_backup
short_description: Online backup of the HAL-O-SWARM supervisor's SQLite database
version_added: 0.1.0
description:
  - Copies a live SQLite database with the SQLite online backup API while the supervisor keeps writing (never a
    C(cp) of a WAL database). The copy runs in steps inside one read transaction, so it is a consistent snapshot
    that holds everything committed before the backup started, and the writer is never blocked.
  - The copy is turned into a single self-contained file (rollback journal mode), checked with
    C(PRAGMA integrity_check), fsynced and renamed into place as C(<prefix>-<UTC timestamp>.db), mode 0600,
    with a C(<file>.sha256) sidecar in C(sha256sum) format.
  - A copy that fails the integrity check means the source is damaged; the module fails and leaves nothing behind.
  - Then old backups are removed by count and age (the newest backup is never removed).
options:
  src:
    description: Path of the database to back up (the supervisor's C(database.path)).
    type: path
    required: true
  dest_dir:
    description: Directory of the backups; created (0700) when missing.
    type: path
    required: true
  prefix:
    description: File name prefix of the backups. Defaults to the database file name without its extension.
    type: str
  keep:
    description: Number of newest backups to keep (with this prefix); C(0) keeps any number.
    type: int
    default: 7
  max_age_days:
    description: Remove backups older than this many days; C(0) disables the age limit.
    type: float
    default: 0
  pages_per_step:
    description: Database pages copied per backup step.
    type: int
    default: 1024
  busy_retries:
    description: How often to retry when the database is busy (with a growing pause).
    type: int
    default: 5
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Checks the source, the destination and the free space, and reports which backups retention would remove.
  diff_mode:
    support: full
    details: The list of backup files before and after.
  platform:
    platforms: posix
notes:
  - The source is opened read-only. Run it as root or as the supervisor's service user.
  - Uses only the Python standard library on the target.
seealso:
  - module: halswarm.ops.hal_sqlite_restore
  - module: halswarm.ops.hal_sqlite_recover
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Back up the supervisor database, keep a week of backups
  halswarm.ops.hal_sqlite_backup:
    src: /var/lib/hal-o-swarm/supervisor/supervisor.db
    dest_dir: /var/lib/hal-o-swarm/supervisor/backups
    keep: 7
    max_age_days: 30
  register: backup

- name: Show what was saved
  ansible.builtin.debug:
    msg: "{{ backup.path }}: {{ backup.tables.events }} events, integrity {{ backup.integrity }}"
"""

RETURN = r"""
path:
  description: Path of the new backup.
  returned: success and not check mode
  type: str
  sample: /var/lib/hal-o-swarm/supervisor/backups/supervisor-20260101T020000Z.db
checksum_file:
  description: Path of the sha256 sidecar.
  returned: success and not check mode
  type: str
sha256:
  description: SHA-256 of the backup file.
  returned: success and not check mode
  type: str
size:
  description: Size of the backup in bytes.
  returned: success and not check mode
  type: int
tables:
  description: Rows per table in the backup.
  returned: success and not check mode
  type: dict
  sample: {"events": 120345, "nodes": 12, "sessions": 40}
integrity:
  description: Result of C(PRAGMA integrity_check) on the backup (always C(ok) on success).
  returned: success and not check mode
  type: str
  sample: ok
duration:
  description: Seconds the backup took.
  returned: success and not check mode
  type: float
pages:
  description: Pages copied.
  returned: success and not check mode
  type: int
removed:
  description: Backups removed by retention (in check mode, those that would be removed).
  returned: success
  type: list
  elements: str
backups:
  description: Backups with this prefix after the run, newest first.
  returned: success
  type: list
  elements: str
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_backup import (  # noqa: E402
    apply_retention,
    backup_database,
    check_backup_inputs,
    list_backups,
    select_expired,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (  # noqa: E402
    DataSafetyError,
    utcnow,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            dest_dir=dict(type="path", required=True),
            prefix=dict(type="str"),
            keep=dict(type="int", default=7),
            max_age_days=dict(type="float", default=0),
            pages_per_step=dict(type="int", default=1024),
            busy_retries=dict(type="int", default=5),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["keep"] < 0 or p["max_age_days"] < 0 or p["pages_per_step"] < 1 or p["busy_retries"] < 0:
        module.fail_json(msg="keep, max_age_days and busy_retries must be >= 0 and pages_per_step >= 1")
    src = p["src"]
    dest_dir = p["dest_dir"]
    prefix = p["prefix"] or (os.path.splitext(os.path.basename(src))[0] or "backup")
    try:
        before = [b["name"] for b in list_backups(dest_dir, prefix)]
        if module.check_mode:
            check_backup_inputs(src, dest_dir)
            existing = [(b["name"], b["created_ts"]) for b in list_backups(dest_dir, prefix)]
            pending = f"{prefix}-<new>.db"
            expired = select_expired([*existing, (pending, utcnow().timestamp())], p["keep"], p["max_age_days"],
                                     protect=(pending,))
            after = [n for n in before if n not in expired]
            module.exit_json(
                changed=True, removed=[os.path.join(dest_dir, n) for n in expired], backups=after,
                diff=dict(before_header=dest_dir, after_header=dest_dir, before="\n".join(before) + "\n",
                          after="\n".join([pending, *after]) + "\n"),
            )
        result = backup_database(src, dest_dir, prefix=prefix, pages_per_step=p["pages_per_step"],
                                 busy_retries=p["busy_retries"])
        removed = apply_retention(dest_dir, prefix, p["keep"], p["max_age_days"], protect=(result["name"],))
    except DataSafetyError as exc:
        module.fail_json(msg=exc.message, kind=exc.kind)
    after = [b["name"] for b in list_backups(dest_dir, prefix)]
    result.update(
        changed=True, removed=removed, backups=after,
        diff=dict(before_header=dest_dir, after_header=dest_dir, before="\n".join(before) + "\n",
                  after="\n".join(after) + "\n"),
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
