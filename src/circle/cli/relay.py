"""`circle relay`: run a relay server (registered by cli.py).

`circle relay [OPTIONS]` runs the server (`--data DIR` for SQLite, or
`--store sqlite:PATH | postgresql://...`); `circle relay stats` shows an
operator's counts; `circle relay add URL` and `circle relay remove URL`
manage the circle's relay list (cli_relays.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import replace
from pathlib import Path

import click

# The relay server (and websockets) load only when a relay is actually run:
# every other `circle` command starts faster. tests check the two ports agree.
DEFAULT_PORT = 7733


@click.group("relay", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Keep 127.0.0.1 and put a TLS reverse proxy in front.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int,
              help="Port to listen on (0 = any free port; the chosen one is printed).")
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the relay database (relay.sqlite3). This or --store is required.")
@click.option("--store", "store", default=None, metavar="sqlite:PATH|postgresql://...",
              help="Where envelopes live instead of --data: an SQLite file, or a PostgreSQL URL "
                   "shared by any number of relay processes.")
@click.option("--path", "url_path", default="/", show_default=True,
              help="Only accept WebSocket requests under this URL path.")
@click.option("--quota-mib", default=64, show_default=True, type=int, help="Per-mailbox quota in MiB.")
@click.option("--retention-days", default=30.0, show_default=True, type=float,
              help="Envelopes older than this are deleted.")
@click.option("--max-connections", default=1024, show_default=True, type=int)
@click.option("--max-connections-per-ip", default=32, show_default=True, type=int)
@click.option("--trust-forwarded-for", is_flag=True,
              help="Take the client address from X-Forwarded-For (only behind a proxy you run).")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_context
def relay_command(
    ctx: click.Context, host: str, port: int, data_dir: Path | None, store: str | None, url_path: str,
    quota_mib: int, retention_days: float,
    max_connections: int, max_connections_per_ip: int, trust_forwarded_for: bool, log_level: str,
) -> None:
    """Run a relay: an untrusted store-and-forward server that only sees ciphertext.

    With a subcommand, manage the circle's relay list instead
    (`circle relay add URL`, `circle relay remove URL`; see `circle relays`)."""
    if ctx.invoked_subcommand is not None:
        return
    from circle.relay.server import RelaySettings, run_relay

    if data_dir is None and store is None:
        raise click.UsageError("Missing option '--data' (the directory for the relay database) or '--store'.")
    if data_dir is not None and store is not None:
        raise click.UsageError("Give either '--data' or '--store', not both.")
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = replace(
        RelaySettings(),
        path=url_path,
        mailbox_quota_bytes=quota_mib * 1024 * 1024,
        retention_seconds=retention_days * 86400.0,
        max_connections=max_connections,
        max_connections_per_ip=max_connections_per_ip,
        trust_forwarded_for=trust_forwarded_for,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_relay(host, port, data_dir, settings, store=store))


@click.command("stats")
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="The relay's data directory (SQLite).")
@click.option("--store", "store", default=None, metavar="sqlite:PATH|postgresql://...",
              help="The relay's store, as given to `circle relay --store`.")
@click.option("--stats-interval", default=10.0, show_default=True, type=float,
              help="The relays' publish interval: processes silent for 3 intervals are not counted.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def relay_stats(data_dir: Path | None, store: str | None, stats_interval: float, as_json: bool) -> None:
    """Show a relay's counts: circles served, envelopes, bytes, connections, refusals.

    Totals only, summed over every relay process on the store: no mailbox id,
    no per-circle figure, no client address."""
    from circle.relay.backends import parse_store
    from circle.relay.stats import read_report

    report = read_report(parse_store(store, data_dir), stats_interval)
    if as_json:
        click.echo(report.to_json())
    else:
        for line in report.lines():
            click.echo(line)


def _attach_list_commands() -> None:
    from circle.cli.relays import relay_add, relay_remove

    relay_command.add_command(relay_add)
    relay_command.add_command(relay_remove)
    relay_command.add_command(relay_stats)


_attach_list_commands()
commands = [relay_command]
