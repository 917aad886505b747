"""host_tools/hub/rounds.py: the market, settlement and ledger run on the
hub's real SQLite database, with the real HubKey, devices signing with lib/
as the firmware does, and a fake clock; no broker. What the hub sends is
checked with lib/ as the gateway would (messages.open_signed, Witness.check)."""

import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT / "tests" / "lib")]

import cose  # noqa: E402
from protocol_vectors import Signer  # noqa: E402
from trade import messages as m  # noqa: E402
from trade.witness import Witness, is_request  # noqa: E402

from host_tools.hub import market, settlement  # noqa: E402
from host_tools.hub.cose_es256 import HubKey  # noqa: E402
from host_tools.hub.ingest import Ingest  # noqa: E402
from host_tools.hub.rounds import Rounds, RoundsError  # noqa: E402
from host_tools.hub.store import CLOSED, Store  # noqa: E402

START = 1750507200  # 2025-06-21 12:00 UTC, on the 15-minute grid
END = START + 900
SETTLE = END + 300  # settle_after_s 300
HOUSE = {"grid_meter": b"grid", "max_import_w": 11000, "max_export_w": 4000,
         "retail_price": 300000, "feed_in_price": 80000}


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


class Hub:
    """A hub's state directory: store, key, ingest and rounds, as the service has them."""

    def __init__(self, path, devices, clock, **kw):
        self.path, self.devices, self.clock, self.kw = Path(path), devices, clock, kw
        self.open()

    def open(self, db="hub.sqlite"):
        self.store = Store(self.path / db)
        self.key = HubKey.load_or_create(self.path / "hub.pem")
        self.ingest = Ingest(self.store, self.key, "street", clock=self.clock)
        for s in self.devices:
            self.ingest.register(cose.encode_key(*s.pub))
        households = {s.kid: HOUSE for s in self.devices}
        self.rounds = Rounds(self.store, self.key, "street", households, **self.kw)
        return self

    def restart(self, db="hub.sqlite"):
        self.store.close()
        return self.open(db)

    def send(self, s, leaf, mtype, seq, ts, fields):
        data = m.sign(mtype, seq, ts, fields, s.kid, s)
        return data, self.ingest.handle(f"pgw/1/street/dev/{s.kid.hex()}/{leaf}", data)

    def order(self, s, seq, side, wh, limit, start=START, steps=None):
        fields = {"interval_start": start, "interval_min": 15, "side": side, "energy_wh": wh,
                  "limit_price": limit}
        if steps:
            fields["steps"] = steps
        return self.send(s, "order", m.ORDER, seq, start - 120, fields)

    def reading(self, s, seq, ts, imp, exp, imp_reg, exp_reg, meter=b"grid"):
        fields = {"interval_min": 15, "import_wh": imp, "export_wh": exp, "import_register_wh": imp_reg,
                  "export_register_wh": exp_reg, "power_w": 0, "meter": meter}
        return self.send(s, "reading", m.READING, seq, ts, fields)

    def tick(self, t):
        self.clock.t = t
        return self.rounds.tick(t)

    def open_hub(self, data):
        hub_kid, pub = cose.decode_key(self.key.cose_key())
        return m.open_signed(data, lambda kid: pub if kid == hub_kid else None)

    def count(self, table):
        return self.store.query(f"SELECT COUNT(*) FROM {table}")[0][0]


A, B, C = Signer(0xA11CE), Signer(0xB0B), Signer(0xCA201)


@pytest.fixture
def hub(tmp_path):
    h = Hub(tmp_path, [A, B, C], Clock(START - 300))
    yield h
    h.store.close()


def in_topic(s):
    return f"pgw/1/street/dev/{s.kid.hex()}/in"


def book(hub):
    """A sells 500 Wh from 150000, B buys 400 Wh up to 200000: one trade of 400 at 175000."""
    hub.order(A, 10, 1, 500, 150000)
    hub.order(B, 20, 0, 400, 200000)


# -- gate closure ---------------------------------------------------------------------


