#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hal_sqlite_restore
short_description: Verified, atomic restore of the HAL-O-SWARM supervisor's SQLite database
version_added: 0.1.0
description:
  - Verifies the backup first and refuses it when its sha256 does not match its C(.sha256) sidecar (a tampered or
    damaged file), when the sidecar is missing (unless O(require_checksum=false)), or when it fails
    C(PRAGMA integrity_check).
  - Refuses to replace a database that a process still holds open (the supervisor must be stopped first),
    unless O(force=true).
  - Copies the backup to a temporary file beside the database (fsync, checksum re-checked), keeps the replaced
    database as C(<dest>.replaced-<UTC timestamp>) (its C(-wal) file moves with it, C(-shm) is dropped) and renames
    the copy into place. The old write-ahead log is moved away before the new file appears, so it can never be
    replayed into the restored database.
  - The restored file is mode 0600 and owned like the file it replaced; C(PRAGMA quick_check) is run on it.
  - Reports the row counts per table before and after.
options:
  src:
    description: The backup file to restore.
    type: path
    required: true
  dest:
    description: The database to replace (the supervisor's C(database.path)).
    type: path
    required: true
  keep_replaced:
    description: Keep the replaced database (and its write-ahead log) as C(<dest>.replaced-<UTC timestamp>).
    type: bool
    default: true
  require_checksum:
    description: Refuse a backup without a C(.sha256) sidecar. A sidecar that does not match is always refused.
    type: bool
    default: true
  force:
    description: Restore even when a process holds the database open. That process keeps writing to the replaced
      file, so its changes are lost; only for a hung process that cannot be stopped.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Verifies the backup and reports the row counts before and after; the database is not touched and a
      running supervisor is reported as RV(in_use) instead of failing.
  diff_mode:
    support: full
    details: Row counts per table before and after.
  platform:
    platforms: posix
notes:
  - Stop the supervisor first (the C(halswarm.ops.restore) playbook and C(halctl restore) do).
seealso:
  - module: halswarm.ops.hal_sqlite_backup
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Check a backup and preview the restore (the service may keep running)
  halswarm.ops.hal_sqlite_restore:
    src: /var/lib/hal-o-swarm/supervisor/backups/supervisor-20260101T020000Z.db
    dest: /var/lib/hal-o-swarm/supervisor/supervisor.db
  check_mode: true
  diff: true

- name: Stop the supervisor
  ansible.builtin.systemd_service:
    name: hal-supervisor.service
    state: stopped

- name: Restore
  halswarm.ops.hal_sqlite_restore:
    src: /var/lib/hal-o-swarm/supervisor/backups/supervisor-20260101T020000Z.db
    dest: /var/lib/hal-o-swarm/supervisor/supervisor.db
  register: restored
"""

RETURN = r"""
dest:
  description: The restored database.
  returned: success
  type: str
backup:
  description: The backup that was restored.
  returned: success
  type: str
replaced:
  description: Where the replaced database was kept (null when there was none or O(keep_replaced=false)).
  returned: success and not check mode
  type: str
  sample: /var/lib/hal-o-swarm/supervisor/supervisor.db.replaced-20260101T030000Z
replaced_files:
  description: The replaced database's write-ahead log or journal, kept beside it.
  returned: success and not check mode
  type: list
  elements: str
before:
  description: Rows per table of the database before the restore (null when it did not exist or did not read).
  returned: success
  type: dict
after:
  description: Rows per table of the backup, i.e. after the restore.
  returned: success
  type: dict
changes:
  description: Per table, C(before), C(after) and C(change).
  returned: success
  type: dict
  sample: {"events": {"before": 120500, "after": 120345, "change": -155}}
quick_check:
  description: C(ok) when the restored file passes C(PRAGMA quick_check).
  returned: success and not check mode
  type: str
sha256:
  description: SHA-256 of the restored file.
  returned: success
  type: str
in_use:
  description: Whether a process held the database open when the module looked.
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (  # noqa: E402
    DataSafetyError,
    counts_text,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_restore import (  # noqa: E402
    restore_database,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            keep_replaced=dict(type="bool", default=True),
            require_checksum=dict(type="bool", default=True),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = restore_database(p["src"], p["dest"], require_checksum=p["require_checksum"],
                                  keep_replaced=p["keep_replaced"], check_mode=module.check_mode, force=p["force"])
    except DataSafetyError as exc:
        extra = {}
        verification = exc.details.get("verification") if isinstance(exc.details, dict) else None
        if verification:
            extra["verification"] = verification
        module.fail_json(msg=exc.message, kind=exc.kind, **extra)
    verification = result.pop("verification")
    result["verification"] = {k: verification[k] for k in ("checksum", "integrity", "size")}
    result["dest"] = result.pop("db")
    result["diff"] = dict(
        before_header=f"{result['dest']} (rows per table)",
        after_header=f"{result['backup']} (rows per table)",
        before=counts_text(result["before"]),
        after=counts_text(result["after"]),
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
