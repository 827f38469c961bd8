"""The one test support package: every harness and helper the test modules share (no test module imports
another).

- ``waiting``: the one way to wait for a condition (``wait_for``, ``until``, ``on_loop``), bounded.
- ``supervisor_proc``: the real ``hal-supervisor`` process; ``ports``: free loopback ports.
- ``agent_proc``: the real ``hal-agent`` process, a fake ``opencode serve``, a cuttable TCP relay.
- ``agent_side``: the agent's side of the wire inside the test (env and auth services).
- ``agentsim`` / ``simfleet``: a protocol-speaking simulated agent / node.
- ``halctl``: the real ``halctl`` against a test supervisor; ``api``: its HTTP API from async tests.
- ``ssh_host``: a real sshd with throwaway users; ``projects``: git work trees and probe tools;
  ``auth_tools``: stand-in claude/codex/opencode CLIs.
- ``backup`` / ``databases``: the data-safety harness and test databases; ``runbook``: the runbook lists.
- ``config_fixtures``: tokens and fixture files of the config tests.
- ``commands_rig``: the agent's command handlers around an in-process fake opencode.
- ``gated_writer``: a batching writer whose jobs can be held or failed; ``protocol_strategies``: Hypothesis
  strategies for protocol frames.
- ``fleet/``: podman/systemd hosts under Molecule for tests/fleet (host set-up, wheels, netns plumbing).
"""
