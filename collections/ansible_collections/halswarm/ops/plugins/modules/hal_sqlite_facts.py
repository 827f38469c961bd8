#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hal_sqlite_facts
short_description: Read-only facts about the HAL-O-SWARM supervisor's SQLite database
version_added: 0.2.0
description:
  - Gathers what the data remediations decide on, without changing anything. The database is opened read-only
    (C(mode=ro)); the C(-wal)/C(-shm) files such a connection creates beside a database nobody else has open are
    removed again, so the files are byte for byte unchanged.
  - Integrity (C(PRAGMA integrity_check) or C(quick_check)), size, rows per table, rows of a table older than a number
    of days, and the median time of a set of read-only queries (by default the page of events the supervisor's API
    serves by default).
  - With O(backup_dir), the newest backup whose sha256 matches its C(.sha256) sidecar and which passes
    C(PRAGMA integrity_check) (older backups are tried when the newest is damaged).
  - With O(compare_with) (or O(compare_with_newest_backup)), the rows of that backup which the live database lacks,
    per table, matched on the primary key and on every UNIQUE key.
options:
  path:
    description: The database (the supervisor's C(database.path)).
    type: path
    required: true
  quick:
    description: Use C(PRAGMA quick_check) instead of the slower C(integrity_check).
    type: bool
    default: false
  older_than_days:
    description: Count the rows of O(table) whose O(column) (epoch seconds) is older than this many days.
    type: float
  table:
    description: Table for O(older_than_days).
    type: str
    default: events
  column:
    description: Timestamp column (epoch seconds) for O(older_than_days).
    type: str
    default: timestamp
  time_queries:
    description:
      - Read-only queries to time (median of O(samples) runs each). The connection is read-only, so a statement
        that writes fails. An empty list times nothing.
      - Defaults to the page of events the supervisor's API serves by default (count, then the first 100 oldest).
    type: list
    elements: str
  samples:
    description: Runs per timed query.
    type: int
    default: 3
  backup_dir:
    description: Directory of backups (C(<prefix>-<UTC timestamp>.db) with C(.sha256) sidecars) to pick the newest
      valid one from.
    type: path
  backup_prefix:
    description: Backup name prefix in O(backup_dir).
    type: str
    default: supervisor
  compare_with:
    description: A backup to compare with; the rows it holds that the database lacks are reported.
    type: path
  compare_with_newest_backup:
    description: Compare with the newest valid backup of O(backup_dir) (which must be set).
    type: bool
    default: false
  compare_tables:
    description: Tables to compare; by default every table both databases have (C(schema_migrations) aside).
    type: list
    elements: str
  exclude_older_than:
    description:
      - Rows removed on purpose by retention are not missing. Per table, V([column, cutoff]) where cutoff is in
        epoch seconds; rows of the backup whose column is older than the cutoff are left out of RV(missing)
        (a NULL is never old). Tables not compared are ignored.
      - "For example V({events: [timestamp, 1767225600], audit_log: [timestamp, 1761955200]})."
    type: dict
    version_added: 0.2.0
  archive:
    description:
      - A side database rows were archived into (M(halswarm.ops.hal_sqlite_archive)); it is attached read-only.
        Rows of the backup whose key its table of the same name holds are not missing.
    type: path
    version_added: 0.2.0
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: halswarm.ops.hal_sqlite_recover
  - module: halswarm.ops.hal_sqlite_merge
  - module: halswarm.ops.hal_sqlite_archive
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Integrity and the newest valid backup
  halswarm.ops.hal_sqlite_facts:
    path: /var/lib/hal-o-swarm/supervisor/supervisor.db
    backup_dir: /var/backups/hal-o-swarm
  register: db

- name: Rows of the newest valid backup missing from the live database
  halswarm.ops.hal_sqlite_facts:
    path: /var/lib/hal-o-swarm/supervisor/supervisor.db
    backup_dir: /var/backups/hal-o-swarm
    compare_with_newest_backup: true
    compare_tables: [sessions, events]
    time_queries: []

- name: The same, leaving out rows removed by retention or archived on purpose
  halswarm.ops.hal_sqlite_facts:
    path: /var/lib/hal-o-swarm/supervisor/supervisor.db
    backup_dir: /var/backups/hal-o-swarm
    compare_with_newest_backup: true
    compare_tables: [sessions, events]
    exclude_older_than:
      events: [timestamp, "{{ now().timestamp() - 30 * 86400 }}"]
    archive: /var/lib/hal-o-swarm/supervisor/archive/events-archive.db
    time_queries: []

- name: Old events and the time of the default events page
  halswarm.ops.hal_sqlite_facts:
    path: /var/lib/hal-o-swarm/supervisor/supervisor.db
    quick: true
    older_than_days: 30
    samples: 5
"""

RETURN = r"""
db:
  description:
    - Facts of the database, C(exists), C(size), C(wal_size), C(integrity) (C(ok) or the first complaints),
      C(problems), C(tables) (rows per table, null when unreadable), C(old_rows), C(cutoff), C(queries)
      (each C(sql) and C(ms)), C(query_ms) (their sum) and C(error).
  returned: always
  type: dict
  sample: {"exists": true, "integrity": "ok", "tables": {"events": 1200}, "old_rows": 0, "query_ms": 1.9}
backup:
  description: The newest valid backup of O(backup_dir), null when there is none.
  returned: when O(backup_dir) is set
  type: str
backups_checked:
  description: The backups verified newest first (each C(path), C(created), C(ok), C(problems)).
  returned: when O(backup_dir) is set
  type: list
  elements: dict
compared_with:
  description: The backup the database was compared with (null when there was none to compare with).
  returned: when O(compare_with) or O(compare_with_newest_backup) is set
  type: str
missing:
  description:
    - Per table, the rows of the compared backup that the database lacks (by primary or UNIQUE key).
    - Without the rows left out by O(exclude_older_than) and O(archive).
  returned: when a backup was compared
  type: dict
  sample: {"events": 120, "sessions": 2}
missing_total:
  description: Sum of RV(missing).
  returned: when a backup was compared
  type: int
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_archive import (  # noqa: E402
    missing_rows,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (  # noqa: E402
    DataSafetyError,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_facts import (  # noqa: E402
    EVENTS_PAGE_QUERIES,
    database_facts,
    newest_valid_backup,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            quick=dict(type="bool", default=False),
            older_than_days=dict(type="float"),
            table=dict(type="str", default="events"),
            column=dict(type="str", default="timestamp"),
            time_queries=dict(type="list", elements="str"),
            samples=dict(type="int", default=3),
            backup_dir=dict(type="path"),
            backup_prefix=dict(type="str", default="supervisor"),
            compare_with=dict(type="path"),
            compare_with_newest_backup=dict(type="bool", default=False),
            compare_tables=dict(type="list", elements="str"),
            exclude_older_than=dict(type="dict"),
            archive=dict(type="path"),
        ),
        mutually_exclusive=[("compare_with", "compare_with_newest_backup")],
        supports_check_mode=True,
    )
    p = module.params
    if p["samples"] < 1:
        module.fail_json(msg="samples must be >= 1")
    if p["compare_with_newest_backup"] and not p["backup_dir"]:
        module.fail_json(msg="compare_with_newest_backup needs backup_dir")
    queries = EVENTS_PAGE_QUERIES if p["time_queries"] is None else p["time_queries"]
    result = dict(changed=False)
    result["db"] = database_facts(p["path"], quick=p["quick"], table=p["table"], column=p["column"],
                                  older_than_days=p["older_than_days"], queries=queries, samples=p["samples"])
    try:
        if p["backup_dir"]:
            result["backup"], result["backups_checked"] = newest_valid_backup(p["backup_dir"], p["backup_prefix"])
        compare = p["compare_with"] or (result.get("backup") if p["compare_with_newest_backup"] else None)
        if p["compare_with"] or p["compare_with_newest_backup"]:
            result["compared_with"] = compare
        if compare and result["db"]["integrity"] == "ok":
            result["missing"] = missing_rows(p["path"], compare, p["compare_tables"],
                                             exclude_older_than=p["exclude_older_than"], archive=p["archive"])
            result["missing_total"] = sum(result["missing"].values())
    except DataSafetyError as exc:
        module.fail_json(msg=exc.message, kind=exc.kind, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
