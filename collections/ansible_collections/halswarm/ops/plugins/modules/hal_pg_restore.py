#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hal_pg_restore
short_description: Verified pg_restore of a HAL-O-SWARM supervisor store backup into PostgreSQL
version_added: 0.1.0
description:
  - Verifies the C(pg_dump -Fc) backup first (sha256 against its C(.sha256) sidecar, a readable table of contents)
    and refuses a tampered, damaged or unchecksummed one (unless O(require_checksum=false)).
  - Restores into an empty database with C(pg_restore --no-owner --no-privileges --single-transaction
    --exit-on-error), all or nothing, everything owned by the restoring role.
  - Refuses a database that holds any relation, since the restore would mix the backup with its rows, unless
    O(force=true); then C(--clean --if-exists) drops and replaces every object the backup holds (objects the backup
    lacks stay).
  - Reports the row counts per table before and after.
  - The password is read from O(password_file) (or given as O(password)) into a private libpq passfile (0600,
    removed afterwards) named by C(PGPASSFILE); it is never on a command line.
options:
  src:
    description: The backup file (C(.pgdump)) to restore.
    type: path
    required: true
  url:
    description: The database to restore into, C(postgresql://user@host:port/dbname), without a password.
    type: str
    required: true
  password_file:
    description: File on the target holding the password.
    type: path
  password:
    description: The password itself (prefer O(password_file)).
    type: str
  force:
    description: Restore into a database that is not empty, dropping and replacing the objects the backup holds.
      Stop every supervisor that uses that database first.
    type: bool
    default: false
  require_checksum:
    description: Refuse a backup without a C(.sha256) sidecar. A sidecar that does not match is always refused.
    type: bool
    default: true
  verify_only:
    description: Only verify the backup (checksum, table of contents); the database is not contacted and O(url) is
      only checked for form.
    type: bool
    default: false
  bindir:
    description: Directory of C(pg_restore) and C(psql) (default the PATH).
    type: path
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Verifies the backup, reads the target's row counts and fails as the restore would on a non-empty
      database; nothing is written.
  diff_mode:
    support: full
    details: Row counts per table before and after.
  platform:
    platforms: posix
seealso:
  - module: halswarm.ops.hal_pg_backup
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Restore the newest backup into a new empty database
  halswarm.ops.hal_pg_restore:
    src: /var/backups/hal-o-swarm/supervisor-20260101T020000Z.pgdump
    url: postgresql://halswarm@db.example/halswarm_restored
    password_file: /etc/hal-o-swarm/db.password
  register: restored
"""

RETURN = r"""
backup:
  description: The verified backup (path, size, sha256, checksum, tables).
  returned: success
  type: dict
target:
  description: The database restored into (URL without password).
  returned: success and not O(verify_only)
  type: str
forced:
  description: Whether a non-empty database was overwritten (O(force=true)).
  returned: success and not O(verify_only)
  type: bool
before:
  description: Rows per table before the restore (empty for an empty database).
  returned: success and not O(verify_only)
  type: dict
after:
  description: Rows per table after the restore (null in check mode).
  returned: success and not O(verify_only)
  type: dict
changes:
  description: Per table, C(before), C(after) and C(change).
  returned: success and not O(verify_only)
  type: dict
duration:
  description: Seconds the restore took.
  returned: success and not O(verify_only)
  type: float
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.halswarm.ops.plugins.module_utils.hal_pg_backup import (  # noqa: E402
    PgTools,
    parse_pg_url,
    read_password_file,
    restore_pg,
    verify_pg_backup,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (  # noqa: E402
    DataSafetyError,
    counts_text,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path", required=True),
            url=dict(type="str", required=True),
            password_file=dict(type="path", no_log=False),
            password=dict(type="str", no_log=True),
            force=dict(type="bool", default=False),
            require_checksum=dict(type="bool", default=True),
            verify_only=dict(type="bool", default=False),
            bindir=dict(type="path"),
        ),
        mutually_exclusive=[("password_file", "password")],
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["verify_only"]:
            parse_pg_url(p["url"])
            with PgTools(None, p["bindir"]) as tools:
                verified = verify_pg_backup(p["src"], tools, p["require_checksum"])
            module.exit_json(changed=False, backup=verified)
        password = read_password_file(p["password_file"]) if p["password_file"] else p["password"]
        result = restore_pg(p["src"], p["url"], password, force=p["force"], require_checksum=p["require_checksum"],
                            check_only=module.check_mode, bindir=p["bindir"])
    except DataSafetyError as exc:
        module.fail_json(msg=exc.message, kind=exc.kind)
    result["diff"] = dict(before_header=f"{result['target']} (rows per table)",
                          after_header=f"{result['backup']['path']} (rows per table)",
                          before=counts_text(result["before"]),
                          after=counts_text(result["after"]) if result["after"] is not None else "(not restored)\n")
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
