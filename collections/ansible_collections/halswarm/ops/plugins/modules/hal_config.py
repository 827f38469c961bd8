#!/usr/bin/python
# Copyright: HAL-O-SWARM contributors
# MIT License (see the collection's galaxy.yml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hal_config
short_description: Validate and render a HAL-O-SWARM config file with the package's own validator
version_added: 0.1.0
description:
  - Renders O(config) (plus O(secrets)) as JSON into O(path), atomically, mode 0600, with a diff in which secrets
    are redacted, after checking the candidate file with the validator of the installed release. Without
    O(config) it only validates the existing file.
  - The validator is the release's own program, so roles and C(halctl config validate) share one implementation
    (the package's JSON Schemas and semantic checks), whatever Python runs the module
    (C(<venv>/bin/hal-supervisor --validate --config FILE) for C(supervisor),
    C(<venv>/bin/hal-agent --validate --config FILE) for C(agent),
    C(<venv>/bin/halctl config validate --kind KIND FILE) for C(manifest) and C(cli)).
  - "An invalid candidate is never written; the problems are returned one per line as C(PATH: message)."
options:
  path:
    description: The config file to render or validate.
    type: path
    required: true
  kind:
    description: Kind of config.
    type: str
    required: true
    choices: [supervisor, agent, manifest, cli]
  config:
    description:
      - The document to write. Keep secrets out of it and pass them in O(secrets).
      - When omitted, the existing O(path) is only validated.
    type: dict
  secrets:
    description:
      - 'Secret values merged into O(config) by dotted path, for example C({"server.auth_token": "..."}). They are
        never logged or shown in the diff.'
    type: dict
    default: {}
  strict:
    description: Unknown keys are errors instead of warnings.
    type: bool
    default: false
  validate:
    description: Run the validator before writing.
    type: bool
    default: true
  venv:
    description: The release venv whose programs validate the file.
    type: path
    default: /opt/hal-o-swarm/current
  validator:
    description:
      - Command (argv) that validates a file, the file name being appended; overrides the default chosen from
        O(kind) and O(venv).
      - "It must exit 0 for a valid file and print problems as C(PATH: message); C(--strict) is added with
        O(strict=true)."
    type: list
    elements: str
  backup:
    description: Keep the replaced file as C(<path>.<timestamp>~) (returned as RV(backup_file)).
    type: bool
    default: false
  owner:
    description: Owner of the file (default the existing file's, else the user running the module).
    type: str
  group:
    description: Group of the file.
    type: str
  mode:
    description: Mode of the file.
    type: raw
    default: "0600"
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The candidate is validated (in a temporary directory) and the diff shown; nothing is written.
  diff_mode:
    support: full
    details: The old and new JSON, with secret values redacted.
  platform:
    platforms: posix
notes:
  - A relative C(auth_token_file) is resolved against the candidate file's directory; in check mode that is a
    temporary directory, so use absolute paths.
author:
  - HAL-O-SWARM maintainers (@hal-o-swarm)
"""

EXAMPLES = r"""
- name: Render the supervisor config, validated by the new release's hal-supervisor --validate
  halswarm.ops.hal_config:
    path: /etc/hal-o-swarm/supervisor.config.json
    kind: supervisor
    venv: /opt/hal-o-swarm/releases/0.2.0
    config:
      server:
        host: 0.0.0.0
        port: 8420
        http_port: 8421
      database:
        path: /var/lib/hal-o-swarm/supervisor/supervisor.db
    secrets:
      server.auth_token: "{{ vault_hal_auth_token }}"
    owner: hal-supervisor
    group: hal-supervisor
    backup: true

- name: Only validate the live agent config
  halswarm.ops.hal_config:
    path: /etc/hal-o-swarm/agent.config.json
    kind: agent
"""

RETURN = r"""
path:
  description: The config file.
  returned: always
  type: str
valid:
  description: Whether the validator accepted the file (always true on success when O(validate=true)).
  returned: success
  type: bool
problems:
  description: "The validator's lines (C(PATH: message)); warnings end in C((warning))."
  returned: always
  type: list
  elements: str
backup_file:
  description: Where the replaced file was kept.
  returned: changed and O(backup=true)
  type: str
validator:
  description: The validator command that was run (without the file name).
  returned: when validated
  type: list
  elements: str
"""

import copy  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.text.converters import to_native  # noqa: E402

SECRET_KEY = re.compile(r"(token|secret|password|passwd|api_?key|private_?key|credential|webhook)", re.IGNORECASE)
NOT_SECRET_SUFFIX = ("_file", "_path", "_env", "_version", "_dir")
REDACTED = "********"
# Keys whose whole value is a map of secrets.
SECRET_MAPS = ("agent_tokens",)


def set_dotted(doc, dotted, value):
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ValueError("empty secret path")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"secret path {dotted!r}: {part!r} is not an object")
        node = child
    node[parts[-1]] = value


def looks_secret(key, value):
    """A scalar under a key that names a secret (auth_token, api_key, ...; not *_file or *_path)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return False
    return bool(SECRET_KEY.search(str(key))) and not str(key).endswith(NOT_SECRET_SUFFIX)


def redact(value, key="", secret_paths=(), path=""):
    """Copy of `value` with secrets replaced: keys that look secret, maps of tokens, and the paths
    given as O(secrets)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if sub in secret_paths or (key in SECRET_MAPS and not isinstance(v, (dict, list))) or looks_secret(k, v):
                out[k] = REDACTED
            else:
                out[k] = redact(v, str(k), secret_paths, sub)
        return out
    if isinstance(value, list):
        return [redact(v, key, secret_paths, path) for v in value]
    return value


def render(doc):
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def default_validator(kind, venv):
    bindir = os.path.join(venv, "bin")
    if kind == "supervisor":
        return [os.path.join(bindir, "hal-supervisor"), "--validate", "--config"]
    if kind == "agent":
        return [os.path.join(bindir, "hal-agent"), "--validate", "--config"]
    return [os.path.join(bindir, "halctl"), "config", "validate", "--kind", kind]


def run_validator(module, argv, candidate, strict):
    cmd = list(argv)
    if strict:
        # --strict is an option of every validator; put it before the file argument.
        cmd = [*cmd[:-1], "--strict", cmd[-1]] if cmd and cmd[-1] == "--config" else [*cmd, "--strict"]
    cmd.append(candidate)
    if not os.path.exists(cmd[0]) and os.path.sep in cmd[0]:
        module.fail_json(msg=f"validator {cmd[0]} not found (is the release installed? set venv or validator)",
                         path=module.params["path"], problems=[])
    # An empty HAL_AUTH_TOKEN is ignored by the validator: the file is judged on its own.
    rc, out, err = module.run_command(cmd, environ_update={"HAL_AUTH_TOKEN": ""}, check_rc=False)
    lines = [ln.replace(candidate, module.params["path"]) for ln in out.splitlines() if ln.strip()]
    problems = [ln for ln in lines if not ln.startswith("OK:")]
    return rc, problems, err.strip().replace(candidate, module.params["path"])


def read_existing(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            kind=dict(type="str", required=True, choices=["supervisor", "agent", "manifest", "cli"]),
            config=dict(type="dict"),
            secrets=dict(type="dict", default={}, no_log=True),
            strict=dict(type="bool", default=False),
            validate=dict(type="bool", default=True),
            venv=dict(type="path", default="/opt/hal-o-swarm/current"),
            validator=dict(type="list", elements="str"),
            backup=dict(type="bool", default=False),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw", default="0600"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    path = p["path"]
    argv = p["validator"] or default_validator(p["kind"], p["venv"])
    result = dict(changed=False, path=path, problems=[], valid=None)

    if p["config"] is None:
        if not os.path.exists(path):
            module.fail_json(msg=f"{path}: no such file (give config to render one)", **result)
        rc, problems, err = run_validator(module, argv, path, p["strict"])
        result.update(valid=rc == 0, problems=problems, validator=argv)
        if rc != 0:
            module.fail_json(msg=f"{path} is not a valid {p['kind']} config: {err or '; '.join(problems[:3])}",
                             **result)
        module.exit_json(**result)

    doc = copy.deepcopy(p["config"])
    secret_paths = set()
    for dotted, value in (p["secrets"] or {}).items():
        try:
            set_dotted(doc, dotted, value)
        except ValueError as exc:
            module.fail_json(msg=to_native(exc), **result)
        secret_paths.add(dotted)
    text = render(doc)
    existing = read_existing(path)
    changed = existing != text
    directory = os.path.dirname(path) or "."

    # Validate the candidate: beside the target when writing (same relative paths), in the module's
    # temp dir in check mode (nothing may appear in the target directory).
    where = module.tmpdir if (module.check_mode or not os.path.isdir(directory)) else directory
    fd, candidate = tempfile.mkstemp(dir=where, prefix=f".{os.path.basename(path)}.", suffix=".json")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if p["validate"]:
            rc, problems, err = run_validator(module, argv, candidate, p["strict"])
            result.update(valid=rc == 0, problems=problems, validator=argv)
            for line in problems:
                if line.endswith("(warning)"):
                    module.warn(line)
            if rc != 0:
                module.fail_json(
                    msg=f"refusing to write {path}: not a valid {p['kind']} config: "
                        f"{'; '.join(ln for ln in problems if not ln.endswith('(warning)'))[:2000] or err}",
                    **result)
        if module._diff:
            before = existing
            try:
                before = render(redact(json.loads(existing), secret_paths=secret_paths)) if existing else ""
            except ValueError:
                before = "(unparsable previous content)\n"
            result["diff"] = dict(before_header=path, after_header=path, before=before,
                                  after=render(redact(doc, secret_paths=secret_paths)))
        if changed and not module.check_mode:
            if not os.path.isdir(directory):
                module.fail_json(msg=f"{directory}: directory does not exist", **result)
            if p["backup"] and existing is not None:
                result["backup_file"] = module.backup_local(path)
            module.atomic_move(candidate, path)
            candidate = None
    finally:
        if candidate and os.path.exists(candidate):
            os.unlink(candidate)
    file_args = module.load_file_common_arguments(dict(path=path, mode=p["mode"], owner=p["owner"],
                                                       group=p["group"]))
    if module.check_mode and existing is None:
        result["changed"] = True
    else:
        result["changed"] = module.set_fs_attributes_if_different(file_args, changed)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
