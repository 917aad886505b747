"""The hub's rounds: the market, settlement and ledger rule books run on the
database, one interval at a time (docs/hub.md, "Rounds"). No broker, no clock:
`tick(now)` takes the time and returns the (topic, payload) pairs to publish.

- Gate closure (interval_start <= now): the interval's stored ORDERs are
  cleared once, one hub-signed TRADE per market trade, sent to both parties.
  An interval whose end passed before the hub could clear it is closed with
  no trades (`missed_gate`): a TRADE for an interval that is over could not
  be acted on.
- Interval end + settle_after_s: its trades are settled from the parties'
  grid-meter READINGs, one SETTLEMENT each, and one block is built per
  interval from the device READINGs and ORDERs not yet in a block, plus the
  interval's TRADEs and SETTLEMENTs; its committee gets the BLOCK and each
  member its witness request.
- Each step writes all its rows in one transaction and is marked done in
  `rounds`, so a hub killed at any moment has done a step entirely or not
  at all, and never does it twice. The next interval to close is the one
  after the last block's (before the first block: the work file's
  `rounds_start`).
- What a step returned is marked published, in the work file, by the first
  tick told that the broker has all of it (tick(now, published=True)); a
  new Rounds (a restart) publishes again the steps not so marked. Devices
  ignore a repeated trade_id and a block they witnessed already. A lost
  work file: only the last tick's steps are sent again (the ones whose hub
  messages carry the newest ts).
- Integers only; money and energy are settlement.py's, rounding included.
"""

from __future__ import annotations

import threading
from collections import Counter

import cbor2

from host_tools.hub import ledger, market, settlement
from host_tools.hub.store import ORDER, READING, WITNESS, Store, payload_of

VERSION = 1
TRADE, SETTLEMENT, BLOCK = 3, 4, 5
MAX_ROUNDS_PER_TICK = 96  # a day of 15-minute intervals: a long outage catches up over a few ticks
MAX_BLOCK_ENTRIES = 10_000  # device entries per block; more wait for the next block
RECENT_BLOCKS = 8  # blocks shown by status()
HOUSEHOLD_FIELDS = ("max_import_w", "max_export_w", "retail_price", "feed_in_price")
U32 = 2**32 - 1


