"""Audit of the hub's ledger, independent of the running hub (docs/hub.md,
"Auditing the ledger"): `pgw ledger verify DB` and `pgw ledger export DB`.

- verify_db reads the SQLite file read-only and trusts no derived column or
  table: every value's type, every message's signature (device keys from
  `devices`, the hub's COSE_Key from outside the database), its indexed
  columns against its payload, the chain (ledger.verify_chain, block by
  block), each block's entries against the `height` column,
  trades/settlements against the signed TRADE/SETTLEMENT fields,
  settlement and postings re-run with settlement.settle from the READINGs
  in blocks up to the interval's own, postings summing to zero per trade,
  the rounds, the committees and the WITNESSes. The ledger holds nothing
  else: the hub's bookkeeping is in its work file (store.py), not read here.
- Every problem is a Problem(table, key, reason, detail); nothing raises on
  bad data. Pending blocks are reported, not problems.
- export_db writes a CBOR sequence (RFC 8742) of exact stored bytes: a
  header, the device COSE_Keys, then per block a marker, the signed BLOCK,
  its entries in block order and its WITNESSes; verify_export re-checks it.
- Deterministic: rows are read and reported in sorted order.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import sqlite3
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import cbor2

from host_tools.hub import ledger, settlement, store
from host_tools.hub.cose_es256 import Rejected, decode_cose_key, encode_cose_key, loads_exact, verify1
from host_tools.hub.store import index_fields

FORMAT = "pgw-ledger/1"
READING, ORDER, TRADE, SETTLEMENT, BLOCK, WITNESS = 1, 2, 3, 4, 5, 6
DEVICE_TYPES = (READING, ORDER, WITNESS)
HUB_TYPES = (TRADE, SETTLEMENT, BLOCK)
MARKER_KEYS = ("committee", "entries", "height", "witnesses")
HEADER_KEYS = ("blocks", "devices", "format", "hub_key")
MAX_EXPORT = 1 << 30  # bytes verify_export takes at most: bounded work


class AuditError(ValueError):
    """A bad argument (not bad data: that is a Problem). `reason`: `hub_key`, `market`, `export`, `arg`."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Problem(NamedTuple):
    table: str   # "messages", "blocks", ..., "database" or "export"
    key: str     # the row's key, e.g. "kid=0123..,seq=4" or "height=2"
    reason: str  # short machine-readable word
    detail: str

    def __str__(self):
        return f"{self.table} [{self.key}] {self.reason}: {self.detail}"


class BlockState(NamedTuple):
    height: int
    state: str        # "final" or "pending"
    signed: int
    needed: int
    committee: int
    mismatched: tuple  # kids of members who signed another hash at this height


class Report:
    """What an audit found: problems (sorted), per-block finality, counts."""

    def __init__(self):
        self.problems = []
        self.blocks = []
        self.counts = Counter()

    def add(self, table, key, reason, detail=""):
        self.problems.append(Problem(table, str(key), reason, detail))

    @property
    def ok(self):
        return not self.problems

    def finish(self):
        self.problems = sorted(set(self.problems))
        self.blocks.sort()
        return self

    def to_dict(self):
        return {"ok": self.ok, "problems": [p._asdict() for p in self.problems],
                "blocks": [dict(b._asdict(), mismatched=[k.hex() for k in b.mismatched]) for b in self.blocks],
                "counts": dict(sorted(self.counts.items()))}


def _mkey(kid, seq):
    return f"kid={kid.hex()},seq={seq}"


def _hub_key(hub_cose_key):
    try:
        kid, pub = decode_cose_key(bytes(hub_cose_key))
    except (Rejected, TypeError) as e:
        raise AuditError("hub_key", str(e)) from None
    return kid, pub


def _canonical_key(raw):
    """Raw COSE_Key bytes -> (kid, public key); Rejected unless it is exactly
    the canonical encoding, so no byte of a stored key can vary unnoticed."""
    kid, pub = decode_cose_key(raw)
    if encode_cose_key(pub) != raw:
        raise Rejected("key", "not the canonical COSE_Key encoding")
    return kid, pub


def _committee_problem(members, device_kids, height):
    """None if `members` is the committee ledger.committee picks at `height`
    for some size from today's registered kids, else the reason."""
    if not members:
        return "empty committee"
    try:
        want = ledger.committee(device_kids, height, len(members))
    except ledger.LedgerError as e:
        return str(e)
    return None if want == list(members) else "not ledger.committee of the registered kids"


