#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hal_sqlite_archive
short_description: Move old rows of the HAL-O-SWARM database into a side archive database, then VACUUM / ANALYZE
version_added: 0.2.0
description:
  - The runbook's "archive old data" without its blind C(DELETE). The rows of O(table) whose O(column) (epoch
    seconds) is older than O(older_than_days) are first copied into the side database O(archive) (created with the
    table's own schema, mode 0600, owned like the database; rows already there are kept) and committed there; only
    then are the rows whose key the archive holds deleted from the database. A crash between the two steps leaves
    rows in both files, never in neither, and running the module again finishes the move.
  - Then optionally C(VACUUM) (gives the freed pages back) and C(ANALYZE) (fresh query planner statistics), and
    C(PRAGMA quick_check) of the database and C(integrity_check) of the archive.
  - Refuses a database that a process still holds open (stop the supervisor first).
options:
  db:
    description: The database (the supervisor's C(database.path)).
    type: path
    required: true
  archive:
    description: The side database the old rows go to (created if missing, appended to if present).
    type: path
    required: true
  older_than_days:
    description: Rows older than this many days are archived; C(0) archives every row older than now.
    type: float
    default: 30
  table:
    description: The table to archive from.
    type: str
    default: events
  column:
    description: Its timestamp column (epoch seconds).
    type: str
    default: timestamp
  vacuum:
    description: Run C(VACUUM) on the database afterwards.
    type: bool
    default: false
  analyze:
    description: Run C(ANALYZE) on the database afterwards.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Counts the rows that would be archived; nothing is written.
  diff_mode:
    support: full
    details: Rows of the table and size of the database before and after.
  platform:
    platforms: posix
seealso:
  - module: halswarm.ops.hal_sqlite_facts
  - module: halswarm.ops.hal_sqlite_backup
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Archive events older than 30 days, then VACUUM and ANALYZE
  halswarm.ops.hal_sqlite_archive:
    db: /var/lib/hal-o-swarm/supervisor/supervisor.db
    archive: /var/lib/hal-o-swarm/supervisor/archive/events-archive.db
    older_than_days: 30
    vacuum: true
    analyze: true
  register: archived
"""

RETURN = r"""
old_rows:
  description: Rows older than the cutoff found in the database.
  returned: success
  type: int
archived:
  description: Rows newly written to the archive (rows already archived are not counted).
  returned: success
  type: int
deleted:
  description: Rows deleted from the database (each one is in the archive), in transactions of at most 2000 rows.
  returned: success
  type: int
pages_freed:
  description: Free pages given back to the file system after the delete (auto_vacuum=INCREMENTAL databases; else 0).
  returned: success
  type: int
archive_rows:
  description: Rows in the archive's table afterwards (null when nothing was archived).
  returned: success
  type: int
cutoff:
  description: The cutoff (UTC, ISO 8601).
  returned: success
  type: str
size_before:
  description: Database size in bytes before.
  returned: success
  type: int
size_after:
  description: Database size in bytes after.
  returned: success
  type: int
vacuumed:
  description: Whether C(VACUUM) ran.
  returned: success
  type: bool
analyzed:
  description: Whether C(ANALYZE) ran.
  returned: success
  type: bool
quick_check:
  description: C(ok) after a change, else null.
  returned: success
  type: str
archive_integrity:
  description: C(ok) when the archive passes C(PRAGMA integrity_check) (null when nothing was archived).
  returned: success
  type: raw
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_archive import (  # noqa: E402
    archive_rows,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (  # noqa: E402
    DataSafetyError,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            db=dict(type="path", required=True),
            archive=dict(type="path", required=True),
            older_than_days=dict(type="float", default=30),
            table=dict(type="str", default="events"),
            column=dict(type="str", default="timestamp"),
            vacuum=dict(type="bool", default=False),
            analyze=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = archive_rows(p["db"], p["archive"], table=p["table"], column=p["column"],
                              older_than_days=p["older_than_days"], vacuum=p["vacuum"], analyze=p["analyze"],
                              check_mode=module.check_mode)
    except DataSafetyError as exc:
        module.fail_json(msg=exc.message, kind=exc.kind)
    moved = result["old_rows"] if module.check_mode else result["deleted"]
    result["diff"] = dict(
        before_header=result["db"], after_header=result["db"],
        before=f"{result['table']} rows older than {result['cutoff']}: {result['old_rows']}\n"
               f"size: {result['size_before']}\n",
        after=f"{result['table']} rows older than {result['cutoff']}: {result['old_rows'] - moved}\n"
              f"size: {result['size_after'] if not module.check_mode else 'after VACUUM'}\n")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
