"""host_tools/hub/ingest.py: the hub's checks on what devices send, and its
ACKs, without a broker. Devices sign with lib/ (as the firmware does); the
hub checks with cbor2 and cryptography; the ACK is checked with lib/ again,
as the device will."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests" / "lib")]

import cose  # noqa: E402
from protocol_vectors import Signer  # noqa: E402
from trade import messages as m  # noqa: E402

from host_tools.hub.cose_es256 import HubKey  # noqa: E402
from host_tools.hub.ingest import Ingest  # noqa: E402
from host_tools.hub.store import Store  # noqa: E402

NOW = 1750503600
READING = {"interval_min": 15, "import_wh": 120, "export_wh": 0, "import_register_wh": 5000,
           "export_register_wh": 0, "power_w": 480, "meter": b"grid"}


@pytest.fixture
def hub(tmp_path):
    store = Store(tmp_path / "hub.sqlite")
    key = HubKey.load_or_create(tmp_path / "hub.pem")
    ingest = Ingest(store, key, "street", clock=lambda: NOW)
    yield ingest
    store.close()


def device(d=0x1234567):
    s = Signer(d)
    return s, cose.encode_key(*s.pub)


def topic(s, leaf="reading"):
    return "pgw/1/street/dev/%s/%s" % (s.kid.hex(), leaf)


def reading(s, seq, ts=NOW - 60, **fields):
    return m.sign(m.READING, seq, ts, dict(READING, **fields), s.kid, s)


def open_ack(hub, data):
    hub_kid, pub = cose.decode_key(hub.key.cose_key())
    return m.open_signed(data, lambda kid: pub if kid == hub_kid else None)


def test_accepts_stores_and_acknowledges(hub):
    s, key = device()
    hub.register(key)
    out = hub.handle(topic(s), reading(s, 7))
    assert len(out) == 1 and out[0][0] == topic(s, "in")
    ack = open_ack(hub, out[0][1])
    assert ack.type == m.ACK and ack["device"] == s.kid and ack["acked_seq"] == 7 and ack.ts == NOW
    assert [(r[1], r[2]) for r in hub.store.messages()] == [(7, m.READING)]


def test_a_duplicate_is_acknowledged_again_and_stored_once(hub):
    s, key = device()
    hub.register(key)
    data = reading(s, 7)
    first = open_ack(hub, hub.handle(topic(s), data)[0][1])
    second = open_ack(hub, hub.handle(topic(s), data)[0][1])
    assert first["acked_seq"] == second["acked_seq"] == 7 and second.seq > first.seq
    assert len(hub.store.messages()) == 1 and hub.counts["duplicate"] == 1


def test_out_of_order_backlog_is_accepted(hub):
    s, key = device()
    hub.register(key)
    for seq in (9, 3, 5, 4):
        assert hub.handle(topic(s), reading(s, seq, ts=NOW - 86400 + seq))
    assert [r[1] for r in hub.store.messages()] == [3, 4, 5, 9]


@pytest.mark.parametrize("case, reason", [
    ("unknown", "rejected_unknown_key"),
    ("forged", "rejected_signature"),
    ("other_topic", "rejected_topic"),
    ("wrong_leaf", "rejected_type"),
    ("future", "rejected_time"),
    ("conflict", "rejected_conflict"),
    ("garbage", "rejected_cbor"),
    ("oversize", "rejected_size"),
    ("community", "rejected_topic"),
    ("trailing", "rejected_cbor"),
])
def test_bad_messages_are_counted_and_not_acknowledged(hub, case, reason):
    s, key = device()
    hub.register(key)
    other, other_key = device(0x7654321)
    hub.register(other_key)
    t, data = topic(s), reading(s, 7)
    if case == "unknown":
        stranger, _ = device(0x999)
        t, data = topic(stranger), reading(stranger, 7)
    elif case == "forged":
        data = bytearray(data)
        data[-1] ^= 1
        data = bytes(data)
    elif case == "other_topic":
        t = topic(other)
    elif case == "wrong_leaf":
        t = topic(s, "order")
    elif case == "future":
        data = reading(s, 7, ts=NOW + 3600)
    elif case == "conflict":
        hub.handle(t, reading(s, 7))
        data = reading(s, 7, import_wh=999)
    elif case == "garbage":
        data = b"\xd2\x84\xff"
    elif case == "oversize":
        data = b"\x00" * 600
    elif case == "community":
        t = t.replace("street", "other")
    elif case == "trailing":  # the signature still holds; the bytes are not the message
        data = data + b"\x00"
    before = len(hub.store.messages())
    assert hub.handle(t, data) == []
    assert hub.counts[reason] == 1, hub.counts
    assert len(hub.store.messages()) == before


def test_keys_and_state_survive_a_restart(tmp_path):
    s, key = device()
    store = Store(tmp_path / "hub.sqlite")
    hubkey = HubKey.load_or_create(tmp_path / "hub.pem")
    ingest = Ingest(store, hubkey, "street", clock=lambda: NOW)
    ingest.register(key)
    first = ingest.handle(topic(s), reading(s, 1))
    store.close()
    store = Store(tmp_path / "hub.sqlite")
    again = Ingest(store, HubKey.load_or_create(tmp_path / "hub.pem"), "street", clock=lambda: NOW)
    assert again.key.kid == hubkey.kid
    second = again.handle(topic(s), reading(s, 1))  # the device's key is still known
    assert open_ack(again, second[0][1]).seq > open_ack(ingest, first[0][1]).seq  # the hub's seq goes on
    store.close()
