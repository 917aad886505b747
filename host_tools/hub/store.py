"""The hub's SQLite database: device keys, accepted messages, the hub's own
sequence counter. WAL mode; every commit is synchronous=FULL, so a hub
killed at any moment has either stored a message (and may ACK it) or not."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

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
"""


class Store:
    def __init__(self, path: Path | str):
        self.path = str(path)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self):
        with self._lock:
            self.db.close()

    # ---- device keys ----

    def add_device(self, kid: bytes, cose_key: bytes, name: str | None = None):
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO devices (kid, cose_key, name) VALUES (?, ?, ?)",
                            (kid, cose_key, name))

    def devices(self):
        with self._lock:
            return self.db.execute("SELECT kid, cose_key, name FROM devices").fetchall()

    # ---- messages ----

    def insert_message(self, kid, seq, mtype, ts, data, received) -> bool | bytes:
        """True when stored now; the stored bytes when (kid, seq) was there already."""
        with self._lock:
            row = self.db.execute("SELECT data FROM messages WHERE kid = ? AND seq = ?", (kid, seq)).fetchone()
            if row is not None:
                return bytes(row[0])
            self.db.execute("INSERT INTO messages (kid, seq, type, ts, data, received) VALUES (?, ?, ?, ?, ?, ?)",
                            (kid, seq, mtype, ts, data, received))
            return True

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

    # ---- the hub's own seq ----

    def next_seq(self) -> int:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT value FROM meta WHERE name = 'seq'").fetchone()
            seq = (row[0] if row else 0) + 1
            self.db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('seq', ?)", (seq,))
            self.db.execute("COMMIT")
            return seq