def test_orders_clear_at_gate_closure_into_signed_trades_for_both_parties(hub):
    book(hub)
    assert hub.tick(START - 1) == []  # the gate is still open
    out = hub.tick(START)
    assert [t for t, _ in out] == [in_topic(A), in_topic(B)] and out[0][1] == out[1][1]
    trade = hub.open_hub(out[0][1])  # as the gateway checks it
    want = market.clear([market.Order.from_fields(A.kid, 10, 1, 500, 150000),
                         market.Order.from_fields(B.kid, 20, 0, 400, 200000)])
    assert trade.type == m.TRADE and trade.ts == START
    assert trade.fields == {"trade_id": 1, "interval_start": START, "interval_min": 15, "seller": A.kid,
                            "buyer": B.kid, "energy_wh": 400, "price": want.price, "seller_order": 10,
                            "buyer_order": 20}
    assert want.price == 175000
    stored = hub.store.messages(kid=hub.key.kid, mtype=m.TRADE)
    assert len(stored) == 1 and bytes(stored[0][4]) == out[0][1]
    assert hub.tick(START + 1) == [] and hub.count("trades") == 1  # done once


def test_a_restart_sends_the_last_trades_again_and_never_clears_twice(hub):
    book(hub)
    out = hub.tick(START)
    hub.restart()
    again = hub.tick(START + 2)  # the first tick after a restart: it may not have gone out
    assert again == out
    assert hub.tick(START + 3) == []
    hub.restart()
    assert hub.tick(START + 4) == []  # the tick before the restart confirmed it
    assert hub.count("trades") == 1 and len(hub.store.messages(kid=hub.key.kid, mtype=m.TRADE)) == 1


def test_a_late_order_is_acknowledged_counted_and_kept_out_of_the_market(hub):
    book(hub)
    hub.clock.t = START  # the gate has closed
    data, out = hub.order(C, 5, 0, 300, 250000)
    assert hub.open_hub(out[0][1])["acked_seq"] == 5  # ACKed: the device drops it from its journal
    assert hub.ingest.counts["late_order"] == 1 and not hub.store.messages(kid=C.kid)
    hub.tick(START)
    assert [r[0] for r in hub.store.query("SELECT buyer FROM trades")] == [B.kid]
    # an interval already cleared refuses an ORDER even by a slow clock
    assert hub.store.insert_message(C.kid, 6, m.ORDER, START - 60, data) == CLOSED


def test_orders_the_market_cannot_take_are_dropped_and_counted(hub):
    hub.order(A, 10, 1, 500, 150000)
    hub.order(B, 20, 0, 400, 200000)
    hub.order(B, 21, 1, 100, 100000)  # B's latest order sells: its buy is dropped
    hub.order(C, 30, 0, 300, 210000, steps=[[210000, 100], [220000, 100]])  # steps add up to 200, not 300
    orders, dropped = hub.rounds.orders_of(START)
    assert [(o.kid, o.seq) for o in orders] == sorted([(A.kid, 10), (B.kid, 21)])
    assert dropped == {"both_sides": 1, "energy": 1}
    assert hub.tick(START) == [] and hub.rounds.counts["order_dropped_both_sides"] == 1


def test_an_interval_the_hub_slept_through_is_closed_without_trades(hub):
    book(hub)
    hub.tick(START - 900)  # rounds start in the interval before
    out = hub.tick(END + 10)
    assert hub.count("trades") == 0 and hub.rounds.counts["missed_gate"] == 1
    assert all(t.endswith("/in") or t.endswith("/block") for t, _ in out)


# -- settlement and the block -----------------------------------------------------------


def settle_round(hub):
    """Trade at START, readings at its start and end for A and B, then settle.
    The rounds begin with the interval before START: its block (height 0)
    holds the orders and the readings at START, START's (height 1) the rest."""
    hub.tick(START - 300)
    book(hub)
    hub.reading(A, 1, START, 0, 10, 100, 5000)
    hub.reading(B, 2, START, 50, 0, 7000, 0)
    trades = hub.tick(START)
    hub.tick(START + 300)
    hub.clock.t = END + 60
    hub.reading(A, 11, END, 0, 350, 100, 5350)  # delivered 350 of 400: A fell short
    hub.reading(B, 22, END, 420, 0, 7420, 0)
    return trades, hub.tick(SETTLE)