def _witness_states(report, table, height, block_hash, members, witnesses):
    """witnesses: [(kid, seq, payload)] already signature-checked."""
    fin = ledger.Finality(height, block_hash, members)
    for kid, seq, p in witnesses:
        if len(p) < 6 or not ledger.is_uint(p[4]) or type(p[5]) is not bytes or len(p[5]) != 32:
            report.add(table, _mkey(kid, seq), "witness", "payload is not a WITNESS")
            continue
        fin.add(kid, p[4], p[5])
    if fin.fork_alarm:
        report.add(table, f"height={height}", "fork",
                   "members signed another hash: " + ",".join(k.hex() for k in fin.mismatched))
    report.blocks.append(BlockState(height, fin.state, len(fin.signed), fin.needed, fin.size,
                                    tuple(fin.mismatched)))


# ---- the database ------------------------------------------------------------------


def _read_tables(path):
    uri = "file:" + str(Path(path).resolve()) + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        db.execute("PRAGMA query_only=1")
        # one read transaction: every table from the same snapshot, even while
        # a running hub commits (WAL); otherwise a block could be read without
        # the BLOCK message committed with it
        db.execute("BEGIN")
        q = lambda sql: db.execute(sql).fetchall()  # noqa: E731
        return {
            "devices": q("SELECT kid, cose_key FROM devices ORDER BY kid"),
            "messages": q("SELECT kid, seq, type, ts, data, height, interval_start, meter,"
                          " witnessed_height FROM messages ORDER BY kid, seq"),
            "trades": q("SELECT trade_id, interval_start, seller, seller_seq, buyer, buyer_seq, energy_wh,"
                        " price, msg_seq FROM trades ORDER BY trade_id"),
            "settlements": q("SELECT trade_id, delivered_wh, amount, status, reason, msg_seq FROM settlements"
                             " ORDER BY trade_id"),
            "postings": q("SELECT trade_id, n, account, tokens, why FROM postings ORDER BY trade_id, n"),
            "blocks": q("SELECT height, interval_start, hash, msg_seq, entries, committee FROM blocks"
                        " ORDER BY height"),
            "rounds": q("SELECT interval_start, cleared, settled, height FROM rounds ORDER BY interval_start"),
            "integrity": q("PRAGMA integrity_check"),
            "schema": q(SCHEMA_SQL),
            "layout": q("PRAGMA user_version") + q("PRAGMA application_id"),
        }
    finally:
        db.close()


SCHEMA_SQL = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
_schema = []


def _expected_schema():
    """sqlite_master as store.py makes it (new, or migrated: the same)."""
    if not _schema:
        db = sqlite3.connect(":memory:", isolation_level=None)
        store.create_ledger(db)
        _schema.append(db.execute(SCHEMA_SQL).fetchall())
        db.close()
    return _schema[0]


# Each column's types as store.py writes them (None: NULL allowed). A row with
# another type (a float where an int was, a changed serial type) is reported
# and left out of the checks that follow, so they compare like with like.
COLUMN_TYPES = {
    "devices": (bytes, bytes),
    "messages": (bytes, int, int, int, bytes, (int, None), (int, None), (bytes, None), (int, None)),
    "trades": (int, int, bytes, int, bytes, int, int, int, int),
    "settlements": (int, int, int, int, (str, None), int),
    "postings": (int, int, bytes, int, str),
    "blocks": (int, int, bytes, int, int, bytes),
    "rounds": (int, int, int, (int, None)),
}
_ROW_TYPES = {table: set(itertools.product(*[tuple(type(None) if k is None else k for k in c)
                                             if type(c) is tuple else (c,) for c in kinds]))
              for table, kinds in COLUMN_TYPES.items()}


def _typed_rows(report, t):
    """Drop (and report) the rows whose values are not of their column's type."""
    for table, allowed in _ROW_TYPES.items():
        good = []
        for row in t[table]:
            if tuple(map(type, row)) in allowed:
                good.append(row)
            else:
                report.add(table, ",".join(repr(v)[:40] for v in row[:2]), "type",
                           "types " + ",".join(type(v).__name__ for v in row))
        t[table] = good


class _Msg(NamedTuple):
    kid: bytes
    seq: int
    mtype: int
    ts: int
    data: bytes
    height: int | None
    payload: list


