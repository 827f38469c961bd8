"""Which version probes an agent runs on its own during env checks (pure, stdlib only).

A manifest names the tools a project needs; it never chooses a program the agent runs. A check probes a
tool only when the node's own table has a fixed argv for its name: the known runtimes below, the
coding-agent CLIs of the capability table, and the node's agent config ``env.probe_tools`` (trusted,
node-local). Any other tool item is reported ``warn`` (not probed) and, when provisioning, becomes a
pending item that runs its check only after an admin approves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Known runtimes: how each reports its version. ``git`` is here because the agent already runs it for
# every check of a project with git requirements.
RUNTIME_PROBES: dict[str, tuple[str, ...]] = {
    "python": ("python3", "--version"), "java": ("java", "-version"), "go": ("go", "version"),
    "rust": ("rustc", "--version"), "node": ("node", "--version"), "git": ("git", "--version"),
}
NOT_KNOWN = "not probed: not a known tool (add it to env.probe_tools on the node or approve the check)"
OWN_COMMAND = "the manifest gives its own probe command: it runs only after approval"


def probe_table(capability_tools: Mapping[str, tuple[str, ...]],
                node_tools: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Tool name -> argv: the known runtimes, then the capability table's CLIs, then the node's
    ``env.probe_tools`` (the node's operator wins: it may point a tool at another binary)."""
    return {**RUNTIME_PROBES, **capability_tools, **{k: tuple(v) for k, v in node_tools.items()}}


def probe_argv(table: Mapping[str, tuple[str, ...]], name: str, command: Sequence[str] = ()) -> tuple[str, ...] | None:
    """The argv a check may run for tool ``name``; None when the manifest gives its own ``command`` or the
    node does not know the name (then nothing runs until an admin approves the item)."""
    if command:
        return None
    return table.get(name)


def unprobed_reason(command: Sequence[str] = ()) -> str:
    return OWN_COMMAND if command else NOT_KNOWN

