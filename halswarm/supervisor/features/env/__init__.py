"""Env: the environment manifest the supervisor owns (table ``env_manifests``; the Go format and the spec
8.1 format, validated with ``PATH: message`` problems), env checks, drift, provisioning, approvals of risky
items and AGENT.md (SPEC 6, issue 9).

- ``settings.py``: what the feature takes from the config, parsed once.
- ``validation.py``: is a manifest acceptable (and the template files it names).
- ``manifests.py``: the current manifest, and env commands that carry it to a node.
- ``checks.py``: checks and provisions, stored and turned into routed events.
- ``approvals.py``: approved risky items run through the Ansible collection (ansible-runner, off the loop).
- ``agentmd.py``: AGENT.md show, diff, template and sync.
- ``watcher.py``: the manifest push on registration, on change and periodically (a service with start/stop).
- ``service.py``: what the routes ask for; ``api.py``: the routes.
"""
