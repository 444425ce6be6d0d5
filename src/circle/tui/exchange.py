"""Forms that move records in and out of the app: export (JSON, or
spreadsheet-safe CSV per collection / a zip of them), import (a circle JSON
export, or a myTurn / Circulate item CSV), and the meeting report
(Markdown and HTML). The same logic as `circle export/import/report`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from circle.crdt.board import Board
from circle.crdt.csvio import COLUMNS, collection_csv, export_zip, import_items, is_item_csv
from circle.crdt.gatherings import gatherings
from circle.crdt.model import Millis
from circle.crdt.report import build_for, html, markdown
from circle.crdt.store import atomic_write
from circle.crdt.transfer import export_json, import_records, parse_import
from circle.errors import UsageError
from circle.tui.screens import FieldSpec, FormScreen, FormValues, InfoScreen

FORMAT_OPTIONS = [("JSON (can be imported again)", "json"),
                  ("CSV for spreadsheets: every collection, zipped", "zip")] + \
                 [(f"CSV for spreadsheets: {name} only", f"csv:{name}") for name in COLUMNS]
SUFFIX = {"json": ".json", "zip": ".zip"}

Notify = Callable[..., None]


def target(raw: str, overwrite: bool) -> Path:
    """Check a path typed into a form: a file in an existing folder."""
    raw = raw.strip()
    if not raw:
        raise UsageError("type the path of the file to write")
    path = Path(raw).expanduser()
    if path.is_dir():
        raise UsageError(f"{path} is a folder; type a file name")
    if not path.parent.is_dir():
        raise UsageError(f"the folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise UsageError(f"{path} already exists; choose another name or tick “Replace”")
    return path


def export_form(board: Board, default_path: Callable[[str, str], str], notify: Notify) -> FormScreen:
    default = default_path("export", ".json")
    fields = [
        FieldSpec("path", "File", value=default),
        FieldSpec("format", "Format", "select", "json", FORMAT_OPTIONS),
        FieldSpec("bom", "Mark CSV as UTF-8 for Excel (byte-order mark)", "check", False),
        FieldSpec("overwrite", "Replace the file if it exists", "check", False),
    ]

    def submit(v: FormValues) -> None:
        fmt, raw = v["format"], v["path"].strip()
        if raw == default and fmt != "json":  # the untouched default follows the format
            raw = raw.removesuffix(".json") + (SUFFIX.get(fmt) or f"-{fmt.removeprefix('csv:')}.csv")
        path = target(raw, v["overwrite"])
        view = board.view()
        if fmt == "json":
            data = (json.dumps(export_json(board), indent=2, sort_keys=True) + "\n").encode("utf-8")
        elif fmt == "zip":
            data = export_zip(view, bom=v["bom"], gather=gatherings(board).view())
        else:
            data = collection_csv(view, fmt.removeprefix("csv:"), bom=v["bom"],
                                  gather=gatherings(board).view()).encode("utf-8")
        atomic_write(path, data, mode=0o600)
        notify(f"Wrote {path}. It is not encrypted: keep it somewhere safe.", title="Exported")

    return FormScreen("Export records", fields, submit, "Export")


def import_report_text(report: dict[str, dict[str, int]]) -> str:
    """The import report in words: added / already present per collection."""
    lines = []
    added = 0
    for name, counts in report.items():
        if name == "members":
            n = counts.get("not_imported", 0)
            lines.append(f"members: {n} not imported (membership changes only through invites)")
            continue
        added += counts.get("added", 0)
        lines.append(f"{name}: {counts.get('added', 0)} added, {counts.get('already_present', 0)} already present")
    head = f"{added} record{'s' if added != 1 else ''} added." if added else \
        "Nothing new: every record in the file was already here."
    return head + "\n\n" + "\n".join(lines)


def read_text_file(raw: str, what: str) -> str:
    raw = raw.strip()
    if not raw:
        raise UsageError(f"type the path of {what}")
    path = Path(raw).expanduser()
    try:
        return path.read_text("utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"there is no file at {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not an export file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def import_any(board: Board, text: str, filename: str = "") -> str:
    """A tool library's item CSV, else a circle JSON export; the report in words."""
    if is_item_csv(text, filename):
        return import_items(board, text).text()
    return import_report_text(import_records(board, parse_import(text)))


def import_form(board: Board, example: str, push: Callable[..., Any]) -> tuple[FormScreen, Callable[[bool | None], None]]:
    fields = [FieldSpec("path", "File", placeholder=f"e.g. {example} or a myTurn items.csv")]
    report: list[str] = []

    def submit(v: FormValues) -> None:
        text = read_text_file(v["path"], "a circle JSON export or an item CSV")
        report.append(import_any(board, text, v["path"].strip()))

    def done(saved: bool | None) -> None:
        if saved and report:
            push(InfoScreen("Import finished", report[-1]))

    form = FormScreen("Import records (circle JSON export, or a myTurn / Circulate item CSV)", fields, submit,
                      "Import")
    return form, done


def report_form(board: Board, default_path: Callable[[str, str], str], now: Callable[[], Millis],
                notify: Notify) -> FormScreen:
    default = default_path("report", ".html")
    fields = [
        FieldSpec("path", "File", value=default),
        FieldSpec("format", "Format", "select", "html",
                  [("HTML page (prints on paper, opens anywhere)", "html"), ("Markdown", "md")]),
        FieldSpec("overwrite", "Replace the file if it exists", "check", False),
    ]

    def submit(v: FormValues) -> None:
        raw = v["path"].strip()
        if raw == default and v["format"] == "md":
            raw = raw.removesuffix(".html") + ".md"
        path = target(raw, v["overwrite"])
        rep = build_for(board, now())
        text = html(rep) if v["format"] == "html" else markdown(rep)
        atomic_write(path, text.encode("utf-8"), mode=0o600)
        notify(f"Wrote {path}. Handles and open needs are in it: share it only with the group.",
               title="Report written")

    return FormScreen("Meeting report", fields, submit, "Write")