def verify_db(path, hub_cose_key, market=None) -> Report:
    """Audit the hub database at `path`. hub_cose_key: the hub's COSE_Key
    bytes (hub.cose). market: (households, Rounds keywords) as
    service.load_market returns them; without it settlement is not re-run
    (counted `settlement_not_rerun`). -> Report."""
    hub_kid, hub_pub = _hub_key(hub_cose_key)
    households, kw = market if market is not None else ({}, {})
    if not isinstance(households, dict) or not isinstance(kw, dict):
        raise AuditError("market", "(households, keywords) as service.load_market returns")
    interval_min = kw.get("interval_min", 15)
    if type(interval_min) is not int or not 1 <= interval_min <= 1440:
        raise AuditError("market", f"interval_min {interval_min!r}")
    report = Report()
    try:
        t = _read_tables(path)
    except (sqlite3.Error, UnicodeDecodeError, MemoryError) as e:  # a damaged file: a finding, not a crash
        report.add("database", "-", "unreadable", f"{type(e).__name__}: {e}")
        return report.finish()
    try:
        _check_db(report, t, hub_kid, hub_pub, households, interval_min, market is not None)
    except sqlite3.Error as e:  # pragma: no cover - rows were read already
        report.add("database", "-", "unreadable", str(e))
    return report.finish()


