"""Confining manifest paths to a project directory (the I/O half: symlinks are resolved on disk).

The lexical rule (relative, no ``..``, not in ``.git``) is ``halswarm.core.manifest_rules``; here every
existing component is resolved, so a symlink planted inside the project that points outside is caught.
"""

from __future__ import annotations

import os

from halswarm.core.manifest_rules import inside, relative_path_refusal


class PathRefused(ValueError):
    """A path the manifest names cannot be used; the message is a one-line reason."""


def confine(directory: str, rel: str) -> str:
    """The absolute path of ``rel`` inside ``directory``, or PathRefused when it would leave it
    (lexically, or through a symlink on the way)."""
    why = relative_path_refusal(rel)
    if why:
        raise PathRefused(why)
    root = os.path.realpath(directory)
    real = os.path.realpath(os.path.join(root, os.path.normpath(rel)))
    if not inside(root, real) or real == root:
        raise PathRefused(f"path {rel!r} resolves to {real}, outside the project {root} (symlink)")
    return os.path.join(directory, os.path.normpath(rel))


def check_inside(directory: str, path: str) -> None:
    """PathRefused unless absolute ``path``, resolved (symlinks included), stays inside ``directory``:
    made again right before each write, after the check that planned it."""
    root = os.path.realpath(directory)
    real = os.path.realpath(path)
    if not inside(root, real) or real == root:
        raise PathRefused(f"{path} resolves to {real}, outside the project {root}")


def hooks_dir(directory: str) -> str:
    """``<project>/.git/hooks`` when ``.git`` is the project's own directory (not a file pointing to
    another repository, not a symlink out of the project), else PathRefused."""
    git_dir = os.path.join(directory, ".git")
    if os.path.islink(git_dir) or not os.path.isdir(git_dir):
        raise PathRefused(f"{git_dir} is not a directory of the project: hooks are not installed")
    hooks = os.path.join(directory, ".git", "hooks")
    if not inside(os.path.realpath(directory), os.path.realpath(hooks)):
        raise PathRefused(f"{hooks} resolves outside the project (symlink): hooks are not installed")
    return hooks


def own_repository_refusal(directory: str, toplevel: str) -> str | None:
    """Why git config and hooks must not be written for ``directory`` whose work tree top is ``toplevel``
    (``git rev-parse --show-toplevel``): a project inside another repository is not its own."""
    if os.path.realpath(directory) == os.path.realpath(toplevel):
        return None
    return (f"{directory} is inside the git repository {toplevel}, not its own: git config and hooks "
            "are not written (run `git init` in the project)")
