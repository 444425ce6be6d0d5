"""`circle lock` and `circle wipe`: the panic buttons (node/panic.py)."""

from __future__ import annotations

import json
import sys

import click

from circle.cli.common import Ctx, emit, json_option, pass_ctx
from circle.errors import UsageError
from circle.node.panic import WIPE_LIMITS, check_not_wiped, has_passphrase, lock, wipe


@click.command("lock")
@json_option
@pass_ctx
def lock_command(ctx: Ctx) -> None:
    """Every circle process on this device forgets its keys now."""
    check_not_wiped(ctx.home_path)
    if not (ctx.home_path / "device.json").exists():
        raise UsageError(f"there is no circle device at {ctx.home_path}")
    lock(ctx.home_path)
    protected = has_passphrase(ctx.home_path)
    data = {"locked": True, "home": str(ctx.home_path), "passphrase": protected}

    def human() -> None:
        click.echo("Locked: every circle process on this device forgets its keys now; "
                   "the app asks for the passphrase again.")
        if not protected:
            click.echo("Warning: this device has no passphrase, so its data stays readable to anyone "
                       "who can read its files.")
    emit(ctx, data, human)


@click.command("wipe")
@click.option("--yes", is_flag=True, help="Do not ask; wipe at once.")
@json_option
@pass_ctx
def wipe_command(ctx: Ctx, yes: bool) -> None:
    """Destroy this device's keys so its data cannot be opened again, even with the passphrase."""
    check_not_wiped(ctx.home_path)
    if not (ctx.home_path / "device.json").exists():
        raise UsageError(f"there is no circle device at {ctx.home_path}")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("wipe destroys this device's keys for good; add --yes to do it without a prompt")
        click.echo(WIPE_LIMITS, err=True)
        if click.prompt("Type WIPE to destroy this device's circle data", default="", err=True) != "WIPE":
            raise UsageError("not wiped")
    report = wipe(ctx.home_path)
    data = {"wiped": True, "files": report.files, "bytes": report.bytes, "failed": report.failed,
            "limits": WIPE_LIMITS}
    if ctx.json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return

    def human() -> None:
        click.echo(f"Wiped: {report.files} files overwritten and deleted under {ctx.home_path}.")
        for f in report.failed:
            click.echo(f"  could not remove {f}")
        click.echo(WIPE_LIMITS)
    emit(ctx, data, human)


commands = [lock_command, wipe_command]