def _check_db(report, t, hub_kid, hub_pub, households, interval_min, rerun):
    if t["integrity"] != [("ok",)]:
        report.add("database", "-", "integrity", "; ".join(str(r[0]) for r in t["integrity"][:5]))
    if t["schema"] != _expected_schema():
        report.add("database", "sqlite_master", "schema", "the tables or indexes are not store.py's")
    if t["layout"] != [(store.LAYOUT,), (0,)]:
        report.add("database", "header", "layout", "user_version, application_id %r, not %d, 0"
                   % ([r[0] for r in t["layout"]], store.LAYOUT))
    _typed_rows(report, t)
    # device keys
    keys = {}
    for kid, raw in t["devices"]:
        try:
            got, pub = _canonical_key(raw)
        except Rejected as e:
            report.add("devices", f"kid={kid.hex()}", "key", str(e))
            continue
        if got != kid:
            report.add("devices", f"kid={kid.hex()}", "kid", f"the key's kid is {got.hex()}")
            continue
        keys[kid] = pub
    if hub_kid in keys:
        report.add("devices", f"kid={hub_kid.hex()}", "kid", "the hub's own key is registered as a device")
    report.counts["devices"] = len(keys)
    lookup = lambda kid: hub_pub if kid == hub_kid else keys.get(kid)  # noqa: E731

    # every message: signature, payload against its columns
    msgs = {}
    for kid, seq, mtype, ts, data, height, istart, meter, whight in t["messages"]:
        key = _mkey(kid, seq)
        try:
            signer, body = verify1(data, lookup)
            p = loads_exact(body)
        except Rejected as e:
            report.add("messages", key, "signature", str(e))
            continue
        except Exception as e:  # cbor2 raises many kinds on a bad payload
            report.add("messages", key, "payload", f"{type(e).__name__}")
            continue
        if signer != kid:
            report.add("messages", key, "signer", f"signed by {signer.hex()}")
            continue
        if (not isinstance(p, list) or len(p) < 4 or p[0] != 1
                or not all(ledger.is_uint(x) for x in p[1:4])):
            report.add("messages", key, "payload", "not [1, type, seq, ts, ...]")
            continue
        if (p[1], p[2], p[3]) != (mtype, seq, ts):
            report.add("messages", key, "columns", f"type/seq/ts columns {mtype},{seq},{ts}, payload {p[1:4]}")
        if (mtype in HUB_TYPES) != (kid == hub_kid) or mtype not in DEVICE_TYPES + HUB_TYPES:
            report.add("messages", key, "signer", f"type {mtype} from {kid.hex()}")
        if (istart, meter, whight) != index_fields(mtype, p):
            report.add("messages", key, "columns", "interval_start/meter/witnessed_height differ from the payload")
        msgs[(kid, seq)] = _Msg(kid, seq, mtype, ts, data, height, p)
    report.counts["messages"] = len(msgs)
    hub_msg = lambda seq, mtype: (  # noqa: E731
        msgs.get((hub_kid, seq)) if msgs.get((hub_kid, seq), _Msg(b"", 0, -1, 0, b"", None, [])).mtype == mtype
        else None)

    # excluded entries (height -1) must be ones the ledger cannot hash
    for m in msgs.values():
        if m.height == -1:
            try:
                ledger.parse_entry(m.data)
                report.add("messages", _mkey(m.kid, m.seq), "height", "a hashable entry marked -1 (never in a block)")
            except ledger.LedgerError:
                pass
        elif m.height is not None and m.mtype not in (READING, ORDER, TRADE, SETTLEMENT):
            report.add("messages", _mkey(m.kid, m.seq), "height", f"type {m.mtype} in a block")

    # blocks and the chain
    rounds_by_start = {}
    for start, cleared, settled, height in t["rounds"]:
        rounds_by_start[start] = (cleared, settled, height)
    interval_s = 60 * interval_min
    after = None
    block_of_interval = {}
    used_blocks = set()
    heights = set()
    first_start = None
    by_height = {}
    for m in msgs.values():
        by_height.setdefault(m.height, []).append(m)
    for height, start, bhash, msg_seq, count, members_blob in t["blocks"]:
        bkey = f"height={height}"
        heights.add(height)
        bm = hub_msg(msg_seq, BLOCK)
        if bm is None:
            report.add("blocks", bkey, "message", f"no signed BLOCK at hub seq {msg_seq!r}")
            after = None
            continue
        used_blocks.add(msg_seq)
        if bhash != hashlib.sha256(bm.data).digest():
            report.add("blocks", bkey, "hash", "not SHA-256 of the signed BLOCK")
        entries = by_height.get(height, [])
        try:
            ordered = [e.data for e in ledger.block_order([m.data for m in entries])]
        except ledger.LedgerError as e:
            report.add("blocks", bkey, "entries", str(e))
            ordered = [m.data for m in entries]
        if count != len(ordered):
            report.add("blocks", bkey, "entries", f"entries column {count!r}, {len(ordered)} messages name it")
        try:
            # every entry's signature was checked above, with the same keys
            ledger.verify_chain([(bm.data, ordered)], hub_pub, after=after)
        except ledger.LedgerError as e:
            report.add("blocks", bkey, "chain_" + e.reason, str(e))
        after = (height, hashlib.sha256(bm.data).digest())
        if first_start is None:
            first_start = start - height * interval_s
        if start != first_start + height * interval_s:
            report.add("blocks", bkey, "interval", f"interval_start {start!r} breaks one block per interval")
        if rounds_by_start.get(start, (0, 0, None))[1:] != (1, height):
            report.add("blocks", bkey, "rounds", f"rounds row of {start!r} does not name this block")
        block_of_interval[start] = height
        members = []
        if len(members_blob) % 8:
            report.add("blocks", bkey, "committee", "not a run of 8-byte kids")
        else:
            members = [members_blob[i:i + 8] for i in range(0, len(members_blob), 8)]
            why = _committee_problem(members, sorted(keys), height)
            if why:
                report.add("blocks", bkey, "committee", why)
        if members:
            wit = sorted((m.kid, m.seq, m.payload) for m in msgs.values()
                         if m.mtype == WITNESS and len(m.payload) > 4 and m.payload[4] == height)
            _witness_states(report, "blocks", height, bhash, members, wit)
    if heights != set(range(len(heights))):
        report.add("blocks", "-", "heights", "heights are not 0..n-1")
    for m in msgs.values():
        if m.mtype == BLOCK and m.seq not in used_blocks:
            report.add("messages", _mkey(m.kid, m.seq), "block", "a signed BLOCK no blocks row names")
        if m.height is not None and m.height >= 0 and m.height not in heights:
            report.add("messages", _mkey(m.kid, m.seq), "height", f"names block {m.height}, which does not exist")

    # rounds: a row per interval a step has touched, and only those
    order_intervals = {m.payload[4] for m in msgs.values() if m.mtype == ORDER and m.kid != hub_kid
                       and len(m.payload) > 4 and ledger.is_uint(m.payload[4]) and m.payload[4] % interval_s == 0}
    for start, (cleared, settled, height) in sorted(rounds_by_start.items()):
        key = f"interval_start={start}"
        if cleared not in (0, 1) or settled not in (0, 1):
            report.add("rounds", key, "type", "cleared/settled are 0 or 1")
            continue
        if not cleared and not settled:
            report.add("rounds", key, "cleared", "neither cleared nor settled")
        if settled and block_of_interval.get(start) != height:
            report.add("rounds", key, "height", "settled, but no block of that height")
        if not settled and height is not None:
            report.add("rounds", key, "height", "a height without settlement")
        has_orders = start in order_intervals
        if bool(cleared) != has_orders and (cleared or settled):
            report.add("rounds", key, "cleared", f"cleared={cleared!r}, ORDERs: {has_orders}")
    if block_of_interval:
        # a gate is cleared before its interval closes: every ORDERed interval a block closed is cleared
        first, last = min(block_of_interval), max(block_of_interval)
        for start in sorted(order_intervals):
            if first <= start <= last and not rounds_by_start.get(start, (0,))[0]:
                report.add("rounds", f"interval_start={start}", "cleared", "ORDERs of a closed interval, not cleared")

    _check_trades(report, t, msgs, hub_msg, hub_kid, rounds_by_start, interval_min)
    if rerun:
        _rerun_settlement(report, t, msgs, households, interval_min, block_of_interval)
    else:
        report.counts["settlement_not_rerun"] = 1

    if t["trades"] and [r[0] for r in t["trades"]] != list(range(1, len(t["trades"]) + 1)):
        report.add("trades", "-", "trade_id", "trade ids are not 1..n")