def test_readings_settle_as_settlement_settle_does_and_balances_sum_to_zero(hub):
    _, out = settle_round(hub)
    sent = [hub.open_hub(d) for t, d in out if d[0] == 0xd2 and t.endswith("/in")]
    settlements = [s for s in sent if s.type == m.SETTLEMENT]
    assert len(settlements) == 2 and settlements[0].fields == settlements[1].fields  # to both parties
    reading = lambda imp, exp, ir, er: {"interval_min": 15, "ts": END, "import_wh": imp,  # noqa: E731
                                        "export_wh": exp, "import_register_wh": ir, "export_register_wh": er}
    want = settlement.settle(
        START, [(1, A.kid, B.kid, 400, 175000)],
        {A.kid: reading(0, 350, 100, 5350), B.kid: reading(420, 0, 7420, 0)},
        {A.kid: {"import_register_wh": 100, "export_register_wh": 5000, "ts": START},
         B.kid: {"import_register_wh": 7000, "export_register_wh": 0, "ts": START}},
        {k: HOUSE for k in (A.kid, B.kid)}, {k: HOUSE for k in (A.kid, B.kid)}, interval_min=15)
    fields = want.trades[0].settlement_fields()
    assert fields == [1, 350, 350 * 175 - 50 * 125, 1]  # energy, less A's shortfall at retail - price
    assert [settlements[0][n] for n in ("trade_id", "delivered_wh", "amount", "status")] == fields
    assert hub.rounds.balances() == want.balances() and sum(hub.rounds.balances().values()) == 0
    assert hub.count("postings") == len(want.postings)
    assert hub.store.query("SELECT reason FROM settlements") == [("seller_short",)]


def test_a_missing_reading_fails_the_trade(hub):
    hub.tick(START - 300)
    book(hub)
    hub.tick(START)
    hub.clock.t = END + 60
    hub.reading(A, 11, END, 0, 400, 100, 5400)  # B sends nothing
    out = hub.tick(SETTLE)
    s = hub.open_hub(next(d for t, d in out if d[0] == 0xd2 and hub.open_hub(d).type == m.SETTLEMENT))
    assert (s["delivered_wh"], s["amount"], s["status"]) == (0, 0, 2)
    assert hub.rounds.counts["flag_missing_reading"] == 1


def test_one_block_per_interval_its_members_witness_it_and_two_thirds_make_it_final(hub):
    hub.tick(START - 300)
    book(hub)
    hub.reading(A, 1, START, 0, 10, 100, 5000)
    hub.reading(B, 2, START, 50, 0, 7000, 0)
    hub.tick(START)
    first = hub.tick(START + 300)  # the interval before START closes: block 0
    hub.clock.t = END + 60
    hub.reading(A, 11, END, 0, 350, 100, 5350)
    hub.reading(B, 22, END, 420, 0, 7420, 0)
    second = hub.tick(SETTLE)  # START closes: block 1
    hub_kid, pub = cose.decode_key(hub.key.cose_key())
    gateways = {}
    for s in (A, B, C):
        gateways[s.kid] = w = Witness(s.kid, {hub_kid: pub}.get)
        for seq, data in sorted((r[1], bytes(r[4])) for r in hub.store.messages(kid=s.kid)):
            w.remember(seq, data)
    for height, out, kinds, proven in (
            (0, first, [m.READING] * 2 + [m.ORDER] * 2, {A.kid: [1, 10], B.kid: [2, 20]}),
            (1, second, [m.READING] * 2 + [m.TRADE, m.SETTLEMENT], {A.kid: [11], B.kid: [22]})):
        blocks = [d for t, d in out if t == "pgw/1/street/hub/block"]
        requests = {t: d for t, d in out if is_request(d)}
        assert len(blocks) == 1 and set(requests) == {in_topic(s) for s in (A, B, C)}  # 3 households, size 7
        block, members = hub.rounds.block(height)
        assert block.signed == blocks[0] and members == sorted(s.kid for s in (A, B, C))
        assert sorted(e.mtype for e in block.entries) == kinds
        for s in (A, B):
            got = gateways[s.kid].check(requests[in_topic(s)], SETTLE)  # the gateway's own checker
            assert sorted(got.proven) == proven[s.kid] and got.missing == [] and got.linked == (height == 1)
            assert hub.rounds.finality(height).state == "pending"
            hub.send(s, "witness", m.WITNESS, 100 + height, SETTLE, got.fields)
        fin = hub.rounds.finality(height)
        assert fin.state == "final" and fin.signed == sorted([A.kid, B.kid]) and fin.needed == 2
    assert hub.rounds.block(1)[0].prev == hub.rounds.block(0)[0].hash
    status = hub.rounds.status(SETTLE)
    assert [b["state"] for b in status["blocks"]] == ["final", "final"] and status["trades"] == 1
    assert sum(status["balances"].values()) == 0


