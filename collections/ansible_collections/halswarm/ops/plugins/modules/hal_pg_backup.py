#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hal_pg_backup
short_description: pg_dump backup of the HAL-O-SWARM supervisor store on PostgreSQL
version_added: 0.1.0
description:
  - Runs C(pg_dump -Fc) on the supervisors' shared PostgreSQL database while they keep writing (pg_dump reads one
    consistent snapshot) into the backup directory the SQLite backups use, as C(<prefix>-<UTC timestamp>.pgdump),
    mode 0600, with a C(<file>.sha256) sidecar in C(sha256sum) format. The archive's table of contents is read
    back with C(pg_restore --list) before the file is kept.
  - Then old C(.pgdump) backups are removed by count and age (the newest backup is never removed).
  - The password is read from O(password_file) (or given as O(password)), written to a private libpq passfile
    (0600, removed afterwards) and passed to the tools through C(PGPASSFILE); it is never on a command line.
options:
  url:
    description: The database, C(postgresql://user@host:port/dbname) with optional libpq parameters (C(sslmode)...).
      Must not contain a password.
    type: str
    required: true
  password_file:
    description: File on the target holding the password (the supervisor's C(storage.password_file)).
    type: path
  password:
    description: The password itself (prefer O(password_file)).
    type: str
  dest_dir:
    description: Directory of the backups; created (0700) when missing.
    type: path
    required: true
  prefix:
    description: File name prefix of the backups.
    type: str
    default: supervisor
  keep:
    description: Number of newest backups to keep (with this prefix); C(0) keeps any number.
    type: int
    default: 7
  max_age_days:
    description: Remove backups older than this many days; C(0) disables the age limit.
    type: float
    default: 0
  bindir:
    description: Directory of C(pg_dump) and C(pg_restore) (default the PATH; C(pg_dump) must not be older than the
      server).
    type: path
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Checks the URL and reports which backups retention would remove; nothing connects to the database.
  diff_mode:
    support: full
    details: The list of backup files before and after.
  platform:
    platforms: posix
notes:
  - Needs the PostgreSQL client tools on the target (Debian's C(postgresql-client)).
seealso:
  - module: halswarm.ops.hal_pg_restore
  - module: halswarm.ops.hal_sqlite_backup
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Back up the shared PostgreSQL store, keep a week
  halswarm.ops.hal_pg_backup:
    url: postgresql://halswarm@db.example:5432/halswarm?sslmode=verify-full
    password_file: /etc/hal-o-swarm/db.password
    dest_dir: /var/backups/hal-o-swarm
    keep: 7
  register: backup
"""

RETURN = r"""
path:
  description: Path of the new backup.
  returned: success and not check mode
  type: str
  sample: /var/backups/hal-o-swarm/supervisor-20260101T020000Z.pgdump
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
  description: Tables whose rows the archive holds.
  returned: success and not check mode
  type: list
  elements: str
source:
  description: The database backed up (URL without password).
  returned: success and not check mode
  type: str
duration:
  description: Seconds the backup took.
  returned: success and not check mode
  type: float
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
from ansible_collections.halswarm.ops.plugins.module_utils.hal_pg_backup import (  # noqa: E402
    apply_pg_retention,
    backup_pg,
    list_pg_backups,
    parse_pg_url,
    read_password_file,
)
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_backup import select_expired  # noqa: E402
from ansible_collections.halswarm.ops.plugins.module_utils.hal_sqlite_common import (  # noqa: E402
    DataSafetyError,
    utcnow,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            password_file=dict(type="path", no_log=False),
            password=dict(type="str", no_log=True),
            dest_dir=dict(type="path", required=True),
            prefix=dict(type="str", default="supervisor"),
            keep=dict(type="int", default=7),
            max_age_days=dict(type="float", default=0),
            bindir=dict(type="path"),
        ),
        mutually_exclusive=[("password_file", "password")],
        supports_check_mode=True,
    )
    p = module.params
    if p["keep"] < 0 or p["max_age_days"] < 0:
        module.fail_json(msg="keep and max_age_days must be >= 0")
    dest_dir, prefix = p["dest_dir"], p["prefix"]
    try:
        parse_pg_url(p["url"])
        before = [b["name"] for b in list_pg_backups(dest_dir, prefix)]
        if module.check_mode:
            existing = [(b["name"], b["created_ts"]) for b in list_pg_backups(dest_dir, prefix)]
            pending = f"{prefix}-<new>.pgdump"
            expired = select_expired([*existing, (pending, utcnow().timestamp())], p["keep"], p["max_age_days"],
                                     protect=(pending,))
            after = [n for n in before if n not in expired]
            module.exit_json(changed=True, removed=[os.path.join(dest_dir, n) for n in expired], backups=after,
                             diff=dict(before_header=dest_dir, after_header=dest_dir, before="\n".join(before) + "\n",
                                       after="\n".join([pending, *after]) + "\n"))
        password = read_password_file(p["password_file"]) if p["password_file"] else p["password"]
        result = backup_pg(p["url"], dest_dir, prefix, password, p["bindir"])
        removed = apply_pg_retention(dest_dir, prefix, p["keep"], p["max_age_days"], protect=(result["name"],))
    except DataSafetyError as exc:
        module.fail_json(msg=exc.message, kind=exc.kind)
    after = [b["name"] for b in list_pg_backups(dest_dir, prefix)]
    result.update(changed=True, removed=removed, backups=after,
                  diff=dict(before_header=dest_dir, after_header=dest_dir, before="\n".join(before) + "\n",
                            after="\n".join(after) + "\n"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