def _check_trades(report, t, msgs, hub_msg, hub_kid, rounds_by_start, interval_min):
    trade_msgs = set()
    interval_of_trade = {}
    for row in t["trades"]:
        trade_id, start, seller, seller_seq, buyer, buyer_seq, wh, price, msg_seq = row
        key = f"trade_id={trade_id}"
        interval_of_trade[trade_id] = start
        m = hub_msg(msg_seq, TRADE)
        if m is None:
            report.add("trades", key, "message", f"no signed TRADE at hub seq {msg_seq!r}")
            continue
        trade_msgs.add(msg_seq)
        want = [trade_id, start, interval_min, seller, buyer, wh, price, seller_seq, buyer_seq]
        if m.payload[4:13] != want:
            report.add("trades", key, "fields", "the row differs from its signed TRADE")
        if not rounds_by_start.get(start, (0,))[0]:
            report.add("trades", key, "rounds", "its interval is not marked cleared")
    settled_msgs = set()
    settled_trades = set()
    for trade_id, delivered, amount, status, reason, msg_seq in t["settlements"]:
        key = f"trade_id={trade_id}"
        settled_trades.add(trade_id)
        m = hub_msg(msg_seq, SETTLEMENT)
        if m is None:
            report.add("settlements", key, "message", f"no signed SETTLEMENT at hub seq {msg_seq!r}")
            continue
        settled_msgs.add(msg_seq)
        if m.payload[4:8] != [trade_id, delivered, amount, status]:
            report.add("settlements", key, "fields", "the row differs from its signed SETTLEMENT")
        if trade_id not in interval_of_trade:
            report.add("settlements", key, "trade", "settles a trade that does not exist")
    for trade_id, start in sorted(interval_of_trade.items()):
        if bool(rounds_by_start.get(start, (0, 0))[1]) != (trade_id in settled_trades):
            report.add("trades", f"trade_id={trade_id}", "rounds", "settled, or not, unlike its interval")
    for (kid, seq), m in sorted(msgs.items()):
        if m.mtype == TRADE and seq not in trade_msgs:
            report.add("messages", _mkey(kid, seq), "trade", "a signed TRADE without its trades row")
        if m.mtype == SETTLEMENT and seq not in settled_msgs:
            report.add("messages", _mkey(kid, seq), "settlement", "a signed SETTLEMENT without its row")
    sums = Counter()
    count = Counter()
    for trade_id, n, account, tokens, why in t["postings"]:
        sums[trade_id] += tokens
        if n != count[trade_id]:
            report.add("postings", f"trade_id={trade_id},n={n}", "n", "a trade's postings are numbered 0..k-1")
        count[trade_id] += 1
        if trade_id not in settled_trades:
            report.add("postings", f"trade_id={trade_id},n={n}", "trade", "a posting of no settlement")
    for trade_id in sorted(sums):
        if sums[trade_id]:
            report.add("postings", f"trade_id={trade_id}", "unbalanced", f"sum {sums[trade_id]}")


def _reading_fields(p):
    """A READING payload -> settle's reading mapping, or None when malformed
    (as rounds.py takes it: the reading then counts as missing)."""
    if len(p) < 9:
        return None
    r = dict(zip(("interval_min", "import_wh", "export_wh", "import_register_wh", "export_register_wh"), p[4:9]),
             ts=p[3])
    try:
        settlement.check_reading(r, None, {"max_import_w": 0, "max_export_w": 0})
    except settlement.SettlementError:
        return None
    return r