def test_no_step_repeats_after_a_restart(hub):
    settle_round(hub)
    before = {t: hub.count(t) for t in ("trades", "settlements", "postings", "blocks", "messages")}
    hub.restart()
    again = hub.tick(SETTLE + 1)  # the last close may not have gone out: sent again, not redone
    assert any(t == "pgw/1/street/hub/block" for t, _ in again)
    assert {t: hub.count(t) for t in before} == before
    assert hub.tick(SETTLE + 2) == []  # this tick takes the resent messages as published
    hub.restart()
    assert hub.tick(SETTLE + 3) == []
    assert hub.store.query("SELECT interval_start, cleared, settled, height FROM rounds"
                           " ORDER BY interval_start") == [(START - 900, 0, 1, 0), (START, 1, 1, 1)]


# -- a kill at any moment ----------------------------------------------------------------


class Killed(BaseException):
    """The process dies: nothing after this point runs."""


def kill_during(hub, when):
    """Make the hub's `when`-th signature copy the ledger and the work file as
    they are on disk at that moment (what a kill leaves) and then die."""
    real, n = hub.key.sign1, [0]

    def sign1(payload):
        n[0] += 1
        if n[0] == when:
            for name in ("sqlite", "work.sqlite"):
                for suffix in ("", "-wal"):
                    src = hub.path / ("hub." + name + suffix)
                    if src.exists():
                        shutil.copy(src, hub.path / ("killed." + name + suffix))
            raise Killed()
        return real(payload)
    hub.key.sign1 = sign1


@pytest.mark.parametrize("step, when", [("clear", 2), ("close", 2), ("close", 3)])
def test_a_kill_inside_a_step_leaves_none_of_it(hub, step, when):
    hub.tick(START - 300)
    book(hub)
    hub.order(C, 30, 0, 100, 200000)  # two trades: two TRADEs, two SETTLEMENTs
    hub.reading(A, 1, START, 0, 0, 0, 0)
    if step == "close":
        hub.tick(START)
        hub.tick(START + 300)
        hub.clock.t = END + 60
        hub.reading(A, 11, END, 0, 500, 0, 500)
    kill_during(hub, when)
    with pytest.raises(Killed):
        hub.tick(START if step == "clear" else SETTLE)
    used = hub.store.next_seq - 1  # the step had taken its seqs and signed with some
    hub.restart("killed.sqlite")  # what the disk held at the kill
    assert hub.store.next_seq > used  # never signs with a seq the killed hub used
    if step == "clear":
        assert hub.count("trades") == 0 and hub.count("rounds") == 0
    else:
        assert hub.count("settlements") == hub.count("postings") == 0
        assert hub.count("blocks") == 1  # the interval before's, closed at START + 300
        assert hub.store.query("SELECT COUNT(*) FROM messages WHERE height = 1")[0][0] == 0
    hub.tick(START + 1 if step == "clear" else SETTLE)  # the restarted hub does the step, whole, once
    hub.tick(SETTLE + 1)
    assert hub.count("trades") == 2 and hub.count("settlements") == 2 and hub.count("blocks") == 2
    hub_messages = hub.store.query("SELECT type, COUNT(*) FROM messages WHERE kid = ? GROUP BY type",
                                   (hub.key.kid,))
    assert hub_messages == [(m.TRADE, 2), (m.SETTLEMENT, 2), (m.BLOCK, 2)]