class RoundsError(ValueError):
    """Bad configuration or arguments; `reason` is a short machine-readable word."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _check_households(households):
    if not hasattr(households, "items"):
        raise RoundsError("households", "a mapping kid -> settlement inputs")
    out = {}
    for kid, h in sorted(households.items()):
        if type(kid) is not bytes or len(kid) != 8:
            raise RoundsError("households", f"kid {kid!r} is not 8 bytes")
        if not hasattr(h, "get"):
            raise RoundsError("households", f"{kid.hex()}: not a mapping")
        row = {}
        for name in HOUSEHOLD_FIELDS:
            if not ledger.is_uint(h.get(name), U32):
                raise RoundsError("households", f"{kid.hex()}: {name} {h.get(name)!r} is not in 0..2^32-1")
            row[name] = h[name]
        meter = h.get("grid_meter")
        if meter is not None and (type(meter) is not bytes or not 1 <= len(meter) <= 32):
            raise RoundsError("households", f"{kid.hex()}: grid_meter must be 1-32 bytes or None")
        row["grid_meter"] = meter
        out[kid] = row
    return out


class Rounds:
    """store: a Store; key: the HubKey; households: kid -> {grid_meter
    (bytes or None: the device's only meter), max_import_w, max_export_w,
    retail_price, feed_in_price}; feeder_wh: the community's limit per
    interval (None: unlimited). Call tick() from one timer thread about
    every 0.5 s (or at next_due()); ingest may run at the same time."""

    def __init__(self, store, key, community, households, *, feeder_wh=None, interval_min=15,
                 settle_after_s=300, committee_size=7):
        if not ledger.is_uint(interval_min) or not 1 <= interval_min <= 1440 or 1440 % interval_min:
            raise RoundsError("interval_min", f"{interval_min!r} is not 1..1440 and a divisor of a day")
        if not ledger.is_uint(settle_after_s):
            raise RoundsError("settle_after_s", f"{settle_after_s!r} is not an int >= 0")
        if type(committee_size) is not int or committee_size < 1:
            raise RoundsError("committee_size", f"{committee_size!r} is not an int >= 1")
        if feeder_wh is not None and not ledger.is_uint(feeder_wh):
            raise RoundsError("feeder_wh", f"{feeder_wh!r} is not an int >= 0 or None")
        self.store = store
        self.key = key
        self.community = community
        self.households = _check_households(households)
        self.interval_s = 60 * interval_min
        self.interval_min = interval_min
        self.settle_after_s = settle_after_s
        self.committee_size = committee_size
        wh = lambda w: w * interval_min // 60  # noqa: E731  W x minutes / 60, rounded down: never above the fuse
        self.limits = market.Limits(
            feeder_wh=feeder_wh,
            import_wh={kid: wh(h["max_import_w"]) for kid, h in self.households.items()},
            export_wh={kid: wh(h["max_export_w"]) for kid, h in self.households.items()})
        self.counts = Counter()
        self._lock = threading.Lock()
        self._unconfirmed = None  # None: nothing published yet by this process

    # ---- topics ----

    def _in(self, kid):
        return f"pgw/1/{self.community}/dev/{kid.hex()}/in"

    def _block_topic(self):
        return f"pgw/1/{self.community}/hub/block"

    # ---- the clock's side ----

    def interval_of(self, now):
        """The start of the interval holding `now`."""
        now = int(now)
        return now - now % self.interval_s

    def next_round(self):
        """The interval the rounds close next: the one after the last block's;
        before the first block, the first tick's (None before it)."""
        row = self.store.query("SELECT interval_start FROM blocks ORDER BY height DESC LIMIT 1")
        if row:
            return row[0][0] + self.interval_s
        return self.store.work.counter("rounds_start")

    def next_due(self, now):
        """When tick() next has work by the clock: the next gate or round close."""
        nxt = self.next_round()
        gate = self.interval_of(now) + self.interval_s
        if nxt is None:
            return min(gate, int(now))
        return min(gate, nxt + self.interval_s + self.settle_after_s)

    def tick(self, now, published=True):
        """Do what is due at `now` -> [(topic, payload)] to publish, in order.
        published: whether the broker has acknowledged everything earlier
        ticks returned. True marks those steps sent; False leaves them
        unmarked (a restart sends them again) until a later tick says True."""
        now = int(now)
        with self._lock:
            try:
                return self._tick(now, published)
            except Exception:
                # steps this tick committed did not go out: the next tick
                # sends every unmarked step again, as after a restart
                self._unconfirmed = None
                raise

    def _tick(self, now, published):
        # under self._lock
        if self._unconfirmed is None:
            out, done = self._unsent()  # a restart: what may not have gone out
        elif published:
            self._mark_sent(self._unconfirmed)
            out, done = [], []
        else:  # still queued in the MQTT client: neither sent again nor marked
            out, done = [], list(self._unconfirmed)
        for start in self._due_gates(now):
            out += self._clear(start, now)
            done.append(("trades", start))
        nxt = self.next_round()
        if nxt is None:  # the first tick: the rounds start now
            nxt = self.interval_of(now)
            # (a work file lost before the first block: trades cleared since must still settle)
            waiting = self.store.query("SELECT MIN(interval_start) FROM rounds WHERE cleared AND NOT settled")[0][0]
            if waiting is not None:
                nxt = min(nxt, waiting)
            self.store.work.set_counter("rounds_start", nxt)
        for _ in range(MAX_ROUNDS_PER_TICK):
            if nxt + self.interval_s + self.settle_after_s > now:
                break
            out += self._close(nxt, now)
            done.append(("close", nxt))
            nxt += self.interval_s
        self._unconfirmed = done
        return out

    def _mark_sent(self, steps):
        if steps:
            self.store.work.mark_sent(steps)

    def _unsent(self):
        """The messages of every step done but not marked as published."""
        if self.store.work_recovered:
            self._recover_marks()
        out, steps = [], []
        sent = self.store.work.sent("trades")
        for (start,) in self.store.query("SELECT interval_start FROM rounds WHERE cleared ORDER BY interval_start"):
            if start not in sent:
                out += self._trade_messages(start)
                steps.append(("trades", start))
        sent = self.store.work.sent("close")
        for start, height in self.store.query("SELECT interval_start, height FROM rounds WHERE settled"
                                              " ORDER BY interval_start"):
            if start not in sent:
                out += self._settlement_messages(start)
                out += self._block_messages(height)
                steps.append(("close", start))
        self.counts["republished"] += len(out)
        return out, steps

    def _recover_marks(self):
        """A new work file beside a ledger with rounds: every step before the
        last tick was published (a tick publishes what the one before it
        returned). The last tick's steps are those whose TRADEs or BLOCK
        carry the newest ts of the hub's messages; the others are marked."""
        newest = self.store.query("SELECT MAX(ts) FROM messages WHERE kid = ? AND type IN (?, ?)",
                                  (self.key.kid, TRADE, BLOCK))[0][0]
        last = {start for (start,) in self.store.query(
            "SELECT DISTINCT t.interval_start FROM trades t JOIN messages m ON m.kid = ? AND m.seq = t.msg_seq"
            " WHERE m.ts = ?", (self.key.kid, newest))}
        steps = [("trades", start) for (start,) in self.store.query("SELECT interval_start FROM rounds WHERE cleared")
                 if start not in last]
        last = {start for (start,) in self.store.query(
            "SELECT b.interval_start FROM blocks b JOIN messages m ON m.kid = ? AND m.seq = b.msg_seq"
            " WHERE m.ts = ?", (self.key.kid, newest))}
        steps += [("close", start) for (start,) in self.store.query("SELECT interval_start FROM rounds WHERE settled")
                  if start not in last]
        self._mark_sent(steps)
        self.store.work_recovered = False

    # ---- gate closure: the market ----

    def _due_gates(self, now):
        rows = self.store.query(
            "SELECT DISTINCT m.interval_start FROM messages m LEFT JOIN rounds r"
            " ON r.interval_start = m.interval_start WHERE m.type = ? AND m.interval_start <= ?"
            " AND m.interval_start % ? = 0 AND m.kid != ? AND (r.cleared IS NULL OR NOT r.cleared)"
            " ORDER BY m.interval_start LIMIT ?", (ORDER, now, self.interval_s, self.key.kid, MAX_ROUNDS_PER_TICK))
        return [r[0] for r in rows]

    def orders_of(self, start):
        """The interval's stored ORDERs as market Orders, after dropping what
        the market cannot take -> (orders, Counter of dropped by reason)."""
        dropped = Counter()
        by_kid = {}
        for kid, seq, data in self.store.query(
                "SELECT kid, seq, data FROM messages WHERE type = ? AND interval_start = ? AND kid != ?"
                " ORDER BY kid, seq", (ORDER, start, self.key.kid)):
            kid = bytes(kid)
            p = payload_of(bytes(data))
            if kid not in self.households:
                dropped["unknown_household"] += 1
                continue
            if p is None or len(p) < 9:
                dropped["format"] += 1
                continue
            if p[5] != self.interval_min:
                dropped["interval_min"] += 1
                continue
            try:
                order = market.Order.from_fields(kid, seq, p[6], p[7], p[8], p[9] if len(p) > 9 else None)
            except market.MarketError as e:
                dropped[e.reason] += 1
                continue
            by_kid.setdefault(kid, []).append(order)
        orders = []
        for kid in sorted(by_kid):
            mine = by_kid[kid]
            # a household that buys and sells in one interval: its latest ORDER's
            # side is what it wants now (the gateway re-plans, it never does both)
            side = max(mine, key=lambda o: o.seq).side
            orders += [o for o in mine if o.side == side]
            dropped["both_sides"] += sum(o.side != side for o in mine)
        return orders, dropped

    def _clear(self, start, now):
        missed = now >= start + self.interval_s
        # read, clear and write under the store's lock: ingest's gate check
        # waits, so every ORDER is either in this market or refused as late
        with self.store.transaction() as db:
            orders, dropped = self.orders_of(start)
            clearing = None
            if not missed and orders:
                clearing = market.clear(orders, self.limits)  # orders_of left nothing MarketError names
            trades = clearing.trades if clearing else []
            if trades:
                first_id = Store.next_trade_id(db)
                first_seq = self.store.take_seqs(len(trades))
            for i, t in enumerate(trades):
                trade_id, seq = first_id + i, first_seq + i
                fields = [trade_id, start, self.interval_min, t.seller, t.buyer, t.wh, clearing.price,
                          t.seller_seq, t.buyer_seq]
                signed = self.key.sign1(cbor2.dumps([VERSION, TRADE, seq, now, *fields]))
                self._insert_hub_message(db, seq, TRADE, now, signed)
                db.execute("INSERT INTO trades (trade_id, interval_start, seller, seller_seq, buyer, buyer_seq,"
                           " energy_wh, price, msg_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (trade_id, start, t.seller, t.seller_seq, t.buyer, t.buyer_seq, t.wh,
                            clearing.price, seq))
            db.execute("INSERT INTO rounds (interval_start, cleared) VALUES (?, 1)"
                       " ON CONFLICT (interval_start) DO UPDATE SET cleared = 1", (start,))
        for reason, n in sorted(dropped.items()):
            self.counts["order_dropped_" + reason] += n
        self.counts["missed_gate" if missed else "cleared"] += 1
        self.counts["trades"] += len(trades)
        return self._trade_messages(start)

    def _insert_hub_message(self, db, seq, mtype, ts, signed):
        db.execute("INSERT INTO messages (kid, seq, type, ts, data) VALUES (?, ?, ?, ?, ?)",
                   (self.key.kid, seq, mtype, ts, signed))

    def _hub_message(self, seq):
        return bytes(self.store.query("SELECT data FROM messages WHERE kid = ? AND seq = ?",
                                      (self.key.kid, seq))[0][0])

    def _trade_messages(self, start):
        out = []
        for seller, buyer, seq in self.store.query(
                "SELECT seller, buyer, msg_seq FROM trades WHERE interval_start = ? ORDER BY trade_id", (start,)):
            signed = self._hub_message(seq)
            out += [(self._in(bytes(seller)), signed), (self._in(bytes(buyer)), signed)]
        return out

    # ---- interval end: settlement and the block ----

    def _meter_reading(self, kid, start):
        """-> (reading, previous) of kid's grid meter for the interval, as
        settlement.settle takes them; (None, None) without one."""
        h = self.households[kid]
        meter = h["grid_meter"]
        if meter is None:
            meters = self.store.query("SELECT DISTINCT meter FROM messages WHERE kid = ? AND type = ?"
                                      " AND meter IS NOT NULL LIMIT 2", (kid, READING))
            if len(meters) != 1:
                self.counts["no_grid_meter"] += 1
                return None, None
            meter = bytes(meters[0][0])
        end = start + self.interval_s
        # one reading per meter and ts; if a device signed two, the first seq counts
        rows = self.store.query("SELECT data FROM messages WHERE kid = ? AND type = ? AND meter = ? AND ts = ?"
                                " ORDER BY seq LIMIT 1", (kid, READING, meter, end))
        reading = self._reading_fields(rows[0][0]) if rows else None
        if reading is None:
            return None, None
        rows = self.store.query("SELECT data FROM messages WHERE kid = ? AND type = ? AND meter = ? AND ts <= ?"
                                " ORDER BY ts DESC, seq LIMIT 1", (kid, READING, meter, start))
        previous = self._reading_fields(rows[0][0]) if rows else None
        return reading, previous

    def _reading_fields(self, data):
        p = payload_of(bytes(data))
        names = ("interval_min", "import_wh", "export_wh", "import_register_wh", "export_register_wh")
        if p is None or len(p) < 9:
            self.counts["bad_reading"] += 1
            return None
        r = dict(zip(names, p[4:9]), ts=p[3])
        try:  # a field of the wrong type is the device's fault: its reading is missing
            settlement.check_reading(r, None, {"max_import_w": 0, "max_export_w": 0})
        except settlement.SettlementError:
            self.counts["bad_reading"] += 1
            return None
        return r

    def _settle(self, start):
        rows = self.store.query("SELECT trade_id, seller, buyer, energy_wh, price FROM trades"
                                " WHERE interval_start = ? ORDER BY trade_id", (start,))
        if not rows:
            return None
        trades = [(tid, bytes(s), bytes(b), wh, price) for tid, s, b, wh, price in rows]
        readings, previous = {}, {}
        for kid in sorted({k for t in trades for k in t[1:3]} & set(self.households)):
            reading, prev = self._meter_reading(kid, start)
            if reading is not None:
                readings[kid] = reading
                previous[kid] = prev
        limits = {k: {n: h[n] for n in ("max_import_w", "max_export_w")} for k, h in self.households.items()}
        tariffs = {k: {n: h[n] for n in ("retail_price", "feed_in_price")} for k, h in self.households.items()}
        for kid in {k for t in trades for k in t[1:3]} - set(self.households):
            # a party no longer configured: no reading counts, so its trades fail
            limits[kid] = {"max_import_w": 0, "max_export_w": 0}
            tariffs[kid] = {"retail_price": 0, "feed_in_price": 0}
        return settlement.settle(start, trades, readings, previous, limits, tariffs, interval_min=self.interval_min)

    def _close(self, start, now):
        """Settle the interval and build its block, in one transaction."""
        with self.store.transaction() as db:
            result = self._settle(start)
            hub_entries = []
            if result is not None:
                first_seq = self.store.take_seqs(len(result.trades))
                for i, ts_ in enumerate(result.trades):
                    seq = first_seq + i
                    signed = self.key.sign1(cbor2.dumps([VERSION, SETTLEMENT, seq, now,
                                                         *ts_.settlement_fields()]))
                    self._insert_hub_message(db, seq, SETTLEMENT, now, signed)
                    db.execute("INSERT INTO settlements (trade_id, delivered_wh, amount, status, reason, msg_seq)"
                               " VALUES (?, ?, ?, ?, ?, ?)",
                               (ts_.trade_id, ts_.delivered_wh, ts_.amount, ts_.status, ts_.reason, seq))
                    hub_entries.append((seq, signed))
                per_trade = Counter()
                for p in result.postings:
                    db.execute("INSERT INTO postings (trade_id, n, account, tokens, why) VALUES (?, ?, ?, ?, ?)",
                               (p.trade_id, per_trade[p.trade_id], p.account, p.tokens, p.why))
                    per_trade[p.trade_id] += 1
            hub_entries += [(seq, bytes(data)) for seq, data in db.execute(
                "SELECT m.seq, m.data FROM trades t JOIN messages m ON m.kid = ? AND m.seq = t.msg_seq"
                " WHERE t.interval_start = ?", (self.key.kid, start))]
            height = self._build_block(db, start, now, hub_entries)
            db.execute("INSERT INTO rounds (interval_start, settled, height) VALUES (?, 1, ?)"
                       " ON CONFLICT (interval_start) DO UPDATE SET settled = 1, height = excluded.height",
                       (start, height))
        if result is not None:
            self.counts["settled"] += len(result.trades)
            for flag in result.flags:
                self.counts["flag_" + flag.reason] += 1
        self.counts["blocks"] += 1
        return self._settlement_messages(start) + self._block_messages(height)

    def _build_block(self, db, start, now, hub_entries):
        device = []
        for kid, seq, data in db.execute(
                "SELECT kid, seq, data FROM messages WHERE height IS NULL AND type IN (?, ?) AND kid != ?"
                " ORDER BY rowid LIMIT ?", (READING, ORDER, self.key.kid, MAX_BLOCK_ENTRIES)):
            try:
                ledger.parse_entry(bytes(data))
            except ledger.LedgerError:
                # ingest let it in, the ledger cannot hash it: keep it out of every block
                db.execute("UPDATE messages SET height = -1 WHERE kid = ? AND seq = ?", (kid, seq))
                self.counts["bad_entry"] += 1
                continue
            device.append((bytes(kid), seq, bytes(data)))
        row = db.execute("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        height, prev = (row[0] + 1, bytes(row[1])) if row else (0, ledger.ZERO_HASH)
        seq = self.store.take_seqs()
        block = ledger.build_block(height, prev, [d for _, _, d in device] + [d for _, d in hub_entries],
                                   self.key.sign1, now, seq)
        self._insert_hub_message(db, seq, BLOCK, now, block.signed)
        members = ledger.committee([bytes(r[0]) for r in db.execute("SELECT kid FROM devices")],
                                   height, self.committee_size)
        db.execute("INSERT INTO blocks (height, interval_start, hash, msg_seq, entries, committee)"
                   " VALUES (?, ?, ?, ?, ?, ?)", (height, start, block.hash, seq, block.count, b"".join(members)))
        db.executemany("UPDATE messages SET height = ? WHERE kid = ? AND seq = ?",
                       [(height, kid, s) for kid, s, _ in device]
                       + [(height, self.key.kid, s) for s, _ in hub_entries])
        return height

    def _settlement_messages(self, start):
        out = []
        for seller, buyer, seq in self.store.query(
                "SELECT t.seller, t.buyer, s.msg_seq FROM trades t JOIN settlements s ON s.trade_id = t.trade_id"
                " WHERE t.interval_start = ? ORDER BY t.trade_id", (start,)):
            signed = self._hub_message(seq)
            out += [(self._in(bytes(seller)), signed), (self._in(bytes(buyer)), signed)]
        return out

    def block(self, height):
        """The stored block at `height` as a ledger.Block (not signed again),
        and its committee -> (Block, [kid]); RoundsError("height") if none."""
        rows = self.store.query("SELECT msg_seq, committee FROM blocks WHERE height = ?", (height,))
        if not rows:
            raise RoundsError("height", f"no block at height {height!r}")
        seq, members = rows[0]
        signed = self._hub_message(seq)
        p = payload_of(signed)
        entries = [bytes(r[0]) for r in self.store.query("SELECT data FROM messages WHERE height = ?", (height,))]
        block = ledger.build_block(height, p[5], entries, lambda payload: signed, p[3], p[2])
        return block, [bytes(members[i:i + 8]) for i in range(0, len(members), 8)]

    def _block_messages(self, height):
        block, members = self.block(height)
        return [(self._block_topic(), block.signed)] + [(self._in(kid), block.proofs_for(kid)) for kid in members]

    # ---- witnesses and status ----

    def finality(self, height):
        """ledger.Finality of the block at `height` from the stored WITNESS
        messages (ingest checked their signatures); None without a committee."""
        rows = self.store.query("SELECT hash, committee FROM blocks WHERE height = ?", (height,))
        if not rows:
            raise RoundsError("height", f"no block at height {height!r}")
        block_hash, members = bytes(rows[0][0]), bytes(rows[0][1])
        if not members:
            return None
        fin = ledger.Finality(height, block_hash, [members[i:i + 8] for i in range(0, len(members), 8)])
        for kid, data in self.store.query("SELECT kid, data FROM messages WHERE type = ? AND witnessed_height = ?"
                                          " ORDER BY kid, seq", (WITNESS, height)):
            p = payload_of(bytes(data))
            if p is not None and len(p) > 5 and type(p[5]) is bytes and len(p[5]) == 32:
                fin.add(bytes(kid), height, p[5])
        return fin

    def balances(self):
        """kid -> tokens, the sum of its postings; kids sorted, total 0."""
        return {bytes(k): v for k, v in self.store.query(
            "SELECT account, SUM(tokens) FROM postings GROUP BY account ORDER BY account")}

    def status(self, now):
        """A dict for the status API: plain JSON-able values."""
        blocks = []
        for height, start, entries in self.store.query(
                "SELECT height, interval_start, entries FROM blocks ORDER BY height DESC LIMIT ?", (RECENT_BLOCKS,)):
            fin = self.finality(height)
            state = fin.status() if fin else {"height": height, "state": "no_committee"}
            blocks.append(dict(state, interval_start=start, entries=entries))
        count = lambda sql: self.store.query(sql)[0][0]  # noqa: E731
        return {
            "interval_start": self.interval_of(now),
            "next_gate": self.interval_of(now) + self.interval_s,
            "rounds": {"cleared": count("SELECT COUNT(*) FROM rounds WHERE cleared"),
                       "settled": count("SELECT COUNT(*) FROM rounds WHERE settled")},
            "trades": count("SELECT COUNT(*) FROM trades"),
            "settlements": count("SELECT COUNT(*) FROM settlements"),
            "blocks": blocks,
            "balances": {k.hex(): v for k, v in self.balances().items()},
            "counts": dict(sorted(self.counts.items())),
        }