def _rerun_settlement(report, t, msgs, households, interval_min, block_of_interval):
    """settlement.settle again per settled interval, from the READINGs the hub
    had at its close: those in blocks up to the interval's own block."""
    interval_s = 60 * interval_min
    by_interval = {}
    for row in t["trades"]:
        by_interval.setdefault(row[1], []).append(row)
    rows = {r[0]: r for r in t["settlements"]}
    postings = {}
    for trade_id, n, account, tokens, why in t["postings"]:
        postings.setdefault(trade_id, []).append((account, tokens, why))
    for start in sorted(by_interval):
        height = block_of_interval.get(start)
        if height is None:
            continue  # not settled yet
        trades = [(r[0], r[2], r[4], r[6], r[7]) for r in by_interval[start]]
        parties = {k for tr in trades for k in tr[1:3]}
        readings, previous = {}, {}
        for kid in sorted(parties & set(households)):
            reading, prev = _meter_reading(msgs, kid, households[kid].get("grid_meter"), start, interval_s, height)
            if reading is not None:
                readings[kid], previous[kid] = reading, prev
        limits = {k: {n: h[n] for n in ("max_import_w", "max_export_w")} for k, h in households.items()}
        tariffs = {k: {n: h[n] for n in ("retail_price", "feed_in_price")} for k, h in households.items()}
        for kid in parties - set(households):
            limits[kid] = {"max_import_w": 0, "max_export_w": 0}
            tariffs[kid] = {"retail_price": 0, "feed_in_price": 0}
        try:
            result = settlement.settle(start, trades, readings, previous, limits, tariffs, interval_min=interval_min)
        except (settlement.SettlementError, KeyError) as e:
            report.add("settlements", f"interval_start={start}", "rerun", str(e))
            continue
        for ts_ in result.trades:
            key = f"trade_id={ts_.trade_id}"
            row = rows.get(ts_.trade_id)
            if row is None:
                report.add("settlements", key, "missing", "a settled interval's trade without its settlement")
                continue
            if list(row[1:5]) != [ts_.delivered_wh, ts_.amount, ts_.status, ts_.reason]:
                report.add("settlements", key, "rerun", "differs from settlement.settle on the stored READINGs")
        want = {}
        for p in result.postings:
            want.setdefault(p.trade_id, []).append((p.account, p.tokens, p.why))
        for trade_id in sorted(want):
            if postings.get(trade_id) != want[trade_id]:
                report.add("postings", f"trade_id={trade_id}", "rerun",
                           "differ from settlement.settle on the stored READINGs")


def _meter_reading(msgs, kid, meter, start, interval_s, max_height):
    seen = [m for m in msgs.values() if m.kid == kid and m.mtype == READING and m.height is not None
            and 0 <= m.height <= max_height and len(m.payload) > 10 and type(m.payload[10]) is bytes]
    if meter is None:
        meters = {m.payload[10] for m in seen}
        if len(meters) != 1:
            return None, None
        meter = meters.pop()
    seen = sorted((m for m in seen if m.payload[10] == meter), key=lambda m: (m.ts, m.seq))
    now = [m for m in seen if m.ts == start + interval_s]
    reading = _reading_fields(now[0].payload) if now else None
    if reading is None:
        return None, None
    before = [m for m in seen if m.ts <= start]
    if not before:
        return reading, None
    newest = max(m.ts for m in before)
    return reading, _reading_fields(min((m for m in before if m.ts == newest), key=lambda m: m.seq).payload)


# ---- the export ----------------------------------------------------------------------


def export_db(path, hub_cose_key) -> bytes:
    """The ledger in the database at `path` as a CBOR sequence (RFC 8742):
    header {format, hub_key, devices, blocks}, the device
    COSE_Keys by kid, then per block a marker {height, committee, entries,
    witnesses}, the signed BLOCK, its entries in block order and its WITNESSes
    by (kid, seq). Every message is its exact stored bytes. Run verify_db
    first: this copies, it does not check."""
    _hub_key(hub_cose_key)
    t = _read_tables(path)
    out = io.BytesIO()
    header = {"format": FORMAT, "hub_key": bytes(hub_cose_key), "devices": len(t["devices"]),
              "blocks": len(t["blocks"])}
    out.write(cbor2.dumps(header, canonical=True))
    for _, raw in t["devices"]:
        out.write(bytes(raw))
    data = {(bytes(r[0]), r[1]): r for r in t["messages"]}
    hub_kid = _hub_key(hub_cose_key)[0]
    for height, _, _, msg_seq, _, members in t["blocks"]:
        entries = ledger.block_order([bytes(r[4]) for r in t["messages"] if r[5] == height])
        witnesses = [bytes(r[4]) for r in t["messages"] if r[2] == WITNESS and r[8] == height]
        marker = {"height": height, "committee": [bytes(members[i:i + 8]) for i in range(0, len(members), 8)],
                  "entries": len(entries), "witnesses": len(witnesses)}
        out.write(cbor2.dumps(marker, canonical=True))
        out.write(bytes(data[(hub_kid, msg_seq)][4]))
        for e in entries:
            out.write(e.data)
        for w in witnesses:
            out.write(w)
    return out.getvalue()