# -- the database ----------------------------------------------------------------------------


def test_a_database_from_before_the_rounds_is_migrated(tmp_path):
    import sqlite3
    data = m.sign(m.ORDER, 4, START - 60, {"interval_start": START, "interval_min": 15, "side": 1,
                                           "energy_wh": 300, "limit_price": 100000}, A.kid, A)
    db = sqlite3.connect(tmp_path / "hub.sqlite")
    db.execute("CREATE TABLE messages (kid BLOB NOT NULL, seq INTEGER NOT NULL, type INTEGER NOT NULL,"
               " ts INTEGER NOT NULL, data BLOB NOT NULL, received REAL NOT NULL, PRIMARY KEY (kid, seq))")
    db.execute("INSERT INTO messages VALUES (?, 4, 2, ?, ?, 0)", (A.kid, START - 60, data))
    db.commit()
    db.close()
    store = Store(tmp_path / "hub.sqlite")
    assert store.query("SELECT interval_start, height FROM messages") == [(START, None)]
    store.close()


def test_a_block_takes_the_oldest_arrivals_first_and_the_same_after_a_restart(hub, monkeypatch):
    from host_tools.hub import rounds as rounds_module
    monkeypatch.setattr(rounds_module, "MAX_BLOCK_ENTRIES", 2)
    hub.tick(START - 300)
    for seq in (9, 3, 5):  # a journal's replay: not in seq or ts order
        hub.reading(A, seq, START - 900 + 60 * seq, 0, 0, 0, 0)
    hub.restart()
    hub.tick(START + 300)
    assert hub.store.query("SELECT seq, height FROM messages WHERE kid = ? ORDER BY rowid", (A.kid,)) == [
        (9, 0), (3, 0), (5, None)]  # the first two to arrive; seq 5 waits for the next block


def test_hub_seqs_are_reserved_in_the_work_file_before_they_are_used(tmp_path, monkeypatch):
    store = Store(tmp_path / "hub.sqlite")
    writes = []
    real = store.work.set_counter
    monkeypatch.setattr(store.work, "set_counter", lambda name, value: (writes.append((name, value)),
                                                                        real(name, value)))
    assert [store.take_seqs(400) for _ in range(5)] == [1, 401, 801, 1201, 1601]
    assert writes == [("seq_reserved", 1400), ("seq_reserved", 2600)]  # one fsynced write per 1,000 or so
    store.close()
    store = Store(tmp_path / "hub.sqlite")
    assert store.next_seq == 2601  # above everything reserved: at most SEQ_RESERVE seqs are skipped
    store.close()


def drop_work_file(hub, how):
    hub.store.close()
    work = hub.path / "hub.work.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    if how == "lost":
        work.unlink()
    else:
        work.write_bytes(b"not a database " * 300)


@pytest.mark.parametrize("how", ["lost", "damaged"])
def test_a_lost_work_file_costs_the_last_ticks_messages_again_and_nothing_of_the_ledger(hub, how):
    from host_tools.hub import audit
    _, closed = settle_round(hub)  # the last tick closed START: it may not have gone out
    used = hub.store.next_seq - 1
    drop_work_file(hub, how)
    hub.open()
    assert hub.store.work_recovered and hub.store.next_seq > used  # past any seq an unstored ACK used
    assert (hub.path / "hub.work.sqlite.damaged").exists() == (how == "damaged")
    again = hub.tick(SETTLE + 1)
    assert again == closed  # START's SETTLEMENTs, BLOCK and witness requests; not its TRADE, nor block 0
    assert hub.tick(SETTLE + 2) == []
    hub.restart()
    assert hub.tick(SETTLE + 3) == []  # the marks are back
    report = audit.verify_db(hub.path / "hub.sqlite", hub.key.cose_key(), ({s.kid: HOUSE for s in (A, B, C)}, {}))
    assert report.ok, report.problems


