"""The hub's part in OTA (host_tools/hub/ota.py): a bundle offered as
retained chunks is gathered, checked with the device's reader under the
trusted release keys, announced signed by the hub, and served in windows
of chunks; anything else is refused and counted. The announcement is
checked with the device's own decoder (lib/trade/messages.py)."""

import hashlib

import cbor2
import pytest

from host_tools import ota
from host_tools.boards import load_board
from host_tools.hub import ota as hub_ota
from host_tools.hub.cose_es256 import HubKey

from trade import messages  # noqa: E402  (lib/, on sys.path through tests/mpplugin.py)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub-ota")
    key = ota.keygen(tmp / "release.pem")
    other = ota.keygen(tmp / "other.pem")
    bundle = ota.build_bundle(load_board("virtual"), key, 5, "0.2.0", created=1750000000).data
    foreign = ota.build_bundle(load_board("virtual"), other, 6, "0.3.0", created=1750000000).data
    return key, bundle, foreign, tmp


def _hub(tmp, release_keys):
    key = HubKey.load_or_create(tmp / "hub.pem")
    seqs = iter(range(100, 10**6))
    return key, hub_ota.OtaRelease("demo", key, release_keys, lambda: next(seqs), every_s=60)


def _offer(rel, data, now=1000, order=None):
    pubs = list(hub_ota.publications("demo", data))
    out = []
    for topic, payload in (order(pubs) if order else pubs):
        out += rel.on_message(topic, payload, now)
    return out


def _open(hub_key, signed):
    lookup = lambda kid: (hub_key.public_key.public_numbers().x, hub_key.public_key.public_numbers().y) \
        if kid == hub_key.kid else None
    return messages.open_signed(signed, lookup)


def test_a_checked_bundle_is_announced_signed_by_the_hub_in_any_arrival_order(release):
    key, bundle, _, tmp = release
    for order in (None, lambda p: list(reversed(p)), lambda p: p[-1:] + p[:-1]):
        hub_key, rel = _hub(tmp, [key.pub])
        out = _offer(rel, bundle, order=order)
        assert len(out) == 1, rel.counts
        topic, signed, retain = out[0]
        assert topic == "pgw/1/demo/hub/ota" and retain
        m = _open(hub_key, signed)
        sha = hashlib.sha256(bundle).digest()
        assert (m.type, m["version"], m["size"], m["sha256"]) == (messages.OTA, "0.2.0", len(bundle), sha)
        assert m["url"] == "ota/" + sha[:8].hex() and m.ts == 1000 and m.seq == 100
        assert rel.counts["ota_accepted"] == 1


def test_chunks_are_served_in_windows_and_bad_requests_are_counted(release):
    key, bundle, _, tmp = release
    _, rel = _hub(tmp, [key.pub])
    _offer(rel, bundle)
    bid = hashlib.sha256(bundle).digest()[:8].hex()
    got = rel.on_message("pgw/1/demo/dev/0011223344556677/otaget", cbor2.dumps([bid, 2, 4]), 1001)
    assert [t for t, _, _ in got] == [f"pgw/1/demo/dev/0011223344556677/ota/{n}" for n in range(2, 6)]
    assert b"".join(p for _, p, _ in got) == bundle[2048:6144]
    last = (len(bundle) - 1) // hub_ota.CHUNK
    tail = rel.on_message("pgw/1/demo/dev/0011223344556677/otaget", cbor2.dumps([bid, last, 8]), 1001)
    assert len(tail) == 1 and tail[0][1] == bundle[last * hub_ota.CHUNK:]
    for bad in (cbor2.dumps(["0" * 16, 0, 4]), cbor2.dumps([bid, 0, 9]), cbor2.dumps([bid, -1, 1]),
                b"\xff", b"x" * 100, cbor2.dumps([bid, 0, 0])):
        assert rel.on_message("pgw/1/demo/dev/0011223344556677/otaget", bad, 1001) == []
    assert rel.counts["ota_bad_request"] == 6


def test_the_announcement_is_signed_again_every_period_with_a_new_seq(release):
    key, bundle, _, tmp = release
    hub_key, rel = _hub(tmp, [key.pub])
    _offer(rel, bundle, now=1000)
    assert rel.tick(1030) == []
    again = rel.tick(1060)
    assert len(again) == 1
    m = _open(hub_key, again[0][1])
    assert (m.seq, m.ts) == (101, 1060)


def test_a_bundle_from_an_untrusted_key_a_wrong_chunk_or_a_bad_offer_is_not_announced(release):
    key, bundle, foreign, tmp = release
    _, rel = _hub(tmp, [key.pub])
    assert _offer(rel, foreign) == [] and rel.counts["ota_bundle"] == 1
    # a chunk changed on the broker: the gathered bytes miss the offered SHA-256
    pubs = list(hub_ota.publications("demo", bundle))
    topic, payload = pubs[3]
    pubs[3] = (topic, bytes([payload[0] ^ 1]) + payload[1:])
    for t, p in pubs:
        assert rel.on_message(t, p, 1000) == []
    assert rel.counts["ota_sha256"] == 1
    for bad in (b"", b"\xa0", cbor2.dumps({1: "00", 2: 5, 3: b"x" * 32, 4: 1024}), b"z" * 300,
                cbor2.dumps({1: hub_ota.bundle_id(b"a" * 32), 2: 0, 3: b"a" * 32, 4: 1024})):
        assert rel.on_message("pgw/1/demo/ota/offer", bad, 1000) == []
    assert rel.counts["ota_offer"] + rel.counts["ota_size"] == 5
    assert rel.current is None
    # then the good one still goes through
    assert len(_offer(rel, bundle)) == 1