class _ExportError(Exception):
    def __init__(self, key, reason, detail):
        super().__init__(detail)
        self.key, self.reason, self.detail = key, reason, detail


class _Items:
    """A CBOR sequence read one item at a time, with each item's exact bytes."""

    def __init__(self, data):
        self.data = data
        self.fp = io.BytesIO(data)
        self.index = 0

    def next(self, what):
        at = self.fp.tell()
        if at >= len(self.data):
            raise _ExportError(f"item {self.index}", "truncated", f"the sequence ends before {what}")
        try:
            value = cbor2.CBORDecoder(self.fp).decode()
        except Exception as e:  # cbor2 raises many kinds on malformed input
            raise _ExportError(f"item {self.index}", "cbor", f"{what}: {type(e).__name__}") from None
        self.index += 1
        return value, self.data[at:self.fp.tell()]


def verify_export(data, hub_cose_key=None) -> Report:
    """Re-check an export (bytes). hub_cose_key: the hub key you trust; the
    header's must equal it (without it the export vouches for itself). The
    checks of verify_db minus the derived tables. -> Report."""
    report = Report()
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_EXPORT:
        raise AuditError("export", f"bytes of at most {MAX_EXPORT}")
    try:
        _check_export(report, bytes(data), hub_cose_key)
    except _ExportError as e:
        report.add("export", e.key, e.reason, e.detail)
    return report.finish()


def _exact_map(value, keys, what, at):
    if not isinstance(value, dict) or sorted(k for k in value if isinstance(k, str)) != list(keys) \
            or len(value) != len(keys):
        raise _ExportError(at, "format", f"{what} is a map of exactly {', '.join(keys)}")


def _check_export(report, data, trusted):
    items = _Items(data)
    header, raw = items.next("the header")
    _exact_map(header, HEADER_KEYS, "the header", "item 0")
    if raw != cbor2.dumps(header, canonical=True):
        raise _ExportError("item 0", "format", "the header is not canonical CBOR")
    if header["format"] != FORMAT:
        raise _ExportError("item 0", "format", f"format {header['format']!r}")
    ndev, nblocks = header["devices"], header["blocks"]
    if not (ledger.is_uint(ndev, 1 << 20) and ledger.is_uint(nblocks, 1 << 32)):
        raise _ExportError("item 0", "format", "devices and blocks are counts")
    try:
        if not isinstance(header["hub_key"], bytes):
            raise Rejected("key", "not bytes")
        hub_kid, hub_pub = _canonical_key(header["hub_key"])
    except Rejected as e:
        raise _ExportError("item 0", "hub_key", str(e)) from None
    if trusted is not None and bytes(trusted) != header["hub_key"]:
        report.add("export", "item 0", "hub_key", "not the hub key given")
    keys = {}
    last = b""
    for _ in range(ndev):
        _, raw = items.next("a device key")
        try:
            kid, pub = _canonical_key(raw)
        except Rejected as e:
            raise _ExportError(f"item {items.index - 1}", "key", str(e)) from None
        if kid <= last or kid == hub_kid:
            raise _ExportError(f"item {items.index - 1}", "key", "device keys are sorted by kid, distinct")
        keys[kid], last = pub, kid
    report.counts["devices"] = len(keys)
    lookup = lambda kid: hub_pub if kid == hub_kid else keys.get(kid)  # noqa: E731
    after = None
    for height in range(nblocks):
        at = f"height={height}"
        marker, raw = items.next("a block marker")
        _exact_map(marker, MARKER_KEYS, "a block marker", at)
        if raw != cbor2.dumps(marker, canonical=True) or marker["height"] != height:
            raise _ExportError(at, "format", "the marker is not canonical or names another height")
        nent, nwit, members = marker["entries"], marker["witnesses"], marker["committee"]
        if not (ledger.is_uint(nent, ledger.U32) and ledger.is_uint(nwit, 1 << 20) and isinstance(members, list)
                and all(isinstance(k, bytes) and len(k) == 8 for k in members)):
            raise _ExportError(at, "format", "entries, witnesses are counts, committee a list of kids")
        _, signed = items.next("a BLOCK")
        entries = [items.next("an entry")[1] for _ in range(nent)]
        try:
            ledger.verify_chain([(signed, entries)], hub_pub, after=after, device_keys=keys.get)
        except ledger.LedgerError as e:
            report.add("export", at, "chain_" + e.reason, str(e))
        block_hash = hashlib.sha256(signed).digest()
        after = (height, block_hash)
        why = _committee_problem(members, sorted(keys), height)
        if why:
            report.add("export", at, "committee", why)
        witnesses, prev = [], None
        for _ in range(nwit):
            _, w = items.next("a WITNESS")
            wat = f"height={height},item {items.index - 1}"
            try:
                kid, body = verify1(w, lookup)
                p = loads_exact(body)
                if cbor2.loads(w).value[1] != {}:
                    raise Rejected("format", "a non-empty unprotected header")
            except Rejected as e:
                report.add("export", wat, "witness_signature", str(e))
                continue
            except Exception as e:  # cbor2 raises many kinds
                report.add("export", wat, "witness", type(e).__name__)
                continue
            if (kid == hub_kid or not isinstance(p, list) or len(p) != 6 or p[:2] != [1, WITNESS]
                    or p[4] != height or not all(ledger.is_uint(x) for x in p[2:4])):
                report.add("export", wat, "witness", "not a device's WITNESS of this height")
                continue
            if prev is not None and (kid, p[2]) <= prev:
                report.add("export", wat, "witness_order", "WITNESSes are sorted by (kid, seq), distinct")
            prev = (kid, p[2])
            witnesses.append((kid, p[2], p))
        if members and not why:
            _witness_states(report, "export", height, block_hash, members, witnesses)
        report.counts["entries"] += nent
    report.counts["blocks"] = nblocks
    if items.fp.tell() != len(data):
        raise _ExportError(f"item {items.index}", "trailing", f"{len(data) - items.fp.tell()} bytes after the last block")