def test_a_work_file_lost_before_the_first_block_still_settles_the_cleared_trades(hub):
    hub.tick(START - 300)  # the rounds start with the interval before START
    book(hub)
    hub.reading(A, 1, START, 0, 10, 100, 5000)
    hub.reading(B, 2, START, 50, 0, 7000, 0)
    hub.tick(START)  # one trade, no block yet
    drop_work_file(hub, "lost")
    hub.open()
    hub.clock.t = END + 60
    hub.reading(A, 11, END, 0, 350, 100, 5350)
    hub.reading(B, 22, END, 420, 0, 7420, 0)
    out = hub.tick(SETTLE)
    assert sum(hub.open_hub(d).type == m.TRADE for _, d in out if d[0] == 0xd2) == 2  # sent again, to both
    assert hub.count("settlements") == 1
    assert hub.store.query("SELECT height, interval_start FROM blocks") == [(0, START)]


# store.py's layout before the work file (user_version 0): the hub's
# bookkeeping in the ledger, as that hub created it (the ALTERs included)
LAYOUT_1 = """
CREATE TABLE devices (kid BLOB PRIMARY KEY, cose_key BLOB NOT NULL, name TEXT);
CREATE TABLE messages (kid BLOB NOT NULL, seq INTEGER NOT NULL, type INTEGER NOT NULL, ts INTEGER NOT NULL,
    data BLOB NOT NULL, received REAL NOT NULL, PRIMARY KEY (kid, seq));
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE trades (trade_id INTEGER PRIMARY KEY, interval_start INTEGER NOT NULL, seller BLOB NOT NULL,
    seller_seq INTEGER NOT NULL, buyer BLOB NOT NULL, buyer_seq INTEGER NOT NULL, energy_wh INTEGER NOT NULL,
    price INTEGER NOT NULL, msg_seq INTEGER NOT NULL);
CREATE TABLE settlements (trade_id INTEGER PRIMARY KEY, delivered_wh INTEGER NOT NULL, amount INTEGER NOT NULL,
    status INTEGER NOT NULL, reason TEXT, msg_seq INTEGER NOT NULL);
CREATE TABLE postings (trade_id INTEGER NOT NULL, n INTEGER NOT NULL, account BLOB NOT NULL,
    tokens INTEGER NOT NULL, why TEXT NOT NULL, PRIMARY KEY (trade_id, n));
CREATE TABLE blocks (height INTEGER PRIMARY KEY, interval_start INTEGER NOT NULL, hash BLOB NOT NULL,
    msg_seq INTEGER NOT NULL, entries INTEGER NOT NULL, committee BLOB NOT NULL);
CREATE TABLE rounds (interval_start INTEGER PRIMARY KEY, cleared INTEGER NOT NULL DEFAULT 0,
    settled INTEGER NOT NULL DEFAULT 0, height INTEGER, trades_sent INTEGER NOT NULL DEFAULT 0,
    close_sent INTEGER NOT NULL DEFAULT 0);
ALTER TABLE messages ADD COLUMN height INTEGER;
ALTER TABLE messages ADD COLUMN interval_start INTEGER;
ALTER TABLE messages ADD COLUMN meter BLOB;
ALTER TABLE messages ADD COLUMN witnessed_height INTEGER;
"""
LEDGER_TABLES = ("devices", "messages", "trades", "settlements", "postings", "blocks", "rounds")


