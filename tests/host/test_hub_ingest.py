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
    assert list(hub.store.last_arrival) == [s.kid]  # for the status API; the ledger keeps no arrival times


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


# ---- group commit: many messages, one transaction, then the ACKs ----

import sqlite3  # noqa: E402
import threading  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from host_tools.hub.store import CLOSED  # noqa: E402

START = NOW // 900 * 900 + 900  # the next interval: its gate is open at NOW


def order(s, seq, start=START, wh=300):
    fields = {"interval_start": start, "interval_min": 15, "side": 0, "energy_wh": wh, "limit_price": 250000}
    return m.sign(m.ORDER, seq, NOW - 30, fields, s.kid, s)


def acked(hub, out):
    """-> [(device kid, acked seq, hub seq)] from the ACKs in `out`."""
    acks = [open_ack(hub, data) for _, data in out]
    return [(a["device"], a["acked_seq"], a.seq) for a in acks]


def test_a_batch_is_stored_once_and_acknowledged_in_order_with_consecutive_hub_seqs(hub):
    s, key = device()
    hub.register(key)
    other, _ = device(0x999)  # not registered
    one, dup = reading(s, 1), reading(s, 1)  # signed twice: other signature bytes, the same content
    out = hub.handle_batch([
        (topic(s), one), (topic(s), reading(s, 2)), (topic(s), dup),
        (topic(s), reading(s, 2, import_wh=999)),  # a conflict with the batch's own seq 2
        (topic(other), reading(other, 1)), (topic(s), reading(s, 3))])
    got = acked(hub, out)
    assert [(k, seq) for k, seq, _ in got] == [(s.kid, 1), (s.kid, 2), (s.kid, 1), (s.kid, 3)]
    first = got[0][2]
    assert [h for _, _, h in got] == list(range(first, first + 4))  # one block of seqs, no gaps
    assert all(t == topic(s, "in") for t, _ in out)
    assert [(r[1], bytes(r[4])) for r in hub.store.messages()][:1] == [(1, one)]  # the first copy is kept
    assert [r[1] for r in hub.store.messages()] == [1, 2, 3]
    assert hub.counts == {"accepted": 3, "duplicate": 1, "rejected_conflict": 1, "rejected_unknown_key": 1}
    assert hub.store.next_seq == first + 4
    later = acked(hub, hub.handle(topic(s), reading(s, 4)))
    assert later[0][2] == first + 4


def test_an_empty_or_all_refused_batch_commits_nothing(hub):
    s, key = device()
    hub.register(key)
    assert hub.handle_batch([]) == [] and hub.commit([]) == []
    assert hub.handle_batch([(topic(s, "order"), reading(s, 1))]) == []
    assert hub.store.next_seq == 1 and hub.counts == {"rejected_type": 1}  # no seq taken


def test_late_orders_in_a_batch_are_acknowledged_and_not_stored(hub):
    s, key = device()
    hub.register(key)
    with hub.store.transaction() as db:  # the rounds have cleared the interval after START
        db.execute("INSERT INTO rounds (interval_start, cleared) VALUES (?, 1)", (START + 900,))
    out = hub.handle_batch([(topic(s, "order"), order(s, 1)),
                            (topic(s, "order"), order(s, 2, start=START - 900)),  # its gate has closed
                            (topic(s, "order"), order(s, 3, start=START + 900)),  # cleared already
                            (topic(s), reading(s, 4))])
    assert [seq for _, seq, _ in acked(hub, out)] == [1, 2, 3, 4]
    assert [r[1] for r in hub.store.messages()] == [1, 4]
    assert hub.counts == {"accepted": 2, "late_order": 2}


def test_a_failed_commit_stores_counts_and_acknowledges_nothing(hub, monkeypatch):
    s, key = device()
    hub.register(key)
    hub.handle(topic(s), reading(s, 1))
    seq_before, counts_before = hub.store.next_seq, dict(hub.counts)
    real = hub.store.insert_messages

    def disk_full(rows):
        real(rows)  # the rows are written, then the disk fails: all must roll back
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(hub.store, "insert_messages", disk_full)
    with pytest.raises(sqlite3.OperationalError):
        hub.handle_batch([(topic(s), reading(s, 2)), (topic(s), reading(s, 3))])
    assert [r[1] for r in hub.store.messages()] == [1]
    assert hub.store.next_seq == seq_before and dict(hub.counts) == counts_before


