"""The hub's SQLite database: device keys, every signed message (the
devices' and the hub's own TRADEs, SETTLEMENTs and BLOCKs), the hub's
sequence counter, and the rounds of the market and the ledger. WAL mode;
every commit is synchronous=FULL, so a hub killed at any moment has either
stored a message (and may ACK it) or not, and a step of a round
(`transaction()`) is either all there or not there at all."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

import cbor2

READING, ORDER, WITNESS = 1, 2, 6
CLOSED = "closed"  # insert_message: an ORDER for an interval whose gate has closed
LOOKUP_CHUNK = 400  # (kid, seq) pairs in one lookup: 800 variables, under SQLite's older limit of 999

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    kid BLOB PRIMARY KEY,
    cose_key BLOB NOT NULL,
    name TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    kid BLOB NOT NULL,
    seq INTEGER NOT NULL,
    type INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    data BLOB NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (kid, seq)
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS trades (
    trade_id INTEGER PRIMARY KEY,
    interval_start INTEGER NOT NULL,
    seller BLOB NOT NULL,
    seller_seq INTEGER NOT NULL,
    buyer BLOB NOT NULL,
    buyer_seq INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL,
    price INTEGER NOT NULL,
    msg_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settlements (
    trade_id INTEGER PRIMARY KEY,
    delivered_wh INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT,
    msg_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS postings (
    trade_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    account BLOB NOT NULL,
    tokens INTEGER NOT NULL,
    why TEXT NOT NULL,
    PRIMARY KEY (trade_id, n)
);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    interval_start INTEGER NOT NULL,
    hash BLOB NOT NULL,
    msg_seq INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    committee BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    interval_start INTEGER PRIMARY KEY,
    cleared INTEGER NOT NULL DEFAULT 0,
    settled INTEGER NOT NULL DEFAULT 0,
    height INTEGER,
    trades_sent INTEGER NOT NULL DEFAULT 0,
    close_sent INTEGER NOT NULL DEFAULT 0
);
"""

# Columns added to `messages` after its first release, filled from the payload
# so the rounds can find a message without decoding them all:
# height: the block the entry went into (NULL: none yet, -1: never, unparsable);
# interval_start: an ORDER's traded interval; meter: a READING's meter serial;
# witnessed_height: a WITNESS's block height.
NEW_COLUMNS = (("height", "INTEGER"), ("interval_start", "INTEGER"), ("meter", "BLOB"),
               ("witnessed_height", "INTEGER"))

INDEXES = """
CREATE INDEX IF NOT EXISTS messages_by_height ON messages (height, type);
CREATE INDEX IF NOT EXISTS messages_by_interval ON messages (type, interval_start);
CREATE INDEX IF NOT EXISTS messages_by_meter ON messages (kid, type, meter, ts);
CREATE INDEX IF NOT EXISTS messages_by_witnessed ON messages (type, witnessed_height);
CREATE INDEX IF NOT EXISTS trades_by_interval ON trades (interval_start);
"""


def payload_of(data):
    """A stored COSE_Sign1's payload array, or None (ingest checked its shape)."""
    try:
        p = cbor2.loads(cbor2.loads(data).value[2])
    except Exception:  # cbor2 raises many kinds; stored messages passed ingest's checks
        return None
    return p if isinstance(p, list) else None


def index_fields(mtype, payload):
    """-> (interval_start, meter, witnessed_height) for the indexed columns."""
    def field(i, kind):
        v = payload[i] if payload is not None and len(payload) > i else None
        return v if type(v) is kind else None  # type(): a bool is no height
    if mtype == ORDER:
        return field(4, int), None, None
    if mtype == READING:
        return None, field(10, bytes), None
    if mtype == WITNESS:
        return None, None, field(4, int)
    return None, None, None


