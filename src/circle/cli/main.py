"""`circle`: every board action as a command, with `--json` for scripts.

Errors are turned into one sentence on stderr and a non-zero exit code here,
and only here (besides the TUI).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from circle.cli.common import Ctx, emit, json_option, pass_ctx
from circle.errors import CircleError
from circle.node.home import PASSPHRASE_ENV, Home, default_home
from circle.node.service import CircleService

F = TypeVar("F", bound=Callable[..., Any])


# --- root --------------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help=f"Data directory (default: ${'{'}CIRCLE_HOME{'}'} or the platform's user data dir).")
@click.option("--circle", "circle_sel", default=None, help="Which circle (name or id prefix) when there are several.")
@click.option("--json", "json_out", is_flag=True, help="Print machine-readable JSON.")
@click.option("--passphrase-file", type=click.Path(path_type=Path), default=None,
              help=f"Read the passphrase from a file (or set {PASSPHRASE_ENV}).")
@click.version_option(package_name="circle")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, circle_sel: str | None, json_out: bool,
        passphrase_file: Path | None) -> None:
    """circle: a local-first, end-to-end encrypted mutual-aid board."""
    ctx.obj = Ctx(home if home is not None else default_home(), circle_sel, json_out, passphrase_file)
    if ctx.invoked_subcommand is None:
        try:
            from circle.tui.launch import launch
        except ModuleNotFoundError as exc:
            if exc.name != "circle.tui.launch":
                raise
            click.echo(ctx.get_help())
            return
        launch(ctx.obj)


@cli.command()
@click.option("--name", required=True, help="The circle's name (only members ever see it).")
@click.option("--handle", required=True, help="Your pseudonym in this circle.")
@click.option("--zone", default="", help="Your coarse area (never an address).")
@click.option("--no-passphrase", is_flag=True, help="Do not encrypt this device's data at rest.")
@json_option
@pass_ctx
def init(ctx: Ctx, name: str, handle: str, zone: str, no_passphrase: bool) -> None:
    """Create this device's identity (if needed) and a new circle."""
    if Home.exists(ctx.home_path):
        home = ctx.home()
    else:
        passphrase = None if no_passphrase else ctx.passphrase(confirm_new=True)
        home = Home.create(ctx.home_path, passphrase)
        ctx._home = home
    svc = CircleService.create(home, name, handle, zone)
    data = {"circle_id": svc.config.circle_id, "name": name, "member_id": svc.me, "home": str(home.path),
            "encrypted_at_rest": home.encrypted}
    def human() -> None:
        click.echo(f"Created circle '{name}' ({svc.config.circle_id}); you are {handle} ({svc.me}).")
        if not home.encrypted:
            click.echo("Note: no passphrase set - this device's data is protected only by file permissions.")
    emit(ctx, data, human)


def _register_optional() -> None:
    """Commands owned by other modules (sync, relays, invites, TUI)."""
    import importlib

    for module, attr in (("circle.cli.needs", "commands"), ("circle.cli.offers", "commands"),
                         ("circle.cli.tools", "commands"), ("circle.cli.board", "commands"),
                         ("circle.cli.devices", "commands"), ("circle.cli.sync", "commands"), ("circle.cli.relay", "commands"),
                         ("circle.cli.relays", "commands"), ("circle.cli.invite", "commands"),
                         ("circle.cli.app", "commands"), ("circle.cli.skills", "commands"),
                         ("circle.cli.hours", "commands"), ("circle.cli.events", "commands"),
                         ("circle.cli.settings", "commands")):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        for command in getattr(mod, attr, []):
            cli.add_command(command)


_register_optional()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="circle", standalone_mode=False)
    except CircleError as exc:
        click.echo(f"circle: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("circle: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
