#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hal_sqlite_recover
short_description: Salvage the readable rows of a corrupt HAL-O-SWARM supervisor database
version_added: 0.1.0
description:
  - Recovers what can still be read from a damaged SQLite database into a new database, without the SQLite
    shell's C(.recover) (whose C(sqlite_dbpage) table this platform's SQLite lacks).
  - Never touches the original. It is copied byte by byte (unreadable blocks become zeros) into a private work
    directory, and only the copy is opened. Its write-ahead log, if any, is applied to the copy.
  - Pass 1 reads every table through SQL by rowid ranges, skipping the ranges that do not read (it skips ahead
    exponentially and bisects back to the first rowid that reads again).
  - Pass 2 parses the raw b-tree pages of the copy and takes the rows of intact table leaf pages the SQL pass could
    not reach, e.g. under a damaged interior page or, when C(sqlite_master) itself is unreadable, everything
    (leaf pages are then attributed to tables by the shape of their records).
  - The schema comes from the damaged file's C(sqlite_master); when that is unreadable, from the migration files
    of the installed release (O(migrations_dir)), with C(schema_migrations) filled in as the supervisor's migrator
    would.
  - The result passes C(PRAGMA integrity_check), is mode 0600 and gets a C(.sha256) sidecar, so
    M(halswarm.ops.hal_sqlite_restore) accepts it. Per table, the module reports the rows saved and lost.
options:
  src:
    description: The damaged database. It is only read.
    type: path
    required: true
  dest:
    description: The new database to create. Must not exist unless O(force=true).
    type: path
    required: true
  migrations_dir:
    description:
      - Directory of the supervisor's migration files (C(NNN_name.sql)), used when C(sqlite_master) is unreadable.
      - Defaults to C(halswarm/store/migrations) of the release installed under O(release_root)C(/current).
    type: path
  release_root:
    description: Install root of HAL-O-SWARM releases, to find the migration files.
    type: path
    default: /opt/hal-o-swarm
  batch:
    description: Rows read per SQL query.
    type: int
    default: 500
  max_seconds:
    description: Stop salvaging after this many seconds (what was saved so far is kept); C(0) means no limit.
    type: int
    default: 0
  force:
    description: Replace O(dest) if it exists.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Salvages into a temporary file and reports what would be saved; O(dest) is not created.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Stop the supervisor before recovering its live database, or recover a copy.
  - Restore the result with M(halswarm.ops.hal_sqlite_restore) (or C(halctl restore)).
seealso:
  - module: halswarm.ops.hal_sqlite_restore
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Salvage a corrupt supervisor database
  halswarm.ops.hal_sqlite_recover:
    src: /var/lib/hal-o-swarm/supervisor/supervisor.db
    dest: /var/lib/hal-o-swarm/supervisor/recovered.db
  register: recovered

- name: Report what was lost
  ansible.builtin.debug:
    msg: "{{ item.key }}: saved {{ item.value.saved }}, lost {{ item.value.lost | default('unknown', true) }}"
  loop: "{{ recovered.tables | dict2items }}"
"""

RETURN = r"""
dest:
  description: The recovered database (in check mode, where it would be written).
  returned: success
  type: str
sha256:
  description: SHA-256 of the recovered database.
  returned: success and not check mode
  type: str
schema_source:
  description: Where the schema came from, C(sqlite_master) or C(migrations).
  returned: success
  type: str
tables:
  description:
    - Per table, C(saved) (rows in the new database), C(saved_sql) and C(saved_pages) (by which pass),
      C(expected) (rows the table had, when a b-tree or index could still count them), C(lost) (expected - saved,
      null when unknown), C(lost_rows) (rowids whose content did not read), C(skipped_ranges) (rowid ranges that
      did not read), C(complete) and C(errors).
  returned: success
  type: dict
  sample: {"events": {"saved": 1180, "expected": 1200, "lost": 20, "skipped_ranges": [[501, 540]], "complete": false}}
totals:
  description: Rows saved and lost over all tables, and the tables whose loss is unknown.
  returned: success
  type: dict
pages:
  description: Raw page scan statistics (orphan leaf pages found, attributed to a table, left over).
  returned: success
  type: dict
integrity:
  description: C(ok) (the recovered database passes C(PRAGMA integrity_check)).
  returned: success
  type: str
notes:
  description: Remarks on what could not be done (unreadable header, write-ahead log, sequences...).
  returned: success
  type: list
  elements: str
"""

import glob  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (  # noqa: E402
    DataSafetyError,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_recover import (  # noqa: E402
    load_migrations,
    recover_database,
)


def find_migrations_dir(release_root):
    pattern = os.path.join(release_root, "current", "lib", "python3*", "site-packages", "halswarm", "store",
                           "migrations")
    found = sorted(glob.glob(pattern))
    return found[-1] if found else None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            migrations_dir=dict(type="path"),
            release_root=dict(type="path", default="/opt/hal-o-swarm"),
            batch=dict(type="int", default=500),
            max_seconds=dict(type="int", default=0),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["batch"] < 1 or p["max_seconds"] < 0:
        module.fail_json(msg="batch must be >= 1 and max_seconds >= 0")
    if os.path.abspath(p["src"]) == os.path.abspath(p["dest"]):
        module.fail_json(msg="dest must differ from src: the original is never modified")
    migrations = None
    mig_dir = p["migrations_dir"] or find_migrations_dir(p["release_root"])
    try:
        if mig_dir:
            migrations = load_migrations(mig_dir)
        if module.check_mode:
            if os.path.exists(p["dest"]) and not p["force"]:
                raise DataSafetyError(f"{p['dest']} already exists (choose another destination)", "exists")
            scratch = tempfile.mkdtemp(prefix="hal-recover-check-", dir=module.tmpdir)
            try:
                result = recover_database(p["src"], os.path.join(scratch, "recovered.db"), migrations=migrations,
                                          batch=p["batch"], max_seconds=p["max_seconds"] or None)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            for key in ("sha256", "checksum_file"):
                result.pop(key, None)
            result["dest"] = p["dest"]
        else:
            result = recover_database(p["src"], p["dest"], migrations=migrations, batch=p["batch"],
                                      max_seconds=p["max_seconds"] or None, force=p["force"])
    except DataSafetyError as exc:
        module.fail_json(msg=exc.message, kind=exc.kind)
    result["changed"] = True
    result["migrations_dir"] = mig_dir
    module.exit_json(**result)


if __name__ == "__main__":
    main()