class Store:
    def __init__(self, path: Path | str):
        self.path = str(path)
        self._lock = threading.RLock()  # a step holds it for its transaction and its seqs
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._migrate()
        self.db.executescript(INDEXES)

    def _migrate(self):
        have = {row[1] for row in self.db.execute("PRAGMA table_info(messages)")}
        added = [name for name, _ in NEW_COLUMNS if name not in have]
        if not added:
            return
        with self.transaction() as db:
            for name, kind in NEW_COLUMNS:
                if name in added:
                    db.execute(f"ALTER TABLE messages ADD COLUMN {name} {kind}")
            # a database from before the rounds: index what it holds once
            rows = db.execute("SELECT kid, seq, type, data FROM messages WHERE type IN (?, ?, ?)",
                              (READING, ORDER, WITNESS)).fetchall()
            for kid, seq, mtype, data in rows:
                db.execute("UPDATE messages SET interval_start = ?, meter = ?, witnessed_height = ?"
                           " WHERE kid = ? AND seq = ?", (*index_fields(mtype, payload_of(data)), kid, seq))

    def close(self):
        with self._lock:
            self.db.close()

    @contextmanager
    def transaction(self):
        """One step written whole or not at all: BEGIN IMMEDIATE ... COMMIT,
        ROLLBACK on any exception. Yields the connection."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # ---- device keys ----

    def add_device(self, kid: bytes, cose_key: bytes, name: str | None = None):
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO devices (kid, cose_key, name) VALUES (?, ?, ?)",
                            (kid, cose_key, name))

    def devices(self):
        with self._lock:
            return self.db.execute("SELECT kid, cose_key, name FROM devices").fetchall()

    # ---- messages ----

    def insert_message(self, kid, seq, mtype, ts, data, received, gate_closed=False) -> bool | bytes | str:
        """True when stored now; the stored bytes when (kid, seq) was there
        already; CLOSED (not stored) for a new ORDER when `gate_closed` or its
        interval has been cleared. The check and the insert share the lock
        with the clearing step, so an ORDER is either in its market or refused."""
        payload = payload_of(data)
        interval_start, meter, witnessed = index_fields(mtype, payload)
        with self._lock:
            row = self.db.execute("SELECT data FROM messages WHERE kid = ? AND seq = ?", (kid, seq)).fetchone()
            if row is not None:
                return bytes(row[0])
            if mtype == ORDER and interval_start is not None and (gate_closed or self.db.execute(
                    "SELECT 1 FROM rounds WHERE interval_start = ? AND cleared", (interval_start,)).fetchone()):
                return CLOSED
            self.db.execute("INSERT INTO messages (kid, seq, type, ts, data, received, interval_start, meter,"
                            " witnessed_height) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (kid, seq, mtype, ts, data, received, interval_start, meter, witnessed))
            return True

    def insert_messages(self, rows) -> list:
        """Many insert_message() calls in one go, inside the caller's
        transaction(): rows of (kid, seq, mtype, ts, data, received,
        gate_closed) -> each row's result as insert_message gives it, in
        order. A (kid, seq) twice in `rows` is stored once; the second sees
        the first's bytes, as it would one call later. Three statements a
        chunk instead of two a row: each one costs the writer the GIL."""
        out = []
        for i in range(0, len(rows), LOOKUP_CHUNK):
            out += self._insert_chunk(rows[i:i + LOOKUP_CHUNK])
        return out

    def _insert_chunk(self, rows):
        keys = sorted({(kid, seq) for kid, seq, *_ in rows})
        found = self.db.execute("SELECT kid, seq, data FROM messages WHERE (kid, seq) IN (VALUES %s)"
                                % ",".join(["(?, ?)"] * len(keys)), [v for k in keys for v in k]).fetchall()
        have = {(bytes(kid), seq): bytes(data) for kid, seq, data in found}
        fields = [index_fields(mtype, payload_of(data)) for _, _, mtype, _, data, _, _ in rows]
        starts = sorted({f[0] for f, r in zip(fields, rows) if r[2] == ORDER and f[0] is not None})
        cleared = {r[0] for r in self.db.execute(
            "SELECT interval_start FROM rounds WHERE cleared AND interval_start IN (%s)"
            % ",".join("?" * len(starts)), starts)} if starts else set()
        out, new = [], []
        for (kid, seq, mtype, ts, data, received, gate_closed), (start, meter, witnessed) in zip(rows, fields):
            if (kid, seq) in have:
                out.append(have[(kid, seq)])
            elif mtype == ORDER and start is not None and (gate_closed or start in cleared):
                out.append(CLOSED)
            else:
                have[(kid, seq)] = data
                new.append((kid, seq, mtype, ts, data, received, start, meter, witnessed))
                out.append(True)
        self.db.executemany("INSERT INTO messages (kid, seq, type, ts, data, received, interval_start, meter,"
                            " witnessed_height) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", new)
        return out

    def messages(self, kid=None, mtype=None):
        q, args = "SELECT kid, seq, type, ts, data FROM messages", []
        where = []
        if kid is not None:
            where.append("kid = ?")
            args.append(kid)
        if mtype is not None:
            where.append("type = ?")
            args.append(mtype)
        if where:
            q += " WHERE " + " AND ".join(where)
        with self._lock:
            return self.db.execute(q + " ORDER BY kid, seq", args).fetchall()

    def query(self, sql, args=()):
        """Read-only rows for the rounds and the status API."""
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    # ---- counters in meta ----

    def next_seq(self) -> int:
        with self.transaction() as db:
            return self.take(db, "seq")

    @staticmethod
    def take(db, name, count=1) -> int:
        """Inside a transaction: reserve `count` numbers of counter `name`
        (the hub's seq, trade ids) -> the first. Rolled back with the step."""
        row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        first = (row[0] if row else 0) + 1
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, first + count - 1))
        return first

    def meta(self, name, default=None):
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default
