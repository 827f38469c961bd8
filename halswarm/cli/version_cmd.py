"""`halctl version` (and `halctl --version`): package, Ansible and collection versions, and where
halctl found the `halswarm.ops` collection and the example inventory."""

from __future__ import annotations

import json

import click


def _versions():
    from halswarm.ops.install import versions
    from halswarm.ops.runner import collections_paths

    return versions(collections_paths())


def print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """Eager callback of the root group's ``--version``."""
    if not value or ctx.resilient_parsing:
        return
    click.echo("\n".join(_versions().lines()))
    ctx.exit()


@click.command("version")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--example-inventory", "inventory_only", is_flag=True,
              help="Print only the example inventory's directory (to copy it: cp -r \"$(halctl version "
                   "--example-inventory)\" inventory).")
def version(as_json: bool, inventory_only: bool) -> None:
    """Print the package, ansible-core, ansible and collection versions and where they were found."""
    found = _versions()
    if inventory_only:
        if found.example_inventory is None:
            from halswarm.cli.errors import HalctlError

            raise HalctlError("no example inventory in this installation")
        click.echo(str(found.example_inventory))
    elif as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
    else:
        click.echo("\n".join(found.lines()))


version.plain_output = True  # type: ignore[attr-defined]