def test_a_database_made_before_the_work_file_is_moved_over_once(hub):
    import sqlite3
    from host_tools.hub import audit
    settle_round(hub)  # START's close (the last tick) is not marked as sent
    acks_beyond = hub.store.next_seq + 500  # the old hub's meta.seq: ACKs used seqs nothing stored
    hub.store.close()
    ledger = sqlite3.connect(hub.path / "hub.sqlite")
    want = {t: ledger.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in LEDGER_TABLES}
    ledger.close()
    for name in ("hub.sqlite", "hub.work.sqlite"):
        for suffix in ("", "-wal", "-shm"):
            (hub.path / (name + suffix)).unlink(missing_ok=True)
    old = sqlite3.connect(hub.path / "hub.sqlite")
    old.executescript(LAYOUT_1)
    old.executemany("INSERT INTO devices VALUES (?, ?, ?)", [(k, c, "Alice" if k == A.kid else None)
                                                             for k, c in want["devices"]])
    old.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [r[:5] + (1e9 - i,) + r[5:] for i, r in enumerate(want["messages"])])
    for table in ("trades", "settlements", "postings", "blocks"):
        old.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * len(want[table][0]))})", want[table])
    old.executemany("INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?)",
                    [r + (r[1], int(r[0] != START)) for r in want["rounds"]])  # START's close not sent
    old.executemany("INSERT INTO meta VALUES (?, ?)", [("seq", acks_beyond), ("trade_id", 1),
                                                       ("next_round", END)])
    old.commit()
    old.close()

    store = Store(hub.path / "hub.sqlite")
    assert [(bytes(k), n) for k, _, n in store.devices() if n] == [(A.kid, "Alice")]
    assert store.next_seq == acks_beyond + 1 and not store.work_recovered
    assert store.query("PRAGMA user_version") == [(2,)]
    assert {t: store.query(f"SELECT * FROM {t} ORDER BY rowid") for t in LEDGER_TABLES} == want
    store.close()
    assert (hub.path / "hub.sqlite.v1").exists()  # the old file, kept
    hub.open()
    assert hub.rounds.next_round() == END
    again = hub.tick(SETTLE + 1)
    assert {hub.open_hub(d).type for _, d in again if d[0] == 0xd2} == {m.SETTLEMENT, m.BLOCK}  # not the TRADE
    report = audit.verify_db(hub.path / "hub.sqlite", hub.key.cose_key(), ({s.kid: HOUSE for s in (A, B, C)}, {}))
    assert report.ok, report.problems
    assert hub.tick(SETTLE + 2) == []  # takes them as sent
    hub.restart()
    assert hub.tick(SETTLE + 3) == [] and not (hub.path / "hub.sqlite.migrating").exists()


def test_bad_configuration_is_refused(hub):
    for kw, reason in (({"interval_min": 7}, "interval_min"), ({"committee_size": 0}, "committee_size"),
                       ({"feeder_wh": -1}, "feeder_wh"), ({"settle_after_s": 1.5}, "settle_after_s")):
        with pytest.raises(RoundsError) as e:
            Rounds(hub.store, hub.key, "street", {}, **kw)
        assert e.value.reason == reason
    with pytest.raises(RoundsError) as e:
        Rounds(hub.store, hub.key, "street", {A.kid: dict(HOUSE, retail_price=0.3)})
    assert e.value.reason == "households"
    with pytest.raises(RoundsError) as e:
        hub.rounds.block(5)
    assert e.value.reason == "height"


# -- any order of arrival --------------------------------------------------------------------

HOUSES = [Signer(0x5000 + i) for i in range(5)]
ORDER_BOOK = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 1), st.integers(1, 900),
                                st.integers(50000, 250000)), min_size=1, max_size=8)


@settings(max_examples=12, deadline=None)
@given(ORDER_BOOK, st.randoms(use_true_random=False))
def test_the_engine_trades_what_the_market_clears_in_any_order_of_arrival(book_, rnd):
    orders = [(HOUSES[h], 100 + i, side, wh, price) for i, (h, side, wh, price) in enumerate(book_)]
    results = []
    for attempt in range(2):
        with tempfile.TemporaryDirectory() as d:
            hub = Hub(d, HOUSES, Clock(START - 300), feeder_wh=1500)
            for s, seq, side, wh, price in orders:
                hub.order(s, seq, side, wh, price)
            got, dropped = hub.rounds.orders_of(START)
            hub.tick(START)
            results.append(hub.store.query("SELECT seller, seller_seq, buyer, buyer_seq, energy_wh, price"
                                           " FROM trades ORDER BY trade_id"))
            want = market.clear(got, hub.rounds.limits)
            assert results[-1] == [(t.seller, t.seller_seq, t.buyer, t.buyer_seq, t.wh, want.price)
                                   for t in want.trades]
            assert sum(dropped.values()) + len(got) == len(orders)
            hub.store.close()
        rnd.shuffle(orders)
    assert results[0] == results[1]
