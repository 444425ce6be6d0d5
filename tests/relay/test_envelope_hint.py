"""No epoch number in envelopes or bundles; nothing in a header groups envelopes by key.

Issue 10: "The clear epoch number is a quasi-identifier of the circle in
first messages, rejects, envelopes and bundles." Version-1 envelopes carried
the epoch number in clear; these tests look for it as an outsider holding
the bytes (a relay's store, a found USB stick) would.
"""

from __future__ import annotations

from pathlib import Path

from circle.net import envelope as E
from circle.net.bundle import read_bundle, write_bundle
from circle.net.keys import DeviceIdentity, new_epoch_key

EPOCH = 0x5A17C0DE


def _forms(n: int) -> list[bytes]:
    return [n.to_bytes(4, "big"), n.to_bytes(4, "little")]


def test_no_epoch_number_in_envelopes_or_bundles(tmp_path: Path) -> None:
    author, key = DeviceIdentity.generate(), new_epoch_key()
    envs = E.seal_changes(author, EPOCH, key, [b"a" * 100, b"b" * 70_000], max_block=60_000)
    envs.append(E.seal_snapshot(author, EPOCH, key, b"saved" * 1000))
    path = tmp_path / "b.circle"
    write_bundle(path, envs)
    blob = path.read_bytes()
    for form in _forms(EPOCH):
        assert form not in blob, "the epoch number is in the bundle in clear"
        for env in envs:
            assert form not in env[: E.HEADER_LEN]
    opened = [E.open_envelope(env, {EPOCH: key}, lambda vk: True) for env in read_bundle(path)]
    assert {o.epoch for o in opened} == {EPOCH}


def test_headers_of_one_key_share_nothing_an_outsider_could_group_by() -> None:
    author, key = DeviceIdentity.generate(), new_epoch_key()
    headers = [E.seal(author, 1, key, E.Kind.CHANGES, [b"x"])[: E.HEADER_LEN] for _ in range(64)]
    hints = {E.peek_header(h + bytes(E.MIN_ENVELOPE_SIZE - E.HEADER_LEN)).hint for h in headers}
    assert len(hints) == 64, "two envelopes under one key carry the same hint"
    # everything else in the header is the constant magic/version/kind/flags
    assert len({h[:8] for h in headers}) == 1
    other = E.seal(DeviceIdentity.generate(), 1, new_epoch_key(), E.Kind.CHANGES, [b"x"])
    assert other[:8] == headers[0][:8]


def test_the_opener_tries_only_keys_whose_hint_matches() -> None:
    author = DeviceIdentity.generate()
    keys = {n: new_epoch_key() for n in range(1, 9)}
    env = E.seal(author, 5, keys[5], E.Kind.CHANGES, [b"x"])
    opened = E.open_envelope(env, keys, lambda vk: True)
    assert opened.epoch == 5 and opened.payloads == (b"x",)
    # a callable keyring is read at open time (keys adopted later count)
    later: dict[int, bytes] = {}
    env2 = E.seal(author, 9, new_key := new_epoch_key(), E.Kind.CHANGES, [b"y"])
    later[9] = new_key
    assert E.open_envelope(env2, lambda: later, lambda vk: True).payloads == (b"y",)  # type: ignore[arg-type,return-value]
