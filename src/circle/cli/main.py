"""`circle`: every board action as a command, with `--json` for scripts.

Errors are turned into one sentence on stderr and a non-zero exit code here,
and only here (besides the TUI). Exit codes: 1 other, 2 usage or bad input,
3 not found, 4 refused, 5 storage (filesystem failures included), 6 network,
7 invite, 130 interrupted.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from circle.cli.common import Ctx, check_profile_text, emit, guard_terminal, json_option, pass_ctx
from circle.crdt.store import os_error_sentence
from circle.errors import CircleError, UsageError
from circle.node.home import PASSPHRASE_ENV, Home, default_home
from circle.node.panic import check_not_wiped
from circle.node.service import CircleService

F = TypeVar("F", bound=Callable[..., Any])


# Which module defines which command: a command's module (and what it imports:
# the network stack for `invite`, asyncio for `sync`, ...) is loaded only
# when that command runs. `circle need list` then pays for the board alone.
COMMAND_MODULES = {
    "need": "needs", "offer": "offers", "tool": "tools",
    "match": "board", "members": "board", "status": "board", "export": "board", "import": "board",
    "compact": "board",
    "sync": "sync", "serve": "sync", "relay": "relay", "relays": "relays", "bundle": "relays",
    "invite": "invite", "join": "invite", "remove": "invite", "demo": "app", "app": "app",
    "devices": "devices", "device": "devices",
    "leave": "invite",
    "circles": "circles", "use": "circles", "forget": "circles", "profile": "circles", "activity": "circles",
    "search": "circles", "report": "circles",
    "alert": "alerts", "checkin": "checkin", "resource": "resources", "lock": "lock", "wipe": "lock",
    "doctor": "doctor",
    "skill": "skills", "hours": "hours", "event": "events", "settings": "settings",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            import importlib

            module = f"circle.cli.{COMMAND_MODULES[cmd_name]}"
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise
                return None
            for command in getattr(mod, "commands", []):
                if command.name not in self.commands:
                    _with_global_options(command)
                    self.add_command(command)
        return self.commands.get(cmd_name)


# --- root --------------------------------------------------------------------------


@click.group(cls=LazyGroup, invoke_without_command=True)
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
    if ctx.invoked_subcommand not in (None, "app", "demo"):
        guard_terminal()  # peers' text never reaches the terminal as control sequences
        ctx.color = True  # so click does not silently strip escapes: the guard shows them instead
    if ctx.invoked_subcommand is None:
        try:
            from circle.tui.launch import launch
        except ModuleNotFoundError as exc:
            if exc.name != "circle.tui.launch":
                raise
            click.echo(ctx.get_help())
            return
        check_not_wiped(ctx.obj.home_path)
        launch(ctx.obj)


@cli.command()
@click.option("--name", required=True, help="The circle's name (only members ever see it).")
@click.option("--handle", required=True, help="Your pseudonym in this circle.")
@click.option("--zone", default="", help="Your coarse area (never an address).")
@click.option("--no-passphrase", is_flag=True, help="Do not encrypt this device's data at rest.")
@click.option("--another", is_flag=True, help="Create a second (third...) circle on a device that has one.")
@json_option
@pass_ctx
def init(ctx: Ctx, name: str, handle: str, zone: str, no_passphrase: bool, another: bool) -> None:
    """Create this device's identity (if needed) and a new circle."""
    check_not_wiped(ctx.home_path)
    check_profile_text(handle, zone)
    if Home.exists(ctx.home_path):
        home = ctx.home()
        existing = home.circle_ids()
        if existing and not another:
            from circle.node.circles import circles

            names = ", ".join(f"'{c.name}'" for c in circles(home))
            raise UsageError(f"this device already has {names}; add --another to create a second circle "
                             "(then pick one with --circle NAME or `circle use NAME`)")
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


# --- global options in either place ------------------------------------------------------

def _set(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None:
            obj = ctx.find_object(Ctx)
            if obj is not None:
                setattr(obj, attr, value)
                obj._home = None  # reopen with the new settings
                obj._service = None
    return callback


def _global_options() -> list[click.Option]:
    return [
        click.Option(["--home"], type=click.Path(path_type=Path), default=None, expose_value=False,
                     callback=_set("home_path"), help="Data directory (also accepted before the command)."),
        click.Option(["--circle", "circle_sel"], default=None, expose_value=False, callback=_set("circle"),
                     help="Which circle: a name, a name prefix or an id prefix."),
        click.Option(["--passphrase-file"], type=click.Path(path_type=Path), default=None, expose_value=False,
                     callback=_set("passphrase_file"), help="Read the passphrase from a file."),
    ]


def _with_global_options(command: click.Command) -> None:
    """`circle need list --home H` works like `circle --home H need list`
    (as `--json` already did): every command also takes the root options."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _with_global_options(sub)
        return
    taken = {opt for p in command.params for opt in getattr(p, "opts", [])}
    command.params.extend(o for o in _global_options() if not set(o.opts) & taken)


def _wants_json(argv: list[str] | None) -> bool:
    args = sys.argv[1:] if argv is None else argv
    return "--json" in args and "--" not in args[: args.index("--json")]


#: The garbage collector's first threshold for a `circle` process. Reading a
#: large circle builds millions of objects without cycles; at Python's default
#: (700) the collector walked them over and over (a third of `need list` at
#: 100k records). Cycles are still collected, just in larger steps.
GC_FIRST_THRESHOLD = 50_000


def main(argv: list[str] | None = None) -> None:
    gc.set_threshold(GC_FIRST_THRESHOLD, *gc.get_threshold()[1:])
    try:
        cli.main(args=argv, prog_name="circle", standalone_mode=False)
    except CircleError as exc:
        click.echo(f"circle: {exc}", err=True)
        if _wants_json(argv):  # scripts read one JSON object on stdout, errors included
            click.echo(json.dumps({"error": str(exc), "exit_code": exc.exit_code}))
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
    except OSError as exc:  # a filesystem failure no layer below turned into a sentence
        click.echo(f"circle: {os_error_sentence(exc)}; whether the last change was saved is unknown "
                   "(check with `circle status`)", err=True)
        sys.exit(5)
    except UnicodeError:
        click.echo("circle: some text is not valid Unicode (a byte that is not UTF-8, or a lone surrogate); "
                   "nothing was changed", err=True)
        sys.exit(2)
    except (OverflowError, RecursionError) as exc:
        click.echo(f"circle: the input cannot be handled ({exc.__class__.__name__}: {str(exc)[:120]})", err=True)
        sys.exit(2)


_with_global_options(init)
