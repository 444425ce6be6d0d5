"""`circle doctor`: explain what is wrong with this device's stored data, and repair it.

Repair never destroys what it cannot read: damaged bytes are saved aside in
the store directory (`damaged-<time>-log.bin`, fsynced) before the log is
cut back to its last good record. What was lost locally usually still
exists on other members' devices: `circle sync` brings it back.
"""

from __future__ import annotations

from typing import Any

import click

from circle.cli.common import Ctx, emit, json_option, pass_ctx
from circle.crdt.store import DocStore
from circle.errors import CircleError, StoreError
from circle.node.home import CircleConfig, Home


def _check_circle(home: Home, circle_id: str, repair: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"circle": circle_id, "problems": [], "actions": [], "saved_aside": []}
    try:
        CircleConfig.load(home, circle_id)
    except CircleError as exc:
        out["problems"].append(f"circle.json: {exc}")
        out["config_problem"] = True  # not repaired here: restore it from a backup (it holds the keys)
    for name in ("doc", "sigs"):  # the document, and this device's store of change signatures
        path = home.circle_dir(circle_id) / name
        if name != "doc" and not path.exists():
            continue
        _check_store(DocStore(path, home.doc_cipher(circle_id)), name, repair, out)
    return out


def _check_store(store: DocStore, name: str, repair: bool, out: dict[str, Any]) -> None:
    try:
        loaded = store.load()
        if loaded.damage is not None:
            out["problems"].append(f"{name}: {loaded.damage.message}")
        load_error: CircleError | None = None
    except CircleError as exc:
        load_error = exc
        out["problems"].append(f"{name}: {exc}")
    earlier = sorted(p.name for p in store.path.glob("damaged-*"))
    if earlier:
        out.setdefault("kept_from_earlier_repairs", []).extend(earlier)
    if repair and (load_error is not None or store.damage is not None):
        try:
            report = store.repair()
            out["actions"] += report.actions
            out["saved_aside"] += [str(p) for p in report.saved_aside]
            store.load()  # the result must load cleanly
            out["repaired"] = out.get("repaired", True) and store.damage is None
        except CircleError as exc:
            out["repaired"] = False
            out["actions"].append(f"could not repair: {exc}")
            if load_error is not None and "snapshot" in str(load_error):
                out["actions"].append("the snapshot itself is unusable: restore this home from a backup, "
                                      "or join the circle again from another member's invite")


@click.command()
@click.option("--repair", is_flag=True,
              help="Keep every good record, save damaged bytes aside, and make the files agree again.")
@json_option
@pass_ctx
def doctor(ctx: Ctx, repair: bool) -> None:
    """Check this device's stored data; explain any damage; repair with --repair."""
    home = ctx.home()
    results = [_check_circle(home, cid, repair) for cid in home.circle_ids()]
    healthy = all(not r["problems"] or (r.get("repaired") and not r.get("config_problem")) for r in results)
    data = {"home": str(home.path), "circles": results, "healthy": healthy}

    def human() -> None:
        for r in results:
            if not r["problems"]:
                click.echo(f"Circle {r['circle']}: stored data is consistent.")
            for problem in r["problems"]:
                click.echo(f"Circle {r['circle']}: {problem}.")
            for action in r["actions"]:
                click.echo(f"  repaired: {action}")
            if r.get("repaired"):
                click.echo("  Changes that were lost here may still be on other members' devices: run "
                           "`circle sync` to get them back.")
            for name in r.get("kept_from_earlier_repairs", []):
                click.echo(f"  kept from an earlier repair: {name} (delete it yourself once you are sure)")
        if not healthy and not repair:
            click.echo("Run `circle doctor --repair` to keep every good record and set the damaged bytes aside.")
        if not results:
            click.echo("No circle on this device yet.")

    emit(ctx, data, human)
    if not healthy:
        raise StoreError("the stored data still has the problems listed above") if repair else SystemExit(5)


commands = [doctor]
