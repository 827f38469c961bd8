"""Helpers for the ops tests: host set-up, wheels, Molecule and podman/netns plumbing."""
