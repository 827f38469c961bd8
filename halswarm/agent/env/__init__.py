"""Environment manifest on the agent: checks, drift, safe provisioning, AGENT.md templates.

Wiring (agent app)::

    env = NodeEnvService(projects=lambda: {c.name: c.directory for c in check_projects(cfg.projects) if c.ok},
                     data_dir=cfg.data_dir, node_id=cfg.node_id,
                     extra_env=lambda: auth.toolenv.pushed)     # pushed credentials count as set
    handlers = env.handlers()   # env_check, env_provision, agentmd_show|diff|sync (+ Go aliases)
    capabilities["env"] = env.snapshot()
    env.managed_env()           # provisioned env vars, for the processes the agent starts (opencode)

Modules: ``versions`` (version parsing, constraints), ``manifest`` (both formats -> per-project
``Requirements``), ``templates`` (AGENT.md, hooks, diffs), ``facts`` (I/O: probes, files, git in the
project dir), ``checks`` (pure checkers), ``plan`` (pure provisioning planner), ``apply`` (safe
actions), ``envfile`` (provisioned env vars), ``service`` (the command handlers).
"""

from halswarm.agent.env.model import Item, Plan, overall
from halswarm.agent.env.service import NodeEnvService
from halswarm.core.manifest.requirements import Requirements, detect_format, digest, requirements_for

__all__ = ["Item", "NodeEnvService", "Plan", "Requirements", "detect_format", "digest", "overall", "requirements_for"]