# ---- the command line: pgw ledger verify|export ----------------------------------


def add_arguments(p):
    sub = p.add_subparsers(dest="ledger_command", required=True, metavar="verify|export")
    v = sub.add_parser("verify", help="re-check a hub database (or an export) independently of the hub")
    v.add_argument("db", nargs="?", help="the hub's database (hub.sqlite)")
    v.add_argument("--export", metavar="FILE", help="check this export instead of a database")
    v.add_argument("--hub-key", metavar="FILE", help="the hub's COSE_Key (default: hub.cose beside DB)")
    v.add_argument("--market", metavar="FILE", help="the hub's market file: re-run settlement with it")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    e = sub.add_parser("export", help="write the ledger as a CBOR sequence of the signed messages")
    e.add_argument("db", help="the hub's database (hub.sqlite)")
    e.add_argument("--out", required=True, metavar="FILE")
    e.add_argument("--hub-key", metavar="FILE", help="the hub's COSE_Key (default: hub.cose beside DB)")


def _read_hub_key(args):
    if args.hub_key:
        path = Path(args.hub_key)
    elif args.db:
        path = Path(args.db).resolve().parent / "hub.cose"
    else:
        raise AuditError("hub_key", "give --hub-key FILE")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise AuditError("hub_key", f"{path}: {e.strerror}; give --hub-key FILE") from None
    try:
        return bytes.fromhex(raw.decode().strip())  # hex text, as the console prints keys
    except (UnicodeDecodeError, ValueError):
        return raw


def _print(report, as_json):
    if as_json:
        import json
        print(json.dumps(report.to_dict(), indent=1))
        return
    for p in report.problems:
        print(p)
    for b in report.blocks:
        print(f"block {b.height}: {b.state} ({b.signed}/{b.committee} signed, {b.needed} needed)")
    verdict = "clean" if report.ok else f"{len(report.problems)} problems"
    print(f"{len(report.blocks)} blocks, {dict(sorted(report.counts.items()))}: {verdict}")


def run(args):
    if args.ledger_command == "export":
        data = export_db(args.db, _read_hub_key(args))
        tmp = Path(args.out + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(args.out)
        print(f"wrote {len(data)} bytes to {args.out}")
        return 0
    if args.export:
        if not args.hub_key:
            raise AuditError("hub_key", "checking an export needs the hub key you trust: --hub-key FILE")
        report = verify_export(Path(args.export).read_bytes(), _read_hub_key(args))
    elif args.db:
        market = None
        if args.market:
            from host_tools.hub.service import load_market
            market = load_market(args.market)
        report = verify_db(args.db, _read_hub_key(args), market)
    else:
        raise AuditError("arg", "give DB or --export FILE")
    _print(report, args.json)
    return 0 if report.ok else 1