SIGNERS = [Signer(0x1234567), Signer(0x7654321)]
# a pool of signed messages: 2 devices x seqs 1-4 x 2 contents (the second conflicts)
POOL = [(topic(s), reading(s, seq, import_wh=120 + variant))
        for s in SIGNERS for seq in range(1, 5) for variant in (0, 1)]


def fresh(path):
    store = Store(path / "hub.sqlite")
    ingest = Ingest(store, HubKey.load_or_create(path / "hub.pem"), "street", clock=lambda: NOW)
    for s in SIGNERS:
        ingest.register(cose.encode_key(*s.pub))
    return ingest


@settings(max_examples=25, deadline=None)
@given(picks=st.lists(st.integers(0, len(POOL) - 1), max_size=14), cuts=st.sets(st.integers(1, 13)))
def test_batches_give_what_one_message_at_a_time_gives(tmp_path_factory, picks, cuts):
    one_by_one, batched = fresh(tmp_path_factory.mktemp("a")), fresh(tmp_path_factory.mktemp("b"))
    try:
        messages = [POOL[i] for i in picks]
        single = [out for t, data in messages for out in one_by_one.handle(t, data)]
        bounds = [0, *sorted(c for c in cuts if c < len(messages)), len(messages)]
        grouped = [out for a, b in zip(bounds, bounds[1:]) for out in batched.handle_batch(messages[a:b])]
        strip = lambda hub, out: [(k, seq) for k, seq, _ in acked(hub, out)]  # noqa: E731
        assert strip(one_by_one, single) == strip(batched, grouped)
        assert one_by_one.counts == batched.counts
        assert one_by_one.store.messages() == batched.store.messages()
        hub_seqs = [h for _, _, h in acked(batched, grouped)]
        assert hub_seqs == sorted(set(hub_seqs))  # rising, never reused
    finally:
        one_by_one.store.close()
        batched.store.close()


class Msg:
    def __init__(self, topic, payload):
        self.topic, self.payload = topic, payload


def test_the_service_acknowledges_only_what_another_connection_can_read(tmp_path, monkeypatch):
    """HubService's message path without a broker: paho's callback, the
    checker and the writer threads. At each ACK's publish, a second SQLite
    connection must already see the message: it was committed first."""
    from host_tools.hub import service as service_module

    monkeypatch.setattr(service_module, "PARALLEL_FROM", 4)  # the two-halves path too
    hub = service_module.HubService(tmp_path / "hub", community="street", device_rate=1e9, device_burst=10**9, clock=lambda: NOW)
    signers = SIGNERS
    for s in signers:
        hub.ingest.register(cose.encode_key(*s.pub))
    reader = sqlite3.connect(tmp_path / "hub" / "hub.sqlite", check_same_thread=False)
    published, unseen = [], []

    def publish(t, payload, qos=0):
        ack = open_ack(hub.ingest, payload)
        row = reader.execute("SELECT 1 FROM messages WHERE kid = ? AND seq = ?",
                             (ack["device"], ack["acked_seq"])).fetchone()
        if row is None:
            unseen.append(ack["acked_seq"])
        published.append((t, ack["device"], ack["acked_seq"]))

    monkeypatch.setattr(hub.client, "publish", publish)
    sent = [(s, seq) for seq in range(1, 16) for s in signers]
    data = {(s.kid, seq): reading(s, seq, ts=NOW - 86400 + seq) for s, seq in sent}
    hub._checker = threading.Thread(target=hub._check_messages)
    hub._writer = threading.Thread(target=hub._write_messages)
    hub._checker.start()
    hub._writer.start()
    try:
        for s, seq in sent:
            hub._on_message(hub.client, None, Msg(topic(s), data[(s.kid, seq)]))
        hub._on_message(hub.client, None, Msg(topic(signers[0]), b"\xd2\x84\xff"))  # refused, not ACKed
    finally:
        hub.stop()  # stores what is queued, then ends both threads
        reader.close()
    assert not hub._checker.is_alive() and not hub._writer.is_alive()
    assert unseen == [], hub.ingest.counts
    assert published, hub.ingest.counts
    assert [(k, seq) for _, k, seq in published] == [(s.kid, seq) for s, seq in sent]  # arrival order
    assert hub.ingest.counts == {"accepted": 30, "rejected_cbor": 1}
