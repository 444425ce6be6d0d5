"""Two app instances of two members, syncing over real loopback TCP sessions
(the same LiveLink the app uses when launched): an edit in one appears in the
other's table, and the Sync tab shows the peer."""

from __future__ import annotations

from pathlib import Path

from circle.net.keys import fingerprint
from circle.tui.app import CircleApp
from circle.tui.live import LiveLink, LiveOptions
from circle.tui.table import RecordTable
from factories import member_homes
from livehelp import open_service

SIZE = (120, 40)


def need_titles(app: CircleApp) -> list[str]:
    assert app.board_screen is not None
    t = app.board_screen.query_one("#needs-table", RecordTable)
    return [t.shown_row(i).cells[2] for i in range(len(t.shown))]


async def test_edit_in_one_app_appears_in_the_other_over_loopback(tmp_path: Path) -> None:
    a_path, b_path = member_homes(tmp_path, ["ana", "bo"])
    link_a = LiveLink(LiveOptions(listen=("127.0.0.1", 0), discovery=False))
    app_a = CircleApp(open_service(a_path), sync=link_a, invites=link_a, on_service=link_a.attach)
    async with app_a.run_test(size=SIZE) as pa:
        for _ in range(100):
            if link_a.live is not None and link_a.live.bound is not None:
                break
            await pa.pause(0.05)
        assert link_a.live is not None and link_a.live.bound is not None
        port = link_a.live.bound[1]
        link_b = LiveLink(LiveOptions(listen=("127.0.0.1", 0), discovery=False, peers=(f"127.0.0.1:{port}",)))
        app_b = CircleApp(open_service(b_path), sync=link_b, invites=link_b, on_service=link_b.attach)
        async with app_b.run_test(size=SIZE) as pb:
            await pa.press("n")
            app_a.screen.query_one("#f-title").value = "Typed by ana"  # type: ignore[attr-defined]
            await pa.press("ctrl+s")
            await pa.pause()
            for _ in range(200):  # bounded wait; no timing asserted
                if "Typed by ana" in need_titles(app_b):
                    break
                await pb.pause(0.05)
            assert "Typed by ana" in need_titles(app_b)
            peers = link_b.peers()
            assert [p.name for p in peers] == ["ana"] and peers[0].online
            # The invite screen works off the same link (a real code, with our address in it).
            info = link_a.create_invite()
            # The safety number shown is ana's member one: the same as on every Members tab.
            ana_key = app_b.service.board.member("ana").sign_key  # type: ignore[union-attr]
            assert info.code.startswith("circle:") and info.fingerprint == fingerprint(ana_key)
            # Its short code, traded over loopback, gives back the same invite.
            from circle.net.invite import InviteCode
            from circle.net.shortcode import ShortCode
            from circle.node.invites import redeem_short

            assert info.short_code is not None and info.short_left is not None and info.short_left() == 3
            assert link_a.host is not None and link_a.host.bound is not None
            redeemed = await redeem_short(ShortCode.parse(info.short_code), [f"127.0.0.1:{link_a.host.bound[1]}"])
            assert redeemed.invite_id == InviteCode.parse(info.code).invite_id and info.short_left() == 2
        await link_b.close()
    await link_a.close()
