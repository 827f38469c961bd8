#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hal_env_item
short_description: Run an approved environment item (package, SDK, disk clean-up) of the HAL-O-SWARM env manifest
version_added: 0.1.0
description:
  - Runs the suggested command of a risky environment item after an operator approved it
    (C(halctl env approve NODE ITEM) or C(POST /api/v1/env/approve/{node})). The supervisor generates a one-task
    play with this module and runs it with ansible-runner against the node.
  - Idempotent when O(check) or O(creates) is given, the command only runs when the item is not yet satisfied.
  - Without O(shell), the command is split like a shell would (quotes honoured) and run without a shell.
options:
  name:
    description: Id of the item (C(project:category:item)), returned as RV(item).
    type: str
    required: true
  command:
    description: The command that installs or fixes the item, for example C(apt-get install -y ripgrep).
    type: str
    required: true
  shell:
    description: Run O(command) with C(/bin/sh -c) (pipes, redirections, C(&&)).
    type: bool
    default: false
  check:
    description:
      - A command (argv) that exits 0 when the item is already satisfied, for example C([rg, --version]);
        then nothing runs.
    type: list
    elements: str
  creates:
    description: A path that exists once the item is satisfied; when it exists, nothing runs.
    type: path
  chdir:
    description: Directory to run the commands in.
    type: path
  timeout:
    description: Seconds the command may run (with the C(timeout) program when it is installed); 0 for no limit.
    type: int
    default: 900
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Only O(check) and O(creates) are evaluated; C(changed) tells whether the command would run.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Commands that install system packages need privileges; the supervisor sets C(become) on the task for the
    suggested C(apt-get) commands.
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Install ripgrep (approved item alpha:tools:rg)
  halswarm.ops.hal_env_item:
    name: alpha:tools:rg
    command: apt-get install -y ripgrep
    check: [rg, --version]
  become: true

- name: Free disk space in a project (approved item alpha:disk:free_space)
  halswarm.ops.hal_env_item:
    name: alpha:disk:free_space
    command: git gc --prune=now --quiet
    chdir: /srv/projects/alpha
"""

RETURN = r"""
item:
  description: The item id (O(name)).
  returned: always
  type: str
command:
  description: The command that ran (or would run).
  returned: always
  type: str
rc:
  description: Exit status of the command (C(0) when nothing had to run).
  returned: always
  type: int
stdout:
  description: Standard output of the command.
  returned: when the command ran
  type: str
stderr:
  description: Standard error of the command.
  returned: when the command ran
  type: str
skipped_reason:
  description: Why the command did not run (O(check) passed, O(creates) exists).
  returned: when the item was already satisfied
  type: str
"""

import os  # noqa: E402
import shlex  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def already_satisfied(module):
    """Why the command need not run, or None."""
    creates = module.params["creates"]
    if creates and os.path.exists(creates):
        return f"{creates} exists"
    check = module.params["check"]
    if check:
        if os.path.isabs(check[0]):
            if not os.access(check[0], os.X_OK):
                return None
        elif not module.get_bin_path(check[0]):
            return None
        rc = module.run_command(check, cwd=module.params["chdir"])[0]
        if rc == 0:
            return f"`{' '.join(check)}` succeeded"
    return None


def build_argv(module):
    command = module.params["command"]
    if module.params["shell"]:
        argv = ["/bin/sh", "-c", command]
    else:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            module.fail_json(msg=f"cannot split the command: {exc} (set shell=true)", item=module.params["name"],
                             command=command, rc=2)
    if not argv:
        module.fail_json(msg="empty command", item=module.params["name"], command=command, rc=2)
    timeout = module.params["timeout"]
    runner = module.get_bin_path("timeout") if timeout and timeout > 0 else None
    if runner:
        argv = [runner, str(timeout), *argv]
    return argv


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            command=dict(type="str", required=True),
            shell=dict(type="bool", default=False),
            check=dict(type="list", elements="str"),
            creates=dict(type="path"),
            chdir=dict(type="path"),
            timeout=dict(type="int", default=900),
        ),
        supports_check_mode=True,
    )
    name, command = module.params["name"], module.params["command"]
    chdir = module.params["chdir"]
    if chdir and not os.path.isdir(chdir):
        module.fail_json(msg=f"chdir {chdir} is not a directory", item=name, command=command, rc=2)
    reason = already_satisfied(module)
    if reason:
        module.exit_json(changed=False, item=name, command=command, rc=0, skipped_reason=reason)
    argv = build_argv(module)
    if module.check_mode:
        module.exit_json(changed=True, item=name, command=command, rc=0)
    rc, out, err = module.run_command(argv, cwd=chdir)
    result = dict(changed=True, item=name, command=command, rc=rc, stdout=out, stderr=err)
    if rc != 0:
        msg = "timed out" if rc == 124 and argv[0].endswith("timeout") else f"command exited {rc}"
        module.fail_json(msg=msg, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
