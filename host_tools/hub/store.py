"""The hub's two SQLite files (docs/hub.md, "Tables").

- The ledger, `hub.sqlite`: device keys, every signed message (the devices'
  and the hub's own TRADEs, SETTLEMENTs and BLOCKs) and what the rounds
  derived from them. `pgw ledger verify` checks every value in it; nothing
  goes in that verify cannot check.
- The work file beside it, `hub.work.sqlite` (Work): the hub's bookkeeping
  that nothing signs: the reserved hub seqs, the rounds' first interval,
  which steps were published, device names. A lost or damaged one is made
  anew; the ledger loses nothing (docs/hub.md, "A lost work file").

Both are WAL with synchronous=FULL commits. A step of a round
(`transaction()`) is in the ledger whole or not at all, and a hub seq is
reserved durably in the work file before it is used, so a hub killed at
any moment never signs two messages with one seq."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cbor2

READING, ORDER, TRADE, SETTLEMENT, BLOCK, WITNESS = 1, 2, 3, 4, 5, 6
CLOSED = "closed"  # insert_message: an ORDER for an interval whose gate has closed
LOOKUP_CHUNK = 400  # (kid, seq) pairs in one lookup: 800 variables, under SQLite's older limit of 999
LAYOUT = 2  # PRAGMA user_version of the ledger; 0: a file from before the work file (migrated on open)
WORK_LAYOUT = 1
SEQ_RESERVE = 1000  # hub seqs reserved with one durable write to the work file
SENT_STEPS = ("trades", "close")  # what Work.mark_sent records per interval

SCHEMA = """
CREATE TABLE devices (
    kid BLOB PRIMARY KEY,
    cose_key BLOB NOT NULL
);
CREATE TABLE messages (
    kid BLOB NOT NULL,
    seq INTEGER NOT NULL,
    type INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    data BLOB NOT NULL,
    height INTEGER,
    interval_start INTEGER,
    meter BLOB,
    witnessed_height INTEGER,
    PRIMARY KEY (kid, seq)
);
CREATE TABLE trades (
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
CREATE TABLE settlements (
    trade_id INTEGER PRIMARY KEY,
    delivered_wh INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT,
    msg_seq INTEGER NOT NULL
);
CREATE TABLE postings (
    trade_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    account BLOB NOT NULL,
    tokens INTEGER NOT NULL,
    why TEXT NOT NULL,
    PRIMARY KEY (trade_id, n)
);
CREATE TABLE blocks (
    height INTEGER PRIMARY KEY,
    interval_start INTEGER NOT NULL,
    hash BLOB NOT NULL,
    msg_seq INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    committee BLOB NOT NULL
);
CREATE TABLE rounds (
    interval_start INTEGER PRIMARY KEY,
    cleared INTEGER NOT NULL DEFAULT 0,
    settled INTEGER NOT NULL DEFAULT 0,
    height INTEGER
);
CREATE INDEX messages_by_height ON messages (height, type);
CREATE INDEX messages_by_interval ON messages (type, interval_start);
CREATE INDEX messages_by_meter ON messages (kid, type, meter, ts);
CREATE INDEX messages_by_witnessed ON messages (type, witnessed_height);
CREATE INDEX trades_by_interval ON trades (interval_start);
"""
# messages: height is the block the entry went into (NULL: none yet, -1: never,
# the ledger cannot hash it); interval_start (an ORDER's), meter (a READING's)
# and witnessed_height (a WITNESS's) are copied from the payload so the rounds
# find a message without decoding them all. The rowid is the order of arrival:
# a block takes the oldest waiting entries first.

WORK_SCHEMA = """
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE sent (interval_start INTEGER NOT NULL, step TEXT NOT NULL, PRIMARY KEY (interval_start, step));
CREATE TABLE names (kid BLOB PRIMARY KEY, name TEXT NOT NULL);
"""
# counters: seq_reserved (no hub seq above it has been used), rounds_start
# (the first interval the rounds close, until its block exists); sent: steps
# whose messages were handed to the broker; names: as devices registered.


class StoreError(RuntimeError):
    """A file the hub cannot use; `reason`: `layout` (made by a newer hub)."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def create_ledger(db):
    """The ledger's tables in an empty database (one transaction)."""
    db.executescript("BEGIN IMMEDIATE;" + SCHEMA + "PRAGMA user_version = %d; COMMIT;" % LAYOUT)


def work_path(path):
    """The work file beside the ledger at `path`: hub.sqlite -> hub.work.sqlite."""
    if str(path) == ":memory:":
        return ":memory:"
    p = Path(path)
    return p.with_name(p.stem + ".work" + p.suffix)


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


def _fsync_dir(path):
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:  # a platform without directory fsync
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Work:
    """The work file: small, own connection and lock. `created` is True when
    it did not exist, was empty, or was damaged (moved aside to
    `<name>.damaged`) and has been made anew."""

    def __init__(self, path):
        self.path = str(path)
        self._lock = threading.Lock()
        self.created = False
        try:
            self._open()
        except sqlite3.DatabaseError:
            self._move_aside()
            self._open()
            self.created = True

    def _open(self):
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = self.db.execute("SELECT name FROM sqlite_master").fetchall()
            if version == 0 and not tables:
                self.db.executescript("BEGIN IMMEDIATE;" + WORK_SCHEMA
                                      + "PRAGMA user_version = %d; COMMIT;" % WORK_LAYOUT)
                self.created = True
            elif version != WORK_LAYOUT or self.db.execute("PRAGMA quick_check").fetchone() != ("ok",):
                raise sqlite3.DatabaseError("not a work file of layout %d" % WORK_LAYOUT)
            self.db.execute("SELECT name, value FROM counters LIMIT 1").fetchall()
            self.db.execute("SELECT interval_start, step FROM sent LIMIT 1").fetchall()
            self.db.execute("SELECT kid, name FROM names LIMIT 1").fetchall()
        except BaseException:
            self.db.close()
            raise

    def _move_aside(self):
        if self.path == ":memory:":
            return
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, self.path + ".damaged" + suffix)

    def close(self):
        with self._lock:
            self.db.close()

    def counter(self, name, default=None):
        with self._lock:
            row = self.db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def set_counter(self, name, value):
        """Durable (fsynced) when this returns."""
        with self._lock:
            self.db.execute("INSERT INTO counters (name, value) VALUES (?, ?)"
                            " ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))

    def mark_sent(self, steps):
        """steps: [(step, interval_start)], step in SENT_STEPS."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany("INSERT OR IGNORE INTO sent (interval_start, step) VALUES (?, ?)",
                                    [(start, step) for step, start in steps])
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def sent(self, step):
        """The intervals whose `step` was published."""
        with self._lock:
            return {r[0] for r in self.db.execute("SELECT interval_start FROM sent WHERE step = ?", (step,))}

    def set_name(self, kid, name):
        with self._lock:
            if name is None:
                self.db.execute("DELETE FROM names WHERE kid = ?", (kid,))
            else:
                self.db.execute("INSERT OR REPLACE INTO names (kid, name) VALUES (?, ?)", (kid, name))

    def names(self):
        with self._lock:
            return {bytes(k): n for k, n in self.db.execute("SELECT kid, name FROM names")}


class Store:
    def __init__(self, path: Path | str):
        self.path = str(path)
        self._lock = threading.RLock()  # a step holds it for its transaction and its seqs
        self.work = Work(work_path(path))
        self.last_arrival = {}  # kid -> wall time its last new message was stored, since this start
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            migrated = self._layout()
        except BaseException:
            self.work.close()
            raise
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        # a new work file beside a ledger that has ACKed messages: the reserved
        # seqs are unknown (docs/hub.md, "A lost work file")
        self.work_recovered = self.work.created and not migrated and bool(
            self.db.execute("SELECT 1 FROM messages LIMIT 1").fetchone())
        stored = self.db.execute("SELECT MAX(seq) FROM messages WHERE type IN (?, ?, ?)",
                                 (TRADE, SETTLEMENT, BLOCK)).fetchone()[0] or 0
        self._reserved = self.work.counter("seq_reserved", 0)
        self._next_seq = max(self._reserved, stored) + 1
        if self.work_recovered:
            # ACKs used seqs that nothing stored: go past any the old hub could
            # have used, while it handed out fewer than a million a second
            self._next_seq = max(self._next_seq, time.time_ns() // 1000)

    # ---- layout and the one-off migration ----

    def _layout(self) -> bool:
        """Create or check the ledger's tables -> True when an older file was migrated."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == LAYOUT:
            return False
        if version != 0:
            self.db.close()
            raise StoreError("layout", f"{self.path} has layout {version}; this hub knows {LAYOUT}")
        if not self.db.execute("SELECT 1 FROM sqlite_master").fetchone():
            create_ledger(self.db)
            return False
        self._migrate()
        return True

    def _migrate(self):
        """A ledger from before the work file (user_version 0): its bookkeeping
        (meta.seq, meta.next_round, the sent marks, device names) goes to the
        work file, and the ledger is written anew in this layout, rows in
        their old order; then it replaces the old file, which stays as
        `<name>.v1`. A kill at any point leaves the old file or the new one."""
        old = self.db
        tables = {r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

        def columns(table):
            return [r[1] for r in old.execute(f"PRAGMA table_info({table})")] if table in tables else []

        def rows(table, names):
            have = columns(table)
            if not have:
                return []
            pick = ", ".join(n if n in have else "NULL" for n in names)
            return old.execute(f"SELECT {pick} FROM {table} ORDER BY rowid").fetchall()

        meta = dict(rows("meta", ("name", "value")))
        work = self.work
        if meta.get("seq") is not None:
            work.set_counter("seq_reserved", max(work.counter("seq_reserved", 0), meta["seq"]))
        if meta.get("next_round") is not None and work.counter("rounds_start") is None:
            work.set_counter("rounds_start", meta["next_round"])
        for kid, name in rows("devices", ("kid", "name")):
            if name is not None:
                work.set_name(bytes(kid), name)
        marks = [(step, start) for start, trades_sent, close_sent in
                 rows("rounds", ("interval_start", "trades_sent", "close_sent"))
                 for step, done in (("trades", trades_sent), ("close", close_sent)) if done]
        if marks:
            work.mark_sent(marks)

        new_path = self.path + ".migrating"
        for suffix in ("", "-journal", "-wal", "-shm"):
            if os.path.exists(new_path + suffix):
                os.remove(new_path + suffix)
        new = sqlite3.connect(new_path, isolation_level=None)
        new.execute("PRAGMA synchronous=FULL")
        create_ledger(new)
        new.execute("BEGIN IMMEDIATE")
        new.executemany("INSERT INTO devices (kid, cose_key) VALUES (?, ?)", rows("devices", ("kid", "cose_key")))
        indexed = "interval_start" in columns("messages")
        msgs = []
        for kid, seq, mtype, ts, data, height, start, meter, witnessed in rows(
                "messages", ("kid", "seq", "type", "ts", "data", "height", "interval_start", "meter",
                             "witnessed_height")):
            if not indexed:  # from before the rounds: index what it holds once
                start, meter, witnessed = index_fields(mtype, payload_of(bytes(data)))
            msgs.append((kid, seq, mtype, ts, data, height, start, meter, witnessed))
        new.executemany("INSERT INTO messages (kid, seq, type, ts, data, height, interval_start, meter,"
                        " witnessed_height) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", msgs)
        for table, names in (
                ("trades", ("trade_id", "interval_start", "seller", "seller_seq", "buyer", "buyer_seq",
                            "energy_wh", "price", "msg_seq")),
                ("settlements", ("trade_id", "delivered_wh", "amount", "status", "reason", "msg_seq")),
                ("postings", ("trade_id", "n", "account", "tokens", "why")),
                ("blocks", ("height", "interval_start", "hash", "msg_seq", "entries", "committee")),
                ("rounds", ("interval_start", "cleared", "settled", "height"))):
            new.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                            rows(table, names))
        new.execute("COMMIT")
        new.close()
        old.close()  # the last connection: its WAL goes into the file
        if os.path.exists(self.path + "-wal"):
            raise StoreError("layout", f"{self.path}-wal is still there: another process has it open")
        shutil.copyfile(self.path, self.path + ".v1")
        with open(self.path + ".v1", "rb+") as f:
            os.fsync(f.fileno())
        os.replace(new_path, self.path)
        _fsync_dir(self.path)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)

    def close(self):
        with self._lock:
            self.db.close()
            self.work.close()

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
        """Register a key (the ledger) and its name (the work file; None: none)."""
        with self._lock:
            self.db.execute("INSERT INTO devices (kid, cose_key) VALUES (?, ?) ON CONFLICT (kid)"
                            " DO UPDATE SET cose_key = excluded.cose_key WHERE cose_key != excluded.cose_key",
                            (kid, cose_key))
        self.work.set_name(kid, name)

    def devices(self):
        """-> [(kid, cose_key, name)]"""
        names = self.work.names()
        with self._lock:
            rows = self.db.execute("SELECT kid, cose_key FROM devices").fetchall()
        return [(kid, key, names.get(bytes(kid))) for kid, key in rows]

    # ---- messages ----

    def insert_message(self, kid, seq, mtype, ts, data, gate_closed=False) -> bool | bytes | str:
        """True when stored now; the stored bytes when (kid, seq) was there
        already; CLOSED (not stored) for a new ORDER when `gate_closed` or its
        interval has been cleared. The check and the insert share the lock
        with the clearing step, so an ORDER is either in its market or refused."""
        with self._lock:
            return self.insert_messages([(kid, seq, mtype, ts, data, gate_closed)])[0]

    def insert_messages(self, rows) -> list:
        """Many insert_message() calls in one go, inside the caller's
        transaction(): rows of (kid, seq, mtype, ts, data, gate_closed) ->
        each row's result as insert_message gives it, in order. A (kid, seq)
        twice in `rows` is stored once; the second sees the first's bytes, as
        it would one call later. Three statements a chunk instead of two a
        row: each one costs the writer the GIL."""
        out = []
        for i in range(0, len(rows), LOOKUP_CHUNK):
            out += self._insert_chunk(rows[i:i + LOOKUP_CHUNK])
        return out

    def _insert_chunk(self, rows):
        keys = sorted({(kid, seq) for kid, seq, *_ in rows})
        found = self.db.execute("SELECT kid, seq, data FROM messages WHERE (kid, seq) IN (VALUES %s)"
                                % ",".join(["(?, ?)"] * len(keys)), [v for k in keys for v in k]).fetchall()
        have = {(bytes(kid), seq): bytes(data) for kid, seq, data in found}
        fields = [index_fields(mtype, payload_of(data)) for _, _, mtype, _, data, _ in rows]
        starts = sorted({f[0] for f, r in zip(fields, rows) if r[2] == ORDER and f[0] is not None})
        cleared = {r[0] for r in self.db.execute(
            "SELECT interval_start FROM rounds WHERE cleared AND interval_start IN (%s)"
            % ",".join("?" * len(starts)), starts)} if starts else set()
        out, new = [], []
        for (kid, seq, mtype, ts, data, gate_closed), (start, meter, witnessed) in zip(rows, fields):
            if (kid, seq) in have:
                out.append(have[(kid, seq)])
            elif mtype == ORDER and start is not None and (gate_closed or start in cleared):
                out.append(CLOSED)
            else:
                have[(kid, seq)] = data
                new.append((kid, seq, mtype, ts, data, start, meter, witnessed))
                out.append(True)
        self.db.executemany("INSERT INTO messages (kid, seq, type, ts, data, interval_start, meter,"
                            " witnessed_height) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", new)
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

    # ---- counters ----

    def take_seqs(self, count=1) -> int:
        """Reserve `count` hub seqs -> the first. Each is handed out once,
        rolled-back steps included (their seqs are skipped, not reused); a
        run of SEQ_RESERVE is written to the work file, fsynced, before any
        of it is used, so a restarted hub starts above every seq used."""
        with self._lock:
            first = self._next_seq
            last = first + count - 1
            if last > self._reserved:
                self.work.set_counter("seq_reserved", last + SEQ_RESERVE)
                self._reserved = last + SEQ_RESERVE
            self._next_seq = last + 1
            return first

    @property
    def next_seq(self) -> int:
        """The hub seq take_seqs() hands out next."""
        with self._lock:
            return self._next_seq

    @staticmethod
    def next_trade_id(db) -> int:
        """Inside a transaction: the next trade_id (trades are never deleted)."""
        return db.execute("SELECT COALESCE(MAX(trade_id), 0) + 1 FROM trades").fetchone()[0]
