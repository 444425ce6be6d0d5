"""`circle match`, `members`, `status`, `export`, `import`, `compact`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from circle.cli.common import (
    Ctx,
    ago,
    clock_from_env,
    emit,
    handle_of,
    json_option,
    pass_ctx,
    table,
)
from circle.cli.skills import skill_matches
from circle.crdt.gatherings import gatherings
from circle.crdt.matching import needs_for, offers_for
from circle.crdt.model import Member
from circle.crdt.transfer import export_json, import_records, parse_import, record_dict
from circle.errors import NotFound, UsageError

# --- match, members, status ----------------------------------------------------------


@click.command()
@click.argument("record_id", required=False)
@json_option
@pass_ctx
def match(ctx: Ctx, record_id: str | None) -> None:
    """Offers that fit a need, needs that fit an offer (all open needs without an id)."""
    svc = ctx.service()
    board = svc.board
    if record_id is None:
        needs = board.needs("active")
        results = [m for n in needs for m in offers_for(n, board.offers("open"), limit=3)]
    else:
        try:
            results = offers_for(board.need(record_id), board.offers("open"))
        except NotFound:
            results = needs_for(board.offer(record_id), board.needs("active"))
    data = [{"need": m.need.id, "need_title": m.need.title, "offer": m.offer.id, "offer_title": m.offer.title,
             "score": m.score, "reasons": list(m.reasons)} for m in results]
    rows = [[m.need.id, m.need.title[:30], m.offer.id, m.offer.title[:30], str(m.score), "; ".join(m.reasons)]
            for m in results]
    # Members whose listed skills fit the need(s): "bo: Bike repair (can teach)".
    skill_data, skill_rows = skill_matches(svc, record_id)
    emit(ctx, data + skill_data, lambda: table(rows + skill_rows, ["need", "title", "offer", "title", "score", "why"]))


@click.command()
@json_option
@pass_ctx
def members(ctx: Ctx) -> None:
    """Members with their safety numbers and who invited whom."""
    from circle.net.keys import fingerprint

    svc = ctx.service()
    items: list[Member] = svc.board.members()
    data = [{**record_dict(m), "safety_number": fingerprint(m.sign_key), "fingerprint": fingerprint(m.sign_key),
             "active": m.active} for m in items]
    rows = [[m.id, m.handle + (" (you)" if m.id == svc.me else ""), m.zone, fingerprint(m.sign_key),
             handle_of(svc, m.invited_by) if m.invited_by else "founder",
             "active" if m.active else f"removed by {handle_of(svc, m.removed_by or '')}"] for m in items]
    emit(ctx, data, lambda: table(rows, ["id", "handle", "zone", "safety number", "invited by", "state"]))


def _status_data(ctx: Ctx) -> dict[str, Any]:
    """`status` from the kept board view when it fits the store as it is
    (node/viewstore.py): a large circle is then not loaded at all."""
    from circle.node.circles import pick
    from circle.node.status import document_status, keep, kept_status

    home = ctx.home()
    data = kept_status(home, pick(home, ctx.circle), clock_from_env()())
    if data is None:
        svc = ctx.service()
        data = document_status(svc)
        keep(svc, data)
    for peer in data.get("peers", []):
        # One time unit in JSON (milliseconds), and one word for a peer reached
        # directly, whoever dialled.
        seen = peer.get("last_seen")
        if isinstance(seen, float):
            peer["last_seen"] = int(seen * 1000)
        if peer.get("path") in ("incoming", "manual"):
            peer["path"] = "direct"
    return data


@click.command()
@json_option
@pass_ctx
def status(ctx: Ctx) -> None:
    """The circle at a glance: counts, conflicts, storage protection."""
    data = _status_data(ctx)
    def human() -> None:
        c, me, n, st = data["circle"], data["me"], data["counts"], data["storage"]
        click.echo(f"Circle {c['name']} ({c['id']}), key generation {c['key_generation']}")
        click.echo(f"You: {me['handle']} ({me['id']}){'' if me['active'] else ' - NOT an active member'}")
        click.echo(f"{n['members']} members, {n['open_needs']} open needs, {n['open_offers']} open offers, "
                   f"{n['tools']} tools ({n['on_loan']} on loan, {n['overdue']} overdue)")
        click.echo(f"{n['skills']} skills, {n['upcoming_events']} upcoming events, {n['open_shifts']} open shifts"
                   + (f", {n['confirmed_exchanges']} confirmed exchanges ({n['pending_exchanges']} waiting)"
                      if "confirmed_exchanges" in n else ""))
        for conflict in data["conflicts"]:
            click.echo(f"CONFLICT: {conflict['name']} ({conflict['tool']}) has {len(conflict['conflicting_loans']) + 1} "
                       f"open loans made concurrently; current is {conflict['current_loan']}")
        for warning in data.get("warnings", []):
            click.echo(f"WARNING: {warning}")
        if me.get("removed_notice"):
            click.echo(me["removed_notice"] + " This device keeps what it had; it receives nothing new.")
        for item in data["membership"]["ignored"]:
            click.echo(item["text"])
        if data["membership"]["changes_refused"]:
            click.echo(f"Refused {data['membership']['changes_refused']} batch(es) of changes not signed by a "
                       f"member's device (last: {data['membership']['last_refusal']})")
        for bad in data["malformed"]:
            click.echo(f"Unreadable record {bad['collection']}/{bad['id']}: {bad['reason']}")
        if data.get("relays_waiting"):
            click.echo(f"Relays: {data['relays_waiting']}")
        if data["relays_undelivered_changes"]:
            click.echo(f"Relays: {data['relays_undelivered_changes']} change(s) not yet stored by every relay "
                       "(run `circle sync`; `circle relays` shows why)")
        click.echo(f"Storage: {st['protection']} ({st['path']})")
        for item in st["in_clear"]:
            click.echo(f"  not encrypted: {item}")
        for peer in data.get("peers", []):
            seen = peer.get("last_seen")
            when = ago(int(seen)) if isinstance(seen, int | float) else "never"
            who = peer.get("handle") or peer.get("member_id") or "?"
            state = "has all our changes" if peer.get("has_all_ours") else "may be missing some of our changes"
            if peer.get("undelivered") and not peer.get("has_all_ours"):
                state = f"{who} {peer['undelivered']}; they stay here and are sent again"
            click.echo(f"Peer {who} at {peer.get('address')} ({peer.get('path')}): last seen {when}, {state}"
                       + (f"; last error: {peer['error']}" if peer.get("error") else ""))
    emit(ctx, data, human)


# --- export / import / compact ------------------------------------------------------------


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "zip"]), default="json", show_default=True,
              help="json: re-importable; csv: one spreadsheet-safe file per collection; zip: those files zipped.")
@click.option("--collection", type=click.Choice(["needs", "offers", "tools", "loans", "holds", "members", "skills",
                                               "events", "shifts", "bring", "exchanges"]),
              default=None, help="With --format csv: only this collection (to stdout without --out).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="File to write (default: stdout); with --format csv and no --collection, a folder.")
@click.option("--bom", is_flag=True, help="Start CSV files with a UTF-8 byte-order mark (for Excel).")
@click.option("--columns", is_flag=True, help="Print what every CSV column means and exit.")
@json_option
@pass_ctx
def export_cmd(ctx: Ctx, fmt: str, collection: str | None, out: Path | None, bom: bool, columns: bool) -> None:
    """Export every record: JSON to import again, or CSV that spreadsheets open as-is.

    CSV: ISO-8601 UTC times, true/false, tags as text, handles beside ids, and
    cells a spreadsheet would run as a formula (=, +, -, @) prefixed with '."""
    from circle.crdt.csvio import (
        COLUMNS,
        collection_csv,
        columns_text,
        export_csv_files,
        export_zip,
    )
    from circle.crdt.store import atomic_write

    if columns:
        emit(ctx, {k: dict(v) for k, v in COLUMNS.items()}, lambda: click.echo(columns_text(), nl=False))
        return
    svc = ctx.service()
    if fmt == "json":
        data = (json.dumps(export_json(svc.board), indent=2, sort_keys=True) + "\n").encode("utf-8")
    elif fmt == "zip":
        if out is None:
            raise UsageError("a zip needs --out FILE.zip")
        data = export_zip(svc.board.view(), bom=bom, gather=gatherings(svc.board).view())
    elif collection is not None:
        data = collection_csv(svc.board.view(), collection, bom, gatherings(svc.board).view()).encode("utf-8")
    else:
        if out is None:
            raise UsageError("CSV is one file per collection: give --collection NAME, or --out FOLDER")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in export_csv_files(svc.board.view(), bom=bom, gather=gatherings(svc.board).view()).items():
            atomic_write(out / name, text.encode("utf-8"), mode=0o600)
            written.append(str(out / name))
        emit(ctx, {"files": written}, lambda: click.echo(f"Wrote {len(written)} files in {out}", err=True))
        return
    if out is None:
        click.get_binary_stream("stdout").write(data)
        return
    atomic_write(out, data, mode=0o600)
    emit(ctx, {"files": [str(out)]}, lambda: click.echo(f"Wrote {out}", err=True))


@click.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@json_option
@pass_ctx
def import_cmd(ctx: Ctx, file: Path) -> None:
    """Merge records from a circle JSON export, or add the items of a myTurn /
    Circulate item export (CSV) as tools you steward. Never overwrites; a
    second import of the same file adds nothing."""
    try:
        text = file.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
    svc = ctx.service()
    from circle.crdt.csvio import import_items, is_item_csv

    if is_item_csv(text, file.name):
        items = import_items(svc.board, text)
        emit(ctx, {"kind": "items", **items.as_dict()}, lambda: click.echo(items.text()))
        return
    data = parse_import(text)
    report = import_records(svc.board, data)
    def human() -> None:
        for name, counts in report.items():
            click.echo(f"{name}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    emit(ctx, report, human)


@click.command()
@json_option
@pass_ctx
def compact(ctx: Ctx) -> None:
    """Rewrite the snapshot and empty the change log (atomic)."""
    svc = ctx.service()
    svc.compact()
    data = {"snapshot_bytes": svc.store.snapshot_size(), "log_bytes": svc.store.log_size()}
    emit(ctx, data, lambda: click.echo(f"Compacted: snapshot {data['snapshot_bytes']} bytes."))


commands = [match, members, status, export_cmd, import_cmd, compact]
