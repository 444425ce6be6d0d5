"""`circle settings`: choices the whole circle shares (stored in the document)."""

from __future__ import annotations

import click

from circle.cli.common import Ctx, emit, json_option, pass_ctx
from circle.crdt.gatherings import gatherings


@click.group(invoke_without_command=True)
@json_option
@pass_ctx
@click.pass_context
def settings(click_ctx: click.Context, ctx: Ctx) -> None:
    """Show the circle's settings (any member may change them)."""
    if click_ctx.invoked_subcommand is not None:
        return
    s = gatherings(ctx.service().board).settings()
    emit(ctx, {"timebank": s.timebank},
         lambda: click.echo(f"timebank: {'on' if s.timebank else 'off'}"))


@settings.command("timebank")
@click.argument("state", type=click.Choice(["on", "off"]))
@json_option
@pass_ctx
def timebank(ctx: Ctx, state: str) -> None:
    """Turn the time bank on or off for the whole circle (off by default)."""
    s = gatherings(ctx.service().board).set_timebank(state == "on")
    def human() -> None:
        if s.timebank:
            click.echo("The time bank is on: `circle hours log` records an hour given as an hour; "
                       "an exchange counts once both sides confirm it.")
        else:
            click.echo("The time bank is off: nothing about hours is shown.")
    emit(ctx, {"timebank": s.timebank}, human)


commands = [settings]
